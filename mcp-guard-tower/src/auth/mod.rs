//! Client authentication at the HTTP front door.
//!
//! An [`Authenticate`] turns a request's headers into an [`Authenticated`]: the
//! [`Principal`] and the [`ClientCredential`] it presented (whose id and expiry drive
//! the gateway session). Adapters:
//!
//! - [`StaticTokens`]: bearer tokens from configuration, kept as SHA-256 digests;
//! - [`ApiTokens`] (feature `sqlite`): gateway-issued tokens with an access duration,
//!   revocable (`mcp-guard tokens issue|list|revoke`);
//! - [`JwtBearer`]: JWTs from an identity provider, checked against a JWKS (file or
//!   URL) for issuer, audience (the endpoint's resource URI, RFC 8707), `exp`/`nbf`,
//!   an algorithm allow-list and required scopes;
//! - [`AnyOf`]: tries several in order;
//! - [`dangerous::Anonymous`]: no authentication at all (named for what it is).
//!
//! Failures carry a reason for the audit trail and the log, never for the client,
//! which sees `401` with `WWW-Authenticate: Bearer` (RFC 6750 / RFC 9728) or `403`
//! `insufficient_scope`.

mod jwt;
#[cfg(feature = "sqlite")]
mod tokens;

use std::sync::Arc;

use async_trait::async_trait;
use http::header;
use mcp_guard_core::Principal;
use mcp_guard_core::access::ClientCredential;
use sha2::{Digest, Sha256};

pub use jwt::{JwksSource, JwtBearer, JwtSettings, JwtSetupError};
#[cfg(feature = "sqlite")]
pub use tokens::{ApiTokens, GrantTokens};

/// A request's authenticated caller.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Authenticated {
    /// Who.
    pub principal: Principal,
    /// With what (drives the gateway session).
    pub credential: ClientCredential,
}

impl Authenticated {
    /// `principal` authenticated with `credential`.
    pub fn new(principal: Principal, credential: ClientCredential) -> Self {
        Self {
            principal,
            credential,
        }
    }
}

/// Why a client could not be authenticated. The reason is for logs and the audit
/// trail, not the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credential was presented.
    #[error("no credential presented")]
    Missing,
    /// A credential this authenticator does not handle (another in an [`AnyOf`] may).
    #[error("unrecognised credential")]
    Unrecognised,
    /// The credential is not valid.
    #[error("invalid credential: {0}")]
    Invalid(String),
    /// The credential's access duration is over.
    #[error("credential expired")]
    Expired,
    /// The request carries its credential the wrong way (in the query string).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The credential or its session was revoked.
    #[error("credential revoked")]
    Revoked,
    /// Valid, but without a scope the gateway requires (403).
    #[error("insufficient scope (requires {required})")]
    InsufficientScope {
        /// The space-separated scopes required.
        required: String,
    },
    /// The authenticator could not decide (its store or key source failed); refused.
    #[error("authentication unavailable")]
    Unavailable(#[source] mcp_guard_core::BoxError),
}

impl AuthError {
    /// The RFC 6750 `error` code, when one applies.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Missing => None,
            Self::InsufficientScope { .. } => Some("insufficient_scope"),
            Self::InvalidRequest(_) => Some("invalid_request"),
            _ => Some("invalid_token"),
        }
    }
}

/// Turns an HTTP request into an authenticated caller.
#[async_trait]
pub trait Authenticate: Send + Sync {
    /// Authenticates the request.
    ///
    /// # Errors
    /// [`AuthError`] when the client is not authenticated.
    async fn authenticate(&self, parts: &http::request::Parts) -> Result<Authenticated, AuthError>;
}

/// The bearer token of a request, if it has exactly one well-formed one.
pub fn bearer(parts: &http::request::Parts) -> Option<&str> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let v = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Static bearer tokens, stored as SHA-256 digests and compared in constant time.
#[derive(Default)]
pub struct StaticTokens {
    tokens: Vec<([u8; 32], Principal)>,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTokens")
            .field("count", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

impl StaticTokens {
    /// No tokens (every request is refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` for `principal`. Only its digest is kept.
    #[must_use]
    pub fn with_token(mut self, token: &secrecy::SecretString, principal: Principal) -> Self {
        #[expect(
            clippy::disallowed_methods,
            reason = "hashing an inbound API token; only the digest is kept"
        )]
        let digest = Sha256::digest(secrecy::ExposeSecret::expose_secret(token).as_bytes());
        self.tokens.push((digest.into(), principal));
        self
    }
}

#[async_trait]
impl Authenticate for StaticTokens {
    async fn authenticate(&self, parts: &http::request::Parts) -> Result<Authenticated, AuthError> {
        let token = bearer(parts).ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (i, (d, p)) in self.tokens.iter().enumerate() {
            if mcp_guard_core::access::tokens::digests_equal(d, &digest) && found.is_none() {
                found = Some((i, p.clone()));
            }
        }
        let (i, principal) = found.ok_or(AuthError::Unrecognised)?;
        Ok(Authenticated::new(
            principal,
            ClientCredential::new(format!("config:{}", i + 1)),
        ))
    }
}

/// Tries each authenticator in order: the first success wins; a refusal by one that
/// recognised the credential (expired, revoked, bad signature) is final.
#[derive(Clone, Default)]
pub struct AnyOf(Vec<Arc<dyn Authenticate>>);

impl std::fmt::Debug for AnyOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AnyOf").field(&self.0.len()).finish()
    }
}

impl AnyOf {
    /// No authenticators (everything is refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one.
    #[must_use]
    pub fn or(mut self, auth: Arc<dyn Authenticate>) -> Self {
        self.0.push(auth);
        self
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[async_trait]
impl Authenticate for AnyOf {
    async fn authenticate(&self, parts: &http::request::Parts) -> Result<Authenticated, AuthError> {
        if bearer(parts).is_none() {
            return Err(if parts.headers.contains_key(header::AUTHORIZATION) {
                AuthError::Invalid("malformed Authorization header".into())
            } else {
                AuthError::Missing
            });
        }
        for a in &self.0 {
            match a.authenticate(parts).await {
                Ok(ok) => return Ok(ok),
                Err(AuthError::Unrecognised | AuthError::Missing) => {}
                Err(e) => return Err(e),
            }
        }
        Err(AuthError::Invalid("no authenticator accepts this token".into()))
    }
}

/// Authentication opt-outs. Everything here weakens the gateway.
pub mod dangerous {
    use super::{AuthError, Authenticate, Authenticated, ClientCredential, Principal, async_trait};

    /// DANGEROUS: every request is made by one principal, with no credential checked.
    /// For a demo on loopback, never for a shared deployment.
    #[derive(Debug, Clone)]
    #[allow(clippy::exhaustive_structs, reason = "a plain newtype")]
    pub struct Anonymous(pub Principal);

    #[async_trait]
    impl Authenticate for Anonymous {
        async fn authenticate(&self, _: &http::request::Parts) -> Result<Authenticated, AuthError> {
            Ok(Authenticated::new(
                self.0.clone(),
                ClientCredential::new("anonymous"),
            ))
        }
    }
}
