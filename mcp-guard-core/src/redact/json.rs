//! The structure-aware JSON walk of [`PatternRedactor`].

use std::cell::Cell;
use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use super::detect::numeric;
use super::known::KnownSet;
use super::pattern::{Kind, PatternRedactor};
use super::scan::{Hints, Hit, SHORT, Start, Survey, is_trigger};
use super::{MAX_JSON_DEPTH, TOO_DEEP};

/// Findings buffers kept larger than this (in findings) are not reused.
const KEPT_HITS: usize = 1 << 12;

thread_local! {
    /// The findings buffer of the last document redacted on this thread, for the next:
    /// a table of numbers has dozens of findings per string, and a fresh buffer grown
    /// for every document cost a tenth of the time of a 1 KiB table.
    static HITS: Cell<Vec<Hit>> = const { Cell::new(Vec::new()) };
}

pub(crate) fn redact(r: &PatternRedactor, value: &mut Value) {
    r.known_secrets().with_snapshot(|known| {
        let mut w = Walk {
            r,
            known,
            hits: HITS.take(),
            keys: Vec::new(),
            out: String::new(),
            spare: String::new(),
            uncached: 0,
        };
        w.walk(value, 0, Hints::default());
        if w.hits.capacity() <= KEPT_HITS {
            w.hits.clear();
            HITS.set(w.hits);
        }
    });
}

struct Walk<'a> {
    r: &'a PatternRedactor,
    known: &'a KnownSet,
    hits: Vec<Hit>,
    /// Keys seen in this document with their hints and redacted form (documents repeat
    /// the same keys in every row): a small direct-mapped cache, so a lookup is a cheap
    /// hash and one comparison, and hostile key sets cost bounded memory.
    keys: Vec<Option<CachedKey>>,
    /// Output buffers of [`PatternRedactor::redact_into`], reused for every string.
    out: String,
    spare: String,
    /// Keys looked up without the cache so far: the first [`UNCACHED_KEYS`] of a
    /// document are not cached, so a small document pays for no cache allocation.
    uncached: usize,
}

struct CachedKey {
    id: KeyId,
    hints: Hints,
    renamed: Option<String>,
}

/// Keys of a document handled before the key cache is set up: below about this many, the
/// cache's set-up costs more than the look-ups it saves (measured on a 1 KiB table).
const UNCACHED_KEYS: usize = 32;

/// Slots of the key cache (a power of two).
const KEY_SLOTS: usize = 64;

/// The longest key with a [`KeyId`]: longer keys (rare) are not cached.
const KEY_ID_MAX_LEN: usize = 24;

/// A key of at most [`KEY_ID_MAX_LEN`] bytes as its length and three words that together
/// hold every byte of it, so that two keys are equal exactly when their ids are: a key
/// compare is four integer compares instead of a call to `memcmp`. The words overlap
/// where the key is shorter than they are (a key of 5 bytes is bytes 0-3 and 1-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyId {
    len: u32,
    a: u64,
    b: u64,
    c: u64,
}

/// The little-endian word of `N` bytes of `k` at `at` (`at + N <= k.len()`).
fn word<const N: usize>(k: &[u8], at: usize) -> u64 {
    k[at..at + N].iter().rev().fold(0, |x, &b| x << 8 | u64::from(b))
}

impl KeyId {
    /// The id of `key`, `None` when it is longer than [`KEY_ID_MAX_LEN`].
    #[inline]
    fn of(key: &[u8]) -> Option<KeyId> {
        let len = key.len();
        let (first, middle, last) = match len {
            0 => (0, 0, 0),
            1..=3 => {
                let bytes = word::<1>(key, 0) | word::<1>(key, len / 2) << 8 | word::<1>(key, len - 1) << 16;
                (bytes, 0, 0)
            }
            4..=7 => (word::<4>(key, 0) | word::<4>(key, len - 4) << 32, 0, 0),
            8..=16 => (word::<8>(key, 0), 0, word::<8>(key, len - 8)),
            17..=KEY_ID_MAX_LEN => (word::<8>(key, 0), word::<8>(key, 8), word::<8>(key, len - 8)),
            _ => return None,
        };
        #[allow(clippy::cast_possible_truncation, reason = "len <= KEY_ID_MAX_LEN")]
        Some(KeyId {
            len: len as u32,
            a: first,
            b: middle,
            c: last,
        })
    }

