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
//! inside it included. Most strings are ASCII, or hold no such character: the test for
//! them ([`folds`], or [`past`] after the scanner's survey) is built to cost little
//! beside the survey.

use std::sync::LazyLock;

use aho_corasick::packed;
use wide::u8x16;

use super::teddy;

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
pub(crate) fn folds_at(h: &[u8], i: usize) -> bool {
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

/// Whether `h` is ASCII: 64 bytes a step (four vector ORs and one test), the rest 16
/// bytes at a time, ending on the last 16 bytes of `h`; a string shorter than that in
/// two overlapping words. (The standard library's test reads the last bytes of a string
/// one at a time; on the short strings of a document that was most of its cost.)
#[inline]
pub(crate) fn is_ascii(h: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = h.len();
    if n < 16 {
        let word = |at: usize, len: usize| {
            h[at..at + len]
                .iter()
                .rev()
                .fold(0u64, |w, &b| w << 8 | u64::from(b))
        };
        return match n {
            8.. => (word(0, 8) | word(n - 8, 8)) & HIGH == 0,
            4.. => (word(0, 4) | word(n - 4, 4)) & HIGH == 0,
            _ => h.iter().all(u8::is_ascii),
        };
    }
    let (blocks, rest) = h.as_chunks::<64>();
    for block in blocks {
        let (c, _) = block.as_chunks::<16>();
        let any = c.iter().fold(u8x16::splat(0), |acc, c| acc | u8x16::new(*c));
        if any.to_bitmask() != 0 {
            return false;
        }
    }
    let (chunks, _) = rest.as_chunks::<16>();
    let mut any = chunks.iter().fold(u8x16::splat(0), |acc, c| acc | u8x16::new(*c));
    if let Some(last) = h.last_chunk::<16>() {
        any |= u8x16::new(*last);
    }
    any.to_bitmask() == 0
}

/// Whether `h` holds a character that [`fold`] changes. An ASCII string (most) costs
/// [`is_ascii`]. Otherwise, a string of [`SEARCHED`] bytes or more goes to the vector
/// searches of [`Searches`]; a shorter one is tested 16 bytes at a time.
#[inline]
pub(crate) fn folds(h: &[u8]) -> bool {
    !is_ascii(h) && matches!(past(h, 0), Past::Folds)
}

/// What [`past`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Past {
    /// A character that folds.
    Folds,
    /// None; and `rer ` (the end of `earer `) first at `rer`, or nowhere if `None`.
    Clean { rer: Option<usize> },
}

/// Whether `h` (which need not be ASCII) holds a character that folds, when none with a
/// lead byte of [`BYTE_LEADS`] starts before `from` (the scanner's survey looks for
/// those with the trigger bytes, and leaves the rest to this); and, as the search for
/// the common ones passes over the whole string anyway, where `h` first holds `rer `.
#[inline]
pub(crate) fn past(h: &[u8], from: usize) -> Past {
    match SEARCHES.as_ref() {
        Some(s) if h.len() >= SEARCHED => s.past(h, from),
        _ if folds_by_chunks(h) => Past::Folds,
        _ => Past::Clean { rer: Some(0) },
    }
}

/// Strings at least this long are tested with [`Searches`] (shorter ones cost less in
/// the chunk loop than calls into the searchers).
const SEARCHED: usize = 64;

/// After this many places a search stopped at that hold no character that folds, the
/// string is tested by the chunk loop instead (text in a script whose letters share
/// their first bytes with digits that fold: Devanagari, Arabic, Vietnamese…).
pub(crate) const MISSES: usize = 32;

/// The lead bytes of the characters that fold which are rare in text (Latin-1 symbols,
/// Arabic, N'Ko and Indic digits, full-width forms, tags…): searched for one byte at a
/// time, here and, with the trigger bytes, in the scanner's survey. Text in these
/// scripts makes the search stop at every letter, and goes to the chunk loop after
/// [`MISSES`] such stops.
pub(crate) const BYTE_LEADS: [u8; 11] = [0xC2, 0xCD, 0xD8, 0xD9, 0xDB, 0xDF, 0xE0, 0xE1, 0xEA, 0xEF, 0xF3];

/// The lead bytes of the characters that fold which are common in text (`E2`: general
/// punctuation; `E3`: CJK punctuation and kana; `F0`: emoji): searched for with the two
/// bytes after them.
const PREFIX_LEADS: [u8; 3] = [0xE2, 0xE3, 0xF0];

