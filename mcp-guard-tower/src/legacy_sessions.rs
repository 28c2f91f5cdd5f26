//! [`LeanSessionManager`]: the session manager of legacy (`Mcp-Session-Id`) HTTP
//! sessions, in place of rmcp's `LocalSessionManager`, built so that an idle session
//! costs a few hundred bytes instead of ~54 KB.
//!
//! rmcp runs one service loop (the handler, its peer, channels, two tasks) per legacy
//! session for as long as the session lives. Here a session keeps its loop only while
//! it has work: a request in flight, a server-to-client request awaiting its answer,
//! or a standalone (GET) stream open. Once idle, the loop is stopped and the session is
//! *parked*: what stays is its id, the client's `initialize` parameters (as compact
//! JSON), a few flags and the replay caches of recently finished streams. The next
//! request *resumes* it: a fresh handler is served over a fresh transport, the
//! `initialize` handshake is replayed to it (its answer dropped), and the request
//! follows.
//!
//! Kept as rmcp's manager does it: request/response over POST (each POST's SSE stream
//! opens with a priming event, then carries the request's progress, the server's
//! requests made while serving it, SEP-2260, and the response); the standalone GET
//! stream for everything else (a second GET gets a keep-alive-only stream); messages
//! for the standalone stream are kept (16 at most) while none is open and replayed
//! when one opens; `Last-Event-ID` resumption of request streams (16 events each, kept
//! 60 s after the response, at most 4 finished streams per session) and of the
//! standalone stream; DELETE; idle sessions end after `idle_timeout` (5 minutes).
//!
//! What parking changes: a notification the server would send to a parked session is
//! not sent (nothing is listening for it: the session has no stream open). A session
//! whose client set a log level (`logging/setLevel`) or subscribed to a resource is
//! never parked, because that state lives in its handler.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use rmcp::RoleServer;
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, GetExtensions as _, GetMeta as _,
    InitializeRequest, InitializeRequestParams, InitializedNotification, JsonRpcMessage, ProgressToken,
    RequestId, ServerJsonRpcMessage, ServerNotification,
};
use rmcp::transport::Transport;
use rmcp::transport::streamable_http_server::session::{ServerSseMessage, SessionId, SessionManager};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The id of a replayed `initialize` (its answer is dropped).
const RESUME_ID: &str = "mcp-guard-resume";
/// Events buffered towards one SSE stream before the service waits for the client.
const STREAM_CAPACITY: usize = 16;
/// Events kept per stream for `Last-Event-ID`.
const CACHE: usize = 16;
/// Finished request streams kept per session for `Last-Event-ID`.
const MAX_FINISHED: usize = 4;
/// Keep-alive-only streams per session (a second GET while one is open).
const MAX_SHADOWS: usize = 32;

/// Settings of a [`LeanSessionManager`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeanSessionConfig {
    /// A session with nothing in flight and no stream open ends after this long
    /// without a request from its client (as rmcp's default: 5 minutes).
    pub idle_timeout: Duration,
    /// The `retry` hint of the priming event that opens each request stream.
    pub sse_retry: Option<Duration>,
    /// How long a finished request stream stays resumable.
    pub resume_ttl: Duration,
    /// How long the handler may take to answer `initialize`.
    pub init_timeout: Duration,
}

impl Default for LeanSessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_mins(5),
            sse_retry: Some(Duration::from_secs(3)),
            resume_ttl: Duration::from_mins(1),
            init_timeout: Duration::from_mins(1),
        }
    }
}

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeanSessionError {
    /// No such session (never was, closed, or expired).
    #[error("session not found: {0}")]
    NotFound(SessionId),
    /// The session's first message was not `initialize`.
    #[error("the first message of a session must be initialize")]
    ExpectedInitialize,
    /// A parked session without `initialize` parameters cannot be resumed.
    #[error("session {0} has no initialize parameters to resume with")]
    NotInitialized(SessionId),
    /// The session's service stopped before answering.
    #[error("the session's service ended")]
    ServiceEnded,
    /// The handler did not answer `initialize` in time.
    #[error("initialize was not answered within {0:?}")]
    InitTimeout(Duration),
    /// A `Last-Event-ID` this manager did not issue.
    #[error("invalid Last-Event-ID {0:?}")]
    BadEventId(String),
    /// The events after this `Last-Event-ID` are no longer kept.
    #[error("the events after Last-Event-ID {0:?} are no longer kept")]
    NotKept(String),
    /// The `initialize` parameters could not be kept or read back.
    #[error("initialize parameters: {0}")]
    Json(#[from] serde_json::Error),
    /// The OS random source failed (session ids must be unguessable).
    #[error("no random source for a session id: {0}")]
    Random(String),
}

type Spawn = Box<dyn Fn(LeanTransport, CancellationToken) + Send + Sync>;

/// An rmcp [`SessionManager`] whose idle sessions give up their service loop (see the
/// [module docs](self)). Cheap to share behind an `Arc`.
pub struct LeanSessionManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LeanSessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanSessionManager")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

struct Shared {
    sessions: Mutex<HashMap<SessionId, Arc<Session>>>,
    config: LeanSessionConfig,
    spawn: Spawn,
    shutdown: CancellationToken,
    sweeper: Once,
}

impl Shared {
    fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }
}

