//! `[console]`: the operator console in the browser, and the per-endpoint tool switch
//! it writes (`disabled_tools`).

use serde::Deserialize;

use super::ConfigError;

/// `[console]`: the operator's web pages at `/console` (servers, endpoints and their
/// tools, approvals, sessions, the audit trail, the configuration). Users sign in
/// through the built-in authorization server (`[auth.server]`: a one-time link or
/// OpenID Connect); only those holding `admin_role` may change anything, those holding
/// `auditor_role` see everything and change nothing, everyone else is refused.
///
/// ```toml
/// [console]
/// enabled = true
/// admin_role = "admin"        # may change settings, approve, revoke
/// auditor_role = "auditor"    # sees everything, changes nothing
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ConsoleSection {
    /// Serve the console (default false). Needs `[auth.server]`, which signs users in.
    pub enabled: bool,
    /// The role whose holders may change things. Default `admin`.
    pub admin_role: String,
    /// The role whose holders may look at everything and change nothing. Default
    /// `auditor`.
    pub auditor_role: String,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            enabled: false,
            admin_role: "admin".to_owned(),
            auditor_role: "auditor".to_owned(),
        }
    }
}

impl ConsoleSection {
    pub(super) fn validate(&self, has_auth_server: bool, errors: &mut Vec<ConfigError>) {
        if !self.enabled {
            return;
        }
        if !has_auth_server {
            errors.push(ConfigError {
                entry: "console.enabled".into(),
                message:
                    "the console signs users in through the built-in authorization server: add [auth.server]"
                        .into(),
            });
        }
        for (field, role) in [
            ("admin_role", &self.admin_role),
            ("auditor_role", &self.auditor_role),
        ] {
            if role.trim().is_empty() || role == "*" {
                errors.push(ConfigError {
                    entry: format!("console.{field}"),
                    message: "must name a role (not empty, not \"*\")".into(),
                });
            }
        }
        if self.admin_role == self.auditor_role {
            errors.push(ConfigError {
                entry: "console.auditor_role".into(),
                message: "must differ from console.admin_role (auditors change nothing)".into(),
            });
        }
    }
}

/// Checks an endpoint server's `disabled_tools`: exact tool names (MCP's
/// `[A-Za-z0-9_.-]`, 1 to 128 characters), each once.
pub(crate) fn check_disabled_tools(entry: &str, names: &[String], errors: &mut Vec<ConfigError>) {
    for (i, n) in names.iter().enumerate() {
        let valid = (1..=128).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            errors.push(ConfigError {
                entry: format!("{entry}.disabled_tools"),
                message: format!("{n:?} is not a tool name (1 to 128 of [A-Za-z0-9_.-])"),
            });
        } else if names[..i].contains(n) {
            errors.push(ConfigError {
                entry: format!("{entry}.disabled_tools"),
                message: format!("{n:?} is named twice"),
            });
        }
    }
}
