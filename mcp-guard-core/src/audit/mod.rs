//! What happened: [`AuditEvent`], the [`AuditSink`] trait and reference sinks.
//!
//! Payloads inside an event are [`Redacted`]: a sink never receives an original
//! argument or result.
//!
//! # Sinks
//!
//! - [`JsonLinesAuditSink`]: durable, hash-chained JSON Lines files with rotation,
//!   retention and crash recovery.
//! - `SqliteAuditSink` (feature `sqlite`): durable, hash-chained rows in a SQLite
//!   database (WAL, `synchronous = FULL`) with indexed columns for queries.
//! - [`TracingAuditSink`]: one `tracing` event per record; not durable.
//! - [`MemoryAuditSink`]: for tests; [`FanOut`]: several sinks at once.
//!
//! # The hash chain
//!
//! Both durable sinks store each event as the same sealed record, one line of JSON:
//! `{"seq":N,"prev":"<hash of record N-1>","event":{..},"hash":"..","mac":".."}`.
//! `hash` is SHA-256 over the record's stored bytes up to `,"hash":` (so it covers
//! `seq`, `prev` and the event); `mac`, present when a key is configured
//! ([`MacKey`]), is HMAC-SHA256 with that key over the same bytes. [`verify_paths`]
//! (and `verify_database`) walk the chain and name every record that was modified,
//! deleted, inserted or reordered. Without a key the chain proves integrity against
//! accidents and careless edits; an attacker who can rewrite the whole file can also
//! recompute every hash, which the MAC (key kept outside the log) prevents.
//!
//! # Durability and group commit
//!
//! A durable sink's `record` returns only after the record is on disk (`fdatasync`
//! for files, a `synchronous = FULL` WAL commit for SQLite). One writer thread per
//! sink takes every record queued while the previous sync ran and commits them with
//! one write and one sync, so throughput grows with concurrency while each caller
//! still waits for its own record. The queue is bounded: when it is full, callers
//! wait (backpressure), and no record is ever dropped.
//!
//! [`AuditSink::record_deferred`] hands a record to the writer without waiting and
//! without waking it: the writer puts it at the front of its next batch (the next
//! awaited record, anyone's, or a [`flush`](AuditSink::flush)), or writes and syncs
//! it on its own after a short idle delay ([`DEFAULT_IDLE_SYNC`]).
//!
//! # Calls: a start record before, the outcome after
//!
//! A call that reaches an upstream is recorded twice, both records with the same `id`:
//! a *start* record (`"phase":"started"`: who, what, target, redacted arguments),
//! durable before the call is forwarded, and an *outcome* record
//! (`"phase":"finished"`: the whole record, result and outcome included), written
//! with [`record_deferred`](AuditSink::record_deferred). A start record without an
//! outcome record is a call whose outcome was lost (the gateway crashed, or the disk
//! filled) or that is still running; [`verify_paths`] and `verify_database` list them
//! ([`VerifyReport::incomplete`]). Requests that reach no upstream (lists, refusals)
//! keep one record without a `phase`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use mcp_guard_core::audit::{EventKind, JsonLinesAuditSink, JsonLinesOptions, verify_paths};
//! use mcp_guard_core::{AuditEvent, AuditSink, FanOut, TracingAuditSink};
//! let dir = tempfile::tempdir()?;
//! let files = Arc::new(JsonLinesAuditSink::open(dir.path(), JsonLinesOptions::default())?);
//! let sink = FanOut::new(vec![files, Arc::new(TracingAuditSink::default())]);
//! sink.record(&AuditEvent::new(EventKind::ConfigReloaded { digest: String::new(), changes: String::new() })).await?;
//! assert!(verify_paths(&[dir.path().to_owned()], None)?.is_intact());
//! # Ok(()) }
//! ```

mod chain;
pub mod forward;
mod jsonl;
mod memory;
#[cfg(feature = "sqlite")]
mod sqlite;
mod trace;
mod verify;
mod writer;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::Serialize;

use crate::BoxError;
use crate::call::{Action, PrincipalKind, Target};
use crate::redact::Redacted;

