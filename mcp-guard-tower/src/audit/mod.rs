//! [`AuditLayer`]: every request and its outcome recorded, refusals included.
//!
//! The outermost guard layer. Arguments and results reach the sink only as
//! [`Redacted`](mcp_guard_core::Redacted) values, redacted with this layer's own
//! redactor even when the wire copy is not redacted, and capped in size.
//!
//! The record is written before the response goes back to the client. If the sink
//! fails, the call fails too ([`GuardError::AuditFailed`]): fail closed. The opt-out is
//! [`AuditLayer::dangerous`]`().fail_open()`.
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
use mcp_guard_core::audit::{AuditPrincipal, EventKind};
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

/// Options of [`AuditLayer`] that weaken its guarantee; see [`AuditLayer::dangerous`].
#[derive(Debug)]
pub struct DangerousAuditOptions(AuditLayer);

impl DangerousAuditOptions {
    /// DANGEROUS: when the sink fails, let the call through anyway (unrecorded).
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

pub(crate) fn outcome_of(result: &Result<ServerResult, GuardError>) -> Outcome {
    match result {
        Ok(ServerResult::CallToolResult(r)) if r.is_error == Some(true) => Outcome::ToolError,
        Ok(_) => Outcome::Ok,
        Err(GuardError::Denied { .. } | GuardError::Unknown { .. } | GuardError::Quarantined { .. }) => {
            Outcome::Denied
        }
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
            let started_at = SystemTime::now();
            let clock = Instant::now();
            let mut event = AuditEvent::new(EventKind::Request {
                method: req.request.method().to_owned(),
                action: if is_call { Action::Call } else { Action::List },
            });
            event.started_at = started_at;
            let p = &req.context.principal;
            let mut principal = AuditPrincipal::new(p.id(), p.kind());
            principal.on_behalf_of = p.on_behalf_of().map(str::to_owned);
            principal.roles = Some(p.roles().to_vec());
            principal.attributes.clone_from(p.attributes());
            event.principal = Some(principal);
            event.endpoint = Some(req.context.endpoint.to_string());
            event.session = req.context.session.as_ref().map(ToString::to_string);
            event.request_id = req.context.request_id.clone();
            event.protocol_version = req.context.protocol_version.clone();
            event.client = req
                .context
                .client
                .as_ref()
                .map(|c| format!("{} {}", c.name, c.version));
            event.trace_id = req.context.trace_id.clone();
            event.target = req.target.clone();
            event.requested_name = req.requested_name.as_deref().map(str::to_owned);
            if let Some(args) = arguments_of(&req.request) {
                event.request_bytes = serde_json::to_vec(&args).ok().map(|v| v.len());
                let mut redacted = layer.redactor.redacted(args);
                event.truncated |= redacted.cap(layer.payload_cap);
                event.arguments = Some(redacted);
            }
            let notes = req.notes.clone();
            let result = inner.call(req).await.map_err(Into::into);
            event.ended_at = SystemTime::now();
            event.latency_us = u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
            event.outcome = Some(outcome_of(&result));
            event.findings = std::mem::take(
                &mut *notes
                    .findings
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            event.rule = match &result {
                Err(GuardError::Denied { denial, .. }) => {
                    Some(denial.rule.as_deref().unwrap_or("default deny").to_owned())
                }
                Err(GuardError::RateLimited { limit, .. }) => Some(format!("rate_limits.{limit}")),
                _ => notes.rule.get().map(ToString::to_string),
            };
            if is_call {
                let payload = match &result {
                    Ok(r) => serde_json::to_value(r).ok(),
                    Err(GuardError::Upstream(mcp_guard_core::UpstreamError::Rpc(e))) => {
                        serde_json::to_value(e).ok()
                    }
                    Err(e) => Some(serde_json::Value::String(mcp_guard_core::upstream::error_chain(
                        e,
                    ))),
                };
                if let Some(v) = payload {
                    event.response_bytes = serde_json::to_vec(&v).ok().map(|b| b.len());
                    let mut redacted = layer.redactor.redacted(v);
                    event.truncated |= redacted.cap(layer.payload_cap);
                    event.result = Some(redacted);
                }
            }
            if let Err(e) = layer.sink.record(&event).await {
                tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "audit record failed");
                if !layer.fail_open {
                    return Err(GuardError::AuditFailed(Box::new(e)));
                }
            }
            result
        })
    }
}
