//! [`McpRequest`]: the one request type every layer sees.

use std::fmt;
use std::sync::Arc;

use mcp_guard_core::{Action, CallContext, Operation, Target, TargetKind};
use rmcp::model::{ClientRequest, ProgressToken, RequestMetaObject};
use rmcp::service::{Peer, RoleServer};
use tokio_util::sync::CancellationToken;

use crate::federation::Snapshot;

/// One MCP request on its way through the guard stack.
///
/// Built by [`GuardHandler`](crate::GuardHandler) from rmcp's typed request and its
/// context. The namespaced name has already been resolved into [`McpRequest::target`]
/// against [`McpRequest::catalog`]; no layer parses names again.
#[non_exhaustive]
pub struct McpRequest {
    /// The request as the client sent it (namespaced names; `_meta` moved to `meta`).
    pub request: ClientRequest,
    /// The request's `_meta` (progress token, trace context, 2026 client context).
    pub meta: RequestMetaObject,
    /// Who, where, which session.
    pub context: CallContext,
    /// What the request targets, resolved once; `None` for lists, and for names that
    /// resolve to nothing (which every layer treats as unknown).
    pub target: Option<Target>,
    /// The name the client used, for calls.
    pub requested_name: Option<Arc<str>>,
    /// The endpoint catalogue the name was resolved against.
    pub catalog: Arc<Snapshot>,
    /// Cancelled when the client cancels.
    pub cancel: CancellationToken,
    /// The downstream client, for progress and notifications.
    pub downstream: Option<Downstream>,
    /// What inner layers record for outer ones (the deciding rule).
    pub notes: Arc<RequestNotes>,
    /// The request's trace, when a [`TelemetryLayer`](crate::telemetry::TelemetryLayer)
    /// is in the stack: the [`Router`](crate::Router) starts the upstream call's span
    /// from it.
    #[cfg(feature = "telemetry")]
    pub trace: Option<crate::telemetry::RequestTrace>,
}

/// Facts an inner layer records for an outer one (for example the policy rule that
/// allowed a call, which the audit layer writes down), and the call's audit start
/// record, which the [`Router`](crate::Router) writes just before the call goes
/// upstream.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RequestNotes {
    /// The rule that allowed the call.
    pub rule: std::sync::OnceLock<Arc<str>>,
    /// Findings about the content (invisible characters stripped, suspected injection).
    pub findings: std::sync::Mutex<Vec<String>>,
    /// The start record an [`AuditLayer`](crate::AuditLayer) prepared for this call.
    pub(crate) start: std::sync::OnceLock<Arc<crate::audit::StartRecord>>,
    /// Whether the hostile-text checks flagged the result as a suspected injection
    /// (set by the [`Router`](crate::Router)); such a result counts as untrusted input.
    pub suspected_injection: std::sync::atomic::AtomicBool,
    /// What flow rules made of the call, for the audit record.
    pub flow: std::sync::Mutex<Option<mcp_guard_core::audit::FlowRecord>>,
}

impl RequestNotes {
    /// Call right before the request reaches an upstream. When an
    /// [`AuditLayer`](crate::AuditLayer) is in the stack, this makes the call's start
    /// record (who, what, target, redacted arguments) durable first; without one it
    /// does nothing. [`Router`](crate::Router) calls it; an inner service of your own
    /// that sends requests upstream should too. A second call writes nothing more.
    ///
    /// # Errors
    /// [`GuardError::AuditFailed`](crate::GuardError::AuditFailed) when the start record
    /// could not be written and the audit layer fails closed: the request must then
    /// not reach the upstream.
    ///
    /// # Cancel safety
    /// Dropped while the record is being written, the record may or may not be
    /// written; a later call tries again.
    pub async fn before_upstream(&self) -> Result<(), crate::GuardError> {
        match self.start.get() {
            Some(start) => start.write(self.rule.get()).await,
            None => Ok(()),
        }
    }

    /// Adds a finding.
    pub fn note(&self, finding: String) {
        self.findings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(finding);
    }

    /// Changes the call's flow record (created empty on first use).
    pub fn flow(&self, f: impl FnOnce(&mut mcp_guard_core::audit::FlowRecord)) {
        let mut slot = self
            .flow
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(slot.get_or_insert_with(Default::default));
    }
}

impl fmt::Debug for McpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpRequest")
            .field("method", &self.request.method())
            .field("endpoint", &self.context.endpoint)
            .field("principal", &self.context.principal.id())
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The client side of a request: where progress, log messages and the upstream's
/// own requests (sampling, elicitation) go.
#[derive(Clone)]
#[non_exhaustive]
pub struct Downstream {
    /// The client.
    pub peer: Peer<RoleServer>,
    /// The client's progress token, if it asked for progress.
    pub progress_token: Option<ProgressToken>,
    /// The client's id for this request.
    pub request_id: rmcp::model::RequestId,
    /// What the client declared it can do.
    pub capabilities: rmcp::model::ClientCapabilities,
    /// Whether the client speaks a revision that allows server-to-client requests
    /// (before 2026-07-28); 2026-07-28 clients get input-required results instead.
    pub accepts_requests: bool,
}

impl fmt::Debug for Downstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Downstream")
            .field("progress_token", &self.progress_token)
            .finish_non_exhaustive()
    }
}

impl McpRequest {
    /// A request against `catalog` (for tests and custom front doors). Resolves the
    /// request's name, as [`GuardHandler`](crate::GuardHandler) does.
    pub fn new(request: ClientRequest, context: CallContext, catalog: Arc<Snapshot>) -> Self {
        let (target, requested_name) = catalog.resolve_request(&request);
        Self {
            request,
            meta: RequestMetaObject::default(),
            context,
            target,
            requested_name,
            catalog,
            cancel: CancellationToken::new(),
            downstream: None,
            notes: Arc::default(),
            #[cfg(feature = "telemetry")]
            trace: None,
        }
    }

    /// Whether this is a call (tools/call, prompts/get, resources/read, completion).
    pub fn is_call(&self) -> bool {
        self.requested_name.is_some()
    }

    /// The kind of thing this request's name refers to, if it names one.
    pub fn target_kind(&self) -> Option<TargetKind> {
        crate::federation::request_kind(&self.request)
    }

    /// The operation policy evaluates for a call. Arguments are those of
    /// `tools/call` and `prompts/get`; other calls carry none, so a grant with
    /// argument conditions never allows them.
    pub fn operation(&self) -> Operation {
        let args = match &self.request {
            ClientRequest::CallToolRequest(r) => r.params.arguments.clone(),
            ClientRequest::GetPromptRequest(r) => r.params.arguments.clone(),
            _ => None,
        };
        Operation::new(
            Action::Call,
            self.target.clone(),
            self.requested_name.clone().unwrap_or_else(|| Arc::from("")),
        )
        .with_arguments(args)
    }
}
