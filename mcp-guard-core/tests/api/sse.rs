//! The legacy HTTP+SSE upstream transport against a real legacy-style server on loopback.
//!
//! The server is an rmcp `ServerHandler` (so the MCP logic is real) served over in-memory
//! channels; axum bridges `GET /sse` (an `endpoint` event, then `message` events) and
//! `POST /messages?sessionId=…` onto those channels, the way 2024-11-05 servers work.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use futures::channel::mpsc;
use mcp_guard_core::rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, ClientJsonRpcMessage,
    ClientRequest, ContentBlock, Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    ServerConfig, ServerJsonRpcMessage, ServerResult, Tool,
};
use mcp_guard_core::rmcp::service::{RequestContext, RoleServer};
use mcp_guard_core::rmcp::{ErrorData, ServerHandler, ServiceExt};
use mcp_guard_core::upstream::{HttpSpec, SseConnector, Template, UpstreamOptions};
use mcp_guard_core::{
    CredentialKey, Forward, MemoryCredentialStore, RmcpUpstream, Upstream, UpstreamError, UpstreamState,
};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "sse-canary-7f3a91";

/// The MCP side: one `echo` tool.
#[derive(Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("legacy-echo", "1.0.0"))
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = serde_json::json!({"type": "object", "properties": {"text": {"type": "string"}}});
        let serde_json::Value::Object(schema) = schema else {
            unreachable!()
        };
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "echo",
            "Echoes its text",
            schema,
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("text"))
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        Ok(CallToolResult::success(vec![ContentBlock::text(format!("echo: {text}"))]).into())
    }
}

/// The HTTP side: sessions, what the server saw, and knobs for misbehaviour.
#[derive(Default)]
struct Legacy {
    /// Per session: where `POST`ed client messages go.
    sessions: Mutex<HashMap<String, mpsc::UnboundedSender<ClientJsonRpcMessage>>>,
    /// Per live stream: raw SSE bytes to write to it.
    streams: Mutex<Vec<mpsc::UnboundedSender<Bytes>>>,
    /// Cancelled to end every open stream.
    kill: Mutex<CancellationToken>,
    /// `Authorization` of every request, with its method.
    auth_seen: Mutex<Vec<(String, Option<String>)>>,
    gets: AtomicUsize,
    posts: AtomicUsize,
    open_streams: Arc<AtomicUsize>,
    next_session: AtomicUsize,
    /// The endpoint event's data; `{id}` becomes the session id. Default relative.
    endpoint: Mutex<Option<String>>,
    /// The `protocolVersion` the client offered in `initialize`.
    offered_version: Mutex<Option<String>>,
    /// Never send the endpoint event.
    silent: std::sync::atomic::AtomicBool,
}

struct TestServer {
    state: Arc<Legacy>,
    port: u16,
}

impl TestServer {
    async fn start() -> Self {
        let state = Arc::new(Legacy::default());
        let app = Router::new()
            .route("/sse", get(sse))
            .route("/messages", post(message))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { state, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/sse", self.port)
    }

    /// Ends every open event stream, as a restarting server would.
    fn drop_streams(&self) {
        let mut kill = self.state.kill.lock().unwrap();
        kill.cancel();
        *kill = CancellationToken::new();
    }

    /// Writes raw bytes to every open event stream.
    fn inject(&self, bytes: &'static [u8]) {
        for s in self.state.streams.lock().unwrap().iter() {
            let _ = s.unbounded_send(Bytes::from_static(bytes));
        }
    }

    fn auth_seen(&self) -> Vec<(String, Option<String>)> {
        self.state.auth_seen.lock().unwrap().clone()
    }
}

fn frame(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Decrements the open-stream count when the response body is dropped (client gone).
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn sse(State(state): State<Arc<Legacy>>, headers: HeaderMap) -> Response {
    record_auth(&state, "GET", &headers);
    state.gets.fetch_add(1, Ordering::SeqCst);
    let id = format!("s{}", state.next_session.fetch_add(1, Ordering::SeqCst));

    // The MCP server, on in-memory channels.
    let (c2s_tx, c2s_rx) = mpsc::unbounded::<ClientJsonRpcMessage>();
    let (s2c_tx, mut s2c_rx) = mpsc::unbounded::<ServerJsonRpcMessage>();
    state.sessions.lock().unwrap().insert(id.clone(), c2s_tx);
    tokio::spawn(async move {
        if let Ok(running) = Echo.serve((s2c_tx, c2s_rx)).await {
            let _ = running.waiting().await;
        }
    });

    // The event stream: endpoint, some noise a client must tolerate, then messages.
    let (raw_tx, raw_rx) = mpsc::unbounded::<Bytes>();
    if !state.silent.load(Ordering::SeqCst) {
        let endpoint = state
            .endpoint
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "/messages?sessionId={id}".to_owned())
            .replace("{id}", &id);
        raw_tx.unbounded_send(frame("endpoint", &endpoint)).unwrap();
        raw_tx
            .unbounded_send(Bytes::from_static(b": keep-alive\n\n"))
            .unwrap();
        raw_tx.unbounded_send(frame("heartbeat", "{}")).unwrap();
        raw_tx
            .unbounded_send(frame("message", "this is not json"))
            .unwrap();
    }
    let forward = raw_tx.clone();
    tokio::spawn(async move {
        while let Some(m) = s2c_rx.next().await {
            let json = serde_json::to_string(&m).unwrap();
            if forward.unbounded_send(frame("message", &json)).is_err() {
                break;
            }
        }
    });
    state.streams.lock().unwrap().push(raw_tx);

    let kill = state.kill.lock().unwrap().clone();
    state.open_streams.fetch_add(1, Ordering::SeqCst);
    let guard = OpenGuard(state.open_streams.clone());
    let sessions = state.clone();
    let body = raw_rx.take_until(kill.cancelled_owned()).map(move |b| {
        let _ = &guard;
        Ok::<_, Infallible>(b)
    });
    // When the stream ends, the session ends with it.
    let body = body.chain(futures::stream::once(async move {
        sessions.sessions.lock().unwrap().remove(&id);
        Ok(Bytes::new())
    }));
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(body),
    )
        .into_response()
}

