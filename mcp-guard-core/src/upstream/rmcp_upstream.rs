use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmcp::model::{
    CancelledNotificationParam, ClientNotification, ClientRequest, ProgressToken, ProtocolVersion,
    ServerResult, SubscriptionFilter,
};
use rmcp::service::{Peer, PeerRequestOptions, RoleClient, RunningServiceCancellationToken, ServiceError};
use tokio::sync::broadcast;

use super::child::{Fault, FaultSlot};
use super::client::{InFlight, InFlightMap, LINGER, UpstreamClient};
use super::connect::Connector;
use super::{
    Catalog, Forward, Upstream, UpstreamError, UpstreamEvent, UpstreamProtocol, UpstreamState, UpstreamStatus,
};

/// Timeouts and backoff of an [`RmcpUpstream`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UpstreamOptions {
    /// How long starting may take: spawn or dial, plus the MCP handshake (for a stdio
    /// server, also whatever its command does first, such as downloading a package).
    /// A server that has not answered by then fails with
    /// [`UpstreamError::StartTimeout`] and is retried after the backoff.
    pub connect_timeout: Duration,
    /// Default limit for one request; `None` waits as long as the caller does.
    pub request_timeout: Option<Duration>,
    /// First wait after a failed connect.
    pub backoff_initial: Duration,
    /// Longest wait between connect attempts.
    pub backoff_max: Duration,
    /// Largest single message accepted from the server, in bytes. Enforced as the
    /// bytes stream in: on stdio per line (at most 16 MiB, rmcp's own line cap), on
    /// streamable HTTP per SSE event. Above it the request fails with
    /// [`UpstreamError::ResponseTooLarge`] and a stdio connection is recycled.
    pub max_response_bytes: usize,
    /// The protocol era to speak to the server (default [`UpstreamProtocol::Auto`]).
    pub protocol: UpstreamProtocol,
    /// How often the catalogue is read again while connected, whatever else prompts a
    /// re-read (connecting, a list-changed notification, a new server session, the
    /// expiry of the server's `ttlMs`, which can only make it sooner): a server that
    /// changes its tools without saying so is noticed within this interval.
    pub catalogue_refresh: Duration,
}

/// Default [`UpstreamOptions::connect_timeout`]: 60 s, long enough for a stdio
/// server's first `npx -y` or `uvx` run to download its package.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_mins(1);

/// Default [`UpstreamOptions::max_response_bytes`]: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

impl Default for UpstreamOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_START_TIMEOUT,
            request_timeout: Some(Duration::from_mins(2)),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            protocol: UpstreamProtocol::Auto,
            catalogue_refresh: super::catalogue::DEFAULT_CATALOGUE_REFRESH,
        }
    }
}

struct Conn {
    peer: Peer<RoleClient>,
    generation: u64,
    stop: Mutex<Option<RunningServiceCancellationToken>>,
    ended: tokio::sync::watch::Receiver<bool>,
    /// Why the transport ended the connection itself, if it did.
    fault: FaultSlot,
}

impl Conn {
    fn stop(&self) {
        if let Some(t) = self.stop.lock().unwrap_or_else(PoisonError::into_inner).take() {
            t.cancel();
        }
    }
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    next_attempt: Option<Instant>,
    /// Why the last start failed.
    last_failure: Option<LastFailure>,
}

/// Why the last start of an upstream failed, as a client is told while it waits out
/// the backoff.
enum LastFailure {
    /// Credentials were missing (the client is told which, as at the first failure).
    Missing(Vec<String>),
    /// Anything else, in the gateway's words.
    Reason(String),
}

