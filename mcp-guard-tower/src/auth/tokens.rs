use async_trait::async_trait;
use std::sync::Arc;

use mcp_guard_core::access::{AccessStore, tokens};
use mcp_guard_core::cluster::{Refused, SharedTokens};

use super::{AuthError, Authenticate, Authenticated, bearer};

/// Gateway-issued API tokens (`mcpg_…`) checked against an [`AccessStore`] (or, in
/// cluster mode, any [`SharedTokens`]): each has an access duration and can be revoked
/// while the gateway runs.
#[derive(Debug, Clone)]
pub struct ApiTokens {
    store: Arc<dyn SharedTokens>,
}

impl ApiTokens {
    /// Tokens of `store`.
    pub fn new(store: AccessStore) -> Self {
        Self {
            store: Arc::new(store),
        }
    }

    /// Tokens of a shared store (cluster mode).
    pub fn shared(store: Arc<dyn SharedTokens>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Authenticate for ApiTokens {
    async fn authenticate(&self, parts: &http::request::Parts) -> Result<Authenticated, AuthError> {
        let token = bearer(parts).ok_or(AuthError::Missing)?;
        if !token.starts_with(tokens::PREFIX) {
            return Err(AuthError::Unrecognised);
        }
        match self
            .store
            .verify(token)
            .await
            .map_err(|e| AuthError::Unavailable(Box::new(e)))?
        {
            Ok((principal, credential)) => Ok(Authenticated::new(principal, credential)),
            Err(Refused::Revoked) => Err(AuthError::Revoked),
            Err(Refused::Expired) => Err(AuthError::Expired),
            Err(_) => Err(AuthError::Invalid("unknown gateway token".into())),
        }
    }
}

/// Access tokens of the built-in authorization server (`mcpo_…`), checked against
/// its grants in an [`AccessStore`]. A token is good only on the endpoint its grant
/// names (its RFC 8707 resource), only until the grant's chosen duration ends, and
/// not after the grant or its gateway session is revoked.
#[derive(Debug, Clone)]
pub struct GrantTokens {
    store: AccessStore,
}

impl GrantTokens {
    /// Grants of `store`.
    pub fn new(store: AccessStore) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Authenticate for GrantTokens {
    async fn authenticate(&self, parts: &http::request::Parts) -> Result<Authenticated, AuthError> {
        use mcp_guard_core::access::oauth::{ACCESS_PREFIX, GrantRefused};
        let token = bearer(parts).ok_or(AuthError::Missing)?;
        if !token.starts_with(ACCESS_PREFIX) {
            return Err(AuthError::Unrecognised);
        }
        let grant = match self
            .store
            .verify_access_token(token)
            .map_err(|e| AuthError::Unavailable(Box::new(e)))?
        {
            Ok(g) => g,
            Err(GrantRefused::Revoked) => return Err(AuthError::Revoked),
            Err(GrantRefused::Expired) => return Err(AuthError::Expired),
            Err(_) => return Err(AuthError::Invalid("unknown access token".into())),
        };
        let endpoint = parts
            .uri
            .path()
            .strip_prefix("/mcp/")
            .map(|rest| rest.split('/').next().unwrap_or(""));
        if endpoint != Some(grant.endpoint.as_str()) {
            return Err(AuthError::Invalid(format!(
                "the token was granted for endpoint {}",
                grant.endpoint
            )));
        }
        let credential = grant.credential();
        Ok(Authenticated::new(grant.principal, credential))
    }
}
