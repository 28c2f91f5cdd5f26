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
use mcp_guard_core::{Action, Decision, Operation, Policy, Target, TargetKind};
use rmcp::model::ServerResult;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::GuardError;
use crate::federation::Snapshot;
use crate::request::McpRequest;

/// Applies a [`Policy`] to every call and list.
#[derive(Debug)]
pub struct EnforcePolicyLayer<P: ?Sized = dyn Policy> {
    policy: Arc<P>,
}

impl<P: ?Sized> Clone for EnforcePolicyLayer<P> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
        }
    }
}

impl<P: Policy> EnforcePolicyLayer<P> {
    /// A layer applying `policy`.
    pub fn new(policy: P) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<P: Policy + ?Sized> EnforcePolicyLayer<P> {
    /// A layer applying a shared policy.
    pub fn from_arc(policy: Arc<P>) -> Self {
        Self { policy }
    }
}

impl<S, P: ?Sized> Layer<S> for EnforcePolicyLayer<P> {
    type Service = EnforcePolicy<S, P>;
    fn layer(&self, inner: S) -> Self::Service {
        EnforcePolicy {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`EnforcePolicyLayer`].
#[derive(Debug)]
pub struct EnforcePolicy<S, P: ?Sized = dyn Policy> {
    inner: S,
    policy: Arc<P>,
}

impl<S: Clone, P: ?Sized> Clone for EnforcePolicy<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
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
        Box::pin(async move {
            if req.is_call() {
                let kind = req.target_kind().unwrap_or(TargetKind::Tool);
                let name = req.requested_name.as_deref().unwrap_or_default().to_owned();
                if req.target.is_none() {
                    return Err(GuardError::Unknown { kind, name });
                }
                let op = req.operation();
                let decision = policy
                    .evaluate(&op, &req.context)
                    .await
                    .map_err(|e| GuardError::Internal(Box::new(e)))?;
                match decision {
                    Decision::Allow { rule } => {
                        if let Some(rule) = rule {
                            let _ = req.notes.rule.set(rule);
                        }
                        inner.call(req).await.map_err(Into::into)
                    }
                    Decision::Deny(denial) => Err(GuardError::Denied { kind, name, denial }),
                    _ => Err(GuardError::Internal("unrecognised decision".into())),
                }
            } else {
                let ctx = req.context.clone();
                let snap = req.catalog.clone();
                let result = inner.call(req).await.map_err(Into::into)?;
                filter_list(result, &*policy, &ctx, &snap).await
            }
        })
    }
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
