//! The HTTP front door: client authentication and transport hygiene around one
//! streamable-HTTP MCP service per endpoint, at `/mcp/{endpoint}`.
//!
//! In order, for every request:
//! 1. a token in the query string is refused (400), before anything else;
//! 2. the client authenticates ([`Authenticate`]); a failure answers 401 with
//!    `WWW-Authenticate: Bearer`; the [`Principal`] goes into the request extensions,
//!    where [`GuardHandler`] finds it;
//! 3. rmcp's streamable-HTTP service checks `Host` (DNS rebinding) and `Origin` against
//!    allow-lists (403), the body size (413), the protocol headers, and that
//!    `Mcp-Method`/`Mcp-Name` agree with the body (400, -32020), before the handler
//!    reads anything.
//!
//! Legacy clients get sessions (`Mcp-Session-Id`, bound to the principal that opened
//! them: another principal presenting the id gets 404); 2026-07-28 clients are served
//! statelessly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use mcp_guard_core::Principal;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::federation::Gateway;
use crate::handler::{GuardHandler, GuardService};

/// Why a client could not be authenticated. The reason is for logs, not the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credential was presented.
    #[error("no credential presented")]
    Missing,
    /// The credential is not valid.
    #[error("invalid credential")]
    Invalid,
}

/// Turns an HTTP request into an authenticated [`Principal`].
#[async_trait]
pub trait Authenticate: Send + Sync {
    /// Authenticates the request.
    ///
    /// # Errors
    /// [`AuthError`] when the client is not authenticated; it gets a 401.
    async fn authenticate(&self, parts: &http::request::Parts) -> Result<Principal, AuthError>;
}

/// Static bearer tokens, stored as SHA-256 digests and compared in constant time.
#[derive(Default)]
pub struct StaticTokens {
    tokens: Vec<([u8; 32], Principal)>,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTokens")
            .field("count", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

impl StaticTokens {
    /// No tokens (every request is refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` for `principal`. Only its digest is kept.
    #[must_use]
    pub fn with_token(mut self, token: &secrecy::SecretString, principal: Principal) -> Self {
        #[expect(
            clippy::disallowed_methods,
            reason = "hashing an inbound API token; only the digest is kept"
        )]
        let digest = Sha256::digest(secrecy::ExposeSecret::expose_secret(token).as_bytes());
        self.tokens.push((digest.into(), principal));
        self
    }
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(parts: &http::request::Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[async_trait]
impl Authenticate for StaticTokens {
    async fn authenticate(&self, parts: &http::request::Parts) -> Result<Principal, AuthError> {
        let token = bearer(parts).ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (d, p) in &self.tokens {
            if ct_eq(d, &digest) && found.is_none() {
                found = Some(p.clone());
            }
        }
        found.ok_or(AuthError::Invalid)
    }
}

/// Authentication opt-outs. Everything here weakens the gateway.
pub mod dangerous {
    use super::{AuthError, Authenticate, Principal, async_trait};

    /// DANGEROUS: every request is made by one principal, with no credential checked.
    /// For a demo on loopback, never for a shared deployment.
    #[derive(Debug, Clone)]
    #[allow(clippy::exhaustive_structs, reason = "a plain newtype")]
    pub struct Anonymous(pub Principal);

    #[async_trait]
    impl Authenticate for Anonymous {
        async fn authenticate(&self, _: &http::request::Parts) -> Result<Principal, AuthError> {
            Ok(self.0.clone())
        }
    }
}

/// Settings of the HTTP front door.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Allowed `Host` values (DNS-rebinding defence); loopback names by default.
    pub allowed_hosts: Vec<String>,
    /// Allowed browser origins (default: loopback, any port); any other present
    /// `Origin` gets 403, also when the list is empty.
    pub allowed_origins: Vec<String>,
    /// Largest body accepted (413 above).
    pub max_body_bytes: usize,
    /// Items per list page.
    pub page_size: usize,
    /// SSE keep-alive interval.
    pub sse_keep_alive: Option<Duration>,
    /// Answer stateless requests with a single JSON body instead of an SSE stream when
    /// nothing is sent before the result (rmcp falls back to SSE for progress etc.).
    pub json_response: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: mcp_guard_core::config::loopback_origins(),
            max_body_bytes: 4 * 1024 * 1024,
            page_size: crate::handler::DEFAULT_PAGE_SIZE,
            sse_keep_alive: Some(Duration::from_secs(15)),
            json_response: true,
        }
    }
}

/// Builds the axum router of the HTTP front door.
pub struct HttpEdge {
    gateway: Gateway,
    service: GuardService,
    auth: Arc<dyn Authenticate>,
    audit: Option<Arc<dyn mcp_guard_core::AuditSink>>,
    options: HttpOptions,
    shutdown: CancellationToken,
    metrics: Option<crate::metrics::Metrics>,
}

