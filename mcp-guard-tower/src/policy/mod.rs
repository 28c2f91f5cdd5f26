//! [`EnforcePolicyLayer`]: calls allowed or refused, lists filtered, by one rule set.
//!
//! A refused call fails with [`GuardError::Denied`], which clients see exactly as an
//! unknown name; the inner service is never called. List results are filtered item
//! by item with the same [`Policy`], so what a principal can list is exactly what it
//! can call. (A list entry has no arguments: see [`GrantPolicy`](mcp_guard_core::GrantPolicy)
//! for how argument conditions apply to lists.) Every call that names something is
//! gated: `tools/call`, `prompts/get`, `resources/read`, `resources/subscribe` and
//! `completion/complete`.
//!
//! # Flow rules and approval
//! A call the grants allow may still be refused by a flow rule (the session's
//! [`Taint`](mcp_guard_core::flow::Taint), read from the request's context), or need a
//! person's approval ([`Decision::NeedsApproval`]), which the layer obtains through
//! its [`Approvals`] before the call goes on. When a
//! call returns, its labels ([`Policy::labels`], plus `untrusted-input` for a result
//! the router flagged as a suspected injection) are added to the session's taint,
//! and journalled, before the result goes back to the client: the client cannot act
//! on the content before the taint is in place.
//!
//! # Where it goes
//! Inside [`AuditLayer`](crate::AuditLayer) (so refusals are recorded) and outside
//! anything that touches secrets or upstreams.
//!
//! ```
//! use mcp_guard_core::{Grant, GrantPolicy};
//! use mcp_guard_tower::{EnforcePolicyLayer, Router};
//! use tower::ServiceBuilder;
//!
//! let policy = GrantPolicy::builder().grant(Grant::allow().roles(["eng"])).build()?;
//! let stack = ServiceBuilder::new().layer(EnforcePolicyLayer::new(policy)).service(Router::new());
//! # let _ = stack;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use mcp_guard_core::flow::{Label, Labels, TaintMark, TaintReason};
use mcp_guard_core::{Action, Decision, Operation, Policy, Target, TargetKind, UpstreamError};
use rmcp::model::ServerResult;
use tower_layer::Layer;
use tower_service::Service;

use crate::approval::{Approvals, Binding, Obtained};
use crate::error::GuardError;
use crate::federation::Snapshot;
use crate::request::{McpRequest, RequestNotes};

/// Applies a [`Policy`] to every call and list.
#[derive(Debug)]
pub struct EnforcePolicyLayer<P: ?Sized = dyn Policy> {
    policy: Arc<P>,
    approvals: Approvals,
}

impl<P: ?Sized> Clone for EnforcePolicyLayer<P> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
            approvals: self.approvals.clone(),
        }
    }
}

impl<P: Policy> EnforcePolicyLayer<P> {
    /// A layer applying `policy`.
    pub fn new(policy: P) -> Self {
        Self {
            policy: Arc::new(policy),
            approvals: Approvals::default(),
        }
    }
}

impl<P: Policy + ?Sized> EnforcePolicyLayer<P> {
    /// A layer applying a shared policy.
    pub fn from_arc(policy: Arc<P>) -> Self {
        Self {
            policy,
            approvals: Approvals::default(),
        }
    }

    /// Asks for approvals through `approvals` (its timeout, limits, audit trail and
    /// page). Without it, approvals use the defaults, are not recorded, and can only be
    /// asked of clients that elicit.
    #[must_use]
    pub fn approvals(mut self, approvals: Approvals) -> Self {
        self.approvals = approvals;
        self
    }
}

impl<S, P: ?Sized> Layer<S> for EnforcePolicyLayer<P> {
    type Service = EnforcePolicy<S, P>;
    fn layer(&self, inner: S) -> Self::Service {
        EnforcePolicy {
            inner,
            policy: self.policy.clone(),
            approvals: self.approvals.clone(),
        }
    }
}

/// The service made by [`EnforcePolicyLayer`].
#[derive(Debug)]
pub struct EnforcePolicy<S, P: ?Sized = dyn Policy> {
    inner: S,
    policy: Arc<P>,
    approvals: Approvals,
}

