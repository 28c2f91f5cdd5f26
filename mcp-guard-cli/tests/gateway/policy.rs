//! Access control end to end: a corpus of hostile names (case, confusables, whitespace,
//! separator tricks, header/body disagreement, duplicate JSON keys) refused, audited and
//! never forwarded; grant conditions on arguments, attributes and the endpoint; rate
//! limits; `mcp-guard explain`.

use std::fmt::Write as _;
use std::path::Path;

use reqwest::StatusCode;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

use crate::support::*;

/// alice (eng) may call everything but `denied`; bob has no grant. The fixture records
/// every call that reaches it in `calls.log`.
fn config(dir: &Path, extra: &str) -> String {
    let mut c = String::from(AUTH);
    c.push_str(
        "[[grants]]\nname = \"no-denied\"\neffect = \"deny\"\nroles = [\"eng\"]\nnames = [\"denied\"]\n\n",
    );
    c.push_str(extra);
    c.push_str(&fixture("fixture", &["denied"]));
    let _ = write!(
        c,
        "[servers.fixture.env]\nFIXTURE_CALL_LOG = \"{}\"\n\n",
        dir.join("calls.log").display()
    );
    c.push_str("[endpoints.main.servers.fixture]\ntools = [\"echo\", \"denied\", \"add\"]\nprompts = [\"greeting\"]\n\n");
    let _ = write!(
        c,
        "[audit]\nsinks = [\"jsonl\"]\njsonl_dir = \"{}\"\n",
        dir.join("audit").display()
    );
    c
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every audit event written so far.
fn audit_events(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("audit")) else {
        return out;
    };
    for e in entries {
        for line in std::fs::read_to_string(e.unwrap().path()).unwrap().lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                out.push(v["event"].clone());
            }
        }
    }
    out
}

fn http() -> reqwest::Client {
    mcp_guard_core::upstream::ensure_crypto_provider();
    reqwest::Client::new()
}

fn meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
           "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
           "io.modelcontextprotocol/clientCapabilities": {}})
}

/// A stateless 2026-07-28 request; `name` goes in `Mcp-Name` when it is a valid header.
fn post(
    c: &reqwest::Client,
    url: &str,
    method: &str,
    name: Option<&str>,
    body: String,
) -> reqwest::RequestBuilder {
    let mut r = c
        .post(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(n) = name.and_then(|n| reqwest::header::HeaderValue::from_str(n).ok()) {
        r = r.header("mcp-name", n);
    }
    r.body(body)
}

/// The JSON-RPC message in a response (plain JSON or the first SSE `data:` line).
async fn message(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let body = r.text().await.unwrap();
    let json = body
        .lines()
        .find_map(|l| {
            l.strip_prefix("data:")
                .map(str::trim)
                .filter(|d| d.starts_with('{'))
        })
        .unwrap_or(body.trim());
    (
        status,
        serde_json::from_str(json).unwrap_or_else(|_| json!({"raw": body})),
    )
}

fn call_body(id: u64, name: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": name, "arguments": {"text": "hostile"}, "_meta": meta()}})
    .to_string()
}

const HOSTILE: &[&str] = &[
    // case
    "Fixture__Echo",
    "FIXTURE__ECHO",
    "fixture__Echo",
    "fixture__ECHO",
    // confusables: Cyrillic 'е' (U+0435), fullwidth, dotless/accented
    "fixture__\u{0435}cho",
    "fixture__\u{FF45}\u{FF43}\u{FF48}\u{FF4F}",
    "\u{FF46}ixture__echo",
    "fixture__ech\u{043E}",
    "fixture__e\u{0301}cho",
    // whitespace and invisibles
    " fixture__echo",
    "fixture__echo ",
    "fixture__echo\t",
    "fixture__echo\n",
    "fixture__echo\u{00A0}",
    "fixture__echo\u{200B}",
    "\u{200B}fixture__echo",
    "fixture__\u{200D}echo",
    "fixture__echo\u{FEFF}",
    "fixture__echo\u{0000}",
    // separator and namespace tricks
    "a__b__c",
    "fixture__fixture__echo",
    "fixture___echo",
    "fixture____echo",
    "__echo",
    "__fixture__echo",
    "fixture__",
    "fixture__echo__",
    "fixture_echo",
    "fixture",
    "echo",
    "fixture/echo",
    "fixture.echo",
    "fixture+echo",
    "fixture__ech*",
    "fixture__e?ho",
    "fixture__*",
    "",
    // the denied tool itself, and its variants
    "fixture__denied",
    "Fixture__Denied",
    "fixture__denied ",
];

/// Opens a legacy (2025-11-25) session; its requests carry no `Mcp-Name` header, so
/// whatever name the body holds reaches name resolution and policy.
async fn legacy_session(c: &reqwest::Client, url: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}});
    let r = c
        .post(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    let id = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = r.text().await;
    legacy(
        c,
        url,
        &id,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    )
    .send()
    .await
    .unwrap();
    id
}

