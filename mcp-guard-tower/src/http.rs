//! The HTTP front door: client authentication and transport hygiene around one
//! streamable-HTTP MCP service per endpoint, at `/mcp/{endpoint}`.
//!
//! In order, for every request:
//! 1. a token in the query string is refused (401 `invalid_request`), before anything else;
//! 2. the client authenticates ([`Authenticate`]); a failure answers 401 with a
//!    `WWW-Authenticate: Bearer` challenge naming the endpoint's RFC 9728 metadata
//!    (and `error="invalid_token"` when a credential was refused; 403
//!    `insufficient_scope` for a missing scope), counts against its source's budget
//!    of unauthenticated requests (429 once that is spent; a request without any
//!    credential from such a source is refused before authentication), and is
//!    audited in one aggregated record per source and interval ([`PreAuth`]);
//! 3. the request is admitted into its gateway session ([`Sessions`]): a revoked or
//!    expired one answers 401; the [`Principal`](mcp_guard_core::Principal), the
//!    session id and the session go into the request extensions, where
//!    [`GuardHandler`] finds them;
//! 4. rmcp's streamable-HTTP service checks `Host` (DNS rebinding) and `Origin` against
//!    allow-lists (403), the body size (413), the protocol headers, and that
//!    `Mcp-Method`/`Mcp-Name` agree with the body (400, -32020, audited as refused),
//!    before the handler reads anything.
//!
//! Streamed responses end when their gateway session does.
//!
//! Legacy clients get rmcp sessions (`Mcp-Session-Id`, bound to the gateway session that
//! opened them: anyone else presenting the id gets 404, and they close with it);
//! 2026-07-28 clients are served statelessly within their gateway session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use mcp_guard_core::access::{Session, SessionRefused, Sessions};
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

pub use crate::auth::{AuthError, Authenticate, Authenticated, StaticTokens, dangerous};
use crate::federation::Gateway;
use crate::handler::{GuardHandler, GuardService};
use crate::legacy_sessions::{LeanSessionConfig, LeanSessionManager};
pub use crate::preauth::{PreAuth, Source, UnauthenticatedLimits};

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
    /// The gateway's public base URL (`https://gw.example.com`): endpoint resource
    /// URIs are `<base><path_prefix>/mcp/<endpoint>`, named in RFC 9728 metadata and in
    /// `WWW-Authenticate`. Without it those URLs are built from the request's `Host`
    /// (only hosts in `allowed_hosts` are used).
    pub resource_base: Option<String>,
    /// Authorization servers advertised in RFC 9728 metadata.
    pub authorization_servers: Vec<String>,
    /// Scopes advertised in RFC 9728 metadata.
    pub scopes_supported: Vec<String>,
    /// Where the endpoints are mounted: `""` (default) serves them at
    /// `/mcp/{endpoint}`, `"/tools"` at `/tools/mcp/{endpoint}`. Resource URIs follow
    /// (`<base>/tools/mcp/<endpoint>`), and the RFC 9728 metadata of each is at
    /// `/.well-known/oauth-protected-resource/tools/mcp/<endpoint>`. Merge the router
    /// into your app at its root (`Router::merge`), not with `nest`.
    pub path_prefix: String,
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
            resource_base: None,
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
            path_prefix: String::new(),
        }
    }
}

/// Builds the axum router of the HTTP front door.
pub struct HttpEdge {
    gateway: Gateway,
    service: GuardService,
    auth: Arc<dyn Authenticate>,
    audit: Option<Arc<dyn mcp_guard_core::AuditSink>>,
    sessions: Sessions,
    options: HttpOptions,
    shutdown: CancellationToken,
    metrics: Option<crate::metrics::Metrics>,
    pre_auth: PreAuth,
    forwarders: mcp_guard_core::audit::forward::Forwarders,
    cluster: Option<Arc<dyn mcp_guard_core::cluster::Engine>>,
}

impl std::fmt::Debug for HttpEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEdge")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Legacy `Mcp-Session-Id` → the gateway session that opened it, and a token
/// cancelled when the client deletes it.
type LegacyBindings = Arc<Mutex<HashMap<String, (Arc<str>, CancellationToken)>>>;

