//! MCP servers as the gateway sees them: the [`Upstream`] trait and its rmcp adapter.
//!
//! [`RmcpUpstream`] is one upstream server reached through a [`Connector`]: a stdio child
//! process ([`StdioConnector`]), streamable HTTP ([`HttpConnector`]), legacy HTTP+SSE
//! ([`SseConnector`]) or an rmcp handler in the same process ([`InProcessConnector`]).
//! It supervises the connection: connects with the Auto lifecycle (`server/discover`,
//! falling back to `initialize`), keeps the catalogue current, notices when the server
//! goes away and reconnects, with backoff, on the next use.

mod catalogue;
mod child;
mod client;
mod connect;
pub mod oauth;
mod per_session;
mod placeholder;
mod probe;
mod recheck;
mod rmcp_upstream;
mod session_watch;
mod sse;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use rmcp::model::{
    ClientNotification, ClientRequest, Prompt, RequestMetaObject, Resource, ResourceTemplate, ServerPeerInfo,
    ServerResult, Tool,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::BoxError;

pub use catalogue::{DEFAULT_CATALOGUE_REFRESH, MAX_LIST_PAGES, MIN_CATALOGUE_REFRESH};
pub use child::live_processes;
pub use client::UpstreamClient;
pub use connect::{
    Connector, HttpConnector, HttpSpec, InProcessConnector, StdioConnector, StdioSpec, ensure_crypto_provider,
};
pub use per_session::{
    DEFAULT_MAX_UPSTREAM_PROCESSES, MakeUpstream, PerSessionUpstream, ProcessBudget, ProcessPermit,
    SessionLimits,
};
pub use placeholder::{Template, resolve_template};
pub use recheck::{MakeInstance, RecheckCredentials};
pub use rmcp_upstream::{
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_START_TIMEOUT, RmcpUpstream, UpstreamOptions, error_chain,
    start_failure,
};
pub use sse::SseConnector;

/// One upstream MCP server.
///
/// The only core trait that speaks rmcp's types: it *is* the protocol seam.
#[async_trait]
pub trait Upstream: Send + Sync + fmt::Debug {
    /// The configured server id.
    fn id(&self) -> &str;

    /// The server's current catalogue, connecting first if needed.
    ///
    /// # Errors
    /// When the server cannot be reached; callers leave its entries out.
    ///
    /// # Cancel safety
    /// Safe; a connection attempt in progress is finished by whoever awaits it next.
    async fn catalog(&self) -> Result<Arc<Catalog>, UpstreamError>;

    /// Sends one request with the upstream's own names and waits for its answer.
    ///
    /// # Errors
    /// [`UpstreamError`] for transport failures, timeouts, cancellation and JSON-RPC
    /// errors the server returned ([`UpstreamError::Rpc`]).
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request; the upstream is told it was cancelled.
    async fn request(&self, request: ClientRequest, forward: Forward) -> Result<ServerResult, UpstreamError>;

    /// Sends a notification (e.g. roots changed).
    ///
    /// # Errors
    /// When the server is not connected.
    async fn notify(&self, notification: ClientNotification) -> Result<(), UpstreamError>;

    /// Events: catalogue changes, connection changes.
    fn subscribe(&self) -> broadcast::Receiver<UpstreamEvent>;

    /// Current status.
    fn status(&self) -> UpstreamStatus;

    /// Stops the server (a child process is stopped: stdin closed, then SIGTERM, then
    /// SIGKILL to its process group) and does not reconnect.
    async fn shutdown(&self);

    /// Re-reads the catalogue now and reports it as changed (another instance of the
    /// same server announced a change). The default does nothing.
    async fn refresh(&self) {}

    /// The catalogue of the instance that serves requests forwarded with `forward`:
    /// for a server with one instance per gateway session, that session's own
    /// instance (started if it is not running), whose definitions may differ from
    /// what [`Upstream::catalog`] lists. Tool pins are checked against it before a
    /// call. The default is [`Upstream::catalog`].
    ///
    /// # Errors
    /// As [`Upstream::catalog`].
    async fn serving_catalog(&self, forward: &Forward) -> Result<Arc<Catalog>, UpstreamError> {
        let _ = forward;
        self.catalog().await
    }

