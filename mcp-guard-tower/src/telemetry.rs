//! [`TelemetryLayer`]: an OpenTelemetry span for each MCP request through the stack,
//! and one for each call the [`Router`](crate::Router) makes to an upstream.
//!
//! The request's span (kind `SERVER`) is named `{method} {name}` (`tools/call
//! github__search`) and carries the MCP and generative-AI (`gen_ai.*`) semantic-convention attributes:
//! `mcp.method.name`, `mcp.session.id`, `mcp.protocol.version`, `jsonrpc.request.id`,
//! `gen_ai.operation.name` (`execute_tool`) and `gen_ai.tool.name` for tool calls,
//! `gen_ai.prompt.name`, `mcp.resource.uri`, and the gateway's own `mcp_guard.endpoint`,
//! `mcp_guard.server` and `mcp_guard.principal`; a refused or failed request has status
//! `ERROR` and `error.type` (`denied`, `rate_limited`, `timeout`, `tool_error`, ...).
//!
//! The client's W3C trace context (`traceparent` and `tracestate` in the request's
//! `_meta`; [`GuardHandler`](crate::GuardHandler) copies them there from the HTTP headers
//! when `_meta` has none) is the span's parent, so the gateway's spans join the client's
//! trace. The layer then puts its own span's context into the request's `_meta` (so the
//! audit record's `trace_id` is the trace's), and the router's upstream span (kind
//! `CLIENT`, named after the upstream's own tool name, with `mcp_guard.server`) goes to
//! the upstream in `_meta`, and as the `traceparent` header to HTTP upstreams.
//!
//! Put it outermost: the span then covers everything the gateway does.
//!
//! ```
//! use mcp_guard_tower::telemetry::{Telemetry, TelemetryLayer};
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//!
//! let provider = SdkTracerProvider::builder().build(); // add an exporter in real use
//! let telemetry = Telemetry::new(&provider);
//! let stack = tower::ServiceBuilder::new()
//!     .layer(TelemetryLayer::new(telemetry))
//!     .service(mcp_guard_tower::Router::new());
//! # let _ = stack;
//! ```

use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use mcp_guard_core::{Outcome, Target};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use rmcp::model::{ClientRequest, RequestMetaObject, ServerResult};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::GuardError;
use crate::request::McpRequest;

/// The tracer the gateway's spans come from.
#[derive(Clone, Debug)]
pub struct Telemetry {
    tracer: SdkTracer,
}

impl Telemetry {
    /// Spans from `provider` (its sampler, processors and exporter decide what is
    /// recorded and where it goes).
    pub fn new(provider: &SdkTracerProvider) -> Self {
        Self {
            tracer: provider.tracer("mcp-guard"),
        }
    }
}

/// The trace a request belongs to, for inner services that start spans of their own.
#[derive(Clone, Debug)]
pub struct RequestTrace {
    cx: Context,
    tracer: SdkTracer,
}

struct MetaCarrier<'a>(&'a RequestMetaObject);

impl Extractor for MetaCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.0.get(key).and_then(serde_json::Value::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.0.keys().map(String::as_str).collect()
    }
}

struct MetaInjector<'a>(&'a mut RequestMetaObject);

impl Injector for MetaInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.0.insert(key.to_owned(), serde_json::Value::String(value));
    }
}

/// Puts `cx`'s span context into `meta` as `traceparent` (and `tracestate`), replacing
/// what was there.
fn inject(cx: &Context, meta: &mut RequestMetaObject) {
    meta.0.remove("traceparent");
    meta.0.remove("tracestate");
    TraceContextPropagator::new().inject_context(cx, &mut MetaInjector(meta));
}

fn method_name(req: &ClientRequest) -> &str {
    req.method()
}

/// The attributes that say what a request is.
fn what(method: &str, target: Option<&Target>, name: Option<&str>, out: &mut Vec<KeyValue>) {
    out.push(KeyValue::new("mcp.method.name", method.to_owned()));
    let Some(name) = name else { return };
    match method {
        "tools/call" => {
            out.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
            out.push(KeyValue::new("gen_ai.tool.name", name.to_owned()));
        }
        "prompts/get" => out.push(KeyValue::new("gen_ai.prompt.name", name.to_owned())),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            out.push(KeyValue::new("mcp.resource.uri", name.to_owned()));
        }
        _ => {}
    }
    if let Some(t) = target {
        out.push(KeyValue::new("mcp_guard.server", t.server.to_string()));
    }
}

