use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use secrecy::SecretString;

use super::{Credential, CredentialError, CredentialKey, CredentialStore, CredentialWriter};

/// Credentials held in memory; for tests and embedding. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MemoryCredentialStore {
    map: Arc<RwLock<BTreeMap<CredentialKey, Credential>>>,
}

impl MemoryCredentialStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores (or replaces) a credential.
    pub fn set(&self, key: CredentialKey, secret: SecretString) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, Credential::new(secret));
    }

    /// Removes a credential; returns whether one was there.
    pub fn remove(&self, key: &CredentialKey) -> bool {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
            .is_some()
    }
}

#[async_trait]
impl CredentialStore for MemoryCredentialStore {
    async fn get(&self, key: &CredentialKey) -> Result<Option<Credential>, CredentialError> {
        Ok(self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned())
    }
}

#[async_trait]
impl CredentialWriter for MemoryCredentialStore {
    async fn put(&self, key: &CredentialKey, value: &SecretString) -> Result<(), CredentialError> {
        self.set(key.clone(), value.clone());
        Ok(())
    }

    async fn delete(&self, key: &CredentialKey) -> Result<bool, CredentialError> {
        Ok(self.remove(key))
    }

    async fn keys(&self, server: &str) -> Result<Vec<CredentialKey>, CredentialError> {
        Ok(self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .filter(|k| *k.server == *server)
            .cloned()
            .collect())
    }
}