impl std::fmt::Debug for HttpEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEdge")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct EdgeState {
    auth: Arc<dyn Authenticate>,
    audit: Option<Arc<dyn mcp_guard_core::AuditSink>>,
    max_body_bytes: usize,
    /// Legacy session id → principal id that opened it.
    sessions: Arc<Mutex<HashMap<String, String>>>,
}

impl HttpEdge {
    /// Serves every endpoint of `gateway` through `service`, authenticating with `auth`.
    pub fn new(gateway: Gateway, service: GuardService, auth: Arc<dyn Authenticate>) -> Self {
        Self {
            gateway,
            service,
            auth,
            audit: None,
            options: HttpOptions::default(),
            shutdown: CancellationToken::new(),
            metrics: None,
        }
    }

    /// Serves `metrics` at `/metrics` (Prometheus/OpenMetrics text), unauthenticated
    /// like `/readyz`: keep the listener off public networks. Each endpoint's legacy
    /// sessions and each server's state are reported there too.
    #[must_use]
    pub fn metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets the options.
    #[must_use]
    pub fn options(mut self, options: HttpOptions) -> Self {
        self.options = options;
        self
    }

    /// Records authentication failures to `sink` (the reason and the path, never the
    /// presented credential).
    #[must_use]
    pub fn audit(mut self, sink: Arc<dyn mcp_guard_core::AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Cancelling this token closes every session and stream.
    #[must_use]
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// The router: `/mcp/{endpoint}` for each endpoint, `/healthz` (liveness) and
    /// `/readyz` (per-server status as JSON; 503 while an enabled server is not
    /// connected).
    pub fn router(self) -> axum::Router {
        let gateway = self.gateway.clone();
        let mut router = axum::Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(move || readiness(gateway.clone())));
        if let Some(m) = self.metrics.clone() {
            m.track_gateway(&self.gateway);
            router = router.route(
                "/metrics",
                get(move || {
                    let m = m.clone();
                    async move { ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], m.render()) }
                }),
            );
        }
        for name in self.gateway.endpoint_names() {
            let Some(endpoint) = self.gateway.endpoint(name) else {
                continue;
            };
            let handler = GuardHandler::new(endpoint, self.service.clone()).page_size(self.options.page_size);
            let mut config = StreamableHttpServerConfig::default()
                .with_allowed_hosts(self.options.allowed_hosts.clone())
                .with_allowed_origins(self.options.allowed_origins.clone())
                .enforce_origin_validation()
                .with_max_request_body_bytes(self.options.max_body_bytes);
            config.sse_keep_alive = self.options.sse_keep_alive;
            config.json_response = self.options.json_response;
            config.cancellation_token = self.shutdown.child_token();
            let sessions = Arc::new(LocalSessionManager::default());
            if let Some(m) = &self.metrics {
                m.track_sessions(name, &sessions);
            }
            let service = StreamableHttpService::new(move || Ok(handler.new_session()), sessions, config);
            router = router.nest_service(&format!("/mcp/{name}"), service);
        }
        let state = EdgeState {
            auth: self.auth,
            audit: self.audit,
            max_body_bytes: self.options.max_body_bytes,
            sessions: Arc::default(),
        };
        router
            .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint\n") })
            .layer(middleware::from_fn_with_state(state, edge))
    }
}

/// The gateway's readiness as JSON: each server's state and since when, each
/// endpoint's servers.
pub fn readiness_report(gateway: &Gateway) -> (bool, serde_json::Value) {
    let mut ready = true;
    let servers: Vec<serde_json::Value> = gateway
        .servers()
        .map(|(id, upstream, enabled)| {
            let status = upstream.status();
            let (state, detail) = match &status.state {
                _ if !enabled => ("disabled", None),
                mcp_guard_core::UpstreamState::Connected => ("connected", None),
                mcp_guard_core::UpstreamState::Idle => ("idle", None),
                mcp_guard_core::UpstreamState::MissingCredentials { missing } => {
                    ("missing_credentials", Some(missing.join(", ")))
                }
                mcp_guard_core::UpstreamState::Disabled => ("disabled", None),
                mcp_guard_core::UpstreamState::Failed { error } => ("failed", Some(error.clone())),
                mcp_guard_core::UpstreamState::Stopped => ("stopped", None),
                _ => ("unknown", None),
            };
            if enabled && state != "connected" {
                ready = false;
            }
            serde_json::json!({
                "id": id,
                "state": state,
                "since": mcp_guard_core::time::format_rfc3339(status.since),
                "detail": detail,
            })
        })
        .collect();
    let endpoints: Vec<serde_json::Value> = gateway
        .endpoint_names()
        .filter_map(|n| gateway.endpoint(n))
        .map(|ep| {
            let snap = ep.snapshot();
            serde_json::json!({
                "name": ep.name(),
                "tools": snap.tools().len(),
                "servers": ep.members().iter().map(|(id, enabled, _)| serde_json::json!({"id": id.as_ref(), "enabled": enabled})).collect::<Vec<_>>(),
                "problems": snap.problems(),
            })
        })
        .collect();
    (
        ready,
        serde_json::json!({"ready": ready, "servers": servers, "endpoints": endpoints}),
    )
}

