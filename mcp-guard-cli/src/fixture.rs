//! A small MCP server bundled in the binary: the demo's upstreams, and a fixture that
//! tests run as a real child process (`mcp-guard fixture --name N`).
//!
//! Tools: `echo`, `add`, `whoami`, `env_names` (names only, never values), `slow`
//! (progress; records cancellation), `crash` (exits mid-call), `add_tool` (adds a tool
//! and announces `tools/list_changed`), plus any `--extra-tool` names (echo tools).
//! One prompt (`greeting`) and one resource (`fixture://<name>/readme`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, Implementation, InitializeResult, ListPromptsResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, Prompt,
    PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, Role, ServerCapabilities, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler};
use serde_json::json;

#[derive(Clone)]
pub(crate) struct Fixture {
    name: Arc<str>,
    extra: Arc<Mutex<Vec<String>>>,
    legacy_only: bool,
    variant_file: Option<Arc<std::path::Path>>,
    garbage_after: Option<u64>,
    questions: bool,
    calls: Arc<std::sync::atomic::AtomicU64>,
}

impl Fixture {
    pub(crate) fn new(
        name: &str,
        extra: Vec<String>,
        legacy_only: bool,
        variant_file: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            name: name.into(),
            extra: Arc::new(Mutex::new(extra)),
            legacy_only,
            variant_file: variant_file.map(Into::into),
            garbage_after: None,
            questions: false,
            calls: Arc::default(),
        }
    }

    /// After `n` tool calls, every call writes protocol garbage to stdout first.
    pub(crate) fn garbage_after(mut self, n: Option<u64>) -> Self {
        self.garbage_after = n;
        self
    }

    /// Also offers `ask_name` (elicitation) and `ask_model` (sampling), which ask the
    /// client with requests of their own, the legacy way (on 2026-07-28 they fail, as
    /// servers written that way do).
    pub(crate) fn questions(mut self, on: bool) -> Self {
        self.questions = on;
        self
    }

    /// The definition variant named in the variant file (read at every listing, so a
    /// test can change a server's tools between reads): `base`, `desc`, `param`,
    /// `default`, `new`, `rename`, `markup` (a description holding HTML and script).
    fn variant(&self) -> String {
        self.variant_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map_or_else(|| "base".to_owned(), |s| s.trim().to_owned())
    }

    fn tools(&self) -> Vec<Tool> {
        let schema = |v: serde_json::Value| Arc::new(v.as_object().cloned().unwrap_or_default());
        let variant = self.variant();
        let mut text_param = json!({"type": "string", "description": "Text to return"});
        match variant.as_str() {
            "param" => text_param["description"] = "Text to return verbatim".into(),
            "default" => text_param["default"] = "hello".into(),
            _ => {}
        }
        let text =
            schema(json!({"type": "object", "properties": {"text": text_param}, "required": ["text"]}));
        let (echo_name, echo_desc) = match variant.as_str() {
            "desc" => ("echo", "Returns the text it is given, politely."),
            "rename" => ("repeat", "Returns the text it is given."),
            "markup" => (
                "echo",
                "Returns the text. <script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">",
            ),
            _ => ("echo", "Returns the text it is given."),
        };
        let mut tools = vec![
            Tool::new(echo_name, echo_desc, text.clone()),
            Tool::new(
                "add",
                "Adds two numbers.",
                schema(
                    json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
                ),
            ),
            Tool::new("whoami", "Names this server.", schema(json!({"type": "object"}))),
            Tool::new(
                "env_names",
                "Lists the names of this process's environment variables.",
                schema(json!({"type": "object"})),
            ),
            Tool::new(
                "slow",
                "Reports progress for a while; records whether it was cancelled.",
                schema(
                    json!({"type": "object", "properties": {"steps": {"type": "integer"}, "delay_ms": {"type": "integer"}}}),
                ),
            ),
            Tool::new(
                "crash",
                "Exits the server process in the middle of the call.",
                schema(json!({"type": "object"})),
            ),
            Tool::new(
                "add_tool",
                "Adds an echo tool with the given name and announces the change.",
                schema(
                    json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
                ),
            ),
        ];
        tools.push(Tool::new(
            "announce",
            "Announces that the tool list changed.",
            schema(json!({"type": "object"})),
        ));
        tools.push(Tool::new(
            "getenv",
            "Returns the value of one environment variable (a leak probe for tests).",
            schema(
                json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
            ),
        ));
        if variant == "new" {
            tools.push(Tool::new("echo_twice", "Returns the text twice.", text.clone()));
        }
        if self.questions {
            tools.push(Tool::new(
                "ask_name",
                "Asks the user for their name (elicitation) and returns it.",
                schema(json!({"type": "object"})),
            ));
            tools.push(Tool::new(
                "ask_model",
                "Asks the client's model to say something (sampling) and returns it.",
                schema(json!({"type": "object"})),
            ));
        }
        for n in self.extra.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            tools.push(Tool::new(n.clone(), "Extra echo tool.", text.clone()));
        }
        tools
    }
}

