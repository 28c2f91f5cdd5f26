//! [`AuditLayer`]: every request and its outcome recorded, refusals included.
//!
//! The outermost guard layer. Arguments and results reach the sink only as
//! [`Redacted`](mcp_guard_core::Redacted) values, redacted with this layer's own
//! redactor even when the wire copy is not redacted, and capped in size.
//!
//! # The guarantee: no upstream sees a call whose record is not durable
//!
//! A call (`tools/call`, `prompts/get`, `resources/read`, `completion/complete`,
//! `resources/(un)subscribe`) that reaches an upstream is recorded twice, both records
//! with the call's `id`:
//!
//! 1. a **start record** (`"phase":"started"`: who, what, target, redacted
//!    arguments), written by the [`Router`](crate::Router) through
//!    [`RequestNotes::before_upstream`](crate::RequestNotes::before_upstream)
//!    right before the call goes upstream, and durable before it does. If it cannot
//!    be written, the call is refused there ([`GuardError::AuditFailed`]) and no
//!    upstream sees it;
//! 2. an **outcome record** (`"phase":"finished"`: everything, result and outcome
//!    included), handed to the sink with
//!    [`AuditSink::record_deferred`]:
//!    written and synced with the sink's next batch (a durable sink's next record
//!    anyone waits for, or on its own after an idle delay), and not waited for. So
//!    a call waits for one sync, as before. If it is lost (crash, full disk), the
//!    call stays visible as started without an outcome (`mcp-guard audit verify`
//!    lists it, `audit query --incomplete` finds it); losing it never turns a call
//!    the upstream ran into a refusal.
//!
//! A request that reaches no upstream (a list, answered from the gateway's catalogue;
//! a call refused by policy, a rate limit or quarantine; a ping) gets one record,
//! without a `phase`, durable before the answer goes back; if that record cannot be
//! written, the request fails ([`GuardError::AuditFailed`]): fail closed.
//!
//! The opt-out is [`AuditLayer::dangerous`]`().fail_open()`: a record that cannot be
//! written no longer stops anything (the call goes upstream unrecorded, and one
//! record is attempted after it).
//!
//! ```
//! use std::sync::Arc;
//! use mcp_guard_core::{MemoryAuditSink, PatternRedactor};
//! use mcp_guard_tower::{AuditLayer, Router};
//! let sink = MemoryAuditSink::new();
//! // Personal data and secrets out of every record.
//! let redactor = Arc::new(PatternRedactor::builder().build());
//! let stack = tower::ServiceBuilder::new()
//!     .layer(AuditLayer::new(Arc::new(sink.clone()), redactor))
//!     .service(Router::new());
//! # let _ = stack;
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use mcp_guard_core::audit::{AuditPrincipal, EventKind, Phase};
use mcp_guard_core::{Action, AuditEvent, AuditSink, Outcome, Redactor};
use rmcp::model::{ClientRequest, ServerResult};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::GuardError;
use crate::request::McpRequest;

/// Default cap on the recorded size of arguments and of results, in bytes.
pub const DEFAULT_PAYLOAD_CAP: usize = 64 * 1024;

/// Records every request through an [`AuditSink`].
#[derive(Clone)]
pub struct AuditLayer {
    sink: Arc<dyn AuditSink>,
    redactor: Arc<dyn Redactor>,
    fail_open: bool,
    payload_cap: usize,
    record_lists: bool,
}

impl std::fmt::Debug for AuditLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLayer")
            .field("fail_open", &self.fail_open)
            .field("payload_cap", &self.payload_cap)
            .finish_non_exhaustive()
    }
}

impl AuditLayer {
    /// Records to `sink`, redacting payloads with `redactor`; fails closed.
    pub fn new(sink: Arc<dyn AuditSink>, redactor: Arc<dyn Redactor>) -> Self {
        Self {
            sink,
            redactor,
            fail_open: false,
            payload_cap: DEFAULT_PAYLOAD_CAP,
            record_lists: true,
        }
    }

    /// Caps recorded arguments and results at `bytes` each (truncation is marked).
    #[must_use]
    pub fn payload_cap(mut self, bytes: usize) -> Self {
        self.payload_cap = bytes;
        self
    }

