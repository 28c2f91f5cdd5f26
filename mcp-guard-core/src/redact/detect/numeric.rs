//! US Social Security numbers, North American phone numbers and payment card numbers.

use super::{context, digit_run, digit_run_len, left_ok, num, right_ok};
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

/// A separator between the groups of a phone number.
fn is_phone_sep(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.' | b'/')
}

/// The part after any country-code prefix: `(AAA) EEE-LLLL`, `(AAA)EEE-LLLL`,
/// `AAA-EEE-LLLL`, `AAA.EEE.LLLL`, `AAA EEE LLLL`, `AAA EEE-LLLL`, `AAA/EEE-LLLL` and,
/// when `bare` is allowed, `AAAEEELLLL`. The two separators are the same, but for a
/// space or `/` after the area code and `-` before the line. Returns (end, the
/// separator before the line, or 0).
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
    let agrees = match sep1 {
        None => matches!(sep2, b' ' | b'-' | b'.'),
        Some(b' ' | b'/') => sep2 == b'-' || sep2 == sep1.unwrap_or(0),
        Some(s) => sep2 == s,
    };
    if !agrees || sep2 == b'/' {
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

/// Where a number whose area code (or the `(` before it) is at `a` starts, with the
/// country-code prefix written before it, if any: `+1`, `(+1)`, or `1` or `001` and a
/// separator; each may be followed by one separator.
fn nanp_prefix(h: &[u8], a: usize) -> usize {
    let head = &h[..a];
    let (head, sep) = match head.last() {
        Some(b' ' | b'-' | b'.') => (&head[..head.len() - 1], 1),
        _ => (head, 0),
    };
    let p = if head.ends_with(b"(+1)") {
        4
    } else if head.ends_with(b"+1") {
        2
    } else if sep == 1 && head.ends_with(b"001") {
        3
    } else if sep == 1 && head.ends_with(b"1") {
        1
    } else {
        return a;
    };
    a - sep - p
}

/// Markers of an extension after a number, lower case, the longest first.
const EXTENSIONS: [&[u8]; 5] = [b"extension", b"ext.", b"ext", b"x", b"#"];

/// Where an extension written right after a number that ends at `e` ends: `x123`,
/// ` x123`, ` ext. 123`, `ext123`, ` extension 123`, `#123`, ` #123` (one to six digits);
/// `e` when there is none.
fn extension(h: &[u8], e: usize) -> usize {
    let mut i = e + usize::from(h.get(e) == Some(&b' '));
    let rest = h.get(i..).unwrap_or_default();
    let Some(marker) = EXTENSIONS
        .iter()
        .find(|w| rest.len() > w.len() && rest[..w.len()].eq_ignore_ascii_case(w))
    else {
        return e;
    };
    i += marker.len();
    if marker.len() > 1 && h.get(i) == Some(&b' ') {
        i += 1;
    }
    let digits = digit_run(h, i, 6);
    if (1..=6).contains(&digits) && !h.get(i + digits).copied().is_some_and(super::is_word) {
        i + digits
    } else {
        e
    }
}

/// An international number after the `+` at `p - 1`: a country code and groups of
/// digits split by single separators (space, `-`, `.`, `/`), one group possibly in
/// parentheses (a trunk `(0)` after the country code is not counted), 8 to 15 digits
/// in all. Returns (end, the last separator, or 0).
fn e164_body(h: &[u8], p: usize) -> Option<(usize, u8)> {
    let mut i = p;
    let mut digits = 0;
    let mut last_sep = 0;
    let mut end;
    let mut open = false;
    let mut opened = false;
    loop {
        let run = digit_run(h, i, 15);
        if run == 0 {
            return None;
        }
        if !(open && run == 1 && h[i] == b'0') {
            digits += run;
        }
        i += run;
        end = i;
        if digits > 15 {
            return None;
        }
        // Whether the next group may follow without a separator (after `)`).
        let mut glued = false;
        if open {
            if h.get(i) != Some(&b')') {
                return None;
            }
            i += 1;
            open = false;
            glued = true;
        }
        let mut step = i;
        if h.get(step).copied().is_some_and(is_phone_sep) {
            last_sep = h[step];
            step += 1;
        }
        let spaced = step > i;
        match h.get(step) {
            Some(b'(') if !opened && (spaced || digits <= 3) => {
                step += 1;
                open = true;
                opened = true;
            }
            Some(d) if d.is_ascii_digit() && (spaced || glued) => {}
            _ => break,
        }
        i = step;
    }
    (8..=15).contains(&digits).then_some((end, last_sep))
}

/// A phone number whose first digit group starts at `p` (the number itself may start
/// a few bytes earlier, at a prefix, `(` or `+`). `bare`: ten digits in a row count (a
/// key or a word nearby says this is a phone number). North American numbers always,
/// international ones after `+` when `e164`. Returns (start, end).
#[inline(never)]
pub(crate) fn phone(h: &[u8], p: usize, bare: bool, e164: bool) -> Option<(usize, usize)> {
    let before = p.checked_sub(1).and_then(|i| h.get(i)).copied();
    let check = |s: usize, (e, sep): (usize, u8)| {
        let seps: &[u8] = if sep == 0 { &[] } else { std::slice::from_ref(&sep) };
        let e = extension(h, e);
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
            return e164_body(h, p).and_then(|m| check(s, m));
        }
        return None;
    }
    // From the `(` before the area code if there is one, else from the area code; with
    // the prefix written before it if there is one.
    for a in [p - usize::from(before == Some(b'(')), p] {
        if let Some(m) = nanp_body(h, a, bare) {
            let s = nanp_prefix(h, a);
            // Three groups split by spaces alone, with no prefix, are the weakest shape:
            // a real exchange (not from `0` or `1`), and not the numbers of a street
            // address (`Suite 796 628 1570 Main St`).
            if s == a
                && m.1 == b' '
                && h.get(a + 3) == Some(&b' ')
                && (h[a + 4] < b'2' || context::address_before(h, a))
            {
                continue;
            }
            if let Some(found) = check(s, m).or_else(|| (s < a).then(|| check(a, m)).flatten()) {
                return Some(found);
            }
        }
        if before != Some(b'(') {
            break;
        }
    }
    if h[p] == b'1'
        && h.get(p + 1).copied().is_some_and(is_phone_sep)
        && let Some(found) = nanp_body(h, p + 2, false).and_then(|m| check(p, m))
    {
        return Some(found);
    }
    if bare {
        let run = digit_run(h, p, 11);
        if run == 11 && nanp_digits_valid(&h[p..p + run]) {
            return check(p, (p + run, 0));
        }
    }
    None
}

