//! Conformance fixture upstream for the mcp-guard interop suite.
//!
//! The official conformance runner (`@modelcontextprotocol/conformance`, `server` mode) calls
//! fixture tools, resources and prompts (`test_simple_text`, `test://static-text`,
//! `test_simple_prompt`, ...) that no published MCP server has. This binary implements them with
//! rmcp's [`ServerHandler`] trait directly (no macros), so the suite can run against it directly
//! and through the gateway, and the two result sets can be compared.
//!
//! ```text
//! conformance_fixture --stdio
//! conformance_fixture --http 127.0.0.1:PORT      # streamable HTTP at /mcp, loopback only
//! ```
//!
//! Every result is written as spec-shaped JSON and deserialized into rmcp's types: most rmcp
//! model structs are `#[non_exhaustive]`, and the JSON mirrors the scenario descriptions
//! one to one, which is what a reader comparing with the runner wants to see.
#![allow(
    clippy::print_stderr,
    reason = "a command-line fixture reports usage errors on stderr"
)]
#![allow(
    deprecated,
    reason = "the conformance scenarios still exercise logging (deprecated by SEP-2577)"
)]

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use rmcp::{
    ErrorData, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientResult,
        CompleteRequestParams, CompleteResult, ErrorCode, GetPromptRequestParams, GetPromptResponse,
        GetPromptResult, Implementation, InitializeResult, InputRequests, InputRequiredResult,
        ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
        PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
        ServerCapabilities, ServerNotification, ServerRequest, SetLevelRequestParams, SubscribeRequestParams,
        SubscriptionFilter, Tool, UnsubscribeRequestParams,
    },
    service::{RequestContext, SubscriptionContext},
    transport::{
        StreamableHttpServerConfig, StreamableHttpService,
        streamable_http_server::session::local::LocalSessionManager,
    },
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// A 1x1 red PNG.
const PNG_1X1: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A 44-byte WAV header with no samples (8 kHz, mono, 8-bit).
const WAV_EMPTY: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA=";
/// Tool-call step delay the scenarios describe ("after ~50ms").
const STEP: Duration = Duration::from_millis(50);

/// Deserializes spec-shaped JSON into an rmcp model type.
///
/// # Panics
/// Only if the literal JSON in this file does not match rmcp's model, which the first
/// conformance run shows at once.
fn model<T: DeserializeOwned>(value: Value) -> T {
    match serde_json::from_value(value) {
        Ok(v) => v,
        Err(e) => panic!("fixture JSON does not match rmcp's model: {e}"),
    }
}

