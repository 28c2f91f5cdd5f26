//! The authorization server's routes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use mcp_guard_core::Principal;
use mcp_guard_core::access::oauth::{GrantRefused, IssuedTokens, OAuthClient, RefreshCheck};
use mcp_guard_core::access::tokens;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};

use super::pages::{self, esc, hidden, page};
use super::redirect::{SIGNED_IN, local_path};
use super::{BrowserSession, Inner, IssuedCode, Pending, PersonalState, sweep};

type Shared = State<Arc<Inner>>;
pub(super) type Params = Vec<(String, String)>;

const CODE_TTL: Duration = Duration::from_mins(1);
const REQUEST_TTL: Duration = Duration::from_mins(10);
const SIGNIN_COOKIE: &str = "mcp-guard-signin";

pub(super) fn router(inner: Arc<Inner>) -> Router {
    // What a browser-based client calls from its own origin: no cookies are read
    // there, so any origin may (the pages below get no CORS headers at all).
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([http::Method::GET, http::Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static("mcp-protocol-version"),
        ]);
    let api = Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/oauth/register", post(register))
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .layer(cors);
    Router::new()
        .merge(api)
        .route("/oauth/style.css", get(style))
        .route("/oauth/authorize", get(authorize))
        .route("/oauth/consent", get(consent_page).post(consent_submit))
        .route("/oauth/connect", get(connect_page).post(connect_finish))
        .route("/oauth/connect/token", post(connect_token))
        .route("/oauth/account", get(account_page))
        .route("/oauth/account/token", post(account_token))
        .route("/oauth/account/revoke", post(account_revoke))
        .route("/oauth/signin", get(signin_page).post(signin_submit))
        .route("/oauth/signin/oidc", get(super::oidc::start))
        .route("/oauth/signin/callback", get(super::oidc::callback))
        .route("/oauth/signout", post(signout))
        .route("/login", get(login_link))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(inner)
}

// ---- small helpers -------------------------------------------------------------------

pub(super) fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).unwrap_or_else(|_| panic!("the operating system's random source failed"));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn sha(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn same(a: &str, b: &str) -> bool {
    tokens::digests_equal(&sha(a), &sha(b))
}

/// One value of a form or query; `Err` when given twice (parameters must not repeat).
pub(super) fn one<'a>(params: &'a Params, name: &str) -> Result<Option<&'a str>, String> {
    let mut it = params.iter().filter(|(k, _)| k == name);
    let first = it.next().map(|(_, v)| v.as_str());
    if it.next().is_some() {
        return Err(format!("parameter {name} is repeated"));
    }
    Ok(first.filter(|v| !v.is_empty()))
}

/// A 400 page for a form or link that lacks what it needs.
fn bad_request(detail: &str) -> Response {
    pages::error_page(StatusCode::BAD_REQUEST, "Invalid request", detail)
}

fn json_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        axum::Json(serde_json::json!({"error": error, "error_description": description})),
    )
        .into_response();
    pages::secure_headers(r.headers_mut());
    r
}

fn json_ok(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    pages::secure_headers(r.headers_mut());
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

pub(super) fn see_other(to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    pages::secure_headers(r.headers_mut());
    r
}

pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Inner {
    fn secure(&self) -> bool {
        self.settings.issuer.starts_with("https://")
    }

    /// A cookie's name on this server. Over plain http (loopback) the port is part of
    /// it: browsers share cookies between ports of one host, and two gateways on one
    /// machine must not overwrite each other's sign-ins.
    pub(super) fn cookie_name(&self, base: &str) -> String {
        format!("{base}{}", self.cookie_suffix)
    }

    fn session_cookie_name(&self) -> String {
        if self.secure() {
            "__Host-mcp-guard".to_owned()
        } else {
            self.cookie_name("mcp-guard-session")
        }
    }

    pub(super) fn set_cookie(
        &self,
        name: &str,
        value: &str,
        path: &str,
        max_age: Option<Duration>,
        same_site: &str,
    ) -> HeaderValue {
        let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite={same_site}");
        if self.secure() {
            c.push_str("; Secure");
        }
        if let Some(a) = max_age {
            let _ = write!(c, "; Max-Age={}", a.as_secs());
        }
        HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The signed-in user of this browser, if any.
    pub(super) fn browser(&self, headers: &HeaderMap) -> Option<BrowserSession> {
        let v = cookie(headers, &self.session_cookie_name())?;
        let now = Instant::now();
        self.lock()
            .browsers
            .get(&sha(v))
            .filter(|b| b.expires > now)
            .cloned()
    }

    fn revoke_grant(&self, grant: &str) {
        if let Err(e) = self.store.revoke_grant(grant) {
            tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "could not revoke a grant");
        }
        if let Some(s) = &self.sessions {
            s.revoke_credential(&format!("grant:{grant}"), SystemTime::now());
        }
    }
}

// ---- metadata and registration --------------------------------------------------------

async fn metadata(State(inner): Shared) -> Response {
    let i = &inner.settings.issuer;
    json_ok(
        StatusCode::OK,
        serde_json::json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/oauth/authorize"),
            "token_endpoint": format!("{i}/oauth/token"),
            "registration_endpoint": format!("{i}/oauth/register"),
            "revocation_endpoint": format!("{i}/oauth/revoke"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": inner.settings.scopes,
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
        }),
    )
}

async fn style() -> Response {
    let mut r = pages::STYLE.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Whether `uri` may receive authorization codes: https anywhere, http only on
/// loopback, or a private-use scheme of a native app; never a fragment.
pub(super) fn acceptable_redirect(uri: &str) -> Result<(), String> {
    let u = url::Url::parse(uri).map_err(|e| format!("redirect URI {uri:?} is not a URL: {e}"))?;
    if u.fragment().is_some() {
        return Err(format!("redirect URI {uri:?} has a fragment"));
    }
    match u.scheme() {
        "http" => match u.host() {
            Some(url::Host::Domain("localhost")) => Ok(()),
            Some(url::Host::Ipv4(a)) if a.is_loopback() => Ok(()),
            Some(url::Host::Ipv6(a)) if a.is_loopback() => Ok(()),
            _ => Err(format!(
                "redirect URI {uri:?}: plain http is allowed only on loopback"
            )),
        },
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" => {
            Err(format!("redirect URI {uri:?}: scheme not allowed"))
        }
        // https, or a native app's private-use scheme.
        _ => Ok(()),
    }
}

