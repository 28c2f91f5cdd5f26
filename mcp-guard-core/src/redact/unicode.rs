//! Values spelt with characters beyond ASCII: invisible characters inside a value,
//! digits of other scripts, full-width forms.
//!
//! The detectors read ASCII. A string holding a character that [`fold`] changes is
//! also read as a *folded* copy: invisible characters (Unicode's default-ignorable code
//! points: zero-width spaces and joiners, bidirectional controls, variation selectors,
//! tag characters, the soft hyphen, Hangul fillers…) left out, decimal digits of every
//! script read as `0`-`9`, full-width and small forms of ASCII (`＠`, `４`, `－`) as their
//! ASCII byte, other spaces (no-break, ideographic…) as a space and hyphens and the
//! minus sign as `-`. A value found in the copy is mapped back to the characters it was
//! read from, and the whole of that original span is replaced, invisible characters
//! inside it included. Most strings are ASCII, or hold no such character, and cost one
//! test ([`folds`]).

use std::sync::LazyLock;

use aho_corasick::packed;
use wide::u8x16;

/// What a character stands for in the folded copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fold {
    /// Left out: an invisible character.
    Drop,
    /// Read as this ASCII byte.
    Ascii(u8),
}

/// Decimal digit zeros (General Category Nd) outside ASCII, as of Unicode 17: each
/// starts a run of ten digits, `0` to `9`. The test `digit_table_is_unicode_nd` holds
/// this table to the Unicode data of `icu_properties`.
const DIGIT_ZEROS: [u32; 76] = [
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66, 0x0DE6,
    0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50, 0x1BB0,
    0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10, 0x104A0, 0x10D30,
    0x10D40, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0, 0x116D0,
    0x116DA, 0x11730, 0x118E0, 0x11950, 0x11BF0, 0x11C50, 0x11D50, 0x11DA0, 0x11DE0, 0x11F50, 0x16130,
    0x16A60, 0x16AC0, 0x16B50, 0x16D70, 0x1CCF0, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140,
    0x1E2F0, 0x1E4F0, 0x1E5F1, 0x1E950, 0x1FBF0,
];

/// The value of `c` if it is a decimal digit outside ASCII.
fn decimal(c: u32) -> Option<u8> {
    let k = DIGIT_ZEROS.partition_point(|&z| z <= c).checked_sub(1)?;
    let d = c - DIGIT_ZEROS[k];
    (d < 10).then(|| b'0' + u8::try_from(d).unwrap_or(0))
}

