use async_trait::async_trait;
use secrecy::SecretString;

use super::{Credential, CredentialError, CredentialKey, CredentialMode, CredentialStore};

/// Shared credentials from the gateway's own environment: `${NAME}` reads `NAME`.
///
/// Personal credentials are never read from the environment.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EnvCredentialStore {
    prefix: String,
}

impl EnvCredentialStore {
    /// Reads `NAME` for `${NAME}`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `PREFIX` + `NAME` for `${NAME}` (e.g. `MCP_GUARD_`).
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }
}

#[async_trait]
impl CredentialStore for EnvCredentialStore {
    async fn get(&self, key: &CredentialKey) -> Result<Option<Credential>, CredentialError> {
        if key.mode != CredentialMode::Shared {
            return Ok(None);
        }
        let var = format!("{}{}", self.prefix, key.name);
        Ok(std::env::var(var)
            .ok()
            .map(|v| Credential::new(SecretString::from(v))))
    }
}