fn check_client_metadata(body: &serde_json::Value) -> Result<(String, Vec<String>), String> {
    let uris: Vec<String> = body
        .get("redirect_uris")
        .and_then(|v| v.as_array())
        .ok_or("redirect_uris is required")?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or("redirect_uris must be strings")
        })
        .collect::<Result<_, _>>()?;
    if uris.is_empty() || uris.len() > 10 {
        return Err("redirect_uris must hold 1 to 10 URIs".into());
    }
    for u in &uris {
        if u.len() > 2_000 {
            return Err("a redirect URI is longer than 2000 bytes".into());
        }
        acceptable_redirect(u)?;
    }
    for (field, allowed) in [
        ("grant_types", &["authorization_code", "refresh_token"][..]),
        ("response_types", &["code"][..]),
    ] {
        if let Some(v) = body.get(field) {
            let list = v.as_array().ok_or(format!("{field} must be an array"))?;
            if let Some(bad) = list
                .iter()
                .find(|g| !g.as_str().is_some_and(|g| allowed.contains(&g)))
            {
                return Err(format!("{field}: {bad} is not supported"));
            }
        }
    }
    let name = body
        .get("client_name")
        .and_then(|v| v.as_str())
        .unwrap_or("Unnamed client")
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect::<String>();
    Ok((name, uris))
}

/// `Err(answer)` when the store holds `max_clients` clients even after forgetting
/// those that never obtained a grant and are older than a pending request lives.
#[allow(clippy::result_large_err, reason = "the refusal is the answer to send")]
fn room_for_a_client(inner: &Inner) -> Result<(), Response> {
    let max = inner.settings.max_clients;
    let count = || inner.store.count_clients().unwrap_or(usize::MAX);
    if count() < max {
        return Ok(());
    }
    if let Some(before) = SystemTime::now().checked_sub(REQUEST_TTL) {
        match inner.store.forget_unused_clients(before) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    forgotten = n,
                    "registered clients that never obtained a grant were forgotten"
                );
            }
            Err(e) => {
                tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "could not forget unused clients");
            }
        }
    }
    if count() < max {
        return Ok(());
    }
    tracing::warn!(
        max,
        "client registration refused: the gateway holds its limit of clients"
    );
    let mut r = json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        &format!("this gateway holds its limit of {max} registered clients; try again later"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("600"));
    Err(r)
}

async fn register(State(inner): Shared, body: axum::body::Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            "the body is not a JSON object",
        );
    };
    let (name, uris) = match check_client_metadata(&body) {
        Ok(v) => v,
        Err(e) => {
            let code = if e.contains("redirect") {
                "invalid_redirect_uri"
            } else {
                "invalid_client_metadata"
            };
            return json_error(StatusCode::BAD_REQUEST, code, &e);
        }
    };
    if let Err(r) = room_for_a_client(&inner) {
        return r;
    }
    let id = format!("mcpg-client-{}", &random_b64(12));
    let client = OAuthClient::new(&id, &name, uris.clone(), "dcr");
    if let Err(e) = inner.store.register_client(&client) {
        tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "could not register a client");
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the client could not be stored",
        );
    }
    tracing::info!(client = %id, name = %name, "client registered");
    json_ok(
        StatusCode::CREATED,
        serde_json::json!({
            "client_id": id,
            "client_id_issued_at": SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "client_name": name,
            "redirect_uris": uris,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }),
    )
}

/// A client by id: registered, or a Client ID Metadata Document fetched now.
async fn find_client(inner: &Inner, client_id: &str) -> Result<OAuthClient, String> {
    if !client_id.contains("://") {
        return match inner.store.client(client_id) {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err("unknown client_id".into()),
            Err(_) => Err("the client registry is unavailable".into()),
        };
    }
    let doc = super::client_metadata::fetch(inner.client_metadata.as_ref(), client_id).await?;
    if doc
        .get("token_endpoint_auth_method")
        .and_then(|v| v.as_str())
        .is_some_and(|m| m != "none")
    {
        return Err("only public clients (token_endpoint_auth_method none) are supported".into());
    }
    let (name, uris) = check_client_metadata(&doc)?;
    let client = OAuthClient::new(client_id, name, uris, "cimd");
    let _ = inner.store.register_client(&client);
    Ok(client)
}

// ---- authorization ---------------------------------------------------------------------

/// Where errors go once the client and redirect URI are trusted (RFC 6749 §4.1.2.1).
fn error_redirect(
    inner: &Inner,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    let Ok(mut u) = url::Url::parse(redirect_uri) else {
        return bad_request(description);
    };
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("error", error)
            .append_pair("error_description", description);
        if let Some(s) = state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &inner.settings.issuer);
    }
    see_other(u.as_str())
}

