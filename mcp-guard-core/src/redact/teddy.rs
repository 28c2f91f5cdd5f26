//! Vector searches on `aho-corasick`'s Teddy (chosen at run time for the CPU: SSSE3 or
//! AVX2 on `x86_64`, NEON on `aarch64`), with each pattern placed in the bucket chosen
//! for it.
//!
//! Slim Teddy tests every byte position against 8 buckets through nibble tables: a
//! bucket fires where each of the first `n` bytes (`n`, the mask length, is the length
//! of the shortest pattern, at most 3 here) has a low nibble and a high nibble that some
//! pattern of the bucket has at that place; the patterns of a bucket that fires are
//! then compared with the text. A bucket whose patterns differ only where they must
//! fires on little besides them; a bucket that mixes unrelated patterns also fires on
//! the crossings of their nibbles (`4` and `-` in one bucket fire on `$` and `=`), and
//! each such stop costs a comparison with every pattern of the bucket.
//!
//! Teddy (`aho-corasick` 1.1) puts the patterns whose first `n` bytes have the same low
//! nibbles in one bucket: bucket `7 - i % 8` of the first of them, at index `i`. So
//! [`ordered`] lists the patterns such that each such group lands in the bucket chosen
//! for it, filling an index no new group fits with a copy of a pattern already placed
//! in a bucket that seldom fires on anything but its patterns (a bucket that fires
//! compares the text with each of its patterns, copies included). Only speed depends
//! on the placement; the tests of the searches check that every bucket holds only what
//! was chosen for it.

use aho_corasick::packed;

/// Teddy's buckets in its slim form.
pub(crate) const BUCKETS: usize = 8;

/// Patterns beyond this many make `aho-corasick`'s packed searcher give up.
const MAX_PATTERNS: usize = 128;

/// The patterns of `chosen` (each with its bucket, below [`BUCKETS`]) in an order that
/// makes Teddy, with mask length `mask_len`, put each in its bucket, with copies of a
/// pattern of bucket `filler` where needed. `None` when two patterns that Teddy must
/// group are given different buckets, or when it takes more than Teddy's limit of
/// patterns.
pub(crate) fn ordered(chosen: &[(&[u8], usize)], mask_len: usize, filler: usize) -> Option<Vec<Vec<u8>>> {
    let group = |p: &[u8]| -> Vec<u8> { p.iter().take(mask_len).map(|b| b & 15).collect() };
    let mut pending: Vec<(&[u8], usize)> = chosen.to_vec();
    // Each group with its bucket and the index of a pattern placed in it.
    let mut placed: Vec<(Vec<u8>, usize, usize)> = Vec::new();
    let mut out: Vec<Vec<u8>> = Vec::new();
    while !pending.is_empty() {
        if out.len() >= MAX_PATTERNS {
            return None;
        }
        let bucket = BUCKETS - 1 - out.len() % BUCKETS;
        let bucket_of = |p: &[u8]| placed.iter().find(|(g, _, _)| *g == group(p)).map(|&(_, b, _)| b);
        let pick = pending
            .iter()
            .position(|&(p, b)| b == bucket && bucket_of(p).is_none())
            .or_else(|| pending.iter().position(|&(p, _)| bucket_of(p).is_some()));
        let Some(k) = pick else {
            // A copy of a pattern already in bucket `filler` (or in any).
            let copy = placed
                .iter()
                .find(|&&(_, b, _)| b == filler)
                .or_else(|| placed.first())
                .map(|&(_, _, i)| out[i].clone())?;
            out.push(copy);
            continue;
        };
        let (p, b) = pending.remove(k);
        match bucket_of(p) {
            Some(at) if at != b => return None,
            Some(_) => {}
            None => placed.push((group(p), b, out.len())),
        }
        out.push(p.to_vec());
    }
    Some(out)
}

/// A leftmost-first slim Teddy over `patterns`, `None` where the CPU has no vector
/// support for it or the patterns make the searcher give up.
pub(crate) fn searcher(patterns: &[Vec<u8>]) -> Option<packed::Searcher> {
    let mut builder = packed::Config::new()
        .match_kind(packed::MatchKind::LeftmostFirst)
        .heuristic_pattern_limits(false)
        .only_teddy(true)
        .only_teddy_fat(Some(false))
        .builder();
    builder.extend(patterns);
    builder.build()
}

/// The buckets Teddy makes of `patterns` (as [`ordered`] expects it to), with the
/// patterns of each: for the tests of the searches.
#[cfg(test)]
pub(crate) fn buckets(patterns: &[Vec<u8>], mask_len: usize) -> [Vec<Vec<u8>>; BUCKETS] {
    let group = |p: &[u8]| -> Vec<u8> { p.iter().take(mask_len).map(|b| b & 15).collect() };
    let mut out: [Vec<Vec<u8>>; BUCKETS] = Default::default();
    let mut seen: Vec<(Vec<u8>, usize)> = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        let b = if let Some(&(_, b)) = seen.iter().find(|(g, _)| *g == group(p)) {
            b
        } else {
            let b = BUCKETS - 1 - i % BUCKETS;
            seen.push((group(p), b));
            b
        };
        out[b].push(p.clone());
    }
    out
}

/// Whether the bucket holding `patterns` fires on the first `mask_len` bytes of `at`:
/// each byte has a low and a high nibble that some pattern has at its place.
#[cfg(test)]
pub(crate) fn fires(patterns: &[Vec<u8>], mask_len: usize, at: &[u8]) -> bool {
    (0..mask_len).all(|k| {
        let b = at.get(k).copied().unwrap_or(0);
        patterns.iter().any(|p| p[k] & 15 == b & 15) && patterns.iter().any(|p| p[k] >> 4 == b >> 4)
    })
}
