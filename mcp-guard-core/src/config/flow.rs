//! `[[labels]]`, `[[flow_rules]]` and `[approval]`: what a tool can do, what a gateway
//! session may do after what it has done (see [`crate::flow`]), and how a person is
//! asked before a call a grant or a rule marks `approval = "required"`.

use serde::Deserialize;

use super::{ConditionConfig, ConfigError, ConfigErrors, EffectConfig, GatewayConfig};
use crate::flow::Label;
use crate::policy::Pattern;

/// `[[labels]]`: flow labels of the tools of some servers. Labels come from here only,
/// never from an upstream's own tool annotations (the upstream writes those).
///
/// ```toml
/// [[labels]]
/// servers = ["issues"]                 # server id globs; each must name a configured server
/// tools = ["get_issue", "search_*"]    # upstream tool name globs (none: every tool)
/// labels = ["untrusted-input"]         # untrusted-input | private-data | egress | destructive
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LabelConfig {
    /// Server id globs; each must match a server under `[servers]`.
    pub servers: Vec<String>,
    /// The upstream's own tool names (globs); empty: every tool of the servers. Each
    /// must match a tool of those servers once they have started.
    pub tools: Vec<String>,
    /// The labels.
    pub labels: Vec<Label>,
}

/// `approval = "required" | "none"` on a grant or a flow rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ApprovalMode {
    /// No approval (the default).
    #[default]
    None,
    /// A person approves the call (or the rest of the session) first.
    Required,
}

/// `[[flow_rules]]`: once a session's earlier calls have carried every label of
/// `after`, a call carrying any label of `calls` is refused, or waits for a person's
/// approval (`approval = "required"`).
///
/// ```toml
/// [[flow_rules]]
/// name = "no-exfiltration"
/// endpoints = ["*"]                              # endpoint globs (none: every endpoint)
/// after = ["untrusted-input", "private-data"]    # the session's history holds all of these
/// calls = ["egress"]                             # the call carries any of these
/// approval = "required"                          # optional: ask a person instead
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct FlowRuleConfig {
    /// A name for audit records and `explain` (default: `flow_rules[N]`).
    pub name: Option<String>,
    /// Endpoint globs; empty: every endpoint.
    pub endpoints: Vec<String>,
    /// Labels the session's earlier calls must all have carried (empty: from the
    /// first call on).
    pub after: Vec<Label>,
    /// Labels of the call, any of which makes the rule apply.
    pub calls: Vec<Label>,
    /// Conditions on principal attributes and call arguments; all must hold.
    pub when: Vec<ConditionConfig>,
    /// `"required"`: ask a person instead of refusing.
    pub approval: Option<ApprovalMode>,
}

/// `[approval]`: asking a person before a call that a grant or a flow rule marks
/// `approval = "required"`.
///
/// ```toml
/// [approval]
/// timeout_secs = 120              # no answer by then: refused
/// max_pending = 100               # approvals waiting at once, in all
/// max_pending_per_session = 5     # of those, per gateway session
/// approver_roles = ["security"]   # may decide anyone's approvals on the approval page
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ApprovalSection {
    /// Seconds an approval waits for its answer. Default 120.
    pub timeout_secs: u64,
    /// Approvals waiting at once, in all. Default 100.
    pub max_pending: usize,
    /// Approvals waiting at once per gateway session. Default 5.
    pub max_pending_per_session: usize,
    /// Roles whose holders may decide any principal's approvals on the approval page
    /// (besides the user the call acts for).
    pub approver_roles: Vec<String>,
}

impl Default for ApprovalSection {
    fn default() -> Self {
        Self {
            timeout_secs: 120,
            max_pending: 100,
            max_pending_per_session: 5,
            approver_roles: Vec::new(),
        }
    }
}

