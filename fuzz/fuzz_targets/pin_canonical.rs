//! Canonical JSON is a function of the value: re-parsing the canonical text gives the
//! same value and the same text (so pins do not depend on formatting or key order).
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};
use mcp_guard_core::pin::canonical_json;

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.len() > 16 * 1024 {
        return Corpus::Reject;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return Corpus::Reject;
    };
    let text = canonical_json(&value);
    let again: serde_json::Value = serde_json::from_str(&text).expect("canonical JSON parses");
    assert_eq!(canonical_json(&again), text, "canonical form is stable");
    Corpus::Keep
});