/// The bucket of Teddy's 8 for a byte of [`BYTE_LEADS`] (in the lead search): a bucket
/// to each, or to two that differ only in their low nibble (`D8 D9`, `E0 E1`), or
/// only in their high one (`DF EF`), so that no bucket fires on another byte.
fn lead_bucket(b: u8) -> usize {
    match b {
        0xC2 => 0,
        0xCD => 1,
        0xD8 | 0xD9 => 2,
        0xDB => 3,
        0xDF | 0xEF => 4,
        0xE0 | 0xE1 => 5,
        0xEA => 6,
        _ => 7,
    }
}

/// The bucket of Teddy's 8 for the first three bytes `p` of a character that folds
/// whose lead is one of [`PREFIX_LEADS`] (in the prefix search). Chosen so that no
/// bucket fires on the characters common in text that share their first bytes with
/// them: the dashes, quotes, bullets and ellipsis of `E2 80 94`-`E2 80 A9`, CJK
/// punctuation (`E3 80 81`…), kana, emoji. Teddy reads nibbles, so the spaces and
/// hyphens `E2 80 80`-`83` and `90`-`93` can share a bucket (low nibble 0-3, high
/// 8 or 9) but `84`-`89` cannot join them (that bucket would fire on `E2 80 94`, the
/// em dash).
fn prefix_bucket(p: [u8; 3]) -> usize {
    match p {
        [0xE2, 0x80, t] if t & 15 <= 3 => 0,
        [0xE2, 0x88, _] => 0,
        [0xE2, 0x80, 0x84..=0x89] => 1,
        [0xE2, 0x80, t] if t & 15 >= 0xA => 2,
        [0xE2, 0x81, t] if (0xA..=0xE).contains(&(t & 15)) => 2,
        [0xE2, 0x81, _] => 3,
        [0xE3, ..] => 4,
        [0xF0, 0x9F, _] => 5,
        [0xF0, 0x90 | 0x91, _] => 6,
        _ => 7,
    }
}

/// The end of `earer ` (of `Bearer `), searched for with the characters that fold so
/// that the scanner's survey of a string that is not ASCII knows where an `earer ` can
/// be without a search of its own. Its bucket also fires on `rar`, `raz` and `rez`
/// (and on characters no text has: `r` then a continuation byte), which are rare.
const REER: &[u8] = b"rer ";

/// The bucket of [`REER`] (see [`prefix_bucket`]): the one whose third byte takes
/// low nibbles `A`-`F`, of which `r` adds only `2`.
const REER_BUCKET: usize = 2;

/// The bucket of the prefix search that takes the copies Teddy's placement needs (see
/// [`teddy::ordered`]): that of `F0 9F AF` alone, which fires on little else.
const PREFIX_FILLER: usize = 5;

/// The searches built once (`None` where the CPU has no vector support for them).
static SEARCHES: LazyLock<Option<Searches>> = LazyLock::new(Searches::new);

/// Two vector searches (`aho-corasick`'s Teddy, see [`teddy`]) that between them stop
/// at every character that [`fold`] changes, and at few others. (Teddy on every lead
/// byte alone stopped at every dash, quote, kana and emoji; on the first two bytes, at
/// every em dash and emoji, and at many more places where the nibbles of unrelated
/// pairs crossed in its buckets.)
#[derive(Debug)]
struct Searches {
    /// The bytes of [`BYTE_LEADS`], each alone.
    leads: packed::Searcher,
    /// The first three bytes of each character that folds whose lead is one of
    /// [`PREFIX_LEADS`], and `rer ` (see [`REER`]); see [`prefix_bucket`].
    prefixes: packed::Searcher,
}

impl Searches {
    fn new() -> Option<Self> {
        let leads: Vec<[u8; 1]> = BYTE_LEADS.iter().map(|&b| [b]).collect();
        let leads: Vec<(&[u8], usize)> = leads.iter().map(|p| (&p[..], lead_bucket(p[0]))).collect();
        let prefixes = prefix_patterns();
        let mut prefixes: Vec<(&[u8], usize)> =
            prefixes.iter().map(|p| (&p[..], prefix_bucket(*p))).collect();
        prefixes.push((REER, REER_BUCKET));
        let build = |chosen: &[(&[u8], usize)], mask_len, filler| {
            teddy::ordered(chosen, mask_len, filler)
                .and_then(|patterns| teddy::searcher(&patterns))
                .filter(|s| s.minimum_len() <= SEARCHED)
        };
        Some(Self {
            leads: build(&leads, 1, 0)?,
            prefixes: build(&prefixes, 3, PREFIX_FILLER)?,
        })
    }

