//! The hash chain shared by the durable sinks: sealing a record and checking one.
//!
//! A sealed record is one line of JSON:
//!
//! ```text
//! {"seq":7,"prev":"<64 hex>","event":{...},"hash":"<64 hex>","mac":"<64 hex>"}
//! ```
//!
//! The *body* of a record is its bytes up to, not including, `,"hash":`, exactly as
//! stored. `hash = SHA-256(body)`; `mac = HMAC-SHA256(key, body)` when a key is
//! configured. The body contains `seq` and `prev` (the previous record's `hash`;
//! 64 zeros for the first record ever), so changing, deleting, inserting or
//! reordering a record breaks the chain at that record. Hashing the stored bytes
//! (rather than a re-serialisation) means the verifier never has to reproduce the
//! writer's formatting, and any byte changed anywhere in a record is detected.

use std::fmt::Write as _;
use std::path::Path;

use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretBox};
use sha2::{Digest as _, Sha256};

use super::AuditError;
use crate::hex::{decode as unhex, encode as hex};

/// `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The key of the keyed MAC over each record (HMAC-SHA256).
///
/// Keep it outside the log: whoever holds it can forge records. Its `Debug` prints
/// no key material.
pub struct MacKey(SecretBox<Vec<u8>>);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey([REDACTED])")
    }
}

impl Clone for MacKey {
    fn clone(&self) -> Self {
        Self(SecretBox::new(Box::new(self.bytes().to_vec())))
    }
}

/// Shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

impl MacKey {
    /// A key from raw bytes (at least 16).
    ///
    /// # Errors
    /// [`AuditError::Key`] when the key is shorter than [`MIN_KEY_BYTES`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, AuditError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(AuditError::Key {
                reason: format!("shorter than {MIN_KEY_BYTES} bytes"),
            });
        }
        Ok(Self(SecretBox::new(Box::new(bytes))))
    }

    /// Reads a key file; surrounding whitespace (a trailing newline) is ignored.
    ///
    /// # Errors
    /// [`AuditError::Key`] when the file cannot be read or is too short; the error
    /// names the file, never its content.
    pub fn from_file(path: &Path) -> Result<Self, AuditError> {
        let raw = std::fs::read(path).map_err(|e| AuditError::Key {
            reason: format!("cannot read {}: {}", path.display(), e.kind()),
        })?;
        let trimmed = raw.trim_ascii().to_vec();
        drop(SecretBox::new(Box::new(raw)));
        Self::new(trimmed).map_err(|_| AuditError::Key {
            reason: format!("{} holds fewer than {MIN_KEY_BYTES} bytes", path.display()),
        })
    }

    /// Reads a key from environment variable `name`.
    ///
    /// # Errors
    /// [`AuditError::Key`] when the variable is unset or too short.
    pub fn from_env(name: &str) -> Result<Self, AuditError> {
        let v = std::env::var(name).map_err(|_| AuditError::Key {
            reason: format!("environment variable {name} is not set"),
        })?;
        Self::new(v.into_bytes()).map_err(|_| AuditError::Key {
            reason: format!("environment variable {name} holds fewer than {MIN_KEY_BYTES} bytes"),
        })
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "the MAC key meets the data only inside the HMAC computation"
    )]
    fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    fn mac(&self, body: &[u8]) -> String {
        // HMAC accepts keys of any length.
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(self.bytes()) else {
            return String::new();
        };
        m.update(body);
        hex(&m.finalize().into_bytes())
    }

    fn verify(&self, body: &[u8], mac_hex: &str) -> bool {
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(self.bytes()) else {
            return false;
        };
        m.update(body);
        let Some(expected) = unhex(mac_hex) else {
            return false;
        };
        m.verify_slice(&expected).is_ok() // constant time
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The writer's end of a chain: the next `seq` and the last `hash`.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) next_seq: u64,
    pub(crate) prev: String,
}

impl Default for Head {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev: GENESIS.to_owned(),
        }
    }
}

/// A record sealed onto the chain (the tests' view; the sinks seal into buffers).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Sealed {
    /// The whole line, with the trailing newline.
    pub(crate) line: String,
    pub(crate) seq: u64,
    pub(crate) hash: String,
    pub(crate) mac: Option<String>,
}

impl Head {
    /// Seals `event_json` (one serialised event, no newline) as the next record and
    /// advances the head.
    #[cfg(test)]
    pub(crate) fn seal(&mut self, event_json: &str, key: Option<&MacKey>) -> Sealed {
        let mut line = String::with_capacity(event_json.len() + 240);
        let (seq, mac) = self.seal_into(&mut line, event_json, key);
        Sealed {
            line,
            seq,
            hash: self.prev.clone(),
            mac,
        }
    }

