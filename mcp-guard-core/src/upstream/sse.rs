//! Legacy HTTP+SSE client transport (MCP 2024-11-05): [`SseConnector`].
//!
//! rmcp 3.x no longer ships this transport, so it is implemented here on `reqwest` and
//! `sse-stream`, as an rmcp [`Transport<RoleClient>`](rmcp::transport::Transport). The
//! protocol, its limits and the same-origin rule for the endpoint are documented on
//! [`SseConnector`].

use std::borrow::Cow;
use std::fmt;
use std::future::{Future, ready};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::Url;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::Transport;
use sse_stream::{Sse, SseStream};

use super::UpstreamError;
use super::client::UpstreamClient;
use super::connect::{Connector, HttpSpec, http_client, resolved_headers, unavailable};
use super::rmcp_upstream::error_chain;
use crate::credential::CredentialStore;

/// Default limit for receiving the `endpoint` event.
const DEFAULT_ENDPOINT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for one SSE event.
const DEFAULT_MAX_EVENT_SIZE: usize = 16 * 1024 * 1024;
/// Limit for one message `POST`.
const POST_TIMEOUT: Duration = Duration::from_secs(30);

/// Dials a legacy HTTP+SSE upstream (MCP 2024-11-05): `GET` an event stream, `POST`
/// messages to the endpoint it announces.
///
/// Before streamable HTTP, MCP servers spoke a two-channel protocol over HTTP:
///
/// 1. The client opens a long-lived `GET` on the server's SSE URL
///    (`Accept: text/event-stream`).
/// 2. The server's first event is `event: endpoint`, whose data is the URL (often relative,
///    e.g. `/messages?sessionId=…`) the client must `POST` its JSON-RPC messages to.
/// 3. Every client message is one `POST` with a JSON body; the server acknowledges with a
///    `2xx` (usually `202 Accepted`) and delivers its answers, notifications and requests as
///    `event: message` events on the `GET` stream.
///
/// The connection always uses the `initialize` lifecycle (offering 2025-11-25, the newest
/// version that has it): legacy servers know nothing of `server/discover`, and probing it
/// would only cost a timeout.
///
/// Same shape as [`HttpConnector`](super::HttpConnector): header values may name secrets as
/// `${NAME}`, resolved from the credential store on every (re)connection and sent with the
/// `GET` and every `POST`.
///
/// # Security
///
/// * **Origin rule (SSRF guard).** The `endpoint` event is resolved against the SSE URL and
///   refused unless it has the *same origin* (scheme, host and port) as the SSE URL. A
///   server, or anything that can inject into its stream, could otherwise make the gateway
///   `POST` (with the configured, possibly credential-bearing headers) to an arbitrary host,
///   including ones inside the gateway's network. A server behind a proxy that announces an
///   absolute endpoint under another name is refused too: configure the SSE URL with the
///   origin the server announces.
/// * Redirects are not followed (the shared HTTP client has redirects switched off).
/// * Header values are never logged, and neither are endpoint paths or queries (a legacy
///   session id in the query is a bearer capability for the session); `Debug` shows header
///   names only, errors name origins only, and `reqwest` errors are stripped of their URL.
///
/// # Limits
///
/// * One SSE event may be at most [`max_event_size`](Self::max_event_size) bytes (16 MiB by
///   default), counted on the raw stream before parsing so an endless line cannot exhaust
///   memory. An oversized event or an unparseable SSE stream **closes the connection**
///   (the stream cannot be resynchronised); the supervisor then reports the upstream as
///   failed and reconnects on the next use.
/// * A well-framed `message` event whose data is not a valid server JSON-RPC message is
///   **skipped** and logged (without its content); a request it answered then runs into its
///   timeout.
/// * Events of other types (and later `endpoint` events) are ignored.
/// * The endpoint event must arrive within [`endpoint_timeout`](Self::endpoint_timeout) (10 s by
///   default) of starting the `GET`.
/// * Each `POST` may take at most 30 s; a non-`2xx` answer is a send error.
/// * There is no resumption (`Last-Event-ID`): when the stream ends the connection is over,
///   and the supervisor reconnects with a fresh session.
///
/// # Example
///
/// ```no_run
/// use std::sync::Arc;
///
/// use mcp_guard_core::upstream::{HttpSpec, RmcpUpstream, SseConnector, Template, UpstreamOptions};
/// use mcp_guard_core::{CredentialKey, MemoryCredentialStore, Upstream};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryCredentialStore::new();
/// store.set(CredentialKey::shared("legacy", "TOKEN"), "s3cret".to_owned().into());
/// let spec = HttpSpec::new("https://legacy.example/sse")
///     .header("Authorization", Template::parse("Bearer ${TOKEN}")?);
/// let connector = SseConnector::new("legacy", spec, Arc::new(store));
/// let upstream = RmcpUpstream::new("legacy", connector, UpstreamOptions::default());
/// for tool in &upstream.catalog().await?.tools {
///     println!("{}", tool.name);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SseConnector {
    server: Arc<str>,
    spec: HttpSpec,
    credentials: Arc<dyn CredentialStore>,
    principal: Option<Arc<str>>,
    endpoint_timeout: Duration,
    max_event_size: usize,
}

