use std::sync::Arc;

use async_trait::async_trait;
use globset::{GlobBuilder, GlobMatcher};

use super::conditions::{CompiledCondition, Condition};
use super::flow::{CompiledFlowRule, CompiledLabel, FlowMatch, FlowRule, LabelCache, ToolLabel};
use super::index::{FieldIndexBuilder, GrantIndex, PairIndex};
use super::{ApprovalNeeded, Decision, Denial, Policy, PolicyError};
use crate::call::{Action, CallContext, Operation, PrincipalKind, Target, TargetKind};
use crate::flow::Labels;

/// Whether a grant allows or refuses. A matching deny always wins over an allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Allow what matches.
    Allow,
    /// Refuse what matches, whatever else allows it.
    Deny,
}

/// A compiled glob over one field. `*` alone matches everything.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: Arc<str>,
    matcher: Option<GlobMatcher>,
}

impl Pattern {
    /// Compiles `glob` (`*`, `?`, `[abc]`, `{a,b}`), case-sensitive.
    ///
    /// # Errors
    /// When the glob does not parse.
    pub fn new(glob: &str) -> Result<Self, PolicyError> {
        let matcher = if glob == "*" {
            None
        } else {
            Some(
                GlobBuilder::new(glob)
                    .literal_separator(false)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| PolicyError::InvalidRule {
                        rule: glob.to_owned(),
                        source: Box::new(e),
                    })?
                    .compile_matcher(),
            )
        };
        Ok(Self {
            source: glob.into(),
            matcher,
        })
    }

    /// Whether `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.matcher.as_ref().is_none_or(|m| m.is_match(value))
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// One rule: who (principals or roles) may do what (endpoints, servers, names, kinds),
/// under which conditions.
///
/// Every list left empty means "any". A grant with neither principals nor roles
/// applies to nobody, so an accidental empty grant opens nothing. Conditions
/// ([`Grant::when`]) must all hold.
///
/// # Example
/// ```
/// use mcp_guard_core::policy::{Condition, Grant};
/// use mcp_guard_core::TargetKind;
/// let g = Grant::allow()
///     .named("eng-create")
///     .roles(["engineer"])
///     .servers(["github"])
///     .kinds([TargetKind::Tool])
///     .names(["create_*"])
///     .when(Condition::endpoint().glob("engineering-*"))
///     .when(Condition::arg("/repo").is_in(["infra", "docs"]));
/// # let _ = g;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Grant {
    name: Option<String>,
    effect: Effect,
    principals: Vec<String>,
    roles: Vec<String>,
    principal_kind: Option<PrincipalKind>,
    endpoints: Vec<String>,
    servers: Vec<String>,
    kinds: Vec<TargetKind>,
    names: Vec<String>,
    conditions: Vec<Condition>,
    approval: bool,
}

impl Grant {
    /// A grant that allows.
    pub fn allow() -> Self {
        Self::with_effect(Effect::Allow)
    }

    /// A grant that refuses (and wins over any allow).
    pub fn deny() -> Self {
        Self::with_effect(Effect::Deny)
    }

    fn with_effect(effect: Effect) -> Self {
        Self {
            name: None,
            effect,
            principals: Vec::new(),
            roles: Vec::new(),
            principal_kind: None,
            endpoints: Vec::new(),
            servers: Vec::new(),
            kinds: Vec::new(),
            names: Vec::new(),
            conditions: Vec::new(),
            approval: false,
        }
    }

    /// An allow that takes effect only once a person approves the call (asked by the
    /// gateway through the client, or on its approval page). A matching approval grant
    /// wins over plain allows; a deny still wins over it. Lists are not affected.
    pub fn approval_required(mut self) -> Self {
        self.approval = true;
        self
    }

    /// Names the grant (shown in audit records and `explain`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Principal id globs (`*` for every authenticated principal).
    pub fn principals<I: IntoIterator<Item = S>, S: Into<String>>(mut self, p: I) -> Self {
        self.principals.extend(p.into_iter().map(Into::into));
        self
    }