fn tool_catalog() -> Vec<Tool> {
    let empty = json!({"type": "object", "properties": {}});
    let simple = |name: &str, description: &str| json!({"name": name, "description": description, "inputSchema": empty});
    let tools = json!([
        simple("test_simple_text", "Returns a simple text content block"),
        simple("test_image_content", "Returns an image content block (1x1 PNG)"),
        simple("test_audio_content", "Returns an audio content block (empty WAV)"),
        simple("test_embedded_resource", "Returns an embedded text resource"),
        simple("test_multiple_content_types", "Returns text, image and resource content"),
        simple("test_tool_with_logging", "Sends three info log notifications while running"),
        simple("test_tool_with_progress", "Reports progress 0/100, 50/100, 100/100"),
        simple("test_error_handling", "Always returns a tool error (isError: true)"),
        {
            "name": "test_sampling",
            "description": "Asks the client for an LLM completion (sampling/createMessage)",
            "inputSchema": {
                "type": "object",
                "properties": {"prompt": {"type": "string", "description": "The prompt to send"}},
                "required": ["prompt"]
            }
        },
        {
            "name": "test_elicitation",
            "description": "Asks the client for user input (elicitation/create)",
            "inputSchema": {
                "type": "object",
                "properties": {"message": {"type": "string", "description": "The message to show"}},
                "required": ["message"]
            }
        },
        simple("test_elicitation_sep1034_defaults", "Elicitation with defaults for every primitive type (SEP-1034)"),
        simple("test_elicitation_sep1330_enums", "Elicitation with the five enum schema variants (SEP-1330)"),
        {
            "name": "json_schema_2020_12_tool",
            "description": "Tool with JSON Schema 2020-12 features",
            "inputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "$anchor": "addressDef",
                        "type": "object",
                        "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
                    }
                },
                "properties": {
                    "name": {"type": "string"},
                    "address": {"$ref": "#/$defs/address"},
                    "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                    "phone": {"type": "string"},
                    "email": {"type": "string"}
                },
                "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
                "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
                "then": {"required": ["phone"]},
                "else": {"required": ["email"]},
                "additionalProperties": false
            }
        },
        simple("test_reconnection", "Sleeps briefly, then answers (SSE polling scenario)"),
        simple("test_missing_capability", "Needs the client's sampling capability; refuses with -32021 without it"),
        simple("test_logging_tool", "Logs only when the 2026-07-28 request carries a logLevel"),
        simple("test_streaming_elicitation", "Needs one elicitation: InputRequiredResult on 2026-07-28, elicitation/create before"),
        simple("test_trigger_tool_change", "Sends tools/list_changed (session or listen streams)"),
        simple("test_trigger_prompt_change", "Sends prompts/list_changed (session or listen streams)"),
        {
            "name": "test_headers",
            "description": "Echoes `region`, mirrored into the Mcp-Param-Region header (SEP-2243)",
            "inputSchema": {
                "type": "object",
                "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
                "required": ["region"]
            }
        },
        {
            "name": "echo",
            "description": "Returns its `text` argument unchanged (interop smoke test)",
            "inputSchema": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"]
            }
        },
        {
            "name": "add",
            "description": "Returns a + b as text and as structuredContent {sum}",
            "inputSchema": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"]
            },
            "outputSchema": {
                "type": "object",
                "properties": {"sum": {"type": "number"}},
                "required": ["sum"]
            }
        }
    ]);
    model(tools)
}

/// A completed `tools/call` result. `resultType: "complete"` is required on 2026-07-28 (the
/// official Python SDK rejects a result without it); rmcp strips it for legacy peers.
fn call_result(mut value: Value) -> CallToolResult {
    if let Some(obj) = value.as_object_mut() {
        obj.insert("resultType".into(), json!("complete"));
    }
    model(value)
}

fn text_result(text: impl Into<String>) -> CallToolResponse {
    call_result(json!({"content": [{"type": "text", "text": text.into()}]})).into()
}

fn error_result(text: impl Into<String>) -> CallToolResponse {
    call_result(json!({
        "content": [{"type": "text", "text": text.into()}],
        "isError": true
    }))
    .into()
}

/// Severity rank of a log level (RFC 5424 order, debug lowest).
fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// The fixture server. Cheap to clone: `StreamableHttpService` builds one per session (legacy)
/// or per request (2026-07-28), and they share the subscription set and log level.
#[derive(Debug, Clone)]
struct Fixture {
    state: Arc<Mutex<State>>,
    /// List changes triggered by `test_trigger_*`, fanned out to 2026 `subscriptions/listen`.
    changes: broadcast::Sender<Change>,
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Tools,
    Prompts,
}

impl Default for Fixture {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            changes: broadcast::channel(16).0,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    subscriptions: HashSet<String>,
    /// Minimum level set by `logging/setLevel` (legacy); `None` sends everything.
    min_level: Option<LoggingLevel>,
}

impl Fixture {
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sends `notifications/message` if the session's level (legacy) or the request's
    /// `_meta` logLevel (2026-07-28) lets it through.
    async fn log(&self, cx: &RequestContext<RoleServer>, level: LoggingLevel, text: &str) {
        let modern = cx.protocol_version().is_some_and(|v| !v.has_initialize());
        let threshold = if modern {
            // 2026-07-28: no logLevel in the request means "send no log messages".
            match cx.meta.log_level() {
                Some(l) => Some(l),
                None => return,
            }
        } else {
            self.with_state(|s| s.min_level)
        };
        if threshold.is_some_and(|t| severity(level) < severity(t)) {
            return;
        }
        let n: ServerNotification = model(json!({
            "method": "notifications/message",
            "params": {"level": level, "logger": "conformance-fixture", "data": text}
        }));
        // A failed notification must not fail the tool call.
        let _ = cx.peer.send_notification(n).await;
    }