impl fmt::Debug for SseConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseConnector")
            .field("server", &self.server)
            .field("url", &self.spec.url)
            .field("headers", &self.spec.headers.keys().collect::<Vec<_>>())
            .field("principal", &self.principal)
            .field("endpoint_timeout", &self.endpoint_timeout)
            .field("max_event_size", &self.max_event_size)
            .finish_non_exhaustive()
    }
}

impl SseConnector {
    /// A connector for `server`; `spec.url` is the SSE URL (`http://…/sse`).
    pub fn new(server: impl Into<Arc<str>>, spec: HttpSpec, credentials: Arc<dyn CredentialStore>) -> Self {
        Self {
            server: server.into(),
            spec,
            credentials,
            principal: None,
            endpoint_timeout: DEFAULT_ENDPOINT_TIMEOUT,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
        }
    }

    /// Resolves personal credentials of `principal`.
    #[must_use]
    pub fn for_principal(mut self, principal: impl Into<Arc<str>>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// How long to wait, from the start of the `GET`, for the `endpoint` event
    /// (default 10 s).
    #[must_use]
    pub fn endpoint_timeout(mut self, timeout: Duration) -> Self {
        self.endpoint_timeout = timeout;
        self
    }

    /// The largest SSE event accepted, in bytes (default 16 MiB). A larger one closes the
    /// connection.
    #[must_use]
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.max_event_size = bytes;
        self
    }
}

#[async_trait]
impl Connector for SseConnector {
    async fn connect(
        &self,
        mut client: UpstreamClient,
    ) -> Result<RunningService<RoleClient, UpstreamClient>, UpstreamError> {
        let server = &*self.server;
        // The HTTP+SSE transport predates 2026-07-28: always `initialize`.
        client.protocol = super::UpstreamProtocol::Legacy;
        let headers = resolved_headers(
            server,
            self.principal.as_deref(),
            &self.spec.headers,
            &*self.credentials,
        )
        .await?;
        let url =
            Url::parse(&self.spec.url).map_err(|e| unavailable(server, SseError::InvalidUrl(e.into())))?;
        let http = http_client(self.spec.reuse_connections).map_err(|e| unavailable(server, e))?;
        let options = SseOptions {
            endpoint_timeout: self.endpoint_timeout,
            max_event_size: self.max_event_size,
        };
        let transport = SseClientTransport::connect(self.server.clone(), http, url, headers, options)
            .await
            .map_err(|e| unavailable(server, e))?;
        client.serve(transport).await.map_err(|e| unavailable(server, e))
    }
}

