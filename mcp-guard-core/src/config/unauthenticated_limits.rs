//! `[unauthenticated_limits]`: what traffic before authentication may cost.

use serde::Deserialize;

use super::ConfigError;

/// `[unauthenticated_limits]`: what traffic that has not authenticated may cost, per
/// source address (an IPv4 address, or the /64 of an IPv6 one). Every request to the
/// authorization server, the metadata documents or an unknown path counts; at the MCP
/// endpoints only a request that fails to authenticate does, so clients with valid
/// credentials are served however busy their address is. Over a limit: 429 with
/// `Retry-After`. Refused authentications are audited as one `authentication_failed`
/// record per source and interval, with their count.
///
/// ```toml
/// [unauthenticated_limits]
/// per_minute = 600               # requests before authentication, per source
/// burst = 300
/// registrations_per_hour = 60    # dynamic client registrations, per source
/// registration_burst = 20
/// audit_interval_secs = 60       # one aggregated record per source and interval
/// max_sources = 10000            # tracked at once; more share one budget
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct UnauthenticatedLimitsSection {
    /// Requests per minute before authentication, per source. Default 600.
    pub per_minute: Option<u32>,
    /// How many may come at once. Default 300.
    pub burst: Option<u32>,
    /// Dynamic client registrations per hour, per source. Default 60.
    pub registrations_per_hour: Option<u32>,
    /// How many registrations may come at once. Default 20.
    pub registration_burst: Option<u32>,
    /// Seconds between aggregated audit records of refused authentications. Default 60.
    pub audit_interval_secs: Option<u64>,
    /// Sources tracked at once. Default 10000.
    pub max_sources: Option<usize>,
}

impl UnauthenticatedLimitsSection {
    pub(super) fn validate(&self, errors: &mut Vec<ConfigError>) {
        for (entry, v) in [
            ("per_minute", self.per_minute.map(u64::from)),
            ("burst", self.burst.map(u64::from)),
            (
                "registrations_per_hour",
                self.registrations_per_hour.map(u64::from),
            ),
            ("registration_burst", self.registration_burst.map(u64::from)),
            ("audit_interval_secs", self.audit_interval_secs),
            (
                "max_sources",
                self.max_sources.map(|n| u64::try_from(n).unwrap_or(u64::MAX)),
            ),
        ] {
            if v == Some(0) {
                errors.push(ConfigError {
                    entry: format!("unauthenticated_limits.{entry}"),
                    message: "must be at least 1".into(),
                });
            }
        }
    }
}