pub(crate) struct Shared {
    pub(crate) id: Arc<str>,
    connector: Arc<dyn Connector>,
    options: UpstreamOptions,
    pub(crate) events: broadcast::Sender<UpstreamEvent>,
    inflight: InFlightMap,
    conn: RwLock<Option<Arc<Conn>>>,
    connect_lock: tokio::sync::Mutex<Backoff>,
    catalog: RwLock<Arc<Catalog>>,
    /// One catalogue read at a time, so a slow read never overwrites a newer one.
    catalogue_reads: tokio::sync::Mutex<()>,
    status: RwLock<UpstreamStatus>,
    generation: AtomicU64,
    stopped: AtomicBool,
    /// Resource subscriptions held on a 2026-07-28 connection as `subscriptions/listen`
    /// streams: URI → (number of subscribers, the stream's stop token).
    resource_streams: Mutex<std::collections::HashMap<String, (usize, tokio_util::sync::CancellationToken)>>,
}

/// An [`Upstream`] reached through rmcp, supervised: connects on first use, notices when
/// the server goes away, reconnects with exponential backoff on the next use.
///
/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RmcpUpstream {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RmcpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RmcpUpstream")
            .field("id", &self.shared.id)
            .field("connector", &self.shared.connector)
            .finish_non_exhaustive()
    }
}

impl RmcpUpstream {
    /// An upstream `id` reached through `connector`. Nothing connects until first use
    /// (or [`RmcpUpstream::connect`]).
    pub fn new(
        id: impl Into<Arc<str>>,
        connector: impl Connector + 'static,
        options: UpstreamOptions,
    ) -> Self {
        Self::from_arc(id, Arc::new(connector), options)
    }

    /// Like [`RmcpUpstream::new`] with a shared connector.
    pub fn from_arc(
        id: impl Into<Arc<str>>,
        connector: Arc<dyn Connector>,
        options: UpstreamOptions,
    ) -> Self {
        let (events, _) = broadcast::channel(64);
        Self {
            shared: Arc::new(Shared {
                id: id.into(),
                connector,
                options,
                events,
                inflight: Arc::default(),
                conn: RwLock::new(None),
                connect_lock: tokio::sync::Mutex::new(Backoff::default()),
                catalog: RwLock::new(Arc::new(Catalog::default())),
                catalogue_reads: tokio::sync::Mutex::new(()),
                status: RwLock::new(UpstreamStatus::now(UpstreamState::Idle)),
                generation: AtomicU64::new(0),
                stopped: AtomicBool::new(false),
                resource_streams: Mutex::default(),
            }),
        }
    }

    /// Connects now (if not connected).
    ///
    /// # Errors
    /// As [`Upstream::catalog`].
    pub async fn connect(&self) -> Result<(), UpstreamError> {
        self.shared.connection().await.map(drop)
    }

    /// The rmcp peer of the live connection, if any (for tests and tools).
    pub fn peer(&self) -> Option<Peer<RoleClient>> {
        self.shared.current().map(|c| c.peer.clone())
    }
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(PoisonError::into_inner).clone()
}

fn write<T>(l: &RwLock<T>, v: T) {
    *l.write().unwrap_or_else(PoisonError::into_inner) = v;
}

impl Shared {
    fn current(&self) -> Option<Arc<Conn>> {
        read(&self.conn).filter(|c| !c.peer.is_transport_closed())
    }

    fn set_state(&self, state: UpstreamState) {
        let mut s = self.status.write().unwrap_or_else(PoisonError::into_inner);
        if s.state != state {
            *s = UpstreamStatus::now(state);
        }
    }

