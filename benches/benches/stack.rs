//! The guarded stack's overhead, in process (no sockets): a `tools/call` to a trivial
//! upstream, three ways.
//!
//! - `direct`: an rmcp client → the upstream over an in-memory duplex pipe;
//! - `gateway`: an rmcp client → `GuardHandler` (audit → policy → router) over a duplex
//!   pipe → `RmcpUpstream`/`InProcessConnector` → the same upstream over another pipe;
//! - `tower_stack`: just the tower stack, `McpRequest` → audit → policy → router →
//!   upstream pipe → result; no downstream rmcp service or serialisation.
//! - `tower_stack_pinned`: the same with tool pinning on (a `PinGate` enforcing an
//!   approved lock): each call is checked against the serving catalogue's pin before
//!   and after it is sent.
//!
//! `gateway − direct` is the gateway's in-process cost per call: one more rmcp
//! serialise/parse round (one more pipe) plus the stack. Runs on a current-thread
//! runtime so the numbers are per-call CPU with no cross-thread wake-ups.
//! The audit layer runs with a pass-through redactor and a counting no-op sink.

#![allow(missing_docs, reason = "criterion generates the entry point")]
#![allow(clippy::expect_used, reason = "bench setup")]

#[path = "../src/stack_support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_guard_core::pin::{GateMode, LockFile, PinGate};
use mcp_guard_core::upstream::{InProcessConnector, UpstreamOptions};
use mcp_guard_core::{CallContext, Principal, RmcpUpstream, Upstream as _};
use mcp_guard_tower::{EndpointSpec, Gateway, GuardHandler, McpRequest, Selection};
use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest, ServerResult};
use rmcp::service::{RoleClient, RunningService};
use support::{ENDPOINT, Echo, NoopSink, SERVER};
use tower::ServiceExt as _;

fn params() -> CallToolRequestParams {
    let args = serde_json::json!({"text": "hello, gateway"});
    CallToolRequestParams::new("echo").with_arguments(args.as_object().cloned().unwrap_or_default())
}

async fn client_over_duplex<H: rmcp::ServerHandler>(handler: H) -> RunningService<RoleClient, ()> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Ok(running) = handler.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    ().serve(client_io).await.expect("client connects")
}

async fn gateway(pinned: bool) -> (Gateway, Arc<NoopSink>) {
    let upstream = RmcpUpstream::new(
        SERVER,
        InProcessConnector::new(SERVER, || Echo),
        UpstreamOptions::default(),
    );
    upstream.connect().await.expect("in-process upstream connects");
    let mut builder = Gateway::builder();
    if pinned {
        let mut lock = LockFile::default();
        for tool in &upstream.catalog().await.expect("catalogue").tools {
            lock.approve_tool(SERVER, tool);
        }
        builder = builder.gate(Arc::new(PinGate::new(lock, GateMode::Enforce, GateMode::Enforce)));
    }
    let gateway = builder
        .server(Arc::new(upstream))
        .endpoint(
            EndpointSpec::new(ENDPOINT)
                .without_namespace()
                .server(SERVER, Selection::none().tools(["*"]).expect("glob")),
        )
        .build()
        .await
        .expect("gateway builds");
    (gateway, Arc::new(NoopSink::default()))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let direct = rt.block_on(client_over_duplex(Echo));
    let (gw, sink) = rt.block_on(gateway(false));
    let (pinned_gw, _) = rt.block_on(gateway(true));
    let pinned_endpoint = pinned_gw.endpoint(ENDPOINT).expect("endpoint");
    let service = support::guard_stack(sink.clone());
    let endpoint = gw.endpoint(ENDPOINT).expect("endpoint");
    let handler =
        GuardHandler::new(endpoint.clone(), service.clone()).with_principal(Arc::new(Principal::user("u")));
    let guarded = rt.block_on(client_over_duplex(handler));
    let principal = Arc::new(Principal::user("u"));

    // Sanity: both paths answer the same.
    for client in [&direct, &guarded] {
        let r = rt.block_on(client.call_tool(params())).expect("call succeeds");
        let text = r
            .content
            .first()
            .and_then(|c| c.as_text())
            .map(|t| t.text.clone());
        assert_eq!(text.as_deref(), Some("hello, gateway"));
    }

    let mut g = c.benchmark_group("stack");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    g.bench_function("direct", |b| {
        b.to_async(&rt)
            .iter(|| async { direct.call_tool(params()).await.expect("call") });
    });
    g.bench_function("gateway", |b| {
        b.to_async(&rt)
            .iter(|| async { guarded.call_tool(params()).await.expect("call") });
    });
    g.bench_function("tower_stack", |b| {
        b.to_async(&rt).iter(|| async {
            let request = McpRequest::new(
                ClientRequest::CallToolRequest(CallToolRequest::new(params())),
                CallContext::new(principal.clone(), ENDPOINT),
                endpoint.snapshot(),
            );
            let r = service.clone().oneshot(request).await.expect("call");
            assert!(matches!(r, ServerResult::CallToolResult(_)));
            r
        });
    });
    g.bench_function("tower_stack_pinned", |b| {
        b.to_async(&rt).iter(|| async {
            let request = McpRequest::new(
                ClientRequest::CallToolRequest(CallToolRequest::new(params())),
                CallContext::new(principal.clone(), ENDPOINT),
                pinned_endpoint.snapshot(),
            );
            let r = service.clone().oneshot(request).await.expect("call");
            assert!(matches!(r, ServerResult::CallToolResult(_)));
            r
        });
    });
    g.finish();
    drop(direct);
    drop(guarded);
    rt.block_on(gw.shutdown());
    rt.block_on(pinned_gw.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
