//! Faults and shutdown: a hung upstream hits its timeout (and is told to cancel), an
//! oversized answer and protocol garbage are errors that recycle the connection, an
//! upstream killed mid-call fails fast and comes back with no process left behind, a
//! SIGTERM drains calls in flight, keeps their audit records and reaps every child,
//! and `/metrics` counts by resolved name only.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
use rmcp::service::PeerRequestOptions;

use crate::support::*;

/// A unique marker for this test's fixture processes (their `--name`).
fn marker(test: &str) -> String {
    format!("{test}{}", std::process::id())
}

/// alpha (the fixture named `name`, with `extra` settings) on endpoint main, all tools.
fn config(name: &str, extra: &str, data: &Path) -> String {
    let mut c = String::from(AUTH);
    // One shared process: these tests count and kill it.
    c.push_str(&shared(&fixture(name, &[])).replace(&format!("[servers.{name}]"), "[servers.alpha]"));
    c.push_str(extra);
    let _ = write!(
        c,
        "\n[servers.alpha.env]\nFIXTURE_CANCEL_FILE = \"{}\"\n\n[endpoints.main.servers.alpha]\ntools = [\"*\"]\n\n[audit]\nsinks = [\"jsonl\"]\njsonl_dir = \"{}\"\n",
        data.join("cancelled").display(),
        data.join("jsonl").display()
    );
    c
}

#[allow(clippy::needless_pass_by_value, reason = "call sites pass json! literals")]
fn call(name: &str, args_json: serde_json::Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_owned()).with_arguments(args(&args_json))
}