    /// [`past`] of `h` ([`SEARCHED`] bytes or more). Past [`MISSES`] places that hold
    /// nothing that folds (nor `rer `), the chunk loop decides, and `rer ` may be
    /// anywhere.
    fn past(&self, h: &[u8], from: usize) -> Past {
        let unsure = || {
            if folds_by_chunks(h) {
                Past::Folds
            } else {
                Past::Clean { rer: Some(0) }
            }
        };
        if h.len() - from.min(h.len()) < SEARCHED {
            // A few bytes (after the survey's first trigger): the chunk loop, cheaper
            // than a call into the searcher that so short a haystack sends to its
            // slow path. (It tests every lead byte, which does no harm.)
            if folds_by_chunks(h.get(from..).unwrap_or_default()) {
                return Past::Folds;
            }
        } else {
            match stops(&self.leads, h, from) {
                Some(Stop::Folds) => return Past::Folds,
                Some(Stop::Misses) => return unsure(),
                None => {}
            }
        }
        let n = h.len();
        let mut rer = None;
        let mut at = 0;
        let mut misses = 0;
        loop {
            // Teddy over whole steps of 32 bytes (of its third bytes) from `at`. Where the
            // last step would run past the end, Teddy steps back to the end and reads
            // that step again, its first places by their third byte alone, and with
            // patterns of up to 21 in a bucket that costs more than testing the last
            // bytes (under 32, and the three before them) here.
            let steps = n.saturating_sub(at + 2) / 32;
            let end = at + 2 + 32 * steps;
            let stop = if steps > 0 && end - at >= self.prefixes.minimum_len() {
                self.prefixes
                    .find_in(&h[..end], aho_corasick::Span::from(at..end))
                    .map(|m| m.start())
                    .or_else(|| tail(h, end - 3))
            } else {
                tail(h, at)
            };
            let Some(p) = stop else {
                return Past::Clean { rer };
            };
            if h[p] == b'r' {
                rer.get_or_insert(p);
            } else if folds_at(h, p) {
                return Past::Folds;
            } else {
                misses += 1;
                if misses == MISSES {
                    return unsure();
                }
            }
            at = p + 1;
        }
    }
}

/// Where the prefix search would stop first in `h` from `from` (a few dozen bytes
/// before the end of `h`, which holds at least 16): the first lead byte of
/// [`PREFIX_LEADS`] or [`REER`]. 16 bytes at a time, the last on the last 16 bytes of
/// `h`.
fn tail(h: &[u8], from: usize) -> Option<usize> {
    let n = h.len();
    let candidates = |at: usize| {
        let c = h
            .get(at..at + 16)
            .and_then(|c| <[u8; 16]>::try_from(c).ok())
            .unwrap_or([0; 16]);
        let v = u8x16::new(c);
        let eq = |x: u8| v.simd_eq(u8x16::splat(x));
        (eq(0xE2) | eq(0xE3) | eq(0xF0) | eq(b'r')).to_bitmask()
    };
    let mut at = from;
    while at < n {
        let base = at.min(n.saturating_sub(16));
        let mut bits = candidates(base) >> (at - base);
        while bits != 0 {
            let i = at + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if h[i] != b'r' || h[i..].starts_with(REER) {
                return Some(i);
            }
        }
        at = base + 16;
    }
    None
}

/// Why [`stops`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// At a character that folds.
    Folds,
    /// At [`MISSES`] places that hold none.
    Misses,
}

/// Runs `search` over `h` from `at` and tests each place it stops at with
/// [`folds_at`]; `None` when it finds no character that folds.
fn stops(search: &packed::Searcher, h: &[u8], mut at: usize) -> Option<Stop> {
    for _ in 0..MISSES {
        let m = search.find_in(h, aho_corasick::Span::from(at.min(h.len())..h.len()))?;
        if folds_at(h, m.start()) {
            return Some(Stop::Folds);
        }
        at = m.start() + 1;
    }
    Some(Stop::Misses)
}