/// Whether `c` is a default-ignorable code point (Unicode 17, `DerivedCoreProperties`):
/// invisible in text. Every invisible character the hostile-text checker of tool
/// definitions knows is among them (the test `folds_every_invisible_the_checker_knows`).
pub(crate) fn ignorable(c: u32) -> bool {
    matches!(
        c,
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// What `c` (not ASCII) stands for to the detectors, or `None` if it is read as itself.
pub(crate) fn fold(c: char) -> Option<Fold> {
    let u = u32::from(c);
    if u < 0x80 {
        return None;
    }
    if ignorable(u) {
        return Some(Fold::Drop);
    }
    let ascii = |b: u32| Some(Fold::Ascii(u8::try_from(b).unwrap_or(b'?')));
    match u {
        // Full-width ASCII: `！` to `～`.
        0xFF01..=0xFF5E => ascii(u - 0xFF01 + 0x21),
        0xFE6B => ascii(u32::from(b'@')),
        0xFE52 => ascii(u32::from(b'.')),
        0xFE59 => ascii(u32::from(b'(')),
        0xFE5A => ascii(u32::from(b')')),
        0xFE62 => ascii(u32::from(b'+')),
        0xFE63 | 0x2010..=0x2013 | 0x2212 => ascii(u32::from(b'-')),
        0x00A0 | 0x2000..=0x200A | 0x202F | 0x205F | 0x3000 => ascii(u32::from(b' ')),
        _ => decimal(u).map(Fold::Ascii),
    }
}

/// Lead bytes of the UTF-8 encodings of the characters [`fold`] changes (checked by the
/// test `lead_bytes_cover_every_fold`): a character with any other lead byte is read as
/// itself without being decoded.
static LEADS: [bool; 256] = {
    let mut t = [false; 256];
    let leads = [
        0xC2u8, 0xCD, 0xD8, 0xD9, 0xDB, 0xDF, 0xE0, 0xE1, 0xE2, 0xE3, 0xEA, 0xEF, 0xF0, 0xF3,
    ];
    let mut k = 0;
    while k < leads.len() {
        t[leads[k] as usize] = true;
        k += 1;
    }
    t
};

/// The character whose encoding starts at `i` (a lead byte) and its length, if `h`
/// holds a valid one there.
#[inline]
fn decode(h: &[u8], i: usize) -> Option<(char, usize)> {
    let n = match h[i] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None,
    };
    let c = std::str::from_utf8(h.get(i..i + n)?).ok()?.chars().next()?;
    Some((c, n))
}

/// Whether the character starting at `i` (a lead byte of [`LEADS`]) folds. The lead
/// bytes common in text (`E2`: punctuation such as `—` and `’`; `E3`: kana and CJK
/// punctuation; `F0`: emoji) are told apart by their next bytes without decoding.
#[inline]
fn folds_at(h: &[u8], i: usize) -> bool {
    let next = |k: usize| h.get(i + k).copied().unwrap_or(0);
    match h[i] {
        // U+2000-203F: spaces, zero-width characters, marks, hyphens and dashes up to
        // the en dash, bidirectional controls; U+2040-207F: U+205F-206F; U+2212.
        0xE2 => match next(1) {
            0x80 => matches!(next(2), 0x80..=0x93 | 0xAA..=0xAF),
            0x81 => matches!(next(2), 0x9F..=0xAF),
            0x88 => next(2) == 0x92,
            _ => false,
        },
        // U+3000 (ideographic space), U+3164 (Hangul filler).
        0xE3 => (next(1) == 0x80 && next(2) == 0x80) || (next(1) == 0x85 && next(2) == 0xA4),
        // U+1Fxxx holds emoji and, of what folds, only the segmented digits U+1FBF0-9.
        0xF0 if next(1) == 0x9F => next(2) == 0xAF && matches!(next(3), 0xB0..=0xB9),
        _ => decode(h, i).is_some_and(|(c, _)| fold(c).is_some()),
    }
}

/// Whether `h` holds a character that [`fold`] changes. An ASCII string (most) costs
/// the standard library's ASCII test. Otherwise, a string of [`SEARCHED`] bytes or more
/// goes to the vector searches of [`Searches`]; a shorter one is tested 16 bytes at a
/// time.
#[inline]
pub(crate) fn folds(h: &[u8]) -> bool {
    if h.is_ascii() {
        return false;
    }
    match SEARCHES.as_ref() {
        Some(s) if h.len() >= SEARCHED => s.folds(h),
        _ => folds_by_chunks(h),
    }
}

/// Strings at least this long are tested with [`Searches`] (shorter ones cost less in
/// the chunk loop than calls into the searchers).
const SEARCHED: usize = 64;

/// After this many places a search stopped at that hold no character that folds, the
/// string is tested by the chunk loop instead (text in a script whose letters share
/// their first bytes with digits that fold: Devanagari, Arabic, Vietnamese…).
const MISSES: usize = 32;

/// The lead bytes of the characters that fold which are common in text (Latin-1
/// symbols, general punctuation, CJK punctuation, full-width forms, emoji): searched
/// for with the byte after them.
const COMMON_LEADS: [u8; 5] = [0xC2, 0xE2, 0xE3, 0xEF, 0xF0];

/// The searches built once (`None` where the CPU has no vector support for them).
static SEARCHES: LazyLock<Option<Searches>> = LazyLock::new(Searches::new);

/// Two vector searches (`aho-corasick`'s Teddy, chosen at run time for the CPU) that
/// between them stop at every character that [`fold`] changes, and at few others.
/// (Teddy on the lead bytes alone stopped at every dash, quote, kana and emoji, and
/// was slower than the chunk loop; Teddy on the first two bytes of every such
/// character, 86 pairs, mixed too many of them in its 16 buckets and was slower still.)
#[derive(Debug)]
struct Searches {
    /// The first two bytes of each character that folds whose lead is one of
    /// [`COMMON_LEADS`]: it passes over `→` (`E2 86`), kana (`E3 81`-`E3 83`) and most
    /// symbols, and stops at `E2 80` (U+2000-U+203F: spaces, zero-width characters
    /// and hyphens, but also quotes and dashes), `E3 80` (CJK punctuation), `F0 9F`
    /// (emoji) and full-width forms.
    common: packed::Searcher,
    /// The other lead bytes (Arabic and N'Ko digits, Indic and South-East Asian
    /// digits, combining grapheme joiner, tags…), each alone: none starts a letter of
    /// Latin, Greek, Cyrillic, Hebrew, CJK or Hangul text.
    rare: packed::Searcher,
}

impl Searches {
    fn new() -> Option<Self> {
        let build = |patterns: Vec<Vec<u8>>| {
            let mut builder = packed::Config::new()
                .match_kind(packed::MatchKind::LeftmostFirst)
                .heuristic_pattern_limits(false)
                .builder();
            for p in patterns {
                builder.add(p);
            }
            builder.build().filter(|s| s.minimum_len() <= SEARCHED)
        };
        Some(Self {
            common: build(common_patterns())?,
            rare: build(RARE_LEADS.iter().map(|&b| vec![b]).collect())?,
        })
    }

    /// [`folds`] of `h` (not ASCII, [`SEARCHED`] bytes or more).
    fn folds(&self, h: &[u8]) -> bool {
        match stops(&self.common, h).or_else(|| stops(&self.rare, h)) {
            Some(Stop::Folds) => true,
            Some(Stop::Misses) => folds_by_chunks(h),
            None => false,
        }
    }
}

/// Why [`stops`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// At a character that folds.
    Folds,
    /// At [`MISSES`] places that hold none.
    Misses,
}

