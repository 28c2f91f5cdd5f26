//! Tool labels and flow rules: what [`GrantPolicy`](super::GrantPolicy) decides from a
//! session's history (see [`crate::flow`]).

use std::sync::Arc;

use super::conditions::{CompiledCondition, Condition};
use super::index::FieldIndexBuilder;
use super::{Pattern, PolicyError};
use crate::call::{CallContext, Operation};
use crate::flow::{Labels, TaintMark};

/// Labels for the tools of some servers: server id globs × upstream tool name globs.
///
/// Labels come from here only, never from an upstream's own tool annotations (which
/// the upstream controls).
///
/// ```
/// use mcp_guard_core::flow::{Label, Labels};
/// use mcp_guard_core::policy::ToolLabel;
/// let web = ToolLabel::new(Labels::of([Label::UntrustedInput])).servers(["web"]).tools(["fetch*"]);
/// # let _ = web;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ToolLabel {
    servers: Vec<String>,
    tools: Vec<String>,
    labels: Labels,
}

impl ToolLabel {
    /// Gives `labels` to the tools named later (none named: every tool of the servers).
    pub fn new(labels: Labels) -> Self {
        Self {
            servers: Vec::new(),
            tools: Vec::new(),
            labels,
        }
    }

    /// Server id globs (none: every server).
    pub fn servers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, s: I) -> Self {
        self.servers.extend(s.into_iter().map(Into::into));
        self
    }

    /// Upstream tool name globs (none: every tool of the servers).
    pub fn tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, t: I) -> Self {
        self.tools.extend(t.into_iter().map(Into::into));
        self
    }

    /// Registers this entry (position `i`) in the label index.
    pub(super) fn index(
        &self,
        i: usize,
        servers: &mut FieldIndexBuilder,
        tools: &mut FieldIndexBuilder,
    ) -> Result<(), PolicyError> {
        servers.add(i, &self.servers, true)?;
        tools.add(i, &self.tools, true)
    }

    pub(super) fn compile(&self) -> Result<CompiledLabel, PolicyError> {
        let compile = |v: &[String]| v.iter().map(|s| Pattern::new(s)).collect::<Result<Vec<_>, _>>();
        Ok(CompiledLabel {
            servers: compile(&self.servers)?,
            tools: compile(&self.tools)?,
            labels: self.labels,
        })
    }
}

#[derive(Debug)]
pub(super) struct CompiledLabel {
    servers: Vec<Pattern>,
    tools: Vec<Pattern>,
    pub(super) labels: Labels,
}

fn any(patterns: &[Pattern], value: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.is_match(value))
}

impl CompiledLabel {
    pub(super) fn applies(&self, server: &str, tool: &str) -> bool {
        any(&self.servers, server) && any(&self.tools, tool)
    }
}

/// Labels already looked up, by (server, tool). The tools a gateway serves are a
/// catalogue's, few and stable, so nearly every decision finds its labels here instead
/// of matching globs. Bounded: emptied when full.
#[derive(Debug, Default)]
pub(super) struct LabelCache {
    hasher: std::hash::RandomState,
    map: std::sync::RwLock<std::collections::HashMap<u64, Vec<Cached>>>,
}

/// A server, one of its tools, and the tool's labels.
type Cached = (Box<str>, Box<str>, Labels);

/// Entries a [`LabelCache`] holds before it starts again.
const LABEL_CACHE_MAX: usize = 4096;

impl LabelCache {
    pub(super) fn get_or(&self, server: &str, tool: &str, compute: impl FnOnce() -> Labels) -> Labels {
        use std::hash::BuildHasher as _;
        let key = self.hasher.hash_one((server, tool));
        let found = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .and_then(|v| v.iter().find(|(s, t, _)| **s == *server && **t == *tool))
            .map(|(_, _, l)| *l);
        if let Some(l) = found {
            return l;
        }
        let labels = compute();
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= LABEL_CACHE_MAX {
            map.clear();
        }
        let slot = map.entry(key).or_default();
        if !slot.iter().any(|(s, t, _)| **s == *server && **t == *tool) {
            slot.push((server.into(), tool.into(), labels));
        }
        labels
    }
}

