//! `[rate_limits]`: requests per minute, per principal and per tool.

use serde::Deserialize;

use super::ConfigError;

/// `[rate_limits]`: requests per minute with a burst; every scope is optional.
///
/// ```toml
/// [rate_limits]
/// per_principal = { per_minute = 600, burst = 60 }   # every request of one principal
/// per_tool = { per_minute = 1200 }                  # one tool, all principals together
/// per_principal_tool = { per_minute = 60, burst = 10 }
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RateLimitsSection {
    /// Every request (calls and lists) of one principal.
    pub per_principal: Option<RateConfig>,
    /// Calls to one tool, prompt or resource by all principals together.
    pub per_tool: Option<RateConfig>,
    /// One principal's calls to one tool, prompt or resource.
    pub per_principal_tool: Option<RateConfig>,
}

/// A steady rate and a burst.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateConfig {
    /// Requests per minute (at least 1).
    pub per_minute: u32,
    /// How many may come at once (default: `per_minute`).
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimitsSection {
    /// The scopes by config name.
    pub fn scopes(&self) -> [(&'static str, Option<RateConfig>); 3] {
        [
            ("per_principal", self.per_principal),
            ("per_tool", self.per_tool),
            ("per_principal_tool", self.per_principal_tool),
        ]
    }

    pub(super) fn validate(&self, errors: &mut Vec<ConfigError>) {
        for (name, rate) in self.scopes() {
            let Some(r) = rate else { continue };
            if r.per_minute == 0 {
                errors.push(ConfigError {
                    entry: format!("rate_limits.{name}.per_minute"),
                    message: "must be at least 1".into(),
                });
            }
            if r.burst == Some(0) {
                errors.push(ConfigError {
                    entry: format!("rate_limits.{name}.burst"),
                    message: "must be at least 1".into(),
                });
            }
        }
    }
}
