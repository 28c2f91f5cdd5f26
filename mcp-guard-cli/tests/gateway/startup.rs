//! Slow and dead upstreams at start: the front door answers at once, a server that takes
//! longer than rmcp's 10 s discovery probe still connects, one that never answers gets
//! an error naming its start timeout, and the others keep serving.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

use crate::support::*;

/// A stdio server that does nothing for `delay` seconds (stdin unread, as `npx -y`
/// while it downloads), creates `ready`, then runs the fixture named `name`.
fn slow_fixture(name: &str, delay: u64, ready: &std::path::Path, extra: &str) -> String {
    format!(
        "[servers.{name}]\ntransport = \"stdio\"\ncommand = \"sh\"\n\
         args = [\"-c\", \"sleep {delay}; touch '{}'; exec '{BIN}' fixture --name {name}\"]\n{extra}\n",
        ready.display()
    )
}

/// `mcp-guard serve --stdio` with raw JSON-RPC lines on its pipes.
struct RawStdio {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// Notifications seen while waiting for answers.
    notes: Vec<Value>,
}

impl RawStdio {
    fn spawn(config: &std::path::Path) -> Self {
        let mut child = tokio::process::Command::new(BIN)
            .args(["serve", "--stdio", "--endpoint", "main", "--config"])
            .arg(config)
            .env("MCP_GUARD_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
            notes: Vec::new(),
        }
    }

    async fn send(&mut self, v: &Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The answer to request `id` (notifications on the way are kept).
    async fn answer(&mut self, id: u64, limit: Duration) -> Value {
        tokio::time::timeout(limit, async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("the gateway closed stdout");
                let v: Value = serde_json::from_str(&line).unwrap();
                if v["id"] == json!(id) {
                    return v;
                }
                if v.get("method").is_some() && v.get("id").is_none() {
                    self.notes.push(v);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to request {id} within {limit:?}"))
    }

    /// Waits for a notification with `method` (one already seen counts).
    async fn notification(&mut self, method: &str, limit: Duration) -> bool {
        if self.notes.iter().any(|n| n["method"] == method) {
            return true;
        }
        tokio::time::timeout(limit, async {
            loop {
                let Ok(Some(line)) = self.lines.next_line().await else {
                    return false;
                };
                let v: Value = serde_json::from_str(&line).unwrap();
                if v["method"] == method {
                    return true;
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    async fn tool_names(&mut self, id: u64) -> Vec<String> {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}))
            .await;
        let r = self.answer(id, Duration::from_secs(20)).await;
        r["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("tools/list failed: {r}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn discover(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "server/discover", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "startup-test", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    }}})
}

/// A server that needs 12 s before it reads stdin (longer than rmcp's 10 s discovery
/// probe, as a first `npx -y` run) next to a fast one, behind the stdio front door:
/// `server/discover` is answered while the slow one still sleeps, a list sees the fast
/// one, the slow one joins with `list_changed` under the default start timeout, and
/// answers calls. About 15 s, most of it waiting for the slow server.
#[allow(clippy::print_stdout, reason = "reports the latencies the issue asks for")]
#[tokio::test]
async fn a_12s_upstream_start_delays_neither_discover_nor_the_others_and_then_joins() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("slow-ready");
    let mut c = String::from("[auth]\nstdio_principal = { id = \"me\", roles = [\"eng\"] }\n\n");
    c.push_str("[[grants]]\nroles = [\"eng\"]\nnames = [\"*\"]\n\n");
    c.push_str(&fixture("alpha", &[]));
    c.push_str(&slow_fixture("slow", 12, &ready, ""));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"echo\"]\n[endpoints.main.servers.slow]\ntools = [\"echo\"]\n");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, c).unwrap();

    let spawned = Instant::now();
    let mut gw = RawStdio::spawn(&path);
    gw.send(&discover(1)).await;
    let r = gw.answer(1, Duration::from_secs(30)).await;
    let first = spawned.elapsed();
    assert!(
        !ready.exists(),
        "discover was answered only after the slow server started ({first:?})"
    );
    assert!(
        r["result"]["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("2026-07-28"))),
        "{r}"
    );
    let sent = Instant::now();
    gw.send(&discover(2)).await;
    gw.answer(2, Duration::from_secs(10)).await;
    let second = sent.elapsed();
    println!(
        "discover with a 12 s upstream starting: first answer {first:?} after spawning the gateway, \
         a second one {second:?} after it was sent"
    );
    assert!(first < Duration::from_secs(10), "{first:?}");

    // A legacy client now: initialize is answered at once too.
    let sent = Instant::now();
    gw.send(
        &json!({"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "startup-test", "version": "0"}}}),
    )
    .await;
    let init = gw.answer(3, Duration::from_secs(10)).await;
    println!("initialize answered {:?} after it was sent", sent.elapsed());
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    assert!(!ready.exists());
    gw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    // Listing early shows what is connected.
    let listed = gw.tool_names(4).await;
    assert!(!ready.exists(), "the slow server must still be starting");
    assert_eq!(listed, ["alpha__echo"]);

    // The slow server joins (12 s is past rmcp's 10 s probe; the default start
    // timeout is 60 s) and the client is told: each list_changed is followed by a list
    // until the slow server is in it.
    gw.notes.clear();
    let mut id = 5;
    let joined = loop {
        let told = gw
            .notification("notifications/tools/list_changed", Duration::from_secs(45))
            .await;
        assert!(told, "no tools/list_changed with the slow server within 45 s");
        gw.notes.clear();
        id += 1;
        let listed = gw.tool_names(id).await;
        if listed.iter().any(|n| n == "slow__echo") {
            assert_eq!(listed, ["alpha__echo", "slow__echo"]);
            break spawned.elapsed();
        }
    };
    assert!(ready.exists());
    println!("the 12 s server joined {joined:?} after the gateway was spawned");
    id += 1;
    gw.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "slow__echo", "arguments": {"text": "finally"}}}))
        .await;
    let r = gw.answer(id, Duration::from_secs(20)).await;
    assert_eq!(r["result"]["content"][0]["text"], "finally", "{r}");
    let _ = gw.child.start_kill();
}