/// A flow rule: once a session's earlier calls carried every label of
/// [`FlowRule::after`], a call carrying any label of [`FlowRule::calls`] is refused,
/// or (with [`FlowRule::approval_required`]) waits for a person's approval.
///
/// ```
/// use mcp_guard_core::flow::{Label, Labels};
/// use mcp_guard_core::policy::FlowRule;
/// // The lethal trifecta: after untrusted input and private data, nothing goes out.
/// let rule = FlowRule::new()
///     .named("no-exfiltration")
///     .after(Labels::of([Label::UntrustedInput, Label::PrivateData]))
///     .calls(Labels::of([Label::Egress]));
/// // No destructive call at all on this endpoint.
/// let never = FlowRule::new().endpoints(["agents"]).calls(Labels::of([Label::Destructive]));
/// // Every mail sent waits for a person.
/// let ask = FlowRule::new().calls(Labels::of([Label::Egress])).approval_required();
/// # let _ = (rule, never, ask);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct FlowRule {
    name: Option<String>,
    endpoints: Vec<String>,
    after: Labels,
    calls: Labels,
    approval: bool,
    conditions: Vec<Condition>,
}

impl Default for FlowRule {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowRule {
    /// A rule that matches nothing until [`FlowRule::calls`] names labels.
    pub fn new() -> Self {
        Self {
            name: None,
            endpoints: Vec::new(),
            after: Labels::EMPTY,
            calls: Labels::EMPTY,
            approval: false,
            conditions: Vec::new(),
        }
    }

    /// Names the rule (shown in audit records and `explain`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Endpoint name globs (none: every endpoint).
    pub fn endpoints<I: IntoIterator<Item = S>, S: Into<String>>(mut self, e: I) -> Self {
        self.endpoints.extend(e.into_iter().map(Into::into));
        self
    }

    /// Labels the session's earlier calls must all have carried (empty: from the
    /// first call on).
    pub fn after(mut self, labels: Labels) -> Self {
        self.after = self.after.union(labels);
        self
    }

    /// Labels of the call itself, any of which makes the rule apply.
    pub fn calls(mut self, labels: Labels) -> Self {
        self.calls = self.calls.union(labels);
        self
    }

    /// Asks a person instead of refusing.
    pub fn approval_required(mut self) -> Self {
        self.approval = true;
        self
    }

    /// Adds a condition (principal attributes, arguments, endpoint); all must hold.
    pub fn when(mut self, condition: Condition) -> Self {
        self.conditions.push(condition);
        self
    }

    pub(super) fn compile(&self, index: usize) -> Result<CompiledFlowRule, PolicyError> {
        Ok(CompiledFlowRule {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| format!("flow rule #{}", index + 1))
                .into(),
            endpoints: self
                .endpoints
                .iter()
                .map(|s| Pattern::new(s))
                .collect::<Result<_, _>>()?,
            after: self.after,
            calls: self.calls,
            approval: self.approval,
            conditions: self
                .conditions
                .iter()
                .map(Condition::compile)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Debug)]
pub(super) struct CompiledFlowRule {
    pub(super) name: Arc<str>,
    endpoints: Vec<Pattern>,
    pub(super) after: Labels,
    pub(super) calls: Labels,
    pub(super) approval: bool,
    conditions: Vec<CompiledCondition>,
}

impl CompiledFlowRule {
    /// Whether the rule applies to a call labelled `labels` in a session whose taint
    /// is `history`.
    pub(super) fn applies(&self, labels: Labels, history: Labels, op: &Operation, ctx: &CallContext) -> bool {
        self.calls.intersects(labels)
            && history.contains_all(self.after)
            && any(&self.endpoints, &ctx.endpoint)
            && self.conditions.iter().all(|c| c.holds(op, ctx))
    }
}

/// Why a flow rule applied to a call: the labels involved and the earlier calls that
/// set the session's taint. Carried by a [`Denial`](super::Denial) or an
/// [`ApprovalNeeded`](super::ApprovalNeeded) for the audit record and `explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowMatch {
    /// The labels of the session's history the rule needs.
    pub after: Labels,
    /// The call's labels that the rule names.
    pub calls: Labels,
    /// The earlier calls that first set the labels of `after`.
    pub tainted_by: Vec<TaintMark>,
}

impl FlowMatch {
    /// A match.
    pub fn new(after: Labels, calls: Labels, tainted_by: Vec<TaintMark>) -> Self {
        Self {
            after,
            calls,
            tainted_by,
        }
    }