async fn authorize(
    State(inner): Shared,
    source: crate::preauth::Source,
    Query(params): Query<Params>,
) -> Response {
    let bad =
        |detail: &str| pages::error_page(StatusCode::BAD_REQUEST, "This sign-in link is not valid", detail);
    let (client_id, redirect_uri, state) = match (
        one(&params, "client_id"),
        one(&params, "redirect_uri"),
        one(&params, "state"),
    ) {
        (Ok(Some(c)), Ok(Some(r)), Ok(s)) => (c, r, s),
        (Ok(None), ..) => return bad("client_id is missing."),
        (_, Ok(None), _) => return bad("redirect_uri is missing."),
        _ => return bad("A parameter is repeated."),
    };
    let client = match find_client(&inner, client_id).await {
        Ok(c) => c,
        Err(e) => return bad(&format!("The client is not valid: {e}.")),
    };
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        tracing::warn!(client = %client.id, "authorization request with an unregistered redirect_uri");
        return bad("redirect_uri does not match any URI the client registered.");
    }
    let max_state = inner.settings.max_state_bytes;
    if state.is_some_and(|s| s.len() > max_state) {
        return bad(&format!("state is longer than {max_state} bytes."));
    }
    // Errors go back only to a trusted redirect URI (RFC 9700 §4.11.2).
    let trusted =
        super::redirect::trusted_for_errors(&inner.settings.trusted_clients, &client.id, redirect_uri);
    let fail = |error: &str, d: &str| {
        if trusted {
            error_redirect(&inner, redirect_uri, state, error, d)
        } else {
            bad(&format!(
                "The client's request cannot be accepted: {d} ({error}). Nothing was sent back to the client."
            ))
        }
    };
    let get = |n: &str| one(&params, n);
    let (Ok(response_type), Ok(challenge), Ok(method), Ok(resource), Ok(scope)) = (
        get("response_type"),
        get("code_challenge"),
        get("code_challenge_method"),
        get("resource"),
        get("scope"),
    ) else {
        return fail("invalid_request", "a parameter is repeated");
    };
    if response_type != Some("code") {
        return fail(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let challenge = match pkce_challenge(challenge, method) {
        Ok(c) => c,
        Err(e) => return fail("invalid_request", e),
    };
    let Some(resource) = resource else {
        return fail(
            "invalid_request",
            "resource is required (RFC 8707): the endpoint's URL",
        );
    };
    let Some(endpoint) = inner.endpoint_of(resource) else {
        return fail("invalid_target", "resource is not an endpoint of this gateway");
    };
    let scope = scope.unwrap_or("");
    if scope.len() > inner.settings.max_state_bytes {
        return fail("invalid_scope", "scope is too long");
    }
    if !inner.settings.scopes.is_empty()
        && let Some(s) = scope
            .split(' ')
            .find(|s| !s.is_empty() && !inner.settings.scopes.iter().any(|k| k == s))
    {
        return fail("invalid_scope", &format!("unknown scope {s}"));
    }
    // Only the redirect URI of this request is kept (a client may register ten).
    let mut client = client;
    client.redirect_uris = vec![redirect_uri.to_owned()];
    hold(
        &inner,
        Pending {
            source,
            redirect_uri: redirect_uri.to_owned(),
            state: state.map(str::to_owned),
            code_challenge: challenge.to_owned(),
            endpoint,
            resource: resource.trim_end_matches('/').to_owned(),
            scope: if inner.settings.scopes.is_empty() {
                String::new()
            } else {
                scope.to_owned()
            },
            principal: None,
            approved: None,
            expires: Instant::now() + REQUEST_TTL,
            client,
        },
    )
}

/// The PKCE challenge of an authorization request: S256 and a base64url SHA-256.
fn pkce_challenge<'a>(challenge: Option<&'a str>, method: Option<&str>) -> Result<&'a str, &'static str> {
    let challenge = challenge.ok_or("code_challenge is required (PKCE with S256)")?;
    if method != Some("S256") {
        return Err("code_challenge_method must be S256");
    }
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("code_challenge is not a base64url SHA-256 digest");
    }
    Ok(challenge)
}

/// Keeps a valid authorization request until the user consents (if there is room for
/// one more from its source) and sends the browser to the consent page.
fn hold(inner: &Inner, pending: Pending) -> Response {
    let id = random_b64(18);
    let source = pending.source;
    {
        let mut st = inner.lock();
        sweep(&mut st);
        if let Err(full) = inner.room(source, st.pending.values().map(|p| p.source)) {
            drop(st);
            tracing::warn!(%source, ?full, "authorization request refused: too many in progress");
            return super::too_many_in_progress(full);
        }
        st.pending.insert(id.clone(), pending);
    }
    see_other(&format!("/oauth/consent?request={id}"))
}

/// The pending request `id`, bound to `user` (taken up by them now if nobody has).
#[allow(clippy::result_large_err, reason = "the refusal is the page to answer with")]
fn take_up(inner: &Inner, id: &str, user: &Principal) -> Result<Pending, Response> {
    let mut st = inner.lock();
    let now = Instant::now();
    let Some(p) = st.pending.get_mut(id).filter(|p| p.expires > now) else {
        return Err(pages::error_page(
            StatusCode::BAD_REQUEST,
            "This request has expired",
            "Start again from your MCP client.",
        ));
    };
    match &p.principal {
        Some(owner) if owner != user.id() => Err(pages::error_page(
            StatusCode::FORBIDDEN,
            "This request belongs to someone else",
            "Start again from your MCP client.",
        )),
        _ => {
            p.principal = Some(user.id().to_owned());
            Ok(p.clone())
        }
    }
}

