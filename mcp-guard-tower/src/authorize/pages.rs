//! Server-rendered pages: plain HTML, no script, one stylesheet served from the same
//! origin, every value escaped. Each response forbids framing and caching.

use axum::response::Response;
use http::StatusCode;

/// The stylesheet, served at `/oauth/style.css` (so the pages need no inline style).
pub(super) const STYLE: &str = crate::web::STYLE;

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
pub(super) use crate::web::escape as esc;

/// A whole page: `title` escaped, `body` already HTML. `form_targets` are extra
/// origins a form on this page may end up at (a client's redirect URI after consent).
pub(super) fn page(status: StatusCode, title: &str, body: &str, form_targets: &[String]) -> Response {
    let mut form_action = String::from("'self'");
    for t in form_targets {
        form_action.push(' ');
        form_action.push_str(t);
    }
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    crate::web::page(status, title, body, "/oauth/style.css", &csp)
}

/// Headers every answer of the authorization server carries.
pub(super) use crate::web::secure_headers;

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
    use http::header;

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