impl<S: Clone, P: ?Sized> Clone for EnforcePolicy<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            approvals: self.approvals.clone(),
        }
    }
}

crate::macros::inner_service_accessors!(EnforcePolicy<S, P>);

impl<S, P> Service<McpRequest> for EnforcePolicy<S, P>
where
    S: Service<McpRequest, Response = ServerResult> + Clone + Send + 'static,
    S::Error: Into<GuardError>,
    S::Future: Send,
    P: Policy + ?Sized + 'static,
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
        let policy = self.policy.clone();
        let approvals = self.approvals.clone();
        Box::pin(async move {
            if req.is_call() {
                let mut req = req;
                let kind = req.target_kind().unwrap_or(TargetKind::Tool);
                let name = req.requested_name.as_deref().unwrap_or_default().to_owned();
                let Some(target) = req.target.clone() else {
                    return Err(GuardError::Unknown { kind, name });
                };
                let op = req.operation();
                let decision = policy
                    .evaluate(&op, &req.context)
                    .await
                    .map_err(|e| GuardError::Internal(Box::new(e)))?;
                let mut approved = None;
                match decision {
                    Decision::Allow { rule } => {
                        if let Some(rule) = rule {
                            let _ = req.notes.rule.set(rule);
                        }
                    }
                    Decision::Deny(denial) => {
                        if let Some(flow) = &denial.flow {
                            req.notes.flow(|f| {
                                f.rule = denial.rule.as_deref().map(str::to_owned);
                                f.tainted_by.clone_from(&flow.tainted_by);
                            });
                        }
                        return Err(GuardError::Denied { kind, name, denial });
                    }
                    Decision::NeedsApproval(need) => {
                        let _ = req.notes.rule.set(need.rule.clone());
                        req.notes.flow(|f| {
                            f.rule = Some(need.rule.to_string());
                            if let Some(m) = &need.flow {
                                f.tainted_by.clone_from(&m.tainted_by);
                            }
                        });
                        match approvals.obtain(&mut req, &need).await? {
                            Obtained::Asked(result) => return Ok(*result),
                            Obtained::Approved => approved = Some(Binding::of(&req)),
                        }
                    }
                    _ => return Err(GuardError::Internal("unrecognised decision".into())),
                }
                let labels = policy.labels(&target);
                let notes = req.notes.clone();
                let context = req.context.clone();
                let result = inner.call(req).await.map_err(Into::into);
                if let (Some(binding), Ok(r)) = (approved, &result) {
                    approvals.continued(r, binding);
                }
                record_taint(labels, &target, &name, &notes, &context, &result).await;
                result
            } else {
                let ctx = req.context.clone();
                let snap = req.catalog.clone();
                let result = inner.call(req).await.map_err(Into::into)?;
                filter_list(result, &*policy, &ctx, &snap).await
            }
        })
    }
}

/// Whether a call that ended this way may have reached its upstream (and so returned
/// content, or sent data): refusals and servers that never took the call do not taint;
/// anything else does, when in doubt.
fn may_have_reached(result: &Result<ServerResult, GuardError>) -> bool {
    match result {
        Err(GuardError::Upstream(u)) => !matches!(
            u,
            UpstreamError::Unavailable { .. }
                | UpstreamError::MissingCredentials { .. }
                | UpstreamError::MissingPersonalCredentials { .. }
                | UpstreamError::NeedsReauthentication { .. }
                | UpstreamError::StartTimeout { .. }
                | UpstreamError::Down { .. }
                | UpstreamError::Exhausted { .. }
                | UpstreamError::Disabled { .. }
        ),
        // Withheld because the tool changed during the call: the server had it.
        Err(GuardError::Quarantined { during_call, .. }) => *during_call,
        Ok(_) | Err(GuardError::Timeout | GuardError::Internal(_)) => true,
        Err(_) => false,
    }
}

