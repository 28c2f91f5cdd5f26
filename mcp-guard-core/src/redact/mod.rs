//! Removing personal data and secrets: the [`Redactor`] trait and [`Redacted`].
//!
//! A [`Redacted<T>`] can only be made by a [`Redactor`], and audit sinks accept only
//! `Redacted` payloads, so "forgot to redact" is a type error rather than a review comment.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

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

fn walk<R: Redactor + ?Sized>(r: &R, value: &mut Value, depth: usize) {
    if depth >= MAX_JSON_DEPTH {
        *value = Value::String(TOO_DEEP.to_owned());
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
mod tests {
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
