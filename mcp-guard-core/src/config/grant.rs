//! `[[grants]]`: who may do what, under which conditions.

use serde::Deserialize;

use super::{ApprovalMode, ConfigError};
use crate::call::{PrincipalKind, TargetKind};
use crate::policy::{Condition, Pattern, Subject, Test};

/// `[[grants]]`: who may do what, under which conditions.
///
/// ```toml
/// [[grants]]
/// name = "eng-create"
/// roles = ["engineer"]
/// servers = ["github"]
/// kinds = ["tool"]                          # tool | prompt | resource | template
/// names = ["create_*"]
/// principal_kind = "user"                   # or "agent"
/// endpoint = { glob = "engineering-*" }     # eq | ne | glob | in, optional not = true
///
/// [[grants.when]]                           # every condition must hold
/// arg = "/repo"                             # a JSON pointer into the call's arguments
/// in = ["infra", "docs"]
///
/// [[grants.when]]
/// attr = "team"                             # a principal attribute
/// eq = "platform"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct GrantConfig {
    /// A name for audit records and `explain`.
    pub name: Option<String>,
    /// `allow` (default) or `deny` (wins).
    pub effect: EffectConfig,
    /// Principal id globs.
    pub principals: Vec<String>,
    /// Roles (exact names); `"*"` stands for every principal.
    pub roles: Vec<String>,
    /// Only users or only agents.
    pub principal_kind: Option<PrincipalKind>,
    /// Endpoint globs.
    pub endpoints: Vec<String>,
    /// A test on the endpoint name.
    pub endpoint: Option<TestConfig>,
    /// Server id globs.
    pub servers: Vec<String>,
    /// What kinds of target the grant covers; empty: all.
    pub kinds: Vec<KindConfig>,
    /// Tool/prompt name or resource URI globs (upstream names).
    pub names: Vec<String>,
    /// Conditions on principal attributes and call arguments; all must hold.
    pub when: Vec<ConditionConfig>,
    /// `"required"`: an allow that takes effect once a person approves the call.
    pub approval: Option<ApprovalMode>,
}

