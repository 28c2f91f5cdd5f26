//! Removing personal data and secrets: the [`Redactor`] trait, [`Redacted`], and the
//! reference implementation [`PatternRedactor`].
//!
//! A [`Redacted<T>`] can only be made by a [`Redactor`], and audit sinks accept only
//! `Redacted` payloads, so "forgot to redact" is a type error rather than a review comment.
//!
//! # Example
//!
//! ```
//! use mcp_guard_core::redact::{Kind, PatternRedactor, SessionKey, Style};
//! use mcp_guard_core::Redactor;
//! use serde_json::json;
//!
//! let redactor = PatternRedactor::builder().build();
//! assert_eq!(
//!     redactor.redact_str("mail jane@acme.co or call (555) 123-4567"),
//!     "mail [REDACTED_EMAIL] or call [REDACTED_PHONE]",
//! );
//!
//! // JSON is walked structurally: keys, string leaves, numbers, JSON inside strings.
//! let out = redactor.redacted(json!({
//!     "card": 4111111111111111u64,
//!     "text": "{\"ip\": \"10.1.2.3\"}",
//!     "jane@acme.co": true,
//! }));
//! assert_eq!(out.get()["card"], "[REDACTED_CREDIT_CARD]");
//! assert_eq!(out.get()["text"], r#"{"ip":"[REDACTED_IP]"}"#);
//! assert_eq!(out.get()["[REDACTED_EMAIL]"], true);
//!
//! // Per endpoint: which kinds, and how they are replaced.
//! let endpoint = PatternRedactor::builder()
//!     .disable(Kind::Ipv4)
//!     .style(Style::Pseudonym)
//!     .style_for(Kind::CreditCard, Style::Partial)
//!     .session_key(SessionKey::from_bytes([7; 32]))
//!     .build();
//! assert_eq!(endpoint.redact_str("4111-1111-1111-1111"), "[REDACTED_CREDIT_CARD:\u{2026}1111]");
//! assert!(endpoint.redact_str("jane@acme.co").starts_with("[EMAIL:"));
//! assert_eq!(endpoint.redact_str("10.1.2.3"), "10.1.2.3");
//! ```
//!
//! # How [`PatternRedactor`] works
//!
//! Every string first gets a vector survey for *trigger* bytes (`0`-`9`, `:`, `@`, `_`,
//! `-`, `A` and `J`), for `earer ` (of `Bearer `) and, beyond ASCII, for characters that
//! fold (see below). Most strings (prose, keys, identifiers) have none, and the survey
//! is all they cost; when secrets are registered, their automaton runs on every string
//! as well. Otherwise one forward pass
//! over the bytes looks for the trigger bytes. Clean stretches are skipped by a vectorised multi-byte search
//! (`aho-corasick`'s Teddy, chosen at run time for the CPU) or, for short strings and
//! CPUs without it, a portable 64-byte block test that the compiler vectorises; near the
//! last trigger bytes are tested one at a time. At each digit run, every enabled numeric
//! detector whose shape can start there is tried on its own (there is no single
//! leftmost-first alternation, so a failed card candidate cannot hide the SSN inside
//! it), and most numbers are turned down by their length and the byte after them; at
//! each `@` the email detector, at each `:` the IPv6 detector, and at each `_`, `-`, `A`
//! or `J` a check for credential prefixes (`ghp_`, `sk-`, `AKIA`, `eyJ`…); a vector
//! search keyed on the two `r`s of `earer ` finds `Bearer`, and an Aho-Corasick
//! automaton finds registered secrets. Overlapping findings are merged and replaced in
//! one copy; a string with nothing to replace is returned as it is, without a copy.
//! All detectors are hand-written ASCII byte matchers with bounded look-around, so the
//! work is linear in the input and non-ASCII text costs nothing extra.
//!
//! # What each detector accepts and rejects
//!
//! Shared rule: a value must not be glued to a letter, digit or `_`, and a number must
//! not run on into another number through `.`, `-` or its own separator.
//!
//! | kind | accepts | rejects |
//! |---|---|---|
//! | [`Kind::Email`] | `local@domain.tld`; local part of letters, digits, `._%+-`; two or more domain labels, the last 2+ letters | `@handle`, `root@localhost`, `a@b.c`, labels starting or ending with `-`; addresses at documentation domains (`example.com`, `.test`…) unless [`PatternRedactorBuilder::documentation_domains`] is on |
//! | [`Kind::Phone`] | North American numbers: `(555) 123-4567`, `(555)123-4567`, `555-123-4567`, `555.123.4567`, `555 123 4567`, `555 123-4567`, `555/123-4567`, with an optional `+1`, `1`, `001` or `(+1)` prefix and an extension (`x123`, ` ext. 123`, `#123`), `+15551234567`; area code `[2-9]XX` (not `N11`); ten bare digits only under a JSON key naming a phone or with a phone word nearby (`phone`, `tel`, `mobile`, `call`…, no fence between); international numbers from `+` (8-15 digits, spaced groups, a trunk `(0)`) when [`PatternRedactorBuilder::e164`] is on | mixed separators (`555-123.4567`), area code starting with 0/1, bare ten-digit runs with no context |
//! | [`Kind::Ssn`] | `AAA-GG-SSSS` and `AAA GG SSSS`; nine bare digits only under a key naming an SSN | area 000, 666 or 900-999, group 00, serial 0000, mixed separators |
//! | [`Kind::CreditCard`] | 12-19 digits in one run, or in groups split by one kind of single separator (space or dash) laid out as cards are printed (`4-4-4-4`, `4-4-4-1..3`, `4-4-4-4-1..3`, `4-6-5`, `4-6-4`), also followed by an expiry or security code; must pass Luhn and match an issuer range: Visa `4` (13/16/19), Mastercard `51-55` and `2221-2720` (16), Amex `34`/`37` (15), Discover `6011`/`644-649`/`65` (16-19), Diners `300-305`/`3095`/`36`/`38`/`39` (14-19), JCB `35` (16-19) and `3528-3589`/`2131`/`1800` (15), `UnionPay` `62` (16-19), Maestro `50`/`56-69`/`0604` (16-19, and 12-15 only with a card word nearby or under a card key); also as a JSON number | numbers failing Luhn, unknown prefixes (epoch-millisecond timestamps start with `1`), other group layouts, runs embedded in longer numbers or words, a date or time glued to the end (`4947 8207 3841 5/1/1997`); space-separated groups that sit in a table of numbers (another number within a few blanks, or aligned after two or more spaces or a tab) |
//! | [`Kind::Ipv4`] | four octets 0-255 without leading zeros | octets above 255, `1.2.3.4.5`, `10.0.19045.2965`, `v1.2.3.4`, a quad right after the word `version`, `build`, `release` or `rv`, or under a JSON key naming a version, build or release |
//! | [`Kind::Ipv6`] | every RFC 4291 text form: full, `::`-compressed anywhere, embedded IPv4 (`::ffff:1.2.3.4`), zone ids (`fe80::1%eth0`, `%25eth0`) | a second `::`, wrong group counts, groups over 4 hex digits, compressed forms with neither a decimal digit nor 3+ groups (`A::B` is code more often than an address), `host:port`, clock times |
//! | [`Kind::Secret`] | AWS key ids (`AKIA`/`ASIA`… + 16), GitHub (`ghp_`… + 36+, `github_pat_`), Slack (`xox?-`), Stripe (`sk_live_`, `rk_live_`, test keys), `sk-` keys with letters and digits (`OpenAI`, Anthropic), Google `AIza…`, JWTs, PEM private key blocks (to the `END` line, or to the end of the key body when cut off), the token after `Bearer `, and any string under a credential key (`password`, `token`, `api_key`, `authorization`…) | prefixes glued to a word, bodies that are too short, `Bearer` followed by a plain word |
//! | [`Kind::KnownSecret`] | registered values ([`KnownSecrets`]) raw, in base64 at any alignment, percent-encoded and JSON-escaped | values shorter than [`MIN_KNOWN_SECRET_LEN`] (refused when registering) |
//!
//! Replacements contain no trigger a detector could complete (`[REDACTED_SSN]`,
//! `[EMAIL:3f9a1c2b]`, `[REDACTED_CREDIT_CARD:…1234]`), so redacting twice changes nothing.
//!
//! # Idempotence
//! A few rejections depend on context (an address glued to a token is not an address),
//! and a replacement changes that context. So a string with findings is scanned again
//! until nothing more is found; real text settles in one or two passes, and a pass that
//! could only meet the placeholders it follows is not taken. A string still
//! changing after [`MAX_PASSES`] passes can only be crafted, and is replaced as a whole by
//! [`UNSTABLE`]: fail closed, and still idempotent.
//!
//! # Beyond ASCII
//! A value written with characters beyond ASCII is found too: invisible characters
//! (every default-ignorable code point: zero-width spaces and joiners, bidirectional
//! controls, variation selectors, tags…) inside it are read as absent, decimal digits
//! of every script as `0`-`9`, full-width and small forms of ASCII as ASCII, other
//! spaces as a space and hyphens as `-`; the whole original span is replaced. The test
//! for such characters shares the survey: a string of 128 bytes or more beyond ASCII
//! costs two vector searches in all (the trigger bytes with the rarer lead bytes of such
//! characters; then the first three bytes of the common ones, with `rer ` for
//! `Bearer `), a shorter string one vector pass, an ASCII string a test for ASCII.
//!
//! # Limits
//! Names, street addresses and other free-text PII need a different kind of detector.
//! A dotted quad with no context (`1.2.3.4`) is an address even when it was a version.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