    /// Whether list requests are recorded too (default true).
    #[must_use]
    pub fn record_lists(mut self, yes: bool) -> Self {
        self.record_lists = yes;
        self
    }

    /// Options that weaken the audit guarantee.
    pub fn dangerous(self) -> DangerousAuditOptions {
        DangerousAuditOptions(self)
    }
}

impl AuditLayer {
    /// The record of `req` as far as it is known before the call.
    fn request_event(&self, req: &McpRequest, is_call: bool) -> AuditEvent {
        let mut event = AuditEvent::new(EventKind::Request {
            method: req.request.method().to_owned(),
            action: if is_call { Action::Call } else { Action::List },
        });
        let p = &req.context.principal;
        let mut principal = AuditPrincipal::new(p.id(), p.kind());
        principal.on_behalf_of = p.on_behalf_of().map(str::to_owned);
        principal.roles = Some(p.roles().to_vec());
        principal.attributes.clone_from(p.attributes());
        event.principal = Some(principal);
        event.endpoint = Some(req.context.endpoint.to_string());
        event.session = req.context.session.as_ref().map(ToString::to_string);
        event.request_id.clone_from(&req.context.request_id);
        event.protocol_version.clone_from(&req.context.protocol_version);
        event.client = req
            .context
            .client
            .as_ref()
            .map(|c| format!("{} {}", c.name, c.version));
        event.trace_id.clone_from(&req.context.trace_id);
        event.target.clone_from(&req.target);
        event.requested_name = req.requested_name.as_deref().map(str::to_owned);
        if let Some(args) = arguments_of(&req.request) {
            event.request_bytes = json_len(&args);
            let mut redacted = self.redactor.redacted(args);
            event.truncated |= redacted.cap(self.payload_cap);
            event.arguments = Some(redacted);
        }
        event
    }

