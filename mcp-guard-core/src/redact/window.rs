//! Byte-class bit masks over a sliding window, and the scan events read from them.
//!
//! The scanner moves through a string 32 bytes at a time. It classifies 16 bytes at a
//! time with one vector compare per class (SSE2 on `x86_64`, NEON on `aarch64`, through
//! `wide`; plain code elsewhere) and keeps one bit per byte and class in a 64-bit
//! register. Digit-run starts, run ends and the bytes around a run are then shifts and
//! ANDs, so the numbers of a table that cannot start any numeric finding (`12, 3.5,
//! 2024/01/02, 17150000000`) are turned down 32 at a time, without being visited.

use wide::u8x16;

/// Bytes classified at a time.
pub(crate) const CHUNK: usize = 16;

/// Bytes decided per step.
pub(crate) const STEP: usize = 2 * CHUNK;

/// Class masks of a window of 64 bytes, `[base - CHUNK, base + STEP + CHUNK)`: bit `j`
/// stands for byte `base - CHUNK + j`. Bytes outside the string read as zero, which is
/// in no class. The step being decided is `[base, base + STEP)`; the bytes before it are
/// there for the two bytes just before `base`, the bytes after for the shapes that reach
/// past the end of the step (up to 12 bytes, for a 13-digit run).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) base: usize,
    c: Classes,
}

/// One bit per byte for each class.
#[derive(Debug, Clone, Copy, Default)]
struct Classes {
    /// ASCII digits.
    digit: u64,
    /// `2` to `6`: the first digits of cards.
    lead: u64,
    /// Space and `-` (`dash`): the separators of card, SSN and phone groups.
    space: u64,
    dash: u64,
    dot: u64,
    /// `( ) +`, which phone numbers may start with or hold.
    punct: u64,
    /// The trigger bytes that are not digits: `@ : _ - A J`.
    other: u64,
}

impl Classes {
    /// `f` applied to each class of `self` and of `o`.
    #[inline]
    fn zip(self, o: Self, f: impl Fn(u64, u64) -> u64) -> Self {
        Self {
            digit: f(self.digit, o.digit),
            lead: f(self.lead, o.lead),
            space: f(self.space, o.space),
            dash: f(self.dash, o.dash),
            dot: f(self.dot, o.dot),
            punct: f(self.punct, o.punct),
            other: f(self.other, o.other),
        }
    }
}

/// The classes of the 16 bytes of `h` at `at`, in bits `0..16`; bytes past the end of
/// `h` are in no class.
#[inline]
fn classify(h: &[u8], at: usize) -> Classes {
    if let Some(c) = h
        .get(at..at + CHUNK)
        .and_then(|c| <[u8; CHUNK]>::try_from(c).ok())
    {
        return classify_chunk(c);
    }
    if at >= h.len() {
        return Classes::default();
    }
    // The tail: the last 16 bytes of `h`, shifted down so that byte `at` is bit 0 (no
    // copy into a padded buffer, which costs a call to `memcpy`).
    if let Some(last) = h.last_chunk::<CHUNK>() {
        let past = at + CHUNK - h.len();
        return classify_chunk(*last).zip(Classes::default(), |c, _| c >> past);
    }
    let mut c = [0u8; CHUNK];
    c[..h.len() - at].copy_from_slice(&h[at..]);
    classify_chunk(c)
}

/// The classes of the 16 bytes `c`, in bits `0..16`.
#[inline]
fn classify_chunk(c: [u8; CHUNK]) -> Classes {
    let v = u8x16::new(c);
    let eq = |b: u8| v.simd_eq(u8x16::splat(b));
    let mask = |m: u8x16| u64::from(m.to_bitmask());
    let from_zero = v - u8x16::splat(b'0');
    let digit = from_zero.simd_eq(from_zero.min(u8x16::splat(9)));
    let from_two = v - u8x16::splat(b'2');
    let lead = from_two.simd_eq(from_two.min(u8x16::splat(4)));
    let dash = eq(b'-');
    Classes {
        digit: mask(digit),
        lead: mask(lead),
        space: mask(eq(b' ')),
        dash: mask(dash),
        dot: mask(eq(b'.')),
        punct: mask(eq(b'(') | eq(b')') | eq(b'+')),
        other: mask(eq(b'@') | eq(b':') | eq(b'_') | dash | eq(b'A') | eq(b'J')),
    }
}

