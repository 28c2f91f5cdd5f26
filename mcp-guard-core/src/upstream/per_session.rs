//! One upstream instance per gateway session: a stdio server's process is never
//! shared between clients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmcp::model::{ClientNotification, ClientRequest, ServerResult};
use tokio::sync::broadcast;

use super::{Catalog, Forward, Upstream, UpstreamError, UpstreamEvent, UpstreamStatus};
use crate::access::Session;
use crate::call::SessionId;

/// Builds the upstream of one session (for a stdio server: a process with the
/// session's credentials in its environment).
pub type MakeUpstream = Arc<dyn Fn(&Session) -> Arc<dyn Upstream> + Send + Sync>;

/// Bounds on per-session instances.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SessionLimits {
    /// Instances of this server in total.
    pub max_total: usize,
    /// Instances of this server per principal; an agent acting for a user counts as its
    /// own principal per user (the whole delegation chain), so one user's sessions
    /// through a shared agent cannot use up another user's.
    pub max_per_principal: usize,
    /// An instance unused this long is stopped (the next call starts a new one).
    pub idle_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_total: 256,
            max_per_principal: 8,
            idle_timeout: Duration::from_mins(15),
        }
    }
}

/// The default of `gateway.max_upstream_processes`.
pub const DEFAULT_MAX_UPSTREAM_PROCESSES: usize = 256;

/// A bound on upstream processes across every server of the gateway
/// (`gateway.max_upstream_processes`): the processes that always run (one per stdio
/// server) are [reserved](ProcessBudget::reserve) once, and each per-session instance
/// holds a [`ProcessPermit`] while it lives. Clones share the count.
#[derive(Debug, Clone)]
pub struct ProcessBudget {
    inner: Arc<Budget>,
}

#[derive(Debug)]
struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl ProcessBudget {
    /// At most `limit` processes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Budget {
                limit,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Processes counted now.
    pub fn in_use(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Counts `n` processes for good (those that always run); `false`, counting
    /// nothing, if they do not fit.
    pub fn reserve(&self, n: usize) -> bool {
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.inner.limit)
            })
            .is_ok()
    }

    /// One more process, if it fits; counted until the permit is dropped.
    pub fn try_take(&self) -> Option<ProcessPermit> {
        self.reserve(1).then(|| ProcessPermit {
            budget: self.inner.clone(),
        })
    }
}

/// One process counted in a [`ProcessBudget`] until dropped.
#[derive(Debug)]
pub struct ProcessPermit {
    budget: Arc<Budget>,
}

