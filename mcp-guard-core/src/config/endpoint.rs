//! `[endpoints.NAME]`: the endpoints and what of each server they expose.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, ServerConfig, is_name_safe, yes};
use crate::policy::Pattern;

/// `[endpoints.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// What it is for.
    pub description: Option<String>,
    /// The servers it federates, with what each exposes.
    pub servers: BTreeMap<String, EndpointServerConfig>,
    /// Prefix names with the server id (default true). `false` is allowed only for an
    /// endpoint with exactly one server, whose names then pass through unchanged.
    pub namespace: bool,
    /// Personal-data redaction on this endpoint.
    pub redaction: EndpointRedaction,
}

/// `[endpoints.NAME.redaction]`: which personal data is removed, in which direction.
/// Secrets and the credentials the gateway holds are always scrubbed from responses,
/// and audit records are always redacted for every kind, whatever this says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EndpointRedaction {
    /// Redact arguments before they reach upstreams.
    pub requests: bool,
    /// Redact results before they reach clients.
    pub responses: bool,
    /// Kinds and replacement style (`detect = ["email", ...]`, `style = "placeholder" |
    /// "pseudonym" | "partial"`, `style-overrides`, `e164`).
    pub rules: crate::redact::RedactionConfig,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            description: None,
            servers: BTreeMap::new(),
            namespace: true,
            redaction: EndpointRedaction::default(),
        }
    }
}

/// `[endpoints.NAME.servers.ID]`: what of a server an endpoint exposes.
///
/// Nothing is exposed until named: an empty `tools` list exposes no tool.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EndpointServerConfig {
    /// Switched on for this endpoint (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Tool name globs (upstream names).
    pub tools: Vec<String>,
    /// Prompt name globs.
    pub prompts: Vec<String>,
    /// Resource URI globs (upstream URIs, also matched against templates).
    pub resources: Vec<String>,
    /// Tools switched off on this endpoint whatever `tools` matches (exact upstream
    /// names); what the console's tool switch writes.
    pub disabled_tools: Vec<String>,
}

impl EndpointConfig {
    /// Checks of endpoint `name`; `servers` are the configured servers its entries
    /// must name.
    pub(super) fn validate(
        &self,
        name: &str,
        servers: &BTreeMap<String, ServerConfig>,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<ConfigError>,
    ) {
        let ep = self;
        let entry = format!("endpoints.{name}");
        if !is_name_safe(name) {
            errors.push(ConfigError {
                entry: entry.clone(),
                message: "endpoint names use only [A-Za-z0-9_.-]".into(),
            });
        }
        if !ep.namespace && ep.servers.len() != 1 {
            errors.push(ConfigError {
                entry: format!("{entry}.namespace"),
                message: "namespace = false needs exactly one server (names would collide)".into(),
            });
        }
        if ep.servers.is_empty() {
            warnings.push(ConfigError {
                entry: entry.clone(),
                message: "has no servers".into(),
            });
        }
        for (sid, sel) in &ep.servers {
            let sentry = format!("{entry}.servers.{sid}");
            if !servers.contains_key(sid) {
                errors.push(ConfigError {
                    entry: sentry.clone(),
                    message: format!("unknown server {sid:?} (not under [servers])"),
                });
            }
            for (kind, globs) in [
                ("tools", &sel.tools),
                ("prompts", &sel.prompts),
                ("resources", &sel.resources),
            ] {
                for g in globs {
                    if let Err(e) = Pattern::new(g) {
                        errors.push(ConfigError {
                            entry: format!("{sentry}.{kind}"),
                            message: e.to_string(),
                        });
                    }
                }
            }
            super::check_disabled_tools(&sentry, &sel.disabled_tools, errors);
            if sel.enabled && sel.tools.is_empty() && sel.prompts.is_empty() && sel.resources.is_empty() {
                warnings.push(ConfigError {
                    entry: sentry,
                    message: "exposes nothing (list tools, prompts or resources to enable them)".into(),
                });
            }
        }
    }
}
