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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use mcp_guard_core::pin::{Admission, ToolGate};
use mcp_guard_core::policy::Pattern;
use mcp_guard_core::{AuditSink, Catalog, PolicyError, Target, TargetKind, Upstream, UpstreamState};
use rmcp::model::{
    ClientRequest, Prompt, PromptsCapability, Reference, Resource, ResourceTemplate, ResourcesCapability,
    ServerCapabilities, Tool, ToolsCapability,
};
use rmcp::service::{Peer, RoleServer};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

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

fn patterns<I: IntoIterator<Item = S>, S: AsRef<str>>(globs: I) -> Result<Vec<Pattern>, PolicyError> {
    globs.into_iter().map(|g| Pattern::new(g.as_ref())).collect()
}

impl Selection {
    /// Exposes nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds tool globs (`read_*`, or `*` for all, always explicit).
    ///
    /// # Errors
    /// A glob that does not compile.
    pub fn tools<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, globs: I) -> Result<Self, PolicyError> {
        self.tools.extend(patterns(globs)?);
        Ok(self)
    }

    /// Adds prompt globs.
    ///
    /// # Errors
    /// A glob that does not compile.
    pub fn prompts<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        globs: I,
    ) -> Result<Self, PolicyError> {
        self.prompts.extend(patterns(globs)?);
        Ok(self)
    }

    /// Adds resource URI globs (matched against resource URIs and template URIs).
    ///
    /// # Errors
    /// A glob that does not compile.
    pub fn resources<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        globs: I,
    ) -> Result<Self, PolicyError> {
        self.resources.extend(patterns(globs)?);
        Ok(self)
    }

    /// Switches the server off on this endpoint.
    #[must_use]
    pub fn disabled(mut self) -> Self {
        self.disabled = true;
        self
    }

    /// Switches these tools off (exact upstream names), whatever the globs match.
    #[must_use]
    pub fn without_tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.tools_off.extend(names.into_iter().map(Into::into));
        self
    }

    fn allows(&self, kind: TargetKind, name: &str) -> bool {
        let list = match kind {
            TargetKind::Tool => &self.tools,
            TargetKind::Prompt => &self.prompts,
            _ => &self.resources,
        };
        !self.disabled
            && list.iter().any(|p| p.is_match(name))
            && !(kind == TargetKind::Tool && self.tools_off.iter().any(|t| t == name))
    }
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

impl EndpointSpec {
    /// An endpoint with no servers.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            description: None,
            servers: Vec::new(),
            namespaced: true,
        }
    }

    /// Exposes the one server's names unchanged (no `server__` prefix, no `server+` on
    /// URIs). Only for an endpoint with exactly one server; [`GatewayBuilder::build`]
    /// refuses it otherwise.
    pub fn without_namespace(mut self) -> Self {
        self.namespaced = false;
        self
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Adds a server with what it exposes here.
    pub fn server(mut self, id: impl Into<Arc<str>>, selection: Selection) -> Self {
        self.servers.push((id.into(), selection));
        self
    }
}

/// Why a gateway could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An endpoint names a server that was not added.
    #[error("endpoint {endpoint}: unknown server {server:?}")]
    UnknownServer {
        /// Endpoint.
        endpoint: String,
        /// Server id.
        server: String,
    },
    /// Two entries would be exposed under the same name.
    #[error("endpoint {endpoint}: name {name:?} is produced by both {first} and {second}")]
    Collision {
        /// Endpoint.
        endpoint: String,
        /// The exposed name.
        name: String,
        /// One origin (`server/name`).
        first: String,
        /// The other.
        second: String,
    },
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
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

