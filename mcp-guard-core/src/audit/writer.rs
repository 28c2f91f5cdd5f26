//! Group commit: one writer thread per durable sink batches concurrent records into
//! one write and one sync.
//!
//! Callers serialise their event, put it on a bounded queue (waiting while it is
//! full: backpressure, never a drop) and wait for the writer's answer. The writer
//! takes the first waiting record plus whatever else is already queued (up to
//! `max_batch`), appends them all, syncs once and answers every caller. There is no
//! artificial delay: while one sync runs, the next batch gathers by itself, so the
//! added latency is bounded by one sync and batches grow with the load.

use std::io;
use std::thread::JoinHandle;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

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

/// The storage behind a writer thread.
pub(crate) trait Backend: Send + 'static {
    /// Appends every job, in order, and makes them durable before returning `Ok`.
    /// On `Err` nothing of the batch may count as recorded, and the backend must be
    /// ready for the next batch (or refuse every later one).
    fn commit(&mut self, batch: &[Job]) -> Result<(), BatchError>;
}

enum Msg {
    Record(Box<Job>, oneshot::Sender<Result<(), BatchError>>),
    Flush(oneshot::Sender<()>),
}

/// The callers' end of a writer thread.
pub(crate) struct GroupCommit {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    pub(crate) fn spawn<B: Backend>(
        name: &str,
        mut backend: B,
        queue: usize,
        max_batch: usize,
    ) -> Result<Self, AuditError> {
        let (tx, mut rx) = mpsc::channel::<Msg>(queue.max(1));
        let max_batch = max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut jobs = Vec::with_capacity(max_batch);
                let mut acks = Vec::with_capacity(max_batch);
                let mut flushes = Vec::new();
                while let Some(first) = rx.blocking_recv() {
                    let mut next = Some(first);
                    while let Some(msg) = next.take() {
                        match msg {
                            Msg::Record(job, ack) => {
                                jobs.push(*job);
                                acks.push(ack);
                            }
                            Msg::Flush(ack) => flushes.push(ack),
                        }
                        if jobs.len() < max_batch {
                            next = rx.try_recv().ok();
                        }
                    }
                    if !jobs.is_empty() {
                        let result = backend.commit(&jobs);
                        for ack in acks.drain(..) {
                            let _ = ack.send(result.clone());
                        }
                        jobs.clear();
                    }
                    for f in flushes.drain(..) {
                        let _ = f.send(());
                    }
                }
            })
            .map_err(AuditError::Io)?;
        Ok(Self {
            tx,
            thread: Some(thread),
        })
    }

    /// Queues `job` and waits until it is durable.
    pub(crate) async fn submit(&self, job: Job) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Record(Box::new(job), ack))
            .await
            .map_err(|_| AuditError::Unavailable("audit writer has stopped".into()))?;
        match done.await {
            Ok(r) => r.map_err(BatchError::into_audit),
            Err(_) => Err(AuditError::Unavailable("audit writer has stopped".into())),
        }
    }

    /// Waits until everything queued before this call is committed.
    pub(crate) async fn flush(&self) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Flush(ack))
            .await
            .map_err(|_| AuditError::Unavailable("audit writer has stopped".into()))?;
        done.await
            .map_err(|_| AuditError::Unavailable("audit writer has stopped".into()))
    }

    /// Closes the queue and waits for the writer thread to finish what is queued.
    pub(crate) fn close(self) {
        let Self { tx, thread } = self;
        drop(tx);
        if let Some(h) = thread {
            let _ = h.join();
        }
    }
}
