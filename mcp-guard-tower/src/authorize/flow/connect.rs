//! The authorization server: the page where a user connects their upstream accounts (personal credentials).

use super::*;

pub(super) async fn connect_page(
    State(inner): Shared,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
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

pub(super) async fn render_connect(
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
pub(super) fn credentials_table(
    inner: &Inner,
    browser: &BrowserSession,
    servers: &[crate::authorize::PersonalServer],
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
pub(super) async fn store_pasted_tokens(
    inner: &Inner,
    principal: &Principal,
    server: &crate::authorize::PersonalServer,
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

pub(super) async fn connect_token(
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

pub(super) async fn connect_finish(
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
