//! [`RedactRequestsLayer`] and [`RedactResponsesLayer`]: personal data and secrets
//! removed from what goes to an upstream and from what comes back to a client.
//!
//! Each endpoint has its own [`Redactor`] (which kinds, which replacement style), kept
//! in an [`EndpointRedactors`] map; an endpoint with none is left alone by
//! `RedactRequests` and gets the map's default in `RedactResponses` (a redactor for
//! secrets only is the sensible default: credentials the gateway holds never reach a
//! client, even when an upstream echoes them).
//!
//! The walk is structural (string leaves and keys of arguments, `content[]` text,
//! `structuredContent`, embedded resources, prompt messages, resource contents, error
//! messages and data); patterns never run over serialised JSON text.
//!
//! # Where they go
//! Inside [`EnforcePolicyLayer`](crate::EnforcePolicyLayer) (refused calls are never
//! touched) and outside credential injection and the [`Router`](crate::Router), so a
//! response is clean before any outer layer (audit) or the client sees it.
//!
//! ```
//! use std::sync::Arc;
//! use mcp_guard_core::redact::PatternRedactor;
//! use mcp_guard_tower::redact::{EndpointRedactors, RedactRequestsLayer, RedactResponsesLayer};
//! use mcp_guard_tower::Router;
//!
//! let pii: Arc<dyn mcp_guard_core::Redactor> = Arc::new(PatternRedactor::builder().build());
//! let redactors = EndpointRedactors::new(None).with("support", pii.clone());
//! let stack = tower::ServiceBuilder::new()
//!     .layer(RedactRequestsLayer::new(redactors.clone()))
//!     .layer(RedactResponsesLayer::new(redactors.with_default(pii)))
//!     .service(Router::new());
//! # let _ = stack;
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use mcp_guard_core::{Redactor, UpstreamError};
use rmcp::model::{ClientRequest, ServerResult};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::GuardError;
use crate::request::McpRequest;

/// A redactor per endpoint, with an optional default.
#[derive(Clone, Default)]
pub struct EndpointRedactors {
    by_endpoint: Arc<HashMap<String, Arc<dyn Redactor>>>,
    default: Option<Arc<dyn Redactor>>,
}

impl std::fmt::Debug for EndpointRedactors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRedactors")
            .field("endpoints", &self.by_endpoint.keys().collect::<Vec<_>>())
            .field("default", &self.default.is_some())
            .finish()
    }
}

impl EndpointRedactors {
    /// A map with `default` for endpoints not named.
    pub fn new(default: Option<Arc<dyn Redactor>>) -> Self {
        Self {
            by_endpoint: Arc::default(),
            default,
        }
    }

    /// Sets the redactor of `endpoint`.
    #[must_use]
    pub fn with(mut self, endpoint: impl Into<String>, redactor: Arc<dyn Redactor>) -> Self {
        Arc::make_mut(&mut self.by_endpoint).insert(endpoint.into(), redactor);
        self
    }

    /// Sets the default.
    #[must_use]
    pub fn with_default(mut self, redactor: Arc<dyn Redactor>) -> Self {
        self.default = Some(redactor);
        self
    }

    /// The redactor for `endpoint`.
    pub fn get(&self, endpoint: &str) -> Option<&Arc<dyn Redactor>> {
        self.by_endpoint.get(endpoint).or(self.default.as_ref())
    }
}

/// Redacts a typed value through its JSON form (string leaves and keys only).
fn redact_typed<T: Serialize + DeserializeOwned>(r: &dyn Redactor, value: &mut T) {
    let Ok(mut json) = serde_json::to_value(&*value) else {
        return;
    };
    let before = json.clone();
    r.redact_json(&mut json);
    if json != before
        && let Ok(clean) = serde_json::from_value(json)
    {
        *value = clean;
    }
}

fn redact_object(r: &dyn Redactor, args: &mut Option<serde_json::Map<String, Value>>) {
    if let Some(map) = args.take() {
        let mut v = Value::Object(map);
        r.redact_json(&mut v);
        if let Value::Object(m) = v {
            *args = Some(m);
        }
    }
}

/// Cleans the arguments of calls before they leave for an upstream.
#[derive(Debug, Clone)]
pub struct RedactRequestsLayer {
    redactors: EndpointRedactors,
}

