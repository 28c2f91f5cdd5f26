//! Federation: many upstreams behind one endpoint, with stable namespaced names.
//!
//! Tools and prompts are exposed as `<server><separator><name>` (default separator
//! `__`), resources as `<server>+<uri>`. The server part is the configured id, never
//! what the upstream calls itself. Nothing is exposed until a [`Selection`] names it
//! (default deny), and a name that two servers would both produce is a startup error.
//!
//! Each endpoint keeps an immutable [`Snapshot`] of its federated catalogue, rebuilt
//! when an upstream's catalogue or connection changes; requests resolve names against
//! the snapshot they started with.
//!
//! [`GatewayBuilder::start`] returns before any upstream has connected, so a front door
//! answers `server/discover` and `initialize` at once: each server joins its endpoints'
//! catalogues when it connects, and clients are told with `list_changed`. While servers
//! are making their first start, a request that needs the catalogue waits for them up
//! to [`GatewayBuilder::startup_wait`], then sees what is connected.
//!
//! The types are declared here, so that each part sees the fields it shares with the
//! others; their behaviour lives in one file per part: `spec` (what a gateway is built
//! from), `builder`, `gateway` (the running gateway, reloads), `endpoint` (an endpoint
//! at run time and its rebuilds), `snapshot` (the federated catalogue, name
//! resolution), `pins` (the tool gate at run time).

mod builder;
mod endpoint;
mod gateway;
mod pins;
mod snapshot;
mod spec;

pub use builder::{BuildError, DEFAULT_STARTUP_WAIT};
pub use endpoint::ListChanged;
pub use gateway::Reconfigured;
pub(crate) use snapshot::request_kind;
pub use snapshot::valid_tool_name;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mcp_guard_core::pin::ToolGate;
use mcp_guard_core::policy::Pattern;
use mcp_guard_core::{AuditSink, Catalog, Target, Upstream};
use rmcp::model::{Prompt, Resource, ResourceTemplate, ServerCapabilities, Tool};
use rmcp::service::{Peer, RoleServer};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use pins::PinVerdict;

/// What an endpoint exposes of one server: globs over the upstream's own names.
///
/// [`Selection::default`] exposes nothing.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Selection {
    tools: Vec<Pattern>,
    prompts: Vec<Pattern>,
    resources: Vec<Pattern>,
    disabled: bool,
    /// Tools switched off whatever the globs match (upstream names).
    tools_off: Vec<String>,
}

/// One endpoint: a name, a description, and the servers it federates.
#[derive(Debug, Clone)]
#[must_use]
pub struct EndpointSpec {
    name: Arc<str>,
    description: Option<String>,
    servers: Vec<(Arc<str>, Selection)>,
    namespaced: bool,
}

#[derive(Clone)]
struct ServerEntry {
    upstream: Arc<dyn Upstream>,
    enabled: bool,
}

/// Builds a [`Gateway`].
#[derive(Default)]
#[must_use]
pub struct GatewayBuilder {
    gate: Option<Arc<dyn ToolGate>>,
    audit: Option<Arc<dyn AuditSink>>,
    separator: Option<String>,
    servers: BTreeMap<Arc<str>, ServerEntry>,
    endpoints: Vec<EndpointSpec>,
    startup_wait: Option<Duration>,
}

struct GatewayInner {
    separator: String,
    /// Replaced as a whole by [`Gateway::reconfigure`].
    servers: RwLock<Arc<BTreeMap<Arc<str>, ServerEntry>>>,
    /// One reconfiguration at a time.
    reconfiguring: tokio::sync::Mutex<()>,
    endpoints: BTreeMap<Arc<str>, Arc<EndpointRuntime>>,
    shutdown: CancellationToken,
    /// True once every enabled server's first start has ended.
    started: tokio::sync::watch::Receiver<bool>,
}

/// The federated gateway: servers, endpoints and their live catalogues.
///
/// Cheap to clone. Serve an endpoint with [`GuardHandler`](crate::GuardHandler) (stdio or any rmcp
/// transport) or over HTTP with [`HttpEdge`](crate::HttpEdge).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<GatewayInner>,
}

struct Member {
    id: Arc<str>,
    upstream: Arc<dyn Upstream>,
    selection: Selection,
    enabled: bool,
    /// True once the server's first start has ended.
    started: tokio::sync::watch::Receiver<bool>,
    /// Cancelled when the member leaves its endpoint (a reload): its watcher ends.
    watching: CancellationToken,
}

/// One endpoint at run time: its members and its current [`Snapshot`].
pub struct EndpointRuntime {
    name: Arc<str>,
    description: Option<String>,
    /// Replaced as a whole by [`Gateway::reconfigure`]; a rebuild reads the members of
    /// the moment it starts.
    members: RwLock<Arc<Vec<Member>>>,
    separator: String,
    namespaced: bool,
    snapshot: RwLock<Arc<Snapshot>>,
    changes: broadcast::Sender<ListChanged>,
    /// The tool gate, when pins or hostile-text checks are on.
    pins: Option<Arc<PinChecks>>,
    peers: Mutex<Vec<Peer<RoleServer>>>,
    subscriptions: Mutex<Vec<Subscription>>,
    version: AtomicU64,
    rebuild: tokio::sync::Mutex<()>,
    /// How long a request waits for servers still making their first start.
    startup_wait: Duration,
    /// Set once every member's first start has ended (no more waiting).
    settled: std::sync::atomic::AtomicBool,
}

/// A legacy client's `resources/subscribe`, by upstream server and URI.
struct Subscription {
    client: Arc<str>,
    server: Arc<str>,
    uri: String,
    peer: Peer<RoleServer>,
}

/// The tool gate of one endpoint at run time: the gate, where its verdicts go, and the
/// verdict last recorded for each definition (so each is recorded once, and a release
/// is recorded when a held definition is admitted).
struct PinChecks {
    endpoint: Arc<str>,
    gate: Arc<dyn ToolGate>,
    audit: Option<Arc<dyn AuditSink>>,
    /// (server, tool) → (pin, what was last recorded about that definition), for the
    /// [`RECORDED_PER_TOOL`] definitions seen last.
    recorded: Mutex<HashMap<(String, String), Vec<PinVerdict>>>,
}

/// What a tool call was admitted on: the serving instance's catalogue and the pin of
/// the definition found there.
#[derive(Debug)]
pub(crate) struct CallCheck {
    catalog: Arc<Catalog>,
    pin: String,
}

/// An endpoint's federated catalogue at one moment: what is listed, how names resolve.
#[non_exhaustive]
pub struct Snapshot {
    endpoint: Arc<str>,
    separator: String,
    namespaced: bool,
    /// Increases with every rebuild.
    pub version: u64,
    tools: Vec<Tool>,
    tool_index: HashMap<String, Target>,
    prompts: Vec<Prompt>,
    prompt_index: HashMap<String, Target>,
    resources: Vec<Resource>,
    templates: Vec<ResourceTemplate>,
    upstreams: HashMap<Arc<str>, Arc<dyn Upstream>>,
    resource_selection: HashMap<Arc<str>, Selection>,
    catalogs: HashMap<Arc<str>, Arc<Catalog>>,
    capabilities: ServerCapabilities,
    problems: Vec<String>,
    collisions: Vec<BuildError>,
    quarantined: HashMap<String, String>,
    /// Admitted tools (exposed name) with the pin of the definition admitted.
    admitted: HashMap<String, String>,
    pins: Option<Arc<PinChecks>>,
}
