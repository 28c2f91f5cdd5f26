//! Configuration reload without a restart: each kind of change applied to the next
//! call while clients call in a loop (no call may fail because of the reload), open
//! clients told with `list_changed`, refused files (garbage, half written, invalid)
//! leaving the running configuration in force with an audit record, and a removed
//! server finishing the call in flight to it. Triggers: the file changing on disk,
//! SIGHUP, and `mcp-guard reload`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rmcp::model::CallToolRequestParams;

use crate::support::*;

const THIRD_TOKEN: &str = "third-token-0123456789abcdef";

/// Audit records go to JSON Lines under `audit/` beside the config.
const AUDIT: &str = "[audit]\nsinks = [\"jsonl\"]\n\n";

fn base(endpoint_tools: &str) -> String {
    let mut c = String::from(AUTH);
    c.push_str(AUDIT);
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = ");
    c.push_str(endpoint_tools);
    c.push_str("\n\n");
    c
}

/// Replaces the configuration file at once (write aside, rename), as an editor or a
/// deployment tool does; the gateway's watcher sees one complete version.
fn replace_config(path: &Path, text: &str) {
    let aside = path.with_extension("toml.new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// Every audit record of `kind` (`config_reloaded`, `config_refused`) so far.
fn audit_records(dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("audit")) else {
        return out;
    };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap_or_default().lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && v["event"]["type"] == kind
            {
                out.push(v["event"].clone());
            }
        }
    }
    out
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    mcp_guard_core::hex::encode(&sha2::Sha256::digest(text.as_bytes()))
}

/// Calls `name` with `arguments`: the text, or the error (a tool error or a JSON-RPC
/// error) as text.
async fn call(client: &Client, name: &str, arguments: serde_json::Value) -> Result<String, String> {
    match client
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(args(&arguments)))
        .await
    {
        Ok(r) if r.is_error != Some(true) => Ok(text_of(&r)),
        Ok(r) => Err(format!("tool error: {}", text_of(&r))),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// Clients calling `alpha__echo` in a loop until stopped; every failure is kept.
struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    async fn start(url: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..clients {
            let era = if i % 2 == 0 { Era::Legacy } else { Era::Modern };
            let client = http_client(url, TOKEN, era).await;
            let (stop, calls) = (stop.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let text = format!("load {i} {n}");
                    match call(&client, "alpha__echo", serde_json::json!({ "text": text })).await {
                        Ok(t) if t == text => {}
                        Ok(t) => failures.push(format!("client {i}: answered {t:?} to {text:?}")),
                        Err(e) => failures.push(format!("client {i}: {e}")),
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                let _ = client.cancel().await;
                failures
            }));
        }
        Self { stop, calls, tasks }
    }

    /// Waits until the clients have made `n` more calls.
    async fn advance(&self, n: usize) {
        let from = self.calls.load(Ordering::Relaxed);
        assert!(
            eventually(30, async || self.calls.load(Ordering::Relaxed) >= from + n).await,
            "the load stalled"
        );
    }

    /// Stops the clients; asserts none of their calls failed.
    async fn finish(self) {
        self.advance(5).await;
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for t in self.tasks {
            failures.extend(t.await.unwrap());
        }
        assert!(
            failures.is_empty(),
            "calls failed during the reload: {failures:#?}"
        );
    }
}

/// Waits (up to 20 s, reporting how long it took) until `f` holds.
async fn applied(what: &str, f: impl AsyncFnMut() -> bool) {
    let began = std::time::Instant::now();
    assert!(eventually(20, f).await, "{what}: not applied within 20 s");
    #[expect(
        clippy::print_stderr,
        reason = "the figure is reported with the test's output"
    )]
    {
        eprintln!("{what}: applied after {:?}", began.elapsed());
    }
}