    /// A multiplicative hash of the id, `bits` (at most 32) wide.
    #[inline]
    fn hash(&self, bits: u32) -> usize {
        let x = self.a ^ self.b.rotate_left(1) ^ self.c.rotate_left(3) ^ u64::from(self.len);
        #[allow(clippy::cast_possible_truncation, reason = "the value has `bits` <= 32 bits")]
        let slot = (x.wrapping_mul(0xC4CE_B9FE_1A85_EC53) >> (64 - bits)) as usize;
        slot
    }
}

/// Keys of the MCP and JSON-RPC envelopes (and common JSON Schema words): no trigger
/// byte, no hint. Every message carries several, so they skip even the survey. A `match`
/// on strings is a switch on the length and a few word compares (cheaper, for these
/// short keys, than a [`KeyId`] and a table).
fn plain_key(k: &str) -> bool {
    matches!(
        k,
        "jsonrpc"
            | "id"
            | "result"
            | "method"
            | "params"
            | "error"
            | "code"
            | "message"
            | "data"
            | "content"
            | "contents"
            | "type"
            | "text"
            | "isError"
            | "structuredContent"
            | "name"
            | "title"
            | "description"
            | "arguments"
            | "mimeType"
            | "uri"
            | "blob"
            | "resource"
            | "annotations"
            | "audience"
            | "priority"
            | "lastModified"
            | "size"
            | "tools"
            | "prompts"
            | "resources"
            | "messages"
            | "role"
            | "nextCursor"
            | "cursor"
            | "inputSchema"
            | "outputSchema"
            | "properties"
            | "required"
            | "items"
            | "level"
            | "logger"
            | "values"
            | "total"
            | "hasMore"
    )
}

/// Keys (lower-cased, without `_`, `-`, `.` and spaces) whose string value is a
/// credential as a whole: the reference list the tests hold [`exact_key`]'s `match` to.
#[cfg(test)]
const SECRET_KEYS: &[&[u8]] = &[
    b"password",
    b"passwd",
    b"pwd",
    b"secret",
    b"clientsecret",
    b"apikey",
    b"xapikey",
    b"apitoken",
    b"accesstoken",
    b"refreshtoken",
    b"idtoken",
    b"authtoken",
    b"token",
    b"bearertoken",
    b"authorization",
    b"privatekey",
    b"secretkey",
    b"secretaccesskey",
    b"awssecretaccesskey",
    b"sessiontoken",
    b"proxyauthorization",
];

/// The set of ASCII letters in `word`, case folded, as bits `a` = 0 to `z` = 25.
const fn letters(word: &[u8]) -> u32 {
    let mut set = 0;
    let mut i = 0;
    while i < word.len() {
        let l = (word[i] | 0x20).wrapping_sub(b'a');
        if l < 26 {
            set |= 1 << l;
        }
        i += 1;
    }
    set
}

/// The bit of each ASCII letter in [`letters`], 0 for other bytes.
static LETTER: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut b = 0u8;
    loop {
        t[b as usize] = letters(&[b]);
        if b == u8::MAX {
            break t;
        }
        b += 1;
    }
};

