//! The credential scrubber: exact secret values the gateway holds.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};

/// Shortest secret [`KnownSecrets::add`] accepts, in bytes. Shorter values would match
/// ordinary text.
pub const MIN_KNOWN_SECRET_LEN: usize = 8;

/// The exact credentials a gateway holds, so that an upstream echoing one back (in an
/// error message, a debug dump, a reflected header) never gets it through.
///
/// Each secret is searched for as is and in the encodings it is likely to travel in:
/// base64 (standard and URL-safe, at every byte alignment, so it is also found inside a
/// longer encoded string such as `Basic base64(user:token)`), percent-encoding (upper-
/// and lower-case hex) and JSON string escaping. Matches become `[REDACTED_SECRET]`.
///
/// Shared and updatable at run time: clone the `Arc` into every redactor; `add` and
/// `remove` rebuild one multi-pattern automaton and swap it in, and redactions already
/// under way keep the automaton they started with.
///
/// # Security
/// The automaton holds copies of the secrets (and their encodings) in memory for as long
/// as they are registered; those copies are not zeroed on drop. Each thread that redacts
/// keeps the generations of the registry it used last, so that a redaction need not take
/// the lock: a removed secret stays in such a copy until that thread next redacts with
/// this registry, or with four others.
///
/// ```
/// use std::sync::Arc;
/// use mcp_guard_core::redact::{KnownSecrets, PatternRedactor};
/// use mcp_guard_core::Redactor;
/// use secrecy::SecretString;
///
/// let known = Arc::new(KnownSecrets::new());
/// let redactor = PatternRedactor::builder().known_secrets(Arc::clone(&known)).build();
/// known.add(&SecretString::from("hunter2-correct-horse"));
/// assert_eq!(redactor.redact_str("token=hunter2-correct-horse"), "token=[REDACTED_SECRET]");
/// ```
pub struct KnownSecrets {
    /// Told apart from every other registry of the process (see [`STAMPS`]).
    id: u64,
    current: RwLock<Arc<KnownSet>>,
    /// The stamp of `current`, read without the lock: a thread that still holds that
    /// generation in its cache need not take the lock (see [`Self::with_snapshot`]).
    stamp: AtomicU64,
}

/// Registry ids and generation stamps, each drawn once in the life of the process, so
/// that equal stamps are the same generation of the same registry.
static STAMPS: AtomicU64 = AtomicU64::new(1);

fn next_stamp() -> u64 {
    STAMPS.fetch_add(1, Ordering::Relaxed)
}

/// Generations cached per thread.
const RECENT: usize = 4;

/// A cached generation and the id of its registry.
type Recent = Option<(u64, Arc<KnownSet>)>;

thread_local! {
    /// The generations this thread used last, each with the id of its registry, the
    /// latest first: at most one per registry, [`RECENT`] in all.
    static RECENT_SETS: RefCell<[Recent; RECENT]> =
        const { RefCell::new([None, None, None, None]) };
}

/// One immutable generation of the registry.
#[derive(Default)]
pub(crate) struct KnownSet {
    /// Which generation of which registry this is (0 for one outside any registry).
    stamp: u64,
    secrets: Vec<SecretString>,
    pub(crate) automaton: Option<AhoCorasick>,
    /// No pattern of the automaton can match across or inside a placeholder: none holds
    /// `[` or `]`, and none is part of a placeholder. Then a replacement cannot make a
    /// new match, and a pass after the first has none to find (see
    /// `PatternRedactor::settled`).
    pub(crate) clear_of_placeholders: bool,
}

/// Whether no pattern can match text that overlaps a placeholder: a match that starts
/// before one holds its `[`, one that ends after it holds its `]`, and one inside it is
/// part of it.
fn clear_of_placeholders(patterns: &[Vec<u8>]) -> bool {
    use super::Kind;
    let placeholders = Kind::WITH_OWN_PLACEHOLDER.map(|k| k.placeholder().as_bytes());
    patterns.iter().all(|p| {
        !p.contains(&b'[')
            && !p.contains(&b']')
            && !placeholders
                .iter()
                .any(|ph| ph.windows(p.len().max(1)).any(|w| w == p.as_slice()))
    })
}

