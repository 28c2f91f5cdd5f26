#![allow(
    deprecated,
    reason = "logging, sampling and resources/subscribe are deprecated in rmcp but still spoken by legacy clients the gateway serves"
)]

//! [`GuardHandler`]: rmcp's `ServerHandler` in front of a tower stack over [`McpRequest`].
//!
//! Not rmcp's `TowerHandler`: that one drops the request context (cancellation, the
//! client peer, `_meta`, HTTP parts), ignores notifications and cannot be served over
//! HTTP. This adapter keeps all of it and implements `ServerHandler`, so rmcp's own
//! protocol rules (version negotiation, 2026-07-28 metadata checks, cache hints) still
//! apply in front of the stack.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use mcp_guard_core::{CallContext, ClientInfo, Principal, SessionId};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, ClientRequest, CompleteRequest,
    CompleteRequestParams, CompleteResult, GetPromptRequest, GetPromptRequestParams, GetPromptResponse,
    Implementation, InitializeResult, ListPromptsRequest, ListPromptsResult, ListResourceTemplatesRequest,
    ListResourceTemplatesResult, ListResourcesRequest, ListResourcesResult, ListToolsRequest,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequest, ReadResourceRequestParams,
    ReadResourceResponse, ResultType, ServerResult, SubscriptionFilter, Tool,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer, SubscriptionContext};
use rmcp::{ErrorData, ServerHandler};
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

use crate::error::GuardError;
use crate::federation::EndpointRuntime;
use crate::request::{Downstream, McpRequest};

/// The type-erased guard stack a [`GuardHandler`] drives.
pub type GuardService = BoxCloneSyncService<McpRequest, ServerResult, GuardError>;

/// Serves one endpoint: rmcp's server side in front of a guard stack.
///
/// Cheap to clone (one `Arc`): rmcp builds one per session, and one per request for
/// stateless 2026-07-28 clients over HTTP.
#[derive(Clone)]
pub struct GuardHandler {
    inner: Arc<Inner>,
    session: Arc<SessionState>,
}

/// What a legacy session tells the gateway once and relies on after (its log level).
#[derive(Debug)]
struct SessionState {
    key: Arc<str>,
    log_level: std::sync::Mutex<Option<rmcp::model::LoggingLevel>>,
}

impl SessionState {
    fn new() -> Arc<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(Self {
            key: format!("session-{}", NEXT.fetch_add(1, Ordering::Relaxed)).into(),
            log_level: std::sync::Mutex::new(None),
        })
    }
}

struct Inner {
    endpoint: Arc<EndpointRuntime>,
    service: GuardService,
    principal: Option<Arc<Principal>>,
    /// The gateway session of every request (the stdio front door's one session).
    gateway_session: Option<SessionId>,
    /// That session's flow taint.
    taint: Option<Arc<mcp_guard_core::flow::Taint>>,
    page_size: usize,
}

impl std::fmt::Debug for GuardHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardHandler")
            .field("endpoint", &self.inner.endpoint.name())
            .field("page_size", &self.inner.page_size)
            .finish_non_exhaustive()
    }
}

/// Default number of items per list page.
pub const DEFAULT_PAGE_SIZE: usize = 200;

