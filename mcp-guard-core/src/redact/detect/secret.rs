//! Credentials with a recognisable shape. Each rule starts at a literal prefix, found from
//! a trigger byte of the scanner (`_`, `-`, `A`, `J`) or a substring search for `Bearer`,
//! and then checks the body.

/// What follows a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// `AKIA`/`ASIA`/`ABIA`/`ACCA` + 16 upper-case letters or digits.
    Aws,
    /// `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` + 36 or more letters and digits.
    GithubToken,
    /// `github_pat_` + 22 or more letters, digits and `_`.
    GithubPat,
    /// `xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`, `xoxe-` + 10 or more of `[A-Za-z0-9-]`.
    Slack,
    /// `sk_live_`, `rk_live_`, `sk_test_`, `rk_test_` + 16 or more letters and digits.
    Stripe,
    /// `sk-` + 20 or more of `[A-Za-z0-9_-]` with both letters and digits (`OpenAI`,
    /// Anthropic and similar).
    SkDash,
    /// `AIza` + 30 or more of `[A-Za-z0-9_-]` (Google API keys).
    Google,
    /// `eyJ…` `.` `…` [`.` `…`]: a JSON Web Token (header, payload, optional signature).
    Jwt,
    /// `-----BEGIN … PRIVATE KEY-----` through the matching `-----END … -----` line.
    Pem,
    /// `Bearer ` + a token of 16+ characters of `[A-Za-z0-9._~+/-]` and `=` padding.
    Bearer,
}

/// Looks for a credential prefix around the trigger byte at `i` (one of `_ - A J`).
/// Returns the prefix's span and rule.
#[inline]
pub(crate) fn prefix_at(h: &[u8], i: usize) -> Option<(usize, usize, Rule)> {
    let behind = |n: usize| i.checked_sub(n).and_then(|s| h.get(s..i));
    let ahead = |n: usize| h.get(i..i + n);
    match h[i] {
        b'_' => {
            if matches!(behind(3), Some(b"ghp" | b"gho" | b"ghu" | b"ghs" | b"ghr")) {
                return Some((i - 3, i + 1, Rule::GithubToken));
            }
            if behind(6) == Some(b"github") && h.get(i + 1..i + 5) == Some(b"pat_") {
                return Some((i - 6, i + 5, Rule::GithubPat));
            }
            if matches!(behind(2), Some(b"sk" | b"rk"))
                && matches!(h.get(i + 1..i + 6), Some(b"live_" | b"test_"))
            {
                return Some((i - 2, i + 6, Rule::Stripe));
            }
            None
        }
        // Most dashes sit in dates, ranges and words: one look at the byte before
        // (`k` of `sk-`, the last letter of `xoxb-`) or after (`-----BEGIN`).
        b'-' if !matches!(behind(1), Some(b"k" | b"b" | b"p" | b"a" | b"r" | b"s" | b"e"))
            && h.get(i + 1) != Some(&b'-') =>
        {
            None
        }
        b'-' => {
            if behind(2) == Some(b"sk") {
                return Some((i - 2, i + 1, Rule::SkDash));
            }
            if let Some(&[b'x', b'o', b'x', c]) = behind(4)
                && b"bparse".contains(&c)
            {
                return Some((i - 4, i + 1, Rule::Slack));
            }
            if ahead(11) == Some(b"-----BEGIN ") {
                return Some((i, i + 11, Rule::Pem));
            }
            None
        }
        b'A' if behind(2) == Some(b"BE") && h.get(i..i + 5) == Some(b"ARER ") => {
            Some((i - 2, i + 5, Rule::Bearer))
        }
        b'A' => match ahead(4) {
            Some(b"AKIA" | b"ASIA" | b"ABIA" | b"ACCA") => Some((i, i + 4, Rule::Aws)),
            Some(b"AIza") => Some((i, i + 4, Rule::Google)),
            _ => None,
        },
        b'J' => (behind(2) == Some(b"ey")).then(|| (i - 2, i + 1, Rule::Jwt)),
        _ => None,
    }
}