struct Session {
    id: SessionId,
    state: Mutex<State>,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks a session a client is using: refused as not found once it is closed, and
    /// marked active.
    fn lock_live(&self, id: &SessionId) -> Result<MutexGuard<'_, State>, LeanSessionError> {
        let mut st = self.lock();
        if st.closed {
            return Err(LeanSessionError::NotFound(id.clone()));
        }
        st.last_active = Instant::now();
        Ok(st)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Request(RequestId),
    Progress(ProgressToken),
}

/// Events of one SSE stream: the live sender (if a client is attached) and the last
/// few events for `Last-Event-ID`.
#[derive(Default)]
struct Events {
    tx: Option<mpsc::Sender<ServerSseMessage>>,
    cache: VecDeque<ServerSseMessage>,
    next: usize,
}

type Deferred = Vec<(mpsc::Sender<ServerSseMessage>, ServerSseMessage)>;

impl Events {
    /// Numbers `event`, keeps it, and hands it to the attached client (or defers it
    /// when the client's buffer is full).
    fn emit(&mut self, http: Option<u64>, mut event: ServerSseMessage, deferred: &mut Deferred) {
        let index = self.next;
        self.next += 1;
        event.event_id = Some(match http {
            Some(h) => format!("{index}/{h}"),
            None => index.to_string(),
        });
        if self.cache.len() >= CACHE {
            self.cache.pop_front();
        }
        self.cache.push_back(event.clone());
        if let Some(tx) = &self.tx {
            match tx.try_send(event) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(event)) => deferred.push((tx.clone(), event)),
            }
        }
    }

    /// Attaches a new client and replays the kept events from `from` (an index).
    fn attach(
        &mut self,
        from: usize,
        last_event_id: &str,
    ) -> Result<mpsc::Receiver<ServerSseMessage>, LeanSessionError> {
        let front = self.next - self.cache.len();
        if from < front {
            return Err(LeanSessionError::NotKept(last_event_id.to_owned()));
        }
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY.max(self.cache.len() + 1));
        for event in self.cache.iter().skip(from - front) {
            let _ = tx.try_send(event.clone());
        }
        self.tx = Some(tx);
        Ok(rx)
    }
}

struct RequestStream {
    http: u64,
    events: Events,
    /// The request id and progress token routed here while the request is in flight.
    keys: Vec<Key>,
    finished: Option<Instant>,
}

#[derive(Default)]
struct Standalone {
    events: Events,
    shadows: Vec<mpsc::Sender<ServerSseMessage>>,
}

#[expect(clippy::struct_excessive_bools, reason = "independent flags of one session")]
struct State {
    /// Messages to the service loop; `Some` while one runs for this session.
    to_loop: Option<mpsc::UnboundedSender<ClientJsonRpcMessage>>,
    generation: u32,
    init: Option<Box<[u8]>>,
    initialized: bool,
    pinned: bool,
    closed: bool,
    /// The loop rmcp started (generation 0) was parked: rmcp will call
    /// `close_session` once it has ended, which must not end the session.
    first_parked: bool,
    swallow_close: bool,
    last_active: Instant,
    next_http: u64,
    streams: Vec<RequestStream>,
    standalone: Option<Box<Standalone>>,
    /// Live standalone (GET) streams.
    open: u32,
    /// Server-to-client requests awaiting the client's answer.
    pending: Vec<RequestId>,
    init_waiter: Option<(RequestId, oneshot::Sender<ServerJsonRpcMessage>)>,
}

