//! The authorization server: sign-in: the form, one-time links, the browser session, sign-out.

use super::*;

pub(super) fn signin_form(inner: &Inner, next: &str, error: Option<&str>) -> Response {
    let Ok(pre) = mcp_guard_core::random::base64url(24) else {
        return random_failed("the sign-in form could not be shown");
    };
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

pub(super) async fn signin_page(State(inner): Shared, Query(params): Query<Params>) -> Response {
    let next = local_path(&inner.settings.issuer, one(&params, "next").ok().flatten());
    signin_form(&inner, &next, None)
}

/// A sign-in link opened in the browser: a confirmation form (so that a link
/// previewer fetching the URL does not use it up).
pub(super) async fn login_link(State(inner): Shared, Query(params): Query<Params>) -> Response {
    let Ok(Some(code)) = one(&params, "code") else {
        return signin_form(&inner, SIGNED_IN, Some("The link has no code."));
    };
    let Ok(pre) = mcp_guard_core::random::base64url(24) else {
        return random_failed("the sign-in form could not be shown (the link is not used up)");
    };
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

pub(super) async fn signin_submit(
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
    // Before the link is redeemed, so that a failing random source does not use it up.
    let fresh = match NewBrowser::make() {
        Ok(f) => f,
        Err(r) => return r,
    };
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
    start_browser_session(&inner, fresh, principal, &next)
}

/// The one-time values of a browser session about to start: its cookie and its CSRF
/// token. Made before anything one-time (a sign-in link, a provider's answer) is used
/// up, so that a failing random source costs the user nothing.
pub(in crate::authorize) struct NewBrowser {
    value: String,
    csrf: String,
}

impl NewBrowser {
    /// Both values, or the page to answer with when the random source fails.
    #[allow(clippy::result_large_err, reason = "the refusal is the page to answer with")]
    pub(in crate::authorize) fn make() -> Result<Self, Response> {
        match (
            mcp_guard_core::random::base64url(32),
            mcp_guard_core::random::base64url(24),
        ) {
            (Ok(value), Ok(csrf)) => Ok(Self { value, csrf }),
            _ => Err(random_failed("you were not signed in")),
        }
    }
}

/// Signs `principal` in on this browser (a new session cookie, from `fresh`) and sends
/// it to `next`.
pub(in crate::authorize) fn start_browser_session(
    inner: &Inner,
    fresh: NewBrowser,
    principal: Principal,
    next: &str,
) -> Response {
    let NewBrowser { value, csrf } = fresh;
    let user = principal.id().to_owned();
    {
        let mut st = inner.lock();
        sweep(&mut st);
        st.browsers.insert(
            sha(&value),
            BrowserSession {
                principal,
                csrf,
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

pub(super) async fn signout(
    State(inner): Shared,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Params>,
) -> Response {
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
