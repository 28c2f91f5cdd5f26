//! Email addresses: `local@domain.tld`.

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_label(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// An address around the `@` at `at`. The local part is searched no further left than
/// `floor` (the previous `@` or the end of the previous address), which keeps the scan
/// linear. Returns (start, end).
///
/// Accepts a non-empty local part of letters, digits and `._%+-` (leading dots dropped)
/// and a domain of at least two labels whose last label is 2+ letters. The domain ends at
/// the last label that makes it valid, so `a@b.com.` or `a@b.com.x1` yield `a@b.com`.
#[inline(never)]
pub(crate) fn email(h: &[u8], at: usize, floor: usize) -> Option<(usize, usize)> {
    let mut s = at;
    while s > floor && is_local(h[s - 1]) {
        s -= 1;
    }
    while s < at && h[s] == b'.' {
        s += 1;
    }
    if s == at {
        return None;
    }
    let mut j = at + 1;
    let mut labels = 0usize;
    let mut end = None;
    loop {
        let ls = j;
        while h.get(j).copied().is_some_and(is_label) {
            j += 1;
        }
        if j == ls || h[ls] == b'-' || h[j - 1] == b'-' {
            break;
        }
        labels += 1;
        if labels >= 2 && j - ls >= 2 && h[ls..j].iter().all(u8::is_ascii_alphabetic) {
            end = Some(j);
        }
        if h.get(j) == Some(&b'.') && h.get(j + 1).copied().is_some_and(is_label) {
            j += 1;
        } else {
            break;
        }
    }
    end.map(|e| (s, e))
}

/// Whether `domain` (what follows the `@` of an address the detector accepted) is
/// reserved for documentation and testing (RFC 2606, RFC 6761): `example.com`,
/// `example.net`, `example.org` and names under them, and every name under the
/// top-level `test`, `example`, `invalid` and `localhost`. Such addresses are
/// placeholders in examples rather than anyone's address.
pub(crate) fn documentation_domain(domain: &[u8]) -> bool {
    let labels = |d: &[u8]| {
        let mut it = d.rsplit(|&b| b == b'.');
        (
            it.next().unwrap_or_default().to_ascii_lowercase(),
            it.next().unwrap_or_default().to_ascii_lowercase(),
        )
    };
    let (tld, second) = labels(domain);
    matches!(tld.as_slice(), b"test" | b"example" | b"invalid" | b"localhost")
        || (second.as_slice() == b"example" && matches!(tld.as_slice(), b"com" | b"net" | b"org"))
}

#[cfg(test)]
mod tests {
    fn f(s: &str) -> Option<&str> {
        let at = s.find('@')?;
        super::email(s.as_bytes(), at, 0).map(|(a, b)| &s[a..b])
    }

    #[test]
    fn accepts_and_rejects() {
        assert_eq!(
            f("mail jane.doe+tag@mail.example.co.uk now"),
            Some("jane.doe+tag@mail.example.co.uk")
        );
        assert_eq!(f("<a@b.io>."), Some("a@b.io"));
        assert_eq!(f("x a@b.com.x1"), Some("a@b.com"));
        assert_eq!(f("..a@b.com"), Some("a@b.com"));
        assert_eq!(f("@handle"), None);
        assert_eq!(f("root@localhost"), None);
        assert_eq!(f("a@b.c"), None);
        assert_eq!(f("a@-b.com"), None);
        assert_eq!(f("a@b.c0m"), None);
    }

    #[test]
    fn documentation_domains() {
        for d in [
            "example.com",
            "EXAMPLE.org",
            "mail.example.net",
            "host.test",
            "a.b.example",
            "x.invalid",
            "h.localhost",
        ] {
            assert!(super::documentation_domain(d.as_bytes()), "{d}");
        }
        for d in [
            "example.co",
            "examples.com",
            "gmail.com",
            "example.com.au",
            "testing.io",
            "notexample.com",
        ] {
            assert!(!super::documentation_domain(d.as_bytes()), "{d}");
        }
    }
}