/// The request id of a consent or connect form or link: the base64url id
/// `authorize` made, nothing else (it is put into the `next` of a sign-in).
fn request_id(params: &Params) -> Option<String> {
    one(params, "request")
        .ok()
        .flatten()
        .filter(|id| {
            id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
}

async fn consent_page(State(inner): Shared, headers: HeaderMap, Query(params): Query<Params>) -> Response {
    let Some(id) = request_id(&params) else {
        return bad_request("The request id is missing or malformed.");
    };
    let Some(browser) = inner.browser(&headers) else {
        return signin_form(&inner, &format!("/oauth/consent?request={id}"), None);
    };
    let p = match take_up(&inner, &id, &browser.principal) {
        Ok(p) => p,
        Err(r) => return r,
    };
    render_consent(&inner, &id, &p, &browser).await
}

async fn render_consent(inner: &Inner, id: &str, p: &Pending, browser: &BrowserSession) -> Response {
    let user = &browser.principal;
    let description = inner.catalog.describe(&p.endpoint).flatten();
    let tools = inner.catalog.tools(user, &p.endpoint).await;
    let before = inner
        .store
        .consent(user.id(), &p.client.id, &p.endpoint)
        .ok()
        .flatten();
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Allow {} to use {}?</h1>\
<p>Signed in as <strong>{}</strong>.</p>\
<dl><dt>Client</dt><dd>{} <small>({})</small></dd>\
<dt>Redirect URI</dt><dd><code>{}</code></dd>\
<dt>Endpoint</dt><dd><code>{}</code>{}</dd></dl>",
        esc(&p.client.name),
        esc(&p.endpoint),
        esc(user.id()),
        esc(&p.client.name),
        esc(&p.client.id),
        esc(&p.redirect_uri),
        esc(&p.resource),
        description.map(|d| format!(" — {}", esc(&d))).unwrap_or_default(),
    );
    if tools.is_empty() {
        b.push_str("<p>No tool of this endpoint is enabled for you.</p>");
    } else {
        let _ = write!(
            b,
            "<h2>Tools it will be able to call ({})</h2><ul class=\"tools\">",
            tools.len()
        );
        for t in &tools {
            let _ = write!(b, "<li><code>{}</code></li>", esc(t));
        }
        b.push_str("</ul>");
    }
    if before.is_some() {
        b.push_str("<p>You have allowed this client on this endpoint before.</p>");
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/oauth/consent\">{}{}<fieldset><legend>Access duration</legend>",
        hidden("request", id),
        hidden("csrf", &browser.csrf)
    );
    for (i, (label, _)) in inner.settings.durations.iter().enumerate() {
        let _ = write!(
            b,
            "<div><input type=\"radio\" name=\"duration\" id=\"d{i}\" value=\"{v}\"{c}><label for=\"d{i}\">{h}</label></div>",
            v = esc(label),
            h = esc(&pages::humanize(label)),
            c = if i == 0 { " checked" } else { "" }
        );
    }
    b.push_str(
        "</fieldset><div class=\"actions\"><button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button></div></form>",
    );
    let targets: Vec<String> = pages::origin(&p.redirect_uri).into_iter().collect();
    page(StatusCode::OK, "Allow access", &b, &targets)
}

/// The signed-in browser whose CSRF token the form carries, or the refusal.
#[allow(clippy::result_large_err, reason = "the refusal is the page to answer with")]
fn checked_browser(inner: &Inner, headers: &HeaderMap, form: &Params) -> Result<BrowserSession, Response> {
    let Some(browser) = inner.browser(headers) else {
        return Err(pages::error_page(
            StatusCode::UNAUTHORIZED,
            "Not signed in",
            "Sign in and start again.",
        ));
    };
    match one(form, "csrf") {
        Ok(Some(t)) if same(t, &browser.csrf) => Ok(browser),
        _ => {
            tracing::warn!(user = %browser.principal.id(), "form without a valid CSRF token refused");
            Err(pages::error_page(
                StatusCode::FORBIDDEN,
                "Refused",
                "The form's CSRF token is missing or wrong. Reload the page and try again.",
            ))
        }
    }
}

async fn consent_submit(
    State(inner): Shared,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Params>,
) -> Response {
    let browser = match checked_browser(&inner, &headers, &form) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(id) = request_id(&form) else {
        return bad_request("The request id is missing or malformed.");
    };
    let p = match take_up(&inner, &id, &browser.principal) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if one(&form, "decision").ok().flatten() != Some("allow") {
        inner.lock().pending.remove(&id);
        return error_redirect(
            &inner,
            &p.redirect_uri,
            p.state.as_deref(),
            "access_denied",
            "the user denied access",
        );
    }
    let chosen = one(&form, "duration").ok().flatten();
    let Some((_, duration)) = inner
        .settings
        .durations
        .iter()
        .find(|(l, _)| Some(l.as_str()) == chosen)
    else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "Invalid duration",
            "Choose one of the offered durations.",
        );
    };
    if let Err(e) =
        inner
            .store
            .record_consent(browser.principal.id(), &p.client.id, &p.endpoint, &p.redirect_uri)
    {
        tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "could not record consent");
        return pages::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Try again",
            "The consent could not be recorded.",
        );
    }
    tracing::info!(user = %browser.principal.id(), client = %p.client.id, endpoint = %p.endpoint, duration = ?duration, "consent given");
    if let Some(p) = inner.lock().pending.get_mut(&id) {
        p.approved = Some(*duration);
    }
    let servers = inner.personal.servers(&browser.principal, &p.endpoint).await;
    if servers.iter().all(|s| s.state == PersonalState::Done) {
        return issue_code(&inner, &id, &browser.principal);
    }
    see_other(&format!("/oauth/connect?request={id}"))
}

/// Issues the code for an approved request and sends the browser back to the client.
/// The grant is `user`'s as signed in: a configured user with the configured roles,
/// or someone the OpenID Connect provider vouched for with the roles of their claims
/// (none unless a roles claim is configured).
fn issue_code(inner: &Inner, id: &str, user: &Principal) -> Response {
    let Some(p) = inner.lock().pending.remove(id) else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "This request has expired",
            "Start again from your MCP client.",
        );
    };
    let (Some(duration), Some(owner)) = (p.approved, p.principal.as_deref()) else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "Not approved",
            "Approve the request first.",
        );
    };
    let Some(principal) = (owner == user.id()).then_some(user) else {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "This request belongs to someone else.",
        );
    };
    let grant = match inner
        .store
        .create_grant(principal, &p.client.id, &p.endpoint, &p.scope, duration)
    {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "could not create a grant");
            return pages::error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Try again",
                "The grant could not be stored.",
            );
        }
    };
    let code = random_b64(32);
    inner.lock().codes.insert(
        sha(&code),
        IssuedCode {
            client_id: p.client.id.clone(),
            redirect_uri: p.redirect_uri.clone(),
            code_challenge: p.code_challenge.clone(),
            resource: p.resource.clone(),
            grant: grant.id.clone(),
            expires: Instant::now() + CODE_TTL,
            used: false,
        },
    );
    tracing::info!(user = %principal.id(), client = %p.client.id, grant = %grant.id, endpoint = %p.endpoint, "authorization code issued");
    let Ok(mut u) = url::Url::parse(&p.redirect_uri) else {
        return bad_request("The redirect URI is not valid.");
    };
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(s) = &p.state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &inner.settings.issuer);
    }
    see_other(u.as_str())
}

// ---- personal credentials ---------------------------------------------------------------