/// Runs `search` over `h` and tests each place it stops at with [`folds_at`]; `None`
/// when it finds no character that folds.
fn stops(search: &packed::Searcher, h: &[u8]) -> Option<Stop> {
    let mut at = 0;
    for _ in 0..MISSES {
        let m = search.find_in(h, aho_corasick::Span::from(at..h.len()))?;
        if folds_at(h, m.start()) {
            return Some(Stop::Folds);
        }
        at = m.start() + 1;
    }
    Some(Stop::Misses)
}

/// The lead bytes of the characters that fold other than [`COMMON_LEADS`], in the order
/// given to Teddy. Teddy (8 buckets, one byte) puts the pattern at index `i` in bucket
/// `7 - i % 8` and tests a byte against a bucket by its high and low nibble
/// separately: the first and the last share a bucket and a high nibble, so each bucket
/// fires on its own bytes only (a bucket of `CD` and `F3` would fire on `C3`, the lead of
/// every accented Latin letter). Only speed depends on the order.
const RARE_LEADS: [u8; 9] = [0xD9, 0xCD, 0xD8, 0xDF, 0xE0, 0xE1, 0xEA, 0xF3, 0xDB];

/// The bucket of Teddy's 8 that a two-byte pattern of the common search should go to:
/// one for `C2`/`E2`, one for `E3`, three for `EF` and three for `F0`, so that a bucket
/// tests one lead byte (or `C2` and `E2`, which Teddy cannot tell apart cheaply) and
/// few second bytes.
fn common_bucket(p: [u8; 2]) -> usize {
    match p {
        [0xC2 | 0xE2, _] => 0,
        [0xE3, _] => 1,
        [0xEF, 0x80..=0xB9] => 2,
        [0xEF, 0xBA..=0xBD] => 3,
        [0xEF, _] => 4,
        [_, 0x80..=0x96] => 5,
        [_, 0x97..=0x9D] => 6,
        _ => 7,
    }
}