#[tokio::test]
async fn a_hung_upstream_times_out_with_its_name_and_limit_and_is_told_to_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let name = marker("hang");
    let gw = GatewayProc::start(&config(&name, "timeout_secs = 1\n", dir.path())).await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    let t = Instant::now();
    let err = client
        .call_tool(call(
            "alpha__slow",
            serde_json::json!({"steps": 100, "delay_ms": 50}),
        ))
        .await
        .unwrap_err()
        .to_string();
    let took = t.elapsed();
    assert!(err.contains("server alpha timed out after 1s"), "{err}");
    assert!(
        took >= Duration::from_millis(900),
        "not before the limit: {took:?}"
    );
    within_promise("a hung call timed out", took, Duration::from_secs(1));
    assert!(
        eventually(5, async || dir.path().join("cancelled").exists()).await,
        "the upstream got notifications/cancelled"
    );
    // The connection itself is fine: the next call is answered.
    let ok = client
        .call_tool(call("alpha__echo", serde_json::json!({"text": "hi"})))
        .await
        .unwrap();
    assert_eq!(text_of(&ok), "hi");
    let _ = client.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn an_oversized_answer_is_an_error_and_the_connection_is_recycled() {
    let dir = tempfile::tempdir().unwrap();
    let name = marker("big");
    let gw = GatewayProc::start(&config(&name, "max_response_bytes = 4096\n", dir.path())).await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    let small = client
        .call_tool(call("alpha__echo", serde_json::json!({"text": "small"})))
        .await
        .unwrap();
    assert_eq!(text_of(&small), "small");
    let before: Vec<u32> = processes_with(&name).iter().map(|p| p.pid).collect();
    assert_eq!(before.len(), 1, "{before:?}");
    let t = Instant::now();
    let err = client
        .call_tool(call(
            "alpha__echo",
            serde_json::json!({"text": "x".repeat(10_000)}),
        ))
        .await
        .unwrap_err()
        .to_string();
    within_promise("an oversized answer refused", t.elapsed(), Duration::from_secs(2));
    assert!(
        err.contains("server alpha sent a response larger than its limit of 4096 bytes"),
        "{err}"
    );
    let ok = eventually(3, async || {
        client
            .call_tool(call("alpha__echo", serde_json::json!({"text": "again"})))
            .await
            .is_ok_and(|r| text_of(&r) == "again")
    })
    .await;
    assert!(ok, "a fresh connection answers");
    assert!(
        eventually(5, async || before
            .iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists()))
        .await,
        "the old process is gone (reaped)"
    );
    let _ = client.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn protocol_garbage_is_an_error_and_the_connection_is_recycled() {
    let dir = tempfile::tempdir().unwrap();
    let name = marker("garbage");
    let cfg = config(&name, "", dir.path()).replace(
        &format!("\"--name\", \"{name}\"]"),
        &format!("\"--name\", \"{name}\", \"--garbage-after\", \"1\"]"),
    );
    assert!(cfg.contains("--garbage-after"));
    let gw = GatewayProc::start(&cfg).await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    for round in 0..2 {
        // The first call of each process is clean, the second writes garbage (and
        // would answer only 30 s later).
        let ok = eventually(3, async || {
            client
                .call_tool(call("alpha__echo", serde_json::json!({"text": "clean"})))
                .await
                .is_ok_and(|r| text_of(&r) == "clean")
        })
        .await;
        assert!(ok, "round {round}: a fresh process answers");
        let t = Instant::now();
        let err = client
            .call_tool(call("alpha__echo", serde_json::json!({"text": "dirty"})))
            .await
            .unwrap_err()
            .to_string();
        within_promise(
            &format!("round {round}: garbage refused"),
            t.elapsed(),
            Duration::from_millis(1500),
        );
        assert!(err.contains("server alpha sent an invalid response"), "{err}");
    }
    let r: serde_json::Value = reqwest::get(format!("{}/readyz", gw.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let detail = r["servers"][0]["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("not JSON-RPC"), "{r}");
    let _ = client.cancel().await;
    gw.stop().await;
}

/// Timings of one crash-and-recover round.
struct Round {
    error_after: Duration,
    recovered_after: Duration,
}

/// Kills alpha (SIGKILL) `rounds` times in the middle of a call; checks each error
/// comes within 2 s and the next call succeeds within 3 s, then that no process is
/// left over: neither the fixture (orphaned or zombie) nor any zombie child.
#[allow(clippy::print_stdout, reason = "prints the process counts the issue asks for")]
async fn crash_rounds(test: &str, rounds: usize) -> Vec<Round> {
    let dir = tempfile::tempdir().unwrap();
    let name = marker(test);
    let gw = GatewayProc::start(&config(&name, "", dir.path())).await;
    let gw_pid = gw.pid().unwrap();
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    let before = processes();
    let baseline_children = before.iter().filter(|p| p.ppid == gw_pid).count();
    let mut out = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let live = processes_with(&name);
        assert_eq!(live.len(), 1, "round {round}: one alpha process: {live:?}");
        let params = call("alpha__slow", serde_json::json!({"steps": 200, "delay_ms": 50}));
        let handle = client
            .send_request_with_option(
                ClientRequest::CallToolRequest(CallToolRequest::new(params)),
                PeerRequestOptions::no_options(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let killed = Instant::now();
        signal(live[0].pid, "KILL");
        let result = tokio::time::timeout(Duration::from_secs(30), handle.await_response()).await;
        let error_after = killed.elapsed();
        let err = format!("{result:?}");
        assert!(
            matches!(result, Ok(Err(_))),
            "round {round}: the in-flight call fails: {err}"
        );
        assert!(err.contains("server alpha terminated"), "round {round}: {err}");
        within_promise(
            &format!("round {round}: a killed process's call failed"),
            error_after,
            Duration::from_secs(2),
        );
        let t = Instant::now();
        let recovered = eventually(3, async || {
            client
                .call_tool(call("alpha__whoami", serde_json::json!({})))
                .await
                .is_ok()
        })
        .await;
        let recovered_after = t.elapsed();
        assert!(
            recovered,
            "round {round}: answered again within 3 s ({recovered_after:?})"
        );
        out.push(Round {
            error_after,
            recovered_after,
        });
    }
    // Settled: exactly one alpha, a child of the gateway; no zombie anywhere among the
    // gateway's children; no alpha elsewhere (orphans are re-parented away from it).
    let settled = eventually(5, async || {
        let now = processes();
        let alphas: Vec<_> = now.iter().filter(|p| p.cmdline.contains(&name)).collect();
        let zombies = now.iter().filter(|p| p.ppid == gw_pid && p.state == 'Z').count();
        alphas.len() == 1
            && alphas[0].ppid == gw_pid
            && alphas[0].state != 'Z'
            && zombies == 0
            && now.iter().filter(|p| p.ppid == gw_pid).count() == baseline_children
    })
    .await;
    let now = processes();
    assert!(
        settled,
        "process table settled: {:?}",
        now.iter()
            .filter(|p| p.ppid == gw_pid || p.cmdline.contains(&name))
            .collect::<Vec<_>>()
    );
    let zombies = now.iter().filter(|p| p.ppid == gw_pid && p.state == 'Z').count();
    let alphas = now.iter().filter(|p| p.cmdline.contains(&name)).count();
    let orphans = now
        .iter()
        .filter(|p| p.cmdline.contains(&name) && p.ppid != gw_pid)
        .count();
    let children_after = now.iter().filter(|p| p.ppid == gw_pid).count();
    let _ = client.cancel().await;
    let (status, _) = gw.terminate(Duration::from_secs(15)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let after_shutdown = processes_with(&name).len();
    assert_eq!(after_shutdown, 0, "no alpha after shutdown");
    println!(
        "processes: gateway children {baseline_children} before, {children_after} after; \
         upstream processes alive {alphas}, orphaned {orphans}, zombie children {zombies}; \
         upstream processes after SIGTERM of the gateway {after_shutdown}"
    );
    out
}

fn report(rounds: &[Round]) -> String {
    let mut e: Vec<_> = rounds.iter().map(|r| r.error_after).collect();
    let mut r: Vec<_> = rounds.iter().map(|r| r.recovered_after).collect();
    e.sort();
    r.sort();
    let p = |v: &[Duration], q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    format!(
        "rounds {}: error after p50 {:?} p99 {:?} max {:?}; recovered after p50 {:?} p99 {:?} max {:?}",
        rounds.len(),
        p(&e, 0.5),
        p(&e, 0.99),
        e[e.len() - 1],
        p(&r, 0.5),
        p(&r, 0.99),
        r[r.len() - 1]
    )
}

#[tokio::test]
async fn an_upstream_killed_mid_call_fails_fast_recovers_and_leaves_no_process() {
    let rounds = crash_rounds("crash5x", 5).await;
    println!("{}", report(&rounds));
}

/// The issue's 100 rounds; about a minute. `cargo test -p mcp-guard-cli --test gateway
/// -- --ignored --nocapture crash_100`.
#[tokio::test]
#[ignore = "long: 100 crash rounds, run by hand"]
async fn crash_100_times_mid_call() {
    let rounds = crash_rounds("crash100x", 100).await;
    println!("{}", report(&rounds));
}

fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
    }
    out
}

fn slow_records(dir: &Path) -> Vec<serde_json::Value> {
    audit_records(dir)
        .into_iter()
        .filter(|r| r.pointer("/event/requested_name").and_then(|v| v.as_str()) == Some("alpha__slow"))
        // The outcome records (a forwarded call's start record is checked apart).
        .filter(|r| r.pointer("/event/phase").and_then(|v| v.as_str()) != Some("started"))
        .collect()
}

#[tokio::test]
async fn sigterm_lets_a_call_in_flight_finish_records_it_and_reaps_every_child() {
    let dir = tempfile::tempdir().unwrap();
    let name = marker("drain");
    let mut cfg = config(&name, "", dir.path());
    cfg.push_str("\n[gateway]\nshutdown_grace_secs = 10\n");
    let gw = GatewayProc::start(&cfg).await;
    let gw_pid = gw.pid().unwrap();
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    let _ = client
        .call_tool(call("alpha__whoami", serde_json::json!({})))
        .await
        .unwrap();
    let children: Vec<u32> = children_of(gw_pid).iter().map(|p| p.pid).collect();
    assert_eq!(children.len(), 1, "{children:?}");
    let call_task = {
        let peer = client.peer().clone();
        tokio::spawn(async move {
            peer.call_tool(call(
                "alpha__slow",
                serde_json::json!({"steps": 15, "delay_ms": 100}),
            ))
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, took) = gw.terminate(Duration::from_secs(20)).await;
    let result = call_task.await.unwrap();
    assert_eq!(
        result.as_ref().map(text_of).map_err(ToString::to_string),
        Ok("done after 15 steps".to_owned()),
        "the call in flight completed"
    );
    assert!(status.is_some_and(|s| s.success()), "clean exit: {status:?}");
    assert!(took >= Duration::from_secs(1), "it waited for the call: {took:?}");
    let records = slow_records(&dir.path().join("jsonl"));
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[0].pointer("/event/outcome").and_then(|v| v.as_str()),
        Some("ok")
    );
    let started = audit_records(&dir.path().join("jsonl"))
        .into_iter()
        .filter(|r| r.pointer("/event/phase").and_then(|v| v.as_str()) == Some("started"))
        .filter(|r| r.pointer("/event/id") == records[0].pointer("/event/id"))
        .count();
    assert_eq!(started, 1, "its start record, with the same id");
    for pid in children {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "child {pid} is gone"
        );
    }
    assert!(processes_with(&name).is_empty(), "no fixture left");
}

#[tokio::test]
async fn sigterm_answers_a_call_still_running_at_the_deadline_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let name = marker("deadline");
    let mut cfg = config(&name, "", dir.path());
    cfg.push_str("\n[gateway]\nshutdown_grace_secs = 1\n");
    let gw = GatewayProc::start(&cfg).await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    let call_task = {
        let peer = client.peer().clone();
        tokio::spawn(async move {
            peer.call_tool(call(
                "alpha__slow",
                serde_json::json!({"steps": 600, "delay_ms": 100}),
            ))
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, took) = gw.terminate(Duration::from_secs(45)).await;
    let err = call_task.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("shutting down"), "{err}");
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    // The call would run for 60 s: the gateway stops at its 1 s grace instead.
    within_promise("stopped at the grace deadline", took, Duration::from_secs(3));
    let records = slow_records(&dir.path().join("jsonl"));
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(processes_with(&name).is_empty(), "no fixture left");
}

#[tokio::test]
async fn metrics_count_requests_by_resolved_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let name = marker("metrics");
    let gw = GatewayProc::start(&config(&name, "", dir.path())).await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    let _ = client
        .call_tool(call("alpha__echo", serde_json::json!({"text": "a"})))
        .await
        .unwrap();
    let _ = client
        .call_tool(call("alpha__echo", serde_json::json!({"text": "b"})))
        .await
        .unwrap();
    let _ = client
        .call_tool(call("alpha__made_up_by_client", serde_json::json!({})))
        .await;
    let r = reqwest::get(format!("{}/metrics", gw.base)).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = r.text().await.unwrap();
    assert!(
        text.contains(r#"mcp_guard_requests_total{endpoint="main",server="alpha",tool="echo",method="tools/call",outcome="ok"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"mcp_guard_requests_total{endpoint="main",server="",tool="",method="tools/call",outcome="denied"} 1"#),
        "{text}"
    );
    assert!(!text.contains("made_up"), "{text}");
    assert!(text.contains("mcp_guard_upstream_processes 1"), "{text}");
    assert!(
        text.contains(r#"mcp_guard_upstream_up{server="alpha"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"mcp_guard_sessions_active{endpoint="main"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("mcp_guard_request_duration_seconds_bucket"),
        "{text}"
    );
    let _ = client.cancel().await;
    gw.stop().await;
}

/// One POST of a legacy session's JSON-RPC message: (status, session id, body).
async fn legacy_post(
    http: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: &serde_json::Value,
) -> (reqwest::StatusCode, Option<String>, String) {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some(id) = session {
        req = req
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", "2025-11-25");
    }
    let r = req.body(body.to_string()).send().await.unwrap();
    let status = r.status();
    let id = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, id, r.text().await.unwrap())
}

async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn gauge(metrics: &str, name: &str) -> Option<i64> {
    let prefix = format!("{name}{{endpoint=\"main\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn an_idle_legacy_session_is_parked_and_resumes_on_its_next_request() {
    mcp_guard_core::upstream::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(&config(&marker("parked"), "", dir.path())).await;
    let url = gw.url("main");
    let http = reqwest::Client::new();
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "parking-test", "version": "1.0.0"}}});
    let (status, id, body) = legacy_post(&http, &url, None, &init).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let id = id.expect("a legacy session id");
    let note = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, _) = legacy_post(&http, &url, Some(&id), &note).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED);

    // Idle: counted, but holding no service loop.
    let m = metrics_text(&gw.base).await;
    assert_eq!(gauge(&m, "mcp_guard_sessions_active"), Some(1), "{m}");
    assert_eq!(gauge(&m, "mcp_guard_sessions_resident"), Some(0), "{m}");

    // Each request resumes it, is answered on its stream, and it parks again.
    for (i, text) in ["first", "second"].into_iter().enumerate() {
        let call = serde_json::json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
            "params": {"name": "alpha__echo", "arguments": {"text": text}}});
        let (status, _, body) = legacy_post(&http, &url, Some(&id), &call).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        assert!(
            body.contains(text) && body.contains(&format!("\"id\":{}", 10 + i)),
            "{body}"
        );
        assert!(
            body.contains("id: 0/") || body.contains("id:0/"),
            "the stream opens with a priming event: {body}"
        );
    }
    let mut resident = None;
    for _ in 0..50 {
        resident = gauge(&metrics_text(&gw.base).await, "mcp_guard_sessions_resident");
        if resident == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(resident, Some(0));

    // DELETE ends it for good.
    let r = http
        .delete(&url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("mcp-session-id", &id)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        gauge(&metrics_text(&gw.base).await, "mcp_guard_sessions_active"),
        Some(0)
    );
    let ping = serde_json::json!({"jsonrpc": "2.0", "id": 99, "method": "ping"});
    let (status, _, _) = legacy_post(&http, &url, Some(&id), &ping).await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    gw.stop().await;
}