impl Window {
    /// The window whose step starts at `base`.
    #[allow(
        clippy::inline_always,
        reason = "two call sites in the dense loop; out of line it costs a 10 KB number table 3% more time"
    )]
    #[inline(always)]
    pub(crate) fn at(h: &[u8], base: usize) -> Self {
        let place = |k: usize| move |acc: u64, c: u64| acc | (c << (CHUNK * k));
        let (c0, c1, c2) = match h.get(base..base + 3 * CHUNK).map(<[u8]>::as_chunks::<CHUNK>) {
            Some(([c0, c1, c2], _)) => (classify_chunk(*c0), classify_chunk(*c1), classify_chunk(*c2)),
            _ => (
                classify(h, base),
                classify(h, base + CHUNK),
                classify(h, base + 2 * CHUNK),
            ),
        };
        let c = c0.zip(Classes::default(), |c, _| c << CHUNK);
        let c = c.zip(c1, place(2));
        let mut c = c.zip(c2, place(3));
        // Of the bytes before the step, the shapes read the last one (a digit, space or
        // `( ) +`). The list rule also reads the one before it, as a digit; left unset
        // here, it lets a group at the very start of a new window through to `card`,
        // which turns a listed group down itself.
        if let Some(&b) = base.checked_sub(1).and_then(|k| h.get(k)) {
            let last = 1u64 << (CHUNK - 1);
            let bit = |yes: bool| if yes { last } else { 0 };
            c.digit |= bit(b.is_ascii_digit());
            c.punct |= bit(matches!(b, b'(' | b')' | b'+'));
            c.space |= bit(b == b' ');
        }
        Self { base, c }
    }

    /// Moves the window one step on.
    #[inline]
    pub(crate) fn advance(&mut self, h: &[u8]) {
        self.base += STEP;
        let c = self.c.zip(classify(h, self.base + CHUNK), |r, c| {
            (r >> STEP) | (c << (2 * CHUNK))
        });
        self.c = c.zip(classify(h, self.base + 2 * CHUNK), |r, c| r | (c << (3 * CHUNK)));
    }

    /// Whether `[base, base + STEP + CHUNK)` holds no trigger byte at all.
    #[inline]
    pub(crate) fn quiet(&self) -> bool {
        (self.c.digit | self.c.other) >> CHUNK == 0
    }

    /// The positions of the step (bit `k` for byte `base + k`) the scanner must visit:
    /// every non-digit trigger (but a single `-` after a digit), and every digit-run
    /// start where
    /// [`Scanner::numeric`](super::scan::Scanner) could run a detector. Each shape
    /// below holds whenever `numeric` (or the detector, on its first test) lets a run
    /// through, so a run that fits none of them would only be turned down there:
    /// - a card: a `2` to `6`, three more digits, a space or `-`, then either two more
    ///   groups of four and a separator and a digit (a card in fours has at least four
    ///   groups), or six digits, a separator and four digits (`4-6-5` or `4-6-4`),
    ///   unless the groups are spaced and a number and a space come just before (a list
    ///   of numbers); or a `2` to `6` and 12 digits or more;
    /// - an SSN: three digits, a space or `-`, then two digits;
    /// - a phone number: three digits, a space, `-` or `.`, three digits, one of those
    ///   again and four digits; one digit, a space, `-` or `.`, then three digits or
    ///   `(`; or any run after `(`, `)` or `+`;
    /// - an IPv4 address: two groups of one to three digits, each followed by `.`;
    ///
    /// and none but the last where a digit and `-` come just before, none at all where
    /// a digit and `.` do.
    ///
    /// With `every_run` (a key that names an SSN or phone number, under which bare
    /// digits count), every run start.
    #[inline]
    pub(crate) fn events(&self, every_run: bool) -> u64 {
        let c = &self.c;
        let d = c.digit;
        let start = d & !(d << 1);
        let runs = if every_run {
            start
        } else {
            // Bit `j` of `x >> k` is `x` at byte `j + k`; of `x << k`, at byte `j - k`.
            let end = d & !(d >> 1);
            let (space, dot) = (c.space, c.dot);
            let sep = space | c.dash;
            let sep_dot = sep | dot;
            let d2 = d & (d >> 1);
            let d4 = d2 & (d2 >> 2);
            // Groups of exactly 2, 3, 4 and 6 digits ending at `j + 1`, `j + 2`…
            let g2 = d2 & (end >> 1);
            let g3 = d2 & (g2 >> 1);
            let g4 = d2 & (g2 >> 2);
            let g6 = d4 & (g2 >> 4);
            // Cards in groups: 4-4-4-4…, or 4-6-5. `card` turns down a spaced first
            // group right after a number and a space at once.
            let listed = (space >> 4) & (space << 1) & (d << 2);
            let card = c.lead
                & (g4
                    & (sep >> 4)
                    & !listed
                    & (((g4 >> 5) & (sep >> 9) & (g4 >> 10) & (sep >> 14) & (d >> 15))
                        | ((g6 >> 5) & (sep >> 11) & (d4 >> 12)))
                    | d4 & (d4 >> 4) & (d4 >> 8) & (d >> 12));
            let ssn = g3 & (sep >> 3) & (g2 >> 4);
            let phone = g3 & (sep_dot >> 3) & (g3 >> 4) & (sep_dot >> 7) & (g4 >> 8)
                | end & (sep_dot >> 1) & ((g3 >> 2) | (c.punct >> 2))
                | (c.punct << 1);
            // A group of one to three digits at `j` followed by `.`, `group`; and such a
            // group followed by another, `ip`.
            let dotted = end & (dot >> 1);
            let group = d & (dotted | (dotted >> 1) | ((d >> 1) & (dotted >> 2)));
            let ip = (dotted & (group >> 2))
                | (d & (dotted >> 1) & (group >> 3))
                | (d2 & (dotted >> 2) & (group >> 4));
            // A run right after a digit and `.` starts nothing (every detector turns
            // down a value joined to a number before it by `.`); right after a digit
            // and `-`, nothing but an address (`10.0.0.1-10.0.0.9`).
            let joined = d << 2;
            start & !(joined & (dot << 1)) & ((card | ssn | phone) & !(joined & (c.dash << 1)) | ip)
        };
        // A dash after a digit (dates, ranges, number lists) starts no credential unless
        // another dash follows (`-----BEGIN`).
        let numeric_dash = c.dash & (c.digit << 1) & !(c.dash >> 1);
        ((runs | (c.other & !numeric_dash)) >> CHUNK) & ((1 << STEP) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Near and past the end of a string, every byte inside it keeps its class and the
    /// bytes past the end are in none (the short-string copy, the shifted last chunk
    /// and the empty chunk alike).
    #[test]
    fn tails_are_classified_in_place() {
        let text = b"12 4111-1111 (555) a@b:c_dAJ.x+0123456789 -- end";
        for len in 0..=text.len() {
            let h = &text[..len];
            for at in 0..len + 2 * CHUNK {
                let got = classify(h, at);
                for j in 0..CHUNK {
                    let digit = h.get(at + j).is_some_and(u8::is_ascii_digit);
                    let space = h.get(at + j) == Some(&b' ');
                    let other = h.get(at + j).is_some_and(|b| b"@:_-AJ".contains(b));
                    assert_eq!(got.digit >> j & 1 == 1, digit, "{len} {at} {j}");
                    assert_eq!(got.space >> j & 1 == 1, space, "{len} {at} {j}");
                    assert_eq!(got.other >> j & 1 == 1, other, "{len} {at} {j}");
                }
                assert_eq!(got.digit >> CHUNK, 0);
            }
        }
    }

    /// Every class mask agrees with a byte-at-a-time test, for every byte value in every
    /// lane.
    #[test]
    fn classes_match_bytes() {
        for b in 0..=u8::MAX {
            for lane in 0..CHUNK {
                let mut c = [b'x'; CHUNK];
                c[lane] = b;
                let got = classify(&c, 0);
                let bit = 1u64 << lane;
                let want = |yes: bool| if yes { bit } else { 0 };
                assert_eq!(got.digit & bit, want(b.is_ascii_digit()), "digit {b:#04x}");
                assert_eq!(got.lead & bit, want((b'2'..=b'6').contains(&b)), "lead {b:#04x}");
                assert_eq!(got.space & bit, want(b == b' '), "space {b:#04x}");
                assert_eq!(got.dash & bit, want(b == b'-'), "dash {b:#04x}");
                assert_eq!(got.dot & bit, want(b == b'.'), "dot {b:#04x}");
                assert_eq!(got.punct & bit, want(b"()+".contains(&b)), "punct {b:#04x}");
                assert_eq!(got.other & bit, want(b"@:_-AJ".contains(&b)), "other {b:#04x}");
                assert_eq!((got.digit | got.other) & !bit, 0, "only lane {lane}");
            }
        }
    }
}
