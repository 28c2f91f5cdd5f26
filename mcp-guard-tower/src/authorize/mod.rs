//! A built-in OAuth 2.1 authorization server for the gateway's own endpoints, so MCP
//! clients connect the way the MCP authorization specification describes: discover it
//! from the protected-resource metadata, register, send the user to sign in and
//! consent, receive a token.
//!
//! - RFC 8414 metadata at `/.well-known/oauth-authorization-server`.
//! - Clients register by RFC 7591 dynamic registration (`/oauth/register`, public
//!   clients only) or present a Client ID Metadata Document URL as their `client_id`.
//! - Authorization code with PKCE `S256` only; the RFC 8707 `resource` names exactly
//!   one endpoint (`<issuer>/mcp/<endpoint>`); `redirect_uri` matches a registered one
//!   byte for byte; codes live 60 s and are single use (a reused code revokes what it
//!   granted); the authorization response carries `iss` (RFC 9207).
//! - The user chooses the access duration on the consent page. That choice is a
//!   [`Grant`](mcp_guard_core::access::oauth::Grant): no token outlives it, refresh
//!   tokens rotate, and its gateway session is revoked with `mcp-guard sessions
//!   revoke` like any other (which ends the grant). RFC 7009 revocation at
//!   `/oauth/revoke`.
//! - Before the client gets its code, the user completes every personal credential
//!   the endpoint's servers need ([`PersonalCredentials`]): an OAuth redirect to the
//!   upstream's provider, or a pasted token.
//!
//! Pages are server-rendered HTML without script, CSRF-protected, never framed
//! (`frame-ancestors 'none'`, `X-Frame-Options: DENY`), never cached. Consent is
//! recorded per user, client and endpoint before any third-party flow starts, as the
//! MCP security best practices require of a proxy.
//!
//! Sign-in: delegated to an external OpenID Connect provider when one is configured
//! ([`OidcSettings`]); and a one-time link for a configured local user (`mcp-guard
//! users login-link alice`), so the embedded default works with no outside service.

mod client_metadata;
mod flow;
mod oidc;
mod pages;
mod redirect;

pub use oidc::OidcSettings;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mcp_guard_core::Principal;
use mcp_guard_core::access::AccessStore;
use mcp_guard_core::access::oauth::OAuthClient;
use secrecy::SecretString;

/// The settings of the built-in authorization server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthServerSettings {
    /// The issuer: the gateway's public base URL, without a trailing slash. Endpoint
    /// resource URIs are `<issuer>/mcp/<endpoint>`.
    pub issuer: String,
    /// Lifetime of an access token (never past the grant's end). Default one hour.
    pub access_token_ttl: Duration,
    /// The durations offered on the consent page, as (label, duration), in order.
    pub durations: Vec<(String, Duration)>,
    /// How long a browser sign-in lasts. Default 12 hours.
    pub signin_ttl: Duration,
    /// Scopes the server advertises (none by default).
    pub scopes: Vec<String>,
    /// DANGEROUS: fetch client metadata documents over plain HTTP and from loopback,
    /// private, CGNAT and unique-local addresses (tests on loopback only: a client
    /// could point the gateway at an internal service). Link-local and cloud metadata
    /// addresses stay refused.
    pub dangerously_allow_private_client_metadata: bool,
    /// Clients (by `client_id`) whose redirect URI may receive an authorization error
    /// before the user has signed in; others see it on the gateway's own page
    /// (RFC 9700 §4.11.2). Loopback redirect URIs are always trusted. Default none.
    pub trusted_clients: Vec<String>,
    /// Authorization requests (and OpenID Connect sign-ins) in progress at once, in
    /// all. Default 1000.
    pub max_pending: usize,
    /// Of those, from one source address. Default 50.
    pub max_pending_per_source: usize,
    /// The longest `state` accepted, in bytes. Default 1024.
    pub max_state_bytes: usize,
    /// Clients registered at once (dynamic registrations and metadata documents);
    /// clients that never obtained a grant are forgotten first. Default 5000.
    pub max_clients: usize,
    /// Where the MCP endpoints are mounted under the issuer (`""` by default; `"/tools"`
    /// for endpoints at `/tools/mcp/<endpoint>`, see
    /// [`HttpOptions::path_prefix`](crate::HttpOptions::path_prefix)): resource URIs
    /// are `<issuer><resource_prefix>/mcp/<endpoint>`.
    pub resource_prefix: String,
}