impl Drop for ProcessPermit {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Instance {
    upstream: Arc<dyn Upstream>,
    /// The session's delegation chain (principal, user it acts for).
    chain: (Arc<str>, Option<Arc<str>>),
    last_used: Instant,
    /// Released when the instance is dropped, after its process was stopped.
    _permit: Option<ProcessPermit>,
}

type Instances = Arc<Mutex<HashMap<SessionId, Instance>>>;

/// An [`Upstream`] that gives every gateway session its own instance, started on the
/// session's first call and stopped when the session ends (revoked, expired, gateway
/// shutdown) or has been idle for [`SessionLimits::idle_timeout`].
///
/// A separate *catalogue* instance, which serves no session's calls, answers
/// [`Upstream::catalog`], [`Upstream::status`] and [`Upstream::subscribe`] (tool lists
/// do not depend on who asks), and serves requests that come without a session (the
/// stdio front door, where the whole process is one client's).
pub struct PerSessionUpstream {
    id: Arc<str>,
    catalogue: Arc<dyn Upstream>,
    make: MakeUpstream,
    limits: SessionLimits,
    instances: Instances,
    reaper: std::sync::OnceLock<()>,
    sessionless: Option<Arc<dyn Upstream>>,
    budget: Option<ProcessBudget>,
}

impl std::fmt::Debug for PerSessionUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerSessionUpstream")
            .field("id", &self.id)
            .field("instances", &self.instances())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PerSessionUpstream {
    /// Per-session instances of server `id`, made by `make`; `catalogue` lists.
    pub fn new(catalogue: Arc<dyn Upstream>, make: MakeUpstream, limits: SessionLimits) -> Self {
        Self {
            id: catalogue.id().into(),
            catalogue,
            make,
            limits,
            instances: Arc::default(),
            reaper: std::sync::OnceLock::new(),
            sessionless: None,
            budget: None,
        }
    }

    /// Counts every instance against `budget`, shared with the gateway's other
    /// servers: an instance that does not fit is refused with
    /// [`UpstreamError::Exhausted`] naming `gateway.max_upstream_processes`.
    #[must_use]
    pub fn budget(mut self, budget: ProcessBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Requests that come without a session (the stdio front door) go to `upstream`
    /// instead of the catalogue instance: e.g. the stdio principal's own instance when
    /// the catalogue instance runs without personal credentials.
    #[must_use]
    pub fn sessionless(mut self, upstream: Arc<dyn Upstream>) -> Self {
        self.sessionless = Some(upstream);
        self
    }

    /// Live instances (sessions with a running upstream).
    pub fn instances(&self) -> usize {
        self.instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn limit(&self, what: String) -> UpstreamError {
        UpstreamError::Exhausted {
            server: self.id.to_string(),
            limit: what,
        }
    }

    /// The instance that serves a request forwarded with `forward`.
    fn serving(&self, forward: &Forward) -> Result<Arc<dyn Upstream>, UpstreamError> {
        match &forward.session {
            Some(session) => self.instance(session),
            None => Ok(self.sessionless.as_ref().unwrap_or(&self.catalogue).clone()),
        }
    }

    fn instance(&self, session: &Arc<Session>) -> Result<Arc<dyn Upstream>, UpstreamError> {
        let mut map = self.instances.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = map.get_mut(session.id()) {
            i.last_used = Instant::now();
            return Ok(i.upstream.clone());
        }
        if session.closed().is_cancelled() {
            return Err(UpstreamError::Cancelled);
        }
        if map.len() >= self.limits.max_total {
            return Err(self.limit(format!(
                "process limit reached: {} sessions already run their own instance",
                self.limits.max_total
            )));
        }
        let mine = map
            .values()
            .filter(|i| (&*i.chain.0, i.chain.1.as_deref()) == session.chain())
            .count();
        if mine >= self.limits.max_per_principal {
            let who = match session.on_behalf_of() {
                Some(user) => format!("{} acting for {user}", session.principal_id()),
                None => session.principal_id().to_owned(),
            };
            return Err(self.limit(format!(
                "process limit reached: {} instances for principal {who}",
                self.limits.max_per_principal,
            )));
        }
        let permit = match &self.budget {
            Some(b) => Some(b.try_take().ok_or_else(|| {
                self.limit(format!(
                    "gateway process limit reached: {} upstream processes already run across all servers \
                     (gateway.max_upstream_processes)",
                    b.limit()
                ))
            })?),
            None => None,
        };
        let upstream = (self.make)(session);
        map.insert(
            session.id().clone(),
            Instance {
                upstream: upstream.clone(),
                chain: (
                    session.principal_id().into(),
                    session.on_behalf_of().map(Into::into),
                ),
                last_used: Instant::now(),
                _permit: permit,
            },
        );
        drop(map);
        tracing::info!(server = %self.id, session = %session.id(), "started a per-session upstream");
        // One watcher per instance: it stops the instance when the session ends, and
        // since lists come from the catalogue instance, makes that re-read its own when
        // the session's instance says its lists changed.
        let closed = session.closed().clone();
        let instances = Arc::downgrade(&self.instances);
        let id = session.id().clone();
        let mut events = upstream.subscribe();
        let catalogue = Arc::downgrade(&self.catalogue);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = closed.cancelled() => {
                        stop(&instances, &id).await;
                        return;
                    }
                    event = events.recv() => match event {
                        Ok(UpstreamEvent::CatalogChanged) => {
                            if let Some(c) = catalogue.upgrade() {
                                c.refresh().await;
                            }
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        // No more events (the instance was replaced or dropped): still
                        // stop whatever runs for this session when it ends.
                        Err(broadcast::error::RecvError::Closed) => {
                            closed.cancelled().await;
                            stop(&instances, &id).await;
                            return;
                        }
                    },
                }
            }
        });
        self.reaper.get_or_init(|| {
            tokio::spawn(reap(Arc::downgrade(&self.instances), self.limits.idle_timeout));
        });
        Ok(upstream)
    }
}

