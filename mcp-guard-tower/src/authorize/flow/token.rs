//! The authorization server: the token endpoint (code exchange, refresh) and revocation (RFC 7009).

use super::*;

/// The client id of a token or revocation request: `client_id` in the form, or the
/// user part of HTTP Basic (a secret, if any, is ignored: clients are public).
#[allow(clippy::result_large_err, reason = "the refusal is the page to answer with")]
pub(super) fn presented_client(headers: &HeaderMap, form: &Params) -> Result<String, Response> {
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
pub(super) fn token_response(t: &IssuedTokens) -> Response {
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

pub(super) async fn token(
    State(inner): Shared,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Params>,
) -> Response {
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

pub(super) fn exchange_code(inner: &Inner, client_id: &str, form: &Params) -> Response {
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
pub(super) fn refresh(inner: &Inner, client_id: &str, form: &Params) -> Response {
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

pub(super) async fn revoke(
    State(inner): Shared,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Params>,
) -> Response {
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
