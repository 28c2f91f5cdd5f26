//! The authorization server's routes: one module per endpoint (registration,
//! authorization, consent, token and revocation, sign-in, the account and connect
//! pages); the router, the helpers they share and the metadata document here.
#![allow(
    clippy::wildcard_imports,
    reason = "the endpoint modules share this module's imports and helpers"
)]

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

mod account;
mod authorize;
mod connect;
mod consent;
mod register;
mod signin;
mod token;

use account::*;
use authorize::*;
use connect::*;
use consent::*;
use register::*;
use signin::*;
use token::*;

pub(super) use signin::{NewBrowser, start_browser_session};

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

/// The answer when a one-time value cannot be made ([`mcp_guard_core::random`]): a 500
/// page naming the cause; `what` says what was not done. Callers make their values
/// before they use anything one-time up, so trying again works.
pub(super) fn random_failed(what: &str) -> Response {
    tracing::error!(what, "the operating system's random source failed");
    pages::error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Try again",
        &format!("The gateway's random source failed, so {what}. Nothing was used up: try again."),
    )
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

pub(super) use crate::web::cookie;

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
