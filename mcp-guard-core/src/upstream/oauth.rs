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
//!   [`UpstreamError::NeedsReauthentication`](super::UpstreamError::NeedsReauthentication)
//!   with a link to sign in again;
//! * [`OAuthConnector`] connects with rmcp's `AuthClient` (a token on every request,
//!   refresh 30 s before expiry and once on a 401); [`OAuthGate`] checks the principal's
//!   state before each call.
//!
//! The interactive part (the consent page, `state`, the callback) is served by
//! `mcp_guard_tower::upstream_auth`, which drives [`OAuthServer::discover`],
//! [`OAuthServer::begin`] and [`PendingAuthorization::complete`].
//!
//! One file per job: `store` (the token store rmcp reads and writes), `server` (the
//! client of the authorization server: [`OAuthServer`]'s methods, sign-in, client
//! credentials, issuer bindings), `transport` (the authenticated HTTP client and
//! [`OAuthConnector`]), `gate` ([`OAuthGate`]). [`OAuthServer`] itself is declared
//! here so that all of them see its fields.

mod gate;
mod server;
mod store;
mod transport;

pub use gate::OAuthGate;
pub use server::{Discovery, PendingAuthorization};
pub use transport::OAuthConnector;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rmcp::transport::auth::{AuthError, AuthorizationMetadata};

use super::placeholder::Template;
use crate::credential::{CredentialError, CredentialStore, CredentialWriter};
use crate::fetch::{FetchRefused, GuardedClient};
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

#[cfg(test)]
mod tests;