pub use chain::{GENESIS, MIN_KEY_BYTES, MacKey};
pub use jsonl::{JsonLinesAuditSink, JsonLinesOptions};
pub use memory::MemoryAuditSink;
#[cfg(feature = "sqlite")]
pub use sqlite::{AuditQuery, QueryRow, SqliteAuditSink, SqliteOptions, query_database, verify_database};
pub use trace::TracingAuditSink;
pub use verify::{Finding, VerifyReport, verify_paths};
pub use writer::{DEFAULT_IDLE_SYNC, DurableHead};

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The upstream answered with a result.
    Ok,
    /// The upstream answered with a tool error (`isError: true`).
    ToolError,
    /// Policy refused (or the name was unknown).
    Denied,
    /// The caller was not authenticated.
    Unauthenticated,
    /// A rate limit refused the call.
    RateLimited,
    /// The call timed out.
    Timeout,
    /// The upstream went away before answering.
    UpstreamTerminated,
    /// The upstream answered with a JSON-RPC error.
    UpstreamError,
    /// The caller cancelled.
    Cancelled,
    /// The gateway itself failed.
    GatewayError,
    /// Refused because the call's start record could not be written: the call reached
    /// no upstream.
    AuditFailed,
}

/// Which record of a call this is; see [the module docs](self#calls-a-start-record-before-the-outcome-after).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Written, and durable, before the call went to an upstream; no outcome yet.
    Started,
    /// The outcome of a call whose start record was written.
    Finished,
}

/// What kind of event a record is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum EventKind {
    /// A request from a client (a call or a list).
    Request {
        /// The JSON-RPC method.
        method: String,
        /// Call or list.
        action: Action,
    },
    /// A gateway session was created.
    SessionCreated,
    /// A gateway session expired.
    SessionExpired,
    /// A gateway session was revoked.
    SessionRevoked,
    /// A client failed to authenticate. The HTTP edge writes one such record per
    /// source address and interval (`started_at`..`ended_at`), with how many refusals
    /// it stands for.
    AuthenticationFailed {
        /// Why (never the presented credential); for several refusals, each distinct
        /// reason with its count.
        reason: String,
        /// Where the requests came from: an IPv4 address, an IPv6 /64, `unknown` (no
        /// peer address), or `other` (more sources than are tracked at once).
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        /// How many refused requests the record stands for (absent: one).
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// An upstream's tool definitions changed.
    ToolDefinitionChanged {
        /// A readable diff.
        diff: String,
    },
    /// A new configuration was applied while the gateway ran.
    ConfigReloaded {
        /// SHA-256 of the configuration file, hex (empty for one built in code).
        digest: String,
        /// What changed (`grants: 2 changed; endpoints.team: tools +1 -0; servers:
        /// +memory -files`), and the settings kept until a restart.
        changes: String,
    },
    /// A new configuration was refused; the running one stays.
    ConfigRefused {
        /// SHA-256 of the refused file, hex (empty when it could not be read).
        digest: String,
        /// Why, as `mcp-guard check` says it (`gateway.toml:12: grants[0]...`).
        reason: String,
    },
    /// A call needs a person's approval, and the gateway asked (the record carries
    /// the call's principal, session, target and redacted arguments).
    ApprovalRequested {
        /// The approval's id (also in the approval page's link).
        approval: String,
        /// How the person is asked: `elicitation` (a request to a client of a revision
        /// before 2026-07-28), `input-required` (a 2026-07-28 client's retry carries
        /// the answer), `web` (the approval page).
        channel: String,
        /// Why the call needs approval (the rule's reason).
        reason: String,
        /// When an answer stops being accepted.
        expires_at: String,
    },
    /// How an approval ended: `approved-once`, `approved-for-session`, `declined`,
    /// `timed-out` (no answer in time), `failed` (the client did not put the question
    /// to a person) or `cancelled` (the call went away first).
    ApprovalAnswered {
        /// The approval's id.
        approval: String,
        /// The answer.
        answer: String,
        /// Where it came from (as in `approval_requested`).
        channel: String,
        /// Who answered: the principal signed in on the approval page, or the
        /// principal whose client answered.
        #[serde(skip_serializing_if = "Option::is_none")]
        approver: Option<String>,
    },
    /// An answer or a request the gateway refused: an approval answered twice, by the
    /// wrong user, after its timeout, or for another call; or one approval too many
    /// waiting.
    ApprovalRefused {
        /// The approval concerned, when there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        approval: Option<String>,
        /// Why.
        reason: String,
        /// Who tried, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// An operator cleared a session's flow taint (`sessions clear-taint`).
    TaintCleared {
        /// The labels cleared.
        labels: String,
    },
    /// An operator's action in the console (a setting changed, a tool approved, a
    /// session revoked), or one refused. The operator is the record's `principal`; its
    /// `outcome` is `ok` when the action was done and `denied` when it was refused (a
    /// read-only role, a form without its CSRF token, a stale or invalid change).
    ConsoleAction {
        /// What was asked: `toggle_tool`, `approve_tool`, `reject_tool`,
        /// `revoke_session`, `test_connection`, `apply_config`, or `open` (a page
        /// refused to someone without a console role).
        action: String,
        /// On what, and the result or the reason for the refusal.
        detail: String,
    },
    /// The audit trail itself: recovered after a crash, or rotated to a new file.
    AuditLog {
        /// `recovered` or `rotated`.
        action: String,
        /// What was done (file names, byte counts; never record content).
        detail: String,
    },
}

/// The principal as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditPrincipal {
    /// Principal id.
    pub id: String,
    /// User or agent.
    pub kind: PrincipalKind,
    /// The user an agent acted for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// The roles the principal held when policy decided (request records; absent in
    /// records of other events and in records written before roles were recorded).
    /// `mcp-guard check --against-audit` replays a decision with them when the new
    /// configuration does not define the principal (a JWT or an issued token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// The principal's attributes when policy decided (request records, with `roles`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl AuditPrincipal {
    /// A recorded principal.
    pub fn new(id: impl Into<String>, kind: PrincipalKind) -> Self {
        Self {
            id: id.into(),
            kind,
            on_behalf_of: None,
            roles: None,
            attributes: std::collections::BTreeMap::new(),
        }
    }
}

