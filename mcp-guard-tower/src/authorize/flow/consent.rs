//! The authorization server: the consent page and its answer; the authorization code.

use super::*;

pub(super) async fn consent_page(
    State(inner): Shared,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
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

pub(super) async fn render_consent(
    inner: &Inner,
    id: &str,
    p: &Pending,
    browser: &BrowserSession,
) -> Response {
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
pub(super) fn checked_browser(
    inner: &Inner,
    headers: &HeaderMap,
    form: &Params,
) -> Result<BrowserSession, Response> {
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

pub(super) async fn consent_submit(
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
pub(super) fn issue_code(inner: &Inner, id: &str, user: &Principal) -> Response {
    // Made first: without it the request stays pending and no grant is made.
    let Ok(code) = mcp_guard_core::random::base64url(32) else {
        return random_failed("no authorization code was issued (the request still waits for your answer)");
    };
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
