//! The authorization server: the account page: the user's grants and tokens.

use super::*;

pub(super) async fn account_page(State(inner): Shared, headers: HeaderMap) -> Response {
    let Some(browser) = inner.browser(&headers) else {
        return signin_form(&inner, "/oauth/account", None);
    };
    render_account(&inner, &browser, None).await
}

pub(super) async fn render_account(inner: &Inner, browser: &BrowserSession, note: Option<&str>) -> Response {
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

pub(super) async fn account_token(
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

pub(super) async fn account_revoke(
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