    /// Roles, any of which qualifies; `*` stands for every principal.
    pub fn roles<I: IntoIterator<Item = S>, S: Into<String>>(mut self, r: I) -> Self {
        self.roles.extend(r.into_iter().map(Into::into));
        self
    }

    /// Only principals of this kind (users or agents).
    pub fn principal_kind(mut self, kind: PrincipalKind) -> Self {
        self.principal_kind = Some(kind);
        self
    }

    /// Endpoint name globs.
    pub fn endpoints<I: IntoIterator<Item = S>, S: Into<String>>(mut self, e: I) -> Self {
        self.endpoints.extend(e.into_iter().map(Into::into));
        self
    }

    /// Server id globs.
    pub fn servers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, s: I) -> Self {
        self.servers.extend(s.into_iter().map(Into::into));
        self
    }

    /// The kinds of target the grant covers (tool, prompt, resource, resource
    /// template); none named means all.
    pub fn kinds<I: IntoIterator<Item = TargetKind>>(mut self, k: I) -> Self {
        self.kinds.extend(k);
        self
    }

    /// Globs over the upstream's own tool/prompt name or resource URI.
    pub fn names<I: IntoIterator<Item = S>, S: Into<String>>(mut self, n: I) -> Self {
        self.names.extend(n.into_iter().map(Into::into));
        self
    }

    /// Adds a condition; all of a grant's conditions must hold.
    pub fn when(mut self, condition: Condition) -> Self {
        self.conditions.push(condition);
        self
    }
}

#[derive(Debug)]
struct CompiledGrant {
    name: Arc<str>,
    effect: Effect,
    principals: Vec<Pattern>,
    roles: Vec<String>,
    principal_kind: Option<PrincipalKind>,
    endpoints: Vec<Pattern>,
    servers: Vec<Pattern>,
    kinds: Vec<TargetKind>,
    names: Vec<Pattern>,
    conditions: Vec<CompiledCondition>,
    has_argument_conditions: bool,
    approval: bool,
}

fn any(patterns: &[Pattern], value: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.is_match(value))
}

impl CompiledGrant {
    fn applies_to(&self, ctx: &CallContext) -> bool {
        let p = &ctx.principal;
        let by_id = !self.principals.is_empty() && self.principals.iter().any(|g| g.is_match(p.id()));
        let by_role = self.roles.iter().any(|r| r == "*" || p.has_role(r));
        by_id || by_role
    }

    /// What the index has not already checked: target kind, principal kind,
    /// conditions. See [`CompiledGrant::matches`] for lists.
    fn matches_rest(&self, op: &Operation, target: &Target, ctx: &CallContext) -> bool {
        let listing = op.action == Action::List;
        if listing && self.effect == Effect::Deny && self.has_argument_conditions {
            return false;
        }
        self.principal_kind.is_none_or(|k| k == ctx.principal.kind())
            && (self.kinds.is_empty() || self.kinds.contains(&target.kind))
            && self
                .conditions
                .iter()
                .all(|c| (listing && c.is_argument()) || c.holds(op, ctx))
    }

    /// Whether the grant matches. For a list entry ([`Action::List`]) argument
    /// conditions are not evaluated (there are no arguments yet): an allow counts as
    /// matching whatever they say, a deny that has any does not match.
    fn matches(&self, op: &Operation, ctx: &CallContext) -> bool {
        let Some(target) = &op.target else { return false };
        self.applies_to(ctx)
            && any(&self.endpoints, &ctx.endpoint)
            && any(&self.servers, &target.server)
            && any(&self.names, &target.name)
            && self.matches_rest(op, target, ctx)
    }
}

