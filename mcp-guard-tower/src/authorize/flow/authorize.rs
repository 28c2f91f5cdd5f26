//! The authorization server: the authorization endpoint: the request checked, held until the user decides.

use super::*;
use crate::authorize::redirect;

/// A client by id: registered, or a Client ID Metadata Document fetched now.
pub(super) async fn find_client(inner: &Inner, client_id: &str) -> Result<OAuthClient, String> {
    if !client_id.contains("://") {
        return match inner.store.client(client_id) {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err("unknown client_id".into()),
            Err(_) => Err("the client registry is unavailable".into()),
        };
    }
    let doc = crate::authorize::client_metadata::fetch(inner.client_metadata.as_ref(), client_id).await?;
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
pub(super) fn error_redirect(
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

pub(super) async fn authorize(
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
    let trusted = redirect::trusted_for_errors(&inner.settings.trusted_clients, &client.id, redirect_uri);
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
pub(super) fn pkce_challenge<'a>(
    challenge: Option<&'a str>,
    method: Option<&str>,
) -> Result<&'a str, &'static str> {
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
pub(super) fn hold(inner: &Inner, pending: Pending) -> Response {
    let Ok(id) = mcp_guard_core::random::base64url(18) else {
        return random_failed("the authorization request was not kept");
    };
    let source = pending.source;
    {
        let mut st = inner.lock();
        sweep(&mut st);
        if let Err(full) = inner.room(source, st.pending.values().map(|p| p.source)) {
            drop(st);
            tracing::warn!(%source, ?full, "authorization request refused: too many in progress");
            return crate::authorize::too_many_in_progress(full);
        }
        st.pending.insert(id.clone(), pending);
    }
    see_other(&format!("/oauth/consent?request={id}"))
}

/// The pending request `id`, bound to `user` (taken up by them now if nobody has).
#[allow(clippy::result_large_err, reason = "the refusal is the page to answer with")]
pub(super) fn take_up(inner: &Inner, id: &str, user: &Principal) -> Result<Pending, Response> {
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
pub(super) fn request_id(params: &Params) -> Option<String> {
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
