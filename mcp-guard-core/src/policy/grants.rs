use std::sync::Arc;

use async_trait::async_trait;
use globset::{GlobBuilder, GlobMatcher};

use super::{Decision, Denial, Policy, PolicyError};
use crate::call::{CallContext, Operation};

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

/// One rule: who (principals or roles) may do what (endpoints, servers, names).
///
/// Every list left empty means "any". A grant with neither principals nor roles
/// applies to nobody, so an accidental empty grant opens nothing.
#[derive(Debug, Clone)]
#[must_use]
pub struct Grant {
    name: Option<String>,
    effect: Effect,
    principals: Vec<String>,
    roles: Vec<String>,
    endpoints: Vec<String>,
    servers: Vec<String>,
    names: Vec<String>,
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
            endpoints: Vec::new(),
            servers: Vec::new(),
            names: Vec::new(),
        }
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

    /// Roles, any of which qualifies.
    pub fn roles<I: IntoIterator<Item = S>, S: Into<String>>(mut self, r: I) -> Self {
        self.roles.extend(r.into_iter().map(Into::into));
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

    /// Globs over the upstream's own tool/prompt name or resource URI.
    pub fn names<I: IntoIterator<Item = S>, S: Into<String>>(mut self, n: I) -> Self {
        self.names.extend(n.into_iter().map(Into::into));
        self
    }
}

#[derive(Debug)]
struct CompiledGrant {
    name: Arc<str>,
    effect: Effect,
    principals: Vec<Pattern>,
    roles: Vec<String>,
    endpoints: Vec<Pattern>,
    servers: Vec<Pattern>,
    names: Vec<Pattern>,
}

fn any(patterns: &[Pattern], value: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.is_match(value))
}

impl CompiledGrant {
    fn applies_to(&self, ctx: &CallContext) -> bool {
        let p = &ctx.principal;
        let by_id = !self.principals.is_empty() && self.principals.iter().any(|g| g.is_match(p.id()));
        let by_role = self.roles.iter().any(|r| p.has_role(r));
        by_id || by_role
    }

    fn matches(&self, op: &Operation, ctx: &CallContext) -> bool {
        let Some(target) = &op.target else { return false };
        self.applies_to(ctx)
            && any(&self.endpoints, &ctx.endpoint)
            && any(&self.servers, &target.server)
            && any(&self.names, &target.name)
    }
}

/// The reference policy: allow and deny grants over globs; deny wins; default deny.
///
/// Patterns are compiled once, at [`GrantPolicyBuilder::build`].
#[derive(Debug, Clone)]
pub struct GrantPolicy {
    grants: Arc<[CompiledGrant]>,
}

/// Builds a [`GrantPolicy`].
#[derive(Debug, Default)]
#[must_use]
pub struct GrantPolicyBuilder {
    grants: Vec<Grant>,
}

impl GrantPolicyBuilder {
    /// Adds a grant.
    pub fn grant(mut self, grant: Grant) -> Self {
        self.grants.push(grant);
        self
    }

    /// Compiles every pattern.
    ///
    /// # Errors
    /// [`PolicyError::InvalidRule`] naming the first pattern that does not compile.
    pub fn build(self) -> Result<GrantPolicy, PolicyError> {
        let compile = |v: &[String]| v.iter().map(|s| Pattern::new(s)).collect::<Result<Vec<_>, _>>();
        let grants = self
            .grants
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                Ok(CompiledGrant {
                    name: g
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("grant #{}", i + 1))
                        .into(),
                    effect: g.effect,
                    principals: compile(&g.principals)?,
                    roles: g.roles,
                    endpoints: compile(&g.endpoints)?,
                    servers: compile(&g.servers)?,
                    names: compile(&g.names)?,
                })
            })
            .collect::<Result<Vec<_>, PolicyError>>()?;
        Ok(GrantPolicy {
            grants: grants.into(),
        })
    }
}

impl GrantPolicy {
    /// Starts a builder.
    pub fn builder() -> GrantPolicyBuilder {
        GrantPolicyBuilder::default()
    }

    /// Decides synchronously (the grant policy never waits on anything).
    pub fn decide(&self, op: &Operation, ctx: &CallContext) -> Decision {
        let mut allowed_by = None;
        for g in self.grants.iter().filter(|g| g.matches(op, ctx)) {
            match g.effect {
                Effect::Deny => return Decision::Deny(Denial::by_rule(g.name.clone(), "denied by grant")),
                Effect::Allow => {
                    if allowed_by.is_none() {
                        allowed_by = Some(g.name.clone());
                    }
                }
            }
        }
        match allowed_by {
            Some(rule) => Decision::Allow { rule: Some(rule) },
            None => Decision::Deny(Denial::no_grant()),
        }
    }
}

#[async_trait]
impl Policy for GrantPolicy {
    async fn evaluate(&self, op: &Operation, ctx: &CallContext) -> Result<Decision, PolicyError> {
        Ok(self.decide(op, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Principal, Target, TargetKind};

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
}