/// `Bearer ` or `bearer `: the searcher looks for `earer `; this checks the byte before.
/// Returns the prefix span. (`BEARER ` comes through [`prefix_at`].)
pub(crate) fn bearer_at(h: &[u8], earer: usize) -> Option<(usize, usize)> {
    let b = *h.get(earer.checked_sub(1)?)?;
    (b == b'b' || b == b'B').then_some((earer - 1, earer + 6))
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn run(h: &[u8], i: usize, f: impl Fn(u8) -> bool) -> usize {
    h.get(i..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&b| f(b))
        .count()
}

/// State kept across matches in one string: where the next `-----END ` is, so that many
/// unterminated `BEGIN` lines cost one search, not one each.
#[derive(Debug, Default)]
pub(crate) struct PemState {
    searched: bool,
    next_end: Option<usize>,
    searched_from: usize,
}

/// Checks the body after a prefix that spans `start..pend`. Returns the span to redact.
#[inline(never)]
pub(crate) fn check(
    h: &[u8],
    start: usize,
    pend: usize,
    rule: Rule,
    pem: &mut PemState,
) -> Option<(usize, usize)> {
    let before = start.checked_sub(1).and_then(|i| h.get(i)).copied();
    let glued = before.is_some_and(is_b64url);
    match rule {
        Rule::Aws => {
            let n = run(h, pend, |b| b.is_ascii_uppercase() || b.is_ascii_digit());
            (!glued && n == 16 && !h.get(pend + n).copied().is_some_and(is_alnum))
                .then_some((start, pend + n))
        }
        Rule::GithubToken => {
            let n = run(h, pend, is_alnum);
            (!glued && (36..=255).contains(&n) && h.get(pend + n) != Some(&b'_')).then_some((start, pend + n))
        }
        Rule::GithubPat => {
            let n = run(h, pend, |b| is_alnum(b) || b == b'_');
            (!glued && n >= 22).then_some((start, pend + n))
        }
        Rule::Slack => {
            let n = run(h, pend, |b| is_alnum(b) || b == b'-');
            (!glued && n >= 10).then_some((start, pend + n))
        }
        Rule::Stripe => {
            let n = run(h, pend, is_alnum);
            (!glued && n >= 16 && h.get(pend + n) != Some(&b'_')).then_some((start, pend + n))
        }
        Rule::SkDash => {
            let body = &h[pend..pend + run(h, pend, is_b64url)];
            let mixed = body.iter().any(u8::is_ascii_digit) && body.iter().any(u8::is_ascii_alphabetic);
            (!glued && body.len() >= 20 && mixed).then_some((start, pend + body.len()))
        }
        Rule::Google => {
            let n = run(h, pend, is_b64url);
            (!glued && n >= 30).then_some((start, pend + n))
        }
        Rule::Jwt => jwt(h, start, glued),
        Rule::Pem => pem_block(h, start, pend, pem),
        Rule::Bearer => bearer(h, start, pend),
    }
}

fn jwt(h: &[u8], start: usize, glued: bool) -> Option<(usize, usize)> {
    if glued {
        return None;
    }
    let a = run(h, start, is_b64url);
    if a < 10 || h.get(start + a) != Some(&b'.') {
        return None;
    }
    let p = start + a + 1;
    let b = run(h, p, is_b64url);
    if b < 5 {
        return None;
    }
    let mut end = p + b;
    if h.get(end) == Some(&b'.') {
        end += 1 + run(h, end + 1, is_b64url);
    }
    Some((start, end))
}

fn pem_block(h: &[u8], start: usize, pend: usize, st: &mut PemState) -> Option<(usize, usize)> {
    let label_len = run(h, pend, |b| {
        b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' '
    });
    let label = &h[pend..pend + label_len];
    if !label.ends_with(b"PRIVATE KEY") || h.get(pend + label_len..pend + label_len + 5) != Some(b"-----") {
        return None;
    }
    let body = pend + label_len + 5;
    let next_end = if st.searched && st.searched_from <= body && st.next_end.is_none_or(|e| e >= body) {
        st.next_end
    } else {
        {
            let found = memchr::memmem::find(&h[body..], b"-----END ").map(|i| body + i);
            st.searched = true;
            st.next_end = found;
            st.searched_from = body;
            found
        }
    };
    let end = match next_end {
        Some(e) => {
            let after = e + 9;
            let l = run(h, after, |b| {
                b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' '
            });
            let dashes = run(h, after + l, |b| b == b'-').min(5);
            after + l + dashes
        }
        // Unterminated (a truncated log line, say): everything that looks like key body.
        None => {
            body + run(h, body, |b| {
                b.is_ascii_alphanumeric() || b"+/=\r\n\t \\".contains(&b)
            })
        }
    };
    Some((start, end))
}

fn bearer(h: &[u8], start: usize, pend: usize) -> Option<(usize, usize)> {
    if start > 0 && is_alnum(h[start - 1]) {
        return None;
    }
    let s = pend + run(h, pend, |b| b == b' ');
    let n = run(h, s, |b| b.is_ascii_alphanumeric() || b"._~+/-".contains(&b));
    let tok = &h[s..s + n];
    let pad = run(h, s + n, |b| b == b'=');
    let plain_word = tok.iter().all(|&b| b.is_ascii_lowercase() || b == b'-');
    (n >= 16 && !plain_word).then_some((s, s + n + pad))
}
