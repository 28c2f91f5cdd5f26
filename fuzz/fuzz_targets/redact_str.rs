//! `PatternRedactor::redact_str` and `redact_bytes`: no panic, idempotent, nothing
//! detectable left, a planted value never survives. See
//! `mcp_guard_core::redact::fuzzing::check_str`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() > 64 * 1024 {
        return;
    }
    mcp_guard_core::redact::fuzzing::check_str(data);
});