impl GuardHandler {
    /// A handler for `endpoint` driving `service`. Requests must carry an authenticated
    /// [`Principal`] in their HTTP request extensions (put there by the HTTP edge),
    /// unless [`GuardHandler::with_principal`] fixes one.
    pub fn new(endpoint: Arc<EndpointRuntime>, service: GuardService) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoint,
                service,
                principal: None,
                gateway_session: None,
                taint: None,
                page_size: DEFAULT_PAGE_SIZE,
            }),
            session: SessionState::new(),
        }
    }

    /// A handle for a new client session: shares everything but per-session state
    /// (the log level a legacy client set). Front doors call it once per session.
    #[must_use]
    pub fn new_session(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            session: SessionState::new(),
        }
    }

    /// Every request is made by `principal` (the stdio front door: the process that
    /// launched the gateway is the caller).
    #[must_use]
    pub fn with_principal(self, principal: Arc<Principal>) -> Self {
        self.map(|i| i.principal = Some(principal))
    }

    /// Every request belongs to the gateway session `id` (the stdio front door: one
    /// client, one session), which audit records name.
    #[must_use]
    pub fn with_session(self, id: SessionId) -> Self {
        self.map(|i| i.gateway_session = Some(id))
    }

    /// Every request's calls add to, and are judged by, the flow taint of `session`
    /// (the stdio front door: its one session). HTTP requests carry their gateway
    /// session's taint without this.
    #[must_use]
    pub fn with_session_taint(self, session: &mcp_guard_core::access::Session) -> Self {
        let taint = session.taint().clone();
        self.map(|i| i.taint = Some(taint))
    }

    /// Items per list page.
    #[must_use]
    pub fn page_size(self, n: usize) -> Self {
        self.map(|i| i.page_size = n.max(1))
    }

    fn map(self, f: impl FnOnce(&mut Inner)) -> Self {
        let session = self.session.clone();
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|arc| Inner {
            endpoint: arc.endpoint.clone(),
            service: arc.service.clone(),
            principal: arc.principal.clone(),
            gateway_session: arc.gateway_session.clone(),
            taint: arc.taint.clone(),
            page_size: arc.page_size,
        });
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
            session,
        }
    }

    fn principal(&self, ctx: &RequestContext<RoleServer>) -> Option<Arc<Principal>> {
        let from_http = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<Arc<Principal>>().cloned());
        from_http.or_else(|| self.inner.principal.clone())
    }

    async fn dispatch(
        &self,
        request: ClientRequest,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        let Some(principal) = self.principal(&ctx) else {
            return Err(GuardError::Unauthenticated.into());
        };
        let endpoint = &self.inner.endpoint;
        // While servers are still making their first start, give them a moment (bounded)
        // so a client that lists at once sees them; `server/discover` and `initialize`
        // never come here and are answered at once.
        endpoint.settled().await;
        let catalog = endpoint.snapshot();
        let parts = ctx.extensions.get::<http::request::Parts>();
        let session = parts.and_then(|p| {
            p.extensions.get::<SessionId>().cloned().or_else(|| {
                p.headers
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                    .map(|s| SessionId(s.into()))
            })
        });
        let mut context = CallContext::new(principal, endpoint.name());
        context.session = session.or_else(|| self.inner.gateway_session.clone());
        context.gateway_session = parts.and_then(|p| {
            p.extensions
                .get::<Arc<mcp_guard_core::access::Session>>()
                .cloned()
        });
        context.taint = context
            .gateway_session
            .as_ref()
            .map(|s| s.taint().clone())
            .or_else(|| self.inner.taint.clone());
        context.protocol_version = ctx.protocol_version().map(|v| v.as_str().to_owned());
        context.request_id = Some(ctx.id.to_string());
        context.client = ctx.client_info().map(|c| ClientInfo::new(c.name, c.version));
        let mut meta = ctx.meta.clone();
        // W3C trace context may come as HTTP headers rather than in `_meta`: the rest of
        // the gateway reads (and forwards) it from `_meta`.
        if meta.get_traceparent().is_none()
            && let Some(p) = parts
            && let Some(tp) = p.headers.get("traceparent").and_then(|v| v.to_str().ok())
        {
            meta.set_traceparent(tp.to_owned());
            if let Some(ts) = p.headers.get("tracestate").and_then(|v| v.to_str().ok()) {
                meta.set_tracestate(ts.to_owned());
            }
        }
        context.trace_id = meta
            .get_traceparent()
            .and_then(|t| t.split('-').nth(1))
            .map(str::to_owned);
        let (target, requested_name) = catalog.resolve_request(&request);
        if meta.log_level().is_none()
            && let Some(level) = *self
                .session
                .log_level
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            meta.set_log_level(level);
        }
        let accepts_requests = ctx
            .protocol_version()
            .is_none_or(|v| v.as_str() < rmcp::model::ProtocolVersion::V_2026_07_28.as_str());
        let request = McpRequest {
            request,
            meta,
            context,
            target,
            requested_name,
            catalog,
            cancel: ctx.ct.clone(),
            downstream: Some(Downstream {
                progress_token: ctx.meta.get_progress_token(),
                request_id: ctx.id.clone(),
                capabilities: ctx.client_capabilities().unwrap_or_default(),
                accepts_requests,
                peer: ctx.peer.clone(),
            }),
            notes: Arc::default(),
            #[cfg(feature = "telemetry")]
            trace: None,
        };
        self.inner
            .service
            .clone()
            .oneshot(request)
            .await
            .map_err(ErrorData::from)
    }

    fn page<T>(
        &self,
        items: Vec<T>,
        params: Option<&PaginatedRequestParams>,
    ) -> Result<(Vec<T>, Option<String>), ErrorData> {
        let offset = match params.and_then(|p| p.cursor.as_deref()) {
            None => 0,
            Some(c) => decode_cursor(c).ok_or_else(|| ErrorData::invalid_params("invalid cursor", None))?,
        };
        if offset > items.len() {
            return Err(ErrorData::invalid_params("invalid cursor", None));
        }
        let end = offset.saturating_add(self.inner.page_size).min(items.len());
        let next = (end < items.len()).then(|| encode_cursor(end));
        Ok((items.into_iter().skip(offset).take(end - offset).collect(), next))
    }
}