/// The reference policy: allow and deny grants over globs and conditions; deny wins;
/// default deny.
///
/// Patterns are compiled once, at [`GrantPolicyBuilder::build`], into an index
/// (literal values in hash maps, globs in one `GlobSet` per field), so a decision
/// evaluates only the grants that could match.
///
/// # Lists and argument conditions
/// A list entry has no arguments. So that listing and calling stay one rule set
/// without hiding tools that some calls may use, a list entry is shown when an allow
/// grant could apply to *some* call of it: argument conditions are ignored for an
/// allow, and a deny with argument conditions does not hide the entry. Calls evaluate
/// every condition.
///
/// # Flow rules
/// With [`ToolLabel`]s and [`FlowRule`]s, a tool call that the grants allow is then
/// checked against the session's taint ([`CallContext::taint`]): the first rule that
/// applies refuses it. The taint is read with one atomic load, so the cost does not
/// grow with the session's history.
#[derive(Debug, Clone)]
pub struct GrantPolicy {
    grants: Arc<[CompiledGrant]>,
    index: Arc<GrantIndex>,
    labels: Arc<[CompiledLabel]>,
    label_index: Arc<PairIndex>,
    label_cache: Arc<LabelCache>,
    flow: Arc<[CompiledFlowRule]>,
}

/// Builds a [`GrantPolicy`].
#[derive(Debug, Default)]
#[must_use]
pub struct GrantPolicyBuilder {
    grants: Vec<Grant>,
    labels: Vec<ToolLabel>,
    flow: Vec<FlowRule>,
}

impl GrantPolicyBuilder {
    /// Adds a grant.
    pub fn grant(mut self, grant: Grant) -> Self {
        self.grants.push(grant);
        self
    }

    /// Labels some tools (labels of every matching entry add up).
    pub fn label(mut self, label: ToolLabel) -> Self {
        self.labels.push(label);
        self
    }

    /// Adds a flow rule (evaluated in the order added).
    pub fn flow_rule(mut self, rule: FlowRule) -> Self {
        self.flow.push(rule);
        self
    }

    /// Compiles every pattern and condition, and indexes the grants.
    ///
    /// # Errors
    /// [`PolicyError::InvalidRule`] naming the first pattern or condition that does
    /// not compile.
    pub fn build(self) -> Result<GrantPolicy, PolicyError> {
        let compile = |v: &[String]| v.iter().map(|s| Pattern::new(s)).collect::<Result<Vec<_>, _>>();
        let n = self.grants.len();
        let mut ids = FieldIndexBuilder::new(n);
        let mut roles = FieldIndexBuilder::new(n);
        let mut endpoints = FieldIndexBuilder::new(n);
        let mut servers = FieldIndexBuilder::new(n);
        let mut names = FieldIndexBuilder::new(n);
        let mut grants = Vec::with_capacity(n);
        for (i, g) in self.grants.into_iter().enumerate() {
            ids.add(i, &g.principals, false)?;
            roles.add_exact(i, &g.roles);
            endpoints.add(i, &g.endpoints, true)?;
            servers.add(i, &g.servers, true)?;
            names.add(i, &g.names, true)?;
            let conditions = g
                .conditions
                .iter()
                .map(Condition::compile)
                .collect::<Result<Vec<_>, _>>()?;
            grants.push(CompiledGrant {
                name: g
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("grant #{}", i + 1))
                    .into(),
                effect: g.effect,
                principals: compile(&g.principals)?,
                roles: g.roles,
                principal_kind: g.principal_kind,
                endpoints: compile(&g.endpoints)?,
                servers: compile(&g.servers)?,
                kinds: g.kinds,
                names: compile(&g.names)?,
                has_argument_conditions: conditions.iter().any(CompiledCondition::is_argument),
                conditions,
                approval: g.approval,
            });
        }
        let index = GrantIndex {
            n,
            ids: ids.build()?,
            roles: roles.build()?,
            endpoints: endpoints.build()?,
            servers: servers.build()?,
            names: names.build()?,
        };
        let labels = self
            .labels
            .iter()
            .map(ToolLabel::compile)
            .collect::<Result<Vec<_>, _>>()?;
        let n = labels.len();
        let (mut servers, mut tools) = (FieldIndexBuilder::new(n), FieldIndexBuilder::new(n));
        for (i, l) in self.labels.iter().enumerate() {
            l.index(i, &mut servers, &mut tools)?;
        }
        let label_index = PairIndex {
            n,
            first: servers.build()?,
            second: tools.build()?,
        };
        let flow = self
            .flow
            .iter()
            .enumerate()
            .map(|(i, r)| r.compile(i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GrantPolicy {
            grants: grants.into(),
            index: Arc::new(index),
            labels: labels.into(),
            label_index: Arc::new(label_index),
            label_cache: Arc::default(),
            flow: flow.into(),
        })
    }
}

