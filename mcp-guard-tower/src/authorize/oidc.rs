//! Sign-in delegated to an external OpenID Connect provider: authorization code with
//! PKCE S256, `state` bound to the browser by a cookie and single use, a `nonce` in
//! the ID token, the ID token's signature checked against the provider's JWKS
//! (asymmetric algorithms only), its `iss`, `aud` and `exp`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use mcp_guard_core::Principal;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::Inner;
use super::flow::{NewBrowser, Params, cookie, one, random_failed, see_other, start_browser_session};
use super::pages;
use super::redirect::local_path;

const OIDC_COOKIE: &str = "mcp-guard-oidc";
const PENDING_TTL: Duration = Duration::from_mins(10);

/// Settings of the external OpenID Connect provider users sign in with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OidcSettings {
    /// The provider's issuer URL (its discovery document is under it).
    pub issuer: String,
    /// The gateway's client id at the provider.
    pub client_id: String,
    /// The client secret, for a confidential client (sent with HTTP Basic).
    pub client_secret: Option<SecretString>,
    /// Scopes requested. Default `openid profile email`.
    pub scopes: String,
    /// The ID token claim that names the user. Default `sub`.
    pub principal_claim: String,
    /// A claim holding the user's roles (an array of strings, or one string).
    pub roles_claim: Option<String>,
    /// What the sign-in button calls the provider.
    pub display_name: String,
}

impl OidcSettings {
    /// A provider at `issuer` where the gateway is client `client_id`.
    pub fn new(issuer: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into().trim_end_matches('/').to_owned(),
            client_id: client_id.into(),
            client_secret: None,
            scopes: "openid profile email".into(),
            principal_claim: "sub".into(),
            roles_claim: None,
            display_name: "your identity provider".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

pub(super) struct Oidc {
    pub(super) settings: OidcSettings,
    discovery: OnceCell<Discovery>,
}

pub(super) struct OidcPending {
    nonce: String,
    verifier: String,
    next: String,
    pub(super) source: crate::preauth::Source,
    pub(super) expires: Instant,
}

impl Oidc {
    pub(super) fn new(settings: OidcSettings) -> Self {
        Self {
            settings,
            discovery: OnceCell::new(),
        }
    }

    async fn discovery(&self, http: &reqwest::Client) -> Result<&Discovery, String> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!("{}/.well-known/openid-configuration", self.settings.issuer);
                let d: Discovery = http
                    .get(&url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| format!("discovery at {url} failed: {}", e.without_url()))?
                    .json()
                    .await
                    .map_err(|_| format!("discovery at {url}: not an OpenID configuration"))?;
                if d.issuer.trim_end_matches('/') != self.settings.issuer {
                    return Err(format!("discovery at {url} names another issuer: {}", d.issuer));
                }
                Ok(d)
            })
            .await
    }
}

fn unavailable(detail: &str) -> Response {
    tracing::error!(detail, "OpenID Connect sign-in failed");
    pages::error_page(
        StatusCode::BAD_GATEWAY,
        "Sign-in is unavailable",
        "The identity provider could not be reached or answered unexpectedly. Try again later.",
    )
}

/// `GET /oauth/signin/oidc?next=…`: off to the provider.
pub(super) async fn start(
    State(inner): State<Arc<Inner>>,
    source: crate::preauth::Source,
    Query(params): Query<Params>,
) -> Response {
    let Some(oidc) = &inner.oidc else {
        return pages::error_page(
            StatusCode::NOT_FOUND,
            "Not configured",
            "No identity provider is configured.",
        );
    };
    let d = match oidc.discovery(&inner.http).await {
        Ok(d) => d,
        Err(e) => return unavailable(&e),
    };
    let (Ok(state), Ok(nonce), Ok(verifier)) = (
        mcp_guard_core::random::base64url(24),
        mcp_guard_core::random::base64url(24),
        mcp_guard_core::random::base64url(48),
    ) else {
        return random_failed("the sign-in with the identity provider was not started");
    };
    let challenge = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let Ok(mut url) = url::Url::parse(&d.authorization_endpoint) else {
        return unavailable("the authorization endpoint is not a URL");
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.settings.client_id)
        .append_pair(
            "redirect_uri",
            &format!("{}/oauth/signin/callback", inner.settings.issuer),
        )
        .append_pair("scope", &oidc.settings.scopes)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    {
        let mut st = inner.lock();
        let now = Instant::now();
        st.oidc.retain(|_, p| p.expires > now);
        if let Err(full) = inner.room(source, st.oidc.values().map(|p| p.source)) {
            drop(st);
            tracing::warn!(%source, ?full, "OpenID Connect sign-in refused: too many in progress");
            return super::too_many_in_progress(full);
        }
        st.oidc.insert(
            state.clone(),
            OidcPending {
                nonce,
                verifier,
                next: local_path(&inner.settings.issuer, one(&params, "next").ok().flatten()),
                source,
                expires: now + PENDING_TTL,
            },
        );
    }
    let mut r = see_other(url.as_str());
    r.headers_mut().append(
        header::SET_COOKIE,
        inner.set_cookie(
            &inner.cookie_name(OIDC_COOKIE),
            &state,
            "/oauth/signin",
            Some(PENDING_TTL),
            "Lax",
        ),
    );
    r
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: String,
}

