//! Upstream credentials: the [`CredentialStore`] trait, keys, and reference stores.
//!
//! The gateway holds the credentials an upstream needs; a client's own token is never
//! passed through. Every secret is a [`SecretString`]: redacted in `Debug`, zeroed on
//! drop, never `Serialize`.
//!
//! Adapters: [`SealedFileStore`] (the default: an encrypted file), [`EnvCredentialStore`]
//! (shared names from the environment), [`MemoryCredentialStore`] (tests, embedding);
//! combinators: [`FirstOf`] (try stores in order), [`Declared`] (a server's personal
//! names only as the caller's own) and [`Scrubbing`] (every value handed out joins the
//! redactor's known secrets).
//!
//! rmcp's `auth` feature has a trait of the same name that stores one OAuth
//! credential set for one client; this one is keyed by server, mode and principal,
//! and an OAuth adapter can sit on top of it.

mod env;
mod memory;
mod sealed;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::BoxError;

pub use env::EnvCredentialStore;
pub use memory::MemoryCredentialStore;
pub use sealed::{KeySource, SealedFileStore, SealedStoreError, StoreKey, StoredEntry};

/// Shared (one credential for everyone) or personal (one per principal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CredentialMode {
    /// One credential for every principal.
    Shared,
    /// Each principal brings their own.
    Personal,
}

/// Which credential: for what server, in which mode, for whom, under what name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct CredentialKey {
    /// The configured server id.
    pub server: Arc<str>,
    /// Shared or personal.
    pub mode: CredentialMode,
    /// The principal, for personal credentials.
    pub principal: Option<Arc<str>>,
    /// The placeholder name (`GITHUB_TOKEN` for `${GITHUB_TOKEN}`).
    pub name: Arc<str>,
}

impl CredentialKey {
    /// A shared credential `name` of `server`.
    pub fn shared(server: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            server: server.into(),
            mode: CredentialMode::Shared,
            principal: None,
            name: name.into(),
        }
    }

    /// A personal credential `name` of `server` for `principal`.
    pub fn personal(
        server: impl Into<Arc<str>>,
        principal: impl Into<Arc<str>>,
        name: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            server: server.into(),
            mode: CredentialMode::Personal,
            principal: Some(principal.into()),
            name: name.into(),
        }
    }
}

impl fmt::Display for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.principal {
            Some(p) => write!(f, "{}/{} (personal, {p})", self.server, self.name),
            None => write!(f, "{}/{} (shared)", self.server, self.name),
        }
    }
}

/// A secret value with its expiry.
#[derive(Clone)]
#[non_exhaustive]
pub struct Credential {
    /// The secret.
    pub secret: SecretString,
    /// When it stops working, if known.
    pub expires_at: Option<SystemTime>,
}

impl Credential {
    /// A credential that does not expire.
    pub fn new(secret: SecretString) -> Self {
        Self {
            secret,
            expires_at: None,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("secret", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Looks up upstream credentials.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// The credential for `key`.
    ///
    /// # Errors
    /// `Ok(None)` means nothing is stored for `key`; `Err` means the backend failed.
    ///
    /// # Cancel safety
    /// Read-only; dropping the future is safe.
    async fn get(&self, key: &CredentialKey) -> Result<Option<Credential>, CredentialError>;
}

#[async_trait]
impl<C: CredentialStore + ?Sized> CredentialStore for Arc<C> {
    async fn get(&self, key: &CredentialKey) -> Result<Option<Credential>, CredentialError> {
        (**self).get(key).await
    }
}

/// A store the gateway can also write: OAuth tokens it obtains and refreshes, and the
/// "needs re-authentication" marker, are kept next to the credentials operators set.
#[async_trait]
pub trait CredentialWriter: CredentialStore {
    /// Stores (or replaces) the value for `key`.
    ///
    /// # Errors
    /// The backend failed; nothing was stored.
    async fn put(&self, key: &CredentialKey, value: &SecretString) -> Result<(), CredentialError>;

    /// Removes `key`; returns whether it was stored.
    ///
    /// # Errors
    /// The backend failed.
    async fn delete(&self, key: &CredentialKey) -> Result<bool, CredentialError>;

    /// Every stored key of `server` (names only, never values).
    ///
    /// # Errors
    /// The backend failed.
    async fn keys(&self, server: &str) -> Result<Vec<CredentialKey>, CredentialError>;
}

#[async_trait]
impl<C: CredentialWriter + ?Sized> CredentialWriter for Arc<C> {
    async fn put(&self, key: &CredentialKey, value: &SecretString) -> Result<(), CredentialError> {
        (**self).put(key, value).await
    }

    async fn delete(&self, key: &CredentialKey) -> Result<bool, CredentialError> {
        (**self).delete(key).await
    }

    async fn keys(&self, server: &str) -> Result<Vec<CredentialKey>, CredentialError> {
        (**self).keys(server).await
    }
}

/// A store that tells a [`KnownSecrets`](crate::redact::KnownSecrets) registry every
/// secret it hands out, so the redactor scrubs it from anything an upstream sends back.
pub struct Scrubbing<S> {
    inner: S,
    known: Arc<crate::redact::KnownSecrets>,
}

impl<S> fmt::Debug for Scrubbing<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubbing").finish_non_exhaustive()
    }
}

impl<S> Scrubbing<S> {
    /// Wraps `inner`, registering into `known`.
    pub fn new(inner: S, known: Arc<crate::redact::KnownSecrets>) -> Self {
        Self { inner, known }
    }
}

#[async_trait]
impl<S: CredentialStore> CredentialStore for Scrubbing<S> {
    async fn get(&self, key: &CredentialKey) -> Result<Option<Credential>, CredentialError> {
        let found = self.inner.get(key).await?;
        if let Some(c) = &found {
            self.known.add(&c.secret);
        }
        Ok(found)
    }
}

/// Tries each store in turn; the first that has the credential answers.
///
/// The CLI's default is the sealed file, then the environment (shared credentials only).
pub struct FirstOf {
    stores: Vec<Arc<dyn CredentialStore>>,
}

impl fmt::Debug for FirstOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirstOf")
            .field("stores", &self.stores.len())
            .finish()
    }
}