/// One server that never answers at all and one that answers its first start (the
/// catalogue) but hangs on every later one (each session's own process), both with
/// `start_timeout_secs = 2`: the call says "did not answer within 2 s", the next call
/// says the server is down and when it is tried again, the hung processes are gone,
/// status names the limit, and the other server answers throughout.
#[tokio::test]
async fn an_upstream_that_never_answers_gets_its_start_timeout_and_the_others_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("hang-marker-{}", std::process::id());
    let mark = dir.path().join("started-once");
    let mut c = String::from(AUTH);
    c.push_str(&fixture("alpha", &[]));
    let _ = write!(
        c,
        "[servers.hang]\ntransport = \"stdio\"\ncommand = \"sh\"\nstart_timeout_secs = 2\n\
         args = [\"-c\", \"if [ -e '{m}' ]; then sleep 600; fi; touch '{m}'; exec '{BIN}' fixture --name hang\", \"{marker}\"]\n\n\
         [servers.never]\ntransport = \"stdio\"\ncommand = \"sh\"\nstart_timeout_secs = 2\n\
         args = [\"-c\", \"sleep 600\", \"{marker}\"]\n\n",
        m = mark.display()
    );
    c.push_str(
        "[endpoints.main.servers.alpha]\ntools = [\"echo\"]\n[endpoints.main.servers.hang]\ntools = [\"echo\"]\n\
         [endpoints.main.servers.never]\ntools = [\"*\"]\n",
    );
    let gw = GatewayProc::start(&c).await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    assert_eq!(names(&client).await, ["alpha__echo", "hang__echo"]);

    // The session's own process of `hang` never answers: its start times out.
    let echo = |name: &str, text: &str| {
        CallToolRequestParams::new(name.to_owned()).with_arguments(args(&json!({"text": text})))
    };
    let t = Instant::now();
    let hung = client.call_tool(echo("hang__echo", "x"));
    let other = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = client.call_tool(echo("alpha__echo", "meanwhile")).await.unwrap();
        (text_of(&r), t.elapsed())
    };
    let (hung, (meanwhile, answered_at)) = tokio::join!(hung, other);
    let err = hung.unwrap_err().to_string();
    let took = t.elapsed();
    assert!(
        err.contains("server hang did not answer within 2 s of starting"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(meanwhile, "meanwhile");
    assert!(
        answered_at < took,
        "alpha answered while hang was still starting ({answered_at:?}, hang gave up after {took:?})"
    );
    // The hung process was stopped with its start.
    assert!(
        eventually(5, async || processes_with(&marker).is_empty()).await,
        "{:?}",
        processes_with(&marker)
    );

    // Right after, the server is down until its backoff ends: the call says so.
    let err = client
        .call_tool(echo("hang__echo", "y"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server hang is down (it did not answer within 2 s of starting)")
            && err.contains("next start attempt is in"),
        "{err}"
    );
    let r = client.call_tool(echo("alpha__echo", "still")).await.unwrap();
    assert_eq!(text_of(&r), "still");

    // The server that never answered at all: readiness and status name the limit.
    let body: Value = reqwest::get(format!("{}/readyz", gw.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let never = body["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "never")
        .cloned()
        .unwrap_or_default();
    assert_eq!(never["state"], "failed", "{body}");
    assert!(
        never["detail"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer within 2 s of starting")),
        "{body}"
    );
    let _ = client.cancel().await;
    gw.stop().await;
}

/// A one-shot client (the Inspector CLI starts a gateway per command) lists at once:
/// with a start wait long enough for every server, the list has every server, the last
/// one to start included. It came back without the last one: a server said it had
/// started a moment before its catalogue joined the endpoint's.
#[tokio::test]
async fn a_list_right_after_start_has_every_server_that_started_within_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = String::from("[gateway]\nstartup_wait_ms = 30000\n\n");
    cfg.push_str("[auth]\nstdio_principal = { id = \"me\", roles = [\"eng\"] }\n\n");
    cfg.push_str("[[grants]]\nroles = [\"eng\"]\nnames = [\"*\"]\n\n");
    cfg.push_str(&fixture("fast", &[]));
    let ready = dir.path().join("late-ready");
    // The late server offers many tools and announces changes as it starts (as
    // server-everything does), so joining its catalogue takes a moment.
    let mut extra = String::new();
    for i in 0..200 {
        let _ = write!(extra, " --extra-tool tool{i}");
    }
    let _ = write!(
        cfg,
        "[servers.late]\ntransport = \"stdio\"\ncommand = \"sh\"\n\
         args = [\"-c\", \"sleep 1; touch '{}'; exec '{BIN}' fixture --name late{extra}\"]\n\n",
        ready.display()
    );
    cfg.push_str(
        "[endpoints.main.servers.fast]\ntools = [\"echo\"]\n[endpoints.main.servers.late]\ntools = [\"*\"]\n",
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, cfg).unwrap();
    for round in 0..3 {
        let mut gw = RawStdio::spawn(&path);
        gw.send(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "one-shot", "version": "0"}}}),
        )
        .await;
        gw.answer(1, Duration::from_secs(20)).await;
        gw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        let names = gw.tool_names(2).await;
        assert!(
            names.contains(&"fast__echo".to_owned()) && names.contains(&"late__echo".to_owned()),
            "round {round}: {} tools, late__echo {}",
            names.len(),
            names.contains(&"late__echo".to_owned())
        );
        let _ = gw.child.kill().await;
    }
}