async fn message(
    State(state): State<Arc<Legacy>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    record_auth(&state, "POST", &headers);
    state.posts.fetch_add(1, Ordering::SeqCst);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
        && v["method"] == "initialize"
    {
        *state.offered_version.lock().unwrap() = v["params"]["protocolVersion"].as_str().map(str::to_owned);
    }
    let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let session = q
        .get("sessionId")
        .and_then(|id| state.sessions.lock().unwrap().get(id).cloned());
    match session {
        Some(tx) if tx.unbounded_send(message).is_ok() => StatusCode::ACCEPTED,
        _ => StatusCode::NOT_FOUND,
    }
}

fn record_auth(state: &Legacy, method: &str, headers: &HeaderMap) {
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_owned());
    state.auth_seen.lock().unwrap().push((method.to_owned(), auth));
}

fn store_with_token() -> Arc<MemoryCredentialStore> {
    let store = MemoryCredentialStore::new();
    store.set(CredentialKey::shared("legacy", "TOKEN"), TOKEN.to_owned().into());
    Arc::new(store)
}

fn connector(server: &TestServer, store: Arc<MemoryCredentialStore>) -> SseConnector {
    let spec =
        HttpSpec::new(server.url()).header("Authorization", Template::parse("Bearer ${TOKEN}").unwrap());
    SseConnector::new("legacy", spec, store)
}

fn upstream(connector: SseConnector) -> RmcpUpstream {
    let mut options = UpstreamOptions::default();
    options.connect_timeout = Duration::from_secs(10);
    options.request_timeout = Some(Duration::from_secs(10));
    options.backoff_initial = Duration::from_millis(1);
    options.backoff_max = Duration::from_millis(1);
    RmcpUpstream::new("legacy", connector, options)
}

async fn call_echo(upstream: &RmcpUpstream, text: &str) -> Result<String, UpstreamError> {
    let mut args = serde_json::Map::new();
    args.insert("text".to_owned(), text.into());
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("echo").with_arguments(args),
    ));
    match upstream.request(request, Forward::default()).await? {
        ServerResult::CallToolResult(r) => Ok(r.content[0].as_text().unwrap().text.clone()),
        other => panic!("unexpected result {other:?}"),
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn lists_and_calls_tools_with_resolved_credentials() {
    let server = TestServer::start().await;
    let upstream = upstream(connector(&server, store_with_token()));

    let catalog = upstream.catalog().await.unwrap();
    let names: Vec<_> = catalog.tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["echo"]);
    assert_eq!(
        catalog
            .server_info
            .as_ref()
            .unwrap()
            .server_info
            .as_ref()
            .unwrap()
            .name,
        "legacy-echo"
    );
    assert_eq!(upstream.status().state, UpstreamState::Connected);
    // The initialize lifecycle, offering the newest version that still has it.
    assert_eq!(
        server.state.offered_version.lock().unwrap().as_deref(),
        Some("2025-11-25")
    );

    assert_eq!(call_echo(&upstream, "hi").await.unwrap(), "echo: hi");

    let seen = server.auth_seen();
    assert_eq!(seen.iter().filter(|(m, _)| m == "GET").count(), 1);
    // initialize, initialized, tools/list, tools/call at least.
    assert!(seen.iter().filter(|(m, _)| m == "POST").count() >= 4, "{seen:?}");
    let expected = format!("Bearer {TOKEN}");
    assert!(
        seen.iter().all(|(_, a)| a.as_deref() == Some(expected.as_str())),
        "{seen:?}"
    );
    // The connector's Debug shows header names, never values.
    let debug = format!("{:?}", connector(&server, store_with_token()));
    assert!(
        debug.contains("Authorization") && !debug.contains(TOKEN),
        "{debug}"
    );
}