impl AuthServerSettings {
    /// Defaults for `issuer`: tokens of one hour, durations of 1 hour, 1 day, 7 days
    /// and 30 days.
    pub fn new(issuer: impl Into<String>) -> Self {
        let issuer: String = issuer.into();
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            access_token_ttl: Duration::from_hours(1),
            durations: [
                ("1h", 3_600),
                ("1d", 86_400),
                ("7d", 7 * 86_400),
                ("30d", 30 * 86_400),
            ]
            .into_iter()
            .map(|(l, s)| (l.to_owned(), Duration::from_secs(s)))
            .collect(),
            signin_ttl: Duration::from_hours(12),
            scopes: Vec::new(),
            dangerously_allow_private_client_metadata: false,
            trusted_clients: Vec::new(),
            max_pending: 1000,
            max_pending_per_source: 50,
            max_state_bytes: 1024,
            max_clients: 5000,
            resource_prefix: String::new(),
        }
    }
}

/// Where a personal credential of one server stands for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PersonalState {
    /// Present (and not known to be rejected).
    Done,
    /// Needs the user to sign in with the upstream's OAuth provider.
    NeedsOAuth,
    /// Needs the user to paste a token.
    NeedsToken,
    /// Was present but the provider rejected it (a refresh failed): sign in again.
    NeedsReauthentication,
}

/// One server of an endpoint that needs the user's own credentials.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PersonalServer {
    /// The server id.
    pub server: String,
    /// Its description, if configured.
    pub description: Option<String>,
    /// Where the user stands.
    pub state: PersonalState,
    /// The placeholder names a pasted token fills (empty for OAuth servers).
    pub token_names: Vec<String>,
    /// Whether the server authenticates through OAuth (else tokens are pasted).
    pub oauth: bool,
}

impl PersonalServer {
    /// A server and its state.
    pub fn new(server: impl Into<String>, state: PersonalState) -> Self {
        Self {
            server: server.into(),
            description: None,
            state,
            token_names: Vec::new(),
            oauth: false,
        }
    }

    /// Sets the description.
    #[must_use]
    pub fn description(mut self, d: Option<String>) -> Self {
        self.description = d;
        self
    }

    /// Sets the names a pasted token fills.
    #[must_use]
    pub fn token_names(mut self, names: Vec<String>) -> Self {
        self.token_names = names;
        self
    }

    /// Marks the server as an OAuth one.
    #[must_use]
    pub fn oauth(mut self, yes: bool) -> Self {
        self.oauth = yes;
        self
    }
}

/// The personal credentials an endpoint needs, as the consent flow sees them.
#[async_trait]
pub trait PersonalCredentials: Send + Sync {
    /// The servers of `endpoint` needing `principal`'s own credentials.
    async fn servers(&self, principal: &Principal, endpoint: &str) -> Vec<PersonalServer>;
    /// Stores a pasted token as `principal`'s value of `name` for `server`
    /// (replacing an older one).
    async fn set_token(
        &self,
        principal: &Principal,
        server: &str,
        name: &str,
        value: SecretString,
    ) -> Result<(), mcp_guard_core::BoxError>;
    /// A same-origin URL that starts `principal`'s OAuth flow for `server` and comes
    /// back to `return_to` (a path) when done; `None` when the server has no OAuth.
    fn oauth_start(&self, principal: &Principal, server: &str, return_to: &str) -> Option<String>;
}

/// No personal credentials anywhere.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct NoPersonalCredentials;

#[async_trait]
impl PersonalCredentials for NoPersonalCredentials {
    async fn servers(&self, _: &Principal, _: &str) -> Vec<PersonalServer> {
        Vec::new()
    }
    async fn set_token(
        &self,
        _: &Principal,
        _: &str,
        _: &str,
        _: SecretString,
    ) -> Result<(), mcp_guard_core::BoxError> {
        Err("no personal credentials are configured".into())
    }
    fn oauth_start(&self, _: &Principal, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// What an endpoint offers a user, for the consent page.
#[async_trait]
pub trait EndpointCatalog: Send + Sync {
    /// Every endpoint's name.
    fn endpoints(&self) -> Vec<String>;
    /// The endpoint's description, or `None` when there is no such endpoint.
    fn describe(&self, endpoint: &str) -> Option<Option<String>>;
    /// The tools `principal` may call on `endpoint` (exposed names).
    async fn tools(&self, principal: &Principal, endpoint: &str) -> Vec<String>;
}

/// The built-in authorization server. Cheap to clone.
#[derive(Clone)]
pub struct AuthorizationServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuthorizationServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationServer")
            .field("issuer", &self.inner.settings.issuer)
            .finish_non_exhaustive()
    }
}