    async fn trigger(&self, cx: &RequestContext<RoleServer>, change: Change) {
        // Nobody listening is fine: the send error only says so.
        let _ = self.changes.send(change);
        if cx.protocol_version().is_none_or(|v| v.has_initialize()) {
            let _ = match change {
                Change::Tools => cx.peer.notify_tool_list_changed().await,
                Change::Prompts => cx.peer.notify_prompt_list_changed().await,
            };
        }
    }

    async fn progress(&self, cx: &RequestContext<RoleServer>, progress: u32, message: &str) {
        let Some(token) = cx.meta.get_progress_token() else {
            return;
        };
        let n: ServerNotification = model(json!({
            "method": "notifications/progress",
            "params": {"progressToken": token, "progress": progress, "total": 100, "message": message}
        }));
        let _ = cx.peer.send_notification(n).await;
    }

    /// Sends a server-to-client request (legacy sessions only) and returns the client's result
    /// as JSON.
    async fn ask_client(cx: &RequestContext<RoleServer>, request: Value) -> Result<Value, String> {
        let req: ServerRequest = model(request);
        match cx.peer.send_request(req).await {
            Ok(ClientResult::CustomResult(r)) => Ok(r.0),
            Ok(r) => serde_json::to_value(r).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Asks the client for input: a server-to-client request on a legacy session; on a
    /// 2026-07-28 request (where those are forbidden) an input-required result, answered
    /// by the client's retry carrying `inputResponses`.
    async fn ask(
        cx: &RequestContext<RoleServer>,
        params: &CallToolRequestParams,
        key: &str,
        request: Value,
    ) -> Asked {
        let modern = cx.protocol_version().is_some_and(|v| v.as_str() >= "2026-07-28");
        if !modern {
            return match Self::ask_client(cx, request).await {
                Ok(v) => Asked::Answer(v),
                Err(e) => Asked::Failed(e),
            };
        }
        if let Some(v) = params.input_responses.as_ref().and_then(|m| m.get(key)) {
            return Asked::Answer(v.clone());
        }
        let mut requests = InputRequests::new();
        requests.insert(key.to_owned(), model(request));
        Asked::Pending(CallToolResponse::InputRequired(InputRequiredResult::new(
            Some(requests),
            Some(format!("awaiting {key}")),
        )))
    }

    async fn elicit(
        cx: &RequestContext<RoleServer>,
        params: &CallToolRequestParams,
        message: &str,
        schema: Value,
        label: &str,
    ) -> CallToolResponse {
        if !client_has(cx, |c| c.elicitation.is_some()) {
            return error_result("client does not support elicitation");
        }
        let request = json!({
            "method": "elicitation/create",
            "params": {"mode": "form", "message": message, "requestedSchema": schema}
        });
        match Self::ask(cx, params, "elicitation", request).await {
            Asked::Answer(r) => text_result(format!(
                "{label}: action={}, content={}",
                r.get("action").and_then(Value::as_str).unwrap_or("unknown"),
                r.get("content").unwrap_or(&Value::Null)
            )),
            Asked::Pending(p) => p,
            Asked::Failed(e) => error_result(format!("elicitation failed: {e}")),
        }
    }
}

/// The outcome of [`Fixture::ask`].
enum Asked {
    Answer(Value),
    Pending(CallToolResponse),
    Failed(String),
}

fn client_has(cx: &RequestContext<RoleServer>, f: impl Fn(&ClientCapabilities) -> bool) -> bool {
    cx.client_capabilities().as_ref().is_some_and(f)
}

fn arg<'a>(params: &'a CallToolRequestParams, key: &str) -> Option<&'a str> {
    params.arguments.as_ref()?.get(key)?.as_str()
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> InitializeResult {
        let caps: ServerCapabilities = model(json!({
            "tools": {"listChanged": true},
            "resources": {"subscribe": true, "listChanged": true},
            "prompts": {"listChanged": true},
            "logging": {},
            "completions": {}
        }));
        InitializeResult::new(caps)
            .with_server_info(Implementation::new(
                "mcp-guard-conformance-fixture",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("Conformance fixture upstream for the mcp-guard interop suite.")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tool_catalog()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tool_catalog().into_iter().find(|t| t.name == name)
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one arm per fixture tool reads best as a flat table"
    )]
    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let result = match params.name.as_ref() {
            "test_simple_text" => text_result("This is a simple text response for testing."),
            "test_image_content" => call_result(json!({
                "content": [{"type": "image", "data": PNG_1X1, "mimeType": "image/png"}]
            }))
            .into(),
            "test_audio_content" => call_result(json!({
                "content": [{"type": "audio", "data": WAV_EMPTY, "mimeType": "audio/wav"}]
            }))
            .into(),
            "test_embedded_resource" => call_result(json!({
                "content": [{"type": "resource", "resource": {
                    "uri": "test://embedded-resource",
                    "mimeType": "text/plain",
                    "text": "This is an embedded resource content."
                }}]
            }))
            .into(),
            "test_multiple_content_types" => call_result(json!({
                "content": [
                    {"type": "text", "text": "Multiple content types test:"},
                    {"type": "image", "data": PNG_1X1, "mimeType": "image/png"},
                    {"type": "resource", "resource": {
                        "uri": "test://mixed-content-resource",
                        "mimeType": "application/json",
                        "text": "{\"test\":\"data\",\"value\":123}"
                    }}
                ]
            }))
            .into(),
            "test_tool_with_logging" => {
                self.log(&cx, LoggingLevel::Info, "Tool execution started").await;
                tokio::time::sleep(STEP).await;
                self.log(&cx, LoggingLevel::Info, "Tool processing data").await;
                tokio::time::sleep(STEP).await;
                self.log(&cx, LoggingLevel::Info, "Tool execution completed")
                    .await;
                text_result("Logging test completed")
            }
            "test_logging_tool" => {
                self.log(&cx, LoggingLevel::Info, "test_logging_tool ran").await;
                text_result("Logging tool completed")
            }
            "test_tool_with_progress" => {
                self.progress(&cx, 0, "Starting").await;
                tokio::time::sleep(STEP).await;
                self.progress(&cx, 50, "Halfway").await;
                tokio::time::sleep(STEP).await;
                self.progress(&cx, 100, "Complete").await;
                text_result("Progress test completed")
            }
            "test_error_handling" => error_result("This tool intentionally returns an error for testing"),
            "test_sampling" => {
                if !client_has(&cx, |c| c.sampling.is_some()) {
                    return Ok(error_result("client does not support sampling"));
                }
                let prompt = arg(&params, "prompt").unwrap_or("Hello");
                let request = json!({
                    "method": "sampling/createMessage",
                    "params": {
                        "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
                        "maxTokens": 100
                    }
                });
                match Self::ask(&cx, &params, "sampling", request).await {
                    Asked::Answer(r) => {
                        let content = &r["content"];
                        let text = content["text"]
                            .as_str()
                            .or_else(|| content[0]["text"].as_str())
                            .unwrap_or("(no text)");
                        text_result(format!("LLM response: {text}"))
                    }
                    Asked::Pending(p) => p,
                    Asked::Failed(e) => error_result(format!("sampling failed: {e}")),
                }
            }
            "test_elicitation" => {
                let message = arg(&params, "message").unwrap_or("Please provide your information");
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "username": {"type": "string", "description": "User's response"},
                        "email": {"type": "string", "description": "User's email address"}
                    },
                    "required": ["username", "email"]
                });
                Self::elicit(&cx, &params, message, schema, "User response").await
            }
            "test_elicitation_sep1034_defaults" => {
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "description": "User's name", "default": "John Doe"},
                        "age": {"type": "integer", "description": "User's age", "default": 30},
                        "score": {"type": "number", "description": "User's score", "default": 95.5},
                        "status": {
                            "type": "string", "description": "User's status",
                            "enum": ["active", "inactive", "pending"], "default": "active"
                        },
                        "verified": {"type": "boolean", "description": "Whether user is verified", "default": true}
                    }
                });
                Self::elicit(
                    &cx,
                    &params,
                    "Please provide values (all have defaults)",
                    schema,
                    "Elicitation completed",
                )
                .await
            }
            "test_elicitation_sep1330_enums" => {
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                        "titledSingle": {"type": "string", "oneOf": [
                            {"const": "value1", "title": "First Option"},
                            {"const": "value2", "title": "Second Option"},
                            {"const": "value3", "title": "Third Option"}
                        ]},
                        "legacyEnum": {
                            "type": "string", "enum": ["opt1", "opt2", "opt3"],
                            "enumNames": ["Option One", "Option Two", "Option Three"]
                        },
                        "untitledMulti": {"type": "array", "items": {
                            "type": "string", "enum": ["option1", "option2", "option3"]
                        }},
                        "titledMulti": {"type": "array", "items": {"anyOf": [
                            {"const": "value1", "title": "First Choice"},
                            {"const": "value2", "title": "Second Choice"},
                            {"const": "value3", "title": "Third Choice"}
                        ]}}
                    }
                });
                Self::elicit(
                    &cx,
                    &params,
                    "Test enum schema improvements",
                    schema,
                    "Elicitation completed",
                )
                .await
            }
            "json_schema_2020_12_tool" => {
                text_result(format!("Hello, {}!", arg(&params, "name").unwrap_or("world")))
            }
            "test_reconnection" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                text_result("Reconnection test completed")
            }
            "test_missing_capability" => {
                if !client_has(&cx, |c| c.sampling.is_some()) {
                    return Err(ErrorData::new(
                        ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY,
                        "this tool requires the client's sampling capability",
                        Some(json!({"requiredCapabilities": {"sampling": {}}})),
                    ));
                }
                text_result("client declared sampling")
            }
            "test_streaming_elicitation" => {
                let schema = json!({
                    "type": "object",
                    "properties": {"answer": {"type": "string"}},
                    "required": ["answer"]
                });
                if cx.protocol_version().is_none_or(|v| v.has_initialize()) {
                    Self::elicit(&cx, &params, "Please answer", schema, "Elicitation completed").await
                } else if let Some(responses) = &params.input_responses {
                    text_result(format!(
                        "Elicitation completed: {}",
                        serde_json::to_value(responses).unwrap_or_default()
                    ))
                } else {
                    model::<InputRequiredResult>(json!({
                        "resultType": "input_required",
                        "inputRequests": {"answer": {
                            "method": "elicitation/create",
                            "params": {"mode": "form", "message": "Please answer", "requestedSchema": schema}
                        }}
                    }))
                    .into()
                }
            }
            "test_trigger_tool_change" => {
                self.trigger(&cx, Change::Tools).await;
                text_result("tools/list_changed sent")
            }
            "test_trigger_prompt_change" => {
                self.trigger(&cx, Change::Prompts).await;
                text_result("prompts/list_changed sent")
            }
            "test_headers" => text_result(format!("region={}", arg(&params, "region").unwrap_or(""))),
            "echo" => text_result(arg(&params, "text").unwrap_or_default()),
            "add" => {
                let num = |k: &str| {
                    params
                        .arguments
                        .as_ref()
                        .and_then(|a| a.get(k))
                        .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
                };
                match (num("a"), num("b")) {
                    (Some(a), Some(b)) => call_result(json!({
                        "content": [{"type": "text", "text": format!("{}", a + b)}],
                        "structuredContent": {"sum": a + b}
                    }))
                    .into(),
                    _ => error_result("a and b must be numbers"),
                }
            }
            other => {
                return Err(ErrorData::invalid_params(format!("unknown tool: {other}"), None));
            }
        };
        Ok(result)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(model(json!([
            {
                "uri": "test://static-text", "name": "static-text",
                "title": "Static Text Resource",
                "description": "A static text resource for testing", "mimeType": "text/plain"
            },
            {
                "uri": "test://static-binary", "name": "static-binary",
                "title": "Static Binary Resource",
                "description": "A static binary resource (1x1 PNG) for testing", "mimeType": "image/png"
            },
            {
                "uri": "test://watched-resource", "name": "watched-resource",
                "description": "A resource clients may subscribe to", "mimeType": "text/plain"
            }
        ]))))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(model(json!([{
            "uriTemplate": "test://template/{id}/data", "name": "template-data",
            "description": "A resource template with an {id} parameter",
            "mimeType": "application/json"
        }]))))
    }

    async fn read_resource(
        &self,
        params: ReadResourceRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = params.uri.as_str();
        let contents = match uri {
            "test://static-text" => json!({
                "uri": uri, "mimeType": "text/plain",
                "text": "This is the content of the static text resource."
            }),
            "test://static-binary" => json!({"uri": uri, "mimeType": "image/png", "blob": PNG_1X1}),
            "test://watched-resource" => {
                json!({"uri": uri, "mimeType": "text/plain", "text": "Watched resource content."})
            }
            _ => match uri
                .strip_prefix("test://template/")
                .and_then(|rest| rest.strip_suffix("/data"))
                .filter(|id| !id.is_empty() && !id.contains('/'))
            {
                Some(id) => json!({
                    "uri": uri, "mimeType": "application/json",
                    "text": json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")})
                        .to_string()
                }),
                None => {
                    return Err(ErrorData::resource_not_found(
                        "Resource not found",
                        Some(json!({"uri": uri})),
                    ));
                }
            },
        };
        Ok(model::<ReadResourceResult>(json!({"resultType": "complete", "contents": [contents]})).into())
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        // rmcp intersects this with the advertised capabilities.
        Some(requested.clone())
    }

    async fn listen(&self, cx: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.changes.subscribe();
        loop {
            tokio::select! {
                () = cx.cancelled() => return Ok(()),
                change = changes.recv() => {
                    let sent = match change {
                        Ok(Change::Tools) => cx.sink().notify_tool_list_changed().await,
                        Ok(Change::Prompts) => cx.sink().notify_prompt_list_changed().await,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    };
                    // The sink refuses categories outside the accepted filter; that is the point.
                    drop(sent);
                }
            }
        }
    }

    async fn subscribe(
        &self,
        params: SubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.with_state(|s| s.subscriptions.insert(params.uri.clone()));
        Ok(())
    }

    async fn unsubscribe(
        &self,
        params: UnsubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.with_state(|s| s.subscriptions.remove(params.uri.as_str()));
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(model(json!([
            {"name": "test_simple_prompt", "description": "A simple prompt without arguments"},
            {
                "name": "test_prompt_with_arguments",
                "description": "A prompt with two required arguments",
                "arguments": [
                    {"name": "arg1", "description": "First test argument", "required": true},
                    {"name": "arg2", "description": "Second test argument", "required": true}
                ]
            },
            {
                "name": "test_prompt_with_embedded_resource",
                "description": "A prompt that embeds a resource",
                "arguments": [
                    {"name": "resourceUri", "description": "URI of the resource to embed", "required": true}
                ]
            },
            {"name": "test_prompt_with_image", "description": "A prompt that includes an image"}
        ]))))
    }

    async fn get_prompt(
        &self,
        params: GetPromptRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let get = |k: &str| {
            params
                .arguments
                .as_ref()
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let text = |t: &str| json!({"role": "user", "content": {"type": "text", "text": t}});
        let messages = match params.name.as_str() {
            "test_simple_prompt" => json!([text("This is a simple prompt for testing.")]),
            "test_prompt_with_arguments" => json!([text(&format!(
                "Prompt with arguments: arg1='{}', arg2='{}'",
                get("arg1"),
                get("arg2")
            ))]),
            "test_prompt_with_embedded_resource" => {
                let uri = get("resourceUri");
                let uri = if uri.is_empty() {
                    "test://static-text".to_owned()
                } else {
                    uri
                };
                json!([
                    {"role": "user", "content": {"type": "resource", "resource": {
                        "uri": uri, "mimeType": "text/plain",
                        "text": "Embedded resource content for testing."
                    }}},
                    text("Please process the embedded resource above.")
                ])
            }
            "test_prompt_with_image" => json!([
                {"role": "user", "content": {"type": "image", "data": PNG_1X1, "mimeType": "image/png"}},
                text("Please analyze the image above.")
            ]),
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown prompt: {other}"),
                    None,
                ));
            }
        };
        Ok(model::<GetPromptResult>(json!({"resultType": "complete", "messages": messages})).into())
    }

    async fn complete(
        &self,
        params: CompleteRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let request = serde_json::to_value(&params).unwrap_or_default();
        let argument = request["argument"]["name"].as_str().unwrap_or_default();
        let prefix = request["argument"]["value"].as_str().unwrap_or_default();
        let candidates: &[&str] = match (request["ref"]["type"].as_str(), argument) {
            (Some("ref/prompt"), "arg1" | "arg2") => &["paris", "park", "party", "hello", "world"],
            (Some("ref/resource"), "id") => &["1", "2", "3", "123"],
            _ => &[],
        };
        let values: Vec<&str> = candidates
            .iter()
            .copied()
            .filter(|c| c.starts_with(prefix))
            .collect();
        Ok(model(json!({"completion": {
            "values": values, "total": values.len(), "hasMore": false
        }})))
    }

    async fn set_level(
        &self,
        params: SetLevelRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.with_state(|s| s.min_level = Some(params.level));
        Ok(())
    }
}

