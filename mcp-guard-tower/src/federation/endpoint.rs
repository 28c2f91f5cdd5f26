//! One endpoint at run time: its members, their watchers, and the rebuilds of its
//! [`Snapshot`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use mcp_guard_core::{TargetKind, Upstream, UpstreamState};
use rmcp::service::{Peer, RoleServer};
use tokio::sync::broadcast;

use super::snapshot::capabilities;
use super::{EndpointRuntime, Member, Snapshot, Subscription};

impl Member {
    /// The member of a reconfigured endpoint that carries this one over unchanged.
    pub(super) fn same(&self, id: &str, upstream: &Arc<dyn Upstream>, enabled: bool) -> bool {
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

    pub(super) fn members_now(&self) -> Arc<Vec<Member>> {
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

    /// Waits, at most the builder's [`startup_wait`](super::GatewayBuilder::startup_wait), for
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

    pub(super) async fn resource_updated(&self, server: &str, uri: &str) {
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

    pub(super) fn install(&self, snapshot: Snapshot) -> ListChanged {
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
    pub(super) fn snapshot_without_connecting(&self) -> Snapshot {
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