    async fn connection(self: &Arc<Self>) -> Result<Arc<Conn>, UpstreamError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(UpstreamError::Disabled {
                server: self.id.to_string(),
            });
        }
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let mut backoff = self.connect_lock.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        if let Some(t) = backoff.next_attempt
            && let Some(wait) = t.checked_duration_since(Instant::now())
        {
            let server = self.id.to_string();
            return Err(match &backoff.last_failure {
                Some(LastFailure::Missing(missing)) => UpstreamError::MissingCredentials {
                    server,
                    missing: missing.clone(),
                },
                Some(LastFailure::Reason(reason)) => UpstreamError::Down {
                    server,
                    reason: reason.clone(),
                    retry_in: Some(wait),
                },
                None => UpstreamError::Down {
                    server,
                    reason: "its last start failed".to_owned(),
                    retry_in: Some(wait),
                },
            });
        }
        let fault = FaultSlot::default();
        let client = UpstreamClient {
            shared: Arc::downgrade(self),
            inflight: self.inflight.clone(),
            initialize_version: None,
            protocol: self.options.protocol,
            fault: fault.clone(),
            max_response_bytes: self.options.max_response_bytes,
        };
        let timeout = self.options.connect_timeout;
        let running = match tokio::time::timeout(timeout, self.connector.connect(client)).await {
            Ok(Ok(running)) => running,
            Ok(Err(e)) => {
                self.connect_failed(&mut backoff, &e);
                return Err(e);
            }
            Err(_) => {
                let e = UpstreamError::StartTimeout {
                    server: self.id.to_string(),
                    timeout,
                };
                self.connect_failed(&mut backoff, &e);
                return Err(e);
            }
        };
        *backoff = Backoff::default();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let peer = running.peer().clone();
        peer.set_response_cache_config(rmcp::service::ClientCacheConfig::disabled())
            .await;
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        let conn = Arc::new(Conn {
            peer: peer.clone(),
            generation,
            stop: Mutex::new(Some(running.cancellation_token())),
            ended,
            fault: fault.clone(),
        });
        write(&self.conn, Some(conn.clone()));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let reason = running.waiting().await;
            if let Some(shared) = weak.upgrade() {
                shared.closed(generation, &reason, fault.get());
            }
            let _ = ended_tx.send(true);
        });
        tracing::info!(server = %self.id, generation, "upstream connected");
        self.set_state(UpstreamState::Connected);
        let _ = self.events.send(UpstreamEvent::Connected);
        drop(backoff);
        // A connection whose catalogue cannot be read serves nothing: its tools could
        // not be checked against their pins.
        if let Err(e) = self.refresh_catalog(false).await {
            self.connect_failed(&mut *self.connect_lock.lock().await, &e);
            return Err(e);
        }
        self.listen_for_changes(&peer);
        self.keep_fresh(generation);
        Ok(conn)
    }

    /// Re-reads the catalogue of connection `generation` whenever it is due (the
    /// server's `ttlMs` or the re-list interval, whichever is sooner; a re-read for
    /// another reason postpones it), until that connection ends.
    fn keep_fresh(self: &Arc<Self>, generation: u64) {
        let weak = Arc::downgrade(self);
        let interval = self.options.catalogue_refresh;
        tokio::spawn(async move {
            loop {
                let due = {
                    let Some(shared) = weak.upgrade() else { return };
                    super::catalogue::next_read(read::<Arc<Catalog>>(&shared.catalog).as_ref(), interval)
                        .unwrap_or_else(|| Instant::now() + interval)
                };
                tokio::time::sleep_until(due.into()).await;
                let Some(shared) = weak.upgrade() else { return };
                if shared.current().is_none_or(|c| c.generation != generation) {
                    return;
                }
                let still_due =
                    super::catalogue::next_read(read::<Arc<Catalog>>(&shared.catalog).as_ref(), interval)
                        .is_none_or(|at| at <= Instant::now());
                if still_due {
                    tracing::debug!(server = %shared.id, "re-reading the catalogue (due)");
                    let _ = shared.refresh_catalog(false).await;
                }
            }
        });
    }

    fn connect_failed(&self, backoff: &mut Backoff, e: &UpstreamError) {
        backoff.failures = backoff.failures.saturating_add(1);
        let exp = self
            .options
            .backoff_initial
            .saturating_mul(1 << backoff.failures.min(16).saturating_sub(1));
        backoff.next_attempt = Some(Instant::now() + exp.min(self.options.backoff_max));
        backoff.last_failure = Some(match e {
            UpstreamError::MissingCredentials { missing, .. } => LastFailure::Missing(missing.clone()),
            other => LastFailure::Reason(failure_reason(other, self.options.protocol)),
        });
        tracing::warn!(server = %self.id, error = %error_chain(e), "upstream connect failed");
        let state = match e {
            UpstreamError::MissingCredentials { missing, .. } => UpstreamState::MissingCredentials {
                missing: missing.clone(),
            },
            // The gateway's reading first, then what the transport said (for operators).
            other @ UpstreamError::Unavailable { .. } => UpstreamState::Failed {
                error: format!(
                    "{}: {}",
                    failure_reason(other, self.options.protocol),
                    error_chain(other)
                ),
            },
            other => UpstreamState::Failed {
                error: error_chain(other),
            },
        };
        self.set_state(state);
    }

    fn closed(
        &self,
        generation: u64,
        reason: &Result<rmcp::service::QuitReason, tokio::task::JoinError>,
        fault: Option<&Fault>,
    ) {
        let mut conn = self.conn.write().unwrap_or_else(PoisonError::into_inner);
        if conn.as_ref().is_some_and(|c| c.generation == generation) {
            *conn = None;
            drop(conn);
            if self.stopped.load(Ordering::Acquire) {
                tracing::info!(server = %self.id, generation, "upstream stopped");
                self.set_state(UpstreamState::Stopped);
            } else {
                let error = match fault {
                    Some(Fault::TooLarge { limit }) => {
                        format!("sent a message larger than {limit} bytes; connection recycled")
                    }
                    Some(Fault::Garbage) => {
                        "wrote a line that is not JSON-RPC; connection recycled".to_owned()
                    }
                    None => "connection closed".to_owned(),
                };
                tracing::warn!(server = %self.id, generation, ?reason, %error, "upstream connection ended");
                self.set_state(UpstreamState::Failed { error });
            }
            let _ = self.events.send(UpstreamEvent::Disconnected);
        }
    }

    /// 2026-07-28 servers send list-changed only on a `subscriptions/listen` stream.
    fn listen_for_changes(self: &Arc<Self>, peer: &Peer<RoleClient>) {
        let Some(info) = peer.peer_info() else { return };
        if info.protocol_version.as_str() < ProtocolVersion::V_2026_07_28.as_str() {
            return;
        }
        let caps = &info.capabilities;
        let mut filter = SubscriptionFilter::builder();
        if caps.tools.as_ref().is_some_and(|t| t.list_changed == Some(true)) {
            filter = filter.tools_list_changed();
        }
        if caps
            .prompts
            .as_ref()
            .is_some_and(|t| t.list_changed == Some(true))
        {
            filter = filter.prompts_list_changed();
        }
        if caps
            .resources
            .as_ref()
            .is_some_and(|t| t.list_changed == Some(true))
        {
            filter = filter.resources_list_changed();
        }
        let filter = filter.build();
        if filter == SubscriptionFilter::default() {
            return;
        }
        let peer = peer.clone();
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Ok(mut sub) = peer.listen(filter.clone()).await else {
                    return;
                };
                while let Ok(Some(_notification)) = sub.next().await {
                    let Some(shared) = weak.upgrade() else { return };
                    let _ = shared.refresh_catalog(true).await;
                }
                // The stream ended while the connection lives on: changes announced
                // from now on would be missed, and the server may have restarted (a new
                // server, maybe with other tools). Read the catalogue again, then listen
                // again if the connection survived that.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(shared) = weak.upgrade() else { return };
                if peer.is_transport_closed() || shared.stopped.load(Ordering::Acquire) {
                    return;
                }
                tracing::info!(server = %shared.id, "the change stream ended; re-reading the catalogue");
                if shared.refresh_catalog(false).await.is_err() {
                    return;
                }
            }
        });
    }

    /// Re-reads the catalogue. `announced`: the server said it changed, so clients are
    /// told even if the re-read looks the same. A list that cannot be used (garbage, a
    /// name given twice, pages without end, no answer in time) ends the connection:
    /// the next use reconnects, and fails with the reason while the list stays bad.
    ///
    /// # Errors
    /// Why the catalogue could not be read.
    pub(crate) async fn refresh_catalog(&self, announced: bool) -> Result<Arc<Catalog>, UpstreamError> {
        let _one_read = self.catalogue_reads.lock().await;
        let Some(conn) = self.current() else {
            return Err(UpstreamError::Terminated {
                server: self.id.to_string(),
            });
        };
        let timeout = self
            .options
            .request_timeout
            .unwrap_or(self.options.connect_timeout);
        let catalog = match super::catalogue::read_catalog(&self.id, &conn.peer, timeout, |e| {
            self.map_conn_error(&conn, e)
        })
        .await
        {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::warn!(server = %self.id, error = %error_chain(&e), "could not read upstream catalogue");
                self.set_state(UpstreamState::Failed {
                    error: format!("catalogue: {}", error_chain(&e)),
                });
                conn.stop();
                return Err(e);
            }
        };
        let old = read(&self.catalog);
        let changed = !same_catalog(&old, &catalog);
        write(&self.catalog, catalog.clone());
        if changed || announced {
            let _ = self.events.send(UpstreamEvent::CatalogChanged);
        }
        Ok(catalog)
    }

    /// On a 2026-07-28 connection `resources/subscribe` does not exist: a subscription is
    /// a `subscriptions/listen` stream instead, one per URI, shared by its subscribers.
    async fn subscribe_modern(
        self: &Arc<Self>,
        peer: &Peer<RoleClient>,
        uri: String,
    ) -> Result<ServerResult, UpstreamError> {
        if let Some((count, _)) = self
            .resource_streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&uri)
        {
            *count += 1;
            return Ok(ServerResult::empty(()));
        }
        let filter = SubscriptionFilter::builder()
            .resource_subscription(uri.clone())
            .build();
        let mut sub = peer.listen(filter).await.map_err(|e| self.map_error(e))?;
        let stop = tokio_util::sync::CancellationToken::new();
        self.resource_streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uri.clone(), (1, stop.clone()));
        let events = self.events.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => {
                        let _ = sub.cancel().await;
                        return;
                    }
                    next = sub.next() => match next {
                        Ok(Some(rmcp::model::ServerNotification::ResourceUpdatedNotification(n))) => {
                            let _ = events.send(UpstreamEvent::ResourceUpdated(n.params.uri));
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => return,
                    }
                }
            }
        });
        Ok(ServerResult::empty(()))
    }

    fn unsubscribe_modern(&self, uri: &str) -> ServerResult {
        let mut streams = self
            .resource_streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((count, stop)) = streams.get_mut(uri) {
            *count -= 1;
            if *count == 0 {
                stop.cancel();
                streams.remove(uri);
            }
        }
        ServerResult::empty(())
    }

    /// An error sending a request: the request never went out, so a closed connection
    /// means the server was already down (not that it died handling the request).
    fn map_send_error(&self, conn: &Conn, e: ServiceError) -> UpstreamError {
        match (&e, conn.fault.get()) {
            (ServiceError::TransportClosed | ServiceError::TransportSend(_), None) => UpstreamError::Down {
                server: self.id.to_string(),
                reason: "its connection had closed before the request was sent".to_owned(),
                retry_in: None,
            },
            _ => self.map_conn_error(conn, e),
        }
    }

    /// Like [`Shared::map_error`], naming the transport's fault when it ended the
    /// connection itself.
    fn map_conn_error(&self, conn: &Conn, e: ServiceError) -> UpstreamError {
        match (&e, conn.fault.get()) {
            (
                ServiceError::TransportClosed | ServiceError::TransportSend(_),
                Some(Fault::TooLarge { limit }),
            ) => UpstreamError::ResponseTooLarge {
                server: self.id.to_string(),
                limit: *limit,
            },
            (ServiceError::TransportClosed | ServiceError::TransportSend(_), Some(Fault::Garbage)) => {
                UpstreamError::Protocol {
                    server: self.id.to_string(),
                }
            }
            _ => self.map_error(e),
        }
    }

    fn map_error(&self, e: ServiceError) -> UpstreamError {
        let server = self.id.to_string();
        match e {
            ServiceError::McpError(e) => UpstreamError::Rpc(e),
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
                UpstreamError::Terminated { server }
            }
            ServiceError::Timeout { timeout } => UpstreamError::Timeout { server, timeout },
            ServiceError::Cancelled { .. } => UpstreamError::Cancelled,
            ServiceError::UnexpectedResponse => UpstreamError::Protocol { server },
            other => UpstreamError::Unavailable {
                server,
                source: Some(other.to_string().into()),
            },
        }
    }
}

