//! Client access that lasts and can be taken back: gateway-issued API tokens and
//! gateway sessions.
//!
//! The 2026-07-28 revision of MCP has no protocol sessions, so the gateway keeps its own.
//! A **gateway session** is opened the first time an authenticated credential calls an
//! endpoint. It is bound to that principal, ends when the credential expires, and can
//! be revoked: the next request is refused, and open streams close.
//!
//! - [`ClientCredential`] is what a front door reports after authenticating a request:
//!   a stable id for the credential (an API token id, `jwt:<issuer>#<subject>`), when it
//!   was issued and when it expires. The id names the whole delegation chain
//!   (`jwt:<issuer>#<subject>#act:<agent>` for an agent acting for a user), because
//!   everything that belongs to a session is keyed on it.
//! - [`Sessions`] admits requests into sessions, lists and revokes them. With the
//!   `sqlite` feature it can journal them to an [`AccessStore`] so that
//!   `mcp-guard sessions list|revoke` in another process sees and ends them.
//! - [`tokens`] mints and checks gateway API tokens (`mcpg_<id>_<secret>`); only a
//!   SHA-256 digest of the secret is stored, compared in constant time.
//!
//! # Revocation semantics
//! A session is keyed by (credential id, endpoint) and bound to the principal's
//! delegation chain ([`Principal::chain`](crate::Principal::chain)). Revoking it refuses that
//! credential on that endpoint from then on, except a credential *issued after* the
//! revocation (a JWT the identity provider minted after the user signed in again),
//! which opens a new session. Revoking an API token refuses it everywhere.

#[cfg(feature = "sqlite")]
pub mod oauth;
mod sessions;
#[cfg(feature = "sqlite")]
mod store;
pub mod tokens;

use std::sync::Arc;
use std::time::SystemTime;

pub use sessions::{Session, SessionInfo, SessionRefused, SessionState, Sessions};
#[cfg(feature = "sqlite")]
pub use store::{AccessStore, StoreError, TokenRefused};
pub use tokens::TokenRecord;

/// The credential a request was authenticated with, as the front door saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientCredential {
    /// A stable identifier (never the secret): `token:<id>`, `jwt:<iss>#<sub>`,
    /// `jwt:<iss>#<sub>#act:<agent>`, `grant:<id>`, `config:<n>`, `stdio:<pid>`. It must
    /// differ between delegation chains: sessions, their processes and revocations are
    /// keyed on it.
    pub id: Arc<str>,
    /// When it was issued, if known.
    pub issued_at: Option<SystemTime>,
    /// When it stops being valid, if ever.
    pub expires_at: Option<SystemTime>,
}

impl ClientCredential {
    /// A credential with no known issue or expiry time.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self {
            id: id.into(),
            issued_at: None,
            expires_at: None,
        }
    }

    /// Sets the issue time.
    #[must_use]
    pub fn issued_at(mut self, t: Option<SystemTime>) -> Self {
        self.issued_at = t;
        self
    }

    /// Sets the expiry.
    #[must_use]
    pub fn expires_at(mut self, t: Option<SystemTime>) -> Self {
        self.expires_at = t;
        self
    }
}

/// Parses a duration such as `30d`, `12h`, `15m`, `90s` or `2w`.
///
/// # Errors
/// A message naming what is wrong.
///
/// # Example
/// ```
/// use mcp_guard_core::access::parse_duration;
/// assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86_400);
/// assert!(parse_duration("30").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?}: add a unit (s, m, h, d or w), e.g. 30d"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by s, m, h, d or w"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h, d or w)")),
    };
    if n == 0 {
        return Err(format!("{s:?}: a duration must be positive"));
    }
    n.checked_mul(mult)
        .filter(|secs| *secs <= 10 * 365 * 86_400)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: longer than ten years"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_and_their_errors() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("2w").unwrap().as_secs(), 14 * 86_400);
        assert_eq!(
            parse_duration("30").unwrap_err(),
            "\"30\": add a unit (s, m, h, d or w), e.g. 30d"
        );
        assert_eq!(
            parse_duration("3y").unwrap_err(),
            "\"3y\": unknown unit \"y\" (use s, m, h, d or w)"
        );
        assert_eq!(
            parse_duration("0d").unwrap_err(),
            "\"0d\": a duration must be positive"
        );
        assert_eq!(
            parse_duration("4000d").unwrap_err(),
            "\"4000d\": longer than ten years"
        );
        assert_eq!(
            parse_duration("d").unwrap_err(),
            "\"d\": expected a number followed by s, m, h, d or w"
        );
    }
}