fn error_type(result: &Result<ServerResult, GuardError>) -> Option<&'static str> {
    Some(match crate::audit::outcome_of(result) {
        Outcome::Ok => return None,
        Outcome::ToolError => "tool_error",
        Outcome::Denied => "denied",
        Outcome::Unauthenticated => "unauthenticated",
        Outcome::RateLimited => "rate_limited",
        Outcome::Timeout => "timeout",
        Outcome::UpstreamTerminated => "upstream_terminated",
        Outcome::UpstreamError => "upstream_error",
        Outcome::Cancelled => "cancelled",
        Outcome::AuditFailed => "audit_failed",
        _ => "gateway_error",
    })
}

/// Ends the span of `cx` with the request's outcome.
fn finish(cx: &Context, result: &Result<ServerResult, GuardError>) {
    let span = cx.span();
    if let Some(kind) = error_type(result) {
        span.set_attribute(KeyValue::new("error.type", kind));
        let message = match result {
            Err(e) => e.to_string(),
            Ok(_) => kind.to_owned(),
        };
        span.set_status(Status::error(message));
    }
    span.end();
}

impl RequestTrace {
    /// Starts the span of a call to `target`'s upstream (kind `CLIENT`) and writes its
    /// context into `meta`, which goes to the upstream with the request.
    pub fn upstream_call(&self, method: &str, target: &Target, meta: &mut RequestMetaObject) -> UpstreamSpan {
        let mut attributes = Vec::with_capacity(6);
        what(method, Some(target), Some(&target.name), &mut attributes);
        let span = self
            .tracer
            .span_builder(format!("{method} {}", target.name))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.cx);
        let cx = self.cx.with_span(span);
        inject(&cx, meta);
        UpstreamSpan { cx }
    }
}

/// The span of one upstream call; [`UpstreamSpan::finish`] ends it with the outcome
/// (dropped unfinished, it ends without one).
#[derive(Debug)]
pub struct UpstreamSpan {
    cx: Context,
}

impl UpstreamSpan {
    /// Ends the span with the call's outcome.
    pub fn finish(self, result: &Result<ServerResult, GuardError>) {
        finish(&self.cx, result);
    }
}

/// Starts a span for each request; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct TelemetryLayer {
    telemetry: Telemetry,
}

impl TelemetryLayer {
    /// Spans from `telemetry`'s tracer.
    pub fn new(telemetry: Telemetry) -> Self {
        Self { telemetry }
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = TelemetryService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TelemetryService {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

/// The service of [`TelemetryLayer`].
#[derive(Clone, Debug)]
pub struct TelemetryService<S> {
    inner: S,
    telemetry: Telemetry,
}

impl<S> Service<McpRequest> for TelemetryService<S>
where
    S: Service<McpRequest, Response = ServerResult, Error = GuardError> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ServerResult;
    type Error = GuardError;
    type Future = BoxFuture<'static, Result<ServerResult, GuardError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), GuardError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: McpRequest) -> Self::Future {
        let parent = TraceContextPropagator::new().extract(&MetaCarrier(&req.meta));
        let method = method_name(&req.request).to_owned();
        let name = req.requested_name.as_deref().map(str::to_owned);
        let mut attributes = Vec::with_capacity(12);
        what(&method, req.target.as_ref(), name.as_deref(), &mut attributes);
        let c = &req.context;
        attributes.push(KeyValue::new("mcp_guard.endpoint", c.endpoint.to_string()));
        attributes.push(KeyValue::new("mcp_guard.principal", c.principal.id().to_owned()));
        if let Some(s) = &c.session {
            attributes.push(KeyValue::new("mcp.session.id", s.0.to_string()));
        }
        if let Some(v) = &c.protocol_version {
            attributes.push(KeyValue::new("mcp.protocol.version", v.clone()));
        }
        if let Some(id) = &c.request_id {
            attributes.push(KeyValue::new("jsonrpc.request.id", id.clone()));
        }
        let span_name = match &name {
            Some(n) => format!("{method} {n}"),
            None => method.clone(),
        };
        let tracer = &self.telemetry.tracer;
        let span = tracer
            .span_builder(span_name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        let cx = parent.with_span(span);
        inject(&cx, &mut req.meta);
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            req.context.trace_id = Some(sc.trace_id().to_string());
        }
        req.trace = Some(RequestTrace {
            cx: cx.clone(),
            tracer: tracer.clone(),
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            finish(&cx, &result);
            result
        })
    }
}
