//! Group commit: one writer thread per durable sink batches concurrent records into
//! one write and one sync.
//!
//! Callers serialise their event, put it on a bounded queue (waiting while it is
//! full: backpressure, never a drop) and wait for the writer's answer. The writer
//! takes the first waiting record plus whatever else is already queued (up to
//! `max_batch`), appends them all, syncs once and answers every caller. There is no
//! artificial delay: while one sync runs, the next batch gathers by itself, so the
//! added latency is bounded by one sync and batches grow with the load.
//!
//! A *deferred* record has no caller waiting (a call's outcome, once its start record
//! is durable). It is put in a list beside the queue without waking the writer, and
//! goes out at the front of the writer's next batch: one write and one sync for both,
//! and no wake-up of its own (a caller's next start record usually follows its last
//! outcome closely). When no batch comes within `idle_sync`, the writer writes and
//! syncs the waiting records on its own. Only a writer asleep with nothing to wait for
//! (no call of which it wrote the start) is woken by a deferred record.
//!
//! After each commit (which syncs) the writer publishes the `seq` of the newest record
//! it knows to be durable: the [`DurableHead`] an audit forwarder reads up to. A
//! deferred record is not in the trail before the commit that carries it, so it is
//! never reported durable before its sync.
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use super::{AuditError, AuditEvent, EventKind, Outcome, Phase};

/// The columns a database sink indexes, taken from the event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Index {
    pub(crate) id: String,
    pub(crate) kind: &'static str,
    pub(crate) method: Option<String>,
    pub(crate) time_us: i64,
    pub(crate) principal: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) server: Option<String>,
    pub(crate) tool: Option<String>,
    pub(crate) outcome: Option<&'static str>,
    pub(crate) session: Option<String>,
    pub(crate) request_id: Option<String>,
}

pub(crate) fn micros(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The name an outcome is serialised with (`serde(rename_all = "snake_case")`).
pub(crate) fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::ToolError => "tool_error",
        Outcome::Denied => "denied",
        Outcome::Unauthenticated => "unauthenticated",
        Outcome::RateLimited => "rate_limited",
        Outcome::Timeout => "timeout",
        Outcome::UpstreamTerminated => "upstream_terminated",
        Outcome::UpstreamError => "upstream_error",
        Outcome::Cancelled => "cancelled",
        Outcome::GatewayError => "gateway_error",
        Outcome::AuditFailed => "audit_failed",
    }
}

impl Index {
    pub(crate) fn of(event: &AuditEvent) -> Self {
        let (kind, method) = match &event.kind {
            EventKind::Request { method, .. } => ("request", Some(method.clone())),
            EventKind::SessionCreated => ("session_created", None),
            EventKind::SessionExpired => ("session_expired", None),
            EventKind::SessionRevoked => ("session_revoked", None),
            EventKind::AuthenticationFailed { .. } => ("authentication_failed", None),
            EventKind::ToolDefinitionChanged { .. } => ("tool_definition_changed", None),
            EventKind::ConfigReloaded { .. } => ("config_reloaded", None),
            EventKind::ConfigRefused { .. } => ("config_refused", None),
            EventKind::AuditLog { .. } => ("audit_log", None),
            EventKind::TaintCleared { .. } => ("taint_cleared", None),
            EventKind::ApprovalRequested { .. } => ("approval_requested", None),
            EventKind::ApprovalAnswered { .. } => ("approval_answered", None),
            EventKind::ApprovalRefused { .. } => ("approval_refused", None),
            EventKind::ConsoleAction { action, .. } => ("console_action", Some(action.clone())),
        };
        Self {
            id: event.id.clone(),
            kind,
            method,
            time_us: micros(event.started_at),
            principal: event.principal.as_ref().map(|p| p.id.clone()),
            endpoint: event.endpoint.clone(),
            server: event.target.as_ref().map(|t| t.server.to_string()),
            tool: event.target.as_ref().map(|t| t.name.to_string()),
            outcome: event.outcome.map(outcome_name),
            session: event.session.clone(),
            request_id: event.request_id.clone(),
        }
    }
}

/// One record waiting to be committed.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) event_json: String,
    /// The indexed columns (database sinks only).
    #[cfg_attr(
        not(feature = "sqlite"),
        allow(dead_code, reason = "the SQLite sink's columns")
    )]
    pub(crate) index: Option<Index>,
    /// Which record of a call this is: the writer counts calls whose start it wrote
    /// and whose outcome has not come yet.
    phase: Option<Phase>,
}

