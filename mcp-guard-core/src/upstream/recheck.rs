//! Restarts an instance when the credentials it was started with change.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rmcp::model::{ClientNotification, ClientRequest, ServerResult};
use sha2::{Digest as _, Sha256};
use tokio::sync::broadcast;

use super::placeholder::{Template, resolve_template};
use super::{Catalog, Forward, Upstream, UpstreamError, UpstreamEvent, UpstreamState, UpstreamStatus};
use crate::credential::{CredentialError, CredentialStore};

/// Makes a fresh instance (a new process with the credentials of this moment).
pub type MakeInstance = Arc<dyn Fn() -> Arc<dyn Upstream> + Send + Sync>;

/// The running instance and the digest of the credentials it was started with.
type Current = Mutex<Option<([u8; 32], Arc<dyn Upstream>)>>;

/// An [`Upstream`] that checks, before every request, that the credentials its
/// instance was started with are still the stored ones, for one server and principal.
///
/// A credential removed since then: the instance is stopped and the request fails with
/// [`UpstreamError::MissingCredentials`]. A credential replaced: the instance is
/// stopped and a new one started with the new value. So `credentials remove` and
/// `credentials set` take effect at the next call, even inside a running session.
/// The comparison keeps only a SHA-256 digest of the values.
pub struct RecheckCredentials {
    id: Arc<str>,
    server: Arc<str>,
    principal: Option<Arc<str>>,
    templates: Vec<Template>,
    store: Arc<dyn CredentialStore>,
    make: MakeInstance,
    personal: Vec<String>,
    current: Current,
}

impl fmt::Debug for RecheckCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecheckCredentials")
            .field("server", &self.server)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl RecheckCredentials {
    /// Instances of `server` made by `make`, whose `templates` are resolved from
    /// `store` for `principal` before each request.
    pub fn new(
        server: impl Into<Arc<str>>,
        principal: Option<Arc<str>>,
        templates: Vec<Template>,
        store: Arc<dyn CredentialStore>,
        make: MakeInstance,
    ) -> Self {
        let server = server.into();
        Self {
            id: server.clone(),
            server,
            principal,
            templates,
            store,
            make,
            personal: Vec::new(),
            current: Mutex::new(None),
        }
    }

    /// The names the server declares personal: when one is missing the error is
    /// [`UpstreamError::MissingPersonalCredentials`], telling the principal how to set it.
    #[must_use]
    pub fn personal_names(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.personal = names.into_iter().map(Into::into).collect();
        self
    }

    async fn fingerprint(&self) -> Result<[u8; 32], UpstreamError> {
        let mut h = Sha256::new();
        let mut missing = Vec::new();
        for t in &self.templates {
            match resolve_template(t, &self.server, self.principal.as_deref(), &*self.store).await {
                Ok(v) => {
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "hashing the value to notice a changed credential"
                    )]
                    let bytes = secrecy::ExposeSecret::expose_secret(&v).as_bytes();
                    h.update((bytes.len() as u64).to_be_bytes());
                    h.update(bytes);
                }
                Err(CredentialError::Missing { key }) => missing.extend(key.split(", ").map(str::to_owned)),
                Err(e) => {
                    return Err(UpstreamError::Unavailable {
                        server: self.server.to_string(),
                        source: Some(Box::new(e)),
                    });
                }
            }
        }
        if missing.is_empty() {
            return Ok(h.finalize().into());
        }
        missing.sort();
        missing.dedup();
        let (personal, shared): (Vec<String>, Vec<String>) =
            missing.into_iter().partition(|n| self.personal.contains(n));
        match &self.principal {
            Some(p) if !personal.is_empty() => Err(UpstreamError::MissingPersonalCredentials {
                server: self.server.to_string(),
                principal: p.to_string(),
                personal,
                shared,
                authorize_url: None,
            }),
            _ => Err(UpstreamError::MissingCredentials {
                server: self.server.to_string(),
                missing: personal.into_iter().chain(shared).collect(),
            }),
        }
    }

    fn stop_current(&self) {
        let old = self.current.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((_, u)) = old {
            tokio::spawn(async move { u.shutdown().await });
        }
    }

    fn current_or_new(&self) -> Arc<dyn Upstream> {
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, u)) = &*cur {
            return u.clone();
        }
        let u = (self.make)();
        // An all-zero digest never matches: the first request checks and keeps it.
        *cur = Some(([0; 32], u.clone()));
        u
    }

    async fn checked(&self) -> Result<Arc<dyn Upstream>, UpstreamError> {
        let fp = match self.fingerprint().await {
            Ok(fp) => fp,
            Err(e) => {
                if matches!(
                    e,
                    UpstreamError::MissingCredentials { .. }
                        | UpstreamError::MissingPersonalCredentials { .. }
                ) {
                    self.stop_current();
                }
                return Err(e);
            }
        };
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *cur {
            Some((f, u)) if *f == fp => Ok(u.clone()),
            Some((f, u)) if *f == [0; 32] => {
                *f = fp;
                Ok(u.clone())
            }
            slot => {
                if let Some((_, old)) = slot.take() {
                    tracing::info!(server = %self.server, "credentials changed: restarting the instance");
                    tokio::spawn(async move { old.shutdown().await });
                }
                let u = (self.make)();
                *slot = Some((fp, u.clone()));
                Ok(u)
            }
        }
    }
}

#[async_trait]
impl Upstream for RecheckCredentials {
    fn id(&self) -> &str {
        &self.id
    }

    async fn catalog(&self) -> Result<Arc<Catalog>, UpstreamError> {
        self.checked().await?.catalog().await
    }

    async fn request(&self, request: ClientRequest, forward: Forward) -> Result<ServerResult, UpstreamError> {
        self.checked().await?.request(request, forward).await
    }

    async fn serving_catalog(&self, forward: &Forward) -> Result<Arc<Catalog>, UpstreamError> {
        self.checked().await?.serving_catalog(forward).await
    }

    async fn reread_serving_catalog(&self, forward: &Forward) -> Result<Arc<Catalog>, UpstreamError> {
        self.checked().await?.reread_serving_catalog(forward).await
    }

    async fn notify(&self, notification: ClientNotification) -> Result<(), UpstreamError> {
        let cur = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, u)| u.clone());
        match cur {
            Some(u) => u.notify(notification).await,
            None => Ok(()),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<UpstreamEvent> {
        self.current_or_new().subscribe()
    }

    fn status(&self) -> UpstreamStatus {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or_else(|| UpstreamStatus::now(UpstreamState::Idle), |(_, u)| u.status())
    }

    async fn refresh(&self) {
        let cur = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, u)| u.clone());
        if let Some(u) = cur {
            u.refresh().await;
        }
    }

    async fn shutdown(&self) {
        let old = self.current.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((_, u)) = old {
            u.shutdown().await;
        }
    }
}
