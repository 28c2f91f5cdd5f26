//! Upstream OAuth 2.1: the gateway as the OAuth client of HTTP MCP servers.
//!
//! Built on rmcp's `auth` feature: discovery (the server's 401 `WWW-Authenticate`, RFC
//! 9728 protected-resource metadata, then RFC 8414 / OIDC metadata), client
//! registration (pre-registered, client ID metadata document, or dynamic), PKCE S256,
//! the RFC 8707 `resource` parameter, refresh, and the client-credentials grant.
//!
//! What this module adds is the gateway's side:
//!
//! * tokens live in the gateway's own credential store ([`CredentialWriter`]), as a
//!   personal entry of the server for each principal (authorization code) or one shared
//!   entry (client credentials), through an adapter implementing rmcp's one-set
//!   credential store per (server, principal);
//! * a refresh the authorization server rejects (`invalid_grant`), or a token the server
//!   refuses even after a refresh, leaves a persisted "needs re-authentication" marker,
//!   so [`OAuthServer::state`] survives restarts and calls get
//!   [`UpstreamError::NeedsReauthentication`] with a link to sign in again;
//! * [`OAuthConnector`] connects with rmcp's `AuthClient` (a token on every request,
//!   refresh 30 s before expiry and once on a 401); [`OAuthGate`] checks the principal's
//!   state before each call.
//!
//! The interactive part (the consent page, `state`, the callback) is served by
//! `mcp_guard_tower::upstream_auth`, which drives [`OAuthServer::discover`],
//! [`OAuthServer::begin`] and [`PendingAuthorization::complete`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ClientNotification, ClientRequest, ServerResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{
    AuthClient, AuthError, AuthorizationManager, AuthorizationMetadata, AuthorizationRequest,
    AuthorizationSession, ClientCredentialsConfig, CredentialRefreshGuard, OAuthClientConfig,
    StoredCredentials,
};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::broadcast;

use super::connect::{Connector, HttpSpec, http_client, resolved_headers, unavailable};
use super::placeholder::{Template, resolve_template};
use super::{Catalog, Forward, Upstream, UpstreamClient, UpstreamError, UpstreamEvent, UpstreamStatus};
use crate::credential::{CredentialError, CredentialKey, CredentialMode, CredentialStore, CredentialWriter};
use crate::fetch::{FetchPolicy, FetchRefused, GuardedClient, SystemResolver};
use crate::redact::KnownSecrets;

/// The credential name a server's OAuth tokens are stored under (personal or shared).
pub const TOKENS: &str = "OAUTH_TOKENS";
/// The credential name of the "needs re-authentication" marker.
pub const NEEDS_REAUTHENTICATION: &str = "OAUTH_NEEDS_REAUTHENTICATION";
/// The credential name of a dynamically registered client, reused by later sign-ins.
pub const REGISTERED_CLIENT: &str = "OAUTH_CLIENT";
/// The credential name of the authorization server the configured client secret is
/// bound to (recorded at its first use, unless [`OAuthSpec::issuer`] pins one).
pub const ISSUER_BINDING: &str = "OAUTH_ISSUER";

/// Who obtains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OAuthMode {
    /// Each principal signs in (authorization code + PKCE); their token is personal.
    Personal,
    /// The gateway authenticates as itself (client credentials); one shared token.
    Shared,
}

/// How the gateway acts as an OAuth client of one server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OAuthSpec {
    /// Personal or shared.
    pub mode: OAuthMode,
    /// A pre-registered client id (a template, so it may come from the credential store).
    pub client_id: Option<Template>,
    /// The pre-registered client's secret (a `${NAME}` placeholder).
    pub client_secret: Option<Template>,
    /// Scopes to request; empty lets the challenge, the resource metadata or the
    /// authorization server's `scopes_supported` decide.
    pub scopes: Vec<String>,
    /// An HTTPS client ID metadata document URL, used when the authorization server
    /// supports them and no client id is configured.
    pub client_metadata_url: Option<String>,
    /// The name given at dynamic client registration.
    pub client_name: String,
    /// The authorization server's issuer, pinned: discovery that finds another one is
    /// refused. Without it, the client secret is bound to the issuer of its first use
    /// and tokens to the issuer that issued them.
    pub issuer: Option<String>,
    /// Origins besides the server's own that the operator vouches for: fetched
    /// whatever their addresses (an authorization server on a private network).
    pub trusted_origins: Vec<String>,
    /// DANGEROUS: URLs the server's metadata names may be on loopback, private, CGNAT
    /// and unique-local addresses (link-local and cloud metadata stay refused).
    pub dangerously_allow_private_addresses: bool,
}

