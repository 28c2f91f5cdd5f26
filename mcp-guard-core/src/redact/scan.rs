//! The scanner: a survey that tells a string with nothing to find from the rest, then one
//! forward pass over the bytes from the first trigger, per-type candidates at each
//! trigger, and a merge of overlapping findings.
//!
//! The survey and the trigger test run on 64-byte blocks as straight-line lane operations
//! that the compiler vectorises (or, on long strings, on Teddy and the `earer ` finder,
//! chosen at run time for the CPU), and one byte at a time only near the last trigger.

use aho_corasick::packed;
use memchr::memmem;
use wide::u8x16;

use super::Kind;
use super::detect::{context, digit_run_len, email, ip, numeric, secret};
use super::known::KnownSet;
use super::window::{REACH, STEP, Window};
use super::{teddy, unicode};

/// A finding: `start..end` in the input, of kind `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) kind: Kind,
}

/// What the surrounding structure says about a string (from its JSON key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent flags, read one at a time"
)]
pub(crate) struct Hints {
    /// The key names an SSN: nine bare digits count.
    pub(crate) ssn: bool,
    /// The key names a phone number: ten bare digits count.
    pub(crate) phone: bool,
    /// The key names a version: dotted quads are not addresses.
    pub(crate) version: bool,
    /// The key names a payment card: a Maestro number of 12 to 15 digits counts.
    pub(crate) card: bool,
    /// The key names a product code (`ean`, `isbn`…): thirteen digits are not a card.
    pub(crate) product: bool,
    /// The key names a credential: the whole value is a secret.
    pub(crate) secret: bool,
}

/// Where a scan of a string can start, from what is already known about it: no trigger
/// byte comes before `from`, and there is no `earer ` anywhere unless `earer`, nor
/// before `earer_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    pub(crate) from: usize,
    pub(crate) earer: bool,
    pub(crate) earer_from: usize,
}

impl Start {
    /// Nothing known: the whole string.
    pub(crate) const WHOLE: Start = Start {
        from: 0,
        earer: true,
        earer_from: 0,
    };
}

/// What [`Scanner::survey_text`] found in a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Survey {
    /// Nothing any detector could find (registered secrets aside).
    Nothing,
    /// A character that folds: the string is read folded too.
    Folds,
    /// A trigger or `Bearer `, and no character that folds: scan from here.
    Scan(Start),
}

/// What one scan carries from trigger to trigger.
#[derive(Debug, Default)]
struct ScanState {
    /// No email can start before this (the end of the last one, or past a failed `@`).
    at_floor: usize,
    /// The end of the last region the IPv6 detector looked at.
    v6_done: usize,
    pem: secret::PemState,
}

/// Compiled, immutable detection settings.
#[derive(Debug)]
pub(crate) struct Scanner {
    pub(crate) enabled: u16,
    pub(crate) e164: bool,
    /// Addresses at documentation domains (`example.com`, `.test`…) are found too.
    pub(crate) documentation_domains: bool,
    bearer: EarerFinder,
    /// A vectorised multi-byte search for the trigger bytes (`aho-corasick`'s Teddy,
    /// chosen at run time for the CPU: SSSE3 or AVX2 on `x86_64`, NEON on `aarch64`),
    /// used to skip long clean stretches. `None` where the CPU has no such support: the
    /// portable block test does the same job a little slower.
    teddy: Option<packed::Searcher>,
    /// The survey's search of strings that are not ASCII (Teddy as well): the trigger
    /// bytes and the lead bytes of [`unicode::BYTE_LEADS`]; see [`survey_bucket`].
    survey: Option<packed::Searcher>,
}

/// The bucket of Teddy's 8 for a byte of the survey's search, from its low nibble
/// (Teddy groups by it): each bucket fires only on its own bytes but for `+`, `CB` and
/// `DD` (rare), which share the nibbles of `-`, `CD` and `DB`.
fn survey_bucket(first: u8) -> usize {
    match first & 15 {
        0 | 1 => 0,
        2 => 1,
        3 => 2,
        4..=7 => 3,
        8 | 9 => 4,
        0xA => 5,
        0xB | 0xD => 6,
        _ => 7,
    }
}