    /// Like [`Upstream::serving_catalog`], but read from the server now rather than
    /// remembered: the gateway asks before it refuses a call on what it last read.
    /// The default re-reads with [`Upstream::refresh`].
    ///
    /// # Errors
    /// As [`Upstream::catalog`]; a list the server answers with garbage, or not in
    /// time, is [`UpstreamError::Catalogue`].
    async fn reread_serving_catalog(&self, forward: &Forward) -> Result<Arc<Catalog>, UpstreamError> {
        self.refresh().await;
        self.serving_catalog(forward).await
    }
}

/// Which protocol era the gateway speaks to an upstream (`servers.ID.protocol`).
///
/// The era is per connection: the gateway serves clients of either era whatever the
/// upstream speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub enum UpstreamProtocol {
    /// Ask `server/discover` (waiting as long as the start timeout allows); use
    /// 2026-07-28 when the server offers it, `initialize` otherwise.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// `initialize` (2025-11-25 and before), even when the server offers 2026-07-28:
    /// for servers that ask their questions (elicitation, sampling) as requests to the
    /// client, which 2026-07-28 no longer allows.
    #[serde(rename = "legacy")]
    Legacy,
    /// 2026-07-28 only; a server that does not offer it fails to connect.
    #[serde(rename = "2026-07-28")]
    Modern,
}

impl fmt::Display for UpstreamProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Legacy => "legacy",
            Self::Modern => "2026-07-28",
        })
    }
}

/// What a server offers, with its own names.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Catalog {
    /// Tools in the server's order.
    pub tools: Vec<Tool>,
    /// Prompts.
    pub prompts: Vec<Prompt>,
    /// Concrete resources.
    pub resources: Vec<Resource>,
    /// Resource templates.
    pub resource_templates: Vec<ResourceTemplate>,
    /// What the server said about itself at connect time.
    pub server_info: Option<ServerPeerInfo>,
    /// When the gateway read this catalogue from the server.
    pub read_at: Option<Instant>,
    /// How long the server said its lists stay fresh (the smallest `ttlMs` of its
    /// list results), when every list gave a positive one.
    pub fresh_for: Option<Duration>,
    /// Tool pins by name, computed on first use.
    pins: PinCache,
}

/// A catalogue's tool pins, computed on first use. A clone starts empty (its `tools`
/// may be changed), so a cache never outlives the list it was computed from.
#[derive(Default)]
struct PinCache(OnceLock<HashMap<String, String>>);

impl Clone for PinCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl fmt::Debug for PinCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinCache")
    }
}

impl Catalog {
    /// The pin (`sha256:` of the canonical definition, see [`crate::pin`]) of the tool
    /// named `name`, if the catalogue has it.
    pub fn tool_pin(&self, name: &str) -> Option<&str> {
        self.pins
            .0
            .get_or_init(|| {
                self.tools
                    .iter()
                    .map(|t| (t.name.to_string(), crate::pin::tool_pin(t)))
                    .collect()
            })
            .get(name)
            .map(String::as_str)
    }

    /// The definition of the tool named `name`.
    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.name == name)
    }
}

/// Something that happened to an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamEvent {
    /// The catalogue was re-read and differs (tools, prompts or resources).
    CatalogChanged,
    /// A resource the server offers was updated (the upstream's URI).
    ResourceUpdated(String),
    /// Connected (again).
    Connected,
    /// The connection ended.
    Disconnected,
}

/// The visible state of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamState {
    /// Not connected yet.
    Idle,
    /// Connected and serving.
    Connected,
    /// A credential it needs is missing.
    MissingCredentials {
        /// Which credential names.
        missing: Vec<String>,
    },
    /// Switched off in configuration.
    Disabled,
    /// Failed; the next use retries after the backoff.
    Failed {
        /// The last error, as an operator-facing message.
        error: String,
    },
    /// Shut down for good.
    Stopped,
}

