//! Per-session stdio upstreams: each client session gets its own process, which ends
//! with the session.

use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use serde_json::json;

use crate::support::*;

fn config(extra: &str) -> String {
    let mut c = String::from(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str(extra);
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"getenv\", \"echo\", \"crash\"]\n");
    c
}

async fn pid(client: &Client) -> u32 {
    let r = client
        .call_tool(CallToolRequestParams::new("alpha__getenv").with_arguments(args(&json!({"name": "@pid"}))))
        .await
        .unwrap();
    text_of(&r).parse().unwrap()
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; count it as alive (not reaped).
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn gone_within(pid: u32, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !alive(pid) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn each_session_gets_its_own_process_which_ends_with_it() {
    let gw = GatewayProc::start(&config("")).await;
    let path = gw.dir.path().join("gateway.toml");
    let carol_token = issue_token(&path, "carol", "1h");
    let alice = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    let carol = http_client(&gw.url("main"), &carol_token, Era::Legacy).await;
    let (a, c) = (pid(&alice).await, pid(&carol).await);
    assert_ne!(a, c, "two sessions never share a process");
    assert_eq!(pid(&alice).await, a, "a session keeps its process");
    assert_eq!(pid(&carol).await, c);

    // Revoking carol's session stops her process (and only hers).
    let out = std::process::Command::new(BIN)
        .args(["sessions", "list", "--json", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let listed = String::from_utf8(out.stdout).unwrap();
    let id = listed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|s| s["principal"] == "carol")
        .expect("carol's session is listed")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = std::process::Command::new(BIN)
        .args(["sessions", "revoke", &id, "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let took = gone_within(c, Duration::from_secs(5)).await;
    assert!(took.is_some(), "carol's upstream process {c} still runs");
    assert!(alive(a), "alice's process is untouched");
    assert_eq!(pid(&alice).await, a);

    // A session's process that dies mid-call: an error within 2 s, the next call gets
    // a fresh process, the dead one is reaped.
    let t = Instant::now();
    let err = alice
        .call_tool(CallToolRequestParams::new("alpha__crash"))
        .await
        .unwrap_err()
        .to_string();
    within_promise(
        "a dead process's call answered",
        t.elapsed(),
        Duration::from_secs(2),
    );
    assert!(err.contains("terminated"), "{err}");
    let mut fresh = None;
    for _ in 0..30 {
        if let Ok(r) = alice
            .call_tool(
                CallToolRequestParams::new("alpha__getenv").with_arguments(args(&json!({"name": "@pid"}))),
            )
            .await
        {
            fresh = Some(text_of(&r).parse::<u32>().unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = fresh.expect("the session's server answers again within 3 s");
    assert_ne!(fresh, a);
    assert!(
        gone_within(a, Duration::from_secs(3)).await.is_some(),
        "the crashed process is reaped"
    );
    let a = fresh;

    let _ = alice.cancel().await;
    let _ = carol.cancel().await;
    gw.stop().await;
    assert!(
        gone_within(a, Duration::from_secs(5)).await.is_some(),
        "shutdown reaps every per-session process"
    );
}

#[tokio::test]
async fn idle_processes_stop_and_limits_give_a_clear_error() {
    let extra = "idle_timeout_secs = 1\nmax_processes_per_principal = 1\n\n";
    // The extra keys belong to [servers.alpha]: append them right after its table.
    let mut c = String::from(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str(extra);
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"getenv\", \"echo\", \"crash\"]\n");
    let gw = GatewayProc::start(&c).await;
    let path = gw.dir.path().join("gateway.toml");
    let client = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    let first = pid(&client).await;
    assert!(
        gone_within(first, Duration::from_secs(5)).await.is_some(),
        "an idle per-session process is stopped"
    );
    let second = pid(&client).await;
    assert_ne!(first, second, "the next call starts a fresh process");

    // One process per principal: alice's second credential (a new session) is refused.
    let token = issue_token(&path, "alice", "1h");
    let other = http_client(&gw.url("main"), &token, Era::Modern).await;
    let err = other
        .call_tool(CallToolRequestParams::new("alpha__getenv").with_arguments(args(&json!({"name": "@pid"}))))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("process limit"), "{err}");
    let _ = client.cancel().await;
    let _ = other.cancel().await;
    gw.stop().await;
}

fn upstream_processes(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("mcp_guard_upstream_processes "))
        .and_then(|v| v.trim().parse().ok())
}

async fn metrics_of(gw: &GatewayProc) -> String {
    reqwest::get(format!("{}/metrics", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits (5 s at most) until `mcp_guard_upstream_processes` reads `n`.
async fn processes_become(gw: &GatewayProc, n: u64) {
    let mut seen = None;
    for _ in 0..100 {
        seen = upstream_processes(&metrics_of(gw).await);
        if seen == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("mcp_guard_upstream_processes is {seen:?}, not {n}");
}

#[tokio::test]
async fn the_gateway_wide_process_bound_spans_servers_and_frees_with_sessions() {
    mcp_guard_core::upstream::ensure_crypto_provider();
    // Two servers, each with one process that always runs (its catalogue instance):
    // a bound of 3 leaves room for exactly one per-session process, whichever server.
    let mut c = String::from("[gateway]\nmax_upstream_processes = 3\n\n");
    c.push_str(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str("idle_timeout_secs = 1\n\n");
    c.push_str(&fixture("beta", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"getenv\"]\n");
    c.push_str("[endpoints.main.servers.beta]\ntools = [\"getenv\"]\n");
    let gw = GatewayProc::start(&c).await;
    let path = gw.dir.path().join("gateway.toml");
    processes_become(&gw, 2).await;

    let alice = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    let a = pid(&alice).await;
    assert!(alive(a));
    processes_become(&gw, 3).await;

    // Another principal, another server: its own limits have room, the gateway's not.
    let carol_token = issue_token(&path, "carol", "1h");
    let carol = http_client(&gw.url("main"), &carol_token, Era::Legacy).await;
    let err = carol
        .call_tool(CallToolRequestParams::new("beta__getenv").with_arguments(args(&json!({"name": "@pid"}))))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_upstream_processes"), "{err}");
    assert!(err.contains('3'), "the error names the bound: {err}");
    assert_eq!(
        upstream_processes(&metrics_of(&gw).await),
        Some(3),
        "nothing was started"
    );

    // Alice's process stops when idle; its place is free again.
    assert!(
        gone_within(a, Duration::from_secs(5)).await.is_some(),
        "an idle process stops"
    );
    let mut started = None;
    for _ in 0..50 {
        match carol
            .call_tool(
                CallToolRequestParams::new("beta__getenv").with_arguments(args(&json!({"name": "@pid"}))),
            )
            .await
        {
            Ok(r) => {
                started = Some(text_of(&r).parse::<u32>().unwrap());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let b = started.expect("a freed place is used again");
    assert!(alive(b));
    processes_become(&gw, 3).await;
    let _ = alice.cancel().await;
    let _ = carol.cancel().await;
    gw.stop().await;
    assert!(gone_within(b, Duration::from_secs(5)).await.is_some());
}

#[tokio::test]
async fn a_process_bound_below_the_stdio_servers_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let mut c = String::from("[gateway]\nmax_upstream_processes = 1\n\n");
    c.push_str(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str(&fixture("beta", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"*\"]\n");
    std::fs::write(&path, c).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("gateway.max_upstream_processes"), "{text}");
}

/// The official server-memory, one process per session, each with its own
/// `MEMORY_FILE_PATH` (`${MCP_GUARD_SESSION}`): `MEMORY_SESSIONS` (default 100)
/// concurrent sessions each write an entity and read the graph back; none may see
/// another's. Needs `bash interop/setup.sh` (`node_modules`); run by hand:
/// `cargo test -p mcp-guard-cli --test gateway -- --ignored server_memory`.
#[tokio::test]
#[ignore = "needs interop/node_modules and about 100 node processes"]
async fn server_memory_sessions_never_see_each_other() {
    let memory_js = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../interop/node_modules/@modelcontextprotocol/server-memory/dist/index.js");
    assert!(memory_js.exists(), "run `bash interop/setup.sh` first");
    let n: usize = std::env::var("MEMORY_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let files = tempfile::tempdir().unwrap();
    let config = format!(
        "[[grants]]\nroles = [\"eng\"]\nnames = [\"*\"]\n\n\
         [servers.memory]\ntransport = \"stdio\"\ncommand = \"node\"\nargs = [\"{}\"]\n\
         max_processes = {}\nenv = {{ MEMORY_FILE_PATH = \"{}/${{MCP_GUARD_SESSION}}.jsonl\" }}\n\n\
         [endpoints.main.servers.memory]\ntools = [\"create_entities\", \"read_graph\"]\n",
        memory_js.display(),
        n + 8,
        files.path().display()
    );
    let gw = GatewayProc::start(&config).await;
    let path = gw.dir.path().join("gateway.toml");
    let tokens: Vec<String> = (0..n)
        .map(|i| issue_token(&path, &format!("user-{i}"), "1h"))
        .collect();
    // Sessions start in waves of 10 (100 node processes starting at the same instant
    // exceed the connect timeout on 2 cores); all stay open, and then every one reads
    // the graph at the same time.
    let started = Instant::now();
    let mut clients = Vec::new();
    for wave in tokens.chunks(10) {
        let base = clients.len();
        let opened = futures::future::join_all(wave.iter().enumerate().map(|(k, token)| {
            let url = gw.url("main");
            async move {
                let i = base + k;
                let client = http_client(&url, token, Era::Legacy).await;
                client
                    .call_tool(
                        CallToolRequestParams::new("memory__create_entities").with_arguments(args(&json!({
                            "entities": [{"name": format!("entity-of-session-{i}"), "entityType": "probe",
                                          "observations": [format!("written by {i}")]}]
                        }))),
                    )
                    .await
                    .unwrap();
                client
            }
        }))
        .await;
        clients.extend(opened);
    }
    let results = futures::future::join_all(clients.iter().enumerate().map(|(i, client)| async move {
        let graph = client
            .call_tool(CallToolRequestParams::new("memory__read_graph"))
            .await
            .unwrap();
        let text = text_of(&graph);
        let seen: Vec<usize> = (0..n)
            .filter(|j| text.contains(&format!("\"entity-of-session-{j}\"")))
            .collect();
        (i, seen)
    }))
    .await;
    for c in clients {
        let _ = c.cancel().await;
    }
    let elapsed = started.elapsed();
    let mut cross = 0;
    for (i, seen) in &results {
        assert!(seen.contains(i), "session {i} lost its own entity");
        cross += seen.iter().filter(|j| *j != i).count();
    }
    let written = std::fs::read_dir(files.path()).unwrap().count();
    println!(
        "server-memory isolation: {n} sessions in {elapsed:?}, {cross} cross-reads, {written} memory files"
    );
    assert_eq!(cross, 0, "a session read another session's entity");
    gw.stop().await;
}