/// Appends `method name` to the file named by `FIXTURE_CALL_LOG`, if set: the tests'
/// proof of what reached the upstream.
fn record_call(method: &str, name: &str) {
    if let Some(path) = std::env::var_os("FIXTURE_CALL_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{method} {name}");
        }
    }
}

/// Asks the client for a name with an `elicitation/create` request of its own.
async fn ask_name(ctx: &RequestContext<RoleServer>) -> CallToolResponse {
    let params = serde_json::from_value(json!({
        "mode": "form",
        "message": "What is your name?",
        "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    }));
    let params = match params {
        Ok(p) => p,
        Err(e) => return failed(format!("elicitation request: {e}")),
    };
    let request = rmcp::model::ServerRequest::ElicitRequest(rmcp::model::ElicitRequest::new(params));
    match ctx.peer.send_request(request).await {
        Ok(rmcp::model::ClientResult::ElicitResult(r)) => {
            let name = r
                .content
                .as_ref()
                .and_then(|c| c.get("name"))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            text(format!("{}: {name}", format!("{:?}", r.action).to_lowercase()))
        }
        Ok(other) => failed(format!("elicitation answered with {other:?}")),
        Err(e) => failed(format!("elicitation failed: {e}")),
    }
}

/// Asks the client's model with a `sampling/createMessage` request of its own.
#[allow(deprecated, reason = "sampling is how legacy servers ask the client's model")]
async fn ask_model(ctx: &RequestContext<RoleServer>) -> CallToolResponse {
    let params = serde_json::from_value(json!({
        "messages": [{"role": "user", "content": {"type": "text", "text": "Say something."}}],
        "maxTokens": 50
    }));
    let params = match params {
        Ok(p) => p,
        Err(e) => return failed(format!("sampling request: {e}")),
    };
    match ctx.peer.create_message(params).await {
        Ok(r) => {
            let said = serde_json::to_value(&r.message)
                .ok()
                .and_then(|m| {
                    let c = &m["content"];
                    c["text"]
                        .as_str()
                        .or_else(|| c[0]["text"].as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            text(format!("the model said: {said}"))
        }
        Err(e) => failed(format!("sampling failed: {e}")),
    }
}

fn failed(s: impl Into<String>) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(s)]).into()
}

fn text(s: impl Into<String>) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(s)]).into()
}

fn arg<'a>(p: &'a CallToolRequestParams, k: &str) -> Option<&'a serde_json::Value> {
    p.arguments.as_ref().and_then(|a| a.get(k))
}

