//! OpenTelemetry traces: the gateway's spans join the client's trace (W3C
//! `traceparent` as an HTTP header or in `_meta`), carry the MCP and `gen_ai.*` attributes,
//! and the upstream call's context reaches an HTTP upstream (header and `_meta`). The
//! spans are read back from the OTLP receiver built on `opentelemetry-proto`
//! (`interop/siem/otlp_receiver.py`), which parses every export strictly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, RequestMetaObject};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

use crate::forward::{OtlpReceiver, receivers_installed};
use crate::support::*;

/// An HTTP MCP server whose one tool, `trace`, answers with the `traceparent` it got in
/// `_meta`; every request's headers are kept.
async fn trace_upstream() -> (String, Arc<Mutex<Vec<axum::http::HeaderMap>>>) {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let seen: Arc<Mutex<Vec<axum::http::HeaderMap>>> = Arc::default();
    let service = StreamableHttpService::new(
        || Ok(TraceEcho),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let record = seen.clone();
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                record.lock().unwrap().push(req.headers().clone());
                next.run(req)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/mcp"), seen)
}

#[derive(Clone)]
struct TraceEcho;

impl rmcp::ServerHandler for TraceEcho {
    fn get_info(&self) -> rmcp::model::InitializeResult {
        rmcp::model::InitializeResult::new(rmcp::model::ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _: Option<rmcp::model::PaginatedRequestParams>,
        _: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, rmcp::ErrorData> {
        let schema = Arc::new(serde_json::json!({"type": "object"}).as_object().unwrap().clone());
        Ok(rmcp::model::ListToolsResult::with_all_items(vec![
            rmcp::model::Tool::new("trace", "Answers with the trace context it received.", schema),
        ]))
    }

    async fn call_tool(
        &self,
        _: CallToolRequestParams,
        ctx: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let tp = ctx.meta.get_traceparent().unwrap_or("none").to_owned();
        Ok(rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text(tp)]).into())
    }
}

async fn client_with_header(url: &str, token: &str, traceparent: Option<&str>) -> Client {
    mcp_guard_core::upstream::ensure_crypto_provider();
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url);
    cfg.auth_header = Some(token.to_owned());
    if let Some(tp) = traceparent {
        let mut h = HashMap::new();
        h.insert(
            axum::http::HeaderName::from_static("traceparent"),
            axum::http::HeaderValue::from_str(tp).unwrap(),
        );
        cfg.custom_headers = h;
    }
    let transport = StreamableHttpClientTransport::from_config(cfg);
    tokio::time::timeout(
        Duration::from_secs(20),
        rmcp::service::serve_client_with_lifecycle(
            Recorder::default(),
            transport,
            rmcp::service::ClientLifecycleMode::Discover {
                preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
            },
        ),
    )
    .await
    .unwrap()
    .unwrap()
}

/// Every span the receiver got, flattened, with its attributes as a map.
fn spans(otlp: &OtlpReceiver) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for r in otlp.requests().iter().filter(|r| r["signal"] == "traces") {
        for rs in r["request"]["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].clone());
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let mut s = s.clone();
                    let attrs: serde_json::Map<String, serde_json::Value> = s["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| {
                            let v = &a["value"];
                            let v = v
                                .get("stringValue")
                                .or_else(|| v.get("intValue"))
                                .cloned()
                                .unwrap_or(serde_json::Value::Null);
                            (a["key"].as_str().unwrap().to_owned(), v)
                        })
                        .collect();
                    s["attrs"] = serde_json::Value::Object(attrs);
                    s["service"] = service.clone().unwrap_or_default();
                    out.push(s);
                }
            }
        }
    }
    out
}