    /// Appends the next record (the whole line, with its newline) to `out` and advances
    /// the head; returns its `seq` and MAC. Its hash is then [`Head::prev`]. Nothing is
    /// allocated but the MAC and what `out` needs to grow.
    pub(crate) fn seal_into(
        &mut self,
        out: &mut String,
        event_json: &str,
        key: Option<&MacKey>,
    ) -> (u64, Option<String>) {
        let seq = self.next_seq;
        let start = out.len();
        out.reserve(event_json.len() + 240);
        let _ = write!(out, "{{\"seq\":{seq},\"prev\":\"{}\",\"event\":", self.prev);
        out.push_str(event_json);
        let body = &out.as_bytes()[start..];
        let digest = Sha256::digest(body);
        let mac = key.map(|k| k.mac(body));
        self.prev.clear();
        crate::hex::encode_into(&mut self.prev, &digest);
        out.push_str(",\"hash\":\"");
        out.push_str(&self.prev);
        out.push('"');
        if let Some(m) = &mac {
            out.push_str(",\"mac\":\"");
            out.push_str(m);
            out.push('"');
        }
        out.push_str("}\n");
        self.next_seq = seq + 1;
        (seq, mac)
    }
}

/// One record as read back: its claimed fields and whether its own seal holds.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub(crate) seq: u64,
    pub(crate) prev: String,
    pub(crate) hash: String,
    pub(crate) event: serde_json::Value,
    /// SHA-256 of the body matches `hash`.
    pub(crate) hash_ok: bool,
    /// `None`: no key given; `Some(false)`: MAC missing or wrong.
    pub(crate) mac_ok: Option<bool>,
}

const HEX64: usize = 64;

/// Splits `line` (no newline) into body, hash and optional MAC; `None` when the
/// line does not end the way a sealed record ends.
fn split(line: &str) -> Option<(&str, &str, Option<&str>)> {
    let rest = line.strip_suffix("\"}")?;
    let (rest, mac) = match rest.len().checked_sub(HEX64 + 8) {
        Some(i) if rest.get(i..i + 8) == Some(",\"mac\":\"") => (&rest[..i], Some(&rest[i + 8..])),
        _ => (rest, None),
    };
    let rest = match mac {
        Some(_) => rest.strip_suffix('"')?,
        None => rest,
    };
    let i = rest.len().checked_sub(HEX64 + 9)?;
    if rest.get(i..i + 9) != Some(",\"hash\":\"") {
        return None;
    }
    let hash = &rest[i + 9..];
    let is_hex = |s: &str| s.len() == HEX64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !is_hex(hash) || mac.is_some_and(|m| !is_hex(m)) {
        return None;
    }
    Some((&rest[..i], hash, mac))
}

/// Reads one record (a line without its newline). `Err` says why it is not a record.
pub(crate) fn parse(line: &str, key: Option<&MacKey>) -> Result<Parsed, String> {
    let (body, hash, mac) =
        split(line).ok_or_else(|| "malformed record: no trailing hash field".to_owned())?;
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("malformed record: not JSON ({e})"))?;
    let seq = v
        .get("seq")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "malformed record: no seq".to_owned())?;
    let prev = v
        .get("prev")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| format!("malformed record (seq {seq}): no prev"))?
        .to_owned();
    let event = v
        .get("event")
        .cloned()
        .ok_or_else(|| format!("malformed record (seq {seq}): no event"))?;
    // The body must start with exactly these fields, so that the hash covers them.
    if !body.starts_with(&format!("{{\"seq\":{seq},\"prev\":\"{prev}\",\"event\":")) {
        return Err(format!("malformed record (seq {seq}): fields out of order"));
    }
    let hash_ok = sha256_hex(body.as_bytes()) == hash;
    let mac_ok = key.map(|k| mac.is_some_and(|m| k.verify(body.as_bytes(), m)));
    Ok(Parsed {
        seq,
        prev,
        hash: hash.to_owned(),
        event,
        hash_ok,
        mac_ok,
    })
}

/// Checks records in chain order and says what is wrong with each.
#[derive(Debug)]
pub(crate) struct Checker<'k> {
    key: Option<&'k MacKey>,
    /// Hash and seq of the last record seen.
    last: Option<(u64, String)>,
}