impl State {
    fn new(to_loop: mpsc::UnboundedSender<ClientJsonRpcMessage>) -> Self {
        Self {
            to_loop: Some(to_loop),
            generation: 0,
            init: None,
            initialized: false,
            pinned: false,
            closed: false,
            first_parked: false,
            swallow_close: false,
            last_active: Instant::now(),
            next_http: 0,
            streams: Vec::new(),
            standalone: None,
            open: 0,
            pending: Vec::new(),
            init_waiter: None,
        }
    }

    fn in_flight(&self) -> bool {
        self.streams.iter().any(|s| s.finished.is_none())
    }

    fn busy(&self) -> bool {
        self.open > 0 || self.in_flight()
    }

    /// Stops the service loop if nothing needs it.
    fn maybe_park(&mut self) {
        if self.to_loop.is_none()
            || self.closed
            || !self.initialized
            || self.pinned
            || self.busy()
            || !self.pending.is_empty()
            || self.init_waiter.is_some()
        {
            return;
        }
        self.to_loop = None;
        if self.generation == 0 {
            self.first_parked = true;
        }
    }

    fn close(&mut self) {
        self.closed = true;
        self.to_loop = None;
        self.streams.clear();
        self.standalone = None;
        self.pending.clear();
        self.init_waiter = None;
    }

    fn standalone(&mut self) -> &mut Standalone {
        self.standalone.get_or_insert_with(Box::default)
    }

    /// Forgets finished streams older than `ttl`, and the oldest beyond the bound.
    fn evict(&mut self, ttl: Duration) {
        self.streams
            .retain(|s| s.finished.is_none_or(|at| at.elapsed() < ttl));
        let mut finished = self.streams.iter().filter(|s| s.finished.is_some()).count();
        self.streams.retain(|s| {
            if finished > MAX_FINISHED && s.finished.is_some() {
                finished -= 1;
                false
            } else {
                true
            }
        });
    }

    fn stream_for(&mut self, key: &Key) -> Option<&mut RequestStream> {
        self.streams
            .iter_mut()
            .find(|s| s.finished.is_none() && s.keys.contains(key))
    }

    /// Ends the request stream serving `key` (its response went out, or the client
    /// cancelled the request).
    fn finish(&mut self, key: &Key) {
        if let Some(s) = self.stream_for(key) {
            s.finished = Some(Instant::now());
            s.keys.clear();
            s.events.tx = None;
        }
    }

    /// Routes one message of the service to the stream it belongs on.
    fn route(&mut self, message: ServerJsonRpcMessage, deferred: &mut Deferred) {
        let (key, last) = match &message {
            JsonRpcMessage::Response(r) => (Some(Key::Request(r.id.clone())), true),
            JsonRpcMessage::Error(e) => (e.id.clone().map(Key::Request), true),
            JsonRpcMessage::Request(r) => {
                self.pending.push(r.id.clone());
                let origin = r
                    .request
                    .extensions()
                    .get::<rmcp::service::OriginatingRequestId>()
                    .map(|o| Key::Request(o.0.clone()));
                (origin, false)
            }
            JsonRpcMessage::Notification(n) => match &n.notification {
                ServerNotification::ProgressNotification(p) => {
                    (Some(Key::Progress(p.params.progress_token.clone())), false)
                }
                ServerNotification::CancelledNotification(c) => {
                    (c.params.request_id.clone().map(Key::Request), false)
                }
                _ => (None, false),
            },
        };
        if last && let Some(Key::Request(id)) = &key {
            if self.init_waiter.as_ref().is_some_and(|(w, _)| w == id) {
                if let Some((_, tx)) = self.init_waiter.take() {
                    let _ = tx.send(message);
                }
                return;
            }
            if matches!(id, RequestId::String(s) if &**s == RESUME_ID) {
                return;
            }
        }
        let event = ServerSseMessage::from_message(message);
        if let Some(k) = &key
            && let Some(stream) = self.stream_for(k)
        {
            stream.events.emit(Some(stream.http), event, deferred);
            if last {
                self.finish(k);
                self.maybe_park();
            }
            return;
        }
        self.standalone().events.emit(None, event, deferred);
    }
}