/// Serves `fixture` over streamable HTTP at `http://ADDR/mcp` (loopback only: the
/// address must be a loopback one) until the process is stopped; announces
/// `fixture listening on http://ADDR/mcp` on stderr once it accepts connections.
pub(crate) async fn serve_http(fixture: Fixture, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "the fixture listens on loopback addresses only"
    );
    let service = StreamableHttpService::new(
        move || Ok(fixture.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    #[allow(clippy::print_stderr, reason = "the readiness line tests wait for")]
    {
        eprintln!("fixture listening on http://{}/mcp", listener.local_addr()?);
    }
    axum::serve(listener, app).await?;
    Ok(())
}

impl ServerHandler for Fixture {
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [rmcp::model::ProtocolVersion]> {
        if self.legacy_only {
            rmcp::model::ProtocolVersion::known_up_to(&rmcp::model::ProtocolVersion::V_2025_11_25).into()
        } else {
            std::borrow::Cow::Borrowed(rmcp::model::ProtocolVersion::KNOWN_VERSIONS)
        }
    }

    async fn discover(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::DiscoverResult, ErrorData> {
        if self.legacy_only {
            // A server from before 2026-07-28 does not know the method at all.
            return Err(ErrorData::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                "Method not found: server/discover",
                None,
            ));
        }
        let _ = ctx;
        Ok(rmcp::model::DiscoverResult::from_server_info(
            self.supported_protocol_versions().into_owned(),
            self.get_info(),
        ))
    }

    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new(format!("fixture-{}", self.name), "1.0.0"))
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    #[allow(clippy::too_many_lines, reason = "one dispatch table for the fixture's tools")]
    async fn call_tool(
        &self,
        p: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        record_call("tools/call", &p.name);
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.garbage_after.is_some_and(|after| n >= after) {
            {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(b"fixture: this line is not JSON-RPC\n");
                let _ = out.flush();
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        match p.name.as_ref() {
            "echo" | "repeat" => Ok(text(arg(&p, "text").and_then(|v| v.as_str()).unwrap_or_default())),
            "echo_twice" => {
                let t = arg(&p, "text").and_then(|v| v.as_str()).unwrap_or_default();
                Ok(text(format!("{t}{t}")))
            }
            "getenv" => {
                let name = arg(&p, "name").and_then(|v| v.as_str()).unwrap_or_default();
                if name == "@pid" {
                    // Which process answered: isolation tests tell instances apart.
                    return Ok(text(std::process::id().to_string()));
                }
                Ok(text(std::env::var(name).unwrap_or_default()))
            }
            "announce" => {
                let _ = ctx.peer.notify_tool_list_changed().await;
                Ok(text("announced"))
            }
            "add" => {
                let n = |k| arg(&p, k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
                Ok(text(format!("{}", n("a") + n("b"))))
            }
            "whoami" => Ok(text(self.name.to_string())),
            "env_names" => {
                let mut names: Vec<String> = std::env::vars_os()
                    .map(|(k, _)| k.to_string_lossy().into_owned())
                    .collect();
                names.sort();
                Ok(text(names.join(",")))
            }
            "slow" => {
                let steps = arg(&p, "steps").and_then(serde_json::Value::as_u64).unwrap_or(5);
                let delay = arg(&p, "delay_ms")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(100);
                let token = ctx.meta.get_progress_token();
                for i in 0..steps {
                    if let Some(t) = &token {
                        let mut note = ProgressNotificationParam::new(
                            t.clone(),
                            f64::from(u32::try_from(i + 1).unwrap_or(u32::MAX)),
                        );
                        note.total = Some(f64::from(u32::try_from(steps).unwrap_or(u32::MAX)));
                        let _ = ctx.peer.notify_progress(note).await;
                    }
                    tokio::select! {
                        () = ctx.ct.cancelled() => {
                            if let Some(path) = std::env::var_os("FIXTURE_CANCEL_FILE") {
                                let _ = std::fs::write(path, format!("cancelled at step {i}"));
                            }
                            return Ok(text("cancelled"));
                        }
                        () = tokio::time::sleep(Duration::from_millis(delay)) => {}
                    }
                }
                Ok(text(format!("done after {steps} steps")))
            }
            "ask_name" if self.questions => Ok(ask_name(&ctx).await),
            "ask_model" if self.questions => Ok(ask_model(&ctx).await),
            "crash" => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                std::process::exit(3);
            }
            "add_tool" => {
                let name = arg(&p, "name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("added")
                    .to_owned();
                self.extra
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(name.clone());
                let _ = ctx.peer.notify_tool_list_changed().await;
                Ok(text(format!("added {name}")))
            }
            other
                if self
                    .extra
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .any(|n| n == other) =>
            {
                Ok(text(format!(
                    "{other}: {}",
                    arg(&p, "text").and_then(|v| v.as_str()).unwrap_or_default()
                )))
            }
            other => Err(ErrorData::invalid_params(format!("Unknown tool: {other}"), None)),
        }
    }

    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            "greeting",
            Some("Greets someone."),
            None,
        )]))
    }

    async fn get_prompt(
        &self,
        p: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        record_call("prompts/get", &p.name);
        if p.name != "greeting" {
            return Err(ErrorData::invalid_params(
                format!("Unknown prompt: {}", p.name),
                None,
            ));
        }
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!("Hello from {}", self.name),
        )])
        .into())
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![Resource::new(
            format!("fixture://{}/readme", self.name),
            "readme",
        )]))
    }

    async fn read_resource(
        &self,
        p: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if p.uri != format!("fixture://{}/readme", self.name) {
            return Err(ErrorData::resource_not_found(
                format!("no resource {}", p.uri),
                None,
            ));
        }
        Ok(ReadResourceResult::new(vec![ResourceContents::text(
            format!("This is {}.", self.name),
            p.uri,
        )])
        .into())
    }
}