impl OAuthSpec {
    /// A spec of `mode` with dynamic registration and server-chosen scopes.
    pub fn new(mode: OAuthMode) -> Self {
        Self {
            mode,
            client_id: None,
            client_secret: None,
            scopes: Vec::new(),
            client_metadata_url: None,
            client_name: "mcp-guard".to_owned(),
            issuer: None,
            trusted_origins: Vec::new(),
            dangerously_allow_private_addresses: false,
        }
    }
}

/// What a principal has for an OAuth server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PersonalState {
    /// Tokens are stored.
    Connected {
        /// When the access token expires, if the server said (it is refreshed before).
        expires_at: Option<SystemTime>,
    },
    /// Nothing is stored: the principal has to sign in.
    Missing,
    /// The grant stopped working: the principal has to sign in again.
    NeedsReauthentication {
        /// Since when.
        since: SystemTime,
        /// Why, in words.
        reason: String,
    },
}

/// Builds the links that start a sign-in (implemented by the gateway's HTTP side).
pub trait AuthLinks: Send + Sync {
    /// A link that starts the OAuth flow for `principal` on `server`, if one can be built.
    fn start_url(&self, principal: &str, server: &str) -> Option<String>;
}

/// Why an OAuth step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// An rmcp OAuth step failed (discovery, registration, exchange...).
    #[error("{step}: {source}")]
    Auth {
        /// Which step.
        step: &'static str,
        /// rmcp's error.
        #[source]
        source: AuthError,
    },
    /// The credential store failed.
    #[error("credential store: {0}")]
    Store(#[from] CredentialError),
    /// The configuration does not allow the step (no redirect URI, no client secret...).
    #[error("{0}")]
    Config(String),
    /// A URL the server or its authorization server named was refused by the fetch
    /// guard (see [`crate::fetch`]).
    #[error("{step}: {source}")]
    Refused {
        /// Which step.
        step: &'static str,
        /// What was refused, and why.
        #[source]
        source: FetchRefused,
    },
    /// The stored tokens came from another authorization server than the one the
    /// server names now: the principal signs in again (the refresh token is not sent).
    #[error(
        "the server now names another authorization server ({now}; the sign-in was with {bound}): sign in again"
    )]
    TokensFromAnotherIssuer {
        /// Where the tokens came from.
        bound: String,
        /// What discovery finds now.
        now: String,
    },
    /// The configured client secret is bound to another authorization server than the
    /// one discovered now: it is not sent.
    #[error(
        "server {server}: the authorization server changed from {bound} to {now}; the client secret is sent only to {bound} \
         (if the change is intended, set servers.{server}.oauth.issuer = \"{now}\", or remove the recorded binding: \
         mcp-guard credentials remove --server {server} --name OAUTH_ISSUER)"
    )]
    SecretBoundToAnotherIssuer {
        /// The server id.
        server: String,
        /// The issuer the secret is bound to.
        bound: String,
        /// What discovery finds now.
        now: String,
    },
    /// Discovery found another issuer than the one configured.
    #[error("server {server}: the authorization server is {now}, not the configured issuer {pinned}")]
    NotThePinnedIssuer {
        /// The server id.
        server: String,
        /// `servers.ID.oauth.issuer`.
        pinned: String,
        /// What discovery found.
        now: String,
    },
}

fn step(step: &'static str) -> impl FnOnce(AuthError) -> OAuthError {
    move |source| match FetchRefused::find(&source) {
        Some(r) => OAuthError::Refused {
            step,
            source: r.clone(),
        },
        None => OAuthError::Auth { step, source },
    }
}