#[derive(Clone)]
struct EdgeState {
    auth: Arc<dyn Authenticate>,
    audit: Option<Arc<dyn mcp_guard_core::AuditSink>>,
    max_body_bytes: usize,
    gateway_sessions: Sessions,
    endpoints: Arc<HashMap<String, Arc<LeanSessionManager>>>,
    legacy: LegacyBindings,
    resource_base: Option<Arc<str>>,
    /// `/mcp/`, or `/tools/mcp/` under a path prefix.
    mcp_prefix: Arc<str>,
    allowed_hosts: Arc<[String]>,
    pre_auth: PreAuth,
}

impl HttpEdge {
    /// Serves every endpoint of `gateway` through `service`, authenticating with `auth`.
    pub fn new(gateway: Gateway, service: GuardService, auth: Arc<dyn Authenticate>) -> Self {
        Self {
            gateway,
            service,
            auth,
            audit: None,
            sessions: Sessions::new(),
            options: HttpOptions::default(),
            shutdown: CancellationToken::new(),
            metrics: None,
            pre_auth: PreAuth::default(),
            forwarders: mcp_guard_core::audit::forward::Forwarders::default(),
            cluster: None,
        }
    }

    /// Reports these audit forwarders in `/readyz` (`audit_forward`: state, cursor,
    /// backlog, last error; they never make the gateway unready) and on `/metrics`.
    #[must_use]
    pub fn audit_forwarders(mut self, forwarders: mcp_guard_core::audit::forward::Forwarders) -> Self {
        self.forwarders = forwarders;
        self
    }

    /// Reports this cluster engine in `/readyz` (`cluster`: engine, replica, freshness,
    /// listener, last error); the gateway is unready while its state is not fresh.
    #[must_use]
    pub fn cluster(mut self, engine: Arc<dyn mcp_guard_core::cluster::Engine>) -> Self {
        self.cluster = Some(engine);
        self
    }

    /// Limits unauthenticated traffic with `pre_auth` (default:
    /// [`UnauthenticatedLimits::default`]). Share it with the routes served beside the
    /// edge ([`PreAuth::wrap`]) so they draw on the same budgets, and call
    /// [`PreAuth::flush`] at shutdown.
    #[must_use]
    pub fn pre_auth(mut self, pre_auth: PreAuth) -> Self {
        self.pre_auth = pre_auth;
        self
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

    /// Records authentication failures to `sink` (the reasons, the source and how many,
    /// aggregated per source and interval by [`PreAuth`]; never the presented
    /// credential) and requests the transport refused.
    #[must_use]
    pub fn audit(mut self, sink: Arc<dyn mcp_guard_core::AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Admits requests into these gateway sessions (default: a fresh in-memory
    /// registry). Share it with whatever lists and revokes sessions.
    #[must_use]
    pub fn sessions(mut self, sessions: Sessions) -> Self {
        self.sessions = sessions;
        self
    }

    /// Cancelling this token closes every session and stream.
    #[must_use]
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// The router: `/mcp/{endpoint}` for each endpoint (under
    /// [`HttpOptions::path_prefix`]), `/healthz` (liveness) and `/readyz` (per-server
    /// status as JSON; 503 while an enabled server is not connected), under the limits
    /// of [`PreAuth`]. It has no fallback, so it merges into an app that has its own
    /// (axum refuses two).
    pub fn router(self) -> axum::Router {
        let prefix = self.options.path_prefix.trim_end_matches('/').to_owned();
        let gateway = self.gateway.clone();
        let forwarders = self.forwarders.clone();
        let cluster = self.cluster.clone();
        let mut router = axum::Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || readiness(gateway.clone(), forwarders.clone(), cluster.clone())),
            );
        if let Some(m) = self.metrics.clone() {
            m.track_gateway(&self.gateway);
            m.track_forwarders(&self.forwarders);
            router = router.route(
                "/metrics",
                get(move || {
                    let m = m.clone();
                    async move { ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], m.render()) }
                }),
            );
        }
        let mut managers = HashMap::new();
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
            let per_session = handler.clone();
            let manager = Arc::new(LeanSessionManager::new(
                move || per_session.new_session(),
                LeanSessionConfig::default(),
                config.cancellation_token.clone(),
            ));
            managers.insert(name.to_owned(), manager.clone());
            if let Some(m) = &self.metrics {
                m.track_sessions(name, &manager);
            }
            let service = StreamableHttpService::new(move || Ok(handler.new_session()), manager, config);
            router = router.nest_service(&format!("{prefix}/mcp/{name}"), service);
        }
        let metadata = Arc::new(Metadata {
            base: self.options.resource_base.clone(),
            prefix: prefix.clone(),
            allowed_hosts: self.options.allowed_hosts.clone(),
            authorization_servers: self.options.authorization_servers.clone(),
            scopes: self.options.scopes_supported.clone(),
            endpoints: self.gateway.endpoint_names().map(str::to_owned).collect(),
        });
        let m = metadata.clone();
        router = router
            .route(
                "/.well-known/oauth-protected-resource",
                get(move |parts: http::request::Parts| async move { m.document(&parts, None) }),
            )
            .route(
                &format!("/.well-known/oauth-protected-resource{prefix}/mcp/{{endpoint}}"),
                get(
                    move |axum::extract::Path(endpoint): axum::extract::Path<String>,
                          parts: http::request::Parts| async move {
                        metadata.document(&parts, Some(&endpoint))
                    },
                ),
            );
        if let Some(sink) = &self.audit {
            self.pre_auth.audit_to(sink.clone());
        }
        let pre_auth = self.pre_auth.clone();
        let state = EdgeState {
            pre_auth: self.pre_auth,
            auth: self.auth,
            audit: self.audit,
            max_body_bytes: self.options.max_body_bytes,
            gateway_sessions: self.sessions,
            endpoints: Arc::new(managers),
            legacy: Arc::default(),
            resource_base: self.options.resource_base.map(Into::into),
            mcp_prefix: format!("{prefix}/mcp/").into(),
            allowed_hosts: self.options.allowed_hosts.into(),
        };
        pre_auth.wrap_mounted(router.layer(middleware::from_fn_with_state(state, edge)), &prefix)
    }
}