const CURSOR_PREFIX: &str = "mcpg1:";

fn encode_cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{offset}"))
}

fn decode_cursor(c: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok()?;
    std::str::from_utf8(&raw)
        .ok()?
        .strip_prefix(CURSOR_PREFIX)?
        .parse()
        .ok()
}

fn unexpected() -> ErrorData {
    GuardError::Internal("stack returned a result of the wrong kind".into()).into()
}

impl ServerHandler for GuardHandler {
    fn get_info(&self) -> InitializeResult {
        let snap = self.inner.endpoint.snapshot();
        let mut info = InitializeResult::new(snap.capabilities().clone())
            .with_server_info(Implementation::new("mcp-guard", env!("CARGO_PKG_VERSION")));
        if let Some(d) = self.inner.endpoint.description() {
            info = info.with_instructions(d);
        }
        info
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.inner
            .endpoint
            .snapshot()
            .tools()
            .iter()
            .find(|t| t.name == name)
            .cloned()
    }

    async fn list_tools(
        &self,
        params: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        match self
            .dispatch(ClientRequest::ListToolsRequest(ListToolsRequest::default()), ctx)
            .await?
        {
            ServerResult::ListToolsResult(r) => {
                let (items, next) = self.page(r.tools, params.as_ref())?;
                let mut out = ListToolsResult::with_all_items(items);
                out.next_cursor = next;
                Ok(out)
            }
            _ => Err(unexpected()),
        }
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        match self
            .dispatch(ClientRequest::CallToolRequest(CallToolRequest::new(params)), ctx)
            .await?
        {
            ServerResult::CallToolResult(mut r) => {
                // A legacy upstream's result has no resultType, which 2026-07-28 clients
                // require (rmcp removes it again for legacy clients).
                r.result_type.get_or_insert(ResultType::COMPLETE);
                Ok(CallToolResponse::Complete(r))
            }
            ServerResult::InputRequiredResult(r) => Ok(CallToolResponse::InputRequired(r)),
            ServerResult::CreateTaskResult(r) => Ok(CallToolResponse::Task(r)),
            _ => Err(unexpected()),
        }
    }

    async fn list_prompts(
        &self,
        params: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        match self
            .dispatch(
                ClientRequest::ListPromptsRequest(ListPromptsRequest::default()),
                ctx,
            )
            .await?
        {
            ServerResult::ListPromptsResult(r) => {
                let (items, next) = self.page(r.prompts, params.as_ref())?;
                let mut out = ListPromptsResult::with_all_items(items);
                out.next_cursor = next;
                Ok(out)
            }
            _ => Err(unexpected()),
        }
    }

    async fn get_prompt(
        &self,
        params: GetPromptRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        match self
            .dispatch(
                ClientRequest::GetPromptRequest(GetPromptRequest::new(params)),
                ctx,
            )
            .await?
        {
            ServerResult::GetPromptResult(mut r) => {
                r.result_type.get_or_insert(ResultType::COMPLETE);
                Ok(GetPromptResponse::Complete(r))
            }
            ServerResult::InputRequiredResult(r) => Ok(GetPromptResponse::InputRequired(r)),
            _ => Err(unexpected()),
        }
    }

    async fn list_resources(
        &self,
        params: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        match self
            .dispatch(
                ClientRequest::ListResourcesRequest(ListResourcesRequest::default()),
                ctx,
            )
            .await?
        {
            ServerResult::ListResourcesResult(r) => {
                let (items, next) = self.page(r.resources, params.as_ref())?;
                let mut out = ListResourcesResult::with_all_items(items);
                out.next_cursor = next;
                Ok(out)
            }
            _ => Err(unexpected()),
        }
    }

