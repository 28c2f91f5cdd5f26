//! End-to-end tests of the `mcp-guard` binary: real rmcp clients over HTTP and stdio,
//! in both protocol eras, against fixture upstreams running as real child processes.

mod config;
mod federation;
mod hygiene;
mod lifecycle;
mod support;
