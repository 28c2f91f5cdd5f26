//! Integration tests of `mcp-guard-core` (one test binary; one module per area).
#![allow(clippy::unwrap_used, reason = "test code; a panic is a failed test")]

mod sse;