async fn stop(instances: &Weak<Mutex<HashMap<SessionId, Instance>>>, id: &SessionId) {
    let Some(map) = instances.upgrade() else { return };
    let gone = map.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    if let Some(i) = gone {
        i.upstream.shutdown().await;
        tracing::info!(server = %i.upstream.id(), session = %id, "stopped a per-session upstream");
    }
}

async fn reap(instances: Weak<Mutex<HashMap<SessionId, Instance>>>, idle: Duration) {
    let period = (idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        tokio::time::sleep(period).await;
        let Some(map) = instances.upgrade() else { return };
        let idle_ones: Vec<SessionId> = map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, i)| i.last_used.elapsed() >= idle)
            .map(|(k, _)| k.clone())
            .collect();
        drop(map);
        for id in idle_ones {
            stop(&instances, &id).await;
        }
    }
}

#[async_trait]
impl Upstream for PerSessionUpstream {
    fn id(&self) -> &str {
        &self.id
    }

    async fn catalog(&self) -> Result<Arc<Catalog>, UpstreamError> {
        self.catalogue.catalog().await
    }

    /// The session's own instance's catalogue (what its calls are served by), not the
    /// catalogue instance's: a process that starts with other definitions than the one
    /// that lists is checked on what it serves.
    async fn serving_catalog(&self, forward: &Forward) -> Result<Arc<Catalog>, UpstreamError> {
        self.serving(forward)?.serving_catalog(forward).await
    }

    async fn reread_serving_catalog(&self, forward: &Forward) -> Result<Arc<Catalog>, UpstreamError> {
        self.serving(forward)?.reread_serving_catalog(forward).await
    }

    async fn request(&self, request: ClientRequest, forward: Forward) -> Result<ServerResult, UpstreamError> {
        let Some(session) = forward.session.clone() else {
            let target = self.sessionless.as_ref().unwrap_or(&self.catalogue);
            return target.request(request, forward).await;
        };
        let upstream = self.instance(&session)?;
        let result = upstream.request(request, forward).await;
        if let Some(i) = self
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(session.id())
        {
            i.last_used = Instant::now();
        }
        result
    }

    async fn notify(&self, notification: ClientNotification) -> Result<(), UpstreamError> {
        let all: Vec<Arc<dyn Upstream>> = self
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|i| i.upstream.clone())
            .collect();
        for u in all.iter().chain(&self.sessionless) {
            let _ = u.notify(notification.clone()).await;
        }
        self.catalogue.notify(notification).await
    }

    fn subscribe(&self) -> broadcast::Receiver<UpstreamEvent> {
        self.catalogue.subscribe()
    }

    fn status(&self) -> UpstreamStatus {
        self.catalogue.status()
    }

    async fn refresh(&self) {
        self.catalogue.refresh().await;
    }

    async fn shutdown(&self) {
        let all: Vec<Instance> = self
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, i)| i)
            .collect();
        futures::future::join_all(all.iter().map(|i| i.upstream.shutdown())).await;
        if let Some(u) = &self.sessionless {
            u.shutdown().await;
        }
        self.catalogue.shutdown().await;
    }
}