/// What can go wrong on a legacy SSE connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SseError {
    /// The configured SSE URL does not parse.
    #[error("invalid SSE URL")]
    InvalidUrl(#[source] crate::BoxError),
    /// The SSE URL is not `http` or `https`.
    #[error("SSE URL scheme {0:?} is not http or https")]
    UnsupportedScheme(String),
    /// The `GET` failed before an answer.
    #[error("SSE GET failed")]
    Get(#[source] reqwest::Error),
    /// The `GET` was answered with a non-success status.
    #[error("SSE GET answered with status {0}")]
    GetStatus(reqwest::StatusCode),
    /// The `GET` answer is not an event stream.
    #[error("SSE GET answered with content type {0:?}, not text/event-stream")]
    NotEventStream(String),
    /// No `endpoint` event in time.
    #[error("no endpoint event within {0:?}")]
    EndpointTimeout(Duration),
    /// The stream ended (or broke) before the `endpoint` event.
    #[error("SSE stream ended before the endpoint event")]
    EndedBeforeEndpoint(#[source] Option<sse_stream::Error>),
    /// The `endpoint` event's data is not a URL.
    #[error("endpoint event does not hold a valid URL")]
    InvalidEndpoint(#[source] crate::BoxError),
    /// The `endpoint` event names another origin than the SSE URL.
    #[error(
        "endpoint event names origin {endpoint}, not the SSE URL's origin {sse}; refused (endpoints must be same-origin)"
    )]
    CrossOriginEndpoint {
        /// The endpoint's origin (`scheme://host:port`).
        endpoint: String,
        /// The SSE URL's origin.
        sse: String,
    },
    /// The message could not be serialised.
    #[error("could not serialise a message")]
    Serialize(#[source] serde_json::Error),
    /// The `POST` failed before an answer.
    #[error("message POST failed")]
    Post(#[source] reqwest::Error),
    /// The `POST` was answered with a non-success status.
    #[error("message POST answered with status {0}")]
    PostStatus(reqwest::StatusCode),
}

#[derive(Debug, Clone, Copy)]
struct SseOptions {
    endpoint_timeout: Duration,
    max_event_size: usize,
}

type EventStream = BoxStream<'static, Result<Sse, sse_stream::Error>>;

/// rmcp [`Transport`] over one legacy SSE session.
///
/// `receive` reads the `GET` stream; `send` `POST`s to the endpoint; `close` drops the
/// stream, which ends the `GET`.
struct SseClientTransport {
    server: Arc<str>,
    http: reqwest::Client,
    endpoint: Url,
    headers: http::HeaderMap,
    events: Option<EventStream>,
}

impl fmt::Debug for SseClientTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseClientTransport")
            .field("server", &self.server)
            .field("endpoint_origin", &self.endpoint.origin().ascii_serialization())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("open", &self.events.is_some())
            .finish_non_exhaustive()
    }
}

impl SseClientTransport {
    /// Opens the `GET` stream and waits for the `endpoint` event.
    async fn connect(
        server: Arc<str>,
        http: reqwest::Client,
        sse_url: Url,
        headers: http::HeaderMap,
        options: SseOptions,
    ) -> Result<Self, SseError> {
        if !matches!(sse_url.scheme(), "http" | "https") {
            return Err(SseError::UnsupportedScheme(sse_url.scheme().to_owned()));
        }
        let handshake = async {
            let response = http
                .get(sse_url.clone())
                .headers(headers.clone())
                .header(http::header::ACCEPT, "text/event-stream")
                .header(http::header::CACHE_CONTROL, "no-cache")
                .send()
                .await
                .map_err(|e| SseError::Get(e.without_url()))?;
            let status = response.status();
            if !status.is_success() {
                return Err(SseError::GetStatus(status));
            }
            let content_type = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !content_type
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
            {
                return Err(SseError::NotEventStream(content_type.chars().take(64).collect()));
            }
            let mut events = event_stream(response, options.max_event_size);
            let data = wait_for_endpoint(&server, &mut events).await?;
            Ok((data, events))
        };
        let (data, events) = tokio::time::timeout(options.endpoint_timeout, handshake)
            .await
            .map_err(|_| SseError::EndpointTimeout(options.endpoint_timeout))??;
        let endpoint = resolve_endpoint(&sse_url, &data)?;
        tracing::debug!(server = %server, origin = %endpoint.origin().ascii_serialization(), "legacy SSE endpoint received");
        Ok(Self {
            server,
            http,
            endpoint,
            headers,
            events: Some(events),
        })
    }
}

/// The raw body, limited per event, parsed into SSE events.
fn event_stream(response: reqwest::Response, max_event_size: usize) -> EventStream {
    let limited = response
        .bytes_stream()
        .scan(EventSizeLimit::new(max_event_size), |limit, item| {
            let out = if limit.failed {
                None
            } else {
                match item {
                    Ok(chunk) if limit.observe(&chunk) => Some(Ok::<Bytes, BodyError>(chunk)),
                    Ok(_) => {
                        limit.failed = true;
                        Some(Err(BodyError::TooLarge(limit.max)))
                    }
                    Err(e) => {
                        limit.failed = true;
                        Some(Err(BodyError::Http(e.without_url())))
                    }
                }
            };
            ready(out)
        });
    SseStream::from_bytes_stream(limited).boxed()
}

/// Why the event stream's body ended in error.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    /// An event over the limit.
    #[error("an SSE event exceeded the maximum size of {0} bytes")]
    TooLarge(usize),
    /// The connection failed.
    #[error("reading the SSE stream failed")]
    Http(#[source] reqwest::Error),
}

/// Reads events until the first `endpoint` event and returns its data.
async fn wait_for_endpoint(server: &str, events: &mut EventStream) -> Result<String, SseError> {
    loop {
        match events.next().await {
            None => return Err(SseError::EndedBeforeEndpoint(None)),
            Some(Err(e)) => return Err(SseError::EndedBeforeEndpoint(Some(e))),
            Some(Ok(sse)) => match sse.event.as_deref() {
                Some("endpoint") => return Ok(sse.data.unwrap_or_default()),
                other => {
                    tracing::debug!(
                        server,
                        event = other.unwrap_or("message"),
                        "ignoring SSE event before the endpoint"
                    );
                }
            },
        }
    }
}

/// Resolves the `endpoint` event's data against the SSE URL and enforces the origin rule.
fn resolve_endpoint(sse_url: &Url, data: &str) -> Result<Url, SseError> {
    let endpoint = sse_url
        .join(data.trim())
        .map_err(|e| SseError::InvalidEndpoint(e.into()))?;
    let (theirs, ours) = (endpoint.origin(), sse_url.origin());
    // Opaque origins (non-http schemes) never compare equal, so they are refused too.
    if theirs != ours || !matches!(endpoint.scheme(), "http" | "https") {
        return Err(SseError::CrossOriginEndpoint {
            endpoint: theirs.ascii_serialization(),
            sse: ours.ascii_serialization(),
        });
    }
    Ok(endpoint)
}

/// Counts the bytes of the SSE event being received, on the raw stream.
///
/// Field lines count towards their event until the blank line that ends it; comment lines
/// (`:`-prefixed, keep-alives) are bounded individually but not retained.
#[derive(Debug)]
struct EventSizeLimit {
    max: usize,
    event: usize,
    line: usize,
    line_is_comment: bool,
    previous_was_cr: bool,
    failed: bool,
}

impl EventSizeLimit {
    fn new(max: usize) -> Self {
        Self {
            max,
            event: 0,
            line: 0,
            line_is_comment: false,
            previous_was_cr: false,
            failed: false,
        }
    }

    /// Feeds a chunk; `false` once the current event is over the limit.
    fn observe(&mut self, chunk: &[u8]) -> bool {
        for &b in chunk {
            if std::mem::take(&mut self.previous_was_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\r' | b'\n' => {
                    self.previous_was_cr = b == b'\r';
                    if self.line == 0 {
                        self.event = 0;
                    } else if !self.line_is_comment {
                        self.event = self.event.saturating_add(self.line).saturating_add(1);
                    }
                    self.line = 0;
                    self.line_is_comment = false;
                }
                _ => {
                    if self.line == 0 {
                        self.line_is_comment = b == b':';
                    }
                    self.line = self.line.saturating_add(1);
                }
            }
            if self.event.saturating_add(self.line) > self.max {
                return false;
            }
        }
        true
    }
}