impl GrantPolicy {
    /// Starts a builder.
    pub fn builder() -> GrantPolicyBuilder {
        GrantPolicyBuilder::default()
    }

    /// How many grants the policy holds.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// Whether the policy holds no grant (and so refuses everything).
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The labels of `server`'s tool `tool` (the union of every matching label entry),
    /// found through an index of the entries' server and tool globs, and remembered.
    pub fn labels_of(&self, server: &str, tool: &str) -> Labels {
        if self.labels.is_empty() {
            return Labels::EMPTY;
        }
        self.label_cache.get_or(server, tool, || {
            self.label_index.with_matches(server, tool, |m| {
                m.ones()
                    .fold(Labels::EMPTY, |acc, i| acc.union(self.labels[i].labels))
            })
        })
    }

    /// [`Self::labels_of`] by testing every entry (for tests that check the index).
    #[doc(hidden)]
    pub fn labels_of_linear(&self, server: &str, tool: &str) -> Labels {
        self.labels
            .iter()
            .filter(|l| l.applies(server, tool))
            .fold(Labels::EMPTY, |acc, l| acc.union(l.labels))
    }

    /// Whether the policy has flow rules.
    pub fn has_flow_rules(&self) -> bool {
        !self.flow.is_empty()
    }

    /// Decides synchronously (the grant policy never waits on anything): grants first,
    /// then, for an allowed tool call, the flow rules against the session's taint.
    pub fn decide(&self, op: &Operation, ctx: &CallContext) -> Decision {
        let decision = self.decide_grants(op, ctx);
        let allowed = matches!(decision, Decision::Allow { .. } | Decision::NeedsApproval(_));
        if self.flow.is_empty() || op.action != Action::Call || !allowed {
            return decision;
        }
        match op.target.as_ref() {
            Some(target) if target.kind == TargetKind::Tool => self.decide_flow(decision, target, op, ctx),
            _ => decision,
        }
    }

    /// The flow rules' verdict on a call the grants allow: the first refusing rule that
    /// applies refuses it; else the first approving rule that applies asks a person
    /// (in place of a grant that asks already).
    fn decide_flow(
        &self,
        decision: Decision,
        target: &Target,
        op: &Operation,
        ctx: &CallContext,
    ) -> Decision {
        let taint = ctx.taint.as_deref();
        let history = taint.map_or(Labels::EMPTY, crate::flow::Taint::labels);
        // No rule's history is met: the call's labels do not matter.
        if !self.flow.iter().any(|r| history.contains_all(r.after)) {
            return decision;
        }
        let labels = self.labels_of(&target.server, &target.name);
        if labels.is_empty() {
            return decision;
        }
        let matched = |r: &CompiledFlowRule| {
            FlowMatch::new(
                r.after,
                r.calls.intersect(labels),
                taint.map(|t| t.marks_of(r.after)).unwrap_or_default(),
            )
        };
        let mut ask = None;
        for rule in self.flow.iter().filter(|r| r.applies(labels, history, op, ctx)) {
            if !rule.approval {
                return Decision::Deny(Denial::by_flow(rule.name.clone(), matched(rule)));
            }
            ask = ask.or(Some(rule));
        }
        match ask {
            Some(rule) => {
                let m = matched(rule);
                let mut a = ApprovalNeeded::by_rule(rule.name.clone(), m.explain());
                a.flow = Some(m);
                Decision::NeedsApproval(a)
            }
            None => decision,
        }
    }