impl GatewayConfig {
    /// Checks `[[labels]]`, `[[flow_rules]]`, `[approval]` and the grants' `approval`.
    pub(super) fn validate_flow(&self, errors: &mut Vec<ConfigError>, warnings: &mut Vec<ConfigError>) {
        let mut err = |entry: String, message: String| errors.push(ConfigError { entry, message });
        for (i, g) in self.grants.iter().enumerate() {
            if g.approval == Some(ApprovalMode::Required) && g.effect == EffectConfig::Deny {
                err(
                    format!("grants[{i}].approval"),
                    "a deny grant refuses; only an allow can ask for approval".into(),
                );
            }
        }
        let a = &self.approval;
        for (field, zero) in [
            ("timeout_secs", a.timeout_secs == 0),
            ("max_pending", a.max_pending == 0),
            ("max_pending_per_session", a.max_pending_per_session == 0),
        ] {
            if zero {
                err(format!("approval.{field}"), "must be at least 1".into());
            }
        }
        for (i, l) in self.labels.iter().enumerate() {
            let entry = format!("labels[{i}]");
            if l.labels.is_empty() {
                err(format!("{entry}.labels"), "names no label".into());
            }
            if l.servers.is_empty() {
                err(
                    format!("{entry}.servers"),
                    "names no server (list the servers whose tools carry these labels)".into(),
                );
            }
            for g in &l.servers {
                match Pattern::new(g) {
                    Err(e) => err(format!("{entry}.servers"), e.to_string()),
                    Ok(p) if !self.servers.keys().any(|id| p.is_match(id)) => err(
                        format!("{entry}.servers"),
                        format!("{g:?} names no server under [servers]"),
                    ),
                    Ok(_) => {}
                }
            }
            for g in &l.tools {
                if let Err(e) = Pattern::new(g) {
                    err(format!("{entry}.tools"), e.to_string());
                }
            }
        }
        for (i, r) in self.flow_rules.iter().enumerate() {
            let entry = format!("flow_rules[{i}]");
            if r.calls.is_empty() {
                err(
                    format!("{entry}.calls"),
                    "names no label of the calls the rule is about".into(),
                );
            }
            if r.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                err(format!("{entry}.name"), "must not be empty".into());
            }
            for g in &r.endpoints {
                match Pattern::new(g) {
                    Err(e) => err(format!("{entry}.endpoints"), e.to_string()),
                    Ok(p) if !self.endpoints.keys().any(|n| p.is_match(n)) => warnings.push(ConfigError {
                        entry: format!("{entry}.endpoints"),
                        message: format!("{g:?} names no endpoint under [endpoints]"),
                    }),
                    Ok(_) => {}
                }
            }
            for (j, w) in r.when.iter().enumerate() {
                if let Err((suffix, message)) = w.condition() {
                    err(format!("{entry}.when[{j}]{suffix}"), message);
                }
            }
            let labelled = self.labels.iter().fold(Vec::new(), |mut acc, l| {
                acc.extend(l.labels.iter().copied());
                acc
            });
            if !r.calls.iter().any(|c| labelled.contains(c)) {
                warnings.push(ConfigError {
                    entry: format!("{entry}.calls"),
                    message: "no tool carries any of these labels ([[labels]]), so the rule never applies"
                        .into(),
                });
            }
        }
    }
}

/// The tools each server serves, by server id: `None` for a server that has not
/// started (its tools cannot be checked yet).
pub type ServedTools = [(String, Option<Vec<String>>)];