#[allow(clippy::unused_async, reason = "an axum handler")]
async fn readiness(gateway: Gateway) -> Response {
    let (ready, body) = readiness_report(&gateway);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn query_carries_token(uri: &http::Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&').any(|kv| {
            let k = kv.split('=').next().unwrap_or_default().to_ascii_lowercase();
            matches!(
                k.as_str(),
                "access_token" | "token" | "api_key" | "apikey" | "auth" | "authorization"
            )
        })
    })
}

async fn edge(State(state): State<EdgeState>, request: Request, next: Next) -> Response {
    // Only the MCP endpoints need a principal; /healthz and /readyz are for probes
    // (they reveal server ids and states, not secrets; keep them off public listeners).
    if !request.uri().path().starts_with("/mcp/") {
        return next.run(request).await;
    }
    if query_carries_token(request.uri()) {
        return plain(
            StatusCode::BAD_REQUEST,
            "credentials are not accepted in the query string\n",
        );
    }
    let (mut parts, body) = request.into_parts();
    let principal = match state.auth.authenticate(&parts).await {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(reason = %e, path = %parts.uri.path(), "client authentication failed");
            if let Some(sink) = &state.audit {
                let mut event =
                    mcp_guard_core::AuditEvent::new(mcp_guard_core::audit::EventKind::AuthenticationFailed {
                        reason: e.to_string(),
                    });
                event.endpoint = parts.uri.path().strip_prefix("/mcp/").map(str::to_owned);
                event.outcome = Some(mcp_guard_core::Outcome::Unauthenticated);
                if let Err(err) = sink.record(&event).await {
                    tracing::error!(error = %mcp_guard_core::upstream::error_chain(&err), "could not record an authentication failure");
                }
            }
            let mut r = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    };
    // A legacy session belongs to the principal that opened it.
    let presented = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(id) = &presented {
        let owner = state
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned();
        if owner.is_some_and(|o| o != principal.id()) {
            return plain(StatusCode::NOT_FOUND, "session not found\n");
        }
    }
    let principal_id = principal.id().to_owned();
    parts.extensions.insert(Arc::new(principal));
    let is_post = parts.method == http::Method::POST;
    let body = if is_post {
        // Buffered once here (rmcp would buffer it anyway) to refuse batches precisely.
        let Ok(bytes) = axum::body::to_bytes(body, state.max_body_bytes).await else {
            return jsonrpc_error(StatusCode::PAYLOAD_TOO_LARGE, -32600, "request body too large");
        };
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                "JSON-RPC batch arrays are not supported",
            );
        }
        Body::from(bytes)
    } else {
        body
    };
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if is_post {
        response = jsonrpc_errors(response).await;
    }
    if presented.is_none()
        && let Some(id) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
    {
        state
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), principal_id);
    }
    response
}

fn jsonrpc_error(status: StatusCode, code: i32, message: &str) -> Response {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// rmcp answers a body it cannot parse with plain text; clients get a JSON-RPC error.
async fn jsonrpc_errors(response: Response) -> Response {
    let status = response.status();
    let is_text = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.starts_with("text/plain"));
    if !(status == StatusCode::BAD_REQUEST
        || status == StatusCode::UNPROCESSABLE_ENTITY
        || status == StatusCode::UNSUPPORTED_MEDIA_TYPE)
        || !is_text
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let (code, prefix) = if text.contains("deserialize") || text.contains("parse") {
        (-32700, "Parse error")
    } else {
        (-32600, "Invalid request")
    };
    let mut r = jsonrpc_error(parts.status, code, &format!("{prefix}: {}", text.trim()));
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            r.headers_mut().insert(k.clone(), v.clone());
        }
    }
    r
}

/// Serves `router` on `listener` with `TCP_NODELAY` on every connection (without it, a
/// reply written in pieces meets the client's delayed ACK and stalls ~40 ms), until
/// `shutdown` is cancelled.
///
/// # Errors
/// When accepting fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Empty body helper for tests.
#[doc(hidden)]
pub fn empty_body() -> Body {
    Body::empty()
}