/// The gateway's readiness as JSON: each server's state and since when, each
/// endpoint's servers.
pub fn readiness_report(gateway: &Gateway) -> (bool, serde_json::Value) {
    let mut ready = true;
    let servers: Vec<serde_json::Value> = gateway
        .servers()
        .into_iter()
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
            // The protocol version the server speaks (legacy or 2026-07-28), once known.
            let protocol = gateway
                .endpoint_names()
                .filter_map(|n| gateway.endpoint(n))
                .find_map(|ep| ep.snapshot().upstream_protocol(&id).map(str::to_owned));
            serde_json::json!({
                "id": id,
                "state": state,
                "since": mcp_guard_core::time::format_rfc3339(status.since),
                "detail": detail,
                "protocol": protocol,
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

/// The audit forwarders as `/readyz` reports them.
pub fn forwarders_report(forwarders: &mcp_guard_core::audit::forward::Forwarders) -> serde_json::Value {
    let time = |t: Option<std::time::SystemTime>| t.map(mcp_guard_core::time::format_rfc3339);
    forwarders
        .statuses()
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "destination": s.destination,
                "state": s.state.as_str(),
                "since": mcp_guard_core::time::format_rfc3339(s.since),
                "delivered_seq": s.delivered_seq,
                "durable_seq": s.durable_seq,
                "backlog": s.backlog,
                "delivered": s.delivered,
                "failures": s.failures,
                "skipped": s.skipped,
                "chain_problems": s.chain_problems,
                "last_error": s.last_error,
                "last_error_at": time(s.last_error_at),
                "last_delivery_at": time(s.last_delivery_at),
            })
        })
        .collect()
}