#[tokio::test]
async fn endpoint_on_another_origin_is_refused() {
    let server = TestServer::start().await;
    // Same port, other host: a different origin all the same.
    *server.state.endpoint.lock().unwrap() = Some(format!(
        "http://localhost:{}/messages?sessionId={{id}}",
        server.port
    ));
    let upstream = upstream(connector(&server, store_with_token()));

    let err = upstream.catalog().await.unwrap_err();
    let UpstreamError::Unavailable {
        source: Some(source), ..
    } = &err
    else {
        panic!("unexpected error {err:?}");
    };
    let message = source.to_string();
    assert!(
        message.contains("refused") && message.contains(&format!("http://localhost:{}", server.port)),
        "{message}"
    );
    assert!(
        !message.contains("sessionId"),
        "the endpoint's path and query stay out of errors: {message}"
    );
    let UpstreamState::Failed { error } = upstream.status().state else {
        panic!("status {:?}", upstream.status());
    };
    assert!(error.contains("same-origin"), "{error}");
    assert_eq!(
        server.state.posts.load(Ordering::SeqCst),
        0,
        "nothing was posted anywhere"
    );
    wait_for("the refused GET stream to close", || {
        server.state.open_streams.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn dropped_stream_marks_failed_and_the_next_call_reconnects() {
    let server = TestServer::start().await;
    let upstream = upstream(connector(&server, store_with_token()));
    assert_eq!(call_echo(&upstream, "one").await.unwrap(), "echo: one");

    server.drop_streams();
    wait_for("status Failed", || {
        matches!(upstream.status().state, UpstreamState::Failed { .. })
    })
    .await;

    assert_eq!(call_echo(&upstream, "two").await.unwrap(), "echo: two");
    assert_eq!(server.state.gets.load(Ordering::SeqCst), 2);
    assert_eq!(upstream.status().state, UpstreamState::Connected);
}

#[tokio::test]
async fn oversized_event_closes_the_connection() {
    static BIG: &[u8] = &[b'x'; 8192];
    let server = TestServer::start().await;
    let upstream = upstream(connector(&server, store_with_token()).max_event_size(4096));
    assert_eq!(call_echo(&upstream, "one").await.unwrap(), "echo: one");

    server.inject(b"event: message\ndata: ");
    server.inject(BIG);
    wait_for("status Failed", || {
        matches!(upstream.status().state, UpstreamState::Failed { .. })
    })
    .await;
    wait_for("the old GET stream to close", || {
        server.state.open_streams.load(Ordering::SeqCst) == 0
    })
    .await;

    assert_eq!(call_echo(&upstream, "two").await.unwrap(), "echo: two");
}

#[tokio::test]
async fn missing_credential_is_reported() {
    let server = TestServer::start().await;
    let upstream = upstream(connector(&server, Arc::new(MemoryCredentialStore::new())));

    let err = upstream.catalog().await.unwrap_err();
    let UpstreamError::MissingCredentials { server: id, missing } = err else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!((id.as_str(), missing), ("legacy", vec!["TOKEN".to_owned()]));
    assert_eq!(
        upstream.status().state,
        UpstreamState::MissingCredentials {
            missing: vec!["TOKEN".to_owned()]
        }
    );
    assert_eq!(
        server.state.gets.load(Ordering::SeqCst),
        0,
        "no request without the credential"
    );
}

#[tokio::test]
async fn no_endpoint_event_times_out() {
    let server = TestServer::start().await;
    server.state.silent.store(true, Ordering::SeqCst);
    let upstream =
        upstream(connector(&server, store_with_token()).endpoint_timeout(Duration::from_millis(200)));

    let err = upstream.catalog().await.unwrap_err();
    let UpstreamError::Unavailable {
        source: Some(source), ..
    } = &err
    else {
        panic!("unexpected error {err:?}");
    };
    assert!(
        source.to_string().contains("no endpoint event within"),
        "{source}"
    );
    wait_for("the GET stream to close", || {
        server.state.open_streams.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_the_event_stream() {
    let server = TestServer::start().await;
    let upstream = upstream(connector(&server, store_with_token()));
    upstream.connect().await.unwrap();
    assert_eq!(server.state.open_streams.load(Ordering::SeqCst), 1);

    upstream.shutdown().await;
    wait_for("the GET stream to close", || {
        server.state.open_streams.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(upstream.status().state, UpstreamState::Stopped);
}

/// Collects formatted log output.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a global TRACE subscriber writing into a buffer. Global because a
/// thread-scoped one misses events whose callsites other tests' threads registered first.
/// Every test's logs land there afterwards; they carry the same canary.
fn capture_logs() -> Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}

/// The canary: with everything logged at TRACE (rmcp, reqwest, hyper included), the
/// credential never shows up in logs, errors or Debug output, and neither does the
/// session-bearing endpoint query from our own code.
#[tokio::test]
async fn credentials_never_reach_the_logs() {
    let logs = capture_logs();

    let server = TestServer::start().await;
    let upstream = upstream(connector(&server, store_with_token()));
    assert_eq!(call_echo(&upstream, "hi").await.unwrap(), "echo: hi");
    server.drop_streams();
    wait_for("status Failed", || {
        matches!(upstream.status().state, UpstreamState::Failed { .. })
    })
    .await;
    let status = format!("{:?} {upstream:?}", upstream.status());
    upstream.shutdown().await;

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("legacy SSE endpoint received"), "{logs}");
    assert!(
        logs.contains("skipping a legacy SSE message"),
        "the malformed message was skipped: {logs}"
    );
    assert!(
        logs.contains("ignoring legacy SSE event"),
        "the unknown event was ignored: {logs}"
    );
    assert!(!logs.contains(TOKEN), "credential in the logs");
    assert!(!status.contains(TOKEN), "credential in status or Debug: {status}");
    for line in logs.lines().filter(|l| l.contains("mcp_guard_core")) {
        assert!(!line.contains("sessionId"), "endpoint query logged: {line}");
    }
}

/// Manual interop check against a real legacy SSE server, e.g. the Python SDK's
/// `MCPServer(...).run(transport="sse")`. Ignored, and a no-op unless
/// `MCP_GUARD_SSE_INTEROP_URL` names the SSE URL; the server must have a tool `add(a, b)`.
///
/// Checked by hand with `pip install mcp` (2.3.0) in a venv and this server:
///
/// ```text
/// from mcp.server.mcpserver import MCPServer   # FastMCP in mcp < 2
/// app = MCPServer("py-legacy-sse")
/// @app.tool()
/// def add(a: int, b: int) -> int:
///     return a + b
/// app.run(transport="sse", host="127.0.0.1", port=18765)
/// ```
///
/// ```text
/// MCP_GUARD_SSE_INTEROP_URL=http://127.0.0.1:18765/sse \
///   cargo test -p mcp-guard-core --test api interop -- --ignored --nocapture
/// ```
#[tokio::test]
#[ignore = "needs an external legacy SSE server"]
async fn interop_with_an_external_server() {
    let Ok(url) = std::env::var("MCP_GUARD_SSE_INTEROP_URL") else {
        return;
    };
    let connector = SseConnector::new(
        "legacy",
        HttpSpec::new(url),
        Arc::new(MemoryCredentialStore::new()),
    );
    let upstream = upstream(connector);
    let catalog = upstream.catalog().await.unwrap();
    let info = catalog.server_info.as_ref().unwrap();
    let names: Vec<_> = catalog.tools.iter().map(|t| t.name.to_string()).collect();
    println!(
        "server {:?}, protocol {}, tools {names:?}",
        info.server_info, info.protocol_version
    );
    assert!(names.iter().any(|n| n == "add"), "{names:?}");

    let mut args = serde_json::Map::new();
    args.insert("a".to_owned(), 2.into());
    args.insert("b".to_owned(), 40.into());
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("add").with_arguments(args),
    ));
    let ServerResult::CallToolResult(result) = upstream.request(request, Forward::default()).await.unwrap()
    else {
        panic!("not a tool result");
    };
    println!("add(2, 40) = {:?}", result.content[0].as_text().map(|t| &t.text));
    assert_eq!(result.content[0].as_text().unwrap().text, "42");
    upstream.shutdown().await;
}