/// Why connecting to an upstream failed ([`UpstreamError::Unavailable`] from a
/// connector, [`UpstreamError::StartTimeout`]), in words a client may read: the gateway's
/// own wording, never text the server or a transport produced (which may name hosts,
/// paths or secrets). `None` for other errors.
pub fn start_failure(e: &UpstreamError) -> Option<String> {
    matches!(
        e,
        UpstreamError::Unavailable { .. } | UpstreamError::StartTimeout { .. }
    )
    .then(|| failure_reason(e, UpstreamProtocol::Auto))
}

/// Why a start failed, in words a client may read: the gateway's own wording, never
/// text the server or a transport produced (which may name hosts, paths or secrets).
fn failure_reason(e: &UpstreamError, protocol: UpstreamProtocol) -> String {
    match e {
        UpstreamError::StartTimeout { timeout, .. } => {
            format!("it did not answer within {} of starting", human(*timeout))
        }
        UpstreamError::Unavailable { source: Some(s), .. } => {
            match s.downcast_ref::<rmcp::service::ClientInitializeError>() {
                Some(rmcp::service::ClientInitializeError::ConnectionClosed(_)) => {
                    "it closed the connection (or exited) before completing the MCP handshake".to_owned()
                }
                Some(rmcp::service::ClientInitializeError::NoCompatibleProtocolVersion { .. }) => {
                    if protocol == UpstreamProtocol::Modern {
                        "it does not offer 2026-07-28, which its protocol setting requires".to_owned()
                    } else {
                        "it shares no protocol version with the gateway".to_owned()
                    }
                }
                Some(rmcp::service::ClientInitializeError::JsonRpcError(e)) => {
                    format!("it refused the MCP handshake (JSON-RPC error {})", e.code.0)
                }
                Some(_) => "the MCP handshake failed".to_owned(),
                None if s.downcast_ref::<std::io::Error>().is_some() => {
                    "its process could not be started".to_owned()
                }
                None => "it could not be reached".to_owned(),
            }
        }
        _ => "its last start failed".to_owned(),
    }
}