impl Job {
    /// The event serialised, for a sink that stores the record only.
    pub(crate) fn of(event: &AuditEvent) -> Result<Self, AuditError> {
        Ok(Self {
            event_json: serde_json::to_string(event).map_err(|e| AuditError::Unavailable(Box::new(e)))?,
            index: None,
            phase: event.phase,
        })
    }

    /// The event serialised, with the columns a database sink indexes.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code, reason = "the SQLite sink's"))]
    pub(crate) fn indexed(event: &AuditEvent) -> Result<Self, AuditError> {
        let mut job = Self::of(event)?;
        job.index = Some(Index::of(event));
        Ok(job)
    }
}

/// A failure shared by every record of a batch (io errors are not `Clone`).
#[derive(Debug, Clone)]
pub(crate) struct BatchError {
    pub(crate) kind: io::ErrorKind,
    pub(crate) message: String,
}

impl BatchError {
    pub(crate) fn new(message: impl Into<String>, e: &dyn std::fmt::Display, kind: io::ErrorKind) -> Self {
        Self {
            kind,
            message: format!("{}: {e}", message.into()),
        }
    }

    fn into_audit(self) -> AuditError {
        AuditError::Io(io::Error::new(self.kind, self.message))
    }
}

/// How long deferred records wait in a durable sink's writer for a record that syncs
/// anyway, before the writer writes and syncs them on its own.
pub const DEFAULT_IDLE_SYNC: Duration = Duration::from_millis(100);

/// The storage behind a writer thread.
pub(crate) trait Backend: Send + 'static {
    /// Appends every job, in order, and makes them (and everything written before)
    /// durable before returning `Ok`. On `Err` nothing of the batch may count as
    /// recorded, and the backend must be ready for the next batch (or refuse every
    /// later one).
    fn commit(&mut self, batch: &[Job]) -> Result<(), BatchError>;

    /// The `seq` of the last record of the chain as this backend last saw it (its
    /// own records and those other writers appended before its last batch); 0 for
    /// an empty chain.
    fn last_seq(&self) -> u64;

    /// Reads what other writers appended since this backend's last batch and makes
    /// it durable, so that [`Self::last_seq`] covers it. The default commits an empty
    /// batch (which reads the chain's newest record and syncs).
    fn catch_up(&mut self) -> Result<(), BatchError> {
        self.commit(&[])
    }
}

type Ack = oneshot::Sender<Result<(), BatchError>>;

enum Msg {
    /// A record its caller waits for.
    Record(Box<Job>, Ack),
    /// Commit everything queued and deferred so far.
    Flush(Ack),
    /// Deferred records wait and the writer had nothing to wait for (or many wait).
    Wake,
    /// Read other writers' records and sync them (a forwarder saw records past the
    /// durable head).
    CatchUp(Ack),
}

/// Deferred records, shared by the callers and the writer thread.
#[derive(Default)]
struct Deferred {
    jobs: Vec<Job>,
    /// The writer sleeps without a deadline: the next deferred record wakes it.
    asleep: bool,
}

type SharedDeferred = Arc<Mutex<Deferred>>;

fn lock(d: &Mutex<Deferred>) -> std::sync::MutexGuard<'_, Deferred> {
    d.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The callers' end of a writer thread.
pub(crate) struct GroupCommit {
    tx: mpsc::Sender<Msg>,
    deferred: SharedDeferred,
    max_batch: usize,
    durable: watch::Receiver<u64>,
    thread: Option<JoinHandle<()>>,
}

/// The newest record of a durable sink's chain that is known to be durable: its
/// `seq`, which grows as the sink's writer syncs. An audit forwarder reads the trail up
/// to it and no further, so a receiver never gets a record that a power loss could
/// still take from the local trail (and that the chain would then reuse).
///
/// Holding one does not keep the sink's writer alive.
#[derive(Clone)]
pub struct DurableHead {
    seq: watch::Receiver<u64>,
    writer: mpsc::WeakSender<Msg>,
}

impl std::fmt::Debug for DurableHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableHead")
            .field("seq", &*self.seq.borrow())
            .finish_non_exhaustive()
    }
}

impl DurableHead {
    /// The `seq` of the newest durable record (0: none yet).
    pub fn current(&self) -> u64 {
        *self.seq.borrow()
    }

