#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_docs,
    dead_code,
    reason = "test helpers"
)]
//! End-to-end tests of the `mcp-guard` binary: real rmcp clients over HTTP and stdio,
//! in both protocol eras, against fixture upstreams running as real child processes.

mod access;
mod approval;
mod audit;
mod authorize;
mod cluster;
mod config;
mod console;
mod credentials;
mod era;
mod federation;
mod flow;
mod forward;
mod hygiene;
mod isolation;
mod lifecycle;
mod oauth;
mod oauth_attacks;
mod pinning;
mod policy;
mod redaction;
mod reload;
mod replay;
mod resilience;
mod rugpull;
mod sessions;
mod startup;
mod support;
mod telemetry;
mod unauthenticated;