    /// Completes `event` with how the request ended.
    fn finish_event(
        &self,
        event: &mut AuditEvent,
        result: &Result<ServerResult, GuardError>,
        notes: &crate::RequestNotes,
        clock: Instant,
        is_call: bool,
    ) {
        event.ended_at = SystemTime::now();
        event.latency_us = u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
        event.outcome = Some(outcome_of(result));
        event.findings = std::mem::take(
            &mut *notes
                .findings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        event.flow = notes
            .flow
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .filter(|f| !f.is_empty());
        event.rule = match result {
            Err(GuardError::Denied { denial, .. }) => {
                Some(denial.rule.as_deref().unwrap_or("default deny").to_owned())
            }
            Err(GuardError::RateLimited { limit, .. }) => Some(format!("rate_limits.{limit}")),
            Err(GuardError::ApprovalRefused { rule, .. }) => Some(rule.to_string()),
            _ => notes.rule.get().map(ToString::to_string),
        };
        if is_call {
            let payload = match result {
                Ok(r) => serde_json::to_value(r).ok(),
                Err(GuardError::Upstream(mcp_guard_core::UpstreamError::Rpc(e))) => {
                    serde_json::to_value(e).ok()
                }
                Err(e) => Some(serde_json::Value::String(mcp_guard_core::upstream::error_chain(
                    e,
                ))),
            };
            if let Some(v) = payload {
                event.response_bytes = json_len(&v);
                let mut redacted = self.redactor.redacted(v);
                event.truncated |= redacted.cap(self.payload_cap);
                event.result = Some(redacted);
            }
        }
    }
}

/// Options of [`AuditLayer`] that weaken its guarantee; see [`AuditLayer::dangerous`].
#[derive(Debug)]
pub struct DangerousAuditOptions(AuditLayer);

impl DangerousAuditOptions {
    /// DANGEROUS: when the sink fails, let the call through anyway: a start record
    /// that cannot be written no longer stops the call from reaching its upstream, and
    /// a request's record that cannot be written no longer fails the request.
    pub fn fail_open(mut self) -> AuditLayer {
        self.0.fail_open = true;
        self.0
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;
    fn layer(&self, inner: S) -> Audit<S> {
        Audit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`AuditLayer`].
#[derive(Clone, Debug)]
pub struct Audit<S> {
    inner: S,
    layer: AuditLayer,
}

crate::macros::inner_service_accessors!(Audit<S>);

/// A call's start record, prepared by the audit layer and written by
/// [`RequestNotes::before_upstream`](crate::RequestNotes::before_upstream).
pub(crate) struct StartRecord {
    sink: Arc<dyn AuditSink>,
    /// The call's event, lent by the audit layer: as it stands before the call (phase
    /// `started`, the rule filled in when it is written); taken back for the outcome.
    event: tokio::sync::Mutex<Option<AuditEvent>>,
    id: String,
    fail_open: bool,
    state: tokio::sync::OnceCell<Started>,
}

impl std::fmt::Debug for StartRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartRecord")
            .field("id", &self.id)
            .field("state", &self.state.get())
            .finish_non_exhaustive()
    }
}

/// What became of a start record.
#[derive(Debug, Clone)]
enum Started {
    /// Durable: the call may go upstream.
    Durable,
    /// Not written; the call was refused.
    Failed(Arc<str>),
    /// Not written; the call went on (fail open).
    FailedOpen,
}

impl StartRecord {
    /// The call's audit record id (the flow taint a call sets points back to it).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Writes the record (once), with the rule that allowed the call.
    pub(crate) async fn write(&self, rule: Option<&Arc<str>>) -> Result<(), GuardError> {
        let state = self
            .state
            .get_or_init(|| async {
                let mut event = self.event.lock().await;
                let Some(event) = event.as_mut() else {
                    return Started::Failed("the call's record is gone".into());
                };
                event.rule = rule.map(ToString::to_string);
                match self.sink.record(event).await {
                    Ok(()) => Started::Durable,
                    Err(e) => {
                        let why = mcp_guard_core::upstream::error_chain(&e);
                        if self.fail_open {
                            tracing::error!(call = %self.id, error = %why,
                                "audit start record failed; the call goes upstream unrecorded (dangerously_fail_open)");
                            Started::FailedOpen
                        } else {
                            tracing::error!(call = %self.id, error = %why,
                                "audit start record failed; call refused before it reached the upstream");
                            Started::Failed(why.into())
                        }
                    }
                }
            })
            .await;
        match state {
            Started::Durable | Started::FailedOpen => Ok(()),
            Started::Failed(why) => Err(GuardError::AuditFailed(why.to_string().into())),
        }
    }
}

/// Records a call's outcome if the audit layer's future is dropped after the start
/// record was written (the connection went away), so the trail says what happened.
struct DropGuard(Option<Arc<StartRecord>>);

impl DropGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        let Some(start) = self.0.take() else { return };
        if !matches!(start.state.get(), Some(Started::Durable)) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Written (durable), so nobody holds the lock any more.
        let Some(mut event) = start.event.try_lock().ok().and_then(|mut e| e.take()) else {
            return;
        };
        event.phase = Some(Phase::Finished);
        event.ended_at = SystemTime::now();
        event.latency_us = event
            .ended_at
            .duration_since(event.started_at)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        event.outcome = Some(Outcome::Cancelled);
        event
            .findings
            .push("the gateway stopped waiting for the call (the request was dropped)".to_owned());
        rt.spawn(async move {
            if let Err(e) = start.sink.record_deferred(&event).await {
                tracing::error!(call = %event.id, error = %mcp_guard_core::upstream::error_chain(&e),
                    "audit outcome record lost; the call shows as started without an outcome");
            }
        });
    }
}

/// The size of `value` serialised as JSON, counted without building the bytes.
fn json_len(value: &serde_json::Value) -> Option<usize> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    serde_json::to_writer(&mut n, value).ok().map(|()| n.0)
}

/// Stands in for a call's event that is no longer there (never expected).
fn lost_event(id: &str) -> AuditEvent {
    let mut event = AuditEvent::new(EventKind::Request {
        method: String::new(),
        action: Action::Call,
    });
    id.clone_into(&mut event.id);
    event
}