/// One audit record.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// Unique id of the event; the start and outcome records of one call share it.
    pub id: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// For a call recorded in two records: which one this is. `None`: the event is
    /// complete in this one record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// When it started.
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    /// When it ended.
    #[serde(with = "rfc3339")]
    pub ended_at: SystemTime,
    /// Gateway session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Who.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<AuditPrincipal>,
    /// Through which endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// What it targeted, with the upstream's own name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The name the client used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_name: Option<String>,
    /// Downstream request id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Protocol revision of the downstream request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// Client name/version as reported (untrusted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The rule that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// How it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Wall time in microseconds.
    pub latency_us: u64,
    /// Size of the request payload in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_bytes: Option<usize>,
    /// Size of the response payload in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<usize>,
    /// Redacted arguments (size-capped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Redacted<serde_json::Value>>,
    /// Redacted result or error (size-capped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Redacted<serde_json::Value>>,
    /// Whether `arguments` or `result` were truncated.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// W3C trace id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// What the gateway noticed about the content (invisible characters stripped,
    /// suspected injection).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    /// What flow rules made of the call: its labels, the taint it set, or the earlier
    /// calls whose taint refused it or sent it for approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowRecord>,
}

/// The flow-rule part of a call's record (see [`crate::flow`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FlowRecord {
    /// The call's labels, with `untrusted-input` added for a result flagged as a
    /// suspected injection.
    #[serde(skip_serializing_if = "crate::flow::no_labels")]
    pub labels: crate::flow::Labels,
    /// The labels this call added to its session's taint.
    #[serde(skip_serializing_if = "crate::flow::no_labels")]
    pub tainted: crate::flow::Labels,
    /// The flow rule that refused the call or sent it for approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For a call a flow rule refused or sent for approval: the earlier calls that set
    /// the session's taint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tainted_by: Vec<crate::flow::TaintMark>,
    /// The approval the call went through, or waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

impl FlowRecord {
    /// Whether there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
            && self.tainted.is_empty()
            && self.rule.is_none()
            && self.tainted_by.is_empty()
            && self.approval.is_none()
    }
}

impl AuditEvent {
    /// An event of `kind` that starts now; fill the rest by field.
    pub fn new(kind: EventKind) -> Self {
        let now = SystemTime::now();
        Self {
            id: new_event_id(),
            kind,
            phase: None,
            started_at: now,
            ended_at: now,
            session: None,
            principal: None,
            endpoint: None,
            target: None,
            requested_name: None,
            request_id: None,
            protocol_version: None,
            client: None,
            rule: None,
            outcome: None,
            latency_us: 0,
            request_bytes: None,
            response_bytes: None,
            arguments: None,
            result: None,
            truncated: false,
            trace_id: None,
            findings: Vec::new(),
            flow: None,
        }
    }
}

