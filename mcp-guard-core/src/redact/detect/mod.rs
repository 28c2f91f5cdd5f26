//! Byte-level detectors. Each looks at a bounded window around a trigger position and
//! either returns the span of a value it accepts or nothing; none allocates.
//!
//! Shared boundary rules: a value may not be glued to a letter, digit or `_`, and a
//! numeric value may not continue into another number through a joiner (`.`, `-`, or
//! the separator the value itself uses). That is what keeps `1.2.3.4.5`, `1-555-...-9`
//! or the middle of a longer digit run from matching.

pub(crate) mod context;
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

/// Full length of the digit run starting at `i`, eight bytes at a time.
#[inline]
pub(crate) fn digit_run_len(h: &[u8], i: usize) -> usize {
    let mut n = 0;
    while let Some(w) = h.get(i + n..i + n + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let nd = non_digits(u64::from_le_bytes(w));
        if nd != 0 {
            return n + (nd.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + h
        .get(i + n..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count()
}

/// The high bit of every byte of `x` (little-endian lanes) that is not an ASCII digit.
/// With the high bits cleared, adding `0x50` sets a lane's high bit from `0x30` up and
/// adding `0x46` from `0x3A` up, with no carry between lanes: a digit has the first, not
/// the second, and no high bit of its own.
#[inline]
fn non_digits(x: u64) -> u64 {
    const L: u64 = 0x0101_0101_0101_0101;
    let low = x & (0x7F * L);
    let from_zero = low + 0x50 * L;
    let past_nine = low + 0x46 * L;
    !(from_zero & !past_nine & !x) & (0x80 * L)
}

/// The value of up to 4 ASCII digits (callers check they are digits).
#[inline]
pub(crate) fn num(d: &[u8]) -> u32 {
    d.iter()
        .fold(0u32, |acc, &b| acc * 10 + u32::from(b.wrapping_sub(b'0') % 10))
}

/// Whether the byte before `s` glues a value there to a word: a letter, digit or `_`,
/// but not the letter of an escape sequence written out (`\n`, `\t`, `\r`, as text
/// escaped once too often has them), which stands for a line break or a tab.
#[inline]
pub(crate) fn glued_before(h: &[u8], s: usize) -> bool {
    let Some(&p) = s.checked_sub(1).and_then(|i| h.get(i)) else {
        return false;
    };
    is_word(p) && !(matches!(p, b'n' | b't' | b'r') && s >= 2 && h[s - 2] == b'\\')
}

/// Whether a numeric value may start at `s`: not glued to a word character, and not the
/// continuation of a number through `.`, `-` or one of `seps`.
#[inline]
pub(crate) fn left_ok(h: &[u8], s: usize, seps: &[u8]) -> bool {
    let Some(&p) = s.checked_sub(1).and_then(|i| h.get(i)) else {
        return true;
    };
    if glued_before(h, s) {
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

#[cfg(test)]
mod tests {
    #[test]
    fn digit_runs() {
        for s in [
            "",
            "x",
            "1",
            "12345678",
            "123456789",
            "1234567x",
            "0123456789012345678901",
            "99/",
            "12\u{e9}",
        ] {
            for i in 0..s.len() {
                let want = s.as_bytes()[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                assert_eq!(super::digit_run_len(s.as_bytes(), i), want, "{s:?} at {i}");
            }
        }
        for b in 0..=255u8 {
            let mut h = [b'1'; 9];
            h[3] = b;
            let want = if b.is_ascii_digit() { 9 } else { 3 };
            assert_eq!(super::digit_run_len(&h, 0), want, "byte {b}");
        }
    }

    /// The word-at-a-time digit test agrees with `is_ascii_digit` on every byte value in
    /// every lane.
    #[test]
    fn non_digits_matches_bytes() {
        for (b, fill, lane) in (0..=u8::MAX)
            .flat_map(|b| [b'x', b'0', b'9', b'/', b':', 0, 0x7F, 0xFF].map(|f| (b, f)))
            .flat_map(|(b, f)| (0..8).map(move |l| (b, f, l)))
        {
            let mut w = [fill; 8];
            w[lane] = b;
            let nd = super::non_digits(u64::from_le_bytes(w));
            let expect = (0..8).fold(0u64, |m, i| {
                if w[i].is_ascii_digit() {
                    m
                } else {
                    m | (0x80 << (8 * i))
                }
            });
            assert_eq!(nd, expect, "byte {b:#04x} in lane {lane} among {fill:#04x}");
        }
    }
}