impl fmt::Debug for KnownSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnownSecrets")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the scrubber must know the bytes it searches for"
)]
fn bytes_of(secret: &SecretString) -> &[u8] {
    secret.expose_secret().as_bytes()
}

/// The forms a secret is searched in.
fn variants(s: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![s.to_vec()];
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for k in 0..3usize {
            let mut buf = vec![0u8; k];
            buf.extend_from_slice(s);
            let enc = engine.encode(&buf).into_bytes();
            // Characters whose 6 bits come from the secret alone.
            let first = (8 * k).div_ceil(6);
            let last = (8 * (k + s.len())) / 6;
            if let Some(mid) = enc.get(first..last.min(enc.len()))
                && mid.len() >= MIN_KNOWN_SECRET_LEN
            {
                out.push(mid.to_vec());
            }
        }
    }
    for upper in [true, false] {
        let mut pct = Vec::with_capacity(s.len() * 3);
        for &b in s {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                pct.push(b);
            } else {
                let hex = if upper {
                    b"0123456789ABCDEF"
                } else {
                    b"0123456789abcdef"
                };
                pct.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
            }
        }
        out.push(pct);
    }
    if let Ok(text) = std::str::from_utf8(s)
        && let Ok(json) = serde_json::to_string(text)
        && let Some(inner) = json.as_bytes().get(1..json.len() - 1)
    {
        out.push(inner.to_vec());
    }
    out.sort();
    out.dedup();
    out
}

impl Default for KnownSecrets {
    fn default() -> Self {
        let set = KnownSet::build(Vec::new());
        Self {
            id: next_stamp(),
            stamp: AtomicU64::new(set.stamp),
            current: RwLock::new(Arc::new(set)),
        }
    }
}

impl KnownSecrets {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `secret`. Returns `false` (and registers nothing) if it is shorter than
    /// [`MIN_KNOWN_SECRET_LEN`] bytes or already registered.
    pub fn add(&self, secret: &SecretString) -> bool {
        let bytes = bytes_of(secret);
        if bytes.len() < MIN_KNOWN_SECRET_LEN {
            return false;
        }
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if guard.secrets.iter().any(|s| bytes_of(s) == bytes) {
            return false;
        }
        let mut secrets = guard.secrets.clone();
        secrets.push(secret.clone());
        self.replace(&mut guard, KnownSet::build(secrets));
        true
    }

    /// Unregisters `secret`. Returns whether it was registered.
    pub fn remove(&self, secret: &SecretString) -> bool {
        let bytes = bytes_of(secret);
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let before = guard.secrets.len();
        let secrets: Vec<SecretString> = guard
            .secrets
            .iter()
            .filter(|s| bytes_of(s) != bytes)
            .cloned()
            .collect();
        if secrets.len() == before {
            return false;
        }
        self.replace(&mut guard, KnownSet::build(secrets));
        true
    }

    /// Makes `set` the current generation; the stamp changes before the write lock is
    /// let go, so a redaction that starts after `add` or `remove` returns sees it.
    fn replace(&self, current: &mut Arc<KnownSet>, set: KnownSet) {
        let stamp = set.stamp;
        *current = Arc::new(set);
        self.stamp.store(stamp, Ordering::Release);
    }

    /// Number of registered secrets.
    pub fn len(&self) -> usize {
        self.snapshot().secrets.len()
    }

