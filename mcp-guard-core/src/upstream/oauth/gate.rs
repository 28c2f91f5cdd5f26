//! The per-principal check in front of an OAuth server's calls.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use rmcp::model::{ClientNotification, ClientRequest, ServerResult};
use tokio::sync::broadcast;

use crate::upstream::connect::unavailable;
use crate::upstream::{Catalog, Forward, Upstream, UpstreamError, UpstreamEvent, UpstreamStatus};

use super::OAuthServer;

/// One principal's instance of an OAuth server: before each call, checks that the
/// principal is signed in (else the call fails with a link to sign in), and turns a
/// failure the grant caused into [`UpstreamError::NeedsReauthentication`].
pub struct OAuthGate {
    oauth: Arc<OAuthServer>,
    principal: Arc<str>,
    inner: Arc<dyn Upstream>,
}

impl fmt::Debug for OAuthGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthGate")
            .field("server", &self.oauth.server)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl OAuthGate {
    /// `inner` (connected with
    /// [`OAuthConnector::for_principal`](super::OAuthConnector::for_principal)) guarded for
    /// `principal`.
    pub fn new(oauth: Arc<OAuthServer>, principal: impl Into<Arc<str>>, inner: Arc<dyn Upstream>) -> Self {
        Self {
            oauth,
            principal: principal.into(),
            inner,
        }
    }

    async fn check(&self) -> Result<(), UpstreamError> {
        let state = self
            .oauth
            .state(Some(&self.principal))
            .await
            .map_err(|e| unavailable(&self.oauth.server, e))?;
        match self.oauth.required_error(&self.principal, state) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// After a failed call: the grant's error if the failure left the principal
    /// signed out, else the call's own error.
    async fn explain(&self, e: UpstreamError) -> UpstreamError {
        if matches!(
            e,
            UpstreamError::Rpc(_) | UpstreamError::Cancelled | UpstreamError::Timeout { .. }
        ) {
            return e;
        }
        match self.check().await {
            Err(auth) => auth,
            Ok(()) => e,
        }
    }
}

#[async_trait]
impl Upstream for OAuthGate {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn catalog(&self) -> Result<Arc<Catalog>, UpstreamError> {
        self.check().await?;
        match self.inner.catalog().await {
            Ok(c) => Ok(c),
            Err(e) => Err(self.explain(e).await),
        }
    }

    async fn request(&self, request: ClientRequest, forward: Forward) -> Result<ServerResult, UpstreamError> {
        self.check().await?;
        match self.inner.request(request, forward).await {
            Ok(r) => Ok(r),
            Err(e) => Err(self.explain(e).await),
        }
    }

    async fn serving_catalog(&self, forward: &Forward) -> Result<Arc<Catalog>, UpstreamError> {
        self.check().await?;
        match self.inner.serving_catalog(forward).await {
            Ok(c) => Ok(c),
            Err(e) => Err(self.explain(e).await),
        }
    }

    async fn reread_serving_catalog(&self, forward: &Forward) -> Result<Arc<Catalog>, UpstreamError> {
        self.check().await?;
        match self.inner.reread_serving_catalog(forward).await {
            Ok(c) => Ok(c),
            Err(e) => Err(self.explain(e).await),
        }
    }

    async fn notify(&self, notification: ClientNotification) -> Result<(), UpstreamError> {
        self.inner.notify(notification).await
    }

    fn subscribe(&self) -> broadcast::Receiver<UpstreamEvent> {
        self.inner.subscribe()
    }

    fn status(&self) -> UpstreamStatus {
        self.inner.status()
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    async fn refresh(&self) {
        self.inner.refresh().await;
    }
}