/// The patterns of the survey's search.
fn survey_patterns() -> Vec<Vec<u8>> {
    let mut p: Vec<Vec<u8>> = TEDDY_ORDER.iter().map(|&b| vec![b]).collect();
    p.extend(unicode::BYTE_LEADS.iter().map(|&b| vec![b]));
    p
}

/// Byte classes: what a trigger byte may start.
const DIGIT: u8 = 1;
const AT: u8 = 2;
const COLON: u8 = 3;
/// `_ - A J`: credential prefixes (`ghp_`, `sk-`, `AKIA`, `eyJ`, `BEARER`…).
const PREFIX: u8 = 4;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = b'0';
    while b <= b'9' {
        t[b as usize] = DIGIT;
        b += 1;
    }
    t[b':' as usize] = COLON;
    t[b'@' as usize] = AT;
    t[b'_' as usize] = PREFIX;
    t[b'-' as usize] = PREFIX;
    t[b'A' as usize] = PREFIX;
    t[b'J' as usize] = PREFIX;
    t
};

/// The trigger bytes in the order they are given to Teddy. Teddy puts patterns in 8
/// buckets by low nibble and tests a byte against a bucket by its low and high nibble
/// separately, so a bucket holding `-` (0x2D) and `4` (0x34) would also fire on `$`
/// (0x24) and `=` (0x3D). This order yields buckets `0 1 @ A`, `: J`, `2 3`, `4 5`,
/// `6 7`, `8 9`, `-`, `_`: each fires on its own bytes only. (Only speed depends on it.)
const TEDDY_ORDER: &[u8; 16] = b"0:2-_468A13@J579";

/// Whether the byte at `k` is a trigger.
#[inline]
fn hit(h: &[u8], k: usize) -> bool {
    is_trigger(h[k])
}

/// Whether `b` is a trigger: a byte that can set off a finding (a digit or one of
/// `: @ _ - A J`).
#[inline]
pub(crate) const fn is_trigger(b: u8) -> bool {
    CLASS[b as usize] != 0
}

/// Bytes the portable block test decides on per step.
const BLOCK: usize = 64;

/// Whether position `k` of `w` may be a trigger: a superset of [`hit`] (it also fires
/// on `; < = > ?`, which sit between `:` and `@`). One range test and three byte
/// compares, written so that the compiler vectorises it over a block.
#[inline]
fn may_hit(b: u8) -> u8 {
    u8::from(b.wrapping_sub(b'0') <= b'A' - b'0')
        | u8::from(b == b'-')
        | u8::from(b == b'_')
        | u8::from(b == b'J')
}

/// Whether any byte of `w` may be a trigger. Independent lane operations and an OR
/// reduction: the compiler turns this into vector code with baseline SSE2 or NEON (no
/// `unsafe`, no run-time CPU dispatch).
#[inline]
fn block_may_hit(w: &[u8; BLOCK]) -> bool {
    let mut any = 0u8;
    for &b in w {
        any |= may_hit(b);
    }
    any != 0
}

/// What a block of [`survey`](Scanner::survey) holds: bit 0, a byte that may be a
/// trigger; bit 1, `ar?r ` (the middle of `earer `, rare in text). Reads four bytes
/// past the block, so `w` is the block and those four bytes.
#[inline]
fn block_survey(w: &[u8; BLOCK + 4]) -> u8 {
    let (mut class, mut earer) = (0u8, 0u8);
    for k in 0..BLOCK {
        class |= may_hit(w[k]);
        earer |= u8::from(w[k] == b'a')
            & u8::from(w[k + 1] == b'r')
            & u8::from(w[k + 3] == b'r')
            & u8::from(w[k + 4] == b' ');
    }
    u8::from(class != 0) | (u8::from(earer != 0) << 1)
}