pub(crate) fn outcome_of(result: &Result<ServerResult, GuardError>) -> Outcome {
    match result {
        Ok(ServerResult::CallToolResult(r)) if r.is_error == Some(true) => Outcome::ToolError,
        Ok(_) => Outcome::Ok,
        Err(
            GuardError::Denied { .. }
            | GuardError::Unknown { .. }
            | GuardError::Quarantined { .. }
            | GuardError::ApprovalRefused { .. },
        ) => Outcome::Denied,
        Err(GuardError::Unauthenticated) => Outcome::Unauthenticated,
        Err(GuardError::RateLimited { .. }) => Outcome::RateLimited,
        Err(GuardError::Timeout | GuardError::Upstream(mcp_guard_core::UpstreamError::Timeout { .. })) => {
            Outcome::Timeout
        }
        Err(GuardError::Upstream(mcp_guard_core::UpstreamError::Terminated { .. })) => {
            Outcome::UpstreamTerminated
        }
        Err(GuardError::Upstream(mcp_guard_core::UpstreamError::Cancelled)) => Outcome::Cancelled,
        Err(GuardError::Upstream(_)) => Outcome::UpstreamError,
        Err(GuardError::AuditFailed(_)) => Outcome::AuditFailed,
        Err(_) => Outcome::GatewayError,
    }
}

fn arguments_of(req: &ClientRequest) -> Option<serde_json::Value> {
    match req {
        ClientRequest::CallToolRequest(r) => r.params.arguments.clone().map(serde_json::Value::Object),
        ClientRequest::GetPromptRequest(r) => r.params.arguments.clone().map(serde_json::Value::Object),
        ClientRequest::CompleteRequest(r) => serde_json::to_value(&r.params.argument).ok(),
        _ => None,
    }
}

impl<S> Service<McpRequest> for Audit<S>
where
    S: Service<McpRequest, Response = ServerResult> + Clone + Send + 'static,
    S::Error: Into<GuardError>,
    S::Future: Send,
{
    type Response = ServerResult;
    type Error = GuardError;
    type Future = BoxFuture<'static, Result<ServerResult, GuardError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GuardError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: McpRequest) -> Self::Future {
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let layer = self.layer.clone();
        Box::pin(async move {
            let is_call = req.is_call();
            if !is_call && !layer.record_lists {
                return inner.call(req).await.map_err(Into::into);
            }
            let clock = Instant::now();
            let event = layer.request_event(&req, is_call);
            let notes = req.notes.clone();
            // A call gets a start record, written just before it goes upstream: the
            // event is lent to it (no copy) and taken back for the outcome.
            let (start, event) = if is_call {
                let mut event = event;
                event.phase = Some(Phase::Started);
                let start = Arc::new(StartRecord {
                    sink: layer.sink.clone(),
                    id: event.id.clone(),
                    event: tokio::sync::Mutex::new(Some(event)),
                    fail_open: layer.fail_open,
                    state: tokio::sync::OnceCell::new(),
                });
                let _ = notes.start.set(start.clone());
                (Some(start), None)
            } else {
                (None, Some(event))
            };
            let mut guard = DropGuard(start.clone());
            let result = inner.call(req).await.map_err(Into::into);
            guard.disarm();
            let mut event = match (event, &start) {
                (Some(event), _) => event,
                (None, Some(start)) => match start.event.lock().await.take() {
                    Some(event) => event,
                    // Only the drop guard takes it, and it was disarmed.
                    None => lost_event(&start.id),
                },
                (None, None) => lost_event(""),
            };
            layer.finish_event(&mut event, &result, &notes, clock, is_call);
            let started = start.as_ref().and_then(|s| s.state.get().cloned());
            event.phase = started.is_some().then_some(Phase::Finished);
            match started {
                // The upstream saw the call: its outcome must not turn into a refusal,
                // and the client does not wait for a second sync.
                Some(Started::Durable) => {
                    if let Err(e) = layer.sink.record_deferred(&event).await {
                        tracing::error!(call = %event.id, error = %mcp_guard_core::upstream::error_chain(&e),
                            "audit outcome record lost; the call shows as started without an outcome");
                    }
                }
                // Refused before any upstream: note the refusal if the sink can take it.
                Some(Started::Failed(_)) => {
                    let _ = layer.sink.record_deferred(&event).await;
                }
                // No upstream saw the request (or fail-open let it through unrecorded):
                // one record, durable before the answer.
                Some(Started::FailedOpen) | None => {
                    if let Err(e) = layer.sink.record(&event).await {
                        tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "audit record failed");
                        if !layer.fail_open {
                            return Err(GuardError::AuditFailed(Box::new(e)));
                        }
                    }
                }
            }
            result
        })
    }
}