    async fn list_resource_templates(
        &self,
        params: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let req = ClientRequest::ListResourceTemplatesRequest(ListResourceTemplatesRequest::default());
        match self.dispatch(req, ctx).await? {
            ServerResult::ListResourceTemplatesResult(r) => {
                let (items, next) = self.page(r.resource_templates, params.as_ref())?;
                let mut out = ListResourceTemplatesResult::with_all_items(items);
                out.next_cursor = next;
                Ok(out)
            }
            _ => Err(unexpected()),
        }
    }

    async fn read_resource(
        &self,
        params: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        match self
            .dispatch(
                ClientRequest::ReadResourceRequest(ReadResourceRequest::new(params)),
                ctx,
            )
            .await?
        {
            ServerResult::ReadResourceResult(mut r) => {
                r.result_type.get_or_insert(ResultType::COMPLETE);
                Ok(ReadResourceResponse::Complete(r))
            }
            ServerResult::InputRequiredResult(r) => Ok(ReadResourceResponse::InputRequired(r)),
            _ => Err(unexpected()),
        }
    }

    async fn complete(
        &self,
        params: CompleteRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        match self
            .dispatch(ClientRequest::CompleteRequest(CompleteRequest::new(params)), ctx)
            .await?
        {
            ServerResult::CompleteResult(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    #[allow(
        deprecated,
        reason = "logging/setLevel is part of the revisions legacy clients speak"
    )]
    async fn set_level(
        &self,
        params: rmcp::model::SetLevelRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self
            .session
            .log_level
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(params.level);
        Ok(())
    }

    #[allow(deprecated, reason = "resources/subscribe is how legacy clients subscribe")]
    async fn subscribe(
        &self,
        params: rmcp::model::SubscribeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let target = self.inner.endpoint.snapshot().resolve_resource(&params.uri);
        let peer = ctx.peer.clone();
        self.dispatch(
            ClientRequest::SubscribeRequest(rmcp::model::SubscribeRequest::new(params)),
            ctx,
        )
        .await?;
        if let Some(t) = target {
            self.inner
                .endpoint
                .subscribe(self.session.key.clone(), t.server, t.name.to_string(), peer);
        }
        Ok(())
    }

    #[allow(
        deprecated,
        reason = "resources/unsubscribe is how legacy clients unsubscribe"
    )]
    async fn unsubscribe(
        &self,
        params: rmcp::model::UnsubscribeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let target = self.inner.endpoint.snapshot().resolve_resource(&params.uri);
        self.dispatch(
            ClientRequest::UnsubscribeRequest(rmcp::model::UnsubscribeRequest::new(params)),
            ctx,
        )
        .await?;
        if let Some(t) = target {
            self.inner
                .endpoint
                .unsubscribe(&self.session.key, &t.server, &t.name);
        }
        Ok(())
    }

    async fn on_initialized(&self, ctx: NotificationContext<RoleServer>) {
        self.inner.endpoint.register_peer(ctx.peer);
    }

    fn accepted_subscription_filter(&self, _requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(
            SubscriptionFilter::builder()
                .tools_list_changed()
                .prompts_list_changed()
                .resources_list_changed()
                .build(),
        )
    }

    async fn listen(&self, ctx: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.inner.endpoint.changes();
        let accepted = ctx.accepted().clone();
        loop {
            tokio::select! {
                () = ctx.cancelled() => return Ok(()),
                change = changes.recv() => {
                    let change = match change {
                        Ok(c) => c,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => crate::federation::ListChanged { tools: true, prompts: true, resources: true },
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                    };
                    let sink = ctx.sink();
                    let sent = async {
                        if change.tools && accepted.tools_list_changed == Some(true) {
                            sink.notify_tool_list_changed().await?;
                        }
                        if change.prompts && accepted.prompts_list_changed == Some(true) {
                            sink.notify_prompt_list_changed().await?;
                        }
                        if change.resources && accepted.resources_list_changed == Some(true) {
                            sink.notify_resource_list_changed().await?;
                        }
                        Ok::<(), rmcp::service::SubscriptionSendError>(())
                    }.await;
                    if sent.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [rmcp::model::ProtocolVersion]> {
        Cow::Borrowed(rmcp::model::ProtocolVersion::KNOWN_VERSIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(400)), Some(400));
        assert_eq!(decode_cursor("not base64!"), None);
        assert_eq!(
            decode_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("x:1")),
            None
        );
    }
}
