use async_trait::async_trait;
use mcp_guard_core::access::{AccessStore, TokenRefused, tokens};

use super::{AuthError, Authenticate, Authenticated, bearer};

/// Gateway-issued API tokens (`mcpg_…`) checked against an [`AccessStore`]: each has
/// an access duration and can be revoked while the gateway runs.
#[derive(Debug, Clone)]
pub struct ApiTokens {
    store: AccessStore,
}

impl ApiTokens {
    /// Tokens of `store`.
    pub fn new(store: AccessStore) -> Self {
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
        // An indexed lookup in a local file: microseconds, fine on the async thread.
        match self
            .store
            .verify_token(token)
            .map_err(|e| AuthError::Unavailable(Box::new(e)))?
        {
            Ok((principal, credential)) => Ok(Authenticated::new(principal, credential)),
            Err(TokenRefused::Revoked) => Err(AuthError::Revoked),
            Err(TokenRefused::Expired) => Err(AuthError::Expired),
            Err(_) => Err(AuthError::Invalid("unknown gateway token".into())),
        }
    }
}
