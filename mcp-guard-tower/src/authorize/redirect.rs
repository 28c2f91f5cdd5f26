//! Where the authorization server may send a browser: back to one of its own pages
//! after sign-in (`next`), and to a client's redirect URI with an error before the
//! user has done anything (only a trusted one, RFC 9700 §4.11.2).

/// Where a browser goes after signing in when `next` is missing or refused: the page
/// that says it is signed in.
pub(super) const SIGNED_IN: &str = "/oauth/signin";

/// The longest `next` followed (a consent or upstream sign-in link is far shorter).
const MAX_NEXT_BYTES: usize = 4096;

/// A path on this gateway to return to after signing in: `next` when it stays on the
/// issuer's origin, else [`SIGNED_IN`].
///
/// `next` is refused, not repaired, when it holds anything a browser or a proxy could
/// read differently from this check: a control or whitespace character (browsers strip
/// tabs and newlines, so `/\t/evil.example` becomes `//evil.example`), a backslash
/// (read as a slash), a leading `//` (scheme-relative), or a percent-encoded control,
/// space, slash, backslash, dot, percent sign or non-ASCII byte (what a second decoding
/// would turn into one of those). What remains is resolved against the issuer with the
/// WHATWG URL parser (the `url` crate, as browsers do) and must keep the issuer's origin
/// and not resolve to a path starting with `//` (`/.//evil.example` does); the
/// resolved path and query are what is returned.
pub(super) fn local_path(issuer: &str, next: Option<&str>) -> String {
    next.and_then(|n| same_origin_path(issuer, n))
        .unwrap_or_else(|| SIGNED_IN.to_owned())
}

fn same_origin_path(issuer: &str, next: &str) -> Option<String> {
    if next.len() > MAX_NEXT_BYTES || !next.starts_with('/') || next.starts_with("//") {
        return None;
    }
    if next
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return None;
    }
    if !percent_encodings_are_plain(next) {
        return None;
    }
    let base = url::Url::parse(issuer).ok()?;
    let resolved = base.join(next).ok()?;
    if resolved.origin() != base.origin() || resolved.path().starts_with("//") {
        return None;
    }
    let mut out = resolved.path().to_owned();
    if let Some(q) = resolved.query() {
        out.push('?');
        out.push_str(q);
    }
    (out.starts_with('/') && !out.starts_with("//")).then_some(out)
}

/// Whether every `%XX` in `s` is well formed and encodes a visible ASCII character other
/// than `/`, `\`, `.` and `%`.
fn percent_encodings_are_plain(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            else {
                return false;
            };
            if !v.is_ascii_graphic() || matches!(v, b'/' | b'\\' | b'.' | b'%') {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// Whether the authorization server may send a browser to `redirect_uri` of `client`
/// with an error before the user has signed in or consented (RFC 9700 §4.11.2: an
/// attacker can register any https redirect URI and make the server an open
/// redirector by sending a faulty request). Trusted: a client the operator lists in
/// `trusted_clients`, and a loopback redirect URI (a native app on the user's own
/// machine: an error sent there cannot land on a page on the web). Anything else gets
/// the error on the gateway's own page.
pub(super) fn trusted_for_errors(trusted_clients: &[String], client_id: &str, redirect_uri: &str) -> bool {
    if trusted_clients.iter().any(|c| c == client_id) {
        return true;
    }
    let Ok(u) = url::Url::parse(redirect_uri) else {
        return false;
    };
    matches!(u.scheme(), "http" | "https")
        && match u.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            None => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://gw.example";

    #[test]
    fn local_paths_are_followed_and_normalised() {
        for (next, to) in [
            ("/oauth/consent?request=x", "/oauth/consent?request=x"),
            ("/oauth/account", "/oauth/account"),
            (
                "/auth/files/start?ticket=eyJw.c2ln",
                "/auth/files/start?ticket=eyJw.c2ln",
            ),
            ("/a/../oauth/account", "/oauth/account"),
            ("/oauth/consent?request=a%3Db", "/oauth/consent?request=a%3Db"),
        ] {
            assert_eq!(local_path(ISSUER, Some(next)), to, "{next}");
        }
        assert_eq!(local_path(ISSUER, None), SIGNED_IN);
    }

    #[test]
    fn every_known_bypass_is_refused() {
        for bad in [
            "//evil.example/x",
            "///evil.example/x",
            "/\\evil.example",
            "/\\/evil.example",
            "\\\\evil.example",
            "/\t/evil.example/x",
            "/\n/evil.example",
            "/a\r\nSet-Cookie: x",
            "/\u{a0}/evil",
            "/\u{3000}/evil",
            "/\u{2028}/evil",
            "/ /evil",
            "/%09/evil.example",
            "/%2f/evil.example",
            "/%2F%2Fevil.example",
            "/%5c/evil.example",
            "/%2e//evil.example",
            "/%252f%252fevil.example",
            "/%c2%a0/evil",
            "/%zz",
            "/%2",
            "/.//evil.example/x",
            "/..//evil.example/x",
            "/x/..//evil.example/x",
            "https://evil.example",
            "http:evil.example",
            "javascript:alert(1)",
            "x",
            "",
            &format!("/{}", "a".repeat(MAX_NEXT_BYTES)),
        ] {
            assert_eq!(local_path(ISSUER, Some(bad)), SIGNED_IN, "{bad:?}");
        }
    }

    #[test]
    fn only_loopback_and_listed_clients_get_errors_redirected() {
        for ok in [
            "http://127.0.0.1:33418/callback",
            "http://localhost:8080/cb",
            "http://[::1]:9/cb",
            "https://127.0.0.2/cb",
        ] {
            assert!(trusted_for_errors(&[], "c", ok), "{ok}");
        }
        for bad in [
            "https://evil.example/phish",
            "http://localhost.evil.example/cb",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            "microsoft-edge:https://evil.example",
            "not a url",
        ] {
            assert!(!trusted_for_errors(&[], "c", bad), "{bad}");
        }
        assert!(trusted_for_errors(
            &["https://app.example/client.json".into()],
            "https://app.example/client.json",
            "https://app.example/cb"
        ));
    }
}