/// A state with the time it began.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamStatus {
    /// The state.
    pub state: UpstreamState,
    /// Since when.
    pub since: SystemTime,
}

impl UpstreamStatus {
    /// A status that begins now.
    pub fn now(state: UpstreamState) -> Self {
        Self {
            state,
            since: SystemTime::now(),
        }
    }
}

/// Receives progress updates for one forwarded request.
#[derive(Clone)]
pub struct ProgressSink(Arc<dyn Fn(Progress) + Send + Sync>);

impl ProgressSink {
    /// A sink calling `f` for each update.
    pub fn new(f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) fn send(&self, p: Progress) {
        (self.0)(p);
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// One progress update from an upstream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// Progress so far.
    pub progress: f64,
    /// Total, if known.
    pub total: Option<f64>,
    /// A message.
    pub message: Option<String>,
}

/// The downstream client behind a forwarded request: where the upstream's log
/// messages, sampling and elicitation requests go while the request is in flight.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientLink {
    /// The client.
    pub peer: rmcp::service::Peer<rmcp::service::RoleServer>,
    /// The client's id for the request (server requests ride its response stream).
    pub request_id: rmcp::model::RequestId,
    /// What the client declared it can do.
    pub capabilities: rmcp::model::ClientCapabilities,
    /// Whether the client may be sent requests (protocol revisions before 2026-07-28).
    pub accepts_requests: bool,
    /// For a client that may not be sent requests (2026-07-28): where a question the
    /// upstream asks as a request (elicitation, sampling, roots) goes instead, to be
    /// put to the client as an input-required result.
    pub questions: Option<QuestionSender>,
}

impl ClientLink {
    /// A link to `peer` for its request `request_id`.
    pub fn new(
        peer: rmcp::service::Peer<rmcp::service::RoleServer>,
        request_id: rmcp::model::RequestId,
        capabilities: rmcp::model::ClientCapabilities,
        accepts_requests: bool,
    ) -> Self {
        Self {
            peer,
            request_id,
            capabilities,
            accepts_requests,
            questions: None,
        }
    }

    /// Questions the upstream asks as requests go to `sender` (for a 2026-07-28 client).
    #[must_use]
    pub fn questions_to(mut self, sender: QuestionSender) -> Self {
        self.questions = Some(sender);
        self
    }
}

/// A question an upstream on a legacy connection asked as a request to the client
/// (elicitation, sampling, roots) while serving a request of a 2026-07-28 client, which
/// may not be sent requests: whoever drives that client's request asks it as an
/// input-required result and sends the client's answer back.
#[derive(Debug)]
#[non_exhaustive]
pub struct Question {
    /// What the upstream asks.
    pub request: rmcp::model::InputRequest,
    /// Where the client's answer goes (its result as JSON, or the error to give the
    /// upstream).
    pub answer: tokio::sync::oneshot::Sender<Result<serde_json::Value, rmcp::ErrorData>>,
}

/// Where an upstream's [`Question`]s go.
pub type QuestionSender = tokio::sync::mpsc::UnboundedSender<Question>;

impl fmt::Debug for ClientLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientLink")
            .field("request_id", &self.request_id)
            .field("accepts_requests", &self.accepts_requests)
            .finish_non_exhaustive()
    }
}