async fn connect_page(State(inner): Shared, headers: HeaderMap, Query(params): Query<Params>) -> Response {
    let Some(id) = request_id(&params) else {
        return bad_request("The request id is missing or malformed.");
    };
    let Some(browser) = inner.browser(&headers) else {
        return signin_form(&inner, &format!("/oauth/connect?request={id}"), None);
    };
    let p = match take_up(&inner, &id, &browser.principal) {
        Ok(p) if p.approved.is_some() => p,
        Ok(_) => return see_other(&format!("/oauth/consent?request={id}")),
        Err(r) => return r,
    };
    render_connect(&inner, &id, &p, &browser, None).await
}

async fn render_connect(
    inner: &Inner,
    id: &str,
    p: &Pending,
    browser: &BrowserSession,
    error: Option<&str>,
) -> Response {
    let user = &browser.principal;
    let servers = inner.personal.servers(user, &p.endpoint).await;
    let here = format!("/oauth/connect?request={id}");
    let mut b = format!(
        "<h1>Connect your accounts</h1><p>{} needs your own credentials for these servers of <code>{}</code>. \
The connection is made once every one is done.</p>",
        esc(&p.client.name),
        esc(&p.endpoint)
    );
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    b.push_str(&credentials_table(
        inner,
        browser,
        &servers,
        &here,
        "/oauth/connect/token",
        &hidden("request", id),
    ));
    let ready = servers.iter().all(|s| s.state == PersonalState::Done);
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/oauth/connect\">{}{}<div class=\"actions\"><button type=\"submit\" id=\"continue\"{}>Continue to {}</button></div></form>",
        hidden("request", id),
        hidden("csrf", &browser.csrf),
        if ready { "" } else { " disabled" },
        esc(&p.client.name)
    );
    let targets: Vec<String> = pages::origin(&p.redirect_uri).into_iter().collect();
    page(StatusCode::OK, "Connect your accounts", &b, &targets)
}

/// The table of an endpoint's personal servers with their state and what to do:
/// OAuth links come back to `here`; token forms post to `action` with `extra` fields.
fn credentials_table(
    inner: &Inner,
    browser: &BrowserSession,
    servers: &[super::PersonalServer],
    here: &str,
    action: &str,
    extra: &str,
) -> String {
    let user = &browser.principal;
    let mut b = String::new();
    b.push_str("<table><thead><tr><th scope=\"col\">Server</th><th scope=\"col\">State</th><th scope=\"col\">Action</th></tr></thead><tbody>");
    for s in servers {
        let (label, class) = match s.state {
            PersonalState::Done => ("Done", "state-done"),
            PersonalState::NeedsOAuth => ("Needs sign-in", "state-needed"),
            PersonalState::NeedsToken => ("Needs a token", "state-needed"),
            PersonalState::NeedsReauthentication => ("Needs re-authentication", "state-needed"),
        };
        let _ = write!(
            b,
            "<tr><td><strong>{}</strong>{}</td><td><span class=\"state {class}\" id=\"state-{}\">{label}</span></td><td>",
            esc(&s.server),
            s.description
                .as_deref()
                .map(|d| format!("<br><small>{}</small>", esc(d)))
                .unwrap_or_default(),
            esc(&s.server),
        );
        if s.oauth {
            if let Some(url) = inner.personal.oauth_start(user, &s.server, here) {
                let verb = if s.state == PersonalState::Done {
                    "Re-authenticate"
                } else {
                    "Connect"
                };
                let _ = write!(
                    b,
                    "<a href=\"{}\" id=\"connect-{}\">{verb} {}</a>",
                    esc(&url),
                    esc(&s.server),
                    esc(&s.server)
                );
            }
        } else {
            let _ = write!(
                b,
                "<form method=\"post\" action=\"{}\">{}{}{}",
                esc(action),
                extra,
                hidden("csrf", &browser.csrf),
                hidden("server", &s.server)
            );
            for n in &s.token_names {
                let _ = write!(
                    b,
                    "<label for=\"v-{s}-{n}\">{n}</label><input type=\"password\" id=\"v-{s}-{n}\" name=\"value:{n}\" autocomplete=\"off\" required>",
                    s = esc(&s.server),
                    n = esc(n)
                );
            }
            let verb = if s.state == PersonalState::Done {
                "Replace token"
            } else {
                "Save token"
            };
            let _ = write!(b, "<button type=\"submit\">{verb}</button></form>");
        }
        b.push_str("</td></tr>");
    }
    b.push_str("</tbody></table>");
    b
}

/// Stores the values a token form carries (`value:<NAME>` for each of the server's
/// names) as `principal`'s own; `Err` holds what to tell the user.
async fn store_pasted_tokens(
    inner: &Inner,
    principal: &Principal,
    server: &super::PersonalServer,
    form: &Params,
) -> Result<(), String> {
    for name in &server.token_names {
        let value = match one(form, &format!("value:{name}")) {
            Ok(Some(v)) if !v.trim().is_empty() && v.len() <= 8 * 1024 => v.trim().to_owned(),
            _ => return Err(format!("Enter a value for {name}.")),
        };
        if let Err(e) = inner
            .personal
            .set_token(principal, &server.server, name, SecretString::from(value))
            .await
        {
            tracing::error!(server = %server.server, error = %e, "could not store a personal token");
            return Err("The token could not be stored.".into());
        }
    }
    Ok(())
}

async fn connect_token(
    State(inner): Shared,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Params>,
) -> Response {
    let browser = match checked_browser(&inner, &headers, &form) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (Some(id), Ok(Some(server))) = (request_id(&form), one(&form, "server")) else {
        return bad_request("The request or server is missing.");
    };
    let p = match take_up(&inner, &id, &browser.principal) {
        Ok(p) if p.approved.is_some() => p,
        Ok(_) => return see_other(&format!("/oauth/consent?request={id}")),
        Err(r) => return r,
    };
    let servers = inner.personal.servers(&browser.principal, &p.endpoint).await;
    let Some(s) = servers.iter().find(|s| s.server == server && !s.oauth) else {
        return bad_request("That server takes no token here.");
    };
    if let Err(message) = store_pasted_tokens(&inner, &browser.principal, s, &form).await {
        return render_connect(&inner, &id, &p, &browser, Some(&message)).await;
    }
    tracing::info!(user = %browser.principal.id(), server, "personal token stored");
    see_other(&format!("/oauth/connect?request={id}"))
}