/// For each word [`key_hints`] looks for, a set of letters the key must contain: a key
/// that holds none of these sets in full (`type`, `text`, `id`, `amount`, `rows`…) says
/// nothing, which is decided without normalising it or comparing it to any word.
const HINT_LETTERS: [u32; 23] = [
    letters(b"ean"),
    letters(b"isbn"),
    letters(b"gtin"),
    letters(b"upc"),
    letters(b"barcode"),
    letters(b"sku"),
    letters(b"build"),
    letters(b"release"),
    letters(b"card"),
    letters(b"cc"),
    letters(b"pan"),
    letters(b"ssn"),
    letters(b"socialsecurity"),
    letters(b"phone"),
    letters(b"mobile"),
    letters(b"v"),
    letters(b"tel"),
    letters(b"fax"),
    letters(b"pwd"),
    letters(b"secret"),
    letters(b"token"),
    letters(b"apikey"),
    letters(b"authorization"),
];

/// What a key says about its value.
pub(crate) fn key_hints(key: &str) -> Hints {
    let set = key.bytes().fold(0, |set, b| set | LETTER[usize::from(b)]);
    if !HINT_LETTERS.iter().any(|&w| w & !set == 0) {
        return Hints::default();
    }
    key_hints_slow(key)
}

/// What a whole (normalised) key says: a `match` on byte strings, which the compiler
/// turns into a switch on the length and a few byte tests.
fn exact_key(k: &[u8]) -> Hints {
    let mut hints = Hints::default();
    match k {
        b"tel" | b"fax" => hints.phone = true,
        b"ver" | b"v" => hints.version = true,
        b"cc" | b"ccnumber" | b"ccnum" | b"pan" => hints.card = true,
        b"ean" | b"ean13" | b"isbn" | b"isbn13" | b"gtin" | b"upc" | b"barcode" | b"sku" => {
            hints.product = true;
        }
        b"password"
        | b"passwd"
        | b"pwd"
        | b"secret"
        | b"clientsecret"
        | b"apikey"
        | b"xapikey"
        | b"apitoken"
        | b"accesstoken"
        | b"refreshtoken"
        | b"idtoken"
        | b"authtoken"
        | b"token"
        | b"bearertoken"
        | b"authorization"
        | b"privatekey"
        | b"secretkey"
        | b"secretaccesskey"
        | b"awssecretaccesskey"
        | b"sessiontoken"
        | b"proxyauthorization" => hints.secret = true,
        _ => {}
    }
    hints
}

/// [`key_hints`] without the letter-set shortcut.
fn key_hints_slow(key: &str) -> Hints {
    let mut buf = [0u8; 48];
    let mut n = 0;
    for &b in key.as_bytes() {
        if matches!(b, b'_' | b'-' | b'.' | b' ') {
            continue;
        }
        if n == buf.len() {
            return Hints::default();
        }
        buf[n] = b.to_ascii_lowercase();
        n += 1;
    }
    let k = &buf[..n];
    let mut hints = exact_key(k);
    // One pass for the words that may sit anywhere in the key: each starts with its
    // own letter, so most positions cost one byte compare.
    for i in 0..k.len() {
        let rest = &k[i..];
        match rest[0] {
            b's' => hints.ssn |= rest.starts_with(b"ssn") || rest.starts_with(b"socialsecurity"),
            b'p' => hints.phone |= rest.starts_with(b"phone"),
            b'm' => hints.phone |= rest.starts_with(b"mobile"),
            b'v' => hints.version |= rest.starts_with(b"version"),
            b'b' => hints.version |= rest.starts_with(b"build"),
            b'r' => hints.version |= rest.starts_with(b"release"),
            b'c' => hints.card |= rest.starts_with(b"card"),
            _ => {}
        }
    }
    hints
}

/// A string that may hold a JSON object or array.
pub(crate) fn looks_like_json(s: &str) -> bool {
    let t = s.trim_ascii();
    matches!(
        (t.as_bytes().first(), t.as_bytes().last()),
        (Some(b'{'), Some(b'}')) | (Some(b'['), Some(b']'))
    )
}