    /// Waits until the durable head is past `seq`; `false` once the sink has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_past(&mut self, seq: u64) -> bool {
        self.seq.wait_for(|v| *v > seq).await.is_ok()
    }

    /// Asks the writer to take in records other processes appended to the trail and
    /// sync them, then waits for it; the head then covers them.
    ///
    /// # Errors
    /// The sink has stopped, or the read or sync failed.
    pub async fn catch_up(&self) -> Result<(), AuditError> {
        let tx = self.writer.upgrade().ok_or_else(GroupCommit::stopped)?;
        let (ack, done) = oneshot::channel();
        tx.send(Msg::CatchUp(ack))
            .await
            .map_err(|_| GroupCommit::stopped())?;
        drop(tx);
        match done.await {
            Ok(r) => r.map_err(BatchError::into_audit),
            Err(_) => Err(GroupCommit::stopped()),
        }
    }
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .finish_non_exhaustive()
    }
}

/// What the writer thread does between messages.
struct Writer<B> {
    backend: B,
    max_batch: usize,
    idle_sync: Duration,
    deferred: SharedDeferred,
    /// Calls whose start record this writer committed and whose outcome record it has
    /// not seen yet (an estimate: an outcome may never come). While there are any, the
    /// writer waits with a deadline, so that their outcomes need not wake it.
    open: usize,
    /// Where the newest durable record's seq is published.
    durable: watch::Sender<u64>,
}

impl<B: Backend> Writer<B> {
    /// Publishes the backend's last seq as durable (call after a sync).
    fn publish(&self) {
        let seq = self.backend.last_seq();
        self.durable.send_if_modified(|v| {
            let moved = *v != seq;
            *v = seq;
            moved
        });
    }

    fn run(mut self, rt: &tokio::runtime::Runtime, rx: &mut mpsc::Receiver<Msg>) {
        let mut batch = Batch {
            jobs: Vec::with_capacity(self.max_batch),
            acks: Vec::with_capacity(self.max_batch),
            catch_ups: Vec::new(),
            deferred: 0,
        };
        loop {
            let timed = self.open > 0 || {
                let mut d = lock(&self.deferred);
                d.asleep = d.jobs.is_empty();
                !d.asleep
            };
            let first = if timed {
                let idle = self.idle_sync;
                let Ok(m) = rt.block_on(async { tokio::time::timeout(idle, rx.recv()).await }) else {
                    // Nothing came to share a sync with: write what waits.
                    self.take_deferred(&mut batch);
                    if batch.jobs.is_empty() {
                        self.open = 0;
                    } else {
                        self.commit(&mut batch);
                    }
                    continue;
                };
                m
            } else {
                rt.block_on(rx.recv())
            };
            let Some(first) = first else { break };
            // Deferred records first: they were queued before anything that comes now.
            self.take_deferred(&mut batch);
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Record(job, ack) => {
                        batch.jobs.push(*job);
                        batch.acks.push(ack);
                    }
                    Msg::Flush(ack) => batch.acks.push(ack),
                    Msg::Wake => {}
                    Msg::CatchUp(ack) => batch.catch_ups.push(ack),
                }
                if batch.jobs.len() < self.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(&mut batch);
        }
        loop {
            self.take_deferred(&mut batch);
            if batch.jobs.is_empty() {
                break;
            }
            self.commit(&mut batch);
        }
    }

    /// Moves waiting deferred records (at most a batch's worth) into `batch`.
    fn take_deferred(&self, batch: &mut Batch) {
        let mut d = lock(&self.deferred);
        d.asleep = false;
        let room = self.max_batch.saturating_sub(batch.jobs.len()).max(1);
        let n = d.jobs.len().min(room);
        if n == d.jobs.len() {
            batch.jobs.append(&mut d.jobs);
        } else {
            batch.jobs.extend(d.jobs.drain(..n));
        }
        batch.deferred += n;
    }

    /// Commits the batch (if it holds records), catches up with other writers if a
    /// forwarder asked, publishes the durable head and answers the callers.
    fn commit(&mut self, batch: &mut Batch) {
        let mut result = if batch.jobs.is_empty() {
            Ok(())
        } else {
            self.backend.commit(&batch.jobs)
        };
        let caught_up = !batch.catch_ups.is_empty() && result.is_ok();
        if caught_up {
            result = self.backend.catch_up();
        }
        if result.is_ok() && (caught_up || !batch.jobs.is_empty()) {
            // Every commit syncs: what the backend has now is durable.
            self.publish();
        }
        if result.is_ok() {
            for job in &batch.jobs {
                match job.phase {
                    Some(Phase::Started) => self.open += 1,
                    Some(Phase::Finished) => self.open = self.open.saturating_sub(1),
                    None => {}
                }
            }
        }
        log_lost(&result, batch.deferred);
        for ack in batch.acks.drain(..).chain(batch.catch_ups.drain(..)) {
            let _ = ack.send(result.clone());
        }
        batch.jobs.clear();
        batch.deferred = 0;
    }
}