/// Who an authorization server is, for binding: its issuer, or (when it publishes
/// none) its token endpoint.
fn authority(m: &AuthorizationMetadata) -> String {
    m.issuer
        .clone()
        .unwrap_or_else(|| format!("token endpoint {}", m.token_endpoint))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn store_err(e: impl fmt::Display) -> AuthError {
    AuthError::CredentialStoreError(e.to_string())
}

/// rmcp's one-set credential store over one (server, principal) entry of ours.
struct TokenStore {
    store: Arc<dyn CredentialWriter>,
    tokens: CredentialKey,
    reauth: CredentialKey,
    known: Option<Arc<KnownSecrets>>,
    guard: Arc<tokio::sync::Mutex<()>>,
    /// The authorization server tokens saved here come from (stored beside them).
    authority: Option<String>,
}

/// The field of a stored token set naming the authorization server it came from.
const AUTHORITY_FIELD: &str = "mcp_guard_authority";

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

async fn mark_reauth(
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
struct RegisteredClient {
    client_id: String,
    client_secret: Option<String>,
    redirect_uri: String,
    issuer: Option<String>,
}

/// One OAuth-protected upstream: its URL, client settings and where its tokens live.
///
/// Shared by the connectors of the server and the gateway's sign-in routes.
pub struct OAuthServer {
    server: Arc<str>,
    url: String,
    spec: OAuthSpec,
    store: Arc<dyn CredentialWriter>,
    secrets: Arc<dyn CredentialStore>,
    known: Option<Arc<KnownSecrets>>,
    redirect_uri: RwLock<Option<String>>,
    links: RwLock<Option<Arc<dyn AuthLinks>>>,
    guards: Mutex<HashMap<Option<Arc<str>>, RefreshLock>>,
    hooks: Mutex<Vec<SignInHook>>,
    lookup: Option<Arc<dyn reqwest::dns::Resolve>>,
    http: std::sync::OnceLock<Result<GuardedClient, String>>,
}

/// Serialises the refreshes of one (server, principal) token set in this process.
type RefreshLock = Arc<tokio::sync::Mutex<()>>;

/// Called after a principal signed in.
type SignInHook = Arc<dyn Fn(&str) + Send + Sync>;

impl fmt::Debug for OAuthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthServer")
            .field("server", &self.server)
            .field("url", &self.url)
            .field("mode", &self.spec.mode)
            .finish_non_exhaustive()
    }
}

/// Where a sign-in gets its client id.
enum ClientChoice {
    Registered(String, Option<String>),
    MetadataDocument(String),
}

impl OAuthServer {
    /// Server `server` at `url`, with tokens in `store` and the client id and secret
    /// placeholders resolved from `secrets`.
    pub fn new(
        server: impl Into<Arc<str>>,
        url: impl Into<String>,
        spec: OAuthSpec,
        store: Arc<dyn CredentialWriter>,
        secrets: Arc<dyn CredentialStore>,
    ) -> Self {
        Self {
            server: server.into(),
            url: url.into(),
            spec,
            store,
            secrets,
            known: None,
            redirect_uri: RwLock::new(None),
            links: RwLock::new(None),
            guards: Mutex::default(),
            hooks: Mutex::default(),
            lookup: None,
            http: std::sync::OnceLock::new(),
        }
    }

    /// Resolves the hosts of URLs the server and its authorization server name with
    /// `lookup` instead of the system resolver (tests point names at addresses the
    /// guard must refuse). Every address it returns is still checked.
    #[must_use]
    pub fn resolver(mut self, lookup: Arc<dyn reqwest::dns::Resolve>) -> Self {
        self.lookup = Some(lookup);
        self.http = std::sync::OnceLock::new();
        self
    }