/// The two-byte patterns of the common search, ordered so that each lands in its
/// [`common_bucket`]. Teddy (`aho-corasick` 1.1, 8 buckets for up to 32 patterns) puts
/// the first pattern with a new pair of low nibbles at index `i` in bucket `7 - i % 8`,
/// and each later one with the same low nibbles in that same bucket; where no pattern
/// fits an index, a copy of one already placed fills it. Only speed depends on it.
fn common_patterns() -> Vec<Vec<u8>> {
    let encodings = fold_encodings();
    let mut pending: Vec<[u8; 2]> = prefixes(&encodings)
        .into_iter()
        .filter(|p| COMMON_LEADS.contains(&p[0]))
        .collect();
    let nibbles = |p: [u8; 2]| [p[0] & 15, p[1] & 15];
    let mut placed: Vec<([u8; 2], usize)> = Vec::new();
    let mut out: Vec<Vec<u8>> = Vec::new();
    while !pending.is_empty() {
        let bucket = 7 - out.len() % 8;
        let bucket_of = |p: [u8; 2]| {
            placed
                .iter()
                .find(|(q, _)| nibbles(*q) == nibbles(p))
                .map(|(_, b)| *b)
        };
        let pick = pending
            .iter()
            .position(|&p| bucket_of(p).is_none() && common_bucket(p) == bucket)
            .or_else(|| pending.iter().position(|&p| bucket_of(p).is_some()));
        let p = match pick {
            Some(k) => pending.remove(k),
            // A filler: a full-width pair placed already (its bucket tests `EF` alone).
            None => placed
                .iter()
                .find(|(q, _)| q[0] == 0xEF)
                .map_or(placed[0].0, |(q, _)| *q),
        };
        if bucket_of(p).is_none() {
            placed.push((p, bucket));
        }
        out.push(common_pattern(&encodings, p));
    }
    out
}

/// The pattern of the common search for the characters that fold whose first two
/// bytes are `p`: their first three bytes where they all share them, else `p`. So the
/// search passes over the CJK punctuation after U+3000 (`E3 80 80`, the ideographic
/// space) and the emoji before U+1FBF0 (`F0 9F AF`, segmented digits) without stopping.
fn common_pattern(encodings: &[Vec<u8>], p: [u8; 2]) -> Vec<u8> {
    let mut thirds = encodings
        .iter()
        .filter(|e| e.len() > 2 && e[..2] == p)
        .map(|e| e[2]);
    match thirds.next() {
        Some(t) if thirds.all(|u| u == t) => vec![p[0], p[1], t],
        _ => p.to_vec(),
    }
}

/// The UTF-8 encodings of every character [`fold`] changes (each takes two bytes or
/// more).
fn fold_encodings() -> Vec<Vec<u8>> {
    let mut buf = [0u8; 4];
    (0x80..=0x10_FFFF)
        .filter_map(char::from_u32)
        // Planes 2 to 13 hold nothing that folds (checked by the tests): skipped.
        .filter(|&c| !(0x2_0000..0xE_0000).contains(&u32::from(c)))
        .filter(|&c| fold(c).is_some())
        .map(|c| c.encode_utf8(&mut buf).as_bytes().to_vec())
        .collect()
}

/// The first two bytes of `encodings`, sorted and without repeats.
fn prefixes(encodings: &[Vec<u8>]) -> Vec<[u8; 2]> {
    let mut out: Vec<[u8; 2]> = encodings.iter().map(|e| [e[0], e[1]]).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// [`folds`] 16 bytes at a time: an ASCII chunk in one vector test, otherwise only the
/// lead bytes of [`LEADS`] decoded.
pub(crate) fn folds_by_chunks(h: &[u8]) -> bool {
    let (chunks, tail) = h.as_chunks::<16>();
    for (k, chunk) in chunks.iter().enumerate() {
        let v = u8x16::new(*chunk);
        let high = v.to_bitmask();
        if high == 0 {
            continue;
        }
        // Bytes with their top two bits set: the lead bytes.
        let mut leads = high & (v + v).to_bitmask();
        while leads != 0 {
            let j = leads.trailing_zeros() as usize;
            leads &= leads - 1;
            if LEADS[usize::from(chunk[j])] && folds_at(h, 16 * k + j) {
                return true;
            }
        }
    }
    let base = h.len() - tail.len();
    tail.iter()
        .enumerate()
        .any(|(j, &b)| LEADS[usize::from(b)] && folds_at(h, base + j))
}

/// A folded copy of a string, with where in the original each byte comes from.
#[derive(Debug)]
pub(crate) struct Folded<'a> {
    /// The original.
    h: &'a [u8],
    /// The copy: ASCII where [`fold`] says so, every other byte as it was.
    pub(crate) text: Vec<u8>,
    /// For each byte of `text`, where the character it was read from starts in `h`
    /// (four bytes per byte: strings are far shorter than 4 GiB).
    from: Vec<u32>,
}