fn legacy(c: &reqwest::Client, url: &str, session: &str, body: String) -> reqwest::RequestBuilder {
    c.post(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-session-id", session)
        .body(body)
}

fn legacy_call(id: u64, name: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": name, "arguments": {"text": "hostile"}}})
    .to_string()
}

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario over one gateway process")]
async fn hostile_names_are_refused_audited_and_never_forwarded() {
    let data = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(&config(data.path(), "")).await;
    let url = gw.url("main");
    let c = http();

    // 2026-07-28 requests: `Mcp-Name` must be a visible-ASCII copy of the body's name,
    // so most of the corpus stops at the edge (400, -32020); the rest reaches policy.
    let mut at_the_edge = 0;
    for (i, name) in HOSTILE.iter().enumerate() {
        let (status, m) = message(
            post(&c, &url, "tools/call", Some(name), call_body(i as u64 + 10, name))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(m.get("result").is_none(), "{name:?} was answered: {m}");
        if status == StatusCode::OK {
            assert_eq!(m["error"]["code"], -32602, "{name:?}: {m}");
            assert_eq!(
                m["error"]["message"],
                format!("Unknown tool: {name}"),
                "{name:?}: {m}"
            );
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {m}");
            assert_eq!(m["error"]["code"], -32020, "{name:?}: {m}");
            at_the_edge += 1;
        }
    }
    assert!(at_the_edge > 0);

    // Legacy requests: every name reaches resolution and policy, and is refused exactly
    // as an unknown tool.
    let session = legacy_session(&c, &url).await;
    for (i, name) in HOSTILE.iter().enumerate() {
        let (status, m) = message(
            legacy(&c, &url, &session, legacy_call(i as u64 + 100, name))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name:?}: {m}");
        assert!(m.get("result").is_none(), "{name:?} was answered: {m}");
        assert_eq!(m["error"]["code"], -32602, "{name:?}: {m}");
        assert_eq!(
            m["error"]["message"],
            format!("Unknown tool: {name}"),
            "{name:?}: {m}"
        );
    }

    // Header and body disagree: the header names an allowed tool, the body another.
    for (header, body_name) in [
        ("fixture__echo", "fixture__denied"),
        ("fixture__denied", "fixture__echo"),
        ("fixture__echo", "Fixture__Echo"),
        ("fixture__echo", "fixture__echo\u{200B}"),
    ] {
        let (status, m) = message(
            post(&c, &url, "tools/call", Some(header), call_body(90, body_name))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(
            m.get("result").is_none(),
            "{header} vs {body_name:?} answered: {m}"
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "{header} vs {body_name:?}: {m}");
    }

    // Duplicate JSON keys, in either order, in params and at the top level.
    let meta_text = meta().to_string();
    for body in [
        format!(
            r#"{{"jsonrpc":"2.0","id":91,"method":"tools/call","params":{{"name":"fixture__denied","name":"fixture__echo","arguments":{{"text":"dup"}},"_meta":{meta_text}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":92,"method":"tools/call","params":{{"name":"fixture__echo","name":"fixture__denied","arguments":{{"text":"dup"}},"_meta":{meta_text}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":93,"method":"tools/call","params":{{"name":"fixture__denied","arguments":{{"text":"dup"}},"_meta":{meta_text}}},"params":{{"name":"fixture__echo","arguments":{{"text":"dup"}},"_meta":{meta_text}}}}}"#
        ),
    ] {
        for header in ["fixture__echo", "fixture__denied"] {
            let (status, m) = message(
                post(&c, &url, "tools/call", Some(header), body.clone())
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert!(
                m.get("result").is_none(),
                "duplicate keys answered: {body} -> {m}"
            );
            assert!(
                !status.is_success() || m["error"].is_object(),
                "{body} -> {status} {m}"
            );
        }
        let legacy_body = body.replace(&format!(r#","_meta":{meta_text}"#), "");
        let (status, m) = message(
            legacy(&c, &url, &session, legacy_body.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(
            m.get("result").is_none(),
            "duplicate keys answered: {legacy_body} -> {m}"
        );
        assert!(
            !status.is_success() || m["error"].is_object(),
            "{legacy_body} -> {status} {m}"
        );
    }

    // bob has no grant: even the real name is refused, as unknown, for tools, prompts
    // and completions.
    let bob = |body: String, method: &str, name: &str| {
        c.post(&url)
            .bearer_auth(OTHER_TOKEN)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .header("mcp-name", name)
            .body(body)
    };
    let (_, m) = message(
        bob(call_body(94, "fixture__echo"), "tools/call", "fixture__echo")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(m["error"]["message"], "Unknown tool: fixture__echo", "{m}");
    let prompt = json!({"jsonrpc": "2.0", "id": 95, "method": "prompts/get", "params": {
        "name": "fixture__greeting", "arguments": {"name": "x"}, "_meta": meta()}});
    let (_, m) = message(
        bob(prompt.to_string(), "prompts/get", "fixture__greeting")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        m["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Unknown prompt"),
        "{m}"
    );
    let complete = json!({"jsonrpc": "2.0", "id": 96, "method": "completion/complete", "params": {
        "ref": {"type": "ref/prompt", "name": "fixture__greeting"},
        "argument": {"name": "name", "value": "a"}, "_meta": meta()}});
    let (_, m) = message(
        bob(complete.to_string(), "completion/complete", "fixture__greeting")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(m["error"].is_object(), "{m}");

    // Nothing reached the upstream.
    assert_eq!(calls(data.path()), Vec::<String>::new());

    // The control: the real name works and is recorded by the fixture, so the log
    // above would have shown a forwarded call.
    let (_, m) = message(
        post(
            &c,
            &url,
            "tools/call",
            Some("fixture__echo"),
            call_body(99, "fixture__echo"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(m["result"]["content"][0]["text"], "hostile", "{m}");
    assert_eq!(calls(data.path()), ["tools/call echo"]);
    gw.stop().await;

    let events = audit_events(data.path());
    for name in HOSTILE {
        let denied = events
            .iter()
            .any(|e| e["requested_name"].as_str() == Some(*name) && e["outcome"] == "denied");
        assert!(denied, "no denied audit record for {name:?}");
    }
    // Refusals at the edge are audited too (with the rule naming the edge).
    let edge = events
        .iter()
        .filter(|e| e["rule"].as_str().is_some_and(|r| r.starts_with("http edge")))
        .count();
    assert!(
        edge >= at_the_edge,
        "{edge} edge records for {at_the_edge} edge refusals"
    );
    let by_rule = events
        .iter()
        .find(|e| e["requested_name"] == "fixture__denied")
        .unwrap();
    assert_eq!(by_rule["rule"], "no-denied", "{by_rule}");
    let bobs: Vec<&Value> = events.iter().filter(|e| e["principal"]["id"] == "bob").collect();
    for method in ["tools/call", "prompts/get", "completion/complete"] {
        let e = bobs
            .iter()
            .find(|e| e["method"] == method)
            .unwrap_or_else(|| panic!("no audit record of bob's {method}: {bobs:?}"));
        assert_eq!(e["outcome"], "denied", "{e}");
        assert_eq!(e["rule"], "default deny", "{e}");
    }
}

/// bob may call `echo` only with `text` "a" or "b", only on endpoints `ma*`.
const BOB_CONDITIONAL: &str = "[[grants]]\nname = \"bob-echo\"\nroles = [\"other\"]\nnames = [\"echo\"]\n\
kinds = [\"tool\"]\nendpoint = { glob = \"ma*\" }\n\n[[grants.when]]\narg = \"/text\"\nin = [\"a\", \"b\"]\n\n";

#[tokio::test]
async fn argument_conditions_gate_calls_and_lists_show_what_some_call_may_use() {
    let data = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(&config(data.path(), BOB_CONDITIONAL)).await;
    let bob = http_client(&gw.url("main"), OTHER_TOKEN, Era::Modern).await;
    assert_eq!(names(&bob).await, ["fixture__echo"]);
    let r = bob
        .call_tool(CallToolRequestParams::new("fixture__echo").with_arguments(args(&json!({"text": "a"}))))
        .await
        .unwrap();
    assert_eq!(text_of(&r), "a");
    for refused in [json!({"text": "c"}), json!({}), json!({"text": ["a"]})] {
        let e = bob
            .call_tool(CallToolRequestParams::new("fixture__echo").with_arguments(args(&refused)))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("Unknown tool: fixture__echo"),
            "{refused}: {e}"
        );
    }
    let _ = bob.cancel().await;
    assert_eq!(calls(data.path()), ["tools/call echo"]);
    gw.stop().await;
    let events = audit_events(data.path());
    let rules: Vec<&str> = events
        .iter()
        .filter(|e| e["principal"]["id"] == "bob" && e["requested_name"] == "fixture__echo")
        .filter(|e| e["phase"] != "started") // a forwarded call's start record repeats its rule
        .map(|e| e["rule"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        rules,
        ["bob-echo", "default deny", "default deny", "default deny"]
    );
}

#[tokio::test]
async fn rate_limits_refuse_with_a_retry_hint_and_are_audited() {
    let data = tempfile::tempdir().unwrap();
    let extra = "[rate_limits]\nper_principal_tool = { per_minute = 6, burst = 2 }\n\n";
    let gw = GatewayProc::start(&config(data.path(), extra)).await;
    let url = gw.url("main");
    let c = http();
    let mut answers = Vec::new();
    for i in 0..3 {
        answers.push(
            message(
                post(
                    &c,
                    &url,
                    "tools/call",
                    Some("fixture__echo"),
                    call_body(i, "fixture__echo"),
                )
                .send()
                .await
                .unwrap(),
            )
            .await
            .1,
        );
    }
    assert_eq!(answers[0]["result"]["content"][0]["text"], "hostile");
    assert_eq!(answers[1]["result"]["content"][0]["text"], "hostile");
    let e = &answers[2]["error"];
    assert_eq!(e["code"], -32029, "{e}");
    assert_eq!(e["message"], "rate limit exceeded, retry later");
    assert_eq!(e["data"]["limit"], "per_principal_tool");
    let ms = e["data"]["retryAfterMs"].as_u64().unwrap();
    assert!(ms > 5_000 && ms <= 10_000, "one token per 10 s: {e}");
    assert!(e["data"]["retryAfterSecs"].as_u64().unwrap() >= 5);
    // Another tool has its own budget; a refused call does not use any.
    let add = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "fixture__add", "arguments": {"a": 1, "b": 2}, "_meta": meta()}});
    let (_, m) = message(
        post(&c, &url, "tools/call", Some("fixture__add"), add.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(m["result"]["content"][0]["text"], "3", "{m}");
    assert_eq!(
        calls(data.path()),
        ["tools/call echo", "tools/call echo", "tools/call add"]
    );
    gw.stop().await;
    let events = audit_events(data.path());
    let limited: Vec<&Value> = events.iter().filter(|e| e["outcome"] == "rate_limited").collect();
    assert_eq!(limited.len(), 1, "{events:?}");
    assert_eq!(limited[0]["rule"], "rate_limits.per_principal_tool");
    assert_eq!(limited[0]["requested_name"], "fixture__echo");
}

/// Runs `mcp-guard explain` with `config`; returns the exit code and stdout + stderr.
fn explain(config: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .arg("explain")
        .args(args)
        .env("MCP_GUARD_CONFIG", config)
        .env("GW_TEST_TOKEN", TOKEN)
        .env("GW_TEST_OTHER_TOKEN", OTHER_TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn explain_prints_the_decision_and_the_rule() {
    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        "{BOB_CONDITIONAL}[[grants]]\nname = \"infra-agents\"\nprincipals = [\"*\"]\nprincipal_kind = \"agent\"\nnames = [\"add\"]\n\n\
[[grants.when]]\nattr = \"team\"\neq = \"infra\"\n\n"
    );
    let path = data.path().join("gateway.toml");
    std::fs::write(&path, config(data.path(), &extra)).unwrap();
    let base = ["--endpoint", "main", "--tool"];
    let run = |principal: &[&str], tool: &str, more: &[&str]| {
        let mut a: Vec<&str> = vec!["--principal"];
        a.extend(principal);
        a.extend(base);
        a.push(tool);
        a.extend(more);
        explain(&path, &a)
    };

    let (code, out) = run(&["alice", "--role", "eng"], "fixture__echo", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("decision: allow"), "{out}");
    assert!(out.contains("grant \"eng-all\""), "{out}");
    assert!(
        out.contains("by \"echo\" in endpoints.main.servers.fixture.tools"),
        "{out}"
    );

    let (code, out) = run(&["alice", "--role", "eng"], "fixture__denied", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("policy:   deny by grant \"no-denied\""), "{out}");

    let (code, out) = run(&["carol"], "fixture__echo", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no grant matched (default deny)"), "{out}");

    // Argument conditions: the call depends on --args, the listing does not.
    let (code, out) = run(
        &["bob", "--role", "other"],
        "fixture__echo",
        &["--args", r#"{"text": "a"}"#],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("grant \"bob-echo\""), "{out}");
    let (code, out) = run(
        &["bob", "--role", "other"],
        "fixture__echo",
        &["--args", r#"{"text": "z"}"#],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("listed:   yes"), "{out}");

    // Principal kind and attributes; --server with the upstream's own name.
    let agent = ["ci", "--agent", "--attr", "team=infra"];
    let (code, out) = run(&agent, "add", &["--server", "fixture"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("grant \"infra-agents\""), "{out}");
    let (code, _) = run(&["ci", "--attr", "team=infra"], "fixture__add", &[]);
    assert_eq!(code, 1, "a user is not an agent");
    let (code, _) = run(&["ci", "--agent", "--attr", "team=web"], "fixture__add", &[]);
    assert_eq!(code, 1, "wrong team");

    // Allowed by a grant but not exposed by the endpoint.
    let (code, out) = run(&["alice", "--role", "eng"], "fixture__whoami", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("policy:   allow"), "{out}");
    assert!(
        out.contains("exposed:  no: nothing in endpoints.main.servers.fixture.tools"),
        "{out}"
    );

    // Prompts; errors exit 2.
    let (code, out) = run(
        &["alice", "--role", "eng"],
        "fixture__greeting",
        &["--kind", "prompt"],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&["alice"], "nosuch__echo", &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("does not federate"), "{out}");
    let (code, out) = run(&["alice"], "fixture__echo", &["--args", "[1]"]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = explain(
        &path,
        &["--principal", "a", "--endpoint", "nope", "--tool", "x__y"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no endpoint named \"nope\""), "{out}");
}

// ---------------------------------------------------------------------------------------
// The fast path: an HTTP upstream over pooled connections gets today's answers
// ---------------------------------------------------------------------------------------

/// [`config`] with the fixture served over streamable HTTP at `url` (connections
/// pooled, the default).
fn http_upstream_config(dir: &Path, url: &str) -> String {
    let stdio = config(dir, "");
    let table = fixture("fixture", &["denied"]);
    let env = format!(
        "[servers.fixture.env]\nFIXTURE_CALL_LOG = \"{}\"\n\n",
        dir.join("calls.log").display()
    );
    stdio
        .replacen(
            &table,
            &format!("[servers.fixture]\ntransport = \"http\"\nurl = \"{url}\"\n\n"),
            1,
        )
        .replacen(&env, "", 1)
}

/// `mcp-guard fixture --http` on a free port, logging the calls it executes to
/// `dir/calls.log`.
async fn http_fixture(dir: &Path) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt as _;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "fixture",
            "--name",
            "fixture",
            "--extra-tool",
            "denied",
            "--http",
            &addr,
        ])
        .env("FIXTURE_CALL_LOG", dir.join("calls.log"))
        .env("MCP_GUARD_LOG", "error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("fixture listening on ") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the HTTP fixture did not start");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{addr}/mcp"))
}

/// What a client learns from an answer: status, error code and message, and the text
/// of a result.
async fn ask(r: reqwest::RequestBuilder) -> String {
    let (status, m) = message(r.send().await.unwrap()).await;
    format!(
        "{status} error={} {} result={}",
        m["error"]["code"], m["error"]["message"], m["result"]["content"][0]["text"]
    )
}

/// A body over the gateway's limit, on a connection of its own: the answer is the 413,
/// or the connection closed while the body was still being sent (the gateway answers a
/// declared length over its limit without reading the body, then closes).
async fn ask_oversized(r: reqwest::RequestBuilder) -> String {
    match r.send().await {
        Ok(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => "too large".to_owned(),
        Ok(r) => {
            let status = r.status();
            format!("{status} {}", r.text().await.unwrap_or_default())
        }
        Err(e) if e.is_request() => "too large".to_owned(),
        Err(e) => panic!("{e:?}"),
    }
}

/// Every probe of the hostile corpus against `url`: names in both eras, header/body
/// disagreement, duplicate keys, malformed and oversized bodies, and one allowed call.
async fn probe_all(c: &reqwest::Client, url: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, name) in HOSTILE.iter().enumerate() {
        let r = post(c, url, "tools/call", Some(name), call_body(i as u64 + 10, name));
        out.push((format!("modern {name:?}"), ask(r).await));
    }
    let session = legacy_session(c, url).await;
    for (i, name) in HOSTILE.iter().enumerate() {
        let r = legacy(c, url, &session, legacy_call(i as u64 + 100, name));
        out.push((format!("legacy {name:?}"), ask(r).await));
    }
    for (header, body_name) in [
        ("fixture__echo", "fixture__denied"),
        ("fixture__denied", "fixture__echo"),
        ("fixture__echo", "Fixture__Echo"),
        ("fixture__echo", "fixture__echo\u{200B}"),
    ] {
        let r = post(c, url, "tools/call", Some(header), call_body(90, body_name));
        out.push((format!("header {header} body {body_name:?}"), ask(r).await));
    }
    let meta_text = meta().to_string();
    let malformed = [
        format!(
            r#"{{"jsonrpc":"2.0","id":91,"method":"tools/call","params":{{"name":"fixture__denied","name":"fixture__echo","arguments":{{"text":"dup"}},"_meta":{meta_text}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":92,"method":"tools/call","params":{{"name":"fixture__echo","name":"fixture__denied","arguments":{{"text":"dup"}},"_meta":{meta_text}}}}}"#
        ),
        "not json".to_owned(),
        "{".to_owned(),
        "[]".to_owned(),
        r#"{"jsonrpc":"2.0","id":94,"method":"tools/call","params":"fixture__echo"}"#.to_owned(),
        format!(
            r#"{{"jsonrpc":"2.0","id":95,"method":"tools/call","params":{{"name":5,"_meta":{meta_text}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":96,"method":"tools/call","params":{{"name":"fixture__echo","arguments":"text","_meta":{meta_text}}}}}"#
        ),
    ];
    for (i, body) in malformed.into_iter().enumerate() {
        let modern = post(c, url, "tools/call", Some("fixture__echo"), body.clone());
        out.push((format!("malformed {i} modern"), ask(modern).await));
        let legacy_body = body.replace(&format!(r#","_meta":{meta_text}"#), "");
        let old = legacy(c, url, &session, legacy_body);
        out.push((format!("malformed {i} legacy"), ask(old).await));
    }
    // Larger than the gateway takes, each on a new connection.
    let once = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let big = call_body(97, "fixture__echo").replace("hostile", &"x".repeat(5 << 20));
    let modern = post(&once, url, "tools/call", Some("fixture__echo"), big.clone());
    out.push(("oversized modern".to_owned(), ask_oversized(modern).await));
    let old = legacy(
        &once,
        url,
        &session,
        big.replace(&format!(r#","_meta":{meta_text}"#), ""),
    );
    out.push(("oversized legacy".to_owned(), ask_oversized(old).await));
    let r = post(
        c,
        url,
        "tools/call",
        Some("fixture__echo"),
        call_body(98, "fixture__echo"),
    );
    out.push(("allowed".to_owned(), ask(r).await));
    out
}

/// The fast path must not skip a check: the same hostile corpus through a gateway
/// whose upstream is reached over pooled HTTP connections gets, probe by probe, the
/// answers of a gateway whose upstream is a stdio process, and the HTTP upstream
/// executes only the allowed call.
#[tokio::test]
async fn the_hostile_corpus_gets_the_same_answers_through_a_pooled_http_upstream() {
    let stdio_dir = tempfile::tempdir().unwrap();
    let http_dir = tempfile::tempdir().unwrap();
    let (_fixture, fixture_url) = http_fixture(http_dir.path()).await;
    let reference = GatewayProc::start(&config(stdio_dir.path(), "")).await;
    let pooled = GatewayProc::start(&http_upstream_config(http_dir.path(), &fixture_url)).await;
    let c = http();
    let today = probe_all(&c, &reference.url("main")).await;
    let fast = probe_all(&c, &pooled.url("main")).await;
    assert_eq!(today.len(), fast.len());
    for ((what, a), (_, b)) in today.iter().zip(&fast) {
        assert_eq!(a, b, "{what}: stdio upstream vs pooled HTTP upstream");
    }
    let allowed = &fast.last().unwrap().1;
    assert!(
        allowed.starts_with("200 ") && allowed.contains("hostile"),
        "{allowed}"
    );
    let refused = fast.iter().filter(|(_, a)| a.contains("result=null")).count();
    assert!(refused >= 90, "{refused} refusals");
    // Only the allowed call reached the upstream (over either path).
    let executed = calls(http_dir.path());
    assert_eq!(
        executed,
        calls(stdio_dir.path()),
        "the two upstreams saw different calls"
    );
    assert_eq!(executed.len(), 1, "{executed:?}");
}

/// Counts the TCP connections made to it and pipes each to `to`.
async fn counting_relay(to: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr.to_string(), count)
}

/// A gateway in front of an HTTP upstream used to open a new TCP connection (and the
/// upstream a new HTTP exchange setup) for every request: 50 calls now share a few
/// pooled connections.
#[tokio::test]
async fn fifty_calls_to_an_http_upstream_share_pooled_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (_fixture, fixture_url) = http_fixture(dir.path()).await;
    let target = fixture_url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let (relay, connections) = counting_relay(target).await;
    let gw = GatewayProc::start(&http_upstream_config(dir.path(), &format!("http://{relay}/mcp"))).await;
    let c = http();
    let url = gw.url("main");
    // The first call also waits for the server's start (discovery, listing).
    let first = post(
        &c,
        &url,
        "tools/call",
        Some("fixture__echo"),
        call_body(1, "fixture__echo"),
    );
    assert!(ask(first).await.starts_with("200 "));
    let before = connections.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..50 {
        let r = post(
            &c,
            &url,
            "tools/call",
            Some("fixture__echo"),
            call_body(i + 2, "fixture__echo"),
        );
        let a = ask(r).await;
        assert!(a.starts_with("200 ") && a.contains("hostile"), "{a}");
    }
    let opened = connections.load(std::sync::atomic::Ordering::SeqCst) - before;
    eprintln!("50 calls opened {opened} upstream connections");
    assert!(opened <= 5, "50 calls opened {opened} upstream connections");
}
