//! Embedding mcp-guard: an MCP server you already have (here a tiny in-process one),
//! federated behind a guarded endpoint, called by an MCP client, all in one process.
//!
//! Run: `cargo run -p mcp-guard-examples --bin embed`
#![allow(clippy::print_stdout, reason = "an example prints what it does")]

use std::sync::Arc;

use mcp_guard_core::upstream::{InProcessConnector, UpstreamOptions};
use mcp_guard_core::{Grant, GrantPolicy, MemoryAuditSink, PatternRedactor, Principal, RmcpUpstream};
use mcp_guard_tower::{
    AuditLayer, EndpointSpec, EnforcePolicyLayer, Gateway, GuardHandler, Router, Selection,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, InitializeResult, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

/// The server being guarded: one `shout` tool and one `delete_everything` tool.
#[derive(Clone)]
struct Shouter;

impl ServerHandler for Shouter {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = Arc::new(
            serde_json::json!({"type": "object"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("shout", "Upper-cases text.", schema.clone()),
            Tool::new(
                "delete_everything",
                "You do not want an agent to call this.",
                schema,
            ),
        ]))
    }

    async fn call_tool(
        &self,
        p: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = p
            .arguments
            .as_ref()
            .and_then(|a| a.get("text"))
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        Ok(CallToolResult::success(vec![ContentBlock::text(text.to_uppercase())]).into())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. The upstream, the gateway and an endpoint that exposes only `shout`.
    let upstream = RmcpUpstream::new(
        "loud",
        InProcessConnector::new("loud", || Shouter),
        UpstreamOptions::default(),
    );
    let gateway = Gateway::builder()
        .server(Arc::new(upstream))
        .endpoint(EndpointSpec::new("team").server("loud", Selection::none().tools(["shout"])?))
        .build()
        .await?;

    // 2. The guard stack: audit outermost, then policy, then the router.
    let audit = MemoryAuditSink::new();
    let policy = GrantPolicy::builder()
        .grant(Grant::allow().named("team").roles(["member"]))
        .build()?;
    let stack = ServiceBuilder::new()
        // Personal data and secrets out of every audit record.
        .layer(AuditLayer::new(
            Arc::new(audit.clone()),
            Arc::new(PatternRedactor::builder().build()),
        ))
        .layer(EnforcePolicyLayer::new(policy))
        .service(Router::new());
    let endpoint = gateway
        .endpoint("team")
        .ok_or_else(|| anyhow::anyhow!("no endpoint"))?;
    let handler = GuardHandler::new(endpoint, BoxCloneSyncService::new(stack))
        .with_principal(Arc::new(Principal::user("ada").with_roles(["member"])));

    // 3. Serve it to an MCP client over an in-memory pipe (stdio or HTTP work the same).
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Ok(running) = handler.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = ().serve(client_io).await?;
    let tools: Vec<String> = client
        .list_all_tools()
        .await?
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    println!("tools: {tools:?}");
    let args = serde_json::json!({"text": "hello"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let result = client
        .call_tool(CallToolRequestParams::new("loud__shout").with_arguments(args))
        .await?;
    println!("loud__shout: {:?}", result.content[0].as_text().map(|t| &t.text));
    let refused = client
        .call_tool(CallToolRequestParams::new("loud__delete_everything"))
        .await;
    println!(
        "loud__delete_everything: {}",
        refused.err().map(|e| e.to_string()).unwrap_or_default()
    );
    println!("audit records: {}", audit.events().len());
    let _ = client.cancel().await;
    gateway.shutdown().await;
    Ok(())
}
