//! Byte-level detectors. Each looks at a bounded window around a trigger position and
//! either returns the span of a value it accepts or nothing; none allocates.
//!
//! Shared boundary rules: a value may not be glued to a letter, digit or `_`, and a
//! numeric value may not continue into another number through a joiner (`.`, `-`, or
//! the separator the value itself uses). That is what keeps `1.2.3.4.5`, `1-555-...-9`
//! or the middle of a longer digit run from matching.

pub(crate) mod email;
pub(crate) mod ip;
pub(crate) mod numeric;
pub(crate) mod secret;

/// A letter, digit or underscore.
#[inline]
pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Number of ASCII digits starting at `i`, counting at most `max + 1` of them (so callers
/// can tell "exactly `max`" from "more than `max`").
#[inline]
pub(crate) fn digit_run(h: &[u8], i: usize, max: usize) -> usize {
    h.get(i..)
        .unwrap_or_default()
        .iter()
        .take(max + 1)
        .take_while(|b| b.is_ascii_digit())
        .count()
}

/// Full length of the digit run starting at `i`.
#[inline]
pub(crate) fn digit_run_len(h: &[u8], i: usize) -> usize {
    h.get(i..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count()
}

/// The value of up to 4 ASCII digits (callers check they are digits).
#[inline]
pub(crate) fn num(d: &[u8]) -> u32 {
    d.iter()
        .fold(0u32, |acc, &b| acc * 10 + u32::from(b.wrapping_sub(b'0') % 10))
}

/// Whether a numeric value may start at `s`: not glued to a word character, and not the
/// continuation of a number through `.`, `-` or one of `seps`.
#[inline]
pub(crate) fn left_ok(h: &[u8], s: usize, seps: &[u8]) -> bool {
    let Some(&p) = s.checked_sub(1).and_then(|i| h.get(i)) else {
        return true;
    };
    if is_word(p) {
        return false;
    }
    let joiner = p == b'.' || p == b'-' || seps.contains(&p);
    !(joiner && s >= 2 && h.get(s - 2).is_some_and(u8::is_ascii_digit))
}

/// Whether a numeric value may end at `e` (exclusive); mirror of [`left_ok`].
#[inline]
pub(crate) fn right_ok(h: &[u8], e: usize, seps: &[u8]) -> bool {
    let Some(&n) = h.get(e) else {
        return true;
    };
    if is_word(n) {
        return false;
    }
    let joiner = n == b'.' || n == b'-' || seps.contains(&n);
    !(joiner && h.get(e + 1).is_some_and(u8::is_ascii_digit))
}