impl Walk<'_> {
    /// Redacts `v` in place; returns whether anything changed.
    fn walk(&mut self, v: &mut Value, depth: usize, hints: Hints) -> bool {
        if depth >= MAX_JSON_DEPTH {
            super::replace_too_deep(v);
            return true;
        }
        match v {
            Value::String(s) => self.string(s, depth, hints),
            Value::Number(n) => match self.number(n, hints) {
                Some(rep) => {
                    *v = Value::String(rep);
                    true
                }
                None => false,
            },
            Value::Array(items) => {
                let mut changed = false;
                for item in items {
                    changed |= self.walk(item, depth + 1, hints);
                }
                changed
            }
            Value::Object(map) => self.object(map, depth),
            Value::Null | Value::Bool(_) => false,
        }
    }

    fn string(&mut self, s: &mut String, depth: usize, hints: Hints) -> bool {
        // Most strings hold no trigger at all: one vector pass and done. (Nor can JSON
        // inside such a string: an escape that decodes to an ASCII trigger, `\u0040`,
        // has the digits `00` in it.) A string with characters that fold (invisible
        // ones, digits of other scripts, full-width forms) is read folded too, on the
        // slower path: `start` is `None` then.
        let start = if hints.secret {
            Some(Start::WHOLE)
        } else {
            match self.r.survey_text(self.known, s.as_bytes()) {
                Survey::Nothing => return false,
                Survey::Folds => None,
                Survey::Scan(start) => Some(start),
            }
        };
        if !hints.secret
            && looks_like_json(s)
            && let Ok(mut inner) = serde_json::from_str::<Value>(s)
        {
            if !self.walk(&mut inner, depth + 1, Hints::default()) {
                return false;
            }
            let text = if s.contains('\n') {
                serde_json::to_string_pretty(&inner)
            } else {
                serde_json::to_string(&inner)
            };
            *s = text.unwrap_or_else(|_| TOO_DEEP.to_owned());
            return true;
        }
        let Some(start) = start else {
            return match self.r.redact_folding_str(s, hints, self.known, &mut self.hits) {
                Some(out) => {
                    *s = out;
                    true
                }
                None => false,
            };
        };
        self.r.redact_string(
            s,
            start,
            hints,
            self.known,
            &mut self.hits,
            &mut self.out,
            &mut self.spare,
        )
    }

    /// The redacted form of key `k`, if it has anything to redact.
    fn redacted_key(&mut self, k: &str) -> Option<String> {
        // Most keys are a short ASCII word with no trigger byte: nothing to find there
        // (too short for `Bearer ` and a token; and no registered secret), told here
        // without the survey's calls.
        if k.len() < SHORT && self.known.automaton.is_none() && k.bytes().all(|b| b < 0x80 && !is_trigger(b))
        {
            return None;
        }
        let start = match self.r.survey_text(self.known, k.as_bytes()) {
            Survey::Nothing => return None,
            Survey::Folds => {
                return self
                    .r
                    .redact_folding_str(k, Hints::default(), self.known, &mut self.hits);
            }
            Survey::Scan(start) => start,
        };
        self.r
            .redact_into(
                k,
                start,
                Hints::default(),
                self.known,
                &mut self.hits,
                &mut self.out,
                &mut self.spare,
            )
            .then(|| self.out.clone())
    }

    /// A number that is a card (always), an SSN or phone number (under a key that says
    /// so) or anything under a credential key becomes a placeholder string.
    fn number(&self, n: &Number, hints: Hints) -> Option<String> {
        if hints.secret {
            return Some(Kind::Secret.placeholder().to_owned());
        }
        let mut u = n.as_u64()?;
        // Below 9 digits nothing; below 2 * 10^12 (12 digits, or 13 starting with `1`,
        // as epoch milliseconds do) no card, so nothing without a key that names an SSN,
        // a phone number or a card (a Maestro number may have 12 digits).
        if u < 100_000_000 || u < 2_000_000_000_000 && !(hints.ssn || hints.phone || hints.card) {
            return None;
        }
        let sc = self.r.scanner();
        // Which kinds this many digits can be, before spelling the digits out: cards
        // have 13-19 digits and start with 2-6; SSNs 9; phone numbers 10 or 11.
        let digits = u.ilog10() + 1;
        // The first digit is 2-6 when `u` lies in [2, 7) times the lowest power of ten of
        // its length. (Divided by constants, which compile to multiplications, rather
        // than by that power; and no product that could overflow.)
        let low = 10u64.pow(digits - 1);
        let card = sc.on(Kind::CreditCard)
            && !(hints.product && digits == 13)
            && (digits >= 13 && u / 2 >= low && u / 7 < low
                || digits == 15 && u / low == 1
                || hints.card && digits >= 12 && matches!(u / low, 5 | 6));
        let ssn = hints.ssn && digits == 9 && sc.on(Kind::Ssn);
        let phone = hints.phone && (digits == 10 || digits == 11) && sc.on(Kind::Phone);
        if !(card || ssn || phone) {
            return None;
        }
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        while u > 0 {
            i -= 1;
            buf[i] = b'0' + u8::try_from(u % 10).unwrap_or(0);
            u /= 10;
        }
        let d = &buf[i..];
        let kind = if card && numeric::card_digits_valid(d, hints.card) {
            Kind::CreditCard
        } else if ssn && numeric::ssn_digits_valid(d) {
            Kind::Ssn
        } else if phone && numeric::nanp_digits_valid(d) {
            Kind::Phone
        } else {
            return None;
        };
        let mut out = String::new();
        self.r.render(kind, d, &mut out);
        Some(out)
    }

    /// Hints and redacted form of a key. The hints are those of the key as it comes
    /// out: a key that held an SSN comes out with `[REDACTED_SSN]` in it, which names
    /// one, and a second redaction of the document must read the same hints as the
    /// first (idempotence).
    fn key(&mut self, k: &str) -> (Hints, Option<String>) {
        if plain_key(k) {
            return (Hints::default(), None);
        }
        let id = if self.uncached < UNCACHED_KEYS {
            self.uncached += 1;
            None
        } else {
            KeyId::of(k.as_bytes())
        };
        let Some(id) = id else {
            let renamed = self.redacted_key(k);
            return (key_hints(renamed.as_deref().unwrap_or(k)), renamed);
        };
        let slot = id.hash(KEY_SLOTS.trailing_zeros());
        let other = (slot + 1) % KEY_SLOTS;
        for s in [slot, other] {
            if let Some(Some(c)) = self.keys.get(s)
                && c.id == id
            {
                return (c.hints, c.renamed.clone());
            }
        }
        let renamed = self.redacted_key(k);
        let hints = key_hints(renamed.as_deref().unwrap_or(k));
        if self.keys.is_empty() {
            self.keys.resize_with(KEY_SLOTS, || None);
        }
        // Two-way: a free slot of the pair, else the second one.
        let s = if self.keys[slot].is_none() { slot } else { other };
        self.keys[s] = Some(CachedKey {
            id,
            hints,
            renamed: renamed.clone(),
        });
        (hints, renamed)
    }

    fn object(&mut self, map: &mut Map<String, Value>, depth: usize) -> bool {
        let mut changed = false;
        // Built only when a key needs renaming (most objects have none).
        let mut renamed: Option<HashMap<String, String>> = None;
        for (k, v) in map.iter_mut() {
            let (hints, new_key) = self.key(k);
            changed |= self.walk(v, depth + 1, hints);
            if let Some(n) = new_key {
                renamed.get_or_insert_with(HashMap::new).insert(k.clone(), n);
            }
        }
        let Some(mut renamed) = renamed else {
            return changed;
        };
        let old = std::mem::take(map);
        let mut next_suffix: HashMap<String, usize> = HashMap::new();
        for (k, v) in old {
            let key = renamed.remove(&k).unwrap_or(k);
            // Two keys redacted to the same placeholder: keep both values.
            let mut out = key.clone();
            if map.contains_key(&out) {
                let n = next_suffix.entry(key.clone()).or_insert(2);
                loop {
                    out = format!("{key}#{n}");
                    *n += 1;
                    if !map.contains_key(&out) {
                        break;
                    }
                }
            }
            map.insert(out, v);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The envelope keys that skip every test have neither a hint nor a trigger.
    #[test]
    fn plain_keys_are_plain() {
        let r = PatternRedactor::builder().build();
        for k in [
            "jsonrpc",
            "id",
            "result",
            "method",
            "params",
            "error",
            "code",
            "message",
            "data",
            "content",
            "contents",
            "type",
            "text",
            "isError",
            "structuredContent",
            "name",
            "title",
            "description",
            "arguments",
            "mimeType",
            "uri",
            "blob",
            "resource",
            "annotations",
            "audience",
            "priority",
            "lastModified",
            "size",
            "tools",
            "prompts",
            "resources",
            "messages",
            "role",
            "nextCursor",
            "cursor",
            "inputSchema",
            "outputSchema",
            "properties",
            "required",
            "items",
            "level",
            "logger",
            "values",
            "total",
            "hasMore",
        ] {
            assert!(plain_key(k), "{k}");
            assert_eq!(key_hints_slow(k), Hints::default(), "{k}");
            assert_eq!(r.scanner().survey(k.as_bytes()), None, "{k}");
        }
        assert!(!plain_key("password") && !plain_key("phone") && !plain_key("Type"));
    }

    /// A key's id holds every byte of it: changing any one byte of a key changes its
    /// id, and equal keys have equal ids, at every length that has an id.
    #[test]
    fn key_ids_tell_keys_apart() {
        let mut rng = super::super::corpus::Rng::new(0x6b65_7969);
        for len in 0..=KEY_ID_MAX_LEN {
            for _ in 0..50 {
                let key: Vec<u8> = (0..len).map(|_| *rng.pick(b"abAB_-.0")).collect();
                let id = KeyId::of(&key).unwrap();
                assert_eq!(KeyId::of(&key.clone()), Some(id));
                for at in 0..len {
                    let mut other = key.clone();
                    other[at] ^= *rng.pick(&[1, 2, 4, 8, 16, 32, 64, 128]);
                    assert_ne!(KeyId::of(&other), Some(id), "{len} bytes, byte {at}");
                }
            }
        }
        assert_eq!(KeyId::of(&[b'k'; KEY_ID_MAX_LEN + 1]), None);
        assert_ne!(KeyId::of(b"ab"), KeyId::of(b"abb"), "lengths differ");
    }

    /// The letter-set shortcut never turns down a key the full test gives a hint.
    #[test]
    fn key_shortcut_keeps_every_hint() {
        let mut keys: Vec<String> = SECRET_KEYS
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        keys.extend(
            [
                "ssn",
                "SSN",
                "customer_ssn",
                "Social-Security",
                "socialSecurityNumber",
                "phone",
                "mobilePhone",
                "Mobile",
                "tel",
                "FAX",
                "v",
                "ver",
                "Version",
                "apiVersion",
                "x-api-key",
                "X_API_KEY",
                "Authorization",
                "client.secret",
                "access token",
                "AWS_SECRET_ACCESS_KEY",
                "private-key",
                "Pass_Word",
                "home_phone_2",
            ]
            .map(String::from),
        );
        for k in SECRET_KEYS {
            assert!(exact_key(k).secret, "{}", String::from_utf8_lossy(k));
        }
        for k in &keys {
            assert_ne!(key_hints_slow(k), Hints::default(), "{k} has a hint");
            assert_eq!(key_hints(k), key_hints_slow(k), "{k}");
        }
        for k in [
            "type", "text", "id", "amount", "rows", "note", "result", "jsonrpc", "content",
        ] {
            assert_eq!(key_hints(k), key_hints_slow(k), "{k}");
        }
    }
}