struct Inner {
    settings: AuthServerSettings,
    store: AccessStore,
    users: BTreeMap<String, Principal>,
    catalog: Arc<dyn EndpointCatalog>,
    personal: Arc<dyn PersonalCredentials>,
    sessions: Option<mcp_guard_core::access::Sessions>,
    oidc: Option<oidc::Oidc>,
    /// Appended to cookie names: `-<port>` over plain http (browsers share cookies
    /// between ports of one host, and two gateways on one machine must not overwrite
    /// each other's sign-ins), empty over https.
    cookie_suffix: String,
    http: reqwest::Client,
    /// Fetches Client ID Metadata Documents (third-party URLs: guarded).
    client_metadata: Option<mcp_guard_core::fetch::GuardedClient>,
    state: Mutex<FlowState>,
}

#[derive(Default)]
struct FlowState {
    /// Browser sign-ins by SHA-256 of the cookie value.
    browsers: HashMap<[u8; 32], BrowserSession>,
    /// Authorization requests in progress, by id.
    pending: HashMap<String, Pending>,
    /// Issued codes by SHA-256 of the code.
    codes: HashMap<[u8; 32], IssuedCode>,
    /// Sign-ins in progress at the OpenID Connect provider, by `state`.
    oidc: HashMap<String, oidc::OidcPending>,
}

#[derive(Clone)]
struct BrowserSession {
    principal: Principal,
    csrf: String,
    expires: Instant,
}

#[derive(Clone)]
struct Pending {
    /// The client, with only the redirect URI of this request.
    client: OAuthClient,
    /// Where the request came from (for the cap per source).
    source: crate::preauth::Source,
    redirect_uri: String,
    state: Option<String>,
    code_challenge: String,
    endpoint: String,
    resource: String,
    scope: String,
    /// The user who took up the request (bound at the consent page).
    principal: Option<String>,
    /// The approved duration, once consented.
    approved: Option<Duration>,
    expires: Instant,
}

struct IssuedCode {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    resource: String,
    grant: String,
    expires: Instant,
    used: bool,
}

impl AuthorizationServer {
    /// An authorization server keeping its records in `store`, signing in the
    /// `users` given (by id), describing endpoints through `catalog`.
    pub fn new(
        settings: AuthServerSettings,
        store: AccessStore,
        users: impl IntoIterator<Item = Principal>,
        catalog: Arc<dyn EndpointCatalog>,
    ) -> Self {
        mcp_guard_core::upstream::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let port = url::Url::parse(&settings.issuer).ok().and_then(|u| u.port());
        let cookie_suffix = match port {
            Some(p) if !settings.issuer.starts_with("https://") => format!("-{p}"),
            _ => String::new(),
        };
        let client_metadata =
            client_metadata::client(settings.dangerously_allow_private_client_metadata, None);
        Self {
            inner: Arc::new(Inner {
                client_metadata,
                cookie_suffix,
                settings,
                store,
                users: users.into_iter().map(|p| (p.id().to_owned(), p)).collect(),
                catalog,
                personal: Arc::new(NoPersonalCredentials),
                sessions: None,
                oidc: None,
                http,
                state: Mutex::default(),
            }),
        }
    }

    /// Uses `personal` to find and complete the personal credentials of an endpoint
    /// before a client is given its code.
    ///
    /// # Panics
    /// When called after the server was cloned.
    #[must_use]
    pub fn personal_credentials(mut self, personal: Arc<dyn PersonalCredentials>) -> Self {
        self.configure().personal = personal;
        self
    }

    /// Lets users sign in with an external OpenID Connect provider (besides, or
    /// instead of, one-time links for configured users).
    ///
    /// # Panics
    /// When called after the server was cloned.
    #[must_use]
    pub fn oidc(mut self, settings: OidcSettings) -> Self {
        self.configure().oidc = Some(oidc::Oidc::new(settings));
        self
    }

    /// Closes the gateway sessions of grants this server revokes (a reused code or
    /// refresh token, RFC 7009 revocation) at once, in this process.
    ///
    /// # Panics
    /// When called after the server was cloned.
    #[must_use]
    pub fn sessions(mut self, sessions: mcp_guard_core::access::Sessions) -> Self {
        self.configure().sessions = Some(sessions);
        self
    }

    /// Resolves the hosts of Client ID Metadata Document URLs with `lookup` instead of
    /// the system resolver (tests point names at addresses the guard must refuse).
    /// Every address it returns is still checked.
    ///
    /// # Panics
    /// When called after the server was cloned.
    #[must_use]
    pub fn client_metadata_resolver(mut self, lookup: Arc<dyn reqwest::dns::Resolve>) -> Self {
        let allow = self.inner.settings.dangerously_allow_private_client_metadata;
        self.configure().client_metadata = client_metadata::client(allow, Some(lookup));
        self
    }