mod detect;
mod json;
mod known;
mod luhn;
mod pattern;
mod scan;
mod teddy;
mod unicode;
mod window;

#[cfg(any(test, feature = "test-util"))]
pub mod corpus;
#[cfg(any(test, feature = "test-util"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod tests;

pub use known::{KnownSecrets, MIN_KNOWN_SECRET_LEN};
pub use pattern::{
    Finding, Kind, MAX_PASSES, PatternRedactor, PatternRedactorBuilder, RedactionConfig, SessionKey, Style,
    UNSTABLE,
};

/// Finds sensitive values in text and JSON and replaces them.
///
/// Synchronous and pure: no I/O, no shared mutable state. Implementations must be
/// idempotent (redacting twice changes nothing) and must never produce a replacement
/// that one of their own detectors matches.
pub trait Redactor: Send + Sync {
    /// Redacts one string. Returns `Cow::Borrowed` when nothing was found.
    fn redact_str<'a>(&self, input: &'a str) -> Cow<'a, str>;

    /// Redacts a JSON value in place: every string leaf and every object key.
    ///
    /// Never serialise then pattern-match JSON text: escapes such as `\"` or `\u0040`
    /// would hide values from the patterns. The default walks the tree; it keeps the
    /// shape (keys, array lengths) and only rewrites strings.
    fn redact_json(&self, value: &mut Value) {
        walk(self, value, 0);
    }

    /// Redacts `value` and marks it as such. The only way to build a [`Redacted`].
    fn redacted(&self, mut value: Value) -> Redacted<Value> {
        self.redact_json(&mut value);
        Redacted(value)
    }

    /// Redacts a string and marks it as such.
    fn redacted_str(&self, value: &str) -> Redacted<String> {
        Redacted(self.redact_str(value).into_owned())
    }
}