/// The records of one commit and the callers waiting for it.
struct Batch {
    jobs: Vec<Job>,
    acks: Vec<Ack>,
    /// Forwarders waiting for a catch-up with other writers.
    catch_ups: Vec<Ack>,
    /// How many of `jobs` are deferred (nobody hears if they are lost).
    deferred: usize,
}

/// Logs deferred records lost with a failed batch (nobody else hears of it).
fn log_lost(result: &Result<(), BatchError>, deferred: usize) {
    if deferred > 0
        && let Err(e) = result
    {
        tracing::error!(
            records = deferred,
            error = %e.message,
            "deferred audit records could not be written (a call whose outcome record is among them shows as started without an outcome)"
        );
    }
}

impl GroupCommit {
    pub(crate) fn spawn<B: Backend>(
        name: &str,
        backend: B,
        queue: usize,
        max_batch: usize,
        idle_sync: Duration,
    ) -> Result<Self, AuditError> {
        let (tx, mut rx) = mpsc::channel::<Msg>(queue.max(1));
        let deferred = SharedDeferred::default();
        let max_batch = max_batch.max(1);
        // What the backend read at open is on disk (the sinks sync it when they open).
        let (durable, durable_rx) = watch::channel(backend.last_seq());
        let writer = Writer {
            backend,
            max_batch,
            idle_sync,
            deferred: deferred.clone(),
            open: 0,
            durable,
        };
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // A runtime of its own, for the deadline on the queue.
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => writer.run(&rt, &mut rx),
                    Err(e) => tracing::error!(error = %e, "cannot start the audit writer"),
                }
            })
            .map_err(AuditError::Io)?;
        Ok(Self {
            tx,
            deferred,
            max_batch,
            durable: durable_rx,
            thread: Some(thread),
        })
    }

    /// The durable head of this writer's chain.
    pub(crate) fn durable(&self) -> DurableHead {
        DurableHead {
            seq: self.durable.clone(),
            writer: self.tx.downgrade(),
        }
    }

    fn stopped() -> AuditError {
        AuditError::Unavailable("audit writer has stopped".into())
    }

    /// Queues `job` and waits until it is durable.
    pub(crate) async fn submit(&self, job: Job) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Record(Box::new(job), ack))
            .await
            .map_err(|_| Self::stopped())?;
        match done.await {
            Ok(r) => r.map_err(BatchError::into_audit),
            Err(_) => Err(Self::stopped()),
        }
    }

    /// Puts `job` on the deferred list and returns: it goes out with the writer's next
    /// batch, or on its own within `idle_sync`. Waits only when a batch's worth is
    /// waiting and the queue is full (backpressure).
    pub(crate) async fn submit_deferred(&self, job: Job) -> Result<(), AuditError> {
        if self.tx.is_closed() {
            return Err(Self::stopped());
        }
        let wake = {
            let mut d = lock(&self.deferred);
            d.jobs.push(job);
            std::mem::take(&mut d.asleep) || d.jobs.len().is_multiple_of(self.max_batch)
        };
        if wake {
            self.tx.send(Msg::Wake).await.map_err(|_| Self::stopped())?;
        }
        Ok(())
    }

    /// Waits until everything queued or deferred before this call is committed and
    /// synced.
    pub(crate) async fn flush(&self) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Msg::Flush(ack)).await.map_err(|_| Self::stopped())?;
        match done.await {
            Ok(r) => r.map_err(BatchError::into_audit),
            Err(_) => Err(Self::stopped()),
        }
    }

    /// Closes the queue and waits for the writer thread to finish (and sync) what is
    /// queued.
    pub(crate) fn close(self) {
        let Self { tx, thread, .. } = self;
        drop(tx);
        if let Some(h) = thread {
            let _ = h.join();
        }
    }
}