    /// The client for every OAuth request: the server's own origin and the configured
    /// trusted origins are fetched as they are; every other URL (named by the server's
    /// challenge, its metadata, the authorization server's metadata, a redirect) only
    /// on public addresses, unless the dangerous opt-out is set.
    fn guarded(&self) -> Result<GuardedClient, String> {
        self.http
            .get_or_init(|| {
                let url = reqwest::Url::parse(&self.url).map_err(|e| format!("the server URL: {e}"))?;
                let mut policy = FetchPolicy::new()
                    .trust_origin(&url)
                    .dangerously_allow_private(self.spec.dangerously_allow_private_addresses);
                for o in &self.spec.trusted_origins {
                    let o = reqwest::Url::parse(o).map_err(|e| format!("trusted origin {o:?}: {e}"))?;
                    policy = policy.trust_origin(&o);
                }
                let lookup = self.lookup.clone().unwrap_or_else(|| Arc::new(SystemResolver));
                GuardedClient::with_resolver(policy, Duration::from_secs(30), lookup)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    /// Runs `hook` (with the principal) after each completed sign-in: e.g. to reconnect a
    /// listing connection that was waiting for a first signed-in principal.
    pub fn on_sign_in(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(hook));
    }

    /// Tokens read or obtained join `known`, so the redactor scrubs them everywhere.
    #[must_use]
    pub fn known_secrets(mut self, known: Arc<KnownSecrets>) -> Self {
        self.known = Some(known);
        self
    }

    /// The server id.
    pub fn id(&self) -> &str {
        &self.server
    }

    /// The server's MCP URL (the OAuth `resource`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How the gateway is configured as a client.
    pub fn spec(&self) -> &OAuthSpec {
        &self.spec
    }

    /// Sets the redirect URI sign-ins use (the gateway's callback for this server).
    pub fn set_redirect_uri(&self, uri: impl Into<String>) {
        *self.redirect_uri.write().unwrap_or_else(PoisonError::into_inner) = Some(uri.into());
    }

    /// The redirect URI, once set.
    pub fn redirect_uri(&self) -> Option<String> {
        self.redirect_uri
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets what builds sign-in links for errors.
    pub fn set_links(&self, links: Arc<dyn AuthLinks>) {
        *self.links.write().unwrap_or_else(PoisonError::into_inner) = Some(links);
    }

    /// A link that starts `principal`'s sign-in, if the gateway serves sign-ins.
    pub fn authorize_url(&self, principal: &str) -> Option<String> {
        let links = self.links.read().unwrap_or_else(PoisonError::into_inner).clone();
        links.and_then(|l| l.start_url(principal, &self.server))
    }

    fn key(&self, principal: Option<&str>, name: &str) -> CredentialKey {
        match principal {
            Some(p) => CredentialKey::personal(self.server.clone(), p, name),
            None => CredentialKey::shared(self.server.clone(), name),
        }
    }

    fn token_store(&self, principal: Option<&str>, authority: Option<String>) -> TokenStore {
        let guard = self
            .guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(principal.map(Arc::from))
            .or_default()
            .clone();
        TokenStore {
            store: self.store.clone(),
            tokens: self.key(principal, TOKENS),
            reauth: self.key(principal, NEEDS_REAUTHENTICATION),
            known: self.known.clone(),
            guard,
            authority,
        }
    }

    /// What `principal` (`None`: the shared entry) has for this server.
    ///
    /// # Errors
    /// The credential store failed.
    pub async fn state(&self, principal: Option<&str>) -> Result<PersonalState, CredentialError> {
        if let Some(m) = self
            .store
            .get(&self.key(principal, NEEDS_REAUTHENTICATION))
            .await?
        {
            #[expect(clippy::disallowed_methods, reason = "the marker holds no secret")]
            let v: serde_json::Value = serde_json::from_str(m.secret.expose_secret()).unwrap_or_default();
            return Ok(PersonalState::NeedsReauthentication {
                since: UNIX_EPOCH + Duration::from_secs(v["since"].as_u64().unwrap_or(0)),
                reason: v["reason"].as_str().unwrap_or("sign in again").to_owned(),
            });
        }
        let Some(c) = self.store.get(&self.key(principal, TOKENS)).await? else {
            return Ok(PersonalState::Missing);
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "reading the expiry of the stored token set"
        )]
        let v: serde_json::Value = serde_json::from_str(c.secret.expose_secret()).unwrap_or_default();
        if v["token_response"].is_null() {
            return Ok(PersonalState::Missing);
        }
        let expires_at = match (
            v["token_received_at"].as_u64(),
            v["token_response"]["expires_in"].as_u64(),
        ) {
            (Some(at), Some(secs)) => Some(UNIX_EPOCH + Duration::from_secs(at.saturating_add(secs))),
            _ => None,
        };
        Ok(PersonalState::Connected { expires_at })
    }

    /// Principals with working tokens for this server, in the store's order.
    ///
    /// # Errors
    /// The credential store failed.
    pub async fn principals(&self) -> Result<Vec<Arc<str>>, CredentialError> {
        let mut out = Vec::new();
        for k in self.store.keys(&self.server).await? {
            if k.mode == CredentialMode::Personal
                && *k.name == *TOKENS
                && let Some(p) = k.principal
                && matches!(self.state(Some(&p)).await?, PersonalState::Connected { .. })
            {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Records that `principal`'s grant stopped working (persisted until they sign in).
    ///
    /// # Errors
    /// The credential store failed.
    pub async fn mark_needs_reauthentication(
        &self,
        principal: Option<&str>,
        reason: &str,
    ) -> Result<(), CredentialError> {
        let key = self.key(principal, NEEDS_REAUTHENTICATION);
        if self.store.get(&key).await?.is_some() {
            return Ok(());
        }
        mark_reauth(&*self.store, &key, reason).await
    }

    /// The error a call of `principal` gets when their state is not connected.
    pub fn required_error(&self, principal: &str, state: PersonalState) -> Option<UpstreamError> {
        match state {
            PersonalState::Connected { .. } => None,
            PersonalState::Missing => Some(UpstreamError::MissingPersonalCredentials {
                server: self.server.to_string(),
                principal: principal.to_owned(),
                personal: Vec::new(),
                shared: Vec::new(),
                authorize_url: self.authorize_url(principal),
            }),
            PersonalState::NeedsReauthentication { reason, .. } => {
                Some(UpstreamError::NeedsReauthentication {
                    server: self.server.to_string(),
                    principal: principal.to_owned(),
                    reason,
                    authorize_url: self.authorize_url(principal),
                })
            }
        }
    }

    /// The `WWW-Authenticate` challenge of an unauthenticated request, if the server
    /// answers one with 401.
    async fn challenge(&self) -> Option<String> {
        let client = http_client(false).ok()?;
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": rmcp::model::ProtocolVersion::LATEST_WITH_INITIALIZE.as_str(),
                "capabilities": {},
                "clientInfo": {"name": "mcp-guard", "version": env!("CARGO_PKG_VERSION")},
            },
        });
        let resp = client
            .post(&self.url)
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .ok()?;
        if resp.status() != http::StatusCode::UNAUTHORIZED {
            return None;
        }
        resp.headers()
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// A manager for `principal`'s tokens with the authorization server discovered
    /// through the fetch guard; its token and registration endpoints checked too, and
    /// the issuer against a pinned one.
    async fn discovered(
        &self,
        principal: Option<&str>,
        challenge: Option<&str>,
    ) -> Result<(AuthorizationManager, AuthorizationMetadata), OAuthError> {
        let http = self.guarded().map_err(OAuthError::Config)?;
        let mut m =
            AuthorizationManager::new_with_oauth_http_client(self.url.as_str(), Arc::new(http.clone()))
                .await
                .map_err(step("setting up the OAuth client"))?;
        let probed = if challenge.is_none() {
            self.challenge().await
        } else {
            None
        };
        let challenge = challenge.or(probed.as_deref());
        let res = m
            .resolve_metadata_from_challenge(challenge)
            .await
            .map_err(step("discovering the authorization server"))?;
        let metadata = res.metadata;
        for (what, endpoint) in [
            ("the token endpoint", Some(&metadata.token_endpoint)),
            (
                "the registration endpoint",
                metadata.registration_endpoint.as_ref(),
            ),
        ] {
            let Some(endpoint) = endpoint else { continue };
            let url = reqwest::Url::parse(endpoint)
                .map_err(|e| OAuthError::Config(format!("{what} {endpoint:?} is not a URL: {e}")))?;
            http.check(&url).await.map_err(|source| OAuthError::Refused {
                step: if what == "the token endpoint" {
                    "checking the token endpoint"
                } else {
                    "checking the registration endpoint"
                },
                source,
            })?;
        }
        if let Some(pinned) = &self.spec.issuer
            && metadata.issuer.as_deref() != Some(pinned.as_str())
        {
            return Err(OAuthError::NotThePinnedIssuer {
                server: self.server.to_string(),
                pinned: pinned.clone(),
                now: authority(&metadata),
            });
        }
        m.set_credential_store(self.token_store(principal, Some(authority(&metadata))));
        m.set_metadata(metadata.clone());
        Ok((m, metadata))
    }

    /// Refuses to send the configured client secret to an authorization server other
    /// than the one it is bound to: the pinned issuer, or the one recorded at its first
    /// use (recorded now if there is none).
    async fn check_secret_binding(&self, metadata: &AuthorizationMetadata) -> Result<(), OAuthError> {
        let now = authority(metadata);
        if self.spec.issuer.is_some() {
            // `discovered` already refused any other issuer.
            return Ok(());
        }
        let key = self.key(None, ISSUER_BINDING);
        if let Some(c) = self.store.get(&key).await? {
            #[expect(clippy::disallowed_methods, reason = "the binding holds no secret")]
            let v: serde_json::Value = serde_json::from_str(c.secret.expose_secret()).unwrap_or_default();
            let bound = v["issuer"].as_str().unwrap_or_default();
            if bound == now {
                return Ok(());
            }
            let e = OAuthError::SecretBoundToAnotherIssuer {
                server: self.server.to_string(),
                bound: bound.to_owned(),
                now,
            };
            tracing::warn!(server = %self.server, "{e}");
            return Err(e);
        }
        let value = serde_json::json!({ "issuer": now, "since": now_secs() }).to_string();
        self.store.put(&key, &SecretString::from(value)).await?;
        tracing::info!(server = %self.server, issuer = %now, "the client secret is bound to this authorization server");
        Ok(())
    }

    /// Refuses stored tokens that came from another authorization server than
    /// `metadata`'s, marking `principal` as needing to sign in again (with the reason).
    async fn check_token_binding(
        &self,
        principal: Option<&str>,
        metadata: &AuthorizationMetadata,
    ) -> Result<(), OAuthError> {
        let Some(c) = self.store.get(&self.key(principal, TOKENS)).await? else {
            return Ok(());
        };
        #[expect(clippy::disallowed_methods, reason = "reading where the token set came from")]
        let v: serde_json::Value = serde_json::from_str(c.secret.expose_secret()).unwrap_or_default();
        if v["token_response"].is_null() {
            return Ok(());
        }
        // Token sets saved before the gateway recorded the authority carry rmcp's issuer.
        let bound = v[AUTHORITY_FIELD]
            .as_str()
            .or_else(|| v["issuer"].as_str())
            .unwrap_or("an unrecorded authorization server");
        let now = authority(metadata);
        if bound == now {
            return Ok(());
        }
        let e = OAuthError::TokensFromAnotherIssuer {
            bound: bound.to_owned(),
            now,
        };
        tracing::warn!(server = %self.server, principal, "stored tokens not used: {e}");
        self.mark_needs_reauthentication(principal, &e.to_string())
            .await?;
        Err(e)
    }

    async fn resolve(&self, t: Option<&Template>) -> Result<Option<SecretString>, OAuthError> {
        let Some(t) = t else { return Ok(None) };
        Ok(Some(
            resolve_template(t, &self.server, None, &*self.secrets).await?,
        ))
    }

    /// Discovers the authorization server for a sign-in of `principal` (what the consent
    /// page shows comes from here).
    ///
    /// # Errors
    /// Discovery failed.
    pub async fn discover(&self, principal: &str) -> Result<Discovery, OAuthError> {
        self.discover_with_challenge(principal, None).await
    }

    /// Like [`Self::discover`], seeded with a `WWW-Authenticate` challenge already seen.
    ///
    /// # Errors
    /// Discovery failed.
    pub async fn discover_with_challenge(
        &self,
        principal: &str,
        challenge: Option<&str>,
    ) -> Result<Discovery, OAuthError> {
        let (manager, metadata) = self.discovered(Some(principal), challenge).await?;
        let scopes = if self.spec.scopes.is_empty() {
            manager.select_scopes(None, &[])
        } else {
            self.spec.scopes.clone()
        };
        Ok(Discovery {
            manager,
            metadata,
            principal: principal.into(),
            scopes,
        })
    }

    async fn client_choice(
        &self,
        manager: &mut AuthorizationManager,
        metadata: &AuthorizationMetadata,
        redirect_uri: &str,
        scopes: &[String],
    ) -> Result<ClientChoice, OAuthError> {
        if let Some(id) = self.resolve(self.spec.client_id.as_ref()).await? {
            let secret = self.resolve(self.spec.client_secret.as_ref()).await?;
            if secret.is_some() {
                self.check_secret_binding(metadata).await?;
            }
            #[expect(
                clippy::disallowed_methods,
                reason = "rmcp takes the client id and secret as strings"
            )]
            return Ok(ClientChoice::Registered(
                id.expose_secret().to_owned(),
                secret.map(|s| s.expose_secret().to_owned()),
            ));
        }
        let cimd = metadata
            .additional_fields
            .get("client_id_metadata_document_supported")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        if let Some(url) = &self.spec.client_metadata_url
            && cimd
        {
            return Ok(ClientChoice::MetadataDocument(url.clone()));
        }
        let cache = self.key(None, REGISTERED_CLIENT);
        if let Some(c) = self.store.get(&cache).await? {
            #[expect(clippy::disallowed_methods, reason = "reading the registered client")]
            let parsed: Option<RegisteredClient> = serde_json::from_str(c.secret.expose_secret()).ok();
            if let Some(r) = parsed
                && r.redirect_uri == redirect_uri
                && r.issuer == metadata.issuer
            {
                return Ok(ClientChoice::Registered(r.client_id, r.client_secret));
            }
        }
        let refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let reg = manager
            .register_client(&self.spec.client_name, redirect_uri, &refs)
            .await
            .map_err(step("registering the gateway with the authorization server"))?;
        let record = RegisteredClient {
            client_id: reg.client_id.clone(),
            client_secret: reg.client_secret.clone(),
            redirect_uri: redirect_uri.to_owned(),
            issuer: metadata.issuer.clone(),
        };
        let text = serde_json::to_string(&record).map_err(|e| OAuthError::Config(e.to_string()))?;
        self.store.put(&cache, &SecretString::from(text)).await?;
        Ok(ClientChoice::Registered(reg.client_id, reg.client_secret))
    }

    /// Starts a sign-in: picks the client (pre-registered, metadata document, or
    /// registered now), creates the PKCE verifier and the `state`, and builds the
    /// authorization URL (with `resource`). Call only after the user approved.
    ///
    /// # Errors
    /// No redirect URI set, registration or URL construction failed.
    pub async fn begin(&self, discovery: Discovery) -> Result<PendingAuthorization, OAuthError> {
        let redirect_uri = self.redirect_uri().ok_or_else(|| {
            OAuthError::Config("sign-ins need gateway.public_url (the redirect URI is built from it)".into())
        })?;
        self.begin_with_redirect(discovery, &redirect_uri).await
    }

    /// Like [`Self::begin`] with an explicit redirect URI (a headless client's).
    ///
    /// # Errors
    /// As [`Self::begin`].
    pub async fn begin_with_redirect(
        &self,
        discovery: Discovery,
        redirect_uri: &str,
    ) -> Result<PendingAuthorization, OAuthError> {
        let Discovery {
            mut manager,
            metadata,
            principal,
            scopes,
        } = discovery;
        let mut request =
            AuthorizationRequest::new(redirect_uri).with_client_name(self.spec.client_name.clone());
        if !self.spec.scopes.is_empty() {
            request = request.with_scopes(scopes);
        }
        match self
            .client_choice(&mut manager, &metadata, redirect_uri, &self.spec.scopes)
            .await?
        {
            ClientChoice::Registered(id, secret) => {
                request = request.with_preregistered_client(id);
                if let Some(s) = secret {
                    request = request.with_client_secret(s);
                }
            }
            ClientChoice::MetadataDocument(url) => request = request.with_client_metadata_url(url),
        }
        let session = AuthorizationSession::new(manager, request)
            .await
            .map_err(|(_, e)| step("starting the authorization")(e))?;
        let url = session.get_authorization_url().to_owned();
        let state = reqwest::Url::parse(&url)
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "state")
                    .map(|(_, v)| v.into_owned())
            })
            .ok_or_else(|| OAuthError::Config("the authorization URL carries no state".into()))?;
        Ok(PendingAuthorization {
            session,
            state,
            server: self.server.clone(),
            principal,
            hooks: self.hooks.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        })
    }

    async fn client_credentials_config(&self) -> Result<ClientCredentialsConfig, OAuthError> {
        let (Some(id), Some(secret)) = (
            self.resolve(self.spec.client_id.as_ref()).await?,
            self.resolve(self.spec.client_secret.as_ref()).await?,
        ) else {
            return Err(OAuthError::Config(format!(
                "server {}: shared OAuth (client credentials) needs client_id and client_secret",
                self.server
            )));
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "rmcp takes the client id and secret as strings"
        )]
        Ok(ClientCredentialsConfig::ClientSecret {
            client_id: id.expose_secret().to_owned(),
            client_secret: secret.expose_secret().to_owned(),
            scopes: self.spec.scopes.clone(),
            resource: Some(self.url.clone()),
        })
    }

    /// Obtains a shared token with the client-credentials grant and stores it.
    ///
    /// # Errors
    /// No client id or secret, discovery or the token request failed.
    pub async fn client_credentials(&self) -> Result<(), OAuthError> {
        let cc = self.client_credentials_config().await?;
        let (mut m, metadata) = self.discovered(None, None).await?;
        self.check_secret_binding(&metadata).await?;
        m.validate_client_credentials_metadata(&cc).map_err(step(
            "checking the authorization server supports client credentials",
        ))?;
        m.configure_client_credentials(&cc)
            .map_err(step("configuring client credentials"))?;
        m.exchange_client_credentials(&cc)
            .await
            .map_err(step("requesting a token with client credentials"))?;
        Ok(())
    }

    /// A manager ready for a connection of `principal` (`None`: shared): metadata
    /// discovered, the client that obtained the stored tokens configured (so refresh
    /// works).
    async fn connection_manager(&self, principal: Option<&str>) -> Result<AuthorizationManager, OAuthError> {
        let (mut m, metadata) = self.discovered(principal, None).await?;
        if self.spec.mode == OAuthMode::Shared {
            self.check_secret_binding(&metadata).await?;
            self.check_token_binding(principal, &metadata).await?;
            let cc = self.client_credentials_config().await?;
            m.configure_client_credentials(&cc)
                .map_err(step("configuring client credentials"))?;
            return Ok(m);
        }
        let store = self.token_store(principal, None);
        let stored = rmcp::transport::auth::CredentialStore::load(&store)
            .await
            .map_err(step("reading the stored tokens"))?;
        let Some(stored) = stored else { return Ok(m) };
        self.check_token_binding(principal, &metadata).await?;
        let redirect = self.redirect_uri().unwrap_or_else(|| self.url.clone());
        let secret = self.refresh_secret(&stored.client_id, &metadata).await?;
        let mut config = OAuthClientConfig::new(stored.client_id.clone(), redirect);
        if let Some(s) = secret {
            config = config.with_client_secret(s);
        }
        m.configure_client(config)
            .map_err(step("configuring the OAuth client"))?;
        Ok(m)
    }

    /// The secret of the client that obtained stored tokens, if the gateway knows it.
    async fn refresh_secret(
        &self,
        client_id: &str,
        metadata: &AuthorizationMetadata,
    ) -> Result<Option<String>, OAuthError> {
        if let Some(id) = self.resolve(self.spec.client_id.as_ref()).await? {
            #[expect(clippy::disallowed_methods, reason = "comparing client ids")]
            if id.expose_secret() == client_id {
                let secret = self.resolve(self.spec.client_secret.as_ref()).await?;
                if secret.is_some() {
                    self.check_secret_binding(metadata).await?;
                }
                #[expect(
                    clippy::disallowed_methods,
                    reason = "rmcp takes the client secret as a string"
                )]
                return Ok(secret.map(|s| s.expose_secret().to_owned()));
            }
        }
        if let Some(c) = self.store.get(&self.key(None, REGISTERED_CLIENT)).await? {
            #[expect(clippy::disallowed_methods, reason = "reading the registered client")]
            let parsed: Option<RegisteredClient> = serde_json::from_str(c.secret.expose_secret()).ok();
            if let Some(r) = parsed
                && r.client_id == client_id
                && r.issuer == metadata.issuer
            {
                return Ok(r.client_secret);
            }
        }
        Ok(None)
    }
}

