//! The authorization server: the client registration endpoint (RFC 7591) and the checks on what a client declares.

use super::*;

/// Whether `uri` may receive authorization codes: https anywhere, http only on
/// loopback, or a private-use scheme of a native app; never a fragment.
pub(in crate::authorize) fn acceptable_redirect(uri: &str) -> Result<(), String> {
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

pub(super) fn check_client_metadata(body: &serde_json::Value) -> Result<(String, Vec<String>), String> {
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
pub(super) fn room_for_a_client(inner: &Inner) -> Result<(), Response> {
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

pub(super) async fn register(State(inner): Shared, body: axum::body::Bytes) -> Response {
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
    let Ok(suffix) = mcp_guard_core::random::base64url(12) else {
        tracing::error!("the operating system's random source failed: no client id for a registration");
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the gateway's random source failed, so no client was registered; try again",
        );
    };
    let id = format!("mcpg-client-{suffix}");
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