/// Deeper than this, [`Redactor::redact_json`]'s default walk replaces the subtree with
/// a marker instead of recursing: bounded stack on hostile input.
pub const MAX_JSON_DEPTH: usize = 128;

/// Text a subtree deeper than [`MAX_JSON_DEPTH`] is replaced with.
pub const TOO_DEEP: &str = "[REDACTED_TOO_DEEP]";

/// Replaces a subtree deeper than [`MAX_JSON_DEPTH`] with [`TOO_DEEP`], and drops the
/// old subtree without recursion: dropping a `Value` recurses once per level, and a
/// value built in memory (rather than parsed, which `serde_json` limits to 128 levels)
/// may be deep enough to overflow the stack.
pub(crate) fn replace_too_deep(value: &mut Value) {
    let mut stack = vec![std::mem::replace(value, Value::String(TOO_DEEP.to_owned()))];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }
}

fn walk<R: Redactor + ?Sized>(r: &R, value: &mut Value, depth: usize) {
    if depth >= MAX_JSON_DEPTH {
        replace_too_deep(value);
        return;
    }
    match value {
        Value::String(s) => {
            if let Cow::Owned(new) = r.redact_str(s) {
                *s = new;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| walk(r, v, depth + 1)),
        Value::Object(map) => {
            let needs_key_rewrite = map.keys().any(|k| matches!(r.redact_str(k), Cow::Owned(_)));
            if needs_key_rewrite {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    walk(r, &mut v, depth + 1);
                    let key = r.redact_str(&k).into_owned();
                    // Two keys redacted to the same placeholder: keep both values.
                    let mut key_out = key.clone();
                    let mut n = 2;
                    while map.contains_key(&key_out) {
                        key_out = format!("{key}#{n}");
                        n += 1;
                    }
                    map.insert(key_out, v);
                }
            } else {
                map.values_mut().for_each(|v| walk(r, v, depth + 1));
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

impl<R: Redactor + ?Sized> Redactor for std::sync::Arc<R> {
    fn redact_str<'a>(&self, input: &'a str) -> Cow<'a, str> {
        (**self).redact_str(input)
    }
    fn redact_json(&self, value: &mut Value) {
        (**self).redact_json(value);
    }
}

impl<R: Redactor + ?Sized> Redactor for Box<R> {
    fn redact_str<'a>(&self, input: &'a str) -> Cow<'a, str> {
        (**self).redact_str(input)
    }
    fn redact_json(&self, value: &mut Value) {
        (**self).redact_json(value);
    }
}