impl GrantConfig {
    /// Checks of grant number `i`.
    pub(super) fn validate(&self, i: usize, errors: &mut Vec<ConfigError>, warnings: &mut Vec<ConfigError>) {
        let g = self;
        let entry = format!(
            "grants[{i}]{}",
            g.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
        for globs in [&g.principals, &g.endpoints, &g.servers, &g.names] {
            for p in globs {
                if let Err(e) = Pattern::new(p) {
                    errors.push(ConfigError {
                        entry: entry.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
        if let Some(t) = &g.endpoint
            && let Err((suffix, message)) = t.endpoint_condition()
        {
            errors.push(ConfigError {
                entry: format!("grants[{i}].endpoint{suffix}"),
                message,
            });
        }
        for (j, w) in g.when.iter().enumerate() {
            if let Err((suffix, message)) = w.condition() {
                errors.push(ConfigError {
                    entry: format!("grants[{i}].when[{j}]{suffix}"),
                    message,
                });
            }
        }
        if g.principals.is_empty() && g.roles.is_empty() {
            warnings.push(ConfigError {
                entry,
                message: "names no principals or roles, so it applies to nobody".into(),
            });
        }
    }
}

/// A kind of target in `grants.kinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum KindConfig {
    /// Tools.
    Tool,
    /// Prompts.
    Prompt,
    /// Concrete resources.
    Resource,
    /// Resource templates.
    Template,
}

impl From<KindConfig> for TargetKind {
    fn from(k: KindConfig) -> Self {
        match k {
            KindConfig::Tool => Self::Tool,
            KindConfig::Prompt => Self::Prompt,
            KindConfig::Resource => Self::Resource,
            KindConfig::Template => Self::ResourceTemplate,
        }
    }
}

/// A test: exactly one of `eq`, `ne`, `glob`, `in`, optionally `not = true`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TestConfig {
    /// Equal to.
    pub eq: Option<serde_json::Value>,
    /// Not equal to (an absent value is not equal).
    pub ne: Option<serde_json::Value>,
    /// A string matching the glob.
    pub glob: Option<String>,
    /// Equal to one of.
    #[serde(rename = "in")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// Inverts the test.
    pub not: bool,
}

/// `[[grants.when]]`: a test on a principal attribute (`attr`) or a call argument
/// (`arg`, a JSON pointer), with exactly one of `eq`, `ne`, `glob`, `in`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ConditionConfig {
    /// A JSON pointer into the arguments (`/repo`).
    pub arg: Option<String>,
    /// A principal attribute key (`team`).
    pub attr: Option<String>,
    /// Equal to.
    pub eq: Option<serde_json::Value>,
    /// Not equal to (an absent value is not equal).
    pub ne: Option<serde_json::Value>,
    /// A string matching the glob.
    pub glob: Option<String>,
    /// Equal to one of.
    #[serde(rename = "in")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// Inverts the test.
    pub not: bool,
}

/// Builds the test of a condition: (error entry suffix, message) on failure.
fn test_of(
    eq: Option<&serde_json::Value>,
    ne: Option<&serde_json::Value>,
    glob: Option<&String>,
    one_of: Option<&Vec<serde_json::Value>>,
    strings_only: bool,
) -> Result<Test, (&'static str, String)> {
    let given = [eq.is_some(), ne.is_some(), glob.is_some(), one_of.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given != 1 {
        return Err(("", "give exactly one of eq, ne, glob, in".into()));
    }
    let scalar = |v: &serde_json::Value| match v {
        serde_json::Value::String(_) => true,
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) | serde_json::Value::Null => !strings_only,
        _ => false,
    };
    let what = if strings_only {
        "a string"
    } else {
        "a string, number or boolean"
    };
    if let Some(v) = eq {
        return if scalar(v) {
            Ok(Test::Eq(v.clone()))
        } else {
            Err((".eq", format!("must be {what}")))
        };
    }
    if let Some(v) = ne {
        return if scalar(v) {
            Ok(Test::Ne(v.clone()))
        } else {
            Err((".ne", format!("must be {what}")))
        };
    }
    if let Some(g) = glob {
        return match Pattern::new(g) {
            Ok(_) => Ok(Test::Glob(g.clone())),
            Err(e) => Err((".glob", e.to_string())),
        };
    }
    let vs = one_of.map(Vec::as_slice).unwrap_or_default();
    if vs.iter().all(scalar) {
        Ok(Test::In(vs.to_vec()))
    } else {
        Err((".in", format!("every value must be {what}")))
    }
}

impl TestConfig {
    /// The condition this test puts on the endpoint name.
    ///
    /// # Errors
    /// `(entry suffix, message)` when the test is malformed.
    pub fn endpoint_condition(&self) -> Result<Condition, (&'static str, String)> {
        let t = test_of(
            self.eq.as_ref(),
            self.ne.as_ref(),
            self.glob.as_ref(),
            self.one_of.as_ref(),
            true,
        )?;
        let c = Condition::new(Subject::Endpoint, t);
        Ok(if self.not { c.negate() } else { c })
    }
}

impl ConditionConfig {
    /// The condition this entry describes.
    ///
    /// # Errors
    /// `(entry suffix, message)` when the entry is malformed.
    pub fn condition(&self) -> Result<Condition, (&'static str, String)> {
        let subject = match (&self.arg, &self.attr) {
            (Some(p), None) => {
                if !p.starts_with('/') {
                    return Err((
                        ".arg",
                        format!("{p:?} is not a JSON pointer (it starts with '/', e.g. \"/repo\")"),
                    ));
                }
                Subject::Argument(p.clone())
            }
            (None, Some(k)) => Subject::Attribute(k.clone()),
            _ => return Err(("", "give exactly one of arg, attr".into())),
        };
        let strings_only = matches!(subject, Subject::Attribute(_));
        let t = test_of(
            self.eq.as_ref(),
            self.ne.as_ref(),
            self.glob.as_ref(),
            self.one_of.as_ref(),
            strings_only,
        )?;
        let c = Condition::new(subject, t);
        Ok(if self.not { c.negate() } else { c })
    }
}

/// Grant effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EffectConfig {
    /// Allow.
    #[default]
    Allow,
    /// Deny.
    Deny,
}
