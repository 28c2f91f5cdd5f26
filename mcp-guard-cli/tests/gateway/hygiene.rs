//! Bad input at the HTTP front door: precise errors, and the gateway keeps serving.

use reqwest::StatusCode;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

use crate::support::*;

fn config() -> String {
    let mut c = String::from("[gateway]\nmax_body_bytes = 4096\n\n");
    c.push_str(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"echo\", \"add\"]\n");
    c
}

fn http() -> reqwest::Client {
    mcp_guard_core::upstream::ensure_crypto_provider();
    reqwest::Client::new()
}

fn post(c: &reqwest::Client, url: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let mut r = c
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r
}

/// The JSON-RPC message in a response body (plain JSON or the first SSE `data:` line).
async fn message(r: reqwest::Response) -> Value {
    let body = r.text().await.unwrap();
    let json = body
        .lines()
        .find_map(|l| {
            l.strip_prefix("data:")
                .map(str::trim)
                .filter(|d| d.starts_with('{'))
        })
        .unwrap_or(body.trim());
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn init() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}})
}

async fn session(c: &reqwest::Client, url: &str, token: &str) -> String {
    let r = post(c, url, Some(token)).json(&init()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = r.text().await;
    let r = post(c, url, Some(token))
        .header("mcp-session-id", &id)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    id
}

async fn still_serving(gw: &GatewayProc) {
    let client = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    let r = client
        .call_tool(CallToolRequestParams::new("alpha__echo").with_arguments(args(&json!({"text": "alive"}))))
        .await
        .unwrap();
    assert_eq!(text_of(&r), "alive");
    let _ = client.cancel().await;
}

#[tokio::test]
async fn authentication_failures_are_401_with_a_bearer_challenge() {
    let gw = GatewayProc::start(&config()).await;
    let c = http();
    let url = gw.url("main");
    let metadata = format!(
        "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp/main\"",
        gw.base
    );
    let r = post(&c, &url, None).json(&init()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!("Bearer {metadata}").as_str(),
        "no credential: a bare challenge naming the metadata (RFC 6750 3.1, RFC 9728 5.1)"
    );
    let r = post(&c, &url, Some("wrong-token-0123456789"))
        .json(&init())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let h = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(h.starts_with("Bearer error=\"invalid_token\""), "{h}");
    assert!(h.contains(&metadata), "{h}");
    let r = post(&c, &format!("{url}?access_token={TOKEN}"), None)
        .json(&init())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "tokens in the query string are refused"
    );
    let h = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(h.starts_with("Bearer error=\"invalid_request\""), "{h}");
    let r = c
        .get(format!("{}/mcp/nope", gw.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    still_serving(&gw).await;
    gw.stop().await;
}

#[tokio::test]
async fn host_origin_and_size_limits() {
    let gw = GatewayProc::start(&config()).await;
    let c = http();
    let url = gw.url("main");
    let r = post(&c, &url, Some(TOKEN))
        .header("host", "evil.example.com")
        .json(&init())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "DNS rebinding: foreign Host");
    let r = post(&c, &url, Some(TOKEN))
        .header("origin", "http://evil.example.com")
        .json(&init())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "foreign Origin");
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"pad": "x".repeat(8192)}});
    let r = post(&c, &url, Some(TOKEN)).json(&big).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    still_serving(&gw).await;
    gw.stop().await;
}