/// `2 s`, `1.5 s`, `250 ms`.
pub(crate) fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn same_catalog(a: &Catalog, b: &Catalog) -> bool {
    let j = |v: &dyn erased::Ser| v.json();
    j(&a.tools) == j(&b.tools)
        && j(&a.prompts) == j(&b.prompts)
        && j(&a.resources) == j(&b.resources)
        && j(&a.resource_templates) == j(&b.resource_templates)
}

mod erased {
    pub(super) trait Ser {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_default()
        }
    }
}

/// An error with its sources, `outer: inner: innermost`, for operator-facing messages.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

struct InFlightGuard {
    map: InFlightMap,
    token: ProgressToken,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Some(entry) = self
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&self.token)
        {
            entry.done = Some(Instant::now());
        }
        let (map, token) = (self.map.clone(), self.token.clone());
        let forget = move || {
            map.lock().unwrap_or_else(PoisonError::into_inner).remove(&token);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(LINGER).await;
                    forget();
                });
            }
            Err(_) => forget(),
        }
    }
}

#[async_trait]
impl Upstream for RmcpUpstream {
    fn id(&self) -> &str {
        &self.shared.id
    }

    async fn catalog(&self) -> Result<Arc<Catalog>, UpstreamError> {
        self.shared.connection().await?;
        Ok(read(&self.shared.catalog))
    }