/// A value that went through a [`Redactor`]. Only a `Redactor` can build one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// The redacted value.
    pub fn get(&self) -> &T {
        &self.0
    }

    /// Unwraps the redacted value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl Redacted<Value> {
    /// Caps the serialised size at `max_bytes`, replacing an oversized value with a
    /// marker object that records the original size. Returns whether it truncated.
    pub fn cap(&mut self, max_bytes: usize) -> bool {
        let size = serde_json::to_vec(&self.0).map_or(0, |v| v.len());
        if size <= max_bytes {
            return false;
        }
        self.0 = serde_json::json!({ "truncated": true, "original_bytes": size });
        true
    }
}

#[cfg(test)]
mod trait_tests {
    use super::*;

    struct Upper;
    impl Redactor for Upper {
        fn redact_str<'a>(&self, input: &'a str) -> Cow<'a, str> {
            if input.contains("secret") {
                Cow::Owned(input.replace("secret", "[X]"))
            } else {
                Cow::Borrowed(input)
            }
        }
    }

    #[test]
    fn walks_keys_and_leaves_keeping_shape() {
        let v =
            serde_json::json!({"a": ["secret", 1], "secret": "x", "secret ": "y", "n": {"m": "my secret"}});
        let out = Upper.redacted(v).into_inner();
        assert_eq!(out["a"], serde_json::json!(["[X]", 1]));
        assert_eq!(out["[X]"], "x");
        assert_eq!(out["[X] "], "y");
        assert_eq!(out["n"]["m"], "my [X]");
    }

    #[test]
    fn deep_json_is_bounded() {
        let mut v = Value::String("secret".into());
        for _ in 0..10_000 {
            v = Value::Array(vec![v]);
        }
        let out = Upper.redacted(v);
        let s = serde_json::to_string(out.get()).unwrap();
        assert!(s.contains(TOO_DEEP));
    }
}