impl Transport<RoleClient> for SseClientTransport {
    type Error = SseError;

    fn name() -> Cow<'static, str> {
        Cow::Borrowed("legacy-sse")
    }

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), SseError>> + Send + 'static {
        let request = serde_json::to_vec(&item).map(|body| {
            self.http
                .post(self.endpoint.clone())
                .headers(self.headers.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .timeout(POST_TIMEOUT)
                .body(body)
        });
        async move {
            let response = request
                .map_err(SseError::Serialize)?
                .send()
                .await
                .map_err(|e| SseError::Post(e.without_url()))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(SseError::PostStatus(status))
            }
        }
    }

    /// Cancel safe: the only await point is the event stream's `next()`.
    async fn receive(&mut self) -> Option<ServerJsonRpcMessage> {
        loop {
            let events = self.events.as_mut()?;
            match events.next().await {
                None => {
                    tracing::debug!(server = %self.server, "legacy SSE stream ended");
                    self.events = None;
                    return None;
                }
                Some(Err(e)) => {
                    tracing::warn!(server = %self.server, error = %error_chain(&e), "legacy SSE stream failed; closing the connection");
                    self.events = None;
                    return None;
                }
                Some(Ok(sse)) => match sse.event.as_deref() {
                    None | Some("message") => {
                        let data = sse.data.unwrap_or_default();
                        match serde_json::from_str::<ServerJsonRpcMessage>(&data) {
                            Ok(message) => return Some(message),
                            Err(e) => tracing::warn!(
                                server = %self.server,
                                bytes = data.len(),
                                line = e.line(),
                                column = e.column(),
                                "skipping a legacy SSE message that is not a valid JSON-RPC message"
                            ),
                        }
                    }
                    Some(other) => {
                        tracing::debug!(server = %self.server, event = other, "ignoring legacy SSE event");
                    }
                },
            }
        }
    }

    async fn close(&mut self) -> Result<(), SseError> {
        // Dropping the body stream drops the response, which ends the GET.
        self.events = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse() -> Url {
        Url::parse("http://127.0.0.1:8080/sse").unwrap()
    }

    #[test]
    fn relative_endpoints_resolve_against_the_sse_url() {
        let e = resolve_endpoint(&sse(), "/messages?sessionId=abc").unwrap();
        assert_eq!(e.as_str(), "http://127.0.0.1:8080/messages?sessionId=abc");
        let e = resolve_endpoint(&sse(), " messages/?sessionId=abc\n").unwrap();
        assert_eq!(e.as_str(), "http://127.0.0.1:8080/messages/?sessionId=abc");
        let e = resolve_endpoint(&sse(), "http://127.0.0.1:8080/m").unwrap();
        assert_eq!(e.path(), "/m");
        let default_port = Url::parse("http://example.com/sse").unwrap();
        assert!(resolve_endpoint(&default_port, "http://example.com:80/m").is_ok());
    }

    #[test]
    fn other_origins_are_refused() {
        for bad in [
            "http://127.0.0.1:8081/messages",
            "https://127.0.0.1:8080/messages",
            "http://localhost:8080/messages",
            "//evil.example/messages",
            "http://169.254.169.254/latest/meta-data",
            "file:///etc/passwd",
            "data:text/plain,hi",
        ] {
            let err = resolve_endpoint(&sse(), bad).unwrap_err();
            assert!(
                matches!(err, SseError::CrossOriginEndpoint { .. }),
                "{bad}: {err}"
            );
        }
        let err = resolve_endpoint(&sse(), "http://evil.example:9/x?secret=1").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("http://evil.example:9") && msg.contains("http://127.0.0.1:8080"),
            "{msg}"
        );
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[test]
    fn event_size_limit_counts_events_not_streams() {
        // Field lines count with their newline, until the blank line ending the event.
        let mut l = EventSizeLimit::new(20);
        assert!(l.observe(b"data: 0123456789\n\n"));
        assert!(l.observe(b"data: 0123456789\r\n\r\n"));
        assert!(l.observe(b"data: 0123456789\r\r"));
        assert!(
            l.observe(b": ping\n: ping\n: ping\n: ping\n\n"),
            "comments are not retained"
        );
        assert!(!l.observe(b"data: 0123456789abcdef\n"));
        let mut l = EventSizeLimit::new(20);
        assert!(l.observe(b"data: 01234"));
        assert!(
            !l.observe(b"56789abcdefgh"),
            "an unterminated line counts as it arrives"
        );
        let mut l = EventSizeLimit::new(20);
        assert!(l.observe(b"data: 0\n"));
        assert!(!l.observe(b"data: 0123456\n"), "field lines of one event add up");
    }
}