async fn connect_finish(
    State(inner): Shared,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Params>,
) -> Response {
    let browser = match checked_browser(&inner, &headers, &form) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(id) = request_id(&form) else {
        return bad_request("The request id is missing or malformed.");
    };
    let p = match take_up(&inner, &id, &browser.principal) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let servers = inner.personal.servers(&browser.principal, &p.endpoint).await;
    if !servers.iter().all(|s| s.state == PersonalState::Done) {
        return render_connect(
            &inner,
            &id,
            &p,
            &browser,
            Some("Some servers still need your credentials."),
        )
        .await;
    }
    issue_code(&inner, &id, &browser.principal)
}

// ---- the user's own page: connected clients and personal credentials ---------------------

async fn account_page(State(inner): Shared, headers: HeaderMap) -> Response {
    let Some(browser) = inner.browser(&headers) else {
        return signin_form(&inner, "/oauth/account", None);
    };
    render_account(&inner, &browser, None).await
}

async fn render_account(inner: &Inner, browser: &BrowserSession, note: Option<&str>) -> Response {
    let user = &browser.principal;
    let mut b = format!(
        "<h1>Your access</h1><p>Signed in as <strong>{}</strong>.</p>",
        esc(user.id())
    );
    if let Some(n) = note {
        let _ = write!(b, "<p role=\"status\">{}</p>", esc(n));
    }
    b.push_str("<h2>Connected clients</h2>");
    let now = SystemTime::now();
    let grants: Vec<_> = inner
        .store
        .list_grants()
        .unwrap_or_default()
        .into_iter()
        .filter(|(g, revoked)| g.principal.id() == user.id() && revoked.is_none() && g.expires > now)
        .map(|(g, _)| g)
        .collect();
    if grants.is_empty() {
        b.push_str("<p>No client holds access for you.</p>");
    } else {
        b.push_str("<table><thead><tr><th scope=\"col\">Client</th><th scope=\"col\">Endpoint</th><th scope=\"col\">Until</th><th scope=\"col\">Action</th></tr></thead><tbody>");
        for g in &grants {
            let name = inner
                .store
                .client(&g.client_id)
                .ok()
                .flatten()
                .map_or_else(|| g.client_id.clone(), |c| c.name);
            let _ = write!(
                b,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><form method=\"post\" action=\"/oauth/account/revoke\">{}{}\
<button type=\"submit\" class=\"secondary\" id=\"revoke-{}\">Revoke</button></form></td></tr>",
                esc(&name),
                esc(&g.endpoint),
                esc(&mcp_guard_core::time::format_rfc3339(g.expires)),
                hidden("csrf", &browser.csrf),
                hidden("grant", &g.id),
                esc(&g.id),
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("<h2>Your credentials</h2>");
    let mut any = false;
    for endpoint in inner.catalog.endpoints() {
        let servers = inner.personal.servers(user, &endpoint).await;
        if servers.is_empty() {
            continue;
        }
        any = true;
        let _ = write!(b, "<h3>Endpoint <code>{}</code></h3>", esc(&endpoint));
        let extra = format!(
            "{}{}",
            hidden("endpoint", &endpoint),
            hidden("csrf", &browser.csrf)
        );
        b.push_str(&credentials_table(
            inner,
            browser,
            &servers,
            "/oauth/account",
            "/oauth/account/token",
            &extra,
        ));
    }
    if !any {
        b.push_str("<p>No server needs your own credentials.</p>");
    }
    page(StatusCode::OK, "Your access", &b, &[])
}

async fn account_token(
    State(inner): Shared,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Params>,
) -> Response {
    let browser = match checked_browser(&inner, &headers, &form) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (Ok(Some(endpoint)), Ok(Some(server))) = (one(&form, "endpoint"), one(&form, "server")) else {
        return bad_request("The endpoint or server is missing.");
    };
    let servers = inner.personal.servers(&browser.principal, endpoint).await;
    let Some(s) = servers.iter().find(|s| s.server == server && !s.oauth) else {
        return bad_request("That server takes no token here.");
    };
    if let Err(message) = store_pasted_tokens(&inner, &browser.principal, s, &form).await {
        return render_account(&inner, &browser, Some(&message)).await;
    }
    tracing::info!(user = %browser.principal.id(), server, "personal token replaced");
    see_other("/oauth/account")
}

async fn account_revoke(
    State(inner): Shared,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Params>,
) -> Response {
    let browser = match checked_browser(&inner, &headers, &form) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(Some(id)) = one(&form, "grant") else {
        return bad_request("The grant is missing.");
    };
    // Only the user's own grants.
    match inner.store.grant(id) {
        Ok(Some(g)) if g.principal.id() == browser.principal.id() => {
            inner.revoke_grant(id);
            tracing::info!(user = %browser.principal.id(), grant = id, "grant revoked by its user");
            render_account(&inner, &browser, Some("Access revoked.")).await
        }
        _ => pages::error_page(StatusCode::NOT_FOUND, "Not found", "No such access of yours."),
    }
}

// ---- token and revocation ---------------------------------------------------------------

/// The client id of a token or revocation request: `client_id` in the form, or the
/// user part of HTTP Basic (a secret, if any, is ignored: clients are public).
#[allow(clippy::result_large_err, reason = "the refusal is the page to answer with")]
fn presented_client(headers: &HeaderMap, form: &Params) -> Result<String, Response> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(id, _)| id.to_owned()));
    let form_id =
        one(form, "client_id").map_err(|e| json_error(StatusCode::BAD_REQUEST, "invalid_request", &e))?;
    match (basic, form_id) {
        (Some(b), Some(f)) if b != f => Err(json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "two different client ids",
        )),
        (Some(b), _) => Ok(b),
        (None, Some(f)) => Ok(f.to_owned()),
        (None, None) => Err(json_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id is required",
        )),
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the token endpoint hands the client its new tokens"
)]
fn token_response(t: &IssuedTokens) -> Response {
    let mut body = serde_json::json!({
        "access_token": t.access_token.expose_secret(),
        "token_type": "Bearer",
        "expires_in": t.expires_in,
    });
    if let Some(r) = &t.refresh_token {
        body["refresh_token"] = r.expose_secret().into();
    }
    if !t.grant.scope.is_empty() {
        body["scope"] = t.grant.scope.clone().into();
    }
    json_ok(StatusCode::OK, body)
}

