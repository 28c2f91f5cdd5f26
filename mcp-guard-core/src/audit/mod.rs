//! What happened: [`AuditEvent`], the [`AuditSink`] trait and reference sinks.
//!
//! Payloads inside an event are [`Redacted`]: a sink never receives an original
//! argument or result.

mod memory;
mod trace;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::Serialize;

use crate::BoxError;
use crate::call::{Action, PrincipalKind, Target};
use crate::redact::Redacted;

pub use memory::MemoryAuditSink;
pub use trace::TracingAuditSink;

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
    /// A client failed to authenticate.
    AuthenticationFailed {
        /// Why (never the presented credential).
        reason: String,
    },
    /// An upstream's tool definitions changed.
    ToolDefinitionChanged {
        /// A readable diff.
        diff: String,
    },
    /// The configuration was (re)loaded.
    ConfigReloaded,
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
}

impl AuditPrincipal {
    /// A recorded principal.
    pub fn new(id: impl Into<String>, kind: PrincipalKind) -> Self {
        Self {
            id: id.into(),
            kind,
            on_behalf_of: None,
        }
    }
}

/// One audit record.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// Unique id of the record.
    pub id: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
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
}

impl AuditEvent {
    /// An event of `kind` that starts now; fill the rest by field.
    pub fn new(kind: EventKind) -> Self {
        let now = SystemTime::now();
        Self {
            id: new_event_id(),
            kind,
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
    async fn flush(&self) -> Result<(), AuditError> {
        let results = futures::future::join_all(self.sinks.iter().map(AuditSink::flush)).await;
        results.into_iter().collect()
    }
}