/// The first three bytes of every character that [`fold`] changes whose lead is one of
/// [`PREFIX_LEADS`], sorted and without repeats.
fn prefix_patterns() -> Vec<[u8; 3]> {
    let mut out: Vec<[u8; 3]> = fold_encodings()
        .iter()
        .filter(|e| PREFIX_LEADS.contains(&e[0]))
        .filter_map(|e| e.first_chunk::<3>().copied())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
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
        for e in fold_encodings() {
            assert!(
                PREFIX_LEADS.contains(&e[0]) != BYTE_LEADS.contains(&e[0]),
                "{e:02X?}"
            );
        }
        let Some(searches) = Searches::new() else {
            return;
        };
        let folds = |h: &[u8]| searches.past(h, 0) == Past::Folds;
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
            '\u{1FBF5}',
            '\u{1D7D9}',
            '\u{2060}',
            '\u{202F}',
        ];
        for filler in fillers {
            for reps in [0, 1, 7, 8, 9, 40] {
                let base = format!("{}{}", "x".repeat(64), filler.repeat(reps));
                assert!(!folds(base.as_bytes()), "{filler} x{reps}");
                assert!(!folds_by_chunks(base.as_bytes()), "{filler} x{reps}");
                for c in folding {
                    let s = format!("{base}{c}{filler}");
                    assert!(folds(s.as_bytes()), "{filler} x{reps} then {c:?}");
                    let s = format!("{c}{base}");
                    assert!(folds(s.as_bytes()), "{c:?} then {filler} x{reps}");
                }
            }
        }
    }

    /// The prefix search in whole steps and the test of the last bytes between them
    /// find a character that folds, and the first `rer `, wherever they are.
    #[test]
    fn searches_find_at_every_place() {
        let Some(searches) = Searches::new() else {
            return;
        };
        for len in [
            64, 65, 80, 95, 96, 97, 98, 99, 100, 127, 128, 129, 130, 131, 160, 161, 200,
        ] {
            let filler: Vec<u8> = "é—x".bytes().cycle().take(len).collect();
            for c in [
                '\u{200B}',
                '\u{2013}',
                '\u{3000}',
                '\u{1FBF5}',
                '\u{FF11}',
                '\u{0663}',
            ] {
                let mut buf = [0u8; 4];
                let c = c.encode_utf8(&mut buf).as_bytes();
                for at in 0..=len {
                    let mut h = filler[..at].to_vec();
                    h.extend_from_slice(c);
                    h.extend_from_slice(&filler[at..]);
                    assert_eq!(searches.past(&h, 0), Past::Folds, "{c:02X?} at {at} of {len}");
                }
            }
            for at in 0..=len {
                let mut h = filler[..at].to_vec();
                h.extend_from_slice(b"bearer ");
                h.extend_from_slice(&filler[at..]);
                let want = Past::Clean { rer: Some(at + 3) };
                assert_eq!(searches.past(&h, 0), want, "rer at {at} of {len}");
                assert_eq!(searches.past(&h, h.len()), want, "rer at {at} of {len}");
            }
            assert_eq!(searches.past(&filler, 0), Past::Clean { rer: None });
        }
    }

    /// Each pattern of the two searches lands in the bucket chosen for it, and the
    /// prefix search's buckets fire on none of the characters common in text that
    /// share a lead byte with characters that fold.
    #[test]
    fn search_buckets_are_as_chosen() {
        let leads: Vec<Vec<u8>> = BYTE_LEADS.iter().map(|&b| vec![b]).collect();
        let chosen: Vec<(&[u8], usize)> = leads.iter().map(|p| (&p[..], lead_bucket(p[0]))).collect();
        let order = teddy::ordered(&chosen, 1, 0).expect("placed");
        for (b, bucket) in teddy::buckets(&order, 1).iter().enumerate() {
            assert!(
                bucket.iter().all(|p| lead_bucket(p[0]) == b),
                "lead bucket {b}: {bucket:02X?}"
            );
            for x in 0..=255u8 {
                assert_eq!(
                    teddy::fires(bucket, 1, &[x]),
                    bucket.iter().any(|p| p[0] == x),
                    "{x:02X}"
                );
            }
        }
        let prefixes = prefix_patterns();
        let chosen: Vec<(&[u8], usize)> = prefixes.iter().map(|p| (&p[..], prefix_bucket(*p))).collect();
        let order = teddy::ordered(&chosen, 3, PREFIX_FILLER).expect("placed");
        let common = "—–’‘“”„…•‰′″‹›€™←→↑↓⇒∞≈≠≤≥★☆✓✔✗❤☺─│┌┐└┘├┤═║░▒▓█、。「」『』【】〜・ぁあいうえおアイウエオー가나다ㅋ😀🙂👍🏽🎉🚀🤔🥰🫡🌍";
        for (b, bucket) in teddy::buckets(&order, 3).iter().enumerate() {
            assert!(
                bucket
                    .iter()
                    .all(|p| p.first_chunk::<3>().is_some_and(|p| prefix_bucket(*p) == b)),
                "prefix bucket {b}: {bucket:02X?}"
            );
            for c in common.chars() {
                let mut buf = [0u8; 4];
                let e = c.encode_utf8(&mut buf).as_bytes();
                if e.len() >= 3 && fold(c).is_none() {
                    assert!(!teddy::fires(bucket, 3, e), "bucket {b} fires on {c}");
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