/// What a string of [`SHORT`] to [`LONG`] bytes holds, read 16 bytes at a time (the
/// last 16 bytes of `h` last, over bytes read already): where the first 16 bytes with a
/// byte that may be a trigger start (`h.len()` if none do), whether it may hold
/// `earer ` (two `r`s a byte apart: `r?r`), and whether it holds a byte beyond ASCII.
/// One pass, where the block survey stops at the first trigger and leaves `earer ` to a
/// search of its own over the whole string (most strings of a table have triggers
/// and no `r?r`).
#[inline]
fn glance(h: &[u8]) -> (usize, bool, bool) {
    let n = h.len();
    let (mut rr, mut prev) = (0u32, 0u32);
    let mut high = u8x16::splat(0);
    let mut from = n;
    let mut read = |v: u8x16, base: usize, skip: usize| {
        let r = v.simd_eq(u8x16::splat(b'r')).to_bitmask() >> skip;
        rr |= r & (r >> 2) | (prev >> 14) & r;
        prev = r;
        high |= v;
        if from == n {
            let d = v - u8x16::splat(b'0');
            let may = d.simd_eq(d.min(u8x16::splat(b'A' - b'0')))
                | v.simd_eq(u8x16::splat(b'-'))
                | v.simd_eq(u8x16::splat(b'_'))
                | v.simd_eq(u8x16::splat(b'J'));
            if may.to_bitmask() != 0 {
                from = base;
            }
        }
    };
    let (chunks, tail) = h.as_chunks::<16>();
    for (k, c) in chunks.iter().enumerate() {
        read(u8x16::new(*c), 16 * k, 0);
    }
    // The last 16 bytes, of which all but the tail were read.
    if let (false, Some(last)) = (tail.is_empty(), h.last_chunk::<16>()) {
        read(u8x16::new(*last), n - 16, 16 - tail.len());
    }
    (from, rr != 0, high.to_bitmask() != 0)
}

/// The first `BLOCK + 4` bytes of `w` (which has at least that many).
#[inline]
fn first_block(w: &[u8]) -> &[u8; BLOCK + 4] {
    w.first_chunk().unwrap_or(&[0; BLOCK + 4])
}

/// Shorter strings cannot hold `Bearer ` and a token; their survey is a byte loop.
pub(crate) const SHORT: usize = 23;

/// Strings at least this long are surveyed with the run-time-dispatched searchers
/// (Teddy and the `earer ` finder), shorter ones with [`block_survey`].
const LONG: usize = 2 * BLOCK;

/// The first trigger in the block at `start`, found from a per-byte flag vector read back
/// eight bytes at a time.
#[inline]
fn first_in_block(h: &[u8], start: usize, block: &[u8; BLOCK]) -> Option<usize> {
    let mut flags = [0u8; BLOCK];
    for (flag, &b) in flags.iter_mut().zip(block) {
        *flag = may_hit(b);
    }
    for (word_index, word) in flags.chunks_exact(8).enumerate() {
        let mut word = word.try_into().map_or(0, u64::from_le_bytes);
        while word != 0 {
            let at = start + 8 * word_index + (word.trailing_zeros() / 8) as usize;
            if at < h.len() && hit(h, at) {
                return Some(at);
            }
            word &= word - 1;
        }
    }
    None
}

/// The fewest bytes left in a string for the window to take over from a digit run.
const DENSE_MIN: usize = 32;

/// How many bytes after a trigger are looked at one by one before a block test
/// (triggers come in clusters: the digits and separators of a table).
const NEAR: usize = 8;

/// Finds `earer ` (of `Bearer `/`bearer `). Where the CPU allows, a vector search
/// keyed on the two `r`s (`r?r` is rare in text, unlike the bytes a general substring
/// search would pick from `earer `); otherwise `memchr`'s substring search.
#[derive(Debug)]
struct EarerFinder {
    #[cfg(target_arch = "x86_64")]
    avx2: Option<memchr::arch::x86_64::avx2::packedpair::Finder>,
    #[cfg(target_arch = "x86_64")]
    sse2: Option<memchr::arch::x86_64::sse2::packedpair::Finder>,
    generic: memmem::Finder<'static>,
}

const EARER: &[u8; 6] = b"earer ";

