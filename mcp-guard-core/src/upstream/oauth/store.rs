//! Where a server's OAuth tokens live: rmcp's one-set credential store over one
//! (server, principal) entry of the gateway's credential store.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use rmcp::transport::auth::{AuthError, CredentialRefreshGuard, StoredCredentials};
use secrecy::{ExposeSecret, SecretString};

use crate::credential::{CredentialError, CredentialKey, CredentialStore, CredentialWriter};
use crate::redact::KnownSecrets;

use super::now_secs;

fn store_err(e: impl fmt::Display) -> AuthError {
    AuthError::CredentialStoreError(e.to_string())
}

/// rmcp's one-set credential store over one (server, principal) entry of ours.
pub(super) struct TokenStore {
    pub(super) store: Arc<dyn CredentialWriter>,
    pub(super) tokens: CredentialKey,
    pub(super) reauth: CredentialKey,
    pub(super) known: Option<Arc<KnownSecrets>>,
    pub(super) guard: Arc<tokio::sync::Mutex<()>>,
    /// The authorization server tokens saved here come from (stored beside them).
    pub(super) authority: Option<String>,
}

/// The field of a stored token set naming the authorization server it came from.
pub(super) const AUTHORITY_FIELD: &str = "mcp_guard_authority";

impl TokenStore {
    /// Every token handed to or obtained from rmcp joins the redactor's known secrets.
    fn scrub(&self, c: &StoredCredentials) {
        let Some(known) = &self.known else { return };
        let Ok(v) = serde_json::to_value(c) else { return };
        for field in ["access_token", "refresh_token"] {
            if let Some(t) = v["token_response"][field].as_str() {
                known.add(&SecretString::from(t.to_owned()));
            }
        }
    }
}

pub(super) async fn mark_reauth(
    store: &dyn CredentialWriter,
    key: &CredentialKey,
    reason: &str,
) -> Result<(), CredentialError> {
    let value = serde_json::json!({ "since": now_secs(), "reason": reason }).to_string();
    store.put(key, &SecretString::from(value)).await
}

#[async_trait]
impl rmcp::transport::auth::CredentialStore for TokenStore {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        let Some(c) = self.store.get(&self.tokens).await.map_err(store_err)? else {
            return Ok(None);
        };
        #[expect(clippy::disallowed_methods, reason = "parsing the stored token set")]
        let parsed: StoredCredentials = serde_json::from_str(c.secret.expose_secret())
            .map_err(|_| store_err("unreadable OAuth tokens"))?;
        self.scrub(&parsed);
        Ok(Some(parsed))
    }

    async fn save(&self, credentials: StoredCredentials) -> Result<(), AuthError> {
        self.scrub(&credentials);
        let mut value = serde_json::to_value(&credentials).map_err(store_err)?;
        if let (Some(a), Some(o)) = (&self.authority, value.as_object_mut()) {
            o.insert(AUTHORITY_FIELD.to_owned(), a.clone().into());
        }
        let text = value.to_string();
        self.store
            .put(&self.tokens, &SecretString::from(text))
            .await
            .map_err(store_err)?;
        self.store.delete(&self.reauth).await.map_err(store_err)?;
        Ok(())
    }

    async fn clear(&self) -> Result<(), AuthError> {
        self.store.delete(&self.tokens).await.map_err(store_err).map(drop)
    }

    async fn on_refresh_token_rejected(&self, _credentials: &StoredCredentials) -> Result<(), AuthError> {
        tracing::warn!(credential = %self.tokens, "the authorization server rejected the refresh token");
        mark_reauth(
            &*self.store,
            &self.reauth,
            "the authorization server rejected the refresh token",
        )
        .await
        .map_err(store_err)
    }

    async fn acquire_refresh_guard(&self) -> Result<Option<CredentialRefreshGuard>, AuthError> {
        Ok(Some(CredentialRefreshGuard::new(
            self.guard.clone().lock_owned().await,
        )))
    }
}

/// A dynamically registered client, kept for later sign-ins through the same
/// authorization server and redirect URI.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct RegisteredClient {
    pub(super) client_id: String,
    pub(super) client_secret: Option<String>,
    pub(super) redirect_uri: String,
    pub(super) issuer: Option<String>,
}
