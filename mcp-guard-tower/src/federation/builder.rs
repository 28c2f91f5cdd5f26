//! [`GatewayBuilder`]: servers and endpoints in, a started [`Gateway`] out.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mcp_guard_core::pin::ToolGate;
use mcp_guard_core::{AuditSink, Upstream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::gateway::FirstStarts;
use super::{
    EndpointRuntime, EndpointSpec, Gateway, GatewayBuilder, GatewayInner, Member, PinChecks, ServerEntry,
    Snapshot,
};

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
