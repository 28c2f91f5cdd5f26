//! The running [`Gateway`]: its servers and endpoints, their first starts, reloads
//! and shutdown.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use mcp_guard_core::Upstream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{
    BuildError, EndpointRuntime, EndpointSpec, Gateway, GatewayBuilder, GatewayInner, Member, ServerEntry,
};

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
pub(super) type FirstStarts = BTreeMap<Arc<str>, (Arc<dyn Upstream>, tokio::sync::watch::Sender<bool>)>;

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
    pub(super) fn start_servers(&self, servers: FirstStarts, started: tokio::sync::watch::Sender<bool>) {
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

    pub(super) fn watch(&self) {
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