impl LeanSessionManager {
    /// A manager whose sessions are served by handlers from `factory` (called once per
    /// session, and again each time a parked session resumes). Cancelling `shutdown`
    /// ends every loop this manager starts (pass the token given to rmcp's
    /// `StreamableHttpServerConfig`).
    pub fn new<S, F>(factory: F, config: LeanSessionConfig, shutdown: CancellationToken) -> Self
    where
        S: rmcp::ServerHandler,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let spawn: Spawn = Box::new(move |transport, ct| {
            let service = factory();
            tokio::spawn(async move {
                match rmcp::service::serve_server_with_ct::<_, _, _, rmcp::transport::TransportAdapterIdentity>(
                    service, transport, ct,
                )
                .await
                {
                    Ok(running) => {
                        let _ = running.waiting().await;
                    }
                    Err(e) => tracing::debug!(error = %e, "a legacy session could not resume"),
                }
            });
        });
        Self {
            shared: Arc::new(Shared {
                sessions: Mutex::default(),
                config,
                spawn,
                shutdown,
                sweeper: Once::new(),
            }),
        }
    }

    /// Live sessions: (all, resident), where resident ones have a service loop now.
    pub fn counts(&self) -> Option<(usize, usize)> {
        let sessions = self.shared.sessions.try_lock().ok()?;
        let resident = sessions
            .values()
            .filter(|s| s.state.try_lock().is_ok_and(|st| st.to_loop.is_some()))
            .count();
        Some((sessions.len(), resident))
    }

    fn get(&self, id: &SessionId) -> Result<Arc<Session>, LeanSessionError> {
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| LeanSessionError::NotFound(id.clone()))
    }

    /// Starts a service loop for a parked session, replaying its `initialize`.
    fn resume_loop(&self, session: &Arc<Session>, st: &mut State) -> Result<(), LeanSessionError> {
        if st.to_loop.is_some() {
            return Ok(());
        }
        let Some(init) = &st.init else {
            return Err(LeanSessionError::NotInitialized(session.id.clone()));
        };
        let params: InitializeRequestParams = serde_json::from_slice(init)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(ClientJsonRpcMessage::request(
            ClientRequest::InitializeRequest(InitializeRequest::new(params)),
            RequestId::String(RESUME_ID.into()),
        ));
        let _ = tx.send(ClientJsonRpcMessage::notification(
            ClientNotification::InitializedNotification(InitializedNotification::default()),
        ));
        st.generation = st.generation.wrapping_add(1).max(1);
        st.to_loop = Some(tx);
        let transport = LeanTransport {
            session: session.clone(),
            generation: st.generation,
            rx,
            shared: Arc::downgrade(&self.shared),
        };
        (self.shared.spawn)(transport, self.shared.shutdown.child_token());
        Ok(())
    }

    fn start_sweeper(&self) {
        self.shared.sweeper.call_once(|| {
            let shared = Arc::downgrade(&self.shared);
            let shutdown = self.shared.shutdown.clone();
            let every =
                (self.shared.config.idle_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(15));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = shutdown.cancelled() => return,
                    }
                    let Some(shared) = shared.upgrade() else { return };
                    sweep(&shared);
                }
            });
        });
    }
}

/// Ends sessions idle past the timeout and forgets expired replay caches.
fn sweep(shared: &Shared) {
    let (idle, ttl) = (shared.config.idle_timeout, shared.config.resume_ttl);
    let mut sessions = shared.sessions.lock().unwrap_or_else(PoisonError::into_inner);
    sessions.retain(|_, session| {
        let mut st = session.lock();
        st.evict(ttl);
        if !st.busy() && st.last_active.elapsed() >= idle {
            st.close();
            return false;
        }
        if st
            .standalone
            .as_ref()
            .is_some_and(|s| s.events.tx.is_none() && s.shadows.is_empty())
            && st.last_active.elapsed() >= ttl
        {
            st.standalone = None;
        }
        true
    });
}

async fn deliver(deferred: Deferred) {
    for (tx, event) in deferred {
        let _ = tx.send(event).await;
    }
}

fn new_id() -> Result<SessionId, LeanSessionError> {
    let id = mcp_guard_core::hex::random(16).map_err(|e| LeanSessionError::Random(e.to_string()))?;
    Ok(id.into())
}

fn parse_event_id(s: &str) -> Result<(usize, Option<u64>), LeanSessionError> {
    let bad = || LeanSessionError::BadEventId(s.chars().take(64).collect());
    match s.split_once('/') {
        Some((i, h)) => Ok((i.parse().map_err(|_| bad())?, Some(h.parse().map_err(|_| bad())?))),
        None => Ok((s.parse().map_err(|_| bad())?, None)),
    }
}

impl SessionManager for LeanSessionManager {
    type Error = LeanSessionError;
    type Transport = LeanTransport;