#[tokio::test]
async fn malformed_json_rpc_gets_precise_errors() {
    let gw = GatewayProc::start(&config()).await;
    let c = http();
    let url = gw.url("main");
    let sid = session(&c, &url, TOKEN).await;
    // Not JSON at all.
    let r = post(&c, &url, Some(TOKEN))
        .header("mcp-session-id", &sid)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let m = message(r).await;
    assert_eq!(m["error"]["code"], -32700, "{m}");
    // A batch array.
    let batch = json!([{"jsonrpc": "2.0", "id": 5, "method": "tools/list"}]);
    let r = post(&c, &url, Some(TOKEN))
        .header("mcp-session-id", &sid)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let m = message(r).await;
    assert_eq!(m["error"]["code"], -32600, "{m}");
    assert_eq!(m["error"]["message"], "JSON-RPC batch arrays are not supported");
    // An unknown method.
    let r = post(&c, &url, Some(TOKEN))
        .header("mcp-session-id", &sid)
        .json(&json!({"jsonrpc": "2.0", "id": 6, "method": "tools/destroy"}))
        .send()
        .await
        .unwrap();
    let m = message(r).await;
    assert_eq!(m["error"]["code"], -32601, "{m}");
    // Hostile tool names: answered as unknown, never forwarded.
    for name in [
        "alpha__echo ",
        "ALPHA__echo",
        "alpha__ech\u{043e}",
        "alpha__alpha__echo",
        "alpha/echo",
        "../alpha__echo",
        "alpha__crash",
    ] {
        let r = post(&c, &url, Some(TOKEN))
            .header("mcp-session-id", &sid)
            .json(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": {"text": "x"}}}))
            .send()
            .await
            .unwrap();
        let m = message(r).await;
        assert_eq!(m["error"]["code"], -32602, "{name:?}: {m}");
        assert_eq!(m["error"]["message"], format!("Unknown tool: {name}"));
    }
    still_serving(&gw).await;
    gw.stop().await;
}

#[tokio::test]
async fn header_and_body_must_agree() {
    let gw = GatewayProc::start(&config()).await;
    let c = http();
    let url = gw.url("main");
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "alpha__echo", "arguments": {"text": "x"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let r = post(&c, &url, Some(TOKEN))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .header("mcp-name", "alpha__echo")
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let m = message(r).await;
    assert_eq!(m["error"]["code"], -32020, "{m}");
    let r = post(&c, &url, Some(TOKEN))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "alpha__add")
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "Mcp-Name disagrees with the body"
    );
    let r = post(&c, &url, Some(TOKEN))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "alpha__echo")
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let m = message(r).await;
    assert_eq!(m["result"]["content"][0]["text"], "x", "{m}");
    gw.stop().await;
}

#[tokio::test]
async fn a_session_belongs_to_the_principal_that_opened_it() {
    let gw = GatewayProc::start(&config()).await;
    let c = http();
    let url = gw.url("main");
    let sid = session(&c, &url, TOKEN).await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let r = post(&c, &url, Some(OTHER_TOKEN))
        .header("mcp-session-id", &sid)
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "another principal presenting the id gets nothing"
    );
    let r = post(&c, &url, Some(TOKEN))
        .header("mcp-session-id", &sid)
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let m = message(r).await;
    assert_eq!(m["result"]["tools"].as_array().unwrap().len(), 2, "{m}");
    gw.stop().await;
}

#[tokio::test]
async fn stdio_front_door_answers_bad_lines_and_keeps_serving() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    let mut c = String::from("[auth]\nstdio_principal = { id = \"alice\", roles = [\"eng\"] }\n\n");
    c.push_str(&config());
    std::fs::write(&path, c).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--stdio", "--endpoint", "main", "--config"])
        .arg(&path)
        .env("MCP_GUARD_LOG", "error")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = async |line: &str| {
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
    };
    // Answers only: servers join after the client initialized, with list_changed.
    let mut recv = async || -> Value {
        loop {
            let line = tokio::time::timeout(std::time::Duration::from_secs(10), out.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("method").is_none() {
                return v;
            }
        }
    };
    send(&init().to_string()).await;
    assert_eq!(recv().await["result"]["serverInfo"]["name"], "mcp-guard");
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
    send("{not json").await;
    assert_eq!(recv().await["error"]["code"], -32700);
    send(&format!("{{\"pad\":\"{}\"}}", "x".repeat(5 * 1024 * 1024))).await;
    let m = recv().await;
    assert_eq!(m["error"]["code"], -32600, "{m}");
    send(r#"[{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#).await;
    assert_eq!(recv().await["error"]["code"], -32600);
    send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"still here"}}}"#).await;
    let m = recv().await;
    assert_eq!(m["id"], 3);
    assert_eq!(m["result"]["content"][0]["text"], "still here", "{m}");
}