fn find<'a>(spans: &'a [serde_json::Value], trace: &str, kind: &str) -> Vec<&'a serde_json::Value> {
    spans
        .iter()
        .filter(|s| s["traceId"] == trace && s["kind"] == kind)
        .collect()
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: four traces, then what the receiver got"
)]
async fn spans_join_the_clients_trace_carry_mcp_attributes_and_reach_the_upstream() {
    if !receivers_installed("telemetry::spans") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let otlp = OtlpReceiver::start(&scratch.path().join("otlp"), 0).await;
    let (up_url, up_headers) = trace_upstream().await;
    let config = format!(
        "{AUTH}[servers.up]\ntransport = \"http\"\nurl = \"{up_url}\"\n\n\
         [endpoints.main.servers.up]\ntools = [\"trace\"]\n\n\
         [telemetry]\nenabled = true\notlp_url = \"http://127.0.0.1:{}/v1/traces\"\nservice_name = \"gw-under-test\"\n",
        otlp.port
    );
    let gw = GatewayProc::start_with_env(&config, &[("OTEL_BSP_SCHEDULE_DELAY", "200")]).await;

    // 1. The client's trace context as an HTTP header.
    let trace_a = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let alice = client_with_header(
        &gw.url("main"),
        TOKEN,
        Some(&format!("00-{trace_a}-{client_span}-01")),
    )
    .await;
    let got = alice
        .call_tool(CallToolRequestParams::new("up__trace"))
        .await
        .unwrap();
    let upstream_tp = text_of(&got);
    // 2. In `_meta`, as 2026-07-28 clients send it.
    let trace_b = "0af7651916cd43dd8448eb211c80319c";
    let plain = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    let mut params = CallToolRequestParams::new("up__trace");
    let mut meta = RequestMetaObject::new();
    meta.set_traceparent(format!("00-{trace_b}-b7ad6b7169203331-01"));
    params.meta = Some(meta);
    plain.call_tool(params).await.unwrap();
    // 3. A client that did not sample: nothing recorded, the decision travels on.
    let trace_c = "11111111111111111111111111111111";
    let unsampled = client_with_header(
        &gw.url("main"),
        TOKEN,
        Some(&format!("00-{trace_c}-2222222222222222-00")),
    )
    .await;
    let got_c = unsampled
        .call_tool(CallToolRequestParams::new("up__trace"))
        .await
        .unwrap();
    // 4. A refused call (bob has no grant), in its own trace.
    let trace_d = "dddddddddddddddddddddddddddddddd";
    let bob = client_with_header(
        &gw.url("main"),
        OTHER_TOKEN,
        Some(&format!("00-{trace_d}-3333333333333333-01")),
    )
    .await;
    assert!(
        bob.call_tool(CallToolRequestParams::new("up__trace"))
            .await
            .is_err()
    );

    let ok = eventually(30, async || {
        let s = spans(&otlp);
        find(&s, trace_a, "SPAN_KIND_CLIENT").len() == 1
            && find(&s, trace_b, "SPAN_KIND_CLIENT").len() == 1
            && !find(&s, trace_d, "SPAN_KIND_SERVER").is_empty()
    })
    .await;
    let all = spans(&otlp);
    assert!(ok, "spans not exported: {all:#?}");

    let server = find(&all, trace_a, "SPAN_KIND_SERVER");
    assert_eq!(server.len(), 1, "{server:#?}");
    let server = server[0];
    assert_eq!(
        server["parentSpanId"], client_span,
        "the gateway's span is the client's span's child"
    );
    assert_eq!(server["name"], "tools/call up__trace");
    assert_eq!(server["service"], "gw-under-test");
    let a = &server["attrs"];
    assert_eq!(a["mcp.method.name"], "tools/call");
    assert_eq!(a["gen_ai.operation.name"], "execute_tool");
    assert_eq!(a["gen_ai.tool.name"], "up__trace");
    assert_eq!(a["mcp_guard.server"], "up");
    assert_eq!(a["mcp_guard.endpoint"], "main");
    assert_eq!(a["mcp_guard.principal"], "alice");
    assert_eq!(a["mcp.protocol.version"], "2026-07-28");
    assert!(a["mcp.session.id"].is_string(), "{a}");
    assert!(a["jsonrpc.request.id"].is_string(), "{a}");
    assert!(a.get("error.type").is_none(), "{a}");

    let upstream = find(&all, trace_a, "SPAN_KIND_CLIENT")[0];
    assert_eq!(upstream["parentSpanId"], server["spanId"]);
    assert_eq!(upstream["name"], "tools/call trace");
    assert_eq!(upstream["attrs"]["gen_ai.tool.name"], "trace");
    assert_eq!(upstream["attrs"]["mcp_guard.server"], "up");
    // The upstream got the upstream call's context, in `_meta` and as a header.
    let expected = format!("00-{trace_a}-{}-01", upstream["spanId"].as_str().unwrap());
    assert_eq!(upstream_tp, expected);
    assert!(
        up_headers
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.get("traceparent").and_then(|v| v.to_str().ok()) == Some(expected.as_str())),
        "no HTTP request to the upstream carried {expected}"
    );

    let b_server = find(&all, trace_b, "SPAN_KIND_SERVER");
    assert_eq!(b_server[0]["parentSpanId"], "b7ad6b7169203331");

    assert!(
        find(&all, trace_c, "SPAN_KIND_SERVER").is_empty(),
        "an unsampled trace is not recorded"
    );
    let tp_c = text_of(&got_c);
    assert!(
        tp_c.starts_with(&format!("00-{trace_c}-")) && tp_c.ends_with("-00"),
        "{tp_c}"
    );

    let refused = find(&all, trace_d, "SPAN_KIND_SERVER")[0];
    assert_eq!(refused["attrs"]["error.type"], "denied");
    assert_eq!(refused["status"]["code"], "STATUS_CODE_ERROR");
    assert!(
        find(&all, trace_d, "SPAN_KIND_CLIENT").is_empty(),
        "a refused call reaches no upstream"
    );

    // The audit record of the call carries the trace id (it links the audit to the trace).
    let db = gw.dir.path().join("mcp-guard-audit.db");
    let n: i64 = rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM audit_records WHERE json_extract(record, '$.event.trace_id') = ?1",
            [trace_a],
            |r| r.get(0),
        )
        .unwrap();
    assert!(n >= 1);
    gw.stop().await;
}

#[tokio::test]
async fn telemetry_is_off_by_default_and_the_client_context_still_reaches_the_upstream() {
    let (up_url, up_headers) = trace_upstream().await;
    let config = format!(
        "{AUTH}[servers.up]\ntransport = \"http\"\nurl = \"{up_url}\"\n\n[endpoints.main.servers.up]\ntools = [\"trace\"]\n"
    );
    let gw = GatewayProc::start(&config).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let alice = client_with_header(&gw.url("main"), TOKEN, Some(tp)).await;
    let got = alice
        .call_tool(CallToolRequestParams::new("up__trace"))
        .await
        .unwrap();
    // No span of the gateway's own: the client's context goes on unchanged.
    assert_eq!(text_of(&got), tp);
    assert!(
        up_headers
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.get("traceparent").and_then(|v| v.to_str().ok()) == Some(tp))
    );
    gw.stop().await;
}