impl EarerFinder {
    fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        let pair = || memchr::arch::all::packedpair::Pair::with_indices(EARER, 2, 4);
        Self {
            #[cfg(target_arch = "x86_64")]
            avx2: pair().and_then(|p| memchr::arch::x86_64::avx2::packedpair::Finder::with_pair(EARER, p)),
            #[cfg(target_arch = "x86_64")]
            sse2: pair().and_then(|p| memchr::arch::x86_64::sse2::packedpair::Finder::with_pair(EARER, p)),
            generic: memmem::Finder::new(EARER),
        }
    }

    /// The first `earer ` at or after `from`.
    #[inline]
    fn find(&self, h: &[u8], from: usize) -> Option<usize> {
        let rest = h.get(from..)?;
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(f) = &self.avx2
                && rest.len() >= f.min_haystack_len()
            {
                return f.find(rest, EARER).map(|k| from + k);
            }
            if let Some(f) = &self.sse2
                && rest.len() >= f.min_haystack_len()
            {
                return f.find(rest, EARER).map(|k| from + k);
            }
        }
        self.generic.find(rest).map(|k| from + k)
    }
}

impl Scanner {
    pub(crate) fn new(enabled: u16, e164: bool, documentation_domains: bool) -> Self {
        let mut builder = packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostFirst)
            .heuristic_pattern_limits(false)
            .builder();
        for b in TEDDY_ORDER {
            builder.add([*b]);
        }
        let patterns = survey_patterns();
        let chosen: Vec<(&[u8], usize)> = patterns.iter().map(|p| (&p[..], survey_bucket(p[0]))).collect();
        Self {
            enabled,
            e164,
            documentation_domains,
            bearer: EarerFinder::new(),
            teddy: builder.build().filter(|t| t.minimum_len() <= 2 * BLOCK),
            survey: teddy::ordered(&chosen, 1, survey_bucket(b'3'))
                .and_then(|p| teddy::searcher(&p))
                .filter(|t| t.minimum_len() <= LONG),
        }
    }

    #[inline]
    pub(crate) fn on(&self, k: Kind) -> bool {
        self.enabled & k.bit() != 0
    }

    /// Where a scan of `h` starts, or `None` when no detector can fire anywhere in `h`
    /// (registered secrets aside): no trigger byte and no `earer `. The first test of
    /// every string; most text (prose, keys, identifiers) has neither and costs this one
    /// vector pass and nothing more. `Some(start)`: every trigger byte is at or after
    /// `start.from` (`h.len()` when there is none), and `h` holds `earer ` only if
    /// `start.earer`.
    ///
    /// (Finding both in one portable pass, to spare the scan its search for `Bearer `,
    /// was tried: on text with few triggers it cost twice the time of Teddy and the
    /// `earer ` finder, which use AVX2 where the CPU has it.)
    #[inline]
    pub(crate) fn survey(&self, h: &[u8]) -> Option<Start> {
        let n = h.len();
        if n < SHORT {
            // Too short for `Bearer ` and a token.
            let from = h.iter().position(|&b| is_trigger(b))?;
            return Some(Start {
                from,
                earer: false,
                earer_from: n,
            });
        }
        let unknown = |from| {
            Some(Start {
                from,
                earer: true,
                earer_from: 0,
            })
        };
        if n >= LONG
            && let Some(t) = &self.teddy
        {
            return match t.find(h) {
                Some(m) => unknown(m.start()),
                None => self.bearer.find(h, 0).and_then(|_| unknown(n)),
            };
        }
        let mut earer = false;
        let mut i = 0;
        while let Some(w) = h.get(i..i + BLOCK + 4) {
            let seen = block_survey(first_block(w));
            if seen & 1 != 0 {
                return unknown(i);
            }
            earer |= seen & 2 != 0;
            i += BLOCK;
        }
        // The tail (at most `BLOCK + 3` bytes) on a zero-padded copy: zeros are neither
        // triggers nor part of `earer `.
        let rest = h.get(i..).unwrap_or_default();
        let mut buf = [0u8; 2 * BLOCK + 4];
        buf[..rest.len()].copy_from_slice(rest);
        let mut seen = block_survey(first_block(&buf));
        if rest.len() > BLOCK {
            seen |= block_survey(first_block(&buf[BLOCK..]));
        }
        if seen & 1 != 0 {
            unknown(i)
        } else if earer || seen & 2 != 0 {
            unknown(n)
        } else {
            None
        }
    }

    /// [`Self::survey`] of a string that may hold characters that fold (any string of
    /// the text and JSON paths), deciding that as well: [`Survey::Folds`] when it holds
    /// one. A string of [`SHORT`] to [`LONG`] bytes is read once ([`glance`]) and, if
    /// it is not ASCII, tested for them ([`unicode::past`]). A shorter one, or a longer
    /// ASCII one, is tested ([`unicode::folds`]) and surveyed. A longer one beyond ASCII
    /// goes through the survey's search, which stops at the first trigger or lead byte
    /// of [`unicode::BYTE_LEADS`] (the lead byte of a character that does not fold is
    /// passed over), and then through the search for the common characters that fold
    /// ([`unicode::past`]), which also tells where an `earer ` can be: two searches in
    /// all, as for an ASCII string (triggers, then `earer `).
    pub(crate) fn survey_text(&self, h: &[u8]) -> Survey {
        let n = h.len();
        let scan = |start: Option<Start>| start.map_or(Survey::Nothing, Survey::Scan);
        if (SHORT..LONG).contains(&n) {
            let (from, earer, high) = glance(h);
            return if high && unicode::past(h, 0) == unicode::Past::Folds {
                Survey::Folds
            } else if from == n && !earer {
                Survey::Nothing
            } else {
                Survey::Scan(Start {
                    from,
                    earer,
                    earer_from: 0,
                })
            };
        }
        let ascii = unicode::is_ascii(h);
        let search = self.survey.as_ref().filter(|_| n >= LONG && !ascii);
        let Some(searcher) = search else {
            return if !ascii && unicode::past(h, 0) == unicode::Past::Folds {
                Survey::Folds
            } else {
                scan(self.survey(h))
            };
        };
        let mut at = 0;
        let mut misses = 0;
        let from = loop {
            let Some(found) = searcher.find_in(h, aho_corasick::Span::from(at..n)) else {
                break n;
            };
            let p = found.start();
            if h[p] < 0x80 {
                break p;
            }
            if unicode::folds_at(h, p) {
                return Survey::Folds;
            }
            misses += 1;
            if misses == unicode::MISSES {
                // Text in a script whose letters share these lead bytes: as without
                // the search.
                return if unicode::folds_by_chunks(h) {
                    Survey::Folds
                } else {
                    scan(self.survey(h))
                };
            }
            at = p + 1;
        };
        match unicode::past(h, from) {
            unicode::Past::Folds => Survey::Folds,
            unicode::Past::Clean { rer: None } if from == n => Survey::Nothing,
            unicode::Past::Clean { rer } => Survey::Scan(Start {
                from,
                earer: rer.is_some(),
                // `rer ` at `r` is `earer ` at `r - 2`.
                earer_from: rer.map_or(n, |r| r.saturating_sub(2)),
            }),
        }
    }

    /// Next trigger at or after `i`, found a block at a time: long stretches go to
    /// Teddy, the rest is tested [`BLOCK`] bytes at a time (the tail on a zero-padded
    /// copy, so a short string costs a few vector operations rather than a loop over
    /// its bytes).
    #[inline(never)]
    fn far_trigger(&self, h: &[u8], mut i: usize) -> Option<usize> {
        let n = h.len();
        if let Some(t) = &self.teddy
            && n.saturating_sub(i) >= 2 * BLOCK
        {
            return t.find_in(h, aho_corasick::Span::from(i..n)).map(|m| m.start());
        }
        while let Some(w) = h.get(i..i + BLOCK) {
            let w: &[u8; BLOCK] = w.try_into().ok()?;
            if block_may_hit(w)
                && let Some(k) = first_in_block(h, i, w)
            {
                return Some(k);
            }
            i += BLOCK;
        }
        let rest = h.get(i..).filter(|r| !r.is_empty())?;
        let mut buf = [0u8; BLOCK];
        buf[..rest.len()].copy_from_slice(rest);
        if !block_may_hit(&buf) {
            return None;
        }
        first_in_block(h, i, &buf)
    }

    /// Appends every finding in `h` to `found` (unsorted, possibly overlapping), looking
    /// for triggers and `earer ` only where `start` says they can be. Returns whether an
    /// `earer ` was seen (accepted or not).
    pub(crate) fn scan(
        &self,
        h: &[u8],
        start: Start,
        hints: Hints,
        known: &KnownSet,
        found: &mut Vec<Hit>,
    ) -> bool {
        self.scan_with::<true>(h, start, hints, known, found)
    }

    /// [`Self::scan`], with (`WINDOWS`) or without the window for tables of numbers.
    /// Without, every trigger is visited one at a time, as before the window: the
    /// reference the tests and the fuzz targets hold the window to.
    #[inline]
    pub(crate) fn scan_with<const WINDOWS: bool>(
        &self,
        h: &[u8],
        start: Start,
        hints: Hints,
        known: &KnownSet,
        found: &mut Vec<Hit>,
    ) -> bool {
        let mut state = ScanState::default();
        let earer = self.whole(h, start, known, &mut state, found);
        // Triggers one at a time while they are sparse (prose, identifiers); a window
        // at a time from a digit run that starts close after another (a table of
        // numbers), at least a step from the end, until a window finds nothing.
        let n = h.len();
        // `start.from` (or the end of a credential) may fall inside a digit run. Whether
        // the rest of that run is visited (here it is, by a window it is not) makes no
        // difference: no numeric finding starts right after a digit (every detector
        // wants a non-word byte before its start).
        let mut i = start.from;
        let mut near = NEAR;
        // Where the last digit run visited one at a time ended.
        let mut run_end = None;
        while i < n {
            let stop = (i + near).min(n);
            let mut p = i;
            while p < stop && !hit(h, p) {
                p += 1;
            }
            if p == stop {
                let Some(far) = self.far_trigger(h, stop) else {
                    break;
                };
                p = far;
            }
            near = NEAR;
            if !h[p].is_ascii_digit() {
                i = self.event(h, p, hints, &mut state, found);
            } else if WINDOWS && run_end.is_some_and(|e| p < e + NEAR) && n - p >= DENSE_MIN {
                i = self.dense(h, p, i, hints, &mut state, found);
                (near, run_end) = (0, None);
            } else {
                i = self.event(h, p, hints, &mut state, found);
                run_end = Some(i);
            }
        }
        earer
    }

    /// The searches that run over the whole of `h` rather than from trigger to
    /// trigger: registered secrets, and `Bearer `/`bearer ` and a 16-byte token
    /// (`BEARER ` is found from its `A`), the latter only if `start` says `h` may hold
    /// `earer `. Returns whether it does.
    fn whole(
        &self,
        h: &[u8],
        start: Start,
        known: &KnownSet,
        state: &mut ScanState,
        found: &mut Vec<Hit>,
    ) -> bool {
        if let Some(ac) = &known.automaton {
            for m in ac.find_overlapping_iter(h) {
                found.push(Hit {
                    start: m.start(),
                    end: m.end(),
                    kind: Kind::KnownSecret,
                });
            }
        }
        let mut earer = false;
        if start.earer && h.len() >= SHORT {
            let mut next = start.earer_from;
            while let Some(at) = self.bearer.find(h, next) {
                earer = true;
                next = at + 1;
                if let Some((s, e)) = secret::bearer_at(h, at)
                    && let Some((start, end)) = secret::check(h, s, e, secret::Rule::Bearer, &mut state.pem)
                {
                    found.push(Hit {
                        start,
                        end,
                        kind: Kind::Secret,
                    });
                }
            }
        }
        earer
    }

    /// The scan from `p` on, a [`Window`] at a time, until a window holds no trigger.
    /// `i` is where the scan is (no event before it is visited); returns where it goes
    /// on.
    fn dense(
        &self,
        h: &[u8],
        p: usize,
        mut i: usize,
        hints: Hints,
        state: &mut ScanState,
        found: &mut Vec<Hit>,
    ) -> usize {
        let every_run = hints.ssn || hints.phone;
        let mut w = Window::at(h, p);
        while w.base < h.len() {
            if w.quiet() {
                // Nothing in this step or the 15 bytes after it.
                return i.max(w.base + REACH);
            }
            let mut events = w.events(every_run);
            while events != 0 {
                let p = w.base + events.trailing_zeros() as usize;
                events &= events - 1;
                if p >= i {
                    i = self.event(h, p, hints, state, found);
                }
            }
            if i >= w.base + 2 * STEP {
                w = Window::at(h, i);
            } else {
                w.advance(h);
            }
        }
        i.max(h.len())
    }

    /// Visits the trigger at `p` (a digit-run start or one of `@ : _ - A J`): runs the
    /// detectors it can start and records their findings. Returns where the scan goes
    /// on: past the digit run, past an accepted credential (nothing inside one needs
    /// looking at again), or the next byte.
    #[allow(
        clippy::inline_always,
        reason = "one call per trigger from two loops; out of line it costs number tables 5% more instructions"
    )]
    #[inline(always)]
    fn event(&self, h: &[u8], p: usize, hints: Hints, state: &mut ScanState, found: &mut Vec<Hit>) -> usize {
        // Digits first, as a plain branch: in number-heavy text most triggers are
        // digits, and a jump table over the classes is an indirect jump the CPU
        // mispredicts.
        if h[p].is_ascii_digit() {
            let run = digit_run_len(h, p);
            if Self::numeric_maybe(h, p, run, hints) {
                self.numeric(h, p, run, hints, found);
            }
            return p + run;
        }
        match CLASS[usize::from(h[p])] {
            AT => {
                if self.on(Kind::Email) {
                    if let Some((start, end)) = email::email(h, p, state.at_floor) {
                        if self.documentation_domains || !email::documentation_domain(&h[p + 1..end]) {
                            found.push(Hit {
                                start,
                                end,
                                kind: Kind::Email,
                            });
                        }
                        state.at_floor = end;
                    } else {
                        state.at_floor = p + 1;
                    }
                }
            }
            COLON => {
                if self.on(Kind::Ipv6) && p >= state.v6_done && ip::v6_colon_plausible(h, p) {
                    let (v6, region_end) = ip::ipv6(h, p, state.v6_done);
                    if let Some((start, end)) = v6 {
                        found.push(Hit {
                            start,
                            end,
                            kind: Kind::Ipv6,
                        });
                    }
                    state.v6_done = region_end;
                }
            }
            _ => {
                if let Some((start, pend, rule)) = secret::prefix_at(h, p)
                    && let Some((start, end)) = secret::check(h, start, pend, rule, &mut state.pem)
                {
                    found.push(Hit {
                        start,
                        end,
                        kind: Kind::Secret,
                    });
                    return end.max(p + 1);
                }
            }
        }
        p + 1
    }

    /// Whether a run of `run` digits at `p` can start any numeric finding. Without a
    /// `+` in front or a key that names an SSN or phone number, every numeric detector
    /// needs one of a few first groups: 12-19 digits (a card); 4 digits and a space or
    /// dash (a card); 3 digits and a separator, `.`, `/` or `)` (SSN, phone); 1-3 digits
    /// and `.` (IPv4); a `1` and a separator (a phone prefix); ten digits, or eleven
    /// from a `1`, that a word nearby may name a phone number. Most numbers in a table
    /// (`12, 3.5, 2024/01/02, 1715000000, 34189.80`) fail this at once.
    #[allow(
        clippy::inline_always,
        reason = "one call per digit run from two loops; out of line it is a call for every number of a table"
    )]
    #[inline(always)]
    fn numeric_maybe(h: &[u8], p: usize, run: usize, hints: Hints) -> bool {
        let next = h.get(p + run).copied().unwrap_or(0);
        let shaped = match run {
            1 => matches!(next, b' ' | b'-' | b'.' | b'/'),
            2 => next == b'.',
            3 => matches!(next, b' ' | b'-' | b'.' | b'/' | b')'),
            4 => matches!(next, b' ' | b'-'),
            10 => h[p] >= b'2',
            11 => h[p] == b'1' && h.get(p + 1).is_some_and(|&d| d >= b'2'),
            12..=19 => true,
            _ => false,
        };
        shaped || hints.ssn || hints.phone || (p > 0 && h[p - 1] == b'+')
    }

    /// Candidates of every numeric type whose first digit group starts at `p`. A
    /// detector is only tried for the run lengths, first digits and following bytes it
    /// can start with.
    #[inline]
    fn numeric(&self, h: &[u8], p: usize, run: usize, hints: Hints, found: &mut Vec<Hit>) {
        let first = h[p];
        let next = h.get(p + run).copied().unwrap_or(0);
        let before = p.checked_sub(1).map_or(0, |i| h[i]);
        let sep = matches!(next, b' ' | b'-');
        // The length of the digit group after a one-byte separator: every separated
        // shape fixes it (card 4 or 6, SSN 2, phone 3, IPv4 1-3), so most numbers in a
        // list are turned down here by arithmetic, before any detector runs.
        let g2 = if sep || next == b'.' || next == b'/' {
            digit_run_len(h, p + run + 1)
        } else {
            0
        };
        // A Maestro number of 12 to 15 digits in one run needs a word or a key that
        // names a card; cards from `1` (JCB `1800`) have 15 digits, from `0` (`0604`) 12.
        // No other issuer has 12 to 15 digits from `0`, `5` or `6`, so without such a
        // word the card detector is not run at all.
        let short = (12..=15).contains(&run) && matches!(first, b'0' | b'5' | b'6');
        // The words around a number are read last, only for a number of a card's shape:
        // thirteen digits next to `EAN`, `ISBN`… are a product code (a Visa number of
        // that length would pass as well one time in ten).
        if (run == 4 && sep && (g2 == 4 || g2 == 6)
            || (13..=19).contains(&run) && matches!(first, b'2'..=b'6')
            || run == 15 && first == b'1'
            || short)
            && self.on(Kind::CreditCard)
            && !(run == 13 && (hints.product || context::product_near(h, p, p + run)))
            && (!short || hints.card || context::card_near(h, p, p + run))
            && let Some(end) = numeric::card(h, p, run, short)
        {
            found.push(Hit {
                start: p,
                end,
                kind: Kind::CreditCard,
            });
        }
        if self.on(Kind::Ssn) {
            let ssn = if run == 3 && sep && g2 == 2 {
                numeric::ssn(h, p)
            } else if run == 9 && hints.ssn {
                numeric::ssn_bare(h, p, run)
            } else {
                None
            };
            if let Some(end) = ssn {
                found.push(Hit {
                    start: p,
                    end,
                    kind: Kind::Ssn,
                });
            }
        }
        // The shapes `numeric::phone` can start with at `p`: after `+`, an area code
        // followed by a separator and a 3-digit exchange (or `)` after `(`), a `1-`
        // prefix before an area code, or ten bare digits (eleven from a `1`) under a
        // phone key or with a word nearby that names a phone.
        // (Not right after `(`, `)`, `+` or `/`: the digits of an international number
        // such as `+44(0)2079460958` are not a North American one.)
        let bare = hints.phone
            || (run == 10 && first >= b'2' || run == 11 && first == b'1')
                && !matches!(before, b'(' | b')' | b'+' | b'/')
                && self.on(Kind::Phone)
                && context::phone_near(h, p, p + run);
        let phone_shape = before == b'+'
            || bare
            || (run == 3
                && (((sep || next == b'.' || next == b'/')
                    && g2 == 3
                    && numeric::line_after_exchange(h, p + 7))
                    || (next == b')' && before == b'(')))
            || (run == 1
                && first == b'1'
                && matches!(next, b' ' | b'-' | b'.' | b'/')
                && (g2 == 3 || h.get(p + 2) == Some(&b'(')));
        if phone_shape
            && self.on(Kind::Phone)
            && let Some((start, end)) = numeric::phone(h, p, bare, self.e164)
        {
            found.push(Hit {
                start,
                end,
                kind: Kind::Phone,
            });
        }
        if run <= 3
            && next == b'.'
            && (1..=3).contains(&g2)
            && h.get(p + run + 1 + g2) == Some(&b'.')
            && !hints.version
            && self.on(Kind::Ipv4)
            && let Some(end) = ip::ipv4(h, p)
        {
            found.push(Hit {
                start: p,
                end,
                kind: Kind::Ipv4,
            });
        }
    }
}

/// Sorts and merges overlapping findings; a merged finding keeps the kind of highest
/// priority among its parts.
pub(crate) fn merge(found: &mut Vec<Hit>) {
    if found.len() < 2 {
        return;
    }
    found.sort_unstable_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
    let mut w = 0;
    for r in 1..found.len() {
        let cur = found[r];
        let last = &mut found[w];
        if cur.start < last.end {
            last.end = last.end.max(cur.end);
            if cur.kind.priority() > last.kind.priority() {
                last.kind = cur.kind;
            }
        } else {
            w += 1;
            found[w] = cur;
        }
    }
    found.truncate(w + 1);
}
