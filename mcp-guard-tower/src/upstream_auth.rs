//! Signing principals in to OAuth-protected upstreams: the gateway's side of the
//! authorization-code flow (the OAuth client work itself is
//! [`mcp_guard_core::upstream::oauth`]).
//!
//! A principal gets a *ticket link* ([`UpstreamAuth::start_url`]: signed, single-use,
//! short-lived, bound to the principal and the server), from an error of a call that
//! needs the sign-in, from `mcp-guard credentials`, or from the gateway's own pages.
//! The flow:
//!
//! 1. `GET /auth/{server}/start?ticket=…`: discovers the authorization server and shows a
//!    consent page naming the upstream, its authorization server, the scopes and the
//!    gateway's redirect URI, with a CSRF token (framing blocked);
//! 2. `POST /auth/{server}/start` (approve): only now the ticket is spent, the client is
//!    chosen (pre-registered, metadata document, or registered), the random `state` and
//!    PKCE verifier are created and kept server-side (10 minutes, bound to the principal,
//!    the server and this browser by a cookie), and the browser goes to the provider;
//! 3. `GET /auth/{server}/callback`: `state` must match exactly (and is spent), the
//!    browser must carry the cookie; the code is exchanged (with PKCE and `resource`) and
//!    the tokens stored as the principal's personal credential for the server, replacing
//!    earlier ones; then back to `return_to` or a done page.
//!
//! # Security
//! Whoever holds a ticket link can complete that principal's sign-in with *their own*
//! provider account. Tickets are single-use and expire after 10 minutes; hand them only
//! to the principal (the error of their own call, their own pages).
// Axum handlers take their extractors by value.
#![allow(clippy::needless_pass_by_value)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use mcp_guard_core::Principal;
pub use mcp_guard_core::upstream::oauth::PersonalState;
use mcp_guard_core::upstream::oauth::{
    AuthLinks, Discovery, OAuthError, OAuthMode, OAuthServer, PendingAuthorization,
};
use sha2::Sha256;

use crate::web::{cookie as cookie_value, escape};

/// How long a ticket link, a consent page and a pending `state` stay valid.
const TTL: Duration = Duration::from_mins(10);

/// Why a start link could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamAuthError {
    /// The server is not one principals sign in to with OAuth.
    #[error("server {0:?} has no personal OAuth sign-in")]
    UnknownServer(String),
    /// `return_to` is not a same-origin path.
    #[error("return_to must be a path on the gateway (starting with a single /)")]
    BadReturnTo,
    /// The operating system's random source failed (nothing is issued without it).
    #[error("the operating system's random source failed")]
    Random,
    /// `gateway.public_url` is not an http(s) URL.
    #[error("public URL {0:?} must be an http:// or https:// URL")]
    BadPublicUrl(String),
}

struct Ticket {
    principal: String,
    return_to: Option<String>,
    nonce: String,
}

struct Consent {
    ticket: Ticket,
    discovery: Discovery,
    created: Instant,
}

struct Flow {
    pending: PendingAuthorization,
    server: String,
    return_to: Option<String>,
    browser: String,
    created: Instant,
}

struct Inner {
    servers: BTreeMap<String, Arc<OAuthServer>>,
    public_url: String,
    key: [u8; 32],
    secure: bool,
    spent: Mutex<HashMap<String, Instant>>,
    authenticate: std::sync::OnceLock<Arc<dyn crate::auth::Authenticate>>,
    consents: Mutex<HashMap<String, Consent>>,
    flows: Mutex<HashMap<String, Flow>>,
    browser: std::sync::OnceLock<BrowserCheck>,
}

/// Who a browser is signed in as (the built-in authorization server's sign-in).
type BrowserCheck = Arc<dyn Fn(&HeaderMap) -> Option<String> + Send + Sync>;

/// The sign-in routes and links for OAuth-protected upstreams. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamAuth {
    inner: Arc<Inner>,
}

impl fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamAuth")
            .field("servers", &self.inner.servers.keys().collect::<Vec<_>>())
            .field("public_url", &self.inner.public_url)
            .finish_non_exhaustive()
    }
}

struct Links(Weak<Inner>);