/// Issuer ranges by length: Visa `4` (13, 16, 19), Mastercard `51`-`55` and
/// `2221`-`2720` (16), American Express `34`/`37` (15), Discover `6011`, `644`-`649`,
/// `65` (16-19), Diners Club `300`-`305`, `3095`, `36`, `38`, `39` (14-19), JCB `35`
/// (16-19; `3528`-`3589` and the older `2131` and `1800` at 15), `UnionPay` `62`
/// (16-19) and Maestro `50`, `56`-`69` (12-19) and `0604` (12). Maestro numbers of 12 to
/// 15 digits count only where `context` says a card is meant (a word such as `card`
/// nearby, or a key): so many other numbers have that length.
pub(crate) fn issuer_ok(d: &[u8], context: bool) -> bool {
    let n = d.len();
    if !(12..=19).contains(&n) || d.len() < 4 {
        return false;
    }
    let p2 = num(&d[..2]);
    let p3 = num(&d[..3]);
    let p4 = num(&d[..4]);
    let maestro =
        (n >= 16 || context) && (p2 == 50 || (56..=69).contains(&p2)) || (context && n == 12 && p4 == 604);
    maestro
        || match d[0] {
            b'4' => matches!(n, 13 | 16 | 19),
            b'5' => n == 16 && (51..=55).contains(&p2),
            b'2' => (n == 16 && (2221..=2720).contains(&p4)) || (n == 15 && p4 == 2131),
            b'1' => n == 15 && p4 == 1800,
            b'3' => {
                (n == 15 && (p2 == 34 || p2 == 37 || (3528..=3589).contains(&p4)))
                    || (n >= 14
                        && ((300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39))
                    || (n >= 16 && p2 == 35)
            }
            b'6' => n >= 16 && (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || p2 == 62),
            _ => false,
        }
}

/// Digits of a card number (no separators): issuer range and Luhn.
pub(crate) fn card_digits_valid(d: &[u8], context: bool) -> bool {
    issuer_ok(d, context) && luhn::valid(d)
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
    column_on_left(h, p) || (lead < 4 && number_at(&after[lead..]) && !expiry_or_code(&after[lead..]))
}

/// Whether `rest` starts with what follows a card number on a form rather than another
/// cell of a table: an expiry (`04/27`, `4/2027`, `04-27`) or a security code of three
/// or four digits that ends the text or is followed by no other number.
fn expiry_or_code(rest: &[u8]) -> bool {
    let month = digit_run(rest, 0, 2);
    if (1..=2).contains(&month)
        && matches!(rest.get(month), Some(b'/' | b'-'))
        && matches!(digit_run(rest, month + 1, 4), 2 | 4)
        && (1..=12).contains(&num(&rest[..month]))
    {
        return true;
    }
    let code = digit_run(rest, 0, 4);
    let tail = rest.get(code..).unwrap_or_default();
    let next = tail.iter().position(|b| !b.is_ascii_whitespace());
    (3..=4).contains(&code)
        && !tail
            .first()
            .is_some_and(|&b| super::is_word(b) || b == b'.' || b == b'-' || b == b'/')
        && next.is_none_or(|k| !tail[k].is_ascii_digit())
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
pub(crate) fn card(h: &[u8], p: usize, run: usize, context: bool) -> Option<usize> {
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
        if run == 0 {
            return None;
        }
        if nd + run > 19 || ng == groups.len() {
            if ng == 0 {
                return None;
            }
            // A number after the card (its security code, or a neighbour in a table):
            // the card is the groups so far, and what follows is looked at below.
            pos -= 1;
            break;
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
    // The whole, then (when the last group is short and what it starts is an expiry or
    // a security code, `4111 1111 1111 1111 04/27`) the groups before it.
    let whole = card_groups(h, p, pos, &groups[..ng], sep, context);
    if whole.is_some() || ng < 2 || groups[ng - 1] >= 4 {
        return whole;
    }
    let short = usize::from(groups[ng - 1]);
    let cut = pos - short - 1;
    if sep == Some(b' ') && h.get(cut + 1..).is_some_and(expiry_or_code) {
        return card_groups(h, p, cut, &groups[..ng - 1], sep, context);
    }
    None
}

/// The checks of [`card`] on the groups `groups` at `p..pos`, split by `sep`: layout,
/// table, a short last group glued to a date, issuer, Luhn, the byte after.
fn card_groups(
    h: &[u8],
    p: usize,
    pos: usize,
    groups: &[u8],
    sep: Option<u8>,
    context: bool,
) -> Option<usize> {
    let ng = groups.len();
    let nd: usize = groups.iter().map(|&g| usize::from(g)).sum();
    let before = p.checked_sub(1).and_then(|i| h.get(i)).copied();
    let shape_ok = if ng == 1 {
        (12..=19).contains(&nd)
    } else {
        layout_ok(groups)
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
    // The card may be followed by its expiry or security code after its own separator.
    let end_ok =
        right_ok(h, pos, seps) || (sep == Some(b' ') && h.get(pos + 1..).is_some_and(expiry_or_code));
    (!glued && card_digits_valid(&digits[..n], context && ng == 1) && end_ok).then_some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Option<usize> {
        let p = s.find(|c: char| c.is_ascii_digit())?;
        card(s.as_bytes(), p, digit_run_len(s.as_bytes(), p), false)
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