    fn decide_grants(&self, op: &Operation, ctx: &CallContext) -> Decision {
        let Some(target) = &op.target else {
            return Decision::Deny(Denial::no_grant());
        };
        let p = &ctx.principal;
        self.index.with_candidates(
            p.id(),
            p.roles(),
            &ctx.endpoint,
            &target.server,
            &target.name,
            // The index matched principal, endpoint, server and name already.
            |candidates| {
                Self::decide_among(
                    candidates
                        .ones()
                        .map(|i| &self.grants[i])
                        .filter(|g| g.matches_rest(op, target, ctx)),
                    op.action,
                )
            },
        )
    }

    fn decide_among<'a>(matching: impl Iterator<Item = &'a CompiledGrant>, action: Action) -> Decision {
        let mut allowed_by = None;
        let mut ask = None;
        for g in matching {
            match g.effect {
                Effect::Deny => return Decision::Deny(Denial::by_rule(g.name.clone(), "denied by grant")),
                Effect::Allow => {
                    if allowed_by.is_none() {
                        allowed_by = Some(g.name.clone());
                    }
                    if g.approval && ask.is_none() {
                        ask = Some(g.name.clone());
                    }
                }
            }
        }
        match (allowed_by, ask) {
            // A list entry is shown: the call can be made, after an approval.
            (Some(_), Some(rule)) if action == Action::Call => Decision::NeedsApproval(
                ApprovalNeeded::by_rule(rule, "a grant requires a person's approval for this call"),
            ),
            (Some(rule), _) => Decision::Allow { rule: Some(rule) },
            (None, _) => Decision::Deny(Denial::no_grant()),
        }
    }

    /// Decides by scanning every grant, without the index (for tests that check the
    /// index against the plain definition).
    #[doc(hidden)]
    pub fn decide_linear(&self, op: &Operation, ctx: &CallContext) -> Decision {
        Self::decide_among(self.grants.iter().filter(|g| g.matches(op, ctx)), op.action)
    }
}

#[async_trait]
impl Policy for GrantPolicy {
    async fn evaluate(&self, op: &Operation, ctx: &CallContext) -> Result<Decision, PolicyError> {
        Ok(self.decide(op, ctx))
    }