/// `GET /oauth/signin/callback?code=…&state=…`: back from the provider.
pub(super) async fn callback(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let Some(oidc) = &inner.oidc else {
        return pages::error_page(
            StatusCode::NOT_FOUND,
            "Not configured",
            "No identity provider is configured.",
        );
    };
    let refused = |detail: &str| {
        tracing::warn!(detail, "OpenID Connect sign-in refused");
        pages::error_page(StatusCode::BAD_REQUEST, "Sign-in refused", detail)
    };
    let (Ok(Some(state)), Ok(code)) = (one(&params, "state"), one(&params, "code")) else {
        return refused("The provider's answer has no state.");
    };
    // The state must be the one this browser was sent off with, and is used up now.
    if cookie(&headers, &inner.cookie_name(OIDC_COOKIE)) != Some(state) {
        return refused("The sign-in did not start in this browser.");
    }
    // Before the pending sign-in is used up, so that a failing random source costs nothing.
    let fresh = match NewBrowser::make() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(pending) = inner
        .lock()
        .oidc
        .remove(state)
        .filter(|p| p.expires > Instant::now())
    else {
        return refused("The sign-in expired or was already completed; start again.");
    };
    let Some(code) = code else {
        let error = one(&params, "error").ok().flatten().unwrap_or("no code");
        return refused(&format!("The provider answered: {error}."));
    };
    let d = match oidc.discovery(&inner.http).await {
        Ok(d) => d,
        Err(e) => return unavailable(&e),
    };
    let redirect_uri = format!("{}/oauth/signin/callback", inner.settings.issuer);
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("code_verifier", &pending.verifier)
        .append_pair("client_id", &oidc.settings.client_id)
        .finish();
    let mut req = inner
        .http
        .post(&d.token_endpoint)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form);
    if let Some(secret) = &oidc.settings.client_secret {
        #[expect(
            clippy::disallowed_methods,
            reason = "the client secret authenticates the gateway to its identity provider"
        )]
        let secret = secret.expose_secret();
        req = req.basic_auth(&oidc.settings.client_id, Some(secret));
    }
    let answer: TokenAnswer = match req.send().await.and_then(reqwest::Response::error_for_status) {
        Ok(r) => match r.json().await {
            Ok(a) => a,
            Err(_) => return unavailable("the token endpoint answered without an id_token"),
        },
        Err(e) => return unavailable(&format!("the token endpoint failed: {}", e.without_url())),
    };
    let claims = match verify_id_token(&inner.http, d, &oidc.settings, &answer.id_token, &pending.nonce).await
    {
        Ok(c) => c,
        Err(e) => return refused(&e),
    };
    let principal = match principal_of(&inner, &oidc.settings, &claims) {
        Ok(p) => p,
        Err(e) => return refused(&e),
    };
    tracing::info!(user = %principal.id(), provider = %oidc.settings.issuer, "signed in with OpenID Connect");
    let mut r = start_browser_session(&inner, fresh, principal, &pending.next);
    r.headers_mut().append(
        header::SET_COOKIE,
        inner.set_cookie(
            &inner.cookie_name(OIDC_COOKIE),
            "",
            "/oauth/signin",
            Some(Duration::ZERO),
            "Lax",
        ),
    );
    r
}

async fn verify_id_token(
    http: &reqwest::Client,
    d: &Discovery,
    s: &OidcSettings,
    token: &str,
    nonce: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| "The ID token is malformed.".to_owned())?;
    let asymmetric = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    if !asymmetric.contains(&header.alg) {
        return Err("The ID token is not signed with an asymmetric algorithm.".into());
    }
    let jwks: JwkSet = http
        .get(&d.jwks_uri)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|_| "The provider's keys could not be fetched.".to_owned())?
        .json()
        .await
        .map_err(|_| "The provider's keys are not a JWKS.".to_owned())?;
    let jwk = jwks
        .keys
        .iter()
        .find(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .ok_or("The ID token's key is not among the provider's keys.")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "The provider's key cannot be used.".to_owned())?;
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[d.issuer.as_str()]);
    v.set_audience(&[s.client_id.as_str()]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &v)
        .map_err(|e| format!("The ID token is not valid ({e})."))?;
    if data.claims.get("nonce").and_then(|n| n.as_str()) != Some(nonce) {
        return Err("The ID token's nonce does not match this sign-in.".into());
    }
    Ok(data.claims)
}

fn principal_of(
    inner: &Inner,
    s: &OidcSettings,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<Principal, String> {
    let id = claims
        .get(&s.principal_claim)
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("The ID token has no {} claim.", s.principal_claim))?;
    // A user configured locally keeps the roles the configuration gives.
    if let Some(p) = inner.users.get(id) {
        return Ok(p.clone());
    }
    let roles: Vec<String> = match s.roles_claim.as_ref().and_then(|c| claims.get(c)) {
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect(),
        Some(serde_json::Value::String(r)) => vec![r.clone()],
        _ => Vec::new(),
    };
    Ok(Principal::user(id).with_roles(roles))
}
