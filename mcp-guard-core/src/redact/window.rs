//! Byte-class bit masks over a sliding window, and the scan events read from them.
//!
//! The scanner moves through a string 48 bytes at a time. It classifies 16 bytes at a
//! time with one vector compare per class (SSE2 on `x86_64`, NEON on `aarch64`, through
//! `wide`; plain code elsewhere) and keeps one bit per byte and class in a 64-bit
//! register. Digit-run starts, run ends and the bytes around a run are then shifts and
//! ANDs, so the numbers of a table that cannot start any numeric finding (`12, 3.5,
//! 2024/01/02, 17150000000`) are turned down 48 at a time, without being visited.

use wide::u8x16;

/// Bytes classified at a time.
const CHUNK: usize = 16;

/// Bytes decided per step.
pub(crate) const STEP: usize = 3 * CHUNK;

/// Bytes of a window after the start of its step: the step and the 15 bytes after it.
pub(crate) const REACH: usize = 64 - 1;

/// Class masks of a window of 64 bytes, `[base - 1, base + REACH)`: bit `j` stands for
/// byte `base - 1 + j`. Bytes outside the string read as zero, which is in no class.
/// The step being decided is `[base, base + STEP)`, bits 1 to 48; the byte before it is
/// there for the tests that read the byte just before a run, the 15 bytes after it for
/// the shapes that reach past the end of the step (up to 15 bytes, for the last group
/// of a card). A shape that would read two bytes back from the first byte of the step
/// reads a zero there: those reads only ever turn a run down, so the first byte is let
/// through to the detectors, which decide it on the bytes themselves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) base: usize,
    c: Classes,
}

/// One bit per byte for each class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    /// `/`, a separator of phone groups (`555/123-4567`).
    slash: u64,
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
            slash: f(self.slash, o.slash),
            other: f(self.other, o.other),
        }
    }
}