fn new_event_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

mod rfc3339 {
    use std::time::SystemTime;

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::time::format_rfc3339(*t))
    }
}

/// Receives audit events.
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Records one event. When this returns `Ok`, the event is as durable as the
    /// sink promises (on disk, for the durable sinks).
    ///
    /// # Errors
    /// [`AuditError`] when the event could not be recorded; the gateway then refuses
    /// the call unless the operator opted out of failing closed.
    ///
    /// # Cancel safety
    /// A dropped future may or may not have recorded the event.
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError>;

    /// Records one event without waiting for it to become durable: a durable sink
    /// writes it with the next [`record`](Self::record) anyone waits for (one write and
    /// one sync for both), a [`flush`](Self::flush), or on its own after an idle delay
    /// ([`DEFAULT_IDLE_SYNC`]); until then it is in memory only. The audit layer writes
    /// the outcome of a call this way, once the call's start record is durable, so a
    /// call waits for one sync rather than two.
    ///
    /// The default waits for [`record`](Self::record), which keeps the promise and
    /// only costs time.
    ///
    /// # Errors
    /// [`AuditError`] when the event cannot be queued (the sink has stopped). A write
    /// that fails later is logged by the sink; the call it belongs to then shows as
    /// started without an outcome.
    ///
    /// # Cancel safety
    /// A dropped future may or may not have queued the event.
    async fn record_deferred(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.record(event).await
    }

    /// Makes everything recorded so far durable.
    ///
    /// # Errors
    /// When the sink cannot flush.
    async fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

#[async_trait]
impl<S: AuditSink + ?Sized> AuditSink for Arc<S> {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        (**self).record(event).await
    }
    async fn record_deferred(&self, event: &AuditEvent) -> Result<(), AuditError> {
        (**self).record_deferred(event).await
    }
    async fn flush(&self) -> Result<(), AuditError> {
        (**self).flush().await
    }
}

/// Why an event could not be recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Writing failed.
    #[error("audit sink write failed")]
    Io(#[from] std::io::Error),
    /// The sink is shut down or overloaded.
    #[error("audit sink unavailable")]
    Unavailable(#[source] BoxError),
    /// A file or directory of the trail cannot be opened or read.
    #[error("cannot open audit trail {}", path.display())]
    Open {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The stored trail fails verification where the sink would continue it.
    #[error("audit trail {}, record {line}: {reason}; the sink does not continue a chain that does not verify (run `mcp-guard audit verify` on it for every finding; move it aside to start a new chain)", path.display())]
    Corrupt {
        /// The file or database.
        path: std::path::PathBuf,
        /// 1-based line (file) or `seq` (database).
        line: usize,
        /// What failed.
        reason: String,
    },
    /// The MAC key is missing or unusable (the message never contains the key).
    #[error("audit MAC key unusable: {reason}")]
    Key {
        /// Why.
        reason: String,
    },
    /// The audit database failed.
    #[error("audit database failed")]
    Database(#[source] BoxError),
}

impl AuditError {
    pub(crate) fn open(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Open {
            path: path.to_owned(),
            source,
        }
    }
}

/// Sends every event to several sinks; succeeds only if all of them do.
#[derive(Clone, Default)]
pub struct FanOut {
    sinks: Vec<Arc<dyn AuditSink>>,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl FanOut {
    /// A fan-out over `sinks`.
    pub fn new(sinks: Vec<Arc<dyn AuditSink>>) -> Self {
        Self { sinks }
    }
}

#[async_trait]
impl AuditSink for FanOut {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let results = futures::future::join_all(self.sinks.iter().map(|s| s.record(event))).await;
        results.into_iter().collect()
    }
    async fn record_deferred(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let results = futures::future::join_all(self.sinks.iter().map(|s| s.record_deferred(event))).await;
        results.into_iter().collect()
    }
    async fn flush(&self) -> Result<(), AuditError> {
        let results = futures::future::join_all(self.sinks.iter().map(AuditSink::flush)).await;
        results.into_iter().collect()
    }
}

#[cfg(test)]
mod tests;