enum Mode {
    Stdio,
    Http(SocketAddr),
}

fn parse_args() -> Result<Mode, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["--stdio"] => Ok(Mode::Stdio),
        ["--http", addr] => {
            let addr: SocketAddr = addr.parse().map_err(|e| format!("bad address {addr:?}: {e}"))?;
            if !addr.ip().is_loopback() {
                return Err(format!("refusing to listen on non-loopback address {addr}"));
            }
            Ok(Mode::Http(addr))
        }
        _ => Err("usage: conformance_fixture --stdio | --http 127.0.0.1:PORT".to_owned()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mode = match parse_args() {
        Ok(m) => m,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    match mode {
        Mode::Stdio => {
            let running = Fixture::default().serve(rmcp::transport::stdio()).await?;
            running.waiting().await?;
        }
        Mode::Http(addr) => {
            let fixture = Fixture::default();
            // Loopback Host values are rmcp's default; Origin is checked too (DNS rebinding).
            let config = StreamableHttpServerConfig::default()
                .with_allowed_origins(["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"])
                .with_sse_keep_alive(Some(Duration::from_secs(15)));
            let service = StreamableHttpService::new(
                move || Ok(fixture.clone()),
                Arc::new(LocalSessionManager::default()),
                config,
            );
            let app = axum::Router::new().nest_service("/mcp", service);
            let listener = tokio::net::TcpListener::bind(addr).await?;
            eprintln!(
                "conformance fixture listening on http://{}/mcp",
                listener.local_addr()?
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ProtocolVersion;

    #[test]
    fn catalog_deserializes_and_names_are_unique() {
        let tools = tool_catalog();
        let names: HashSet<_> = tools.iter().map(|t| t.name.clone()).collect();
        assert_eq!(names.len(), tools.len());
        assert!(names.contains("test_simple_text"));
    }

    #[test]
    fn protocol_versions_known() {
        assert!(ProtocolVersion::LATEST_WITH_INITIALIZE.has_initialize());
    }
}