#[allow(clippy::unused_async, reason = "an axum handler")]
async fn readiness(
    gateway: Gateway,
    forwarders: mcp_guard_core::audit::forward::Forwarders,
    cluster: Option<Arc<dyn mcp_guard_core::cluster::Engine>>,
) -> Response {
    let (mut ready, mut body) = readiness_report(&gateway);
    if !forwarders.is_empty() {
        body["audit_forward"] = forwarders_report(&forwarders);
    }
    if let Some(engine) = cluster {
        let status = engine.status();
        ready &= status.fresh;
        body["ready"] = ready.into();
        body["cluster"] = serde_json::to_value(&status).unwrap_or_default();
    }
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

/// The base URL of this gateway as the client addressed it: the configured one, or
/// `http://<Host>` when the host is one the gateway answers to.
fn base_url(
    configured: Option<&str>,
    allowed_hosts: &[String],
    parts: &http::request::Parts,
) -> Option<String> {
    if let Some(b) = configured {
        return Some(b.trim_end_matches('/').to_owned());
    }
    let host = parts.headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next()?,
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        && allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(name));
    ok.then(|| format!("http://{host}"))
}

struct Metadata {
    base: Option<String>,
    /// Where the endpoints are mounted (`""` or `/tools`).
    prefix: String,
    allowed_hosts: Vec<String>,
    authorization_servers: Vec<String>,
    scopes: Vec<String>,
    endpoints: Vec<String>,
}

impl Metadata {
    /// RFC 9728 protected-resource metadata for one endpoint (or the gateway root).
    fn document(&self, parts: &http::request::Parts, endpoint: Option<&str>) -> Response {
        if endpoint.is_some_and(|e| !self.endpoints.iter().any(|n| n == e)) {
            return plain(StatusCode::NOT_FOUND, "no such endpoint\n");
        }
        let Some(base) = base_url(self.base.as_deref(), &self.allowed_hosts, parts) else {
            return plain(StatusCode::BAD_REQUEST, "unknown host\n");
        };
        let resource = match endpoint {
            Some(e) => format!("{base}{}/mcp/{e}", self.prefix),
            None => base,
        };
        let mut doc = serde_json::json!({
            "resource": resource,
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": endpoint.map_or_else(|| "mcp-guard".to_owned(), |e| format!("mcp-guard endpoint {e}")),
        });
        if !self.scopes.is_empty() {
            doc["scopes_supported"] = serde_json::json!(self.scopes);
        }
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            doc.to_string(),
        )
            .into_response()
    }
}