/// Adds a returned call's labels to its session's taint (journalled before the result
/// goes back) and notes them for the audit record.
async fn record_taint(
    labels: Labels,
    target: &Target,
    name: &str,
    notes: &RequestNotes,
    context: &mcp_guard_core::CallContext,
    result: &Result<ServerResult, GuardError>,
) {
    let flagged = notes
        .suspected_injection
        .load(std::sync::atomic::Ordering::Relaxed);
    let all = if flagged {
        labels.with(Label::UntrustedInput)
    } else {
        labels
    };
    if all.is_empty() || !may_have_reached(result) {
        return;
    }
    let mut added = Labels::EMPTY;
    let mut fresh = Vec::new();
    if let Some(taint) = &context.taint {
        for label in all.iter() {
            let reason = if labels.contains(label) {
                TaintReason::Labelled
            } else {
                TaintReason::SuspectedInjection
            };
            let mut mark = TaintMark::new(label, reason, name);
            mark.server = Some(target.server.to_string());
            mark.tool = Some(target.name.to_string());
            // The audit layer's start record of this call, when there is one.
            mark.call = notes.start.get().map(|s| s.id().to_owned());
            mark.request_id.clone_from(&context.request_id);
            mark.session = context.session.as_ref().map(ToString::to_string);
            if taint.record(mark.clone()) {
                added = added.with(label);
                fresh.push(mark);
            }
        }
        if !fresh.is_empty() {
            tracing::info!(session = ?context.session.as_ref().map(ToString::to_string), labels = %added, name, "session tainted");
        }
        if !fresh.is_empty() && taint.is_journalled() {
            let taint = taint.clone();
            let journalled =
                tokio::task::spawn_blocking(move || fresh.iter().try_for_each(|m| taint.persist(m))).await;
            let failed: Option<mcp_guard_core::BoxError> = match journalled {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(Box::new(e)),
            };
            if let Some(e) = failed {
                tracing::error!(error = %e, "could not journal a session's taint (it holds in this process)");
            }
        }
    }
    notes.flow(|f| {
        f.labels = all;
        f.tainted = added;
    });
}

async fn allowed<P: Policy + ?Sized>(
    policy: &P,
    ctx: &mcp_guard_core::CallContext,
    target: Option<Target>,
    name: &str,
) -> bool {
    let op = Operation::new(Action::List, target, name);
    matches!(policy.evaluate(&op, ctx).await, Ok(d) if d.is_allow())
}

async fn filter_list<P: Policy + ?Sized>(
    result: ServerResult,
    policy: &P,
    ctx: &mcp_guard_core::CallContext,
    snap: &Snapshot,
) -> Result<ServerResult, GuardError> {
    Ok(match result {
        ServerResult::ListToolsResult(mut r) => {
            let mut keep = Vec::with_capacity(r.tools.len());
            for t in r.tools {
                if allowed(policy, ctx, snap.resolve_tool(&t.name).cloned(), &t.name).await {
                    keep.push(t);
                }
            }
            r.tools = keep;
            ServerResult::ListToolsResult(r)
        }
        ServerResult::ListPromptsResult(mut r) => {
            let mut keep = Vec::with_capacity(r.prompts.len());
            for p in r.prompts {
                if allowed(policy, ctx, snap.resolve_prompt(&p.name).cloned(), &p.name).await {
                    keep.push(p);
                }
            }
            r.prompts = keep;
            ServerResult::ListPromptsResult(r)
        }
        ServerResult::ListResourcesResult(mut r) => {
            let mut keep = Vec::with_capacity(r.resources.len());
            for res in r.resources {
                if allowed(policy, ctx, snap.resolve_resource(&res.uri), &res.uri).await {
                    keep.push(res);
                }
            }
            r.resources = keep;
            ServerResult::ListResourcesResult(r)
        }
        ServerResult::ListResourceTemplatesResult(mut r) => {
            let mut keep = Vec::with_capacity(r.resource_templates.len());
            for t in r.resource_templates {
                let target = snap
                    .resolve_resource(&t.uri_template)
                    .map(|r| Target::new(r.server, r.name, TargetKind::ResourceTemplate));
                if allowed(policy, ctx, target, &t.uri_template).await {
                    keep.push(t);
                }
            }
            r.resource_templates = keep;
            ServerResult::ListResourceTemplatesResult(r)
        }
        other => other,
    })
}
