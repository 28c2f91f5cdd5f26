//! What the gateway's own web pages share (the authorization server's sign-in,
//! consent and account pages, the upstream sign-in pages): the stylesheet, HTML
//! escaping, the security headers every page carries, and reading a cookie.

use axum::response::{IntoResponse as _, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// The stylesheet.
pub(crate) const STYLE: &str = "\
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}\
main{max-width:40rem;margin:3rem auto;background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 3px #0002}\
h1{font-size:1.5rem;margin-top:0}dt{font-weight:600}dd{margin:0 0 .75rem 0;word-break:break-all}\
fieldset{border:1px solid #ccd;border-radius:6px;margin:1rem 0}legend{font-weight:600}\
button{font:inherit;padding:.5rem 1.25rem;border-radius:6px;border:1px solid #245;background:#245;color:#fff;cursor:pointer}\
button.secondary{background:#fff;color:#245}button:disabled{opacity:.45;cursor:not-allowed}\
td form{display:grid;gap:.4rem}input[type=text],input[type=password]{font:inherit;padding:.4rem;width:100%;box-sizing:border-box}\
.state{font-weight:600}.state-done{color:#176b2c}.state-needed{color:#8a4b00}.error{color:#a1151b}\
ul.tools{columns:2}li{margin:.15rem 0}.actions{display:flex;gap:1rem;margin-top:1.5rem}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.4rem;border-bottom:1px solid #e3e5e8}";

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
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

/// Headers every page and answer of the gateway's web flows carries: never framed,
/// cached, or sniffed, and no referrer.
pub(crate) fn secure_headers(h: &mut HeaderMap) {
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// An HTML page: `title` escaped, `main` already HTML, the stylesheet at
/// `stylesheet`, and `csp` as its content security policy (the pages run no scripts
/// and load nothing from elsewhere).
pub(crate) fn page(status: StatusCode, title: &str, main: &str, stylesheet: &str, csp: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} · mcp-guard</title><link rel=\"stylesheet\" href=\"{stylesheet}\"></head>\
<body><main>{main}</main></body></html>\n",
        escape(title)
    );
    html_response(status, html, csp)
}

/// A whole HTML document as a response, with `csp` and the headers every page carries.
pub(crate) fn html_response(status: StatusCode, html: String, csp: &str) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    secure_headers(h);
    r
}

/// The value of the cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