impl<'k> Checker<'k> {
    pub(crate) fn new(key: Option<&'k MacKey>) -> Self {
        Self { key, last: None }
    }

    /// A checker that expects the record after `head` (whose last record it trusts).
    pub(crate) fn continuing(key: Option<&'k MacKey>, head: &Head) -> Self {
        Self {
            key,
            last: (head.next_seq > 1).then(|| (head.next_seq - 1, head.prev.clone())),
        }
    }

    /// The last record's seq and hash.
    pub(crate) fn last(&self) -> Option<&(u64, String)> {
        self.last.as_ref()
    }

    /// Checks the next record; returns it (when it parses) and the problems found.
    /// After a problem the checker resynchronises on this record, so one tampering
    /// is reported where it happened rather than on every later record.
    pub(crate) fn check(&mut self, line: &str) -> (Option<Parsed>, Vec<String>) {
        let mut problems = Vec::new();
        let p = match parse(line, self.key) {
            Ok(p) => p,
            Err(e) => return (None, vec![e]),
        };
        if !p.hash_ok {
            problems.push("hash mismatch: the record's content was modified".to_owned());
        }
        if p.mac_ok == Some(false) {
            problems.push("MAC missing or wrong: the record was not written with this key".to_owned());
        }
        match &self.last {
            Some((seq, hash)) => {
                if p.seq <= *seq {
                    problems.push(format!(
                        "seq {} follows seq {seq} (expected {}): the chain goes back here; the records \
                         from here on continue an earlier point of it (a second process appending \
                         without the trail's lock, records inserted or reordered)",
                        p.seq,
                        seq + 1
                    ));
                } else if p.seq != seq + 1 {
                    problems.push(format!(
                        "seq {} follows seq {seq} (expected {}): {} record(s) missing before it \
                         (deleted, or written elsewhere)",
                        p.seq,
                        seq + 1,
                        p.seq - seq - 1
                    ));
                }
                if &p.prev != hash {
                    problems.push(format!(
                        "prev does not match the hash of the record before it (seq {seq}): the chain is broken here"
                    ));
                }
            }
            None if p.prev == GENESIS && p.seq != 1 => {
                problems.push(format!(
                    "seq {} claims to start the chain (expected seq 1)",
                    p.seq
                ));
            }
            None => {}
        }
        // Resynchronise on the claimed hash: a record modified in place (hash left
        // alone) is then reported once, at that record.
        self.last = Some((p.seq, p.hash.clone()));
        (Some(p), problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_parse_and_chain() {
        let key = MacKey::new(b"0123456789abcdef0123".to_vec()).unwrap();
        let mut head = Head::default();
        let a = head.seal(r#"{"id":"a","hash":"x"}"#, Some(&key));
        let b = head.seal(r#"{"id":"b"}"#, Some(&key));
        assert_eq!(a.seq, 1);
        assert_eq!(b.seq, 2);
        let mut c = Checker::new(Some(&key));
        for s in [&a, &b] {
            let (p, problems) = c.check(s.line.trim_end());
            assert!(problems.is_empty(), "{problems:?}");
            let p = p.unwrap();
            assert!(p.hash_ok);
            assert_eq!(p.hash, s.hash);
            assert!(s.mac.as_ref().is_some_and(|m| s.line.contains(m.as_str())));
        }
        // Without a key the MAC is ignored; with another key it fails.
        let other = MacKey::new(b"another key, 16+ bytes".to_vec()).unwrap();
        let mut c = Checker::new(Some(&other));
        assert!(c.check(a.line.trim_end()).1.iter().any(|p| p.contains("MAC")));
        let mut c = Checker::new(None);
        assert!(c.check(a.line.trim_end()).1.is_empty());
    }

    #[test]
    fn a_changed_byte_is_detected() {
        let mut head = Head::default();
        let a = head.seal(r#"{"id":"a","n":1}"#, None);
        let forged = a.line.trim_end().replace("\"n\":1", "\"n\":2");
        let (_, problems) = Checker::new(None).check(&forged);
        assert!(problems[0].contains("hash mismatch"), "{problems:?}");
        let (_, problems) = Checker::new(None).check(&a.line[..a.line.len() / 2]);
        assert!(problems[0].contains("malformed"), "{problems:?}");
    }

    #[test]
    fn short_keys_are_refused_without_echoing_them() {
        let e = MacKey::new(b"short".to_vec()).unwrap_err().to_string();
        assert!(!e.contains("short\""), "{e}");
        assert!(format!("{:?}", MacKey::new(vec![7; 32]).unwrap()).contains("REDACTED"));
    }
}