async fn token(State(inner): Shared, headers: HeaderMap, axum::Form(form): axum::Form<Params>) -> Response {
    let client_id = match presented_client(&headers, &form) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match one(&form, "grant_type") {
        Ok(Some("authorization_code")) => exchange_code(&inner, &client_id, &form),
        Ok(Some("refresh_token")) => refresh(&inner, &client_id, &form),
        Ok(Some(_)) => json_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "use authorization_code or refresh_token",
        ),
        Ok(None) => json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is required",
        ),
        Err(e) => json_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
    }
}

fn exchange_code(inner: &Inner, client_id: &str, form: &Params) -> Response {
    let get = |n| one(form, n);
    let (Ok(Some(code)), Ok(redirect_uri), Ok(verifier), Ok(resource)) = (
        get("code"),
        get("redirect_uri"),
        get("code_verifier"),
        get("resource"),
    ) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code is required (once)",
        );
    };
    let Some(verifier) = verifier else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code_verifier is required (PKCE)",
        );
    };
    let grant = {
        let mut st = inner.lock();
        let Some(c) = st.codes.get_mut(&sha(code)) else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "unknown authorization code",
            );
        };
        if c.used {
            let grant = c.grant.clone();
            drop(st);
            tracing::warn!(grant = %grant, "an authorization code was presented twice; revoking its grant");
            inner.revoke_grant(&grant);
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the authorization code was already used",
            );
        }
        c.used = true;
        if c.expires <= Instant::now() {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the authorization code has expired",
            );
        }
        if c.client_id != client_id {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the code was issued to another client",
            );
        }
        if redirect_uri != Some(c.redirect_uri.as_str()) {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "redirect_uri does not match the authorization request",
            );
        }
        if resource.is_some_and(|r| r.trim_end_matches('/') != c.resource) {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "resource differs from the authorization request",
            );
        }
        let valid_verifier = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        let computed =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        if !valid_verifier || !same(&computed, &c.code_challenge) {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "code_verifier does not match the code_challenge",
            );
        }
        c.grant.clone()
    };
    let Ok(Some(g)) = inner.store.grant(&grant) else {
        return json_error(StatusCode::BAD_REQUEST, "invalid_grant", "the grant is gone");
    };
    match inner
        .store
        .issue_grant_tokens(&g, inner.settings.access_token_ttl)
    {
        Ok(t) => token_response(&t),
        Err(_) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "tokens could not be issued",
        ),
    }
}

/// RFC 6749 §6: the request is validated in full (client, resource, scope) before the
/// refresh token is used up, so a malformed refresh costs the client nothing.
fn refresh(inner: &Inner, client_id: &str, form: &Params) -> Response {
    let (Ok(Some(rt)), Ok(resource), Ok(scope)) = (
        one(form, "refresh_token"),
        one(form, "resource"),
        one(form, "scope"),
    ) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is required, and refresh_token, resource and scope may be given once",
        );
    };
    let mut check = RefreshCheck::new();
    let endpoint;
    if let Some(r) = resource {
        let Some(e) = inner.endpoint_of(r) else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "resource is not an endpoint of this gateway",
            );
        };
        endpoint = e;
        check = check.endpoint(&endpoint);
    }
    if let Some(s) = scope {
        check = check.scope(s);
    }
    match inner
        .store
        .refresh_grant(rt, client_id, check, inner.settings.access_token_ttl)
    {
        Ok(Ok(t)) => token_response(&t),
        Ok(Err(GrantRefused::Reused)) => {
            if let Ok(Some(grant)) = inner.store.grant_of_refresh(rt) {
                inner.revoke_grant(&grant);
            }
            json_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token was already used; the grant is revoked",
            )
        }
        Ok(Err(GrantRefused::WrongTarget)) => json_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource differs from the grant's endpoint",
        ),
        Ok(Err(GrantRefused::ScopeExceeded)) => json_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope asks for more than was granted",
        ),
        Ok(Err(e)) => json_error(StatusCode::BAD_REQUEST, "invalid_grant", &e.to_string()),
        Err(_) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the grant store is unavailable",
        ),
    }
}

async fn revoke(State(inner): Shared, headers: HeaderMap, axum::Form(form): axum::Form<Params>) -> Response {
    let client_id = match presented_client(&headers, &form) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(Some(token)) = one(&form, "token") else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required (once)",
        );
    };
    let grant = inner.store.grant_of_refresh(token).ok().flatten();
    match inner.store.revoke_presented(token, &client_id) {
        Ok(Ok(())) => {
            if let Some(g) = grant {
                inner.revoke_grant(&g);
            }
            json_ok(StatusCode::OK, serde_json::json!({}))
        }
        Ok(Err(_)) => json_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the token was issued to another client",
        ),
        Err(_) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the grant store is unavailable",
        ),
    }
}

// ---- sign-in ---------------------------------------------------------------------------

fn signin_form(inner: &Inner, next: &str, error: Option<&str>) -> Response {
    let pre = random_b64(24);
    let mut b = String::from("<h1>Sign in to mcp-guard</h1>");
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    if let Some(o) = &inner.oidc {
        let _ = write!(
            b,
            "<form method=\"get\" action=\"/oauth/signin/oidc\">{}<div class=\"actions\"><button type=\"submit\">Sign in with {}</button></div></form>",
            hidden("next", next),
            esc(&o.settings.display_name)
        );
        if inner.users.is_empty() {
            let mut r = page(StatusCode::OK, "Sign in", &b, &[]);
            r.headers_mut().append(
                header::SET_COOKIE,
                inner.set_cookie(
                    &inner.cookie_name(SIGNIN_COOKIE),
                    &pre,
                    "/",
                    Some(REQUEST_TTL),
                    "Strict",
                ),
            );
            return r;
        }
        b.push_str("<p>Or, with a one-time link:</p>");
    }
    let _ = write!(
        b,
        "<p>Paste the sign-in link or code your administrator gave you \
(<code>mcp-guard users login-link &lt;you&gt;</code>).</p>\
<form method=\"post\" action=\"/oauth/signin\">{}{}\
<label for=\"code\">Sign-in link or code</label>\
<input type=\"password\" id=\"code\" name=\"code\" autocomplete=\"off\" required>\
<div class=\"actions\"><button type=\"submit\">Sign in</button></div></form>",
        hidden("csrf", &pre),
        hidden("next", next)
    );
    let mut r = page(StatusCode::OK, "Sign in", &b, &[]);
    r.headers_mut().append(
        header::SET_COOKIE,
        inner.set_cookie(
            &inner.cookie_name(SIGNIN_COOKIE),
            &pre,
            "/",
            Some(REQUEST_TTL),
            "Strict",
        ),
    );
    r
}