impl<'a> Folded<'a> {
    /// The folded copy of `h` (which need not be valid UTF-8: other bytes are copied).
    pub(crate) fn new(h: &'a [u8]) -> Self {
        let mut text = Vec::with_capacity(h.len());
        let mut from = Vec::with_capacity(h.len());
        let at = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
        let mut i = 0;
        while i < h.len() {
            let b = h[i];
            if b >= 0xC0
                && let Some((c, n)) = decode(h, i)
            {
                match fold(c) {
                    Some(Fold::Drop) => {}
                    Some(Fold::Ascii(a)) => {
                        text.push(a);
                        from.push(at(i));
                    }
                    None => {
                        text.extend_from_slice(&h[i..i + n]);
                        from.extend((i..i + n).map(at));
                    }
                }
                i += n;
                continue;
            }
            text.push(b);
            from.push(at(i));
            i += 1;
        }
        Self { h, text, from }
    }

    /// The original span of `text[start..end]` (`start < end`): from the start of the
    /// character of its first byte to the end of the character of its last, so every
    /// character left out in between is inside it.
    pub(crate) fn original(&self, start: usize, end: usize) -> (usize, usize) {
        let first = self.from[start] as usize;
        let last = self.from[end - 1] as usize;
        // A byte read as ASCII from a longer character ends where that character does;
        // any other byte is copied one for one.
        let len = if self.text[end - 1] < 0x80 && self.h[last] >= 0xC0 {
            decode(self.h, last).map_or(1, |(_, n)| n)
        } else {
            1
        };
        (first, last + len)
    }
}

/// `h` folded, for a replacement's rendering (the digits of a partial form, the
/// canonical value of a pseudonym).
pub(crate) fn fold_bytes(h: &[u8]) -> Vec<u8> {
    Folded::new(h).text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character that folds has a lead byte in [`LEADS`], and [`folds`] finds it
    /// at every offset of a chunk.
    #[test]
    fn lead_bytes_cover_every_fold() {
        let mut buf = [0u8; 4];
        for c in (0x80..=0x10_FFFF).filter_map(char::from_u32) {
            if fold(c).is_some() {
                let e = c.encode_utf8(&mut buf);
                assert!(LEADS[usize::from(e.as_bytes()[0])], "U+{:04X}", u32::from(c));
            }
        }
        // The shortcuts of `folds_at` agree with `fold` on every character.
        for c in (0x80..=0x10_FFFF).filter_map(char::from_u32) {
            let e = c.encode_utf8(&mut buf);
            assert_eq!(folds(e.as_bytes()), fold(c).is_some(), "U+{:04X}", u32::from(c));
            let long = format!("{}{c}", "\u{E9}".repeat(40));
            assert_eq!(
                folds(long.as_bytes()),
                fold(c).is_some(),
                "U+{:04X}",
                u32::from(c)
            );
        }
        for c in ['\u{200B}', '\u{FF20}', '\u{E0041}', '\u{0663}', '\u{A0}'] {
            for pad in 0..80 {
                let s = format!("{}{c}{}", "a".repeat(pad), "é".repeat(3));
                assert!(folds(s.as_bytes()), "{c:?} after {pad}");
                assert!(folds_by_chunks(s.as_bytes()), "{c:?} after {pad}");
            }
        }
        for s in [
            "",
            "plain ascii text of some length, well past sixteen bytes",
            "résumé 東京 データ — → 🙂 привет",
        ] {
            assert!(!folds(s.as_bytes()), "{s}");
        }
    }

    /// The vector searches stop at every character that folds, after any number of
    /// places that hold none (past [`MISSES`] the chunk loop takes over), and agree
    /// with the chunk loop on text of many scripts.
    #[test]
    fn searches_find_what_the_chunk_loop_finds() {
        assert!(common_patterns().len() <= 32, "more than Teddy's slim form holds");
        for p in prefixes(&fold_encodings()) {
            assert!(
                COMMON_LEADS.contains(&p[0]) != RARE_LEADS.contains(&p[0]),
                "{p:02X?}"
            );
        }
        let Some(searches) = Searches::new() else {
            return;
        };
        let fillers = [
            "é",
            "—",
            "’",
            "データ",
            "🙂",
            "привет",
            "東京",
            "¡",
            "क",
            "ạ",
            "한",
            "ا",
            "、",
        ];
        let folding = [
            '\u{200B}',
            '\u{FF14}',
            '\u{0663}',
            '\u{A0}',
            '\u{E0041}',
            '\u{0967}',
            '\u{2013}',
            '\u{3000}',
        ];
        for filler in fillers {
            for reps in [0, 1, 7, 8, 9, 40] {
                let base = format!("{}{}", "x".repeat(64), filler.repeat(reps));
                assert!(!searches.folds(base.as_bytes()), "{filler} x{reps}");
                assert!(!folds_by_chunks(base.as_bytes()), "{filler} x{reps}");
                for c in folding {
                    let s = format!("{base}{c}{filler}");
                    assert!(searches.folds(s.as_bytes()), "{filler} x{reps} then {c:?}");
                    let s = format!("{c}{base}");
                    assert!(searches.folds(s.as_bytes()), "{c:?} then {filler} x{reps}");
                }
            }
        }
    }

    #[test]
    fn folded_spans_cover_what_was_left_out() {
        let s = "a\u{200B}4\u{FF11}\u{200D}x";
        let f = Folded::new(s.as_bytes());
        assert_eq!(f.text, b"a41x");
        // "41" is the '4' through the full-width one: the zero-width joiner after it
        // is outside, the zero-width space before it too.
        assert_eq!(f.original(1, 3), (4, 8));
        assert_eq!(&s[4..8], "4\u{FF11}");
        assert_eq!(f.original(0, 4), (0, s.len()));
        assert_eq!(decimal(0x0669), Some(b'9'));
        assert_eq!(decimal(0x0670), None);
        assert_eq!(fold('\u{FF20}'), Some(Fold::Ascii(b'@')));
    }
}

