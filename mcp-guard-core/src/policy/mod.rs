//! Who may do what: the [`Policy`] trait and its reference adapter, [`GrantPolicy`].
//!
//! A refusal is a decision, not an error: [`Policy::evaluate`] returns
//! `Ok(Decision::Deny(..))` to refuse and keeps `Err` for "no decision could be made",
//! which the gateway also treats as a refusal (fail closed).
//!
//! The same evaluation filters every list and gates every call, so a tool a principal
//! may not call is also absent from what that principal lists.
//!
//! # Grants and conditions
//! A [`Grant`] names who (principal id globs, roles, optionally the principal kind),
//! where (endpoint globs), what (server globs, target kinds, name globs), and
//! [`Condition`]s that must all hold: tests (`eq`, `ne`, `glob`, `in`, each negatable)
//! on the endpoint name, a principal attribute, or a call argument by JSON pointer.
//! A missing attribute or argument never satisfies `eq`, `glob` or `in` and does
//! satisfy `ne`; negation applies after that.
//!
//! # Lists and argument conditions
//! A list entry carries no arguments. It is shown when an allow grant could apply to
//! *some* call of it: for [`Action::List`](crate::Action::List) argument conditions are
//! ignored on allows, and a deny with argument conditions does not hide the entry. A
//! call evaluates every condition, so an entry may be listed while a particular call of
//! it is refused (as an unknown tool).
//!
//! # Flow rules and approval
//! Tools carry [labels](crate::flow::Label) ([`ToolLabel`]); a [`FlowRule`] refuses a
//! call by its labels once the session's earlier calls carried others (the session's
//! [`Taint`](crate::flow::Taint), read from [`CallContext::taint`]). Flow rules are
//! judged after the grants, and only for calls the grants allow. A grant or a flow
//! rule may require a person's approval: the decision is then
//! [`Decision::NeedsApproval`], which the gateway turns into a question to a person.
//! A refusal wins over an approval, an approval over a plain allow.

mod conditions;
mod flow;
mod grants;
mod index;

use std::sync::Arc;

use async_trait::async_trait;

use crate::BoxError;
use crate::call::{CallContext, Operation, Target};
use crate::flow::Labels;

pub use conditions::{Condition, ConditionOn, Subject, Test};
pub use flow::{FlowMatch, FlowRule, ToolLabel};
pub use grants::{Effect, Grant, GrantPolicy, GrantPolicyBuilder, Pattern};

/// Decides whether an operation may proceed.
///
/// # Example
/// ```
/// use mcp_guard_core::{Action, CallContext, GrantPolicy, Grant, Operation,
///     Policy, Principal, Target, TargetKind};
/// # use std::sync::Arc;
/// # tokio_test_block_on(async {
/// let policy = GrantPolicy::builder()
///     .grant(Grant::allow().roles(["engineer"]).servers(["github"]).names(["read_*"]))
///     .build()?;
/// let ctx = CallContext::new(Arc::new(Principal::user("alice").with_roles(["engineer"])), "eng");
/// let op = Operation::new(Action::Call, Some(Target::new("github", "read_file", TargetKind::Tool)),
///     "github__read_file");
/// assert!(policy.evaluate(&op, &ctx).await?.is_allow());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) }
/// ```
#[async_trait]
pub trait Policy: Send + Sync {
    /// Evaluates one operation.
    ///
    /// # Errors
    /// [`PolicyError`] only when no decision can be made (a backend is down, a rule is
    /// broken); a refusal is `Ok(Decision::Deny(..))`.
    ///
    /// # Cancel safety
    /// Evaluation has no side effects the gateway relies on; dropping the future is safe.
    async fn evaluate(&self, operation: &Operation, context: &CallContext) -> Result<Decision, PolicyError>;

    /// The flow [labels](crate::flow::Label) of a target: what a call of it adds to
    /// its session's taint once it returns. None by default.
    fn labels(&self, target: &Target) -> Labels {
        let _ = target;
        Labels::EMPTY
    }
}