    async fn create_session(&self) -> Result<(SessionId, LeanTransport), LeanSessionError> {
        self.start_sweeper();
        let id = new_id()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let session = Arc::new(Session {
            id: id.clone(),
            state: Mutex::new(State::new(tx)),
        });
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), session.clone());
        Ok((
            id,
            LeanTransport {
                session,
                generation: 0,
                rx,
                shared: Arc::downgrade(&self.shared),
            },
        ))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, LeanSessionError> {
        let session = self.get(id)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut st = session.lock();
            let JsonRpcMessage::Request(r) = &message else {
                return Err(LeanSessionError::ExpectedInitialize);
            };
            let ClientRequest::InitializeRequest(init) = &r.request else {
                return Err(LeanSessionError::ExpectedInitialize);
            };
            st.init = Some(serde_json::to_vec(&init.params)?.into_boxed_slice());
            st.init_waiter = Some((r.id.clone(), tx));
            let sent = st.to_loop.as_ref().is_some_and(|l| l.send(message).is_ok());
            if !sent {
                return Err(LeanSessionError::ServiceEnded);
            }
        }
        let timeout = self.shared.config.init_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(LeanSessionError::ServiceEnded),
            Err(_) => {
                if let Some(s) = self.shared.remove(id) {
                    s.lock().close();
                }
                Err(LeanSessionError::InitTimeout(timeout))
            }
        }
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, LeanSessionError> {
        Ok(self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id))
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), LeanSessionError> {
        let Ok(session) = self.get(id) else {
            return Ok(());
        };
        {
            let mut st = session.lock();
            if st.swallow_close {
                // rmcp reporting that the first loop (parked) has ended.
                st.swallow_close = false;
                return Ok(());
            }
            st.close();
        }
        self.shared.remove(id);
        Ok(())
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, LeanSessionError> {
        let session = self.get(id)?;
        let mut st = session.lock_live(id)?;
        let mut keys = Vec::new();
        if let JsonRpcMessage::Request(r) = &message {
            if keeps_state(&r.request) {
                st.pinned = true;
            }
            keys.push(Key::Request(r.id.clone()));
            if let Some(token) = r.request.get_meta().get_progress_token() {
                keys.push(Key::Progress(token));
            }
        }
        self.resume_loop(&session, &mut st)?;
        st.evict(self.shared.config.resume_ttl);
        let http = st.next_http;
        st.next_http += 1;
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let mut stream = RequestStream {
            http,
            events: Events {
                tx: Some(tx),
                ..Events::default()
            },
            keys,
            finished: None,
        };
        if let Some(retry) = self.shared.config.sse_retry {
            let mut none = Vec::new();
            stream
                .events
                .emit(Some(http), ServerSseMessage::priming("", retry), &mut none);
        }
        st.streams.push(stream);
        if st.to_loop.as_ref().is_none_or(|l| l.send(message).is_err()) {
            return Err(LeanSessionError::ServiceEnded);
        }
        drop(st);
        Ok(Tracked { rx, session: None })
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), LeanSessionError> {
        let session = self.get(id)?;
        let mut st = session.lock_live(id)?;
        // What a parked session's service has no use for is not worth resuming it.
        let mut needs_loop = true;
        match &message {
            JsonRpcMessage::Response(r) => {
                st.pending.retain(|p| p != &r.id);
                needs_loop = st.to_loop.is_some();
            }
            JsonRpcMessage::Error(e) => {
                if let Some(id) = &e.id {
                    st.pending.retain(|p| p != id);
                }
                needs_loop = st.to_loop.is_some();
            }
            JsonRpcMessage::Notification(n) => match &n.notification {
                ClientNotification::InitializedNotification(_) => {
                    needs_loop = !st.initialized;
                    st.initialized = true;
                }
                ClientNotification::CancelledNotification(c) => {
                    if let Some(rid) = c.params.request_id.clone() {
                        st.finish(&Key::Request(rid));
                    }
                    needs_loop = st.to_loop.is_some();
                }
                ClientNotification::ProgressNotification(_) => needs_loop = st.to_loop.is_some(),
                _ => {}
            },
            JsonRpcMessage::Request(_) => {}
        }
        if needs_loop {
            self.resume_loop(&session, &mut st)?;
            if let Some(l) = &st.to_loop {
                let _ = l.send(message);
            }
        }
        st.maybe_park();
        Ok(())
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, LeanSessionError> {
        let session = self.get(id)?;
        let mut st = session.lock_live(id)?;
        self.resume_loop(&session, &mut st)?;
        let rx = standalone_receiver(&mut st, 0, "0")?;
        st.open += 1;
        drop(st);
        Ok(Tracked {
            rx,
            session: Some(session),
        })
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, LeanSessionError> {
        let session = self.get(id)?;
        let (index, http) = parse_event_id(&last_event_id)?;
        let mut st = session.lock_live(id)?;
        if let Some(http) = http {
            let stream = st
                .streams
                .iter_mut()
                .find(|s| s.http == http)
                .ok_or_else(|| LeanSessionError::NotKept(last_event_id.clone()))?;
            let rx = stream.events.attach(index + 1, &last_event_id)?;
            if stream.finished.is_some() {
                // Replayed; the stream ends there.
                stream.events.tx = None;
            }
            drop(st);
            return Ok(Tracked { rx, session: None });
        }
        self.resume_loop(&session, &mut st)?;
        let rx = standalone_receiver(&mut st, index + 1, &last_event_id)?;
        st.open += 1;
        drop(st);
        Ok(Tracked {
            rx,
            session: Some(session),
        })
    }
}

/// Requests that leave state in the session's handler (which parking would lose).
#[allow(deprecated, reason = "resources/subscribe is how legacy clients subscribe")]
fn keeps_state(request: &ClientRequest) -> bool {
    matches!(
        request,
        ClientRequest::SetLevelRequest(_) | ClientRequest::SubscribeRequest(_)
    )
}

/// The standalone stream for a new GET: the primary one (replaying kept events from
/// `from`) if none is attached, else a keep-alive-only one.
fn standalone_receiver(
    st: &mut State,
    from: usize,
    last_event_id: &str,
) -> Result<mpsc::Receiver<ServerSseMessage>, LeanSessionError> {
    let standalone = st.standalone();
    if standalone.events.tx.as_ref().is_none_or(mpsc::Sender::is_closed) {
        let from = from.max(standalone.events.next - standalone.events.cache.len());
        return standalone.events.attach(from, last_event_id);
    }
    standalone.shadows.retain(|s| !s.is_closed());
    if standalone.shadows.len() >= MAX_SHADOWS {
        standalone.shadows.remove(0);
    }
    let (tx, rx) = mpsc::channel(1);
    standalone.shadows.push(tx);
    Ok(rx)
}

/// An SSE event stream handed to rmcp; a standalone one keeps its session's loop
/// alive while open.
struct Tracked {
    rx: mpsc::Receiver<ServerSseMessage>,
    session: Option<Arc<Session>>,
}

impl Stream for Tracked {
    type Item = ServerSseMessage;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServerSseMessage>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(session) = &self.session {
            let mut st = session.lock();
            st.open = st.open.saturating_sub(1);
            st.last_active = Instant::now();
            st.maybe_park();
        }
    }
}

/// The transport between one service loop and its session (rmcp's side of a
/// [`LeanSessionManager`] session).
pub struct LeanTransport {
    session: Arc<Session>,
    generation: u32,
    rx: mpsc::UnboundedReceiver<ClientJsonRpcMessage>,
    shared: Weak<Shared>,
}

impl std::fmt::Debug for LeanTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanTransport")
            .field("session", &self.session.id)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Transport<RoleServer> for LeanTransport {
    type Error = LeanSessionError;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), LeanSessionError>> + Send + 'static {
        let mut deferred = Vec::new();
        {
            let mut st = self.session.lock();
            if !st.closed {
                st.route(item, &mut deferred);
            }
        }
        async move {
            deliver(deferred).await;
            Ok(())
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<ClientJsonRpcMessage>> + Send {
        self.rx.recv()
    }

    fn close(&mut self) -> impl Future<Output = Result<(), LeanSessionError>> + Send {
        self.rx.close();
        std::future::ready(Ok(()))
    }
}

impl Drop for LeanTransport {
    fn drop(&mut self) {
        let ended_on_its_own = {
            let mut st = self.session.lock();
            if self.generation == 0 && st.first_parked {
                st.swallow_close = true;
            }
            let current = st.generation == self.generation && st.to_loop.is_some() && !st.closed;
            if current {
                // The loop stopped without being parked (shutdown, a failed
                // handshake): the session ends with it.
                st.close();
            }
            current
        };
        if ended_on_its_own && let Some(shared) = self.shared.upgrade() {
            shared.remove(&self.session.id);
        }
    }
}
