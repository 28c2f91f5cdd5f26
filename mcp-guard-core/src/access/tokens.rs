//! Gateway API tokens: `mcpg_<id>_<secret>`.
//!
//! The id (12 hex digits) names the token in listings and audit records; the secret
//! (32 random bytes, base64url) is shown once, when the token is issued. Only the
//! SHA-256 digest of the secret is kept, and digests are compared in constant time.
//! The fixed prefix lets secret scanners (and the gateway's own redactor) spot a
//! leaked token.

use std::time::SystemTime;

use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::call::Principal;

/// The prefix of every gateway token.
pub const PREFIX: &str = "mcpg_";

/// A token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct TokenRecord {
    /// Public id.
    pub id: String,
    /// Who presents it.
    pub principal: Principal,
    /// Operator's note.
    pub description: Option<String>,
    /// Issued.
    #[serde(serialize_with = "ser_time")]
    pub created: SystemTime,
    /// Expiry.
    #[serde(serialize_with = "ser_time_opt")]
    pub expires: Option<SystemTime>,
    /// Revocation time.
    #[serde(serialize_with = "ser_time_opt")]
    pub revoked: Option<SystemTime>,
}

impl TokenRecord {
    /// The record of a token minted now: valid for `duration` (forever when `None`).
    pub(crate) fn issued_now(
        minted: &MintedToken,
        principal: &Principal,
        duration: Option<std::time::Duration>,
        description: Option<&str>,
    ) -> Self {
        let now = SystemTime::now();
        Self {
            id: minted.id.clone(),
            principal: principal.clone(),
            description: description.map(str::to_owned),
            created: now,
            expires: duration.map(|d| now + d),
            revoked: None,
        }
    }
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::format_rfc3339(*t))
}

#[allow(clippy::ref_option, reason = "serde's serialize_with signature")]
fn ser_time_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}

/// A freshly minted token: give `token` to the client, store `id` and `digest`.
#[derive(Debug)]
#[non_exhaustive]
pub struct MintedToken {
    /// The public id.
    pub id: String,
    /// The whole token, shown once.
    pub token: SecretString,
    /// SHA-256 of the secret part.
    pub digest: [u8; 32],
}

/// Mints a token from the operating system's random source.
///
/// # Errors
/// When the random source fails.
pub fn mint() -> Result<MintedToken, getrandom::Error> {
    mint_prefixed(PREFIX)
}

/// Mints a token with another fixed prefix (the built-in authorization server's
/// access and refresh tokens, one-time sign-in links).
///
/// # Errors
/// When the random source fails.
pub fn mint_prefixed(prefix: &str) -> Result<MintedToken, getrandom::Error> {
    let id = crate::hex::random(6)?;
    let secret = crate::random::base64url(32)?;
    let digest = digest(&secret);
    Ok(MintedToken {
        token: SecretString::from(format!("{prefix}{id}_{secret}")),
        id,
        digest,
    })
}

/// Splits a presented token into (id, secret), or `None` when it is not a gateway
/// token at all.
pub fn split(token: &str) -> Option<(&str, &str)> {
    split_prefixed(PREFIX, token)
}

/// [`split`] for a token minted by [`mint_prefixed`] with `prefix`.
pub fn split_prefixed<'a>(prefix: &str, token: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = token.strip_prefix(prefix)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 12 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

/// SHA-256 of a token's secret part.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two digests in constant time.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_split_and_verify() {
        let t = mint().unwrap();
        #[expect(clippy::disallowed_methods, reason = "test reads the token it minted")]
        let s = secrecy::ExposeSecret::expose_secret(&t.token).to_owned();
        let (id, secret) = split(&s).unwrap();
        assert_eq!(id, t.id);
        assert!(digests_equal(&digest(secret), &t.digest));
        assert!(!digests_equal(&digest("x"), &t.digest));
        assert_ne!(mint().unwrap().id, t.id);
    }

    #[test]
    fn foreign_strings_are_not_tokens() {
        for s in [
            "",
            "mcpg_",
            "mcpg_abc_def",
            "Bearer mcpg_0123456789ab_xxx",
            "mcpg_0123456789AB_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "mcpg_0123456789ab_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
        ] {
            assert!(split(s).is_none(), "{s}");
        }
        assert!(split("mcpg_0123456789ab_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_some());
    }
}
