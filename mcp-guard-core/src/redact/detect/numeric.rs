//! US Social Security numbers, North American phone numbers and payment card numbers.

use super::{digit_run, digit_run_len, left_ok, num, right_ok};
use crate::redact::luhn;

/// Area, group and serial rules of an SSN (digits only, 9 of them).
pub(crate) fn ssn_digits_valid(d: &[u8]) -> bool {
    if d.len() != 9 || !d.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let area = num(&d[..3]);
    let group = num(&d[3..5]);
    let serial = num(&d[5..]);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// `AAA-GG-SSSS` or `AAA GG SSSS` starting at `p`.
#[inline(never)]
pub(crate) fn ssn(h: &[u8], p: usize) -> Option<usize> {
    let w = h.get(p..p + 11)?;
    let sep = w[3];
    if !(sep == b'-' || sep == b' ') || w[6] != sep {
        return None;
    }
    let mut d = [0u8; 9];
    d[..3].copy_from_slice(&w[..3]);
    d[3..5].copy_from_slice(&w[4..6]);
    d[5..].copy_from_slice(&w[7..]);
    (ssn_digits_valid(&d) && left_ok(h, p, &[sep]) && right_ok(h, p + 11, &[sep])).then_some(p + 11)
}

/// Nine bare digits, accepted only where the context names an SSN (a JSON key).
pub(crate) fn ssn_bare(h: &[u8], p: usize, run: usize) -> Option<usize> {
    (run == 9 && ssn_digits_valid(h.get(p..p + 9)?) && left_ok(h, p, &[]) && right_ok(h, p + 9, &[]))
        .then_some(p + 9)
}

/// NANP area code: `[2-9]XX`, not `N11`. (The exchange is not checked: written
/// examples such as `555-123-4567` use exchanges a real plan would not.)
fn area_code(d: &[u8]) -> bool {
    d.len() == 3 && d.iter().all(u8::is_ascii_digit) && d[0] >= b'2' && !(d[1] == b'1' && d[2] == b'1')
}

/// Ten NANP digits (area + exchange + line).
pub(crate) fn nanp_digits_valid(d: &[u8]) -> bool {
    let d = match d.len() {
        11 if d[0] == b'1' => &d[1..],
        10 => d,
        _ => return false,
    };
    d.iter().all(u8::is_ascii_digit) && area_code(&d[..3])
}

fn is_phone_sep(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.')
}

/// The part after any `+1`/`1` prefix: `(AAA) EEE-LLLL`, `AAA-EEE-LLLL`, `AAA.EEE.LLLL`,
/// `AAA EEE LLLL` and, when `bare` is allowed, `AAAEEELLLL`. Returns (end, separator).
fn nanp_body(h: &[u8], i: usize, bare: bool) -> Option<(usize, u8)> {
    let paren = h.get(i) == Some(&b'(');
    let mut j = i + usize::from(paren);
    if !area_code(h.get(j..j + 3)?) {
        return None;
    }
    j += 3;
    let sep1 = if paren {
        if h.get(j) != Some(&b')') {
            return None;
        }
        j += 1;
        if matches!(h.get(j), Some(b' ' | b'-')) {
            j += 1;
        }
        None
    } else {
        match h.get(j) {
            Some(&c) if is_phone_sep(c) => {
                j += 1;
                Some(c)
            }
            Some(c) if bare && c.is_ascii_digit() => {
                // Ten digits in a row.
                let rest = h.get(j..j + 7)?;
                return rest.iter().all(u8::is_ascii_digit).then_some((j + 7, 0));
            }
            _ => return None,
        }
    };
    if !h.get(j..j + 3)?.iter().all(u8::is_ascii_digit) {
        return None;
    }
    j += 3;
    let sep2 = *h.get(j)?;
    if !is_phone_sep(sep2) || sep1.is_some_and(|s| s != sep2) {
        return None;
    }
    j += 1;
    let line = h.get(j..j + 4)?;
    line.iter().all(u8::is_ascii_digit).then_some((j + 4, sep2))
}

/// Whether `j` (just after an exchange) holds a separator and a line of exactly four
/// digits: the end of every separated NANP shape.
#[inline]
pub(crate) fn line_after_exchange(h: &[u8], j: usize) -> bool {
    h.get(j).copied().is_some_and(is_phone_sep) && digit_run_len(h, j + 1) == 4
}

/// A North American number whose first digit group starts at `p` (the number itself may
/// start one byte earlier, at `(` or `+`). Returns (start, end).
#[inline(never)]
pub(crate) fn phone(h: &[u8], p: usize, hinted: bool, e164: bool) -> Option<(usize, usize)> {
    let before = p.checked_sub(1).and_then(|i| h.get(i)).copied();
    let check = |s: usize, (e, sep): (usize, u8)| {
        let seps: &[u8] = if sep == 0 { &[] } else { &[sep] };
        (left_ok(h, s, seps) && right_ok(h, e, seps)).then_some((s, e))
    };
    if before == Some(b'+') {
        let s = p - 1;
        if h[p] == b'1' {
            let mut i = p + 1;
            if h.get(i).copied().is_some_and(is_phone_sep) {
                i += 1;
            }
            if let Some(found) = nanp_body(h, i, true).and_then(|m| check(s, m)) {
                return Some(found);
            }
        }
        if e164 && h[p] != b'0' {
            let run = digit_run(h, p, 15);
            if (8..=15).contains(&run) {
                return check(s, (p + run, 0));
            }
        }
        return None;
    }
    if before == Some(b'(')
        && let Some(found) = nanp_body(h, p - 1, false).and_then(|m| check(p - 1, m))
    {
        return Some(found);
    }
    if h[p] == b'1'
        && h.get(p + 1).copied().is_some_and(is_phone_sep)
        && let Some(found) = nanp_body(h, p + 2, false).and_then(|m| check(p, m))
    {
        return Some(found);
    }
    if let Some(found) = nanp_body(h, p, false).and_then(|m| check(p, m)) {
        return Some(found);
    }
    if hinted {
        let run = digit_run(h, p, 11);
        if (run == 10 || run == 11) && nanp_digits_valid(&h[p..p + run]) {
            return check(p, (p + run, 0));
        }
    }
    None
}

/// Issuer ranges by length: Visa, Mastercard (51-55, 2221-2720), American Express,
/// Discover, Diners Club, JCB and `UnionPay`.
pub(crate) fn issuer_ok(d: &[u8]) -> bool {
    let n = d.len();
    if !(13..=19).contains(&n) {
        return false;
    }
    let p2 = num(&d[..2]);
    let p3 = num(&d[..3]);
    let p4 = num(&d[..4]);
    match d[0] {
        b'4' => matches!(n, 13 | 16 | 19),
        b'5' => n == 16 && (51..=55).contains(&p2),
        b'2' => n == 16 && (2221..=2720).contains(&p4),
        b'3' => {
            (n == 15 && (p2 == 34 || p2 == 37))
                || (n == 14 && ((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39))
                || (n >= 16 && (3528..=3589).contains(&p4))
        }
        b'6' => n >= 16 && (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || p2 == 62),
        _ => false,
    }
}

/// Digits of a card number (no separators): issuer range and Luhn.
pub(crate) fn card_digits_valid(d: &[u8]) -> bool {
    issuer_ok(d) && luhn::valid(d)
}

/// Whether the group lengths of a separated number are a layout cards are printed in:
/// fours with a shorter last group (`4-4-4-4`, `4-4-4-1`, `4-4-4-4-3`), or the
/// American Express / Diners `4-6-5` and `4-6-4`.
fn layout_ok(groups: &[u8]) -> bool {
    match groups {
        [4, 6, 5 | 4] => true,
        [first @ .., last] if first.len() >= 3 => first.iter().all(|&g| g == 4) && (1..=4).contains(last),
        _ => false,
    }
}

/// Whether a number printed in space-separated groups at `p..j` looks like cells of a
/// table rather than one value: more numbers right next to it with only whitespace
/// between (`#` and `$` allowed in front of a neighbour), or a run of blanks right in
/// front of it (two or more spaces, or a tab: column alignment). Four 4-digit cells pass
/// the issuer and Luhn checks about one time in forty, so a table of small numbers
/// would otherwise be a steady source of false cards.
fn in_number_column(h: &[u8], p: usize, j: usize) -> bool {
    let ws = |b: &&u8| b.is_ascii_whitespace();
    let number_at = |rest: &[u8]| match rest {
        [b'#' | b'$', d, ..] | [d, ..] => d.is_ascii_digit(),
        [] => false,
    };
    let after = h.get(j..).unwrap_or_default();
    let lead = after.iter().take(4).take_while(ws).count();
    column_on_left(h, p) || (lead < 4 && number_at(&after[lead..]))
}

/// The part of [`in_number_column`] that looks left of `p`: a number within a few
/// blanks before it, or column alignment (two or more spaces, or a tab).
fn column_on_left(h: &[u8], p: usize) -> bool {
    let before = h[..p].iter().rev().take(4).find(|b| !b.is_ascii_whitespace());
    let aligned = matches!(h[..p], [.., b' ' | b'\t', b' '] | [.., b'\t']);
    aligned || before.is_some_and(u8::is_ascii_digit)
}

/// A card number whose first digit is at `p`, where a run of `run` digits starts: 13-19
/// digits, either in one run or in groups split by single spaces or single dashes (one
/// kind of separator throughout).
#[inline(never)]
pub(crate) fn card(h: &[u8], p: usize, run: usize) -> Option<usize> {
    if !left_ok(h, p, &[]) {
        return None;
    }
    let before = p.checked_sub(1).and_then(|i| h.get(i)).copied();
    // A first group of four followed by a space can only be a card in space-separated
    // groups: the checks of those that look left are made before reading the groups
    // (in a list of numbers this turns down every group but the first at once).
    if before == Some(b'#')
        || (run == 4 && h.get(p + 4) == Some(&b' ') && (before == Some(b':') || column_on_left(h, p)))
    {
        return None;
    }
    let mut groups = [0u8; 6];
    let mut ng = 0usize;
    let mut nd = 0usize;
    let mut sep: Option<u8> = None;
    let mut pos = p;
    let mut run = run;
    loop {
        if run == 0 || nd + run > 19 || ng == groups.len() {
            return None;
        }
        // Separated layouts start 4, then 4 or 6; give up early on anything else.
        if ng == 1 && groups[0] == 4 && !(run == 4 || run == 6)
            || ng == 2 && groups[1] == 6 && !(run == 4 || run == 5)
        {
            return None;
        }
        groups[ng] = u8::try_from(run).ok()?;
        ng += 1;
        nd += run;
        pos += run;
        match h.get(pos) {
            Some(&c @ (b' ' | b'-')) if run <= 6 && h.get(pos + 1).is_some_and(u8::is_ascii_digit) => {
                if sep.is_some_and(|s| s != c) {
                    break;
                }
                sep = Some(c);
                pos += 1;
            }
            _ => break,
        }
        run = digit_run_len(h, pos);
    }
    let shape_ok = if ng == 1 {
        (13..=19).contains(&nd)
    } else {
        layout_ok(&groups[..ng])
    };
    if !shape_ok {
        return None;
    }
    if sep == Some(b' ') && (before == Some(b':') || in_number_column(h, p, pos)) {
        return None;
    }
    let mut digits = [0u8; 19];
    let mut n = 0;
    for &b in &h[p..pos] {
        if b.is_ascii_digit() {
            digits[n] = b;
            n += 1;
        }
    }
    let seps: &[u8] = match &sep {
        Some(s) => std::slice::from_ref(s),
        None => &[],
    };
    // A short last group that starts a date or time (`4947 8207 3841 5/1/1997`) is not
    // part of a card (`4111 1111 1111 1111/12`, a card and its expiry, still is one).
    let glued = ng > 1
        && groups[ng - 1] < 4
        && matches!(h.get(pos..pos + 2), Some([b'/' | b':', d]) if d.is_ascii_digit());
    (!glued && card_digits_valid(&digits[..n]) && right_ok(h, pos, seps)).then_some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Option<usize> {
        let p = s.find(|c: char| c.is_ascii_digit())?;
        card(s.as_bytes(), p, digit_run_len(s.as_bytes(), p))
    }

    #[test]
    fn card_shapes() {
        assert_eq!(at("4111111111111111"), Some(16));
        assert_eq!(at("4111 1111 1111 1111"), Some(19));
        assert_eq!(at("4111-1111-1111-1111"), Some(19));
        assert_eq!(at("3782 822463 10005"), Some(17));
        assert_eq!(at("4111-1111 1111-1111"), None, "mixed separators");
        assert_eq!(at("4111  1111 1111 1111"), None, "double space");
        assert_eq!(at("41111111111111111111"), None, "20 digits");
        assert_eq!(at("4111111111111112"), None, "luhn");
        assert_eq!(at("1234567812345670"), None, "no issuer starts with 1");
        assert_eq!(at("x4111111111111111"), None);
        assert_eq!(at("in a table  4111 1111 1111 1111"), None, "column-aligned");
        assert_eq!(at("\t4111 1111 1111 1111"), None, "column-aligned");
        assert_eq!(at("4111 1111 1111 1111 #12"), None, "next to a number");
        assert_eq!(at("4111 1111 1111 1111/12"), Some(19), "card and expiry");
        assert_eq!(at("4111 1111 1111 1/1/1997"), None, "short group glued to a date");
        assert_eq!(at("4111 1111 1111 1 and"), None, "luhn");
        assert_eq!(at("card: 4111-1111-1111-1111"), Some(25));
    }

    #[test]
    fn phone_shapes() {
        let f = |s: &str| {
            let p = s.find(|c: char| c.is_ascii_digit()).unwrap_or(0);
            phone(s.as_bytes(), p, false, false)
        };
        assert_eq!(f("(555) 123-4567"), Some((0, 14)));
        assert_eq!(f("+1 555 123 4567"), Some((0, 15)));
        assert_eq!(f("+15551234567"), Some((0, 12)));
        assert_eq!(f("1-555-123-4567"), Some((0, 14)));
        assert_eq!(f("555.123.4567"), Some((0, 12)));
        assert_eq!(f("555-123.4567"), None);
        assert_eq!(f("155-123-4567"), None, "area code starts with 1");
        assert_eq!(f("5551234567"), None, "bare ten digits need context");
        assert_eq!(f("+4915112345678"), None, "E.164 only when configured");
        assert_eq!(phone(b"+4915112345678", 1, false, true), Some((0, 14)));
    }
}