/// The classes of the 16 bytes of `h` at `at`, in bits `0..16`; bytes past the end of
/// `h` are in no class.
#[allow(
    clippy::inline_always,
    reason = "called three times a step of the dense loop; out of line (as the class of `/` made it) a number table costs 20% more instructions"
)]
#[inline(always)]
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
#[allow(
    clippy::inline_always,
    reason = "called three times a step of the dense loop; out of line (as the class of `/` made it) a number table costs 20% more instructions"
)]
#[inline(always)]
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
        slash: mask(eq(b'/')),
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
        let c = match base.checked_sub(1) {
            Some(from) => Self::load(h, from),
            // Nothing before the string: bit 0 is in no class.
            None => Self::load(h, 0).zip(Classes::default(), |c, _| c << 1),
        };
        Self { base, c }
    }

    /// The classes of the 64 bytes from `from`, bit `j` for byte `from + j`.
    #[inline]
    fn load(h: &[u8], from: usize) -> Classes {
        let place = |k: usize| move |acc: u64, c: u64| acc | (c << (CHUNK * k));
        let (c0, c1, c2, c3) = match h.get(from..from + 4 * CHUNK).map(<[u8]>::as_chunks::<CHUNK>) {
            Some(([c0, c1, c2, c3], _)) => (
                classify_chunk(*c0),
                classify_chunk(*c1),
                classify_chunk(*c2),
                classify_chunk(*c3),
            ),
            _ => (
                classify(h, from),
                classify(h, from + CHUNK),
                classify(h, from + 2 * CHUNK),
                classify(h, from + 3 * CHUNK),
            ),
        };
        c0.zip(c1, place(1)).zip(c2, place(2)).zip(c3, place(3))
    }

    /// Moves the window one step on.
    #[inline]
    pub(crate) fn advance(&mut self, h: &[u8]) {
        self.base += STEP;
        // The last 16 bytes of the old window are the first 16 of the new one.
        let from = self.base - 1;
        let c = self
            .c
            .zip(classify(h, from + CHUNK), |r, c| (r >> STEP) | (c << CHUNK));
        let c = c.zip(classify(h, from + 2 * CHUNK), |r, c| r | (c << (2 * CHUNK)));
        self.c = c.zip(classify(h, from + 3 * CHUNK), |r, c| r | (c << (3 * CHUNK)));
    }

    /// Whether `[base, base + REACH)` holds no trigger byte at all.
    #[inline]
    pub(crate) fn quiet(&self) -> bool {
        (self.c.digit | self.c.other) >> 1 == 0
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
    /// - a phone number: three digits, a space, `-`, `.` or `/`, three digits, one of
    ///   those again and four digits (also right after a digit and `-` or `.`: a `1-`
    ///   or `001-` prefix); one digit, one of those separators, then three digits or
    ///   `(`; or any run after `(`, `)` or `+`;
    /// - a run of exactly 10, 11, 12 or 15 digits, which a word nearby can make a phone
    ///   number (10, 11) or a card (12, or 15 from a `1`);
    /// - an IPv4 address: two groups of one to three digits, each followed by `.`;
    ///
    /// and none but the last and the first phone shape where a digit and `-` come just
    /// before, none but that phone shape where a digit and `.` do.
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
            let sep_dot = sep | dot | c.slash;
            let d2 = d & (d >> 1);
            let d4 = d2 & (d2 >> 2);
            let d8 = d4 & (d4 >> 4);
            // Groups of exactly 2, 3, 4 and 6 digits ending at `j + 1`, `j + 2`…
            let g2 = d2 & (end >> 1);
            let g3 = d2 & (g2 >> 1);
            let g4 = d2 & (g2 >> 2);
            let g6 = d4 & (g2 >> 4);
            // … and followed by a separator (and, for a group of three, `.`): a group
            // read once is tested further on by shifting the whole of it.
            let four = g4 & (sep >> 4);
            let six = g6 & (sep >> 6);
            let three = g3 & (sep_dot >> 3);
            // Cards in groups: 4-4-4-4…, or 4-6-5. `card` turns down a spaced first
            // group right after a number and a space at once.
            let listed = (space >> 4) & (space << 1) & (d << 2);
            let fours = four & (four >> 5);
            let card = c.lead
                & (four & !listed & (((fours & (d >> 10)) | (six & (d4 >> 7))) >> 5)
                    | d8 & (d8 >> 4) & (d >> 12));
            let ssn = g3 & (sep >> 3) & (g2 >> 4);
            let phone_groups = three & (three >> 4) & (g4 >> 8);
            let phone = end & (sep_dot >> 1) & ((g3 | c.punct) >> 2) | (c.punct << 1);
            // Runs of exactly 10, 11, 12 and 15 digits.
            let d10 = d8 & (d2 >> 8);
            let d12 = d8 & (d4 >> 8);
            let lengths = d10 & (end >> 9)
                | d10 & (d >> 10) & (end >> 10)
                | d12 & (end >> 11)
                | d12 & (d2 >> 12) & (d >> 14) & (end >> 14);
            // A group of one to three digits at `j` followed by `.`, `group`; and such a
            // group followed by another, `ip` (the last digit of the first group at `j`,
            // `j + 1` or `j + 2`).
            let dotted = end & (dot >> 1);
            let group = d & (dotted | (dotted >> 1) | ((d >> 1) & (dotted >> 2)));
            let next = dotted & (group >> 2);
            let ip = next | (d & (next >> 1)) | (d2 & (next >> 2));
            // A run right after a digit and `.` starts nothing (every detector turns
            // down a value joined to a number before it by `.`); right after a digit
            // and `-`, nothing but an address (`10.0.0.1-10.0.0.9`).
            let joined = d << 2;
            start
                & (!(joined & (dot << 1)) & ((card | ssn | phone | lengths) & !(joined & (c.dash << 1)) | ip)
                    | phone_groups)
        };
        // A dash after a digit (dates, ranges, number lists) starts no credential unless
        // another dash follows (`-----BEGIN`).
        let numeric_dash = c.dash & (c.digit << 1) & !(c.dash >> 1);
        ((runs | (c.other & !numeric_dash)) >> 1) & ((1 << STEP) - 1)
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

    /// A window moved on step by step holds what a window built where it stands holds
    /// (the byte before the step included), from every start, up to and past the end of
    /// the text; and bit `j` is the class of byte `base - 1 + j`.
    #[test]
    fn moved_windows_match_fresh_ones() {
        let mut text = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push(b"0123456789 -.()+@:_AJx,"[usize::try_from(x % 23).unwrap_or(0)]);
        }
        for len in [0, 1, 15, 16, 17, 47, 48, 49, 63, 64, 65, 130, 400] {
            let h = &text[..len];
            for start in 0..3 {
                let mut w = Window::at(h, start);
                while w.base < len + 2 * STEP {
                    let fresh = Window::at(h, w.base);
                    assert_eq!(w.c, fresh.c, "len {len}, from {start}, at {}", w.base);
                    for j in 0..64 {
                        let byte = (w.base + j).checked_sub(1).and_then(|k| h.get(k));
                        let digit = byte.is_some_and(u8::is_ascii_digit);
                        assert_eq!(
                            w.c.digit >> j & 1 == 1,
                            digit,
                            "len {len}, at {}, bit {j}",
                            w.base
                        );
                    }
                    w.advance(h);
                }
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
