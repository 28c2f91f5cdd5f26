//! Shared pieces of the overhead benchmarks (`benches/stack.rs` and the `load` binary).
//!
//! Included with `#[path]` by both, so the package needs no library target.
//!
//! - [`Echo`]: a trivial rmcp server with two tools, `echo` and `add`;
//! - [`PassThrough`]: a redactor that redacts nothing (the real one lands separately);
//! - [`NoopSink`]: an audit sink that only counts;
//! - [`guard_stack`]: audit → policy (one allow grant) → router, as the CLI builds it.

#![allow(dead_code, reason = "each includer uses a different subset")]

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mcp_guard_core::{AuditError, AuditEvent, AuditSink, Grant, GrantPolicy, Redactor};
use mcp_guard_tower::{AuditLayer, EnforcePolicyLayer, GuardService, Router};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, InitializeResult,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler};
use serde_json::json;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

/// The endpoint name every benchmark uses.
pub(crate) const ENDPOINT: &str = "e";
/// The upstream's id in the gateway.
pub(crate) const SERVER: &str = "up";

/// A trivial MCP server: `echo {text}` and `add {a, b}`. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Echo;

fn tools() -> Vec<Tool> {
    let schema = |v: serde_json::Value| Arc::new(v.as_object().cloned().unwrap_or_default());
    vec![
        Tool::new(
            "echo",
            "Returns the text it is given.",
            schema(
                json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
            ),
        ),
        Tool::new(
            "add",
            "Adds two numbers.",
            schema(
                json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
            ),
        ),
    ]
}

impl ServerHandler for Echo {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("bench-echo", "1.0.0"))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        p: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arg = |k: &str| p.arguments.as_ref().and_then(|a| a.get(k));
        let text = match p.name.as_ref() {
            "echo" => arg("text")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
            "add" => {
                let n = |k| arg(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
                format!("{}", n("a") + n("b"))
            }
            other => return Err(ErrorData::invalid_params(format!("Unknown tool: {other}"), None)),
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

/// Redacts nothing. The stack benches run with this until the pattern redactor lands,
/// so they do not include redaction cost.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PassThrough;

impl Redactor for PassThrough {
    fn redact_str<'a>(&self, input: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(input)
    }
}

/// Accepts every audit event and only counts them (no serialisation, no I/O).
#[derive(Debug, Default)]
pub(crate) struct NoopSink {
    /// Events recorded.
    pub(crate) count: AtomicU64,
}

#[async_trait::async_trait]
impl AuditSink for NoopSink {
    async fn record(&self, _: &AuditEvent) -> Result<(), AuditError> {
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One allow grant for every principal and name.
pub(crate) fn allow_all() -> GrantPolicy {
    #[expect(clippy::expect_used, reason = "a constant, valid policy")]
    GrantPolicy::builder()
        .grant(Grant::allow().named("bench").principals(["*"]).names(["*"]))
        .build()
        .expect("valid policy")
}

/// The full guard stack: audit (pass-through redactor, no-op sink) → policy → router.
pub(crate) fn guard_stack(sink: Arc<NoopSink>) -> GuardService {
    let stack = ServiceBuilder::new()
        .layer(AuditLayer::new(sink, Arc::new(PassThrough)))
        .layer(EnforcePolicyLayer::new(allow_all()))
        .service(Router::new());
    BoxCloneSyncService::new(stack)
}