    /// An explicit refresh does not wait out the reconnect backoff (it follows an event
    /// that may have fixed the cause, such as a sign-in).
    async fn refresh(&self) {
        self.shared.connect_lock.lock().await.next_attempt = None;
        if self.shared.connection().await.is_ok() {
            let _ = self.shared.refresh_catalog(true).await;
        }
    }

    async fn reread_serving_catalog(&self, _forward: &Forward) -> Result<Arc<Catalog>, UpstreamError> {
        self.shared.connection().await?;
        self.shared.refresh_catalog(false).await
    }

    #[tracing::instrument(skip_all, fields(server = %self.shared.id, method = request.method()))]
    async fn request(&self, request: ClientRequest, forward: Forward) -> Result<ServerResult, UpstreamError> {
        let shared = &self.shared;
        let conn = shared.connection().await?;
        let modern = conn
            .peer
            .peer_info()
            .is_some_and(|i| i.protocol_version.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
        if modern {
            match request {
                ClientRequest::SubscribeRequest(r) => {
                    return shared.subscribe_modern(&conn.peer, r.params.uri).await;
                }
                ClientRequest::UnsubscribeRequest(r) => return Ok(shared.unsubscribe_modern(&r.params.uri)),
                _ => {}
            }
        }
        let mut options = PeerRequestOptions::no_options();
        options.timeout = forward.timeout.or(shared.options.request_timeout);
        options.meta = forward.meta;
        let handle = conn
            .peer
            .send_request_with_option(request, options)
            .await
            .map_err(|e| shared.map_send_error(&conn, e))?;
        let _guard = (forward.progress.is_some() || forward.client.is_some()).then(|| {
            let entry = InFlight {
                progress: forward.progress,
                client: forward.client,
                done: None,
                asking: false,
            };
            shared
                .inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(handle.progress_token.clone(), entry);
            InFlightGuard {
                map: shared.inflight.clone(),
                token: handle.progress_token.clone(),
            }
        });
        let id = handle.id.clone();
        let peer = handle.peer.clone();
        tokio::select! {
            result = handle.await_response() => result.map_err(|e| shared.map_conn_error(&conn, e)),
            () = forward.cancel.cancelled() => {
                let note = CancelledNotificationParam::new(Some(id), Some("cancelled by the client".to_owned()));
                let _ = peer.notify_cancelled(note).await;
                Err(UpstreamError::Cancelled)
            }
        }
    }

    async fn notify(&self, notification: ClientNotification) -> Result<(), UpstreamError> {
        let conn = self.shared.connection().await?;
        conn.peer
            .send_notification(notification)
            .await
            .map_err(|e| self.shared.map_error(e))
    }

    fn subscribe(&self) -> broadcast::Receiver<UpstreamEvent> {
        self.shared.events.subscribe()
    }

    fn status(&self) -> UpstreamStatus {
        read(&self.shared.status)
    }

    async fn shutdown(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        let conn = read(&self.shared.conn);
        if let Some(c) = conn {
            c.stop();
            let mut ended = c.ended.clone();
            // The transport's own close escalates stdin-close, SIGTERM, SIGKILL within ~6 s.
            let _ = tokio::time::timeout(Duration::from_secs(10), ended.wait_for(|done| *done)).await;
        }
        self.shared.set_state(UpstreamState::Stopped);
    }
}
