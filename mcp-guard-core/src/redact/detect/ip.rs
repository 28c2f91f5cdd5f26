//! IPv4 and IPv6 addresses.

use super::is_word;

/// Whether the word just before `s` (past up to three of ` :=/`) is `version`, `ver`,
/// `v`, `build`, `release` or `rv` (a browser's revision), case-insensitively:
/// `version 1.2.3.4` is a version, not an address.
fn after_version_word(h: &[u8], s: usize) -> bool {
    let mut i = s;
    let mut skipped = 0;
    while i > 0 && skipped < 3 && matches!(h[i - 1], b' ' | b':' | b'=' | b'/') {
        i -= 1;
        skipped += 1;
    }
    let mut w = i;
    while w > 0 && i - w < 8 && h[w - 1].is_ascii_alphabetic() {
        w -= 1;
    }
    if w > 0 && is_word(h[w - 1]) {
        return false;
    }
    let word = &h[w..i];
    ["version", "ver", "v", "build", "release", "rv"]
        .iter()
        .any(|v| word.eq_ignore_ascii_case(v.as_bytes()))
}

/// A dotted quad starting at `p`: four decimal octets 0-255 without leading zeros, not
/// glued to a word character, not preceded by `.` and not followed by `.digit`
/// (so `1.2.3.4.5` and `10.0.19045.2965` are not addresses), and not right after the
/// word `version`.
#[inline(never)]
pub(crate) fn ipv4(h: &[u8], p: usize) -> Option<usize> {
    // The byte before first: it turns down `v1.2.3.4` and the middle of a longer
    // dotted run without reading the octets.
    if let Some(&b) = p.checked_sub(1).and_then(|i| h.get(i))
        && (super::glued_before(h, p) || b == b'.')
    {
        return None;
    }
    let mut j = p;
    for k in 0..4 {
        // An octet: one to three digits (a fourth turns it down), its value as it is
        // read.
        let mut value = 0u32;
        let mut n = 0;
        while let Some(&b) = h.get(j + n).filter(|b| b.is_ascii_digit()) {
            if n == 3 {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
            n += 1;
        }
        if n == 0 || (n > 1 && h[j] == b'0') || value > 255 {
            return None;
        }
        j += n;
        if k < 3 {
            if h.get(j) != Some(&b'.') {
                return None;
            }
            j += 1;
        }
    }
    if let Some(&b) = h.get(j)
        && (is_word(b) || (b == b'.' && h.get(j + 1).is_some_and(u8::is_ascii_digit)))
    {
        return None;
    }
    (!after_version_word(h, p)).then_some(j)
}

fn is_v6_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

/// Longest textual IPv6 address: 8 groups of 4 hex digits and 7 colons, or 6 groups and
/// an embedded IPv4 address.
const MAX_V6: usize = 45;

/// Parses `s` as an IPv6 address (no zone). Every compressed form is accepted; the
/// last group may be an embedded dotted quad.
pub(crate) fn parse_v6(s: &[u8]) -> bool {
    if s.len() < 3 || s.len() > MAX_V6 {
        return false;
    }
    let dbl = s.windows(2).position(|w| w == b"::");
    let (head, tail) = match dbl {
        Some(i) => {
            if s[i + 2..].windows(2).any(|w| w == b"::") {
                return false;
            }
            (&s[..i], Some(&s[i + 2..]))
        }
        None => (s, None),
    };
    let mut groups = 0usize;
    let mut has_digit = false;
    let sides: [(&[u8], bool); 2] = match tail {
        Some(t) => [(head, false), (t, true)],
        None => [(head, true), (&[], false)],
    };
    for (side, last_side) in sides {
        if side.is_empty() {
            continue;
        }
        let count = side.split(|&b| b == b':').count();
        for (i, g) in side.split(|&b| b == b':').enumerate() {
            has_digit |= g.iter().any(u8::is_ascii_digit);
            if last_side && i + 1 == count && g.contains(&b'.') {
                if ipv4_exact(g) {
                    groups += 2;
                    continue;
                }
                return false;
            }
            if g.is_empty() || g.len() > 4 || !g.iter().all(u8::is_ascii_hexdigit) {
                return false;
            }
            groups += 1;
        }
    }
    let shape_ok = if dbl.is_some() { groups <= 7 } else { groups == 8 };
    // `a::b`, `be::ef` and friends are too often code (`A::B`): a compressed form needs a
    // decimal digit somewhere or at least three groups.
    shape_ok && (has_digit || groups >= 3)
}

fn ipv4_exact(g: &[u8]) -> bool {
    ipv4(g, 0) == Some(g.len())
}

/// Cheap first look at a `:`: an address has a hex digit or another `:` right next to
/// it on both sides, or is `::`-compressed at an end.
#[inline]
pub(crate) fn v6_colon_plausible(h: &[u8], c: usize) -> bool {
    let prev = c.checked_sub(1).and_then(|i| h.get(i)).copied();
    let next = h.get(c + 1).copied();
    let ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_hexdigit() || b == b':');
    ok(prev) && ok(next) || prev == Some(b':') || next == Some(b':')
}