/// Default [`GatewayBuilder::startup_wait`]: 3 s.
pub const DEFAULT_STARTUP_WAIT: Duration = Duration::from_secs(3);

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl GatewayBuilder {
    /// The separator between server id and name (default `__`).
    pub fn separator(mut self, sep: impl Into<String>) -> Self {
        self.separator = Some(sep.into());
        self
    }

    /// Checks every tool with `gate` whenever a catalogue is read (pins, hostile text);
    /// what it quarantines is absent from lists and refused as awaiting approval.
    pub fn gate(mut self, gate: Arc<dyn ToolGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Records gateway events (tool definitions quarantined) to `sink`.
    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Adds an upstream under its id.
    pub fn server(mut self, upstream: Arc<dyn Upstream>) -> Self {
        let id: Arc<str> = upstream.id().into();
        self.servers.insert(
            id,
            ServerEntry {
                upstream,
                enabled: true,
            },
        );
        self
    }

    /// Adds an upstream that is switched off everywhere (it never connects).
    pub fn disabled_server(mut self, upstream: Arc<dyn Upstream>) -> Self {
        let id: Arc<str> = upstream.id().into();
        self.servers.insert(
            id,
            ServerEntry {
                upstream,
                enabled: false,
            },
        );
        self
    }

    /// Adds an endpoint.
    pub fn endpoint(mut self, spec: EndpointSpec) -> Self {
        self.endpoints.push(spec);
        self
    }

    /// While servers are making their first start, how long a request that needs the
    /// catalogue (a list, a call by name) waits for them before it is answered with
    /// what is connected (default [`DEFAULT_STARTUP_WAIT`]; zero never waits). Only
    /// matters with [`GatewayBuilder::start`].
    pub fn startup_wait(mut self, wait: Duration) -> Self {
        self.startup_wait = Some(wait);
        self
    }

    /// Connects every enabled server (concurrently; a server that fails to connect is
    /// left out and retried later), builds each endpoint's catalogue, and starts
    /// watching upstreams for changes.
    ///
    /// # Errors
    /// [`BuildError`] for an unknown server, a bad separator or a name collision.
    pub async fn build(self) -> Result<Gateway, BuildError> {
        let gateway = self.start()?;
        gateway.started().await;
        if let Some(c) = gateway.collisions().into_iter().next() {
            gateway.shutdown().await;
            return Err(c);
        }
        Ok(gateway)
    }

    /// Builds the gateway and returns at once: every enabled server starts in the
    /// background (concurrently), and joins its endpoints' catalogues when it has
    /// connected, with `list_changed` to the clients; one that fails is left out and
    /// retried on later use. [`Gateway::started`] tells when every server's first
    /// start has ended; a name collision found then is in [`Gateway::collisions`].
    ///
    /// # Errors
    /// [`BuildError`] for an unknown server, a bad separator, or a name-prefix setting
    /// that does not fit the endpoint.
    ///
    /// # Panics
    /// Outside a Tokio runtime (the starts are spawned on it).
    pub fn start(self) -> Result<Gateway, BuildError> {
        let separator = self.separator.unwrap_or_else(|| "__".to_owned());
        if !mcp_guard_core::config::is_name_safe(&separator) {
            return Err(BuildError::Invalid(format!(
                "separator {separator:?} must use only [A-Za-z0-9_.-]"
            )));
        }
        let mut endpoints = BTreeMap::new();
        let mut used: FirstStarts = BTreeMap::new();
        for spec in self.endpoints {
            if !spec.namespaced && spec.servers.len() != 1 {
                return Err(BuildError::Invalid(format!(
                    "endpoint {}: without_namespace needs exactly one server",
                    spec.name
                )));
            }
            let mut members = Vec::new();
            for (id, selection) in spec.servers {
                let entry = self.servers.get(&id).ok_or_else(|| BuildError::UnknownServer {
                    endpoint: spec.name.to_string(),
                    server: id.to_string(),
                })?;
                let enabled = entry.enabled && !selection.disabled;
                let started = if enabled {
                    used.entry(id.clone())
                        .or_insert_with(|| (entry.upstream.clone(), tokio::sync::watch::channel(false).0))
                        .1
                        .subscribe()
                } else {
                    tokio::sync::watch::channel(true).1
                };
                members.push(Member {
                    id,
                    upstream: entry.upstream.clone(),
                    selection,
                    enabled,
                    started,
                    watching: CancellationToken::new(),
                });
            }
            let runtime = Arc::new(EndpointRuntime {
                name: spec.name.clone(),
                description: spec.description,
                members: RwLock::new(Arc::new(members)),
                separator: separator.clone(),
                namespaced: spec.namespaced,
                snapshot: RwLock::new(Arc::new(Snapshot::empty(
                    spec.name.clone(),
                    separator.clone(),
                    spec.namespaced,
                ))),
                changes: broadcast::channel(16).0,
                pins: self.gate.clone().map(|gate| {
                    Arc::new(PinChecks {
                        endpoint: spec.name.clone(),
                        gate,
                        audit: self.audit.clone(),
                        recorded: Mutex::default(),
                    })
                }),
                peers: Mutex::new(Vec::new()),
                subscriptions: Mutex::new(Vec::new()),
                version: AtomicU64::new(0),
                rebuild: tokio::sync::Mutex::new(()),
                startup_wait: self.startup_wait.unwrap_or(DEFAULT_STARTUP_WAIT),
                settled: std::sync::atomic::AtomicBool::new(false),
            });
            endpoints.insert(spec.name, runtime);
        }
        let shutdown = CancellationToken::new();
        let (started_tx, started) = tokio::sync::watch::channel(false);
        let gateway = Gateway {
            inner: Arc::new(GatewayInner {
                separator,
                servers: RwLock::new(Arc::new(self.servers)),
                endpoints,
                reconfiguring: tokio::sync::Mutex::new(()),
                shutdown,
                started,
            }),
        };
        // Watching first: a server that connects while the others still start joins at once.
        gateway.watch();
        for ep in gateway.inner.endpoints.values() {
            ep.install(ep.snapshot_without_connecting());
        }
        gateway.start_servers(used, started_tx);
        Ok(gateway)
    }
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

impl GatewayInner {
    fn servers_now(&self) -> Arc<BTreeMap<Arc<str>, ServerEntry>> {
        self.servers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What [`Gateway::reconfigure`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconfigured {
    /// Servers that joined (a changed server is removed and added), by id.
    pub added: Vec<String>,
    /// Servers that left, by id; each is stopped once the calls in flight to it end.
    pub removed: Vec<String>,
    /// Per endpoint whose listed tools changed: (endpoint, tools added, tools removed).
    pub tools: Vec<(String, usize, usize)>,
}

/// An endpoint with the members a reconfiguration gives it.
type Plan = (Arc<EndpointRuntime>, Vec<Member>);

/// The servers of a gateway to start, each with where it reports that its first start ended.
type FirstStarts = BTreeMap<Arc<str>, (Arc<dyn Upstream>, tokio::sync::watch::Sender<bool>)>;

/// The federated gateway: servers, endpoints and their live catalogues.
///
/// Cheap to clone. Serve an endpoint with [`GuardHandler`](crate::GuardHandler) (stdio or any rmcp
/// transport) or over HTTP with [`HttpEdge`](crate::HttpEdge).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<GatewayInner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field(
                "servers",
                &self.inner.servers_now().keys().cloned().collect::<Vec<_>>(),
            )
            .field("endpoints", &self.inner.endpoints.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts a builder.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The separator in use.
    pub fn separator(&self) -> &str {
        &self.inner.separator
    }

    /// An endpoint by name.
    pub fn endpoint(&self, name: &str) -> Option<Arc<EndpointRuntime>> {
        self.inner.endpoints.get(name).cloned()
    }

    /// Endpoint names, sorted.
    pub fn endpoint_names(&self) -> impl Iterator<Item = &str> {
        self.inner.endpoints.keys().map(AsRef::as_ref)
    }

    /// Every server with whether it is switched on, sorted by id (as configured now:
    /// [`Gateway::reconfigure`] changes them).
    pub fn servers(&self) -> Vec<(Arc<str>, Arc<dyn Upstream>, bool)> {
        self.inner
            .servers_now()
            .iter()
            .map(|(k, e)| (k.clone(), e.upstream.clone(), e.enabled))
            .collect()
    }

    /// Re-checks every endpoint's catalogue (after the gate's rules changed, e.g. an
    /// approval) and tells clients what changed.
    pub async fn refresh(&self) {
        for ep in self.inner.endpoints.values() {
            ep.rebuild(false).await;
        }
    }

    /// Waits until every enabled server's first start has ended (connected or
    /// failed), and the endpoints' catalogues include what connected.
    ///
    /// # Cancel safety
    /// Safe; the starts go on without it.
    pub async fn started(&self) {
        let mut rx = self.inner.started.clone();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Name collisions in the endpoints' current catalogues (both entries of each are
    /// withheld). [`GatewayBuilder::build`] refuses to build with one; a front door that
    /// [started](GatewayBuilder::start) checks after [`Gateway::started`].
    pub fn collisions(&self) -> Vec<BuildError> {
        self.inner
            .endpoints
            .values()
            .flat_map(|ep| ep.snapshot().collisions.clone())
            .collect()
    }

    /// Starts every server in the background; each that ends its first start updates
    /// the endpoints it is a member of.
    fn start_servers(&self, servers: FirstStarts, started: tokio::sync::watch::Sender<bool>) {
        let endpoints: Vec<Arc<EndpointRuntime>> = self.inner.endpoints.values().cloned().collect();
        let starts = servers.into_iter().map(|(id, (upstream, done))| {
            let endpoints = endpoints.clone();
            async move {
                let began = std::time::Instant::now();
                match upstream.catalog().await {
                    Ok(_) => tracing::info!(server = %id, took = ?began.elapsed(), "upstream started"),
                    Err(e) => tracing::warn!(
                        server = %id,
                        error = %mcp_guard_core::upstream::error_chain(&e),
                        "upstream not available at start"
                    ),
                }
                // The endpoints take the catalogue in before the start is reported done, so
                // a request that waited for it sees it (a connected member is included
                // while its start is still being reported).
                for ep in endpoints
                    .iter()
                    .filter(|ep| ep.members_now().iter().any(|m| m.enabled && m.id == id))
                {
                    ep.rebuild(false).await;
                }
                let _ = done.send(true);
            }
        });
        let all = futures::future::join_all(starts);
        tokio::spawn(async move {
            all.await;
            for ep in &endpoints {
                ep.settled.store(true, Ordering::Release);
            }
            let _ = started.send(true);
        });
    }

    /// Reads every switched-on server's catalogue from the server again (concurrently;
    /// each read is bounded by the server's timeouts), then re-checks every endpoint.
    /// After an approval: the gateway then judges what servers offer now, not what it
    /// read before the operator looked.
    pub async fn reread(&self) {
        let servers = self.inner.servers_now();
        let enabled = servers.values().filter(|e| e.enabled);
        futures::future::join_all(enabled.map(|e| e.upstream.refresh())).await;
        self.refresh().await;
    }

    /// Changes the servers and what each endpoint exposes of them while the gateway
    /// runs; requests that started before keep the catalogue and upstreams they
    /// resolved against, the next request sees the new ones.
    ///
    /// `servers` is the whole new set: an upstream that is the very one the gateway
    /// runs (the same `Arc`) is kept as it is (connection, processes, catalogue); any
    /// other is started first and joins its endpoints once its first start has ended
    /// (so a changed server is swapped for its successor, not dropped while it
    /// starts). A running upstream not in `servers` leaves every endpoint at once and
    /// is stopped when no request uses it any more, or after `retire_after`.
    ///
    /// `endpoints` gives every endpoint of the gateway its new servers and
    /// selections; endpoints cannot be added, removed, or their name prefixes changed
    /// (their routes are fixed when the front door is built). Each endpoint's
    /// catalogue is then rebuilt, and clients whose lists changed are sent
    /// `list_changed`.
    ///
    /// # Errors
    /// [`BuildError`] for an unknown server, an endpoint the gateway does not have (or
    /// one it has that is missing), or a changed name-prefix setting; nothing is
    /// changed then.
    ///
    /// # Cancel safety
    /// Not cancel safe once the new servers have started: finish it.
    pub async fn reconfigure(
        &self,
        servers: Vec<(Arc<dyn Upstream>, bool)>,
        endpoints: Vec<EndpointSpec>,
        retire_after: Duration,
    ) -> Result<Reconfigured, BuildError> {
        let _one_at_a_time = self.inner.reconfiguring.lock().await;
        let old = self.inner.servers_now();
        let mut map = BTreeMap::new();
        for (upstream, enabled) in servers {
            map.insert(Arc::<str>::from(upstream.id()), ServerEntry { upstream, enabled });
        }
        let plans = self.plan(endpoints, &map)?;
        self.start_joining(&plans).await;
        let mut report = Reconfigured::default();
        for (id, e) in &map {
            if old.get(id).is_none_or(|o| !Arc::ptr_eq(&o.upstream, &e.upstream)) {
                report.added.push(id.to_string());
            }
        }
        let retiring: Vec<Arc<dyn Upstream>> = old
            .iter()
            .filter(|(id, o)| {
                map.get(*id)
                    .is_none_or(|e| !Arc::ptr_eq(&o.upstream, &e.upstream))
            })
            .map(|(id, o)| {
                report.removed.push(id.to_string());
                o.upstream.clone()
            })
            .collect();
        *self.inner.servers.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
        drop(old);
        for (ep, members) in plans {
            let before: std::collections::BTreeSet<String> =
                ep.snapshot().tools.iter().map(|t| t.name.to_string()).collect();
            let members = Arc::new(members);
            let previous = std::mem::replace(
                &mut *ep.members.write().unwrap_or_else(PoisonError::into_inner),
                members.clone(),
            );
            for m in previous.iter() {
                if !members.iter().any(|n| n.same(&m.id, &m.upstream, m.enabled)) {
                    m.watching.cancel();
                }
            }
            for m in members.iter().filter(|m| m.enabled) {
                if !previous.iter().any(|p| p.same(&m.id, &m.upstream, m.enabled)) {
                    self.watch_member(&ep, m);
                }
            }
            drop(previous);
            ep.rebuild(false).await;
            let after: std::collections::BTreeSet<String> =
                ep.snapshot().tools.iter().map(|t| t.name.to_string()).collect();
            if before != after {
                report.tools.push((
                    ep.name.to_string(),
                    after.difference(&before).count(),
                    before.difference(&after).count(),
                ));
            }
        }
        for upstream in retiring {
            retire(upstream, retire_after, self.inner.shutdown.clone());
        }
        Ok(report)
    }

    /// The new members of every endpoint; a member whose server, upstream and switch
    /// are unchanged keeps its watcher and start state.
    fn plan(
        &self,
        endpoints: Vec<EndpointSpec>,
        map: &BTreeMap<Arc<str>, ServerEntry>,
    ) -> Result<Vec<Plan>, BuildError> {
        if endpoints.len() != self.inner.endpoints.len() {
            return Err(BuildError::Invalid(
                "endpoints cannot be added to or removed from a running gateway".into(),
            ));
        }
        let mut plans = Vec::new();
        for spec in endpoints {
            let ep = self.inner.endpoints.get(&spec.name).ok_or_else(|| {
                BuildError::Invalid(format!(
                    "endpoint {}: endpoints cannot be added to a running gateway",
                    spec.name
                ))
            })?;
            if spec.namespaced != ep.namespaced || (!spec.namespaced && spec.servers.len() != 1) {
                return Err(BuildError::Invalid(format!(
                    "endpoint {}: the name prefix setting cannot change while the gateway runs",
                    spec.name
                )));
            }
            let current = ep.members_now();
            let mut members = Vec::new();
            for (id, selection) in spec.servers {
                let entry = map.get(&id).ok_or_else(|| BuildError::UnknownServer {
                    endpoint: spec.name.to_string(),
                    server: id.to_string(),
                })?;
                let enabled = entry.enabled && !selection.disabled;
                let kept = current.iter().find(|m| m.same(&id, &entry.upstream, enabled));
                members.push(Member {
                    id,
                    upstream: entry.upstream.clone(),
                    selection,
                    enabled,
                    started: kept.map_or_else(|| tokio::sync::watch::channel(true).1, |m| m.started.clone()),
                    watching: kept.map_or_else(CancellationToken::new, |m| m.watching.clone()),
                });
            }
            plans.push((ep.clone(), members));
        }
        Ok(plans)
    }

    /// Starts the servers that serve an endpoint in `plans` and did not before, and
    /// waits for each one's first start to end.
    async fn start_joining(&self, plans: &[Plan]) {
        // Servers that serve an endpoint now and did not before start first.
        let running: Vec<Arc<dyn Upstream>> = self
            .inner
            .endpoints
            .values()
            .flat_map(|ep| {
                ep.members_now()
                    .iter()
                    .filter(|m| m.enabled)
                    .map(|m| m.upstream.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut starting: Vec<Arc<dyn Upstream>> = Vec::new();
        for (_, members) in plans {
            for m in members.iter().filter(|m| m.enabled) {
                let known = |u: &Arc<dyn Upstream>| Arc::ptr_eq(u, &m.upstream);
                if !running.iter().any(known) && !starting.iter().any(known) {
                    starting.push(m.upstream.clone());
                }
            }
        }
        futures::future::join_all(starting.iter().map(|u| async move {
            let began = std::time::Instant::now();
            match u.catalog().await {
                Ok(_) => tracing::info!(server = u.id(), took = ?began.elapsed(), "upstream started"),
                Err(e) => tracing::warn!(
                    server = u.id(),
                    error = %mcp_guard_core::upstream::error_chain(&e),
                    "upstream not available at start; retried on use"
                ),
            }
        }))
        .await;
    }

    /// Stops watching and shuts every upstream down (children are reaped).
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let servers = self.inner.servers_now();
        futures::future::join_all(servers.values().map(|e| e.upstream.shutdown())).await;
    }

    fn watch(&self) {
        for ep in self.inner.endpoints.values() {
            for member in ep.members_now().iter().filter(|m| m.enabled) {
                self.watch_member(ep, member);
            }
        }
    }

    /// Rebuilds `ep` when `member`'s upstream says its catalogue or connection changed,
    /// until the gateway stops or the member leaves the endpoint.
    fn watch_member(&self, ep: &Arc<EndpointRuntime>, member: &Member) {
        let mut rx = member.upstream.subscribe();
        let server = member.id.clone();
        let ep = Arc::downgrade(ep);
        let stop = self.inner.shutdown.clone();
        let left = member.watching.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = left.cancelled() => return,
                    ev = rx.recv() => match ev {
                        Ok(mcp_guard_core::UpstreamEvent::ResourceUpdated(uri)) => {
                            let Some(ep) = ep.upgrade() else { return };
                            ep.resource_updated(&server, &uri).await;
                        }
                        Ok(mcp_guard_core::UpstreamEvent::CatalogChanged) => {
                            let Some(ep) = ep.upgrade() else { return };
                            ep.rebuild(true).await;
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            let Some(ep) = ep.upgrade() else { return };
                            ep.rebuild(false).await;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
    }
}

/// Stops an upstream that left the gateway once nothing uses it any more (requests in
/// flight hold it, and the snapshots they resolved against), or after `at_most`.
fn retire(upstream: Arc<dyn Upstream>, at_most: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + at_most;
        while Arc::strong_count(&upstream) > 1 && tokio::time::Instant::now() < deadline {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let in_use = Arc::strong_count(&upstream) > 1;
        tracing::info!(
            server = upstream.id(),
            in_use,
            "stopping a server the configuration no longer has"
        );
        upstream.shutdown().await;
    });
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

impl Member {
    /// The member of a reconfigured endpoint that carries this one over unchanged.
    fn same(&self, id: &str, upstream: &Arc<dyn Upstream>, enabled: bool) -> bool {
        self.id.as_ref() == id && Arc::ptr_eq(&self.upstream, upstream) && self.enabled == enabled
    }

    /// Still making its first start (and not connected yet): its catalogue is not read,
    /// since reading it would wait for the start.
    fn starting(&self) -> bool {
        !*self.started.borrow() && !matches!(self.upstream.status().state, UpstreamState::Connected)
    }
}

/// Which lists changed in a catalogue rebuild.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListChanged {
    /// Tools changed.
    pub tools: bool,
    /// Prompts changed.
    pub prompts: bool,
    /// Resources or templates changed.
    pub resources: bool,
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

impl std::fmt::Debug for EndpointRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRuntime")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl EndpointRuntime {
    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    fn members_now(&self) -> Arc<Vec<Member>> {
        self.members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current catalogue.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits, at most the builder's [`startup_wait`](GatewayBuilder::startup_wait), for
    /// members still making their first start; returns at once after that. `true` when
    /// no member is starting any more.
    ///
    /// # Cancel safety
    /// Safe.
    pub async fn settled(&self) -> bool {
        if self.settled.load(Ordering::Acquire) {
            return true;
        }
        let deadline = tokio::time::Instant::now() + self.startup_wait;
        for m in self.members_now().iter().filter(|m| m.enabled) {
            let mut rx = m.started.clone();
            if tokio::time::timeout_at(deadline, rx.wait_for(|done| *done))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Notifications of list changes (for 2026-07-28 `subscriptions/listen`).
    pub fn changes(&self) -> broadcast::Receiver<ListChanged> {
        self.changes.subscribe()
    }

    /// Registers a legacy client to be told about list changes.
    pub fn register_peer(&self, peer: Peer<RoleServer>) {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.retain(|p| !p.is_transport_closed());
        peers.push(peer);
    }

    /// Records a legacy client's subscription to `uri` of `server` (upstream URI).
    /// `client` identifies the client's session.
    pub fn subscribe(&self, client: Arc<str>, server: Arc<str>, uri: String, peer: Peer<RoleServer>) {
        let mut subs = self.subscriptions.lock().unwrap_or_else(PoisonError::into_inner);
        subs.retain(|s| !s.peer.is_transport_closed());
        if !subs
            .iter()
            .any(|s| s.client == client && s.server == server && s.uri == uri)
        {
            subs.push(Subscription {
                client,
                server,
                uri,
                peer,
            });
        }
    }

    /// Forgets a subscription.
    pub fn unsubscribe(&self, client: &str, server: &str, uri: &str) {
        let mut subs = self.subscriptions.lock().unwrap_or_else(PoisonError::into_inner);
        subs.retain(|s| {
            let same = s.client.as_ref() == client && s.server.as_ref() == server && s.uri == uri;
            !same && !s.peer.is_transport_closed()
        });
    }

    async fn resource_updated(&self, server: &str, uri: &str) {
        let peers: Vec<_> = self
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| s.server.as_ref() == server && s.uri == uri)
            .map(|s| s.peer.clone())
            .collect();
        let exposed = self.snapshot().expose_resource_uri(server, uri);
        for peer in peers {
            let _ = peer
                .notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(
                    exposed.clone(),
                ))
                .await;
        }
    }

    /// Members with their status: (server id, enabled here, status).
    pub fn members(&self) -> Vec<(Arc<str>, bool, mcp_guard_core::UpstreamStatus)> {
        self.members_now()
            .iter()
            .map(|m| (m.id.clone(), m.enabled, m.upstream.status()))
            .collect()
    }

    /// Every exposed-or-not item of the catalogue with whether the endpoint enables it:
    /// (exposed name, kind, server, upstream name, enabled).
    pub async fn selection_report(&self) -> Vec<(String, TargetKind, Arc<str>, String, bool)> {
        let mut out = Vec::new();
        for m in self.members_now().iter() {
            let Ok(cat) = m.upstream.catalog().await else {
                continue;
            };
            for t in &cat.tools {
                let exposed = format!("{}{}{}", m.id, self.separator, t.name);
                out.push((
                    exposed,
                    TargetKind::Tool,
                    m.id.clone(),
                    t.name.to_string(),
                    m.enabled && m.selection.allows(TargetKind::Tool, &t.name),
                ));
            }
            for p in &cat.prompts {
                let exposed = format!("{}{}{}", m.id, self.separator, p.name);
                out.push((
                    exposed,
                    TargetKind::Prompt,
                    m.id.clone(),
                    p.name.clone(),
                    m.enabled && m.selection.allows(TargetKind::Prompt, &p.name),
                ));
            }
            for r in &cat.resources {
                out.push((
                    format!("{}+{}", m.id, r.uri),
                    TargetKind::Resource,
                    m.id.clone(),
                    r.uri.clone(),
                    m.enabled && m.selection.allows(TargetKind::Resource, &r.uri),
                ));
            }
        }
        out
    }

    fn install(&self, snapshot: Snapshot) -> ListChanged {
        let mut slot = self.snapshot.write().unwrap_or_else(PoisonError::into_inner);
        let old = slot.clone();
        let changed = ListChanged {
            tools: old.tools != snapshot.tools,
            prompts: old.prompts != snapshot.prompts,
            resources: old.resources != snapshot.resources || old.templates != snapshot.templates,
        };
        *slot = Arc::new(snapshot);
        changed
    }

    /// Re-reads every member's catalogue and tells clients what changed. With
    /// `announced`, an upstream said its lists changed: clients are told even when the
    /// federated lists look the same.
    pub async fn rebuild(&self, announced: bool) {
        let _one_at_a_time = self.rebuild.lock().await;
        let previous = self.snapshot();
        let snapshot = self.build_snapshot(Some(&previous)).await;
        for c in &snapshot.collisions {
            tracing::error!(endpoint = %self.name, error = %c, "name collision; both entries withheld");
        }
        let mut changed = self.install(snapshot);
        if announced {
            changed = ListChanged {
                tools: true,
                prompts: true,
                resources: true,
            };
        }
        if changed == ListChanged::default() {
            return;
        }
        tracing::info!(endpoint = %self.name, ?changed, "catalogue changed");
        let _ = self.changes.send(changed);
        let peers: Vec<_> = {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            peers.retain(|p| !p.is_transport_closed());
            peers.clone()
        };
        for peer in peers {
            if changed.tools {
                let _ = peer.notify_tool_list_changed().await;
            }
            if changed.prompts {
                let _ = peer.notify_prompt_list_changed().await;
            }
            if changed.resources {
                let _ = peer.notify_resource_list_changed().await;
            }
        }
    }

    /// The catalogue before any server has started: nothing listed, the capabilities
    /// the members' selections can expose.
    fn snapshot_without_connecting(&self) -> Snapshot {
        let mut snap = Snapshot::empty(self.name.clone(), self.separator.clone(), self.namespaced);
        snap.version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        let (mut prompts, mut resources) = (false, false);
        for m in self.members_now().iter().filter(|m| m.enabled) {
            snap.upstreams.insert(m.id.clone(), m.upstream.clone());
            snap.resource_selection.insert(m.id.clone(), m.selection.clone());
            prompts |= !m.selection.prompts.is_empty();
            resources |= !m.selection.resources.is_empty();
        }
        snap.capabilities = capabilities(prompts, resources, prompts || resources);
        snap
    }

    async fn build_snapshot(&self, previous: Option<&Snapshot>) -> Snapshot {
        let mut snap = Snapshot::empty(self.name.clone(), self.separator.clone(), self.namespaced);
        snap.version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        let mut owners: HashMap<String, String> = HashMap::new();
        let mut has_prompts = false;
        let mut has_resources = false;
        let mut has_completions = false;
        for m in self.members_now().iter().filter(|m| m.enabled) {
            snap.upstreams.insert(m.id.clone(), m.upstream.clone());
            snap.resource_selection.insert(m.id.clone(), m.selection.clone());
            // A server that failed is not re-dialled here (that happens on its next call);
            // its last known names still resolve so the call can say what is wrong,
            // but it is left out of lists.
            let failed = matches!(
                m.upstream.status().state,
                UpstreamState::Failed { .. } | UpstreamState::Stopped
            );
            let catalog = if failed || m.starting() {
                None
            } else {
                match m.upstream.catalog().await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        snap.problems.push(format!(
                            "{}: {}",
                            m.id,
                            mcp_guard_core::upstream::error_chain(&e)
                        ));
                        None
                    }
                }
            };
            let listed = catalog.is_some();
            let Some(catalog) = catalog.or_else(|| previous.and_then(|p| p.catalogs.get(&m.id).cloned()))
            else {
                // Not connected yet: advertise what its selection can expose, so a
                // client that initializes now knows to ask once it has joined.
                has_prompts |= !m.selection.prompts.is_empty();
                has_resources |= !m.selection.resources.is_empty();
                has_completions |= !m.selection.prompts.is_empty() || !m.selection.resources.is_empty();
                continue;
            };
            snap.catalogs.insert(m.id.clone(), catalog.clone());
            if let Some(info) = &catalog.server_info {
                has_prompts |= info.capabilities.prompts.is_some();
                has_resources |= info.capabilities.resources.is_some();
                has_completions |= info.capabilities.completions.is_some();
            }
            snap.add_member(m, &catalog, listed, &mut owners);
        }
        snap.capabilities = capabilities(has_prompts, has_resources, has_completions);
        if let Some(pins) = &self.pins {
            pins.apply(&mut snap).await;
            snap.pins = Some(pins.clone());
        }
        snap
    }
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

/// A definition's pin and the verdict last recorded for it.
type PinVerdict = (String, Recorded);

/// Definitions per tool whose verdict is remembered (a server that changes a tool
/// endlessly cannot grow the gateway's memory; an older definition seen again is
/// recorded again).
const RECORDED_PER_TOOL: usize = 8;

/// A verdict recorded for one definition: its reason and diff.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recorded {
    Quarantined(String),
    Warned(String),
}

/// A refused call waits for this long since the serving instance's catalogue was read
/// before it is read again (so a client retrying a held tool cannot make the gateway
/// list the server on every call).
const REREAD_BEFORE_REFUSING: Duration = Duration::from_secs(1);

/// What a tool call was admitted on: the serving instance's catalogue and the pin of
/// the definition found there.
#[derive(Debug)]
pub(crate) struct CallCheck {
    catalog: Arc<Catalog>,
    pin: String,
}

impl PinChecks {
    /// Runs every tool of the snapshot's catalogues past the gate; quarantined ones
    /// leave the lists (their names still resolve, so a call can say it awaits
    /// approval), admitted ones are remembered with their pin.
    async fn apply(&self, snap: &mut Snapshot) {
        let mut verdicts = Vec::new();
        let mut notes = Vec::new();
        for (server, catalog) in &snap.catalogs {
            let others = snap.other_tool_names(server);
            if let Some(note) = self.gate.check_instructions(
                server,
                catalog
                    .server_info
                    .as_ref()
                    .and_then(|i| i.instructions.as_deref()),
            ) {
                notes.push((server.clone(), note));
            }
            for tool in &catalog.tools {
                let exposed = snap.exposed_name(server, &tool.name);
                if !snap.tool_index.contains_key(&exposed) {
                    continue;
                }
                let pin = catalog.tool_pin(&tool.name).unwrap_or_default().to_owned();
                let admission = self.gate.admit(server, tool, &others);
                verdicts.push((server.clone(), exposed, tool.name.to_string(), pin, admission));
            }
        }
        for (server, exposed, name, pin, admission) in verdicts {
            self.record(&server, &name, &pin, &admission).await;
            if let Admission::Quarantine { reason, .. } = admission {
                snap.tools.retain(|t| t.name != exposed);
                snap.quarantined.insert(exposed, reason);
            } else {
                snap.admitted.insert(exposed, pin);
            }
        }
        for (server, note) in notes {
            let admission = Admission::Warn {
                reason: note,
                diff: None,
            };
            self.record(&server, "(instructions)", "", &admission).await;
        }
    }

    /// Records `admission` of `server`'s `tool` with pin `pin` unless it was the last
    /// verdict recorded for that definition; a definition that was held and is now
    /// admitted is recorded as released.
    async fn record(&self, server: &str, tool: &str, pin: &str, admission: &Admission) {
        let (kind, reason, diff) = {
            let mut all = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
            let recorded = all.entry((server.to_owned(), tool.to_owned())).or_default();
            let at = recorded.iter().position(|(p, _)| p == pin);
            match admission {
                Admission::Quarantine { reason, diff } | Admission::Warn { reason, diff } => {
                    let diff = diff.as_deref().unwrap_or_default();
                    let what = format!("{reason}\n{diff}");
                    let (now, kind) = if matches!(admission, Admission::Quarantine { .. }) {
                        (Recorded::Quarantined(what), "quarantined")
                    } else {
                        (Recorded::Warned(what), "warning")
                    };
                    if let Some(i) = at {
                        let (p, last) = recorded.remove(i);
                        let same = last == now;
                        recorded.push((p, now));
                        if same {
                            return;
                        }
                    } else {
                        if recorded.len() >= RECORDED_PER_TOOL {
                            recorded.remove(0);
                        }
                        recorded.push((pin.to_owned(), now));
                    }
                    (kind, reason.clone(), diff.to_owned())
                }
                _ => {
                    let Some(i) = at.filter(|i| matches!(recorded[*i].1, Recorded::Quarantined(_))) else {
                        return;
                    };
                    recorded.remove(i);
                    (
                        "released",
                        "its definition is approved".to_owned(),
                        format!("= {pin}\n"),
                    )
                }
            }
        };
        match kind {
            "quarantined" => {
                tracing::warn!(endpoint = %self.endpoint, server, tool, reason, "tool quarantined until approved");
            }
            "warning" => {
                tracing::warn!(endpoint = %self.endpoint, server, tool, reason, "tool admitted with a warning");
            }
            _ => {
                tracing::info!(endpoint = %self.endpoint, server, tool, "quarantined tool released: its definition is approved");
            }
        }
        if let Some(sink) = &self.audit {
            let mut event =
                mcp_guard_core::AuditEvent::new(mcp_guard_core::audit::EventKind::ToolDefinitionChanged {
                    diff: format!("{kind} {server}/{tool}: {reason}\n{diff}"),
                });
            event.endpoint = Some(self.endpoint.to_string());
            event.target = Some(Target::new(server, tool, TargetKind::Tool));
            if let Err(e) = sink.record(&event).await {
                tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "could not record a tool definition event");
            }
        }
    }
}

fn capabilities(prompts: bool, resources: bool, completions: bool) -> ServerCapabilities {
    let mut caps = ServerCapabilities::default();
    let mut tools = ToolsCapability::default();
    tools.list_changed = Some(true);
    caps.tools = Some(tools);
    if prompts {
        let mut p = PromptsCapability::default();
        p.list_changed = Some(true);
        caps.prompts = Some(p);
    }
    if resources {
        let mut r = ResourcesCapability::default();
        r.list_changed = Some(true);
        caps.resources = Some(r);
    }
    if completions {
        caps.completions = Some(serde_json::Map::new());
    }
    caps
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

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("endpoint", &self.endpoint)
            .field("version", &self.version)
            .field("tools", &self.tools.len())
            .field("prompts", &self.prompts.len())
            .field("resources", &self.resources.len())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    fn empty(endpoint: Arc<str>, separator: String, namespaced: bool) -> Self {
        Self {
            endpoint,
            separator,
            namespaced,
            version: 0,
            tools: Vec::new(),
            tool_index: HashMap::new(),
            prompts: Vec::new(),
            prompt_index: HashMap::new(),
            resources: Vec::new(),
            templates: Vec::new(),
            upstreams: HashMap::new(),
            resource_selection: HashMap::new(),
            catalogs: HashMap::new(),
            capabilities: capabilities(false, false, false),
            problems: Vec::new(),
            collisions: Vec::new(),
            quarantined: HashMap::new(),
            admitted: HashMap::new(),
            pins: None,
        }
    }

    /// Why a tool is held back, if it is (exposed name).
    pub fn quarantine(&self, exposed: &str) -> Option<&str> {
        self.quarantined.get(exposed).map(String::as_str)
    }

    /// The tool names of every server but `server` (for the gate's cross-server checks).
    fn other_tool_names(&self, server: &str) -> Vec<&str> {
        self.catalogs
            .iter()
            .filter(|(s, _)| s.as_ref() != server)
            .flat_map(|(_, c)| c.tools.iter().map(|t| t.name.as_ref()))
            .collect()
    }

    /// The gate's verdict on `target`'s definition in `catalog`, with its pin: the
    /// snapshot's own when it admitted that very definition, else the gate's now (the
    /// catalogue is another instance's, or newer, or the definition was held). `None`
    /// when `catalog` does not offer the tool; the flag says whether the gate was asked.
    fn judge(
        &self,
        pins: &PinChecks,
        exposed: &str,
        target: &Target,
        catalog: &Catalog,
    ) -> Option<(String, Admission, bool)> {
        let pin = catalog.tool_pin(&target.name)?.to_owned();
        if self.admitted.get(exposed) == Some(&pin) {
            return Some((pin, Admission::Admit, false));
        }
        let tool = catalog.tool(&target.name)?;
        let others = self.other_tool_names(&target.server);
        let admission = pins.gate.admit(&target.server, tool, &others);
        Some((pin, admission, true))
    }

    /// Checks a call of tool `exposed` (resolved to `target`) against the definition
    /// the instance that will serve it offers: a per-session process is judged on its
    /// own catalogue, and a definition newer than this snapshot on the gate's current
    /// rules. Before refusing, the gateway reads the serving catalogue again (unless it
    /// did within the last second), so a call is never refused on a stale read: an
    /// approval of what the server serves now takes effect even before the gateway's
    /// own re-read.
    ///
    /// # Errors
    /// [`GuardError::Quarantined`] for an unapproved or hostile definition;
    /// [`GuardError::Unknown`] when the serving instance does not offer the tool; the
    /// upstream's error when its catalogue cannot be read.
    pub(crate) async fn check_call(
        &self,
        exposed: &str,
        target: &Target,
        upstream: &Arc<dyn Upstream>,
        forward: &mcp_guard_core::upstream::Forward,
    ) -> Result<Option<CallCheck>, crate::GuardError> {
        let Some(pins) = &self.pins else {
            return Ok(None);
        };
        let mut catalog = upstream.serving_catalog(forward).await?;
        let mut verdict = self.judge(pins, exposed, target, &catalog);
        let refused = !matches!(verdict, Some((_, Admission::Admit | Admission::Warn { .. }, _)));
        if refused
            && catalog
                .read_at
                .is_none_or(|at| at.elapsed() >= REREAD_BEFORE_REFUSING)
        {
            catalog = upstream.reread_serving_catalog(forward).await?;
            verdict = self.judge(pins, exposed, target, &catalog);
        }
        let Some((pin, admission, asked)) = verdict else {
            return Err(crate::GuardError::Unknown {
                kind: TargetKind::Tool,
                name: exposed.to_owned(),
            });
        };
        if asked {
            pins.record(&target.server, &target.name, &pin, &admission).await;
        }
        match admission {
            Admission::Quarantine { reason, .. } => Err(crate::GuardError::Quarantined {
                name: exposed.to_owned(),
                reason,
                during_call: false,
            }),
            _ => Ok(Some(CallCheck { catalog, pin })),
        }
    }

    /// After the answer of a call admitted by [`Snapshot::check_call`]: if the serving
    /// instance's catalogue was read again meanwhile and now offers an unapproved
    /// definition of the tool, the answer is withheld (it came from a server that
    /// changed the tool under the call).
    ///
    /// # Errors
    /// [`GuardError::Quarantined`] (during the call) in that case.
    pub(crate) async fn confirm_call(
        &self,
        check: &CallCheck,
        exposed: &str,
        target: &Target,
        upstream: &Arc<dyn Upstream>,
        forward: &mcp_guard_core::upstream::Forward,
    ) -> Result<(), crate::GuardError> {
        let Some(pins) = &self.pins else { return Ok(()) };
        // If the instance cannot say (it went away after answering), the call stands
        // as admitted.
        let Ok(now) = upstream.serving_catalog(forward).await else {
            return Ok(());
        };
        if Arc::ptr_eq(&now, &check.catalog) || now.tool_pin(&target.name).is_none_or(|p| p == check.pin) {
            return Ok(());
        }
        let Some((pin, admission, asked)) = self.judge(pins, exposed, target, &now) else {
            return Ok(());
        };
        if asked {
            pins.record(&target.server, &target.name, &pin, &admission).await;
        }
        match admission {
            Admission::Quarantine { reason, .. } => Err(crate::GuardError::Quarantined {
                name: exposed.to_owned(),
                reason,
                during_call: true,
            }),
            _ => Ok(()),
        }
    }

    fn exposed_name(&self, server: &str, name: &str) -> String {
        if self.namespaced {
            format!("{server}{}{name}", self.separator)
        } else {
            name.to_owned()
        }
    }

    fn add_member(
        &mut self,
        m: &Member,
        catalog: &Catalog,
        listed: bool,
        owners: &mut HashMap<String, String>,
    ) {
        for tool in &catalog.tools {
            if !m.selection.allows(TargetKind::Tool, &tool.name) {
                continue;
            }
            let exposed = self.exposed_name(&m.id, &tool.name);
            if !valid_tool_name(&exposed) {
                self.problems.push(format!(
                    "{}: tool {:?} cannot be exposed as {exposed:?} (names are 1-128 of [A-Za-z0-9_.-])",
                    m.id, tool.name
                ));
                continue;
            }
            if !self.claim(owners, &exposed, &m.id, &tool.name) {
                continue;
            }
            self.tool_index.insert(
                exposed.clone(),
                Target::new(m.id.clone(), tool.name.as_ref(), TargetKind::Tool),
            );
            if listed {
                let mut t = tool.clone();
                t.name = exposed.into();
                self.tools.push(t);
            }
        }
        for prompt in &catalog.prompts {
            if !m.selection.allows(TargetKind::Prompt, &prompt.name) {
                continue;
            }
            let exposed = self.exposed_name(&m.id, &prompt.name);
            if !valid_tool_name(&exposed) {
                self.problems
                    .push(format!("{}: prompt {:?} cannot be exposed", m.id, prompt.name));
                continue;
            }
            if !self.claim(owners, &format!("prompt:{exposed}"), &m.id, &prompt.name) {
                continue;
            }
            self.prompt_index.insert(
                exposed.clone(),
                Target::new(m.id.clone(), prompt.name.as_str(), TargetKind::Prompt),
            );
            if listed {
                let mut p = prompt.clone();
                p.name = exposed;
                self.prompts.push(p);
            }
        }
        if listed {
            for r in catalog
                .resources
                .iter()
                .filter(|r| m.selection.allows(TargetKind::Resource, &r.uri))
            {
                let mut r = r.clone();
                r.uri = self.expose_resource_uri(&m.id, &r.uri);
                self.resources.push(r);
            }
            for t in catalog
                .resource_templates
                .iter()
                .filter(|t| m.selection.allows(TargetKind::ResourceTemplate, &t.uri_template))
            {
                let mut t = t.clone();
                t.uri_template = self.expose_resource_uri(&m.id, &t.uri_template);
                self.templates.push(t);
            }
        }
    }

    /// Records who produces `exposed`; on a collision both entries are withheld.
    fn claim(
        &mut self,
        owners: &mut HashMap<String, String>,
        exposed: &str,
        server: &str,
        name: &str,
    ) -> bool {
        let origin = format!("{server}/{name}");
        match owners.get(exposed) {
            None => {
                owners.insert(exposed.to_owned(), origin);
                true
            }
            Some(first) => {
                let display = exposed.trim_start_matches("prompt:").to_owned();
                self.collisions.push(BuildError::Collision {
                    endpoint: self.endpoint.to_string(),
                    name: display.clone(),
                    first: first.clone(),
                    second: origin,
                });
                self.tool_index.remove(&display);
                self.tools.retain(|t| t.name != display);
                self.prompt_index.remove(&display);
                self.prompts.retain(|p| p.name != display);
                false
            }
        }
    }

    /// The endpoint name.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Listed tools, with exposed names, in deterministic order (servers by id, then the
    /// server's own order).
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// Listed prompts.
    pub fn prompts(&self) -> &[Prompt] {
        &self.prompts
    }

    /// Listed resources (`server+uri`).
    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// Listed resource templates (`server+template`).
    pub fn resource_templates(&self) -> &[ResourceTemplate] {
        &self.templates
    }

    /// The union of the members' capabilities, as the gateway advertises them.
    pub fn capabilities(&self) -> &ServerCapabilities {
        &self.capabilities
    }

    /// Name collisions found while building (both entries are withheld).
    pub fn collisions(&self) -> &[BuildError] {
        &self.collisions
    }

    /// Problems found while building (servers unreachable, names not exposable).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The protocol version the upstream `server` speaks on the connection its
    /// catalogue was read from (`2025-11-25`, `2026-07-28`...).
    pub fn upstream_protocol(&self, server: &str) -> Option<&str> {
        self.catalogs
            .get(server)
            .and_then(|c| c.server_info.as_ref())
            .map(|i| i.protocol_version.as_str())
    }

    /// Whether the upstream `server` speaks the 2026-07-28 revision (per-request
    /// metadata) on its current connection.
    pub fn upstream_is_modern(&self, server: &str) -> bool {
        self.catalogs
            .get(server)
            .and_then(|c| c.server_info.as_ref())
            .is_some_and(|i| {
                i.protocol_version.as_str() >= rmcp::model::ProtocolVersion::V_2026_07_28.as_str()
            })
    }

    /// The upstream serving `server` on this endpoint.
    pub fn upstream(&self, server: &str) -> Option<&Arc<dyn Upstream>> {
        self.upstreams.get(server)
    }

    /// The tool a name resolves to.
    pub fn resolve_tool(&self, exposed: &str) -> Option<&Target> {
        self.tool_index.get(exposed)
    }

    /// The prompt a name resolves to.
    pub fn resolve_prompt(&self, exposed: &str) -> Option<&Target> {
        self.prompt_index.get(exposed)
    }

    /// The resource a `server+uri` resolves to (also URIs from templates, when the
    /// endpoint's resource globs allow them).
    pub fn resolve_resource(&self, exposed: &str) -> Option<Target> {
        let (server, uri) = if self.namespaced {
            exposed.split_once('+')?
        } else {
            (self.upstreams.keys().next()?.as_ref(), exposed)
        };
        let selection = self.resource_selection.get(server)?;
        selection
            .allows(TargetKind::Resource, uri)
            .then(|| Target::new(server, uri, TargetKind::Resource))
    }

    /// The exposed name of an upstream's resource URI.
    pub fn expose_resource_uri(&self, server: &str, uri: &str) -> String {
        if self.namespaced {
            format!("{server}+{uri}")
        } else {
            uri.to_owned()
        }
    }

    /// Resolves the name a request carries: (target, the name as requested).
    pub fn resolve_request(&self, request: &ClientRequest) -> (Option<Target>, Option<Arc<str>>) {
        let (target, name) = match request {
            ClientRequest::CallToolRequest(r) => {
                (self.resolve_tool(&r.params.name).cloned(), r.params.name.as_ref())
            }
            ClientRequest::GetPromptRequest(r) => (
                self.resolve_prompt(&r.params.name).cloned(),
                r.params.name.as_str(),
            ),
            ClientRequest::ReadResourceRequest(r) => {
                (self.resolve_resource(&r.params.uri), r.params.uri.as_str())
            }
            ClientRequest::SubscribeRequest(r) => {
                (self.resolve_resource(&r.params.uri), r.params.uri.as_str())
            }
            ClientRequest::UnsubscribeRequest(r) => {
                (self.resolve_resource(&r.params.uri), r.params.uri.as_str())
            }
            ClientRequest::CompleteRequest(r) => match &r.params.r#ref {
                Reference::Prompt(p) => (self.resolve_prompt(&p.name).cloned(), p.name.as_str()),
                // A completion names a template: policy sees the template kind, as the
                // template's list entry does.
                Reference::Resource(res) => (
                    self.resolve_resource(&res.uri)
                        .map(|t| Target::new(t.server, t.name, TargetKind::ResourceTemplate)),
                    res.uri.as_str(),
                ),
                _ => (None, ""),
            },
            _ => return (None, None),
        };
        (target, Some(Arc::from(name)))
    }
}

/// What kind of name a request carries.
pub(crate) fn request_kind(request: &ClientRequest) -> Option<TargetKind> {
    match request {
        ClientRequest::CallToolRequest(_) => Some(TargetKind::Tool),
        ClientRequest::GetPromptRequest(_) => Some(TargetKind::Prompt),
        ClientRequest::ReadResourceRequest(_)
        | ClientRequest::SubscribeRequest(_)
        | ClientRequest::UnsubscribeRequest(_) => Some(TargetKind::Resource),
        ClientRequest::CompleteRequest(r) => Some(match r.params.r#ref {
            Reference::Prompt(_) => TargetKind::Prompt,
            _ => TargetKind::ResourceTemplate,
        }),
        _ => None,
    }
}

/// Tool names are 1 to 128 characters of `[A-Za-z0-9_.-]`.
pub fn valid_tool_name(name: &str) -> bool {
    name.len() <= 128 && mcp_guard_core::config::is_name_safe(name)
}

#[cfg(test)]
mod tests {
    use mcp_guard_core::audit::{EventKind, MemoryAuditSink};
    use mcp_guard_core::pin::{GateMode, LockFile, PinGate};

    use super::*;

    fn tool(description: &str) -> Tool {
        Tool::new("echo", description.to_owned(), Arc::new(serde_json::Map::new()))
    }

    fn recorded(sink: &MemoryAuditSink) -> Vec<String> {
        sink.events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::ToolDefinitionChanged { diff } => {
                    Some(diff.lines().next().unwrap_or_default().to_owned())
                }
                _ => None,
            })
            .collect()
    }

    /// Each verdict is recorded once per definition; a held definition that is admitted
    /// is recorded as released, and held again (after a release) is recorded again.
    #[tokio::test]
    async fn verdicts_are_recorded_once_per_definition_and_releases_too() {
        let mut lock = LockFile::default();
        lock.approve_tool("s", &tool("Echoes."));
        let gate = Arc::new(PinGate::new(lock.clone(), GateMode::Enforce, GateMode::Enforce));
        let sink = MemoryAuditSink::new();
        let checks = PinChecks {
            endpoint: "main".into(),
            gate: gate.clone(),
            audit: Some(Arc::new(sink.clone())),
            recorded: Mutex::default(),
        };
        let changed = tool("Echoes, and keeps a copy.");
        let pin = mcp_guard_core::pin::tool_pin(&changed);
        for _ in 0..3 {
            let verdict = gate.admit("s", &changed, &[]);
            assert!(matches!(verdict, Admission::Quarantine { .. }));
            checks.record("s", "echo", &pin, &verdict).await;
        }
        assert_eq!(
            recorded(&sink),
            ["quarantined s/echo: definition changed since it was approved"]
        );
        lock.approve_tool("s", &changed);
        gate.reload(lock.clone());
        let verdict = gate.admit("s", &changed, &[]);
        assert_eq!(verdict, Admission::Admit);
        checks.record("s", "echo", &pin, &verdict).await;
        checks.record("s", "echo", &pin, &verdict).await;
        lock.approve_tool("s", &tool("Echoes."));
        gate.reload(lock);
        let verdict = gate.admit("s", &changed, &[]);
        checks.record("s", "echo", &pin, &verdict).await;
        assert_eq!(
            recorded(&sink),
            [
                "quarantined s/echo: definition changed since it was approved",
                "released s/echo: its definition is approved",
                "quarantined s/echo: definition changed since it was approved",
            ]
        );
        // A server changing the tool endlessly: only the last few definitions are
        // remembered, and one seen again after that is recorded again.
        for i in 0..RECORDED_PER_TOOL {
            let t = tool(&format!("Echoes, version {i}."));
            checks
                .record(
                    "s",
                    "echo",
                    &mcp_guard_core::pin::tool_pin(&t),
                    &gate.admit("s", &t, &[]),
                )
                .await;
        }
        assert_eq!(
            checks.recorded.lock().unwrap()[&("s".into(), "echo".into())].len(),
            RECORDED_PER_TOOL
        );
        let before = recorded(&sink).len();
        checks
            .record("s", "echo", &pin, &gate.admit("s", &changed, &[]))
            .await;
        assert_eq!(recorded(&sink).len(), before + 1);
    }
}