#[async_trait]
impl<P: Policy + ?Sized> Policy for Arc<P> {
    async fn evaluate(&self, operation: &Operation, context: &CallContext) -> Result<Decision, PolicyError> {
        (**self).evaluate(operation, context).await
    }
    fn labels(&self, target: &Target) -> Labels {
        (**self).labels(target)
    }
}

#[async_trait]
impl<P: Policy + ?Sized> Policy for Box<P> {
    async fn evaluate(&self, operation: &Operation, context: &CallContext) -> Result<Decision, PolicyError> {
        (**self).evaluate(operation, context).await
    }
    fn labels(&self, target: &Target) -> Labels {
        (**self).labels(target)
    }
}

/// The outcome of [`Policy::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum Decision {
    /// Go ahead; `rule` names the grant that allowed it, for the audit record.
    Allow {
        /// The deciding rule.
        rule: Option<Arc<str>>,
    },
    /// Refused.
    Deny(Denial),
    /// Allowed once a person approves this call (a grant or a flow rule asks for it).
    NeedsApproval(ApprovalNeeded),
}

impl Decision {
    /// An allow decided by `rule`.
    pub fn allow_by(rule: impl Into<Arc<str>>) -> Self {
        Self::Allow {
            rule: Some(rule.into()),
        }
    }

    /// Whether this allows the operation.
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    /// The rule that decided, if one did.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Self::Allow { rule } => rule.as_deref(),
            Self::Deny(d) => d.rule.as_deref(),
            Self::NeedsApproval(a) => Some(&a.rule),
        }
    }
}

/// A call that may go ahead only once a person approves it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApprovalNeeded {
    /// The grant or flow rule that asks for approval.
    pub rule: Arc<str>,
    /// Why, for the person asked (never secret: it names kinds of tools, not data).
    pub reason: Arc<str>,
    /// When a flow rule asks: the labels and the earlier calls involved.
    pub flow: Option<FlowMatch>,
}

impl ApprovalNeeded {
    /// An approval asked for by `rule`.
    pub fn by_rule(rule: impl Into<Arc<str>>, reason: impl Into<Arc<str>>) -> Self {
        Self {
            rule: rule.into(),
            reason: reason.into(),
            flow: None,
        }
    }
}

/// Why an operation was refused. The reason is for the audit record and the operator,
/// never for the client: a refused call answers exactly as an unknown tool would.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Denial {
    /// The rule that refused; `None` when nothing allowed (default deny).
    pub rule: Option<Arc<str>>,
    /// A short operator-facing reason.
    pub reason: Arc<str>,
    /// For a refusal by a flow rule: the labels and the earlier calls that set it off.
    /// Such a refusal is told to the client as what it is (the tool exists and was
    /// listed), without naming the earlier calls.
    pub flow: Option<FlowMatch>,
}

impl Denial {
    /// A denial by `rule`.
    pub fn by_rule(rule: impl Into<Arc<str>>, reason: impl Into<Arc<str>>) -> Self {
        Self {
            rule: Some(rule.into()),
            reason: reason.into(),
            flow: None,
        }
    }

    /// The default-deny refusal: no rule allowed the operation.
    pub fn no_grant() -> Self {
        Self {
            rule: None,
            reason: "no grant allows this".into(),
            flow: None,
        }
    }

    /// A refusal by a flow rule.
    pub fn by_flow(rule: impl Into<Arc<str>>, flow: FlowMatch) -> Self {
        Self {
            rule: Some(rule.into()),
            reason: flow.explain().into(),
            flow: Some(flow),
        }
    }
}

/// Why a policy could not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A rule could not be compiled.
    #[error("invalid rule {rule:?}")]
    InvalidRule {
        /// The rule's name or pattern.
        rule: String,
        /// What was wrong.
        #[source]
        source: BoxError,
    },
    /// The policy backend is unavailable.
    #[error("policy backend unavailable")]
    Unavailable(#[source] BoxError),
}

/// A policy that refuses everything: the fail-closed default when none is configured.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct DenyAll;

#[async_trait]
impl Policy for DenyAll {
    async fn evaluate(&self, _: &Operation, _: &CallContext) -> Result<Decision, PolicyError> {
        Ok(Decision::Deny(Denial::no_grant()))
    }
}
