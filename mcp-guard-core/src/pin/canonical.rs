use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The canonical JSON text of `value`: object keys sorted by their UTF-16 code units
/// (as RFC 8785 orders them), no whitespace, strings escaped minimally, numbers as
/// `serde_json` writes them (integers exactly; floats in shortest round-trip form).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, &map[k]);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `sha256:` followed by the lowercase hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!("sha256:{}", crate::hex::encode(&digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "\u00e9"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"é","y":[1,2]},"b":1}"#);
        assert_eq!(
            canonical_json(&Value::String("a\"\n\u{1}".into())),
            r#""a\"\n\u0001""#
        );
    }

    #[test]
    fn floats_survive_a_text_round_trip() {
        // Found by the pin_canonical fuzz target: approximate float parsing changed the
        // last digit on the second pass.
        for text in [
            "1.5111111111111111e+29",
            "0.1",
            "-2.5e-308",
            "12345678901234567890",
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            let once = canonical_json(&v);
            let again = canonical_json(&serde_json::from_str(&once).unwrap());
            assert_eq!(once, again, "{text}");
        }
    }

    #[test]
    fn hashes_are_prefixed_hex() {
        assert_eq!(sha256_hex("").len(), 71);
        assert!(sha256_hex("x").starts_with("sha256:2d711642"));
    }
}