/// Checks every `[[labels]]` tool glob against the tools the servers it names serve:
/// a glob that matches none is an error naming the entry (`labels[2].tools`), since a
/// typo would leave the real tool unlabelled and its flow rules silent.
///
/// A glob whose servers have not all started cannot be judged; it is returned as a
/// warning when nothing that started matches it.
///
/// # Errors
/// Every glob that matches no tool of the started servers it names, when all of
/// them started.
pub fn check_label_tools(
    labels: &[LabelConfig],
    served: &ServedTools,
) -> Result<Vec<ConfigError>, ConfigErrors> {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    for (i, l) in labels.iter().enumerate() {
        let servers: Vec<Pattern> = l.servers.iter().filter_map(|g| Pattern::new(g).ok()).collect();
        let mut names = Vec::new();
        let mut unchecked = Vec::new();
        for (id, tools) in served {
            if !servers.iter().any(|p| p.is_match(id)) {
                continue;
            }
            match tools {
                Some(t) => names.extend(t.iter().map(String::as_str)),
                None => unchecked.push(id.as_str()),
            }
        }
        for g in &l.tools {
            let Ok(p) = Pattern::new(g) else { continue };
            if names.iter().any(|n| p.is_match(n)) {
                continue;
            }
            let entry = format!("labels[{i}].tools");
            if unchecked.is_empty() {
                errors.push(ConfigError {
                    entry,
                    message: format!(
                        "{g:?} matches no tool of the servers it names (a typo would leave the real tool unlabelled)"
                    ),
                });
            } else {
                warnings.push(ConfigError {
                    entry,
                    message: format!(
                        "{g:?} matches no tool yet; not checked against {} (not started)",
                        unchecked.join(", ")
                    ),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::super::GatewayConfig;

    fn parse(extra: serde_json::Value) -> GatewayConfig {
        let mut base = serde_json::json!({
            "servers": {
                "issues": { "transport": "stdio", "command": "x" },
                "mail": { "transport": "stdio", "command": "y" },
            },
            "endpoints": { "main": { "servers": { "issues": { "tools": ["*"] }, "mail": { "tools": ["*"] } } } },
        });
        if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn a_label_naming_no_server_is_an_error_naming_the_entry() {
        let c = parse(serde_json::json!({
            "labels": [
                { "servers": ["issues"], "labels": ["untrusted-input"] },
                { "servers": ["mailer"], "tools": ["send"], "labels": ["egress"] },
            ],
        }));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("labels[1].servers") && e.contains("mailer"), "{e}");
        assert!(!e.contains("labels[0]"), "{e}");
    }

    #[test]
    fn a_tool_glob_matching_no_tool_is_an_error_unless_its_server_did_not_start() {
        let c = parse(serde_json::json!({
            "labels": [
                { "servers": ["issues"], "tools": ["read_issue"], "labels": ["untrusted-input"] },
                { "servers": ["mail"], "tools": ["send_mial"], "labels": ["egress"] },
            ],
        }));
        let served = |mail: Option<Vec<String>>| {
            vec![
                ("issues".to_owned(), Some(vec!["read_issue".to_owned()])),
                ("mail".to_owned(), mail),
            ]
        };
        let e = super::check_label_tools(&c.labels, &served(Some(vec!["send_mail".into()])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels[1].tools") && e.contains("send_mial"), "{e}");
        assert!(!e.contains("labels[0]"), "{e}");
        let w = super::check_label_tools(&c.labels, &served(None)).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].message.contains("not started"), "{w:?}");
    }

    #[test]
    fn approval_needs_an_allow_and_limits_of_at_least_one() {
        let c = parse(serde_json::json!({
            "grants": [
                { "roles": ["eng"], "names": ["*"], "approval": "required" },
                { "effect": "deny", "roles": ["eng"], "names": ["x"], "approval": "required" },
            ],
            "approval": { "timeout_secs": 0, "max_pending": 3 },
        }));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("grants[1].approval"), "{e}");
        assert!(!e.contains("grants[0]"), "{e}");
        assert!(e.contains("approval.timeout_secs"), "{e}");
        assert!(!e.contains("approval.max_pending:"), "{e}");
        let bad = serde_json::from_value::<GatewayConfig>(serde_json::json!({
            "flow_rules": [{ "calls": ["egress"], "approval": "maybe" }],
        }));
        assert!(bad.is_err());
    }

    #[test]
    fn unknown_labels_do_not_parse_and_rules_need_calls() {
        let bad = serde_json::from_value::<GatewayConfig>(serde_json::json!({
            "labels": [{ "servers": ["a"], "labels": ["exfiltration"] }],
        }))
        .unwrap_err()
        .to_string();
        assert!(bad.contains("exfiltration"), "{bad}");
        let c = parse(serde_json::json!({
            "labels": [{ "servers": ["mail"], "labels": ["egress"] }],
            "flow_rules": [{ "after": ["untrusted-input"] }, { "calls": ["egress"], "endpoints": ["nope"] }],
        }));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("flow_rules[0].calls"), "{e}");
        assert!(!e.contains("flow_rules[1]"), "{e}");
        let ok = parse(serde_json::json!({
            "labels": [{ "servers": ["mail"], "labels": ["egress"] }],
            "flow_rules": [{ "calls": ["egress"], "endpoints": ["nope"] }],
        }));
        let w = ok.validate().unwrap();
        assert!(w.0.iter().any(|w| w.entry == "flow_rules[0].endpoints"), "{w:?}");
    }
}