    /// Whether no secret is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn snapshot(&self) -> Arc<KnownSet> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Calls `f` with the current generation.
    ///
    /// Taking the lock and a counted reference costs four atomic read-modify-writes,
    /// about 30 ns: a tenth of the redaction of a 1 KiB message. So each thread keeps the
    /// generations it used last, and when the registry's stamp says the current one is
    /// among them, `f` gets it with no atomic write at all. Otherwise (a new generation,
    /// a registry this thread has not used lately, or a call from inside `f`) it takes
    /// the lock as before and remembers what it got.
    pub(crate) fn with_snapshot<R>(&self, mut f: impl FnMut(&KnownSet) -> R) -> R {
        let stamp = self.stamp.load(Ordering::Acquire);
        let cached = RECENT_SETS.try_with(|recent| {
            let recent = recent.try_borrow().ok()?;
            let (_, set) = recent.iter().flatten().find(|(_, set)| set.stamp == stamp)?;
            Some(f(set))
        });
        if let Ok(Some(out)) = cached {
            return out;
        }
        let set = self.snapshot();
        // Ignored when the thread is exiting or a caller up the stack holds the cache:
        // the set is used without being remembered.
        let _ = RECENT_SETS.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                // Over this registry's older generation if there is one, else over the
                // one remembered first; then moved to the front.
                let at = recent
                    .iter()
                    .position(|slot| slot.as_ref().is_none_or(|(id, _)| *id == self.id))
                    .unwrap_or(RECENT - 1);
                recent[at] = Some((self.id, Arc::clone(&set)));
                recent[..=at].rotate_right(1);
            }
        });
        f(&set)
    }
}

impl KnownSet {
    fn build(secrets: Vec<SecretString>) -> Self {
        let stamp = next_stamp();
        if secrets.is_empty() {
            return Self {
                stamp,
                clear_of_placeholders: true,
                ..Self::default()
            };
        }
        let mut patterns: Vec<Vec<u8>> = secrets.iter().flat_map(|s| variants(bytes_of(s))).collect();
        patterns.sort();
        patterns.dedup();
        // Standard semantics so overlapping occurrences are all reported. A failed build
        // (only possible past the automaton's size limits) falls back to the raw values.
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .or_else(|_| AhoCorasick::new(secrets.iter().map(bytes_of)))
            .ok()
            .filter(|_| !secrets.is_empty());
        // The patterns hold every raw value too (the fallback automaton's patterns).
        let clear_of_placeholders = clear_of_placeholders(&patterns);
        Self {
            stamp,
            secrets,
            automaton,
            clear_of_placeholders,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_cover_encodings() {
        let v = variants(b"s3cr3t/value+x");
        let has = |x: &str| v.iter().any(|p| p == x.as_bytes());
        assert!(has("s3cr3t/value+x"));
        assert!(has("s3cr3t%2Fvalue%2Bx"));
        assert!(has("s3cr3t%2fvalue%2bx"));
        assert!(
            has("czNjcjN0L3ZhbHVlK3"),
            "base64 without the last, partly padded, character"
        );
        assert!(v.iter().all(|p| p.len() >= MIN_KNOWN_SECRET_LEN));
    }

    #[test]
    fn placeholder_overlap_is_noticed() {
        let set = |v: &str| KnownSet::build(vec![SecretString::from(v)]).clear_of_placeholders;
        assert!(set("cred-00-q8Xv2LmN5tRz7WkPd4Hs9Yb"));
        assert!(!set("abc[defghij"));
        assert!(!set("abcdefgh]ij"));
        assert!(!set("REDACTED_EMAIL"));
        assert!(!set("EDACTED_"));
        assert!(KnownSet::default().clear_of_placeholders || KnownSet::default().automaton.is_none());
    }

    /// A call from inside another gets the current generation too, cached or not.
    #[test]
    fn nested_snapshots() {
        let (a, b) = (KnownSecrets::new(), KnownSecrets::new());
        assert!(a.add(&SecretString::from("outer-secret")));
        a.with_snapshot(|outer| {
            assert_eq!(outer.secrets.len(), 1);
            a.with_snapshot(|inner| assert_eq!(inner.stamp, outer.stamp));
            // Not cached yet, and the cache is in use up the stack.
            assert!(b.add(&SecretString::from("inner-secret")));
            b.with_snapshot(|inner| assert_eq!(inner.secrets.len(), 1));
        });
        b.with_snapshot(|set| assert_eq!(set.secrets.len(), 1));
    }

    #[test]
    fn add_remove() {
        let k = KnownSecrets::new();
        assert!(!k.add(&SecretString::from("short")));
        assert!(k.add(&SecretString::from("long-enough")));
        assert!(!k.add(&SecretString::from("long-enough")));
        assert_eq!(k.len(), 1);
        assert!(k.remove(&SecretString::from("long-enough")));
        assert!(k.is_empty());
        assert!(k.snapshot().automaton.is_none());
    }
}