impl FirstOf {
    /// `stores`, asked in order.
    pub fn new(stores: Vec<Arc<dyn CredentialStore>>) -> Self {
        Self { stores }
    }
}

#[async_trait]
impl CredentialStore for FirstOf {
    async fn get(&self, key: &CredentialKey) -> Result<Option<Credential>, CredentialError> {
        for s in &self.stores {
            if let Some(c) = s.get(key).await? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

/// Enforces each server's declared personal names: a name declared personal for a
/// server is only ever looked up as that principal's personal credential (never as a
/// shared one, never from the environment), and every other name only as a shared one.
/// So a principal without their own credential gets "missing", not someone else's.
pub struct Declared<S> {
    inner: S,
    personal: std::collections::BTreeMap<Arc<str>, std::collections::BTreeSet<Arc<str>>>,
    blank_personal: bool,
}

impl<S> fmt::Debug for Declared<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Declared")
            .field("personal", &self.personal)
            .field("blank_personal", &self.blank_personal)
            .finish_non_exhaustive()
    }
}

impl<S> Declared<S> {
    /// `inner`, with no personal names declared yet.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            personal: std::collections::BTreeMap::new(),
            blank_personal: false,
        }
    }

    /// Declares `names` personal for `server`.
    #[must_use]
    pub fn personal(
        mut self,
        server: impl Into<Arc<str>>,
        names: impl IntoIterator<Item = impl Into<Arc<str>>>,
    ) -> Self {
        self.personal
            .entry(server.into())
            .or_default()
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// For an instance that only lists (serves no principal's calls): a personal name
    /// resolves to an empty value instead of being missing.
    ///
    /// # Security
    /// Only for connections that never serve a call on anyone's behalf.
    #[must_use]
    pub fn blank_personal_for_listing(mut self) -> Self {
        self.blank_personal = true;
        self
    }

    fn is_personal(&self, key: &CredentialKey) -> bool {
        self.personal
            .get(&key.server)
            .is_some_and(|n| n.contains(&key.name))
    }
}

#[async_trait]
impl<S: CredentialStore> CredentialStore for Declared<S> {
    async fn get(&self, key: &CredentialKey) -> Result<Option<Credential>, CredentialError> {
        let personal = self.is_personal(key);
        match (key.mode, personal) {
            (CredentialMode::Personal, true) | (CredentialMode::Shared, false) => self.inner.get(key).await,
            (CredentialMode::Shared, true) if self.blank_personal => {
                Ok(Some(Credential::new(SecretString::from(String::new()))))
            }
            _ => Ok(None),
        }
    }
}

/// Why a credential could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// A required credential is not stored.
    #[error("missing credential {key}")]
    Missing {
        /// Which one (names only, never values).
        key: String,
    },
    /// The store is unavailable or refused.
    #[error("credential store unavailable")]
    Backend(#[source] BoxError),
}

impl CredentialError {
    /// Wraps a backend failure.
    pub fn backend(e: impl Into<BoxError>) -> Self {
        Self::Backend(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn declared_personal_names_resolve_only_as_the_callers_own() {
        let mem = MemoryCredentialStore::new();
        mem.set(
            CredentialKey::shared("gh", "TOKEN"),
            SecretString::from("shared-value"),
        );
        mem.set(
            CredentialKey::personal("gh", "alice", "TOKEN"),
            SecretString::from("alice-value"),
        );
        mem.set(
            CredentialKey::personal("gh", "alice", "ORG"),
            SecretString::from("personal-org"),
        );
        mem.set(
            CredentialKey::shared("gh", "ORG"),
            SecretString::from("shared-org"),
        );
        let store = Declared::new(mem.clone()).personal("gh", ["TOKEN"]);
        let t = crate::upstream::Template::parse("${TOKEN}/${ORG}").unwrap();
        #[expect(clippy::disallowed_methods, reason = "test reads the resolved value")]
        let got = |s: SecretString| secrecy::ExposeSecret::expose_secret(&s).to_owned();
        let alice = crate::upstream::resolve_template(&t, "gh", Some("alice"), &store).await;
        assert_eq!(got(alice.unwrap()), "alice-value/shared-org");
        // Bob has no TOKEN of his own: missing, never the shared one or alice's.
        let bob = crate::upstream::resolve_template(&t, "gh", Some("bob"), &store).await;
        assert_eq!(bob.unwrap_err().to_string(), "missing credential TOKEN");
        // Another server's names are not personal, and do not see gh's values.
        let other = crate::upstream::resolve_template(&t, "other", Some("alice"), &store).await;
        assert!(other.is_err());
        // The listing variant fills personal names with "" and nothing else.
        let listing = Declared::new(mem)
            .personal("gh", ["TOKEN"])
            .blank_personal_for_listing();
        let l = crate::upstream::resolve_template(&t, "gh", None, &listing).await;
        assert_eq!(got(l.unwrap()), "/shared-org");
    }
}
