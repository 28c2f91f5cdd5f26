//! Server-rendered pages: plain HTML, no script, one stylesheet served from the same
//! origin, every value escaped. Each response forbids framing and caching.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// The stylesheet, served at `/oauth/style.css` (so the pages need no inline style).
pub(super) const STYLE: &str = crate::style::STYLE;

/// A duration label as a person reads it: `1d` → "1 day", `30d` → "30 days".
pub(super) fn humanize(label: &str) -> String {
    let split = label.find(|c: char| !c.is_ascii_digit()).unwrap_or(label.len());
    let (n, unit) = label.split_at(split);
    let word = match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        _ => return label.to_owned(),
    };
    if n == "1" {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Escapes text for HTML element content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title` escaped, `body` already HTML. `form_targets` are extra
/// origins a form on this page may end up at (a client's redirect URI after consent).
pub(super) fn page(status: StatusCode, title: &str, body: &str, form_targets: &[String]) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} · mcp-guard</title><link rel=\"stylesheet\" href=\"/oauth/style.css\"></head>\
<body><main>{body}</main></body></html>\n",
        esc(title)
    );
    let mut r = (status, html).into_response();
    let mut form_action = String::from("'self'");
    for t in form_targets {
        form_action.push(' ');
        form_action.push_str(t);
    }
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    secure_headers(h);
    r
}

/// Headers every answer of the authorization server carries.
pub(super) fn secure_headers(h: &mut http::HeaderMap) {
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// An error page (never a redirect: used when the client or its redirect URI cannot
/// be trusted).
pub(super) fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    page(
        status,
        title,
        &format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p>",
            esc(title),
            esc(detail)
        ),
        &[],
    )
}

/// A hidden form field.
pub(super) fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        esc(name),
        esc(value)
    )
}

/// The origin (`scheme://host[:port]`) of a URL, for `form-action`.
pub(super) fn origin(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    match u.origin() {
        url::Origin::Tuple(..) => Some(u.origin().ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_words() {
        assert_eq!(humanize("1d"), "1 day");
        assert_eq!(humanize("30d"), "30 days");
        assert_eq!(humanize("12h"), "12 hours");
        assert_eq!(humanize("odd"), "odd");
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn pages_forbid_framing_and_caching() {
        let r = error_page(StatusCode::BAD_REQUEST, "t", "d");
        let h = r.headers();
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
    }
}