/// How to forward one request.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Forward {
    /// `_meta` to send (already sanitised: trace context and allowed keys only).
    pub meta: Option<RequestMetaObject>,
    /// Where the upstream's progress goes.
    pub progress: Option<ProgressSink>,
    /// The client behind the request (for log messages, sampling and elicitation the
    /// upstream sends while the request is in flight).
    pub client: Option<ClientLink>,
    /// Cancelled when the downstream caller cancels.
    pub cancel: CancellationToken,
    /// How long to wait for the answer.
    pub timeout: Option<Duration>,
    /// The gateway session the request belongs to (per-session upstreams route by it).
    pub session: Option<Arc<crate::access::Session>>,
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The server answered with a JSON-RPC error.
    #[error("upstream returned an error")]
    Rpc(rmcp::ErrorData),
    /// The server is not reachable (not started, refused, backing off).
    #[error("upstream {server} unavailable")]
    Unavailable {
        /// Server id.
        server: String,
        /// Why.
        #[source]
        source: Option<BoxError>,
    },
    /// A credential the server needs is missing.
    #[error("upstream {server} is missing credentials: {}", missing.join(", "))]
    MissingCredentials {
        /// Server id.
        server: String,
        /// Placeholder names.
        missing: Vec<String>,
    },
    /// Personal credentials of the calling principal are missing (and maybe shared
    /// ones too): the principal sets their own with `mcp-guard credentials set`.
    #[error("upstream {server} is missing credentials for principal {principal}: {}", personal.iter().chain(shared).cloned().collect::<Vec<_>>().join(", "))]
    MissingPersonalCredentials {
        /// Server id.
        server: String,
        /// Whose.
        principal: String,
        /// Missing personal names (the principal sets these).
        personal: Vec<String>,
        /// Missing shared names (an operator sets these).
        shared: Vec<String>,
        /// For a server the principal signs in to with OAuth: a link that starts the
        /// sign-in (single-use, short-lived, bound to the principal and server).
        authorize_url: Option<String>,
    },
    /// The principal's OAuth grant for the server stopped working (the authorization
    /// server rejected the refresh token, or the server refused the token): the
    /// principal signs in again.
    #[error("upstream {server} needs principal {principal} to sign in again: {reason}")]
    NeedsReauthentication {
        /// Server id.
        server: String,
        /// Whose grant.
        principal: String,
        /// Why, in words.
        reason: String,
        /// A link that starts the sign-in, when the gateway can build one.
        authorize_url: Option<String>,
    },
    /// The connection ended while the request was in flight.
    #[error("upstream {server} terminated")]
    Terminated {
        /// Server id.
        server: String,
    },
    /// The server did not complete its start (spawn or dial, and the MCP handshake)
    /// within its start timeout.
    #[error("upstream {server} did not answer within {} of starting", rmcp_upstream::human(*timeout))]
    StartTimeout {
        /// Server id.
        server: String,
        /// The start timeout.
        timeout: Duration,
    },
    /// The server is down: its last start failed or its connection had already ended,
    /// and the request was not sent.
    #[error("upstream {server} is down: {reason}")]
    Down {
        /// Server id.
        server: String,
        /// Why, in the gateway's words (never text from the server).
        reason: String,
        /// When the gateway starts it again, if it waits before doing so.
        retry_in: Option<Duration>,
    },
    /// No answer in time.
    #[error("upstream {server} timed out after {timeout:?}")]
    Timeout {
        /// Server id.
        server: String,
        /// The limit.
        timeout: Duration,
    },
    /// The caller cancelled.
    #[error("request cancelled")]
    Cancelled,
    /// A process limit is reached (per-session instances).
    #[error("upstream {server}: {limit}")]
    Exhausted {
        /// Server id.
        server: String,
        /// Which limit, in words.
        limit: String,
    },
    /// The server answered something that is not valid for the request, or wrote
    /// something that is not JSON-RPC (the connection is then recycled).
    #[error("upstream {server} sent an invalid response")]
    Protocol {
        /// Server id.
        server: String,
    },
    /// One message from the server was larger than its cap (the connection is then
    /// recycled).
    #[error("upstream {server} sent a message larger than {limit} bytes")]
    ResponseTooLarge {
        /// Server id.
        server: String,
        /// The cap, in bytes.
        limit: usize,
    },
    /// The server's catalogue could not be used: a list answered with something that is
    /// not a list, a tool name given twice, pages without end, or no answer in time.
    /// Its entries are withheld until a read succeeds.
    #[error("upstream {server} sent an unusable catalogue: {reason}")]
    Catalogue {
        /// Server id.
        server: String,
        /// What was wrong, in words.
        reason: String,
    },
    /// The server was switched off or shut down.
    #[error("upstream {server} is disabled")]
    Disabled {
        /// Server id.
        server: String,
    },
}
