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
//! A *deferred* record has no caller waiting. It waits in the writer for up to a
//! millisecond for a record that does need a sync, and goes out in that record's
//! batch (one write, one sync): a caller's next start record usually follows its last
//! outcome that closely. Otherwise it is written without a sync, and the next batch
//! that syncs covers it (one `fdatasync` or WAL sync makes everything written before
//! it durable); when nothing comes, the writer syncs on its own after `idle_sync`.

use std::io;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use super::{AuditError, AuditEvent, EventKind};

/// The columns a database sink indexes, taken from the event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Index {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) method: Option<String>,
    pub(crate) time_us: i64,
    pub(crate) principal: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) server: Option<String>,
    pub(crate) tool: Option<String>,
    pub(crate) outcome: Option<String>,
    pub(crate) session: Option<String>,
    pub(crate) request_id: Option<String>,
}

pub(crate) fn micros(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
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
            kind: kind.to_owned(),
            method,
            time_us: micros(event.started_at),
            principal: event.principal.as_ref().map(|p| p.id.clone()),
            endpoint: event.endpoint.clone(),
            server: event.target.as_ref().map(|t| t.server.to_string()),
            tool: event.target.as_ref().map(|t| t.name.to_string()),
            outcome: event
                .outcome
                .and_then(|o| serde_json::to_value(o).ok())
                .and_then(|v| v.as_str().map(str::to_owned)),
            session: event.session.clone(),
            request_id: event.request_id.clone(),
        }
    }
}

/// One record waiting to be committed.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) event_json: String,
    #[cfg_attr(
        not(feature = "sqlite"),
        allow(dead_code, reason = "the SQLite sink's columns")
    )]
    pub(crate) index: Index,
}

