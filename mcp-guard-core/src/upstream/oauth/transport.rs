//! The connection to an OAuth-protected server: rmcp's `AuthClient` with the
//! gateway's refusal handling, and the connector that dials it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthClient, AuthError, AuthorizationManager};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse,
};

use crate::credential::CredentialStore;
use crate::upstream::connect::{Connector, HttpSpec, http_client, resolved_headers, unavailable};
use crate::upstream::{UpstreamClient, UpstreamError};

use super::{OAuthError, OAuthMode, OAuthServer, PersonalState};

/// rmcp's `AuthClient` plus what the gateway adds: for shared servers a new
/// client-credentials token when the stored one is missing, expiring or refused; for
/// personal ones the "needs re-authentication" marker when the server refuses the
/// token even after a refresh.
#[derive(Clone)]
struct GatewayAuthClient {
    inner: AuthClient<reqwest::Client>,
    oauth: Arc<OAuthServer>,
    principal: Option<Arc<str>>,
}

type HttpResult<T> = Result<T, StreamableHttpError<reqwest::Error>>;

impl GatewayAuthClient {
    async fn fresh_client_credentials(&self, force: bool) -> HttpResult<()> {
        if self.oauth.spec.mode != OAuthMode::Shared {
            return Ok(());
        }
        if !force {
            match self.inner.get_access_token().await {
                Ok(_) => return Ok(()),
                Err(AuthError::AuthorizationRequired) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let cc = self
            .oauth
            .client_credentials_config()
            .await
            .map_err(|e| StreamableHttpError::from(AuthError::ClientCredentialsError(e.to_string())))?;
        let m = self.inner.auth_manager.lock().await;
        m.exchange_client_credentials(&cc).await?;
        Ok(())
    }

    async fn around<T, F, Fut>(&self, call: F) -> HttpResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = HttpResult<T>>,
    {
        self.fresh_client_credentials(false).await?;
        match call().await {
            Err(StreamableHttpError::AuthRequired(challenge)) => {
                if self.oauth.spec.mode == OAuthMode::Shared {
                    self.fresh_client_credentials(true).await?;
                    return call().await;
                }
                if let Some(p) = &self.principal
                    && let Err(e) = self
                        .oauth
                        .mark_needs_reauthentication(
                            Some(p),
                            "the server refused the token, and refreshing it did not help",
                        )
                        .await
                {
                    tracing::warn!(error = %e, "cannot record that a sign-in is needed");
                }
                Err(StreamableHttpError::AuthRequired(challenge))
            }
            other => other,
        }
    }
}

impl StreamableHttpClient for GatewayAuthClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<StreamableHttpPostResponse> {
        self.around(|| {
            self.inner.post_message(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                None,
                custom_headers.clone(),
            )
        })
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<StreamableHttpPostResponse> {
        self.around(|| {
            self.inner.post_message_with_max_sse_event_size(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                None,
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<()> {
        self.inner
            .delete_session(uri, session_id, None, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<futures::stream::BoxStream<'static, Result<sse_stream::Sse, sse_stream::Error>>> {
        self.around(|| {
            self.inner.get_stream(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                None,
                custom_headers.clone(),
            )
        })
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<futures::stream::BoxStream<'static, Result<sse_stream::Sse, sse_stream::Error>>> {
        self.around(|| {
            self.inner.get_stream_with_max_sse_event_size(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                None,
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }
}

/// Who a connection acts for.
#[derive(Debug, Clone)]
enum Acting {
    /// One principal's personal tokens.
    Principal(Arc<str>),
    /// The shared client-credentials token.
    Shared,
    /// A listing-only connection of a personal server: unauthenticated, or, if the
    /// server refuses that, the first principal with working tokens.
    Catalogue,
}

/// Dials an OAuth-protected streamable HTTP upstream with the tokens of one principal
/// (or the shared ones).
#[derive(Clone)]
pub struct OAuthConnector {
    oauth: Arc<OAuthServer>,
    spec: HttpSpec,
    credentials: Arc<dyn CredentialStore>,
    acting: Acting,
}

impl fmt::Debug for OAuthConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConnector")
            .field("server", &self.oauth.server)
            .field("url", &self.spec.url)
            .field("acting", &self.acting)
            .finish_non_exhaustive()
    }
}

impl OAuthConnector {
    /// The connector of `oauth`'s server: shared servers use the shared token; personal
    /// ones list without one, or with the first signed-in principal's if the server
    /// needs it (use [`Self::for_principal`] for a principal's calls). `spec` gives the
    /// other headers (placeholders resolved from `credentials`).
    pub fn new(oauth: Arc<OAuthServer>, spec: HttpSpec, credentials: Arc<dyn CredentialStore>) -> Self {
        let acting = match oauth.spec.mode {
            OAuthMode::Shared => Acting::Shared,
            OAuthMode::Personal => Acting::Catalogue,
        };
        Self {
            oauth,
            spec,
            credentials,
            acting,
        }
    }

    /// Connects with `principal`'s personal tokens.
    #[must_use]
    pub fn for_principal(mut self, principal: impl Into<Arc<str>>) -> Self {
        self.acting = Acting::Principal(principal.into());
        self
    }

    async fn manager(&self) -> Result<(AuthorizationManager, Option<Arc<str>>), UpstreamError> {
        let server = &*self.oauth.server;
        let fail = |e: OAuthError| unavailable(server, e);
        match &self.acting {
            Acting::Shared => {
                if !matches!(
                    self.oauth.state(None).await.map_err(|e| unavailable(server, e))?,
                    PersonalState::Connected { .. }
                ) {
                    self.oauth.client_credentials().await.map_err(fail)?;
                }
                Ok((self.oauth.connection_manager(None).await.map_err(fail)?, None))
            }
            Acting::Principal(p) => {
                let state = self
                    .oauth
                    .state(Some(p))
                    .await
                    .map_err(|e| unavailable(server, e))?;
                if let Some(e) = self.oauth.required_error(p, state) {
                    return Err(e);
                }
                match self.oauth.connection_manager(Some(p)).await {
                    Ok(m) => Ok((m, Some(p.clone()))),
                    Err(e @ OAuthError::TokensFromAnotherIssuer { .. }) => {
                        let state = self.oauth.state(Some(p)).await.unwrap_or(PersonalState::Missing);
                        Err(self
                            .oauth
                            .required_error(p, state)
                            .unwrap_or_else(|| unavailable(server, e)))
                    }
                    Err(e) => Err(fail(e)),
                }
            }
            Acting::Catalogue => {
                let first = self
                    .oauth
                    .principals()
                    .await
                    .map_err(|e| unavailable(server, e))?
                    .into_iter()
                    .next();
                let m = self
                    .oauth
                    .connection_manager(first.as_deref())
                    .await
                    .map_err(fail)?;
                if let Some(p) = &first {
                    tracing::debug!(server, principal = %p, "listing with a signed-in principal's token");
                }
                Ok((m, first))
            }
        }
    }
}

#[async_trait]
impl Connector for OAuthConnector {
    async fn connect(
        &self,
        client: UpstreamClient,
    ) -> Result<RunningService<RoleClient, UpstreamClient>, UpstreamError> {
        let server = &*self.oauth.server;
        let (manager, principal) = self.manager().await?;
        let headers = resolved_headers(
            server,
            principal.as_deref(),
            &self.spec.headers,
            &*self.credentials,
        )
        .await?;
        let http = http_client(self.spec.reuse_connections).map_err(|e| unavailable(server, e))?;
        let auth = GatewayAuthClient {
            inner: AuthClient::new(http, manager),
            oauth: self.oauth.clone(),
            principal: match &self.acting {
                Acting::Principal(p) => Some(p.clone()),
                _ => None,
            },
        };
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.spec.url.as_str());
        config.max_sse_event_size = client.max_response_bytes;
        config.custom_headers = headers.into_iter().filter_map(|(k, v)| Some((k?, v))).collect();
        let transport = StreamableHttpClientTransport::with_client(client.watch_sessions(auth), config);
        let result = client.serve(transport).await;
        match result {
            Ok(r) => Ok(r),
            Err(e) if e.auth_challenge().is_some() => match &self.acting {
                Acting::Principal(p) => {
                    let state = self.oauth.state(Some(p)).await.unwrap_or(PersonalState::Missing);
                    Err(self
                        .oauth
                        .required_error(p, state)
                        .unwrap_or_else(|| unavailable(server, e)))
                }
                Acting::Catalogue => Err(unavailable(
                    server,
                    "the server needs a token even to list; no principal has signed in yet",
                )),
                Acting::Shared => Err(unavailable(server, e)),
            },
            Err(e) => Err(unavailable(server, e)),
        }
    }
}