/// Quotes a value for an auth-param (RFC 9110 quoted-string).
fn quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn challenge(state: &EdgeState, parts: &http::request::Parts, endpoint: &str, error: &AuthError) -> Response {
    let mut params: Vec<String> = Vec::new();
    if let Some(code) = error.code() {
        params.push(format!("error={}", quoted(code)));
        let description = match error {
            AuthError::Expired => "the access has expired",
            AuthError::Revoked => "the access was revoked",
            AuthError::InsufficientScope { .. } => "more scope is required",
            AuthError::InvalidRequest(_) => "send the token in the Authorization header, never in the URL",
            _ => "the token is not valid for this endpoint",
        };
        params.push(format!("error_description={}", quoted(description)));
    }
    if let AuthError::InsufficientScope { required } = error {
        params.push(format!("scope={}", quoted(required)));
    }
    if let Some(base) = base_url(state.resource_base.as_deref(), &state.allowed_hosts, parts) {
        params.push(format!(
            "resource_metadata={}",
            quoted(&format!(
                "{base}/.well-known/oauth-protected-resource{}{endpoint}",
                state.mcp_prefix
            ))
        ));
    }
    let value = if params.is_empty() {
        "Bearer".to_owned()
    } else {
        format!("Bearer {}", params.join(", "))
    };
    let (status, body) = if matches!(error, AuthError::InsufficientScope { .. }) {
        (StatusCode::FORBIDDEN, "insufficient scope\n")
    } else if matches!(error, AuthError::Unavailable(_)) {
        (StatusCode::SERVICE_UNAVAILABLE, "authentication is unavailable\n")
    } else {
        (StatusCode::UNAUTHORIZED, "authentication required\n")
    };
    let mut r = plain(status, body);
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// A refused authentication: counted against the source's budget (429 once spent;
/// not when the authenticator itself is unavailable) and, aggregated, in the audit.
fn refuse(state: &EdgeState, parts: &http::request::Parts, endpoint: &str, error: &AuthError) -> Response {
    let source = Source::of(&parts.extensions);
    tracing::debug!(reason = %error, %source, path = %parts.uri.path(), "client authentication failed");
    let charged = if matches!(error, AuthError::Unavailable(_)) {
        Ok(())
    } else {
        state.pre_auth.charge(source)
    };
    match charged {
        Ok(()) => {
            state.pre_auth.refused(source, Some(endpoint), &error.to_string());
            challenge(state, parts, endpoint, error)
        }
        Err(over) => {
            state.pre_auth.refused(
                source,
                Some(endpoint),
                "over the limit of unauthenticated requests",
            );
            crate::preauth::too_many_at_mcp(over)
        }
    }
}

/// The refusal for a request without credentials from a source over its budget of
/// unauthenticated requests; a request with a credential is checked, so a valid client
/// sharing the address is still served.
fn over_unauthenticated_budget(
    state: &EdgeState,
    parts: &http::request::Parts,
    endpoint: &str,
) -> Option<Response> {
    if parts.headers.contains_key(header::AUTHORIZATION) {
        return None;
    }
    let source = Source::of(&parts.extensions);
    let over = state.pre_auth.blocked(source)?;
    state.pre_auth.refused(
        source,
        Some(endpoint),
        "over the limit of unauthenticated requests",
    );
    Some(crate::preauth::too_many_at_mcp(over))
}

/// Whether the presented legacy session id may be used by this gateway session: not
/// when it is another gateway session's, nor (to end it) when this gateway never opened
/// it or already ended it; both answer "not found", as the transport spec asks.
fn may_use_legacy(state: &EdgeState, id: &str, session: &Session, is_delete: bool) -> bool {
    let owner = state
        .legacy
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(id)
        .map(|(o, _)| o.clone());
    !(owner.as_ref().is_some_and(|o| *o != session.id().0) || (is_delete && owner.is_none()))
}

async fn edge(State(state): State<EdgeState>, request: Request, next: Next) -> Response {
    // Only the MCP endpoints need a principal; /healthz, /readyz and the metadata are
    // for probes and discovery (they reveal server ids and states, not secrets; keep
    // the probes off public listeners).
    let Some(endpoint) = request
        .uri()
        .path()
        .strip_prefix(&*state.mcp_prefix)
        .map(|r| r.split('/').next().unwrap_or_default().to_owned())
    else {
        return next.run(request).await;
    };
    let Some(manager) = state.endpoints.get(&endpoint).cloned() else {
        return plain(StatusCode::NOT_FOUND, "no such endpoint\n");
    };
    let (mut parts, body) = request.into_parts();
    if query_carries_token(&parts.uri) {
        // Never looked at, never logged: a token in a URL leaks through logs and history.
        let e = AuthError::InvalidRequest("credentials in the query string are not accepted".into());
        return refuse(&state, &parts, &endpoint, &e);
    }
    if let Some(refused) = over_unauthenticated_budget(&state, &parts, &endpoint) {
        return refused;
    }
    let authenticated = match state.auth.authenticate(&parts).await {
        Ok(a) => a,
        Err(e) => return refuse(&state, &parts, &endpoint, &e),
    };
    let principal = Arc::new(authenticated.principal);
    let session = match state
        .gateway_sessions
        .admit(&principal, &authenticated.credential, &endpoint)
    {
        Ok(s) => s,
        Err(SessionRefused::Expired) => return refuse(&state, &parts, &endpoint, &AuthError::Expired),
        Err(_) => return refuse(&state, &parts, &endpoint, &AuthError::Revoked),
    };
    // A legacy session belongs to the gateway session (so the principal) that opened it.
    let presented = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let is_delete = parts.method == http::Method::DELETE;
    if let Some(id) = &presented
        && !may_use_legacy(&state, id, &session, is_delete)
    {
        return plain(StatusCode::NOT_FOUND, "session not found\n");
    }
    let audit_principal = state.audit.as_ref().map(|_| principal.clone());
    parts.extensions.insert(principal);
    parts.extensions.insert(session.id().clone());
    parts.extensions.insert(session.clone());
    let is_post = parts.method == http::Method::POST;
    let mut posted = None;
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
        posted = Some(bytes.clone());
        Body::from(bytes)
    } else {
        body
    };
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if is_post {
        if response.status() == StatusCode::BAD_REQUEST
            && let (Some(sink), Some(p), Some(bytes)) = (&state.audit, audit_principal, &posted)
        {
            record_refused(sink, &p, &session, &endpoint, bytes).await;
        }
        response = jsonrpc_errors(response).await;
    }
    if presented.is_none()
        && let Some(id) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
    {
        bind_legacy(&state, &session, manager, id.to_owned());
    }
    if is_delete && let Some(id) = &presented {
        deleted_legacy(&state, id, &mut response);
    }
    end_with_session(response, &session)
}

