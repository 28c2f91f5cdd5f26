//! `PatternRedactor::redact_json`: valid JSON of the same shape, idempotent, a planted
//! value never survives. See `mcp_guard_core::redact::fuzzing::check_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() > 64 * 1024 {
        return;
    }
    mcp_guard_core::redact::fuzzing::check_json(data);
});
