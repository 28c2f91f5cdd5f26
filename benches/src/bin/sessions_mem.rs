//! Memory of idle gateway sessions, in process: opens N sessions (one credential each)
//! in a `Sessions` registry, journalled to a SQLite access store as `serve` does, and
//! reports the resident-memory growth per session. rmcp's own legacy-session state is
//! measured separately by `soak --sessions` (it does not exist for 2026-07-28 clients).
//!
//! ```sh
//! cargo run --release -p mcp-guard-benches --bin sessions_mem -- 10000
//! ```
#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::sync::Arc;

use mcp_guard_core::Principal;
use mcp_guard_core::access::{AccessStore, ClientCredential, Sessions};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = AccessStore::open(dir.path().join("access.db")).expect("store");
    for (label, sessions) in [
        ("in memory", Sessions::new()),
        ("journalled", Sessions::with_store(store).expect("sessions")),
    ] {
        // Warm up allocator arenas and the SQLite page cache with a few sessions.
        let principals: Vec<Arc<Principal>> = (0..n)
            .map(|i| Arc::new(Principal::user(format!("user-{i}")).with_roles(["eng"])))
            .collect();
        for p in principals.iter().take(100) {
            let _ = sessions.admit(p, &ClientCredential::new(format!("warm:{}", p.id())), "warm");
        }
        let before = rss_kib();
        let mut held = Vec::with_capacity(n);
        for (i, p) in principals.iter().enumerate() {
            let cred = ClientCredential::new(format!("token:{i:012x}"));
            held.push(sessions.admit(p, &cred, "main").expect("admitted"));
        }
        let after = rss_kib();
        #[allow(clippy::cast_precision_loss, reason = "a ratio for display")]
        let per = (after.saturating_sub(before) as f64 * 1024.0) / n as f64;
        println!(
            "{label}: {n} idle gateway sessions: RSS {before} -> {after} KiB, {per:.0} bytes per session (principal objects excluded)"
        );
        drop(held);
    }
}
