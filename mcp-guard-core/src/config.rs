//! Configuration as data: serde types with `deny_unknown_fields`, then
//! [`GatewayConfig::validate`], whose errors name the offending entry.
//!
//! The file syntax (TOML) is the binary's business; these types only describe the shape.
//! Secrets never appear inline: values name them as `${NAME}` and are resolved from a
//! [`CredentialStore`](crate::CredentialStore) when a server connects.
//!
//! ```
//! let cfg: mcp_guard_core::config::GatewayConfig = serde_json::from_value(serde_json::json!({
//!     "servers": { "files": { "transport": "stdio", "command": "mcp-files", "args": ["/srv"] } },
//!     "endpoints": { "eng": { "servers": { "files": { "tools": ["read_*"] } } } },
//! }))?;
//! cfg.validate()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod audit;
mod auth;
mod cluster;
mod console;
mod credentials;
mod endpoint;
mod flow;
mod forward;
mod gateway;
mod grant;
mod pinning;
mod rate_limits;
mod server;
mod telemetry;
mod unauthenticated_limits;

pub use audit::*;
pub use auth::*;
pub use cluster::*;
pub use console::*;
pub use credentials::*;
pub use endpoint::*;
pub use flow::*;
pub use forward::*;
pub use gateway::*;
pub use grant::*;
pub use pinning::*;
pub use rate_limits::*;
pub use server::*;
pub use telemetry::*;
pub use unauthenticated_limits::*;

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// The whole gateway configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Listener, naming, HTTP hygiene.
    pub gateway: GatewaySection,
    /// Client authentication.
    pub auth: AuthSection,
    /// Upstream servers by id.
    pub servers: BTreeMap<String, ServerConfig>,
    /// Endpoints by name.
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// Access grants (default deny).
    pub grants: Vec<GrantConfig>,
    /// Requests per minute, per principal and per tool.
    pub rate_limits: RateLimitsSection,
    /// Tool pinning and hostile-text checks.
    pub pinning: PinningSection,
    /// The audit trail.
    pub audit: AuditSection,
    /// Where upstream credentials are stored.
    pub credentials: CredentialsSection,
    /// Limits on traffic before authentication, per source address.
    pub unauthenticated_limits: UnauthenticatedLimitsSection,
    /// The operator console in the browser.
    pub console: ConsoleSection,
    /// OpenTelemetry traces (off by default).
    pub telemetry: TelemetrySection,
    /// Flow labels of tools (`[[labels]]`), for flow rules.
    pub labels: Vec<LabelConfig>,
    /// Flow rules (`[[flow_rules]]`): what a session may do after what it has done.
    pub flow_rules: Vec<FlowRuleConfig>,
    /// How a person's approval is asked for (`[approval]`).
    pub approval: ApprovalSection,
    /// Cluster mode: shared state on PostgreSQL (off by default).
    pub cluster: Option<ClusterSection>,
}

/// A configuration problem, naming the entry (`servers.github.env.TOKEN`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// Dotted path of the entry.
    pub entry: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.entry, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found, so an operator fixes them in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Whether `s` is a legal MCP tool name fragment: `[A-Za-z0-9_.-]+`.
pub fn is_name_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Non-fatal findings of [`GatewayConfig::validate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Warnings(pub Vec<ConfigError>);

/// The serde default of switches that are on unless switched off.
fn yes() -> bool {
    true
}

impl GatewayConfig {
    /// Checks everything that can be checked without connecting: each section's own
    /// values (in its module), then what one section requires of another.
    ///
    /// # Errors
    /// Every problem found, each naming its entry.
    pub fn validate(&self) -> Result<Warnings, ConfigErrors> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let stdio = self
            .servers
            .values()
            .filter(|s| matches!(s, ServerConfig::Stdio(_)))
            .count();
        if self.gateway.max_upstream_processes < stdio.max(1) {
            errors.push(ConfigError {
                entry: "gateway.max_upstream_processes".into(),
                message: format!(
                    "{} is too low: {stdio} stdio server(s) each keep one process running, and at least 1 is needed",
                    self.gateway.max_upstream_processes
                ),
            });
        }
        self.gateway.validate(&mut errors);
        let has_public_url = self.gateway.public_url.is_some();
        for (id, server) in &self.servers {
            server.validate(
                id,
                &self.gateway.separator,
                has_public_url,
                &mut errors,
                &mut warnings,
            );
        }
        self.credentials.validate(&mut errors);
        for (name, ep) in &self.endpoints {
            ep.validate(name, &self.servers, &mut errors, &mut warnings);
        }
        for (i, g) in self.grants.iter().enumerate() {
            g.validate(i, &mut errors, &mut warnings);
        }
        self.auth
            .validate(self.gateway.public_url.as_deref(), &mut errors);
        self.gateway.validate_public_url(&mut errors);
        if self.grants.is_empty() && !self.endpoints.is_empty() {
            warnings.push(ConfigError {
                entry: "grants".into(),
                message: "no grants: every call will be refused (default deny)".into(),
            });
        }
        self.audit.validate(&mut errors, &mut warnings);
        self.validate_flow(&mut errors, &mut warnings);
        self.telemetry.validate(&mut errors, &mut warnings);
        self.rate_limits.validate(&mut errors);
        self.unauthenticated_limits.validate(&mut errors);
        self.console.validate(self.auth.server.is_some(), &mut errors);
        if let Some(c) = &self.cluster {
            c.validate(&mut errors);
        }
        if errors.is_empty() {
            Ok(Warnings(warnings))
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests;