impl RedactRequestsLayer {
    /// Redacts requests of the endpoints in `redactors`.
    pub fn new(redactors: EndpointRedactors) -> Self {
        Self { redactors }
    }
}

impl<S> Layer<S> for RedactRequestsLayer {
    type Service = RedactRequests<S>;
    fn layer(&self, inner: S) -> RedactRequests<S> {
        RedactRequests {
            inner,
            redactors: self.redactors.clone(),
        }
    }
}

/// The service made by [`RedactRequestsLayer`].
#[derive(Debug, Clone)]
pub struct RedactRequests<S> {
    inner: S,
    redactors: EndpointRedactors,
}

crate::macros::inner_service_accessors!(RedactRequests<S>);

impl<S> Service<McpRequest> for RedactRequests<S>
where
    S: Service<McpRequest, Response = ServerResult> + Clone + Send + 'static,
    S::Error: Into<GuardError>,
    S::Future: Send,
{
    type Response = ServerResult;
    type Error = GuardError;
    type Future = BoxFuture<'static, Result<ServerResult, GuardError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GuardError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: McpRequest) -> Self::Future {
        if let Some(r) = self.redactors.get(&req.context.endpoint) {
            match &mut req.request {
                ClientRequest::CallToolRequest(c) => redact_object(r.as_ref(), &mut c.params.arguments),
                ClientRequest::GetPromptRequest(p) => {
                    if let Some(args) = &mut p.params.arguments {
                        let mut o = Some(std::mem::take(args));
                        redact_object(r.as_ref(), &mut o);
                        *args = o.unwrap_or_default();
                    }
                }
                ClientRequest::CompleteRequest(c) => {
                    if let std::borrow::Cow::Owned(v) = r.redact_str(&c.params.argument.value) {
                        c.params.argument.value = v;
                    }
                }
                _ => {}
            }
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// Cleans results and errors before any outer layer or the client sees them.
#[derive(Debug, Clone)]
pub struct RedactResponsesLayer {
    redactors: EndpointRedactors,
}

impl RedactResponsesLayer {
    /// Redacts responses of the endpoints in `redactors` (and the default's).
    pub fn new(redactors: EndpointRedactors) -> Self {
        Self { redactors }
    }
}

impl<S> Layer<S> for RedactResponsesLayer {
    type Service = RedactResponses<S>;
    fn layer(&self, inner: S) -> RedactResponses<S> {
        RedactResponses {
            inner,
            redactors: self.redactors.clone(),
        }
    }
}

/// The service made by [`RedactResponsesLayer`].
#[derive(Debug, Clone)]
pub struct RedactResponses<S> {
    inner: S,
    redactors: EndpointRedactors,
}

crate::macros::inner_service_accessors!(RedactResponses<S>);

fn redact_result(r: &dyn Redactor, result: &mut ServerResult) {
    match result {
        ServerResult::CallToolResult(x) => redact_typed(r, x),
        ServerResult::GetPromptResult(x) => redact_typed(r, x),
        ServerResult::ReadResourceResult(x) => redact_typed(r, x),
        ServerResult::CompleteResult(x) => redact_typed(r, x),
        ServerResult::InputRequiredResult(x) => redact_typed(r, x),
        _ => {}
    }
}

impl<S> Service<McpRequest> for RedactResponses<S>
where
    S: Service<McpRequest, Response = ServerResult> + Clone + Send + 'static,
    S::Error: Into<GuardError>,
    S::Future: Send,
{
    type Response = ServerResult;
    type Error = GuardError;
    type Future = BoxFuture<'static, Result<ServerResult, GuardError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GuardError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: McpRequest) -> Self::Future {
        let redactor = self.redactors.get(&req.context.endpoint).cloned();
        let is_call = req.is_call();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            let Some(r) = redactor.filter(|_| is_call) else {
                return result;
            };
            match result {
                Ok(mut ok) => {
                    redact_result(r.as_ref(), &mut ok);
                    Ok(ok)
                }
                Err(GuardError::Upstream(UpstreamError::Rpc(mut e))) => {
                    if let std::borrow::Cow::Owned(m) = r.redact_str(&e.message) {
                        e.message = m.into();
                    }
                    if let Some(d) = &mut e.data {
                        r.redact_json(d);
                    }
                    Err(GuardError::Upstream(UpstreamError::Rpc(e)))
                }
                Err(other) => Err(other),
            }
        })
    }
}