    fn labels(&self, target: &Target) -> Labels {
        if target.kind == TargetKind::Tool {
            self.labels_of(&target.server, &target.name)
        } else {
            Labels::EMPTY
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Principal;

    fn ctx(p: Principal, endpoint: &str) -> CallContext {
        CallContext::new(Arc::new(p), endpoint)
    }

    fn op(server: &str, name: &str) -> Operation {
        Operation::new(
            Action::Call,
            Some(Target::new(server, name, TargetKind::Tool)),
            format!("{server}__{name}"),
        )
    }

    #[test]
    fn default_deny_and_deny_wins() {
        let policy = GrantPolicy::builder()
            .grant(Grant::allow().roles(["eng"]).names(["*"]))
            .grant(
                Grant::deny()
                    .named("no-deletes")
                    .roles(["eng"])
                    .names(["delete_*"]),
            )
            .build()
            .unwrap();
        let alice = ctx(Principal::user("alice").with_roles(["eng"]), "e");
        let bob = ctx(Principal::user("bob"), "e");
        let everyone = GrantPolicy::builder()
            .grant(Grant::deny().named("all").roles(["*"]))
            .grant(Grant::allow().principals(["bob"]))
            .build()
            .unwrap();
        assert_eq!(everyone.decide(&op("gh", "x"), &bob).rule(), Some("all"));
        assert!(policy.decide(&op("gh", "read"), &alice).is_allow());
        assert_eq!(
            policy.decide(&op("gh", "delete_repo"), &alice).rule(),
            Some("no-deletes")
        );
        assert!(!policy.decide(&op("gh", "read"), &bob).is_allow());
        let unknown = Operation::new(Action::Call, None, "gh__nope");
        assert!(!policy.decide(&unknown, &alice).is_allow());
    }

    #[test]
    fn empty_grant_applies_to_nobody() {
        let policy = GrantPolicy::builder().grant(Grant::allow()).build().unwrap();
        assert!(
            !policy
                .decide(&op("a", "b"), &ctx(Principal::user("x"), "e"))
                .is_allow()
        );
    }

    #[test]
    fn bad_glob_is_named() {
        let err = GrantPolicy::builder()
            .grant(Grant::allow().names(["[a"]))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("[a"), "{err}");
    }

    fn list(server: &str, name: &str, kind: TargetKind) -> Operation {
        Operation::new(
            Action::List,
            Some(Target::new(server, name, kind)),
            format!("{server}__{name}"),
        )
    }

    #[expect(clippy::needless_pass_by_value, reason = "json! literals at call sites")]
    fn call_with(server: &str, name: &str, args: serde_json::Value) -> Operation {
        op(server, name).with_arguments(args.as_object().cloned())
    }

    #[test]
    fn kinds_principal_kind_and_endpoint_conditions() {
        let policy = GrantPolicy::builder()
            .grant(
                Grant::allow()
                    .named("eng-tools")
                    .roles(["eng"])
                    .kinds([TargetKind::Tool])
                    .when(Condition::endpoint().glob("engineering-*")),
            )
            .grant(
                Grant::allow()
                    .named("bots")
                    .principals(["*"])
                    .principal_kind(PrincipalKind::Agent)
                    .names(["status"])
                    .when(Condition::attr("team").is_in(["infra"])),
            )
            .build()
            .unwrap();
        let alice = ctx(Principal::user("alice").with_roles(["eng"]), "engineering-eu");
        assert_eq!(policy.decide(&op("gh", "x"), &alice).rule(), Some("eng-tools"));
        assert!(
            !policy
                .decide(&list("gh", "p", TargetKind::Prompt), &alice)
                .is_allow()
        );
        let elsewhere = ctx(Principal::user("alice").with_roles(["eng"]), "prod-eu");
        assert!(!policy.decide(&op("gh", "x"), &elsewhere).is_allow());
        let bot = ctx(Principal::agent("ci").with_attribute("team", "infra"), "any");
        assert_eq!(policy.decide(&op("gh", "status"), &bot).rule(), Some("bots"));
        let user = ctx(Principal::user("ci").with_attribute("team", "infra"), "any");
        assert!(!policy.decide(&op("gh", "status"), &user).is_allow());
        let other_team = ctx(Principal::agent("ci").with_attribute("team", "web"), "any");
        assert!(!policy.decide(&op("gh", "status"), &other_team).is_allow());
    }

    #[test]
    fn argument_conditions_gate_calls_but_not_lists() {
        let policy = GrantPolicy::builder()
            .grant(
                Grant::allow()
                    .named("two-repos")
                    .roles(["eng"])
                    .names(["create_*"])
                    .when(Condition::arg("/repo").is_in(["a", "b"])),
            )
            .grant(
                Grant::deny()
                    .named("no-force")
                    .roles(["eng"])
                    .when(Condition::arg("/force").eq(true)),
            )
            .build()
            .unwrap();
        let alice = ctx(Principal::user("alice").with_roles(["eng"]), "e");
        let ok = call_with("gh", "create_issue", serde_json::json!({"repo": "a"}));
        assert_eq!(policy.decide(&ok, &alice).rule(), Some("two-repos"));
        let other = call_with("gh", "create_issue", serde_json::json!({"repo": "c"}));
        assert_eq!(policy.decide(&other, &alice), Decision::Deny(Denial::no_grant()));
        let missing = call_with("gh", "create_issue", serde_json::json!({}));
        assert!(!policy.decide(&missing, &alice).is_allow());
        let forced = call_with(
            "gh",
            "create_issue",
            serde_json::json!({"repo": "a", "force": true}),
        );
        assert_eq!(policy.decide(&forced, &alice).rule(), Some("no-force"));
        assert!(!policy.decide(&forced, &alice).is_allow());
        // Listed: the allow could apply to some call; the deny needs arguments.
        let listed = policy.decide(&list("gh", "create_issue", TargetKind::Tool), &alice);
        assert_eq!(listed.rule(), Some("two-repos"));
        assert!(
            !policy
                .decide(&list("gh", "delete", TargetKind::Tool), &alice)
                .is_allow()
        );
    }

    mod index_agrees {
        use super::*;
        use proptest::prelude::*;

        const VALUES: [&str; 6] = ["a", "b", "ab", "read_x", "write_y", "*"];
        const ROLES: [&str; 4] = ["a", "b", "ab", "*"];
        const GLOBS: [&str; 9] = ["a", "b", "ab", "*", "a*", "read_*", "*_y", "{a,b}", "?b"];

        fn grant() -> impl Strategy<Value = Grant> {
            let list = || proptest::collection::vec(proptest::sample::select(&GLOBS[..]), 0..3);
            (
                proptest::prelude::any::<bool>(),
                list(),
                proptest::collection::vec(proptest::sample::select(&ROLES[..]), 0..2),
                list(),
                list(),
                list(),
                proptest::option::of(proptest::prelude::any::<bool>()),
            )
                .prop_map(|(deny, principals, roles, endpoints, servers, names, kind)| {
                    let mut g = if deny { Grant::deny() } else { Grant::allow() };
                    g = g
                        .principals(principals)
                        .roles(roles)
                        .endpoints(endpoints)
                        .servers(servers)
                        .names(names);
                    if let Some(agent) = kind {
                        g = g.principal_kind(if agent {
                            PrincipalKind::Agent
                        } else {
                            PrincipalKind::User
                        });
                    }
                    g
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn same_decision_as_a_linear_scan(
                grants in proptest::collection::vec(grant(), 0..80),
                id in proptest::sample::select(&VALUES[..]),
                role in proptest::sample::select(&VALUES[..3]),
                agent in proptest::prelude::any::<bool>(),
                endpoint in proptest::sample::select(&VALUES[..]),
                server in proptest::sample::select(&VALUES[..]),
                name in proptest::sample::select(&VALUES[..]),
                listing in proptest::prelude::any::<bool>(),
            ) {
                let mut b = GrantPolicy::builder();
                for g in grants {
                    b = b.grant(g);
                }
                let policy = b.build().unwrap();
                let p = if agent { Principal::agent(id) } else { Principal::user(id) };
                let c = ctx(p.with_roles([role]), endpoint);
                let action = if listing { Action::List } else { Action::Call };
                let o = Operation::new(action, Some(Target::new(server, name, TargetKind::Tool)), "x");
                prop_assert_eq!(policy.decide(&o, &c), policy.decide_linear(&o, &c));
            }

            #[test]
            fn labels_by_index_are_labels_by_scan(
                entries in proptest::collection::vec((list(), list(), 1u8..16), 0..40),
                server in proptest::sample::select(&VALUES[..]),
                tool in proptest::sample::select(&VALUES[..]),
            ) {
                use crate::flow::{Label, Labels};
                let mut b = GrantPolicy::builder();
                for (servers, tools, bits) in entries {
                    let labels = Labels::of(Label::ALL.into_iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, l)| l));
                    b = b.label(ToolLabel::new(labels).servers(servers).tools(tools));
                }
                let policy = b.build().unwrap();
                prop_assert_eq!(policy.labels_of(server, tool), policy.labels_of_linear(server, tool));
            }
        }

        fn list() -> impl Strategy<Value = Vec<&'static str>> {
            proptest::collection::vec(proptest::sample::select(&GLOBS[..]), 0..3)
        }
    }
}