/// A client ended its legacy session `id` (DELETE): answered 200, the binding goes.
fn deleted_legacy(state: &EdgeState, id: &str, response: &mut Response) {
    if response.status() != StatusCode::ACCEPTED {
        return;
    }
    // rmcp answers a DELETE with 202; the SDKs' own servers answer 200, and the Python
    // client warns ("Session termination failed: 202") on anything but 200 and 204.
    *response.status_mut() = StatusCode::OK;
    if let Some((_, deleted)) = state
        .legacy
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(id)
    {
        deleted.cancel();
    }
}

/// Audits a request the transport refused before any layer saw it (header and body
/// disagree, a malformed name): nothing was forwarded.
async fn record_refused(
    sink: &Arc<dyn mcp_guard_core::AuditSink>,
    principal: &mcp_guard_core::Principal,
    session: &Session,
    endpoint: &str,
    body: &[u8],
) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |v: Option<&serde_json::Value>| {
        v.and_then(serde_json::Value::as_str)
            .map(|s| s.chars().take(256).collect::<String>())
    };
    let method =
        field(parsed.as_ref().and_then(|v| v.get("method"))).unwrap_or_else(|| "(unparsable)".into());
    let action = if matches!(
        method.as_str(),
        "tools/call" | "prompts/get" | "resources/read" | "completion/complete"
    ) {
        mcp_guard_core::Action::Call
    } else {
        mcp_guard_core::Action::List
    };
    let mut event =
        mcp_guard_core::AuditEvent::new(mcp_guard_core::audit::EventKind::Request { method, action });
    let mut who = mcp_guard_core::audit::AuditPrincipal::new(principal.id(), principal.kind());
    who.on_behalf_of = principal.on_behalf_of().map(str::to_owned);
    event.principal = Some(who);
    event.session = Some(session.id().0.to_string());
    event.endpoint = Some(endpoint.to_owned());
    event.requested_name = field(
        parsed
            .as_ref()
            .and_then(|v| v.get("params"))
            .and_then(|p| p.get("name").or_else(|| p.get("uri"))),
    );
    event.rule = Some("http edge: refused by the transport checks (400)".into());
    event.outcome = Some(mcp_guard_core::Outcome::Denied);
    event.request_bytes = Some(body.len());
    if let Err(e) = sink.record(&event).await {
        tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "could not record a refused request");
    }
}

/// Records that a legacy session belongs to `session`, and closes it when `session`
/// ends (revoked, expired, shut down).
fn bind_legacy(state: &EdgeState, session: &Arc<Session>, manager: Arc<LeanSessionManager>, id: String) {
    let deleted = CancellationToken::new();
    state
        .legacy
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone(), (session.id().0.clone(), deleted.clone()));
    let closed = session.closed().clone();
    let legacy = state.legacy.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = closed.cancelled() => {}
            // The client ended it (DELETE): nothing left to close.
            () = deleted.cancelled() => return,
        }
        legacy.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        let _ = rmcp::transport::streamable_http_server::SessionManager::close_session(&*manager, &id.into())
            .await;
    });
}

/// A streamed response (SSE) stops when its gateway session ends.
fn end_with_session(response: Response, session: &Session) -> Response {
    let streaming = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if !streaming {
        return response;
    }
    let closed = session.closed().clone().cancelled_owned();
    let (parts, body) = response.into_parts();
    let stream = futures::StreamExt::take_until(body.into_data_stream(), closed);
    Response::from_parts(parts, Body::from_stream(stream))
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
/// `shutdown` is cancelled. Each request carries its peer address
/// (`ConnectInfo<SocketAddr>`), which [`PreAuth`] counts by.
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
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

/// Empty body helper for tests.
#[doc(hidden)]
pub fn empty_body() -> Body {
    Body::empty()
}