/// The authorization server found for a sign-in, before the user approved it.
pub struct Discovery {
    manager: AuthorizationManager,
    metadata: AuthorizationMetadata,
    principal: Arc<str>,
    scopes: Vec<String>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.metadata.issuer)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// The authorization server's issuer, if it published one.
    pub fn issuer(&self) -> Option<&str> {
        self.metadata.issuer.as_deref()
    }

    /// Where the user will be sent.
    pub fn authorization_endpoint(&self) -> &str {
        &self.metadata.authorization_endpoint
    }

    /// The scopes that will be requested (empty: the server decides).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
}

/// A sign-in sent to the authorization server, waiting for its callback.
pub struct PendingAuthorization {
    session: AuthorizationSession,
    state: String,
    server: Arc<str>,
    principal: Arc<str>,
    hooks: Vec<SignInHook>,
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("server", &self.server)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl PendingAuthorization {
    /// Where to send the user (carries PKCE S256, `state` and `resource`).
    pub fn authorization_url(&self) -> &str {
        self.session.get_authorization_url()
    }

    /// The `state` the callback must carry.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// Whose sign-in.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Exchanges the authorization `code` (checking the RFC 9207 `iss` when given or
    /// required) and stores the tokens as the principal's, replacing earlier ones and
    /// clearing "needs re-authentication".
    ///
    /// # Errors
    /// The exchange failed.
    pub async fn complete(self, code: &str, iss: Option<&str>) -> Result<(), OAuthError> {
        self.session
            .handle_callback_with_issuer(code, &self.state, iss)
            .await
            .map_err(step("exchanging the authorization code"))?;
        for hook in &self.hooks {
            hook(&self.principal);
        }
        Ok(())
    }
}

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
    /// `inner` (connected with [`OAuthConnector::for_principal`]) guarded for `principal`.
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

#[cfg(test)]
mod tests;