async fn signin_page(State(inner): Shared, Query(params): Query<Params>) -> Response {
    let next = local_path(&inner.settings.issuer, one(&params, "next").ok().flatten());
    signin_form(&inner, &next, None)
}

/// A sign-in link opened in the browser: a confirmation form (so that a link
/// previewer fetching the URL does not use it up).
async fn login_link(State(inner): Shared, Query(params): Query<Params>) -> Response {
    let Ok(Some(code)) = one(&params, "code") else {
        return signin_form(&inner, SIGNED_IN, Some("The link has no code."));
    };
    let pre = random_b64(24);
    let b = format!(
        "<h1>Sign in to mcp-guard</h1><form method=\"post\" action=\"/oauth/signin\">{}{}{}\
<div class=\"actions\"><button type=\"submit\">Sign in</button></div></form>",
        hidden("csrf", &pre),
        hidden("code", code),
        hidden(
            "next",
            &local_path(&inner.settings.issuer, one(&params, "next").ok().flatten())
        )
    );
    let mut r = page(StatusCode::OK, "Sign in", &b, &[]);
    r.headers_mut().append(
        header::SET_COOKIE,
        inner.set_cookie(
            &inner.cookie_name(SIGNIN_COOKIE),
            &pre,
            "/",
            Some(REQUEST_TTL),
            "Strict",
        ),
    );
    r
}

async fn signin_submit(
    State(inner): Shared,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Params>,
) -> Response {
    let next = local_path(&inner.settings.issuer, one(&form, "next").ok().flatten());
    let csrf_ok = matches!(
        (cookie(&headers, &inner.cookie_name(SIGNIN_COOKIE)), one(&form, "csrf")),
        (Some(c), Ok(Some(f))) if same(c, f)
    );
    if !csrf_ok {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "The form's CSRF token is missing or wrong. Reload the page and try again.",
        );
    }
    let raw = one(&form, "code").ok().flatten().unwrap_or("").trim();
    // Accept the whole link as well as the bare code.
    let code = url::Url::parse(raw)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| raw.to_owned());
    let user = match inner.store.redeem_login_link(&code) {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            tracing::warn!(reason = %e, "sign-in refused");
            return signin_form(
                &inner,
                &next,
                Some("That sign-in link is not valid (unknown, used or expired)."),
            );
        }
        Err(_) => return signin_form(&inner, &next, Some("Sign-in is unavailable; try again.")),
    };
    let Some(principal) = inner.users.get(&user).cloned() else {
        return signin_form(
            &inner,
            &next,
            Some("That user is not configured on this gateway."),
        );
    };
    tracing::info!(user = %user, "signed in");
    start_browser_session(&inner, principal, &next)
}

/// Signs `principal` in on this browser (a new session cookie) and sends it to `next`.
pub(super) fn start_browser_session(inner: &Inner, principal: Principal, next: &str) -> Response {
    let value = random_b64(32);
    let user = principal.id().to_owned();
    {
        let mut st = inner.lock();
        sweep(&mut st);
        st.browsers.insert(
            sha(&value),
            BrowserSession {
                principal,
                csrf: random_b64(24),
                expires: Instant::now() + inner.settings.signin_ttl,
            },
        );
    }
    let mut r = if next == SIGNED_IN {
        page(
            StatusCode::OK,
            "Signed in",
            &format!(
                "<h1>Signed in as {}</h1><p>Return to your MCP client.</p>",
                esc(&user)
            ),
            &[],
        )
    } else {
        see_other(next)
    };
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        inner.set_cookie(
            &inner.session_cookie_name(),
            &value,
            "/",
            Some(inner.settings.signin_ttl),
            "Lax",
        ),
    );
    h.append(
        header::SET_COOKIE,
        inner.set_cookie(
            &inner.cookie_name(SIGNIN_COOKIE),
            "",
            "/",
            Some(Duration::ZERO),
            "Strict",
        ),
    );
    r
}

async fn signout(State(inner): Shared, headers: HeaderMap, axum::Form(form): axum::Form<Params>) -> Response {
    if checked_browser(&inner, &headers, &form).is_ok()
        && let Some(v) = cookie(&headers, &inner.session_cookie_name())
    {
        inner.lock().browsers.remove(&sha(v));
    }
    let mut r = page(StatusCode::OK, "Signed out", "<h1>Signed out</h1>", &[]);
    r.headers_mut().append(
        header::SET_COOKIE,
        inner.set_cookie(&inner.session_cookie_name(), "", "/", Some(Duration::ZERO), "Lax"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_that_may_receive_codes() {
        for ok in [
            "https://client.example/cb",
            "http://127.0.0.1:33418/callback",
            "http://localhost:8080/cb",
            "http://[::1]:9/cb",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
        ] {
            assert!(acceptable_redirect(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://client.example/cb",
            "https://client.example/cb#frag",
            "javascript:alert(1)",
            "data:text/html,x",
            "not a url",
        ] {
            assert!(acceptable_redirect(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let p: Params = vec![
            ("a".into(), "1".into()),
            ("a".into(), "2".into()),
            ("b".into(), String::new()),
        ];
        assert!(one(&p, "a").is_err());
        assert_eq!(one(&p, "b").unwrap(), None);
        assert_eq!(one(&p, "c").unwrap(), None);
    }
}