impl Job {
    pub(crate) fn of(event: &AuditEvent) -> Result<Self, AuditError> {
        Ok(Self {
            event_json: serde_json::to_string(event).map_err(|e| AuditError::Unavailable(Box::new(e)))?,
            index: Index::of(event),
        })
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

/// How long a durable sink's writer waits, after writing deferred records, for a
/// record that syncs anyway before it syncs them by itself.
pub const DEFAULT_IDLE_SYNC: Duration = Duration::from_millis(100);

/// How long deferred records wait in the writer for a record that syncs, so that both
/// go out in one write (a caller's next start record follows its last outcome).
const LINGER: Duration = Duration::from_millis(1);

/// The storage behind a writer thread.
pub(crate) trait Backend: Send + 'static {
    /// Appends every job, in order. With `sync`, makes them (and everything written
    /// before) durable before returning `Ok`; without, only writes them where a crash
    /// of this process cannot lose them. On `Err` nothing of the batch may count as
    /// recorded, and the backend must be ready for the next batch (or refuse every
    /// later one).
    fn commit(&mut self, batch: &[Job], sync: bool) -> Result<(), BatchError>;

    /// Makes everything written so far durable.
    fn sync(&mut self) -> Result<(), BatchError>;

    /// The `seq` of the last record of the chain as this backend last saw it (its
    /// own records and those other writers appended before its last batch); 0 for
    /// an empty chain.
    fn last_seq(&self) -> u64;

    /// Reads what other writers appended since this backend's last batch and makes
    /// it durable, so that [`Self::last_seq`] covers it. The default commits an empty
    /// batch with a sync, then syncs.
    fn catch_up(&mut self) -> Result<(), BatchError> {
        self.commit(&[], true)?;
        self.sync()
    }
}

type Ack = oneshot::Sender<Result<(), BatchError>>;

enum Msg {
    /// A record; `None`: deferred (nobody waits for it).
    Record(Box<Job>, Option<Ack>),
    Flush(Ack),
    /// Read other writers' records and sync them (a forwarder saw records past the
    /// durable head).
    CatchUp(Ack),
}

/// The callers' end of a writer thread.
pub(crate) struct GroupCommit {
    tx: mpsc::Sender<Msg>,
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
    /// Deferred records written and not yet synced.
    unsynced: bool,
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
        // Jobs taken from the queue and not committed yet: deferred ones wait here (at
        // most `LINGER`) for a record that syncs, so that both share one write.
        let mut jobs = Vec::with_capacity(self.max_batch);
        let mut deferred = 0usize;
        let mut acks: Vec<Ack> = Vec::with_capacity(self.max_batch);
        let mut flushes: Vec<Ack> = Vec::new();
        let mut catch_ups: Vec<Ack> = Vec::new();
        let mut held_since: Option<Instant> = None;
        let mut written_at = Instant::now();
        loop {
            let deadline = match held_since {
                Some(t) => Some(t + LINGER),
                None => self.unsynced.then(|| written_at + self.idle_sync),
            };
            let first = match deadline {
                Some(d) => {
                    let d = tokio::time::Instant::from_std(d);
                    let Ok(m) = rt.block_on(async { tokio::time::timeout_at(d, rx.recv()).await }) else {
                        if held_since.take().is_some() {
                            // Nothing came to share a sync: write them now, sync later.
                            let result = self.backend.commit(&jobs, false);
                            log_lost(&result, deferred);
                            if result.is_ok() {
                                self.unsynced = true;
                                written_at = Instant::now();
                            }
                            jobs.clear();
                            deferred = 0;
                        } else {
                            self.sync_deferred();
                        }
                        continue;
                    };
                    m
                }
                None => rt.block_on(rx.recv()),
            };
            let Some(first) = first else { break };
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Record(job, ack) => {
                        jobs.push(*job);
                        match ack {
                            Some(a) => acks.push(a),
                            None => deferred += 1,
                        }
                    }
                    Msg::Flush(ack) => flushes.push(ack),
                    Msg::CatchUp(ack) => catch_ups.push(ack),
                }
                if jobs.len() < self.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            let sync = !acks.is_empty() || !flushes.is_empty() || !catch_ups.is_empty();
            if !sync && jobs.len() < self.max_batch {
                held_since.get_or_insert_with(Instant::now);
                continue;
            }
            held_since = None;
            let mut result = if !jobs.is_empty() {
                let r = self.backend.commit(&jobs, sync);
                if r.is_ok() {
                    self.unsynced = !sync;
                    written_at = Instant::now();
                }
                r
            } else if self.unsynced {
                let r = self.backend.sync();
                if r.is_ok() {
                    self.unsynced = false;
                }
                r
            } else {
                Ok(())
            };
            if !catch_ups.is_empty() && result.is_ok() {
                result = self.backend.catch_up();
            }
            if sync && result.is_ok() {
                self.publish();
            }
            log_lost(&result, deferred);
            for ack in acks.drain(..).chain(flushes.drain(..)).chain(catch_ups.drain(..)) {
                let _ = ack.send(result.clone());
            }
            jobs.clear();
            deferred = 0;
        }
        if !jobs.is_empty() {
            let result = self.backend.commit(&jobs, true);
            log_lost(&result, deferred);
            if result.is_ok() {
                self.unsynced = false;
                self.publish();
            }
        }
        if self.unsynced {
            self.sync_deferred();
        }
    }

    fn sync_deferred(&mut self) {
        match self.backend.sync() {
            Ok(()) => {
                self.unsynced = false;
                self.publish();
            }
            Err(e) => {
                // Try again at the next batch or idle period.
                tracing::error!(error = %e.message, "cannot sync deferred audit records");
            }
        }
    }
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
        // What the backend read at open is on disk (the sinks sync it when they open).
        let (durable, durable_rx) = watch::channel(backend.last_seq());
        let writer = Writer {
            backend,
            max_batch: max_batch.max(1),
            idle_sync,
            unsynced: false,
            durable,
        };
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // A runtime of its own, for the idle-sync timeout on the queue.
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
            .send(Msg::Record(Box::new(job), Some(ack)))
            .await
            .map_err(|_| Self::stopped())?;
        match done.await {
            Ok(r) => r.map_err(BatchError::into_audit),
            Err(_) => Err(Self::stopped()),
        }
    }

    /// Queues `job` (waiting only while the queue is full) and returns: the writer
    /// writes it and the next sync makes it durable.
    pub(crate) async fn submit_deferred(&self, job: Job) -> Result<(), AuditError> {
        self.tx
            .send(Msg::Record(Box::new(job), None))
            .await
            .map_err(|_| Self::stopped())
    }

    /// Waits until everything queued before this call is committed and synced.
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