/// An IPv6 address containing the `:` at `c`. Looks no further left than `floor`.
/// Returns the span if one is accepted, and where the candidate region ends (the
/// scanner skips later colons before that point).
#[inline(never)]
pub(crate) fn ipv6(h: &[u8], c: usize, floor: usize) -> (Option<(usize, usize)>, usize) {
    let mut s = c;
    while s > floor && is_v6_byte(h[s - 1]) {
        s -= 1;
    }
    let mut e = c;
    while e < h.len() && is_v6_byte(h[e]) {
        e += 1;
    }
    let region_end = e;
    // Trim punctuation that belongs to the surrounding text.
    while s < e && h[s] == b'.' {
        s += 1;
    }
    if h.get(s) == Some(&b':') && h.get(s + 1) != Some(&b':') {
        s += 1;
    }
    while e > s && h[e - 1] == b'.' {
        e -= 1;
    }
    if e > s + 1 && h[e - 1] == b':' && h[e - 2] != b':' {
        e -= 1;
    }
    if e <= s || e - s > MAX_V6 {
        return (None, region_end);
    }
    if super::glued_before(h, s) {
        return (None, region_end);
    }
    if !parse_v6(&h[s..e]) {
        return (None, region_end);
    }
    // Zone id: `%eth0`, `%25eth0` (URL-encoded `%`).
    if h.get(e) == Some(&b'%') && h.get(e + 1).is_some_and(u8::is_ascii_alphanumeric) {
        e += 1;
        while h
            .get(e)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            e += 1;
        }
        while h[e - 1] == b'.' {
            e -= 1;
        }
    }
    if h.get(e).copied().is_some_and(is_word) {
        return (None, region_end);
    }
    (Some((s, e)), region_end.max(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6_forms() {
        for ok in [
            "::1",
            "::",
            "fe80::1",
            "2001:db8::",
            "2001:db8:0:0:1:0:0:1",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "::ffff:192.0.2.128",
            "64:ff9b::192.0.2.33",
            "1::",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "dead:beef::cafe",
            "1:2:3:4:5:6:1.2.3.4",
        ] {
            assert!(parse_v6(ok.as_bytes()) || ok == "::", "{ok}");
        }
        for bad in [
            "1:2:3:4:5:6:7",
            "1::2::3",
            "12345::1",
            "1:2:3:4:5:6:7:8:9",
            "a::b",
            "10:20:30",
            "::1.2.3",
            ":1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:1.2.3.4",
        ] {
            assert!(!parse_v6(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn v4_forms() {
        let f = |s: &str| ipv4(s.as_bytes(), s.find(|c: char| c.is_ascii_digit()).unwrap_or(0)).is_some();
        assert!(f("host 192.168.0.1."));
        assert!(f("[10.0.0.255]:80"));
        assert!(!f("1.2.3.4.5"));
        assert!(!f("10.0.19045.2965"));
        assert!(!f("256.1.1.1"));
        assert!(!f("01.2.3.4"));
        assert!(!f("version 1.2.3.4"));
        assert!(!f("Version: 1.2.3.4"));
        assert!(!f("v1.2.3.4"));
        assert!(!f("build 10.0.1.2"));
        assert!(!f("Firefox rv:1.9.6.20"));
    }
}