impl AuthLinks for Links {
    fn start_url(&self, principal: &str, server: &str) -> Option<String> {
        let inner = self.0.upgrade()?;
        UpstreamAuth { inner }.ticket_url(principal, server, None).ok()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn valid_return_to(r: &str) -> bool {
    r.starts_with('/') && !r.starts_with("//") && !r.contains('\\') && !r.chars().any(char::is_control)
}

impl UpstreamAuth {
    /// Sign-ins for the personal-mode servers among `servers`, with links and the
    /// redirect URI (`<public_url>/auth/<server>/callback`) built from `public_url`.
    ///
    /// # Errors
    /// `public_url` is not http(s).
    pub fn new(
        servers: impl IntoIterator<Item = Arc<OAuthServer>>,
        public_url: &str,
    ) -> Result<Self, UpstreamAuthError> {
        let public_url = public_url.trim_end_matches('/').to_owned();
        let secure = public_url.starts_with("https://");
        if !secure && !public_url.starts_with("http://") {
            return Err(UpstreamAuthError::BadPublicUrl(public_url));
        }
        let servers: BTreeMap<String, Arc<OAuthServer>> = servers
            .into_iter()
            .filter(|s| s.spec().mode == OAuthMode::Personal)
            .map(|s| (s.id().to_owned(), s))
            .collect();
        let mut key = [0u8; 32];
        mcp_guard_core::random::fill(&mut key)
            .map_err(|_| UpstreamAuthError::BadPublicUrl("no randomness".into()))?;
        let inner = Arc::new(Inner {
            servers,
            public_url,
            key,
            secure,
            spent: Mutex::default(),
            authenticate: std::sync::OnceLock::new(),
            consents: Mutex::default(),
            flows: Mutex::default(),
            browser: std::sync::OnceLock::new(),
        });
        for (id, s) in &inner.servers {
            s.set_redirect_uri(format!("{}/auth/{id}/callback", inner.public_url));
            s.set_links(Arc::new(Links(Arc::downgrade(&inner))));
        }
        Ok(Self { inner })
    }

    /// Serves `GET /auth/upstreams` to principals authenticated by `auth` (the same
    /// authenticator as `/mcp`): their own state for every server, with a start link.
    ///
    /// Set once; later calls are ignored.
    #[must_use]
    pub fn authenticate(self, auth: Arc<dyn crate::auth::Authenticate>) -> Self {
        let _ = self.inner.authenticate.set(auth);
        self
    }

    /// Requires the browser that opens a start link to be signed in (with the
    /// gateway's own sign-in, `signed_in` tells as whom) as the principal the link was
    /// made for: without it, whoever holds a link could attach their own upstream
    /// account to that principal. A browser not signed in is sent to `/oauth/signin`
    /// first. Set once; later calls are ignored.
    #[must_use]
    pub fn require_browser_sign_in(
        self,
        signed_in: impl Fn(&HeaderMap) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        let _ = self.inner.browser.set(Arc::new(signed_in));
        self
    }

    /// `Err(answer)` when the browser must sign in first or is someone else.
    #[allow(clippy::result_large_err, reason = "the refusal is the answer to send")]
    fn check_browser(&self, headers: &HeaderMap, principal: &str, again: &str) -> Result<(), Response> {
        let Some(check) = self.inner.browser.get() else {
            return Ok(());
        };
        match check(headers) {
            Some(p) if p == principal => Ok(()),
            Some(_) => Err(refused(
                "this sign-in link was made for another user than the one signed in here",
            )),
            None => {
                let next: String = url::form_urlencoded::byte_serialize(again.as_bytes()).collect();
                Err(axum::response::Redirect::to(&format!("/oauth/signin?next={next}")).into_response())
            }
        }
    }

    /// Every sign-in server's state for `principal`, with a start link where one is
    /// needed (JSON, as `GET /auth/upstreams` answers).
    pub async fn report(&self, principal: &str) -> serde_json::Value {
        let mut out = Vec::new();
        for server in self.inner.servers.keys() {
            let state = self.personal_state(principal, server).await;
            let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let mut v = match &state {
                PersonalState::Connected { expires_at } => serde_json::json!({
                    "state": "connected", "expiresAt": expires_at.map(secs),
                }),
                PersonalState::NeedsReauthentication { since, reason } => serde_json::json!({
                    "state": "needs_reauthentication", "since": secs(*since), "reason": reason,
                }),
                _ => serde_json::json!({ "state": "missing" }),
            };
            v["server"] = server.as_str().into();
            if !matches!(state, PersonalState::Connected { .. }) {
                v["startUrl"] = self.ticket_url(principal, server, None).ok().into();
            }
            out.push(v);
        }
        serde_json::json!({ "principal": principal, "servers": out })
    }

    /// The servers principals sign in to.
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.inner.servers.keys().map(String::as_str)
    }

    /// The routes: `/auth/{server}/start` (GET: consent page; POST: approve or deny)
    /// and `/auth/{server}/callback`.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/auth/{server}/start", get(consent_page).post(decide))
            .route("/auth/{server}/callback", get(callback))
            .route("/auth/upstreams", get(report))
            .route(
                "/auth/style.css",
                get(|| async {
                    (
                        [
                            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                        ],
                        crate::web::STYLE,
                    )
                }),
            )
            .with_state(self.clone())
    }