#[tokio::test]
async fn a_grant_added_to_the_file_applies_to_the_next_call_under_load() {
    let config = base("[\"echo\"]");
    let gw = GatewayProc::start(&config).await;
    let load = Load::start(&gw.url("main"), 3).await;
    let bob = http_client(&gw.url("main"), OTHER_TOKEN, Era::Modern).await;
    let refused = call(&bob, "alpha__echo", serde_json::json!({"text": "hi"})).await;
    assert!(refused.is_err(), "bob has no grant yet: {refused:?}");
    load.advance(10).await;
    let new =
        format!("{config}[[grants]]\nname = \"other-echo\"\nroles = [\"other\"]\nnames = [\"echo\"]\n\n");
    replace_config(&gw.config(), &new);
    applied("a grant", async || {
        call(&bob, "alpha__echo", serde_json::json!({"text": "hi"})).await == Ok("hi".into())
    })
    .await;
    load.finish().await;
    let records = audit_records(gw.dir.path(), "config_reloaded");
    let r = records.last().expect("a config_reloaded record");
    assert_eq!(r["digest"], sha256_hex(&new), "{r}");
    assert!(r["changes"].as_str().unwrap().contains("grants: 1 added"), "{r}");
    let _ = bob.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_tool_switched_on_reaches_open_clients_with_list_changed() {
    let config = base("[\"echo\"]");
    let gw = GatewayProc::start(&config).await;
    let load = Load::start(&gw.url("main"), 2).await;
    let watcher = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    assert_eq!(names(&watcher).await, ["alpha__echo"]);
    load.advance(10).await;
    replace_config(&gw.config(), &base("[\"echo\", \"add\"]"));
    applied("a tool switched on", async || {
        watcher.service().seen("tools_changed") && names(&watcher).await == ["alpha__echo", "alpha__add"]
    })
    .await;
    let sum = call(&watcher, "alpha__add", serde_json::json!({"a": 2, "b": 3})).await;
    assert_eq!(sum, Ok("5".into()));
    load.finish().await;
    let records = audit_records(gw.dir.path(), "config_reloaded");
    let changes = records.last().unwrap()["changes"].as_str().unwrap().to_owned();
    assert!(changes.contains("endpoints.main: tools +1 -0"), "{changes}");
    let _ = watcher.cancel().await;
    gw.stop().await;
}

fn with_beta(config: &str) -> String {
    format!(
        "{config}{}[endpoints.main.servers.beta]\ntools = [\"echo\", \"slow\"]\n\n",
        fixture("beta", &[])
    )
}

/// A fixture process of server `name` running under this gateway.
fn fixture_running(gw: &GatewayProc, name: &str) -> bool {
    let pid = gw.pid().unwrap();
    let marker = format!("--name {name}");
    processes_with(&marker)
        .iter()
        .any(|p| p.ppid == pid && p.state != 'Z')
}

#[tokio::test]
async fn a_server_added_then_removed_under_load() {
    let config = base("[\"echo\"]");
    let gw = GatewayProc::start(&config).await;
    let load = Load::start(&gw.url("main"), 3).await;
    let watcher = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    load.advance(10).await;
    replace_config(&gw.config(), &with_beta(&config));
    applied("a server added", async || {
        call(&watcher, "beta__echo", serde_json::json!({"text": "b"})).await == Ok("b".into())
    })
    .await;
    assert!(watcher.service().seen("tools_changed"));
    let changes = audit_records(gw.dir.path(), "config_reloaded").last().unwrap()["changes"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(changes.contains("servers: +beta"), "{changes}");
    load.advance(10).await;
    replace_config(&gw.config(), &config);
    applied("a server removed", async || {
        !names(&watcher).await.contains(&"beta__echo".to_owned())
    })
    .await;
    let gone = call(&watcher, "beta__echo", serde_json::json!({"text": "b"})).await;
    assert!(gone.is_err(), "{gone:?}");
    // Nothing is in flight to it: its process is stopped.
    applied("the removed server's process stopped", async || {
        !fixture_running(&gw, "beta")
    })
    .await;
    load.finish().await;
    let _ = watcher.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn removing_the_server_a_slow_call_is_in_flight_to_lets_the_call_finish() {
    let config = base("[\"echo\"]");
    let gw = GatewayProc::start(&with_beta(&config)).await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    let slow = {
        let client = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
        tokio::spawn(async move {
            let r = call(
                &client,
                "beta__slow",
                serde_json::json!({"steps": 30, "delay_ms": 100}),
            )
            .await;
            let _ = client.cancel().await;
            r
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    replace_config(&gw.config(), &config);
    applied("the server removed", async || {
        !names(&client).await.contains(&"beta__slow".to_owned())
    })
    .await;
    assert!(
        !slow.is_finished(),
        "the slow call ended before the server was removed"
    );
    assert!(
        fixture_running(&gw, "beta"),
        "the server was stopped under the call in flight"
    );
    assert_eq!(slow.await.unwrap(), Ok("done after 30 steps".into()));
    applied("the removed server's process stopped", async || {
        !fixture_running(&gw, "beta")
    })
    .await;
    let _ = client.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_redaction_rule_and_a_rate_limit_apply_without_a_restart() {
    let config = base("[\"echo\"]");
    let gw = GatewayProc::start(&config).await;
    let load = Load::start(&gw.url("main"), 2).await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    let mail = serde_json::json!({"text": "write to ada@corp-mail.io"});
    assert_eq!(
        call(&client, "alpha__echo", mail.clone()).await,
        Ok("write to ada@corp-mail.io".into())
    );
    load.advance(10).await;
    let redacting = format!(
        "{config}[endpoints.main.redaction]\nrequests = false\nresponses = true\n\
         [endpoints.main.redaction.rules]\ndetect = [\"email\"]\n\n"
    );
    replace_config(&gw.config(), &redacting);
    applied("a redaction rule", async || {
        call(&client, "alpha__echo", mail.clone()).await == Ok("write to [REDACTED_EMAIL]".into())
    })
    .await;
    // The load's echoes carry no personal data: they still come back whole.
    load.finish().await;
    let limited = format!("{redacting}[rate_limits.per_principal]\nper_minute = 1\nburst = 2\n\n");
    replace_config(&gw.config(), &limited);
    applied("a rate limit", async || {
        call(&client, "alpha__echo", serde_json::json!({"text": "x"}))
            .await
            .is_err_and(|e| e.contains("-32029") || e.contains("rate limit"))
    })
    .await;
    let changes = audit_records(gw.dir.path(), "config_reloaded").last().unwrap()["changes"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(changes.contains("rate_limits changed"), "{changes}");
    let _ = client.cancel().await;
    gw.stop().await;
}

/// An `initialize` with `token`: the HTTP status.
async fn status_with(url: &str, token: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "0"}}
        }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn static_tokens_added_and_removed_by_mcp_guard_reload() {
    let config = base("[\"echo\"]");
    let gw = GatewayProc::start_with_env(&config, &[("GW_TEST_THIRD_TOKEN", THIRD_TOKEN)]).await;
    let url = gw.url("main");
    assert_eq!(
        status_with(&url, THIRD_TOKEN).await,
        reqwest::StatusCode::UNAUTHORIZED
    );
    assert!(status_with(&url, OTHER_TOKEN).await.is_success());
    let load = Load::start(&url, 3).await;
    load.advance(10).await;
    // carol's token joins, bob's leaves.
    let new = config.replace(
        "principal = { id = \"bob\", roles = [\"other\"] }\ntoken = \"${GW_TEST_OTHER_TOKEN}\"",
        "principal = { id = \"carol\", roles = [\"eng\"] }\ntoken = \"${GW_TEST_THIRD_TOKEN}\"",
    );
    assert_ne!(new, config);
    // Written in place (not renamed), then announced with `mcp-guard reload`.
    std::fs::write(gw.config(), &new).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["reload", "--config"])
        .arg(gw.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    applied("a static token added", async || {
        status_with(&url, THIRD_TOKEN).await.is_success()
    })
    .await;
    assert_eq!(
        status_with(&url, OTHER_TOKEN).await,
        reqwest::StatusCode::UNAUTHORIZED
    );
    let carol = http_client(&url, THIRD_TOKEN, Era::Modern).await;
    assert_eq!(
        call(&carol, "alpha__echo", serde_json::json!({"text": "c"})).await,
        Ok("c".into())
    );
    load.finish().await;
    // The command's SIGHUP and the file watcher may both reload; one applied the change.
    let records = audit_records(gw.dir.path(), "config_reloaded");
    assert!(
        records.iter().any(|r| r["digest"] == sha256_hex(&new)
            && r["changes"].as_str().unwrap().contains("auth.tokens: +1 -1")),
        "{records:#?}"
    );
    let _ = carol.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn refused_configs_leave_the_running_one_serving_and_are_audited() {
    let config = base("[\"echo\"]");
    let gw = GatewayProc::start(&config).await;
    let load = Load::start(&gw.url("main"), 2).await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    let wanted = format!(
        "{}[servers.bad]\ntransport = \"http\"\nurl = \"ftp://example.invalid\"\n\n",
        base("[\"echo\", \"add\"]")
    );
    let half = &wanted[..wanted.find("transport = \"stdio\"").unwrap() + 14];
    let cases = [
        ("garbage", "\u{1}\u{2} this is not TOML [[[\n".to_owned()),
        ("half written", half.to_owned()),
        ("invalid", wanted.clone()),
    ];
    for (i, (what, text)) in cases.iter().enumerate() {
        load.advance(5).await;
        replace_config(&gw.config(), text);
        applied(&format!("{what} refused"), async || {
            audit_records(gw.dir.path(), "config_refused").len() > i
        })
        .await;
        let record = &audit_records(gw.dir.path(), "config_refused")[i];
        assert_eq!(record["digest"], sha256_hex(text), "{what}: {record}");
        let reason = record["reason"].as_str().unwrap();
        assert!(reason.contains("gateway.toml"), "{what}: {reason}");
        // The running configuration stays: echo only.
        assert_eq!(names(&client).await, ["alpha__echo"], "{what}");
    }
    // The reason is the one `mcp-guard check` gives, file and line.
    let check = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(gw.config())
        .output()
        .unwrap();
    assert!(!check.status.success());
    let check_says = String::from_utf8_lossy(&check.stderr)
        .trim()
        .trim_start_matches("error: ")
        .to_owned();
    let reason = audit_records(gw.dir.path(), "config_refused")[2]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(reason, check_says);
    assert!(reason.contains("gateway.toml:"), "{reason}");
    // `mcp-guard reload` refuses it too, with the same words, and leaves the gateway alone.
    let out = std::process::Command::new(BIN)
        .args(["reload", "--config"])
        .arg(gw.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&check_says));
    // The writer finishes: the complete, valid file applies.
    let fixed = base("[\"echo\", \"add\"]");
    replace_config(&gw.config(), &fixed);
    applied("the finished file", async || {
        names(&client).await == ["alpha__echo", "alpha__add"]
    })
    .await;
    load.finish().await;
    // SIGHUP reloads the same file again: nothing changes, and it is recorded.
    let before = audit_records(gw.dir.path(), "config_reloaded").len();
    signal(gw.pid().unwrap(), "HUP");
    applied("SIGHUP", async || {
        audit_records(gw.dir.path(), "config_reloaded").len() > before
    })
    .await;
    let last = audit_records(gw.dir.path(), "config_reloaded").pop().unwrap();
    assert_eq!(last["digest"], sha256_hex(&fixed));
    assert_eq!(last["changes"], "no change");
    let _ = client.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn settings_that_need_a_restart_keep_their_running_value() {
    let config = base("[\"echo\"]");
    let gw = GatewayProc::start(&config).await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    let new = format!(
        "[gateway]\nlisten = \"127.0.0.1:1\"\n\n{}[endpoints.ops.servers.alpha]\ntools = [\"echo\"]\n\n",
        base("[\"echo\", \"add\"]")
    );
    replace_config(&gw.config(), &new);
    applied("the selection", async || {
        names(&client).await == ["alpha__echo", "alpha__add"]
    })
    .await;
    let changes = audit_records(gw.dir.path(), "config_reloaded").last().unwrap()["changes"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(changes.contains("needs a restart"), "{changes}");
    assert!(changes.contains("gateway.listen"), "{changes}");
    assert!(changes.contains("endpoints.ops (new endpoint)"), "{changes}");
    // Still served where it was; the new endpoint waits for a restart.
    assert_eq!(
        call(&client, "alpha__echo", serde_json::json!({"text": "x"})).await,
        Ok("x".into())
    );
    let r = reqwest::Client::new()
        .post(gw.url("ops"))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
    let _ = client.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_server_switched_on_in_an_endpoint_and_a_changed_server_under_load() {
    let config = base("[\"echo\"]");
    let off = format!(
        "{config}{}[endpoints.main.servers.beta]\nenabled = false\ntools = [\"echo\"]\n\n",
        fixture("beta", &[])
    );
    let gw = GatewayProc::start(&off).await;
    assert!(
        !fixture_running(&gw, "beta"),
        "a server switched off everywhere does not run"
    );
    let load = Load::start(&gw.url("main"), 3).await;
    let watcher = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    load.advance(10).await;
    // Switched on in the endpoint: it starts and joins.
    replace_config(&gw.config(), &off.replace("enabled = false\n", ""));
    applied("a server switched on", async || {
        call(&watcher, "beta__echo", serde_json::json!({"text": "b"})).await == Ok("b".into())
    })
    .await;
    load.advance(10).await;
    // alpha's definition changes (one more tool) while the load calls it: the new
    // process starts before it takes over, calls in flight finish on the old one.
    let changed = off
        .replace("enabled = false\n", "")
        .replacen(
            "\"--name\", \"alpha\"]",
            "\"--name\", \"alpha\", \"--extra-tool\", \"fresh\"]",
            1,
        )
        .replace(
            "tools = [\"echo\"]\n\n[servers.beta]",
            "tools = [\"echo\", \"fresh\"]\n\n[servers.beta]",
        );
    assert!(changed.contains("fresh"));
    replace_config(&gw.config(), &changed);
    applied("a changed server", async || {
        names(&watcher).await.contains(&"alpha__fresh".to_owned())
    })
    .await;
    load.finish().await;
    let records = audit_records(gw.dir.path(), "config_reloaded");
    let last = records.last().unwrap()["changes"].as_str().unwrap().to_owned();
    assert!(last.contains("servers: +alpha -alpha"), "{last}");
    let _ = watcher.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn the_stdio_front_door_reloads_when_its_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let config = |tools: &str| {
        format!(
            "[auth]\nstdio_principal = {{ id = \"alice\", roles = [\"eng\"] }}\n\n{}",
            base(tools)
        )
    };
    std::fs::write(&path, config("[\"echo\"]")).unwrap();
    let client = stdio_client(&path, "main", Era::Legacy).await;
    assert_eq!(names(&client).await, ["alpha__echo"]);
    replace_config(&path, &config("[\"echo\", \"add\"]"));
    applied("a tool switched on over stdio", async || {
        client.service().seen("tools_changed") && names(&client).await == ["alpha__echo", "alpha__add"]
    })
    .await;
    assert_eq!(
        call(&client, "alpha__add", serde_json::json!({"a": 1, "b": 2})).await,
        Ok("3".into())
    );
    let _ = client.cancel().await;
}