/// The hand-written tables against the Unicode data of `icu_properties`.
#[cfg(test)]
mod unicode_data {
    use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory};
    use icu_properties::{CodePointMapData, CodePointSetData};

    use super::*;

    /// Every decimal digit (Nd) outside ASCII, and nothing else, is read as a digit;
    /// each contiguous range of them is runs of ten from a zero of the table, so each
    /// digit is read as its value.
    #[test]
    fn digit_table_is_unicode_nd() {
        let gc = CodePointMapData::<GeneralCategory>::new();
        let mut zeros = Vec::new();
        for range in gc.iter_ranges_for_value(GeneralCategory::DecimalNumber) {
            let (a, b) = (*range.start(), *range.end());
            if a < 0x80 {
                continue;
            }
            assert_eq!((b - a + 1) % 10, 0, "U+{a:04X}..U+{b:04X}");
            zeros.extend((a..=b).step_by(10));
        }
        let hex: Vec<String> = zeros.iter().map(|z| format!("0x{z:X}")).collect();
        assert_eq!(zeros, DIGIT_ZEROS, "{}", hex.join(", "));
        for c in (0x80..=0x10_FFFF).filter_map(char::from_u32) {
            let nd = gc.get(c) == GeneralCategory::DecimalNumber;
            assert_eq!(nd, decimal(u32::from(c)).is_some(), "U+{:04X}", u32::from(c));
        }
    }

    /// The invisible characters are exactly the default-ignorable code points.
    #[test]
    fn ignorable_table_is_unicode() {
        let di = CodePointSetData::new::<DefaultIgnorableCodePoint>();
        for c in (0x80..=0x10_FFFF).filter_map(char::from_u32) {
            assert_eq!(ignorable(u32::from(c)), di.contains(c), "U+{:04X}", u32::from(c));
        }
    }

    /// Every character the hostile-text checker of tool definitions calls invisible
    /// folds away.
    #[test]
    fn folds_every_invisible_the_checker_knows() {
        for c in (0x80..=0x10_FFFF).filter_map(char::from_u32) {
            if crate::pin::strip_invisible(&c.to_string()).is_empty() {
                assert_eq!(fold(c), Some(Fold::Drop), "U+{:04X}", u32::from(c));
            }
        }
    }
}