    fn configure(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).expect("configure the authorization server before cloning it")
    }

    /// The user this browser is signed in as (by its session cookie), if any.
    pub fn signed_in(&self, headers: &http::HeaderMap) -> Option<String> {
        self.inner.browser(headers).map(|b| b.principal.id().to_owned())
    }

    /// The principal this browser is signed in as, with the sign-in's CSRF token
    /// (what the gateway's other pages, the console's, bind their forms to).
    #[cfg(feature = "server")]
    pub(crate) fn browser_session(&self, headers: &http::HeaderMap) -> Option<(Principal, String)> {
        self.inner.browser(headers).map(|b| (b.principal, b.csrf))
    }

    /// The principal (with roles) this browser is signed in as, if any: who may
    /// decide approvals on the approval page.
    pub fn signed_in_principal(&self, headers: &http::HeaderMap) -> Option<Principal> {
        self.inner.browser(headers).map(|b| b.principal)
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.inner.settings.issuer
    }

    /// The routes: metadata, registration, authorization, consent, personal
    /// credentials, token, revocation and sign-in.
    pub fn router(&self) -> axum::Router {
        flow::router(self.inner.clone())
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlowState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The endpoint a resource URI names.
    fn endpoint_of(&self, resource: &str) -> Option<String> {
        let rest = resource
            .strip_prefix(&self.settings.issuer)?
            .strip_prefix(self.settings.resource_prefix.trim_end_matches('/'))?
            .strip_prefix("/mcp/")?;
        let name = rest.trim_end_matches('/');
        (!name.is_empty() && !name.contains('/') && self.catalog.describe(name).is_some())
            .then(|| name.to_owned())
    }
}

/// Drops expired sign-ins, requests and codes (called on each new one).
fn sweep(state: &mut FlowState) {
    let now = Instant::now();
    state.browsers.retain(|_, b| b.expires > now);
    state.pending.retain(|_, p| p.expires > now);
    state.oidc.retain(|_, p| p.expires > now);
    state
        .codes
        .retain(|_, c| c.expires + Duration::from_mins(10) > now);
}

/// Why a new authorization request or sign-in is not taken in now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    /// The gateway holds its limit of requests in progress.
    Everywhere,
    /// This source address does.
    Source,
}

impl Inner {
    /// Whether one more request in progress from `source` fits, among `in_progress`
    /// (the sources of those held now, expired ones swept).
    fn room(
        &self,
        source: crate::preauth::Source,
        in_progress: impl Iterator<Item = crate::preauth::Source>,
    ) -> Result<(), Full> {
        let (mut all, mut mine) = (0usize, 0usize);
        for s in in_progress {
            all += 1;
            mine += usize::from(s == source);
        }
        if all >= self.settings.max_pending {
            Err(Full::Everywhere)
        } else if mine >= self.settings.max_pending_per_source {
            Err(Full::Source)
        } else {
            Ok(())
        }
    }
}

/// The page for a request refused because too many are in progress.
fn too_many_in_progress(full: Full) -> axum::response::Response {
    let detail = match full {
        Full::Everywhere => {
            "Too many authorization requests are in progress on this gateway. Try again in a few minutes."
        }
        Full::Source => {
            "Too many authorization requests are in progress from your address. Finish or abandon one, or try again in a few minutes."
        }
    };
    let mut r = pages::error_page(http::StatusCode::SERVICE_UNAVAILABLE, "Try again later", detail);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("60"));
    r
}

#[cfg(test)]
mod random_refusals;

#[cfg(test)]
mod tests {
    use super::*;

    struct OneEndpoint;

    #[async_trait]
    impl EndpointCatalog for OneEndpoint {
        fn endpoints(&self) -> Vec<String> {
            vec!["main".into()]
        }
        fn describe(&self, endpoint: &str) -> Option<Option<String>> {
            (endpoint == "main").then_some(None)
        }
        async fn tools(&self, _: &Principal, _: &str) -> Vec<String> {
            vec!["echo".into()]
        }
    }

    #[test]
    fn resources_name_exactly_one_known_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccessStore::open(dir.path().join("a.db")).unwrap();
        let s = AuthorizationServer::new(
            AuthServerSettings::new("https://gw.example/"),
            store,
            [],
            Arc::new(OneEndpoint),
        );
        assert_eq!(s.issuer(), "https://gw.example");
        let i = &s.inner;
        assert_eq!(
            i.endpoint_of("https://gw.example/mcp/main").as_deref(),
            Some("main")
        );
        assert_eq!(
            i.endpoint_of("https://gw.example/mcp/main/").as_deref(),
            Some("main")
        );
        for bad in [
            "https://gw.example/mcp/other",
            "https://gw.example/mcp/",
            "https://gw.example/mcp/main/x",
            "https://evil.example/mcp/main",
            "https://gw.example.evil/mcp/main",
            "https://gw.example",
        ] {
            assert_eq!(i.endpoint_of(bad), None, "{bad}");
        }
    }
}