    /// A link that starts the OAuth flow for `principal` on `server` (a signed,
    /// single-use ticket valid 10 minutes, bound to the principal and server),
    /// returning to `return_to` (a path on the gateway) when done.
    ///
    /// # Errors
    /// The server has no personal sign-in, or `return_to` is not a same-origin path.
    pub fn start_url(
        &self,
        principal: &Principal,
        server: &str,
        return_to: Option<&str>,
    ) -> Result<String, UpstreamAuthError> {
        // The sign-in is the subject's: an agent acting for a user gets the user's link.
        self.ticket_url(principal.subject(), server, return_to)
    }

    fn ticket_url(
        &self,
        principal: &str,
        server: &str,
        return_to: Option<&str>,
    ) -> Result<String, UpstreamAuthError> {
        if !self.inner.servers.contains_key(server) {
            return Err(UpstreamAuthError::UnknownServer(server.to_owned()));
        }
        if return_to.is_some_and(|r| !valid_return_to(r)) {
            return Err(UpstreamAuthError::BadReturnTo);
        }
        let nonce = mcp_guard_core::hex::random(32).map_err(|_| UpstreamAuthError::Random)?;
        let payload = serde_json::json!({
            "p": principal, "s": server, "r": return_to,
            "e": now_secs() + TTL.as_secs(), "n": nonce,
        })
        .to_string();
        let body = URL_SAFE_NO_PAD.encode(payload);
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&body));
        Ok(format!(
            "{}/auth/{server}/start?ticket={body}.{sig}",
            self.inner.public_url
        ))
    }

    fn mac(&self, body: &str) -> Vec<u8> {
        #[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
        let mut m = Hmac::<Sha256>::new_from_slice(&self.inner.key).expect("any key length");
        m.update(body.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    /// A ticket's contents if its signature is ours, it has not expired, it names
    /// `server` and it has not been spent.
    fn open_ticket(&self, ticket: &str, server: &str) -> Option<Ticket> {
        let (body, sig) = ticket.split_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        #[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
        let mut m = Hmac::<Sha256>::new_from_slice(&self.inner.key).expect("any key length");
        m.update(body.as_bytes());
        m.verify_slice(&sig).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        if v["e"].as_u64()? < now_secs() || v["s"].as_str()? != server {
            return None;
        }
        let nonce = v["n"].as_str().filter(|n| !n.is_empty())?.to_owned();
        if lock(&self.inner.spent).contains_key(&nonce) {
            return None;
        }
        Some(Ticket {
            principal: v["p"].as_str()?.to_owned(),
            return_to: v["r"].as_str().filter(|r| valid_return_to(r)).map(str::to_owned),
            nonce,
        })
    }

    /// What `principal` has for `server`: connected (with the token's expiry), missing
    /// (never signed in, or the server is not a personal OAuth one), or needing a new
    /// sign-in (since when, and why).
    pub async fn personal_state(&self, principal: &str, server: &str) -> PersonalState {
        let Some(s) = self.inner.servers.get(server) else {
            return PersonalState::Missing;
        };
        match s.state(Some(principal)).await {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(server, error = %e, "cannot read a principal's OAuth state");
                PersonalState::Missing
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An HTML page that cannot be framed, cached, or run scripts.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    crate::web::page(
        status,
        title,
        &format!("<h1>{}</h1>{body}", escape(title)),
        "/auth/style.css",
        "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
}

/// The reason of a failed discovery or start the user may see: a URL the fetch guard
/// refused (without the address a name resolved to), or an authorization server that
/// is not the one the gateway is bound to. Other failures stay in the log.
fn why_not(e: &OAuthError) -> String {
    let text = match e {
        OAuthError::Refused { source, .. } => format!(
            "The server named a URL the gateway does not fetch: {}.",
            source.public_message()
        ),
        OAuthError::NotThePinnedIssuer { .. } | OAuthError::SecretBoundToAnotherIssuer { .. } => {
            format!("{e}.")
        }
        _ => return String::new(),
    };
    format!("<p class=\"error\">{}</p>", escape(&text))
}

fn refused(reason: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Sign-in refused",
        &format!("<p>{}</p>", escape(reason)),
    )
}

async fn report(State(auth): State<UpstreamAuth>, request: axum::extract::Request) -> Response {
    let Some(authn) = auth.inner.authenticate.get().cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (parts, _) = request.into_parts();
    match authn.authenticate(&parts).await {
        Ok(a) => {
            let mut r = axum::Json(auth.report(a.principal.subject()).await).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(_) => StatusCode::UNAUTHORIZED.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct StartQuery {
    ticket: String,
}

async fn consent_page(
    State(auth): State<UpstreamAuth>,
    Path(server): Path<String>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> Response {
    let Some(oauth) = auth.inner.servers.get(&server).cloned() else {
        return refused("unknown server");
    };
    let Some(ticket) = auth.open_ticket(&q.ticket, &server) else {
        return refused("this sign-in link is invalid, expired or already used; ask for a new one");
    };
    if let Err(r) = auth.check_browser(
        &headers,
        &ticket.principal,
        &format!("/auth/{server}/start?ticket={}", q.ticket),
    ) {
        return r;
    }
    let discovery = match oauth.discover(&ticket.principal).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(server, error = %e, "upstream OAuth discovery failed");
            return page(
                StatusCode::BAD_GATEWAY,
                "Sign-in unavailable",
                &format!(
                    "<p>The authorization server of {} could not be found.</p>{}",
                    escape(&server),
                    why_not(&e)
                ),
            );
        }
    };
    let scopes = if discovery.scopes().is_empty() {
        "(none requested; the server decides)".to_owned()
    } else {
        discovery.scopes().join(" ")
    };
    let Ok(csrf) = mcp_guard_core::hex::random(32) else {
        return refused("the gateway could not make a one-time value for this form; try again");
    };
    let body = format!(
        "<p>You are signed in to the gateway as <b>{principal}</b>. The gateway asks to act for you on \
         the upstream server <b>{server}</b> ({url}).</p><dl>\
         <dt>Authorization server</dt><dd>{issuer}</dd>\
         <dt>Sign-in page</dt><dd>{endpoint}</dd>\
         <dt>Scopes</dt><dd>{scopes}</dd>\
         <dt>Redirect URI (where the provider sends you back)</dt><dd>{redirect}</dd></dl>\
         <form method=\"post\" action=\"/auth/{server}/start\">\
         <input type=\"hidden\" name=\"ticket\" value=\"{ticket}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <div class=\"actions\"><button name=\"decision\" value=\"approve\">Approve</button>\
         <button name=\"decision\" value=\"deny\" class=\"secondary\">Cancel</button></div></form>",
        principal = escape(&ticket.principal),
        server = escape(&server),
        url = escape(oauth.url()),
        issuer = escape(discovery.issuer().unwrap_or("(no issuer published)")),
        endpoint = escape(discovery.authorization_endpoint()),
        scopes = escape(&scopes),
        redirect = escape(&oauth.redirect_uri().unwrap_or_default()),
        ticket = escape(&q.ticket),
        csrf = {
            let mut consents = lock(&auth.inner.consents);
            consents.retain(|_, c| c.created.elapsed() < TTL);
            consents.insert(
                csrf.clone(),
                Consent {
                    ticket,
                    discovery,
                    created: Instant::now(),
                },
            );
            csrf
        },
    );
    page(StatusCode::OK, &format!("Connect {server}"), &body)
}

#[derive(serde::Deserialize)]
struct ConsentForm {
    ticket: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
}

fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-mcpg_upstream_auth"
    } else {
        "mcpg_upstream_auth"
    }
}

async fn decide(
    State(auth): State<UpstreamAuth>,
    Path(server): Path<String>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ConsentForm>,
) -> Response {
    let Some(oauth) = auth.inner.servers.get(&server).cloned() else {
        return refused("unknown server");
    };
    // The CSRF token must be the one issued with this very ticket's consent page.
    let consent = if form.csrf.is_empty() {
        None
    } else {
        lock(&auth.inner.consents).remove(&form.csrf)
    };
    let Some(consent) = consent.filter(|c| c.created.elapsed() < TTL) else {
        return refused("the form is invalid or expired; open the sign-in link again");
    };
    let Some(ticket) = auth.open_ticket(&form.ticket, &server) else {
        return refused("this sign-in link is invalid, expired or already used; ask for a new one");
    };
    if ticket.nonce != consent.ticket.nonce || ticket.principal != consent.ticket.principal {
        return refused("the form does not belong to this sign-in link");
    }
    if let Err(r) = auth.check_browser(
        &headers,
        &ticket.principal,
        &format!("/auth/{server}/start?ticket={}", form.ticket),
    ) {
        return r;
    }
    {
        let mut spent = lock(&auth.inner.spent);
        spent.retain(|_, t| t.elapsed() < TTL + Duration::from_mins(1));
        if spent.insert(ticket.nonce.clone(), Instant::now()).is_some() {
            return refused("this sign-in link was already used");
        }
    }
    if form.decision != "approve" {
        return page(StatusCode::OK, "Cancelled", "<p>Nothing was changed.</p>");
    }
    let pending = match oauth.begin(consent.discovery).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(server, error = %e, "starting the upstream OAuth flow failed");
            return page(
                StatusCode::BAD_GATEWAY,
                "Sign-in unavailable",
                &format!(
                    "<p>The authorization server refused to start the sign-in.</p>{}",
                    why_not(&e)
                ),
            );
        }
    };
    let name = cookie_name(auth.inner.secure);
    let browser = match cookie_value(&headers, name)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Some(v) => v.to_owned(),
        None => match mcp_guard_core::hex::random(32) {
            Ok(v) => v,
            Err(_) => {
                return refused("the gateway could not make a one-time value for this browser; try again");
            }
        },
    };
    let location = pending.authorization_url().to_owned();
    {
        let mut flows = lock(&auth.inner.flows);
        flows.retain(|_, f| f.created.elapsed() < TTL);
        flows.insert(
            pending.state().to_owned(),
            Flow {
                pending,
                server: server.clone(),
                return_to: ticket.return_to,
                browser: browser.clone(),
                created: Instant::now(),
            },
        );
    }
    let cookie = format!(
        "{name}={browser}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        TTL.as_secs(),
        if auth.inner.secure { "; Secure" } else { "" }
    );
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    if let (Ok(l), Ok(c)) = (HeaderValue::from_str(&location), HeaderValue::from_str(&cookie)) {
        h.insert(header::LOCATION, l);
        h.insert(header::SET_COOKIE, c);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

#[derive(serde::Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

async fn callback(
    State(auth): State<UpstreamAuth>,
    Path(server): Path<String>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(state) = q.state.filter(|s| !s.is_empty()) else {
        return refused("the provider's answer carries no state");
    };
    // Exact match, spent on first use whatever happens next.
    let Some(flow) = lock(&auth.inner.flows).remove(&state) else {
        return refused("unknown, expired or already used state");
    };
    if flow.created.elapsed() >= TTL || flow.server != server {
        return refused("unknown, expired or already used state");
    }
    let name = cookie_name(auth.inner.secure);
    if cookie_value(&headers, name) != Some(flow.browser.as_str()) {
        return refused("this sign-in was started in another browser");
    }
    if let Some(e) = q.error {
        return page(
            StatusCode::OK,
            "Sign-in not completed",
            &format!("<p>The provider answered: {}</p>", escape(&e)),
        );
    }
    let Some(code) = q.code else {
        return refused("the provider's answer carries no code");
    };
    let principal = flow.pending.principal().to_owned();
    if let Err(e) = flow.pending.complete(&code, q.iss.as_deref()).await {
        tracing::warn!(server, principal, error = %e, "upstream OAuth code exchange failed");
        return page(
            StatusCode::BAD_GATEWAY,
            "Sign-in failed",
            "<p>The authorization server did not accept the sign-in. Try again with a new link.</p>",
        );
    }
    tracing::info!(server, principal, "principal signed in to an upstream");
    if let Some(r) = flow.return_to
        && let Ok(l) = HeaderValue::from_str(&r)
    {
        let mut resp = StatusCode::SEE_OTHER.into_response();
        resp.headers_mut().insert(header::LOCATION, l);
        return resp;
    }
    page(
        StatusCode::OK,
        "Connected",
        &format!(
            "<p>{} is connected for {}. You can close this page.</p>",
            escape(&server),
            escape(&principal)
        ),
    )
}