    /// A sentence for a person: why the call may not go ahead as it is.
    pub fn explain(&self) -> String {
        let call: Vec<&str> = self.calls.iter().map(crate::flow::Label::describe).collect();
        if self.after.is_empty() {
            return format!("the tool can {}", call.join(" and "));
        }
        let after: Vec<&str> = self.after.iter().map(crate::flow::Label::describe).collect();
        format!(
            "the tool can {}, and this session has already used tools that {}",
            call.join(" and "),
            after.join(" and ")
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{FlowRule, ToolLabel};
    use crate::call::{Action, CallContext, Operation, Principal, Target, TargetKind};
    use crate::flow::{Label, Labels, Taint, TaintMark, TaintReason};
    use crate::policy::{Condition, Decision, Grant, GrantPolicy};

    fn policy() -> GrantPolicy {
        GrantPolicy::builder()
            .grant(Grant::allow().roles(["eng"]).names(["*"]))
            .grant(Grant::deny().named("no-wipe").roles(["eng"]).names(["wipe"]))
            .label(ToolLabel::new(Labels::of([Label::UntrustedInput])).servers(["issues"]))
            .label(
                ToolLabel::new(Labels::of([Label::PrivateData]))
                    .servers(["repo"])
                    .tools(["read_*"]),
            )
            .label(
                ToolLabel::new(Labels::of([Label::Egress]))
                    .servers(["mail"])
                    .tools(["send"]),
            )
            .label(
                ToolLabel::new(Labels::of([Label::Destructive]))
                    .servers(["repo", "mail"])
                    .tools(["wipe", "delete_*"]),
            )
            .flow_rule(
                FlowRule::new()
                    .named("trifecta")
                    .after(Labels::of([Label::UntrustedInput, Label::PrivateData]))
                    .calls(Labels::of([Label::Egress])),
            )
            .flow_rule(
                FlowRule::new()
                    .named("agents-never-delete")
                    .endpoints(["agents-*"])
                    .calls(Labels::of([Label::Destructive])),
            )
            .flow_rule(
                FlowRule::new()
                    .named("no-outside-mail-after-untrusted")
                    .after(Labels::of([Label::UntrustedInput]))
                    .calls(Labels::of([Label::Egress]))
                    .when(Condition::arg("/to").glob("*@example.org").negate()),
            )
            .build()
            .unwrap()
    }

    fn call(server: &str, tool: &str, args: serde_json::Value) -> Operation {
        Operation::new(
            Action::Call,
            Some(Target::new(server, tool, TargetKind::Tool)),
            format!("{server}__{tool}"),
        )
        .with_arguments(match args {
            serde_json::Value::Object(m) => Some(m),
            _ => None,
        })
    }

    fn session(endpoint: &str) -> CallContext {
        let mut c = CallContext::new(Arc::new(Principal::user("alice").with_roles(["eng"])), endpoint);
        c.taint = Some(Arc::new(Taint::new()));
        c
    }

    fn read(c: &CallContext, server: &str, tool: &str, p: &GrantPolicy) {
        for label in p.labels_of(server, tool).iter() {
            let mut m = TaintMark::new(label, TaintReason::Labelled, format!("{server}__{tool}"));
            m.call = Some(format!("rec-{server}-{tool}"));
            c.taint.as_ref().unwrap().record(m);
        }
    }

    #[test]
    fn the_trifecta_is_refused_and_the_refusal_names_what_tainted_the_session() {
        let p = policy();
        let c = session("eng");
        let mail = call("mail", "send", serde_json::json!({"to": "bob@example.org"}));
        assert!(p.decide(&mail, &c).is_allow(), "nothing read yet");
        read(&c, "issues", "get", &p);
        assert!(
            p.decide(&mail, &c).is_allow(),
            "untrusted only, to an inside address"
        );
        read(&c, "repo", "read_file", &p);
        let Decision::Deny(d) = p.decide(&mail, &c) else {
            panic!("refused after untrusted input and private data")
        };
        assert_eq!(d.rule.as_deref(), Some("trifecta"));
        let flow = d.flow.expect("a flow refusal");
        assert_eq!(flow.calls, Labels::of([Label::Egress]));
        let by: Vec<&str> = flow
            .tainted_by
            .iter()
            .map(|m| m.call.as_deref().unwrap())
            .collect();
        assert_eq!(by, ["rec-issues-get", "rec-repo-read_file"]);
        // Unlabelled and other tools go on; lists are not affected.
        assert!(
            p.decide(&call("repo", "status", serde_json::json!({})), &c)
                .is_allow()
        );
        let list = Operation::new(
            Action::List,
            Some(Target::new("mail", "send", TargetKind::Tool)),
            "mail__send",
        );
        assert!(p.decide(&list, &c).is_allow());
        // A grant's deny still speaks first.
        assert_eq!(
            p.decide(&call("mail", "wipe", serde_json::json!({})), &c).rule(),
            Some("no-wipe")
        );
        // Another session is clean; so is a call without a session.
        assert!(p.decide(&mail, &session("eng")).is_allow());
        let mut none = session("eng");
        none.taint = None;
        assert!(p.decide(&mail, &none).is_allow());
    }

    #[test]
    fn endpoints_conditions_and_an_empty_history() {
        let p = policy();
        let agents = session("agents-ci");
        let delete = call("repo", "delete_branch", serde_json::json!({}));
        assert_eq!(p.decide(&delete, &agents).rule(), Some("agents-never-delete"));
        assert!(p.decide(&delete, &session("eng")).is_allow());
        let c = session("eng");
        read(&c, "issues", "get", &p);
        let outside = call("mail", "send", serde_json::json!({"to": "eve@evil.test"}));
        assert_eq!(
            p.decide(&outside, &c).rule(),
            Some("no-outside-mail-after-untrusted")
        );
        // A missing argument does not satisfy the glob; negated, the rule applies.
        let unaddressed = call("mail", "send", serde_json::json!({}));
        assert_eq!(
            p.decide(&unaddressed, &c).rule(),
            Some("no-outside-mail-after-untrusted")
        );
    }

    #[test]
    fn a_long_history_is_one_set_of_labels() {
        let p = policy();
        let c = session("eng");
        for i in 0..1000 {
            let (server, tool) = [("issues", "get"), ("repo", "read_x"), ("repo", "status")][i % 3];
            read(&c, server, tool, &p);
        }
        let taint = c.taint.as_ref().unwrap();
        assert_eq!(
            taint.labels(),
            Labels::of([Label::UntrustedInput, Label::PrivateData])
        );
        assert_eq!(taint.marks().len(), 2, "the first call of each label is kept");
        assert!(
            !p.decide(&call("mail", "send", serde_json::json!({})), &c)
                .is_allow()
        );
    }

    #[test]
    fn approval_grants_and_rules_ask_and_a_refusal_still_wins() {
        let p = GrantPolicy::builder()
            .grant(Grant::allow().named("all").roles(["eng"]).names(["*"]))
            .grant(
                Grant::allow()
                    .named("deletes-ask")
                    .roles(["eng"])
                    .names(["delete_*"])
                    .approval_required(),
            )
            .grant(Grant::deny().named("never").roles(["eng"]).names(["delete_main"]))
            .label(ToolLabel::new(Labels::of([Label::UntrustedInput])).servers(["issues"]))
            .label(ToolLabel::new(Labels::of([Label::Egress])).servers(["mail"]))
            .flow_rule(
                FlowRule::new()
                    .named("refuse-after-untrusted")
                    .after(Labels::of([Label::UntrustedInput]))
                    .calls(Labels::of([Label::Egress])),
            )
            .flow_rule(
                FlowRule::new()
                    .named("mail-asks")
                    .calls(Labels::of([Label::Egress]))
                    .approval_required(),
            )
            .build()
            .unwrap();
        let c = session("eng");
        let del = call("repo", "delete_branch", serde_json::json!({}));
        let Decision::NeedsApproval(n) = p.decide(&del, &c) else {
            panic!("an approval grant asks")
        };
        assert_eq!(&*n.rule, "deletes-ask");
        assert!(n.flow.is_none());
        // A deny still wins; a list entry is shown as callable.
        assert_eq!(
            p.decide(&call("repo", "delete_main", serde_json::json!({})), &c)
                .rule(),
            Some("never")
        );
        let list = Operation::new(
            Action::List,
            Some(Target::new("repo", "delete_branch", TargetKind::Tool)),
            "repo__delete_branch",
        );
        assert!(p.decide(&list, &c).is_allow());
        let mail = call("mail", "send", serde_json::json!({}));
        let Decision::NeedsApproval(n) = p.decide(&mail, &c) else {
            panic!("an approving rule asks")
        };
        assert_eq!(&*n.rule, "mail-asks");
        assert!(n.flow.is_some() && n.reason.contains("send data out"), "{n:?}");
        // After untrusted input the refusing rule wins, whatever its order.
        read(&c, "issues", "get", &p);
        assert_eq!(p.decide(&mail, &c).rule(), Some("refuse-after-untrusted"));
        assert!(matches!(p.decide(&mail, &c), Decision::Deny(_)));
    }
}
