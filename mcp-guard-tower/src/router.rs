//! [`Router`]: the innermost service, which sends each request to its server.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use mcp_guard_core::upstream::{Forward, Progress, ProgressSink};
use mcp_guard_core::{Target, TargetKind, Upstream};
use rmcp::model::{
    CallToolRequest, ClientRequest, CompleteRequest, ContentBlock, GetPromptRequest, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, ProgressNotificationParam,
    ReadResourceRequest, Reference, RequestMetaObject, ResourceContents, ServerResult,
};
use tower_service::Service;

use crate::error::GuardError;
use crate::request::{Downstream, McpRequest};

/// Dispatches each [`McpRequest`] to the upstream its name resolved to, with the
/// upstream's own names; answers lists from the endpoint's catalogue.
///
/// The innermost service of a guard stack. Progress is forwarded to the client that
/// asked for it, and a client's cancellation reaches the upstream.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Router {
    forward_meta: Arc<[String]>,
}

impl Router {
    /// A router that forwards only trace context (`traceparent`, `tracestate`, `baggage`)
    /// from the client's `_meta`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also forwards these `_meta` keys (never `io.modelcontextprotocol/*` or
    /// `progressToken`, which the gateway sets per upstream).
    #[must_use]
    pub fn forward_meta_keys<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keys: I) -> Self {
        self.forward_meta = keys
            .into_iter()
            .map(Into::into)
            .filter(|k: &String| !k.starts_with("io.modelcontextprotocol/") && k != "progressToken")
            .collect();
        self
    }
}

const TRACE_KEYS: [&str; 3] = ["traceparent", "tracestate", "baggage"];

fn sanitise_meta(meta: &RequestMetaObject, extra: &[String]) -> Option<RequestMetaObject> {
    let mut out = RequestMetaObject::new();
    for (k, v) in meta.0.iter() {
        if TRACE_KEYS.contains(&k.as_str()) || extra.iter().any(|e| e == k) {
            out.0.insert(k.clone(), v.clone());
        }
    }
    (!out.0.is_empty()).then_some(out)
}

/// Forwards upstream progress to the client, in order, on one task per request.
fn progress_sink(downstream: Option<&Downstream>) -> Option<ProgressSink> {
    let d = downstream?;
    let token = d.progress_token.clone()?;
    let peer = d.peer.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let mut note = ProgressNotificationParam::new(token.clone(), p.progress);
            note.total = p.total;
            note.message = p.message;
            if peer.notify_progress(note).await.is_err() {
                return;
            }
        }
    });
    Some(ProgressSink::new(move |p| {
        let _ = tx.send(p);
    }))
}

fn target_of(req: &McpRequest, kind: TargetKind) -> Result<Target, GuardError> {
    req.target.clone().ok_or_else(|| GuardError::Unknown {
        kind,
        name: req.requested_name.as_deref().unwrap_or_default().to_owned(),
    })
}

impl Service<McpRequest> for Router {
    type Response = ServerResult;
    type Error = GuardError;
    type Future = BoxFuture<'static, Result<ServerResult, GuardError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GuardError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: McpRequest) -> Self::Future {
        let extra = self.forward_meta.clone();
        Box::pin(async move { route(req, &extra).await })
    }
}

async fn route(req: McpRequest, extra_meta: &[String]) -> Result<ServerResult, GuardError> {
    let snap = req.catalog.clone();
    let listed = |r: ServerResult| Ok(r);
    match &req.request {
        ClientRequest::ListToolsRequest(_) => {
            return listed(ServerResult::ListToolsResult(ListToolsResult::with_all_items(
                snap.tools().to_vec(),
            )));
        }
        ClientRequest::ListPromptsRequest(_) => {
            return listed(ServerResult::ListPromptsResult(
                ListPromptsResult::with_all_items(snap.prompts().to_vec()),
            ));
        }
        ClientRequest::ListResourcesRequest(_) => {
            return listed(ServerResult::ListResourcesResult(
                ListResourcesResult::with_all_items(snap.resources().to_vec()),
            ));
        }
        ClientRequest::ListResourceTemplatesRequest(_) => {
            return listed(ServerResult::ListResourceTemplatesResult(
                ListResourceTemplatesResult::with_all_items(snap.resource_templates().to_vec()),
            ));
        }
        ClientRequest::SetLevelRequest(_) | ClientRequest::PingRequest(_) => {
            return Ok(ServerResult::empty(()));
        }
        _ => {}
    }
    let kind = req
        .target_kind()
        .ok_or_else(|| GuardError::MethodNotFound(req.request.method().to_owned()))?;
    let target = target_of(&req, kind)?;
    let upstream: Arc<dyn Upstream> =
        snap.upstream(&target.server)
            .cloned()
            .ok_or_else(|| GuardError::Unknown {
                kind,
                name: req.requested_name.as_deref().unwrap_or_default().to_owned(),
            })?;
    let forward = {
        let mut f = Forward::default();
        f.meta = sanitise_meta(&req.meta, extra_meta);
        f.progress = progress_sink(req.downstream.as_ref());
        f.cancel = req.cancel.clone();
        f
    };
    let upstream_request = match req.request {
        ClientRequest::CallToolRequest(r) => {
            let mut params = r.params;
            params.name = target.name.to_string().into();
            ClientRequest::CallToolRequest(CallToolRequest::new(params))
        }
        ClientRequest::GetPromptRequest(r) => {
            let mut params = r.params;
            params.name = target.name.to_string();
            ClientRequest::GetPromptRequest(GetPromptRequest::new(params))
        }
        ClientRequest::ReadResourceRequest(r) => {
            let mut params = r.params;
            params.uri = target.name.to_string();
            ClientRequest::ReadResourceRequest(ReadResourceRequest::new(params))
        }
        ClientRequest::CompleteRequest(r) => {
            let mut params = r.params;
            match &mut params.r#ref {
                Reference::Prompt(p) => p.name = target.name.to_string(),
                Reference::Resource(res) => res.uri = target.name.to_string(),
                _ => return Err(GuardError::Invalid("unsupported completion reference".into())),
            }
            ClientRequest::CompleteRequest(CompleteRequest::new(params))
        }
        other => return Err(GuardError::MethodNotFound(other.method().to_owned())),
    };
    let mut result = upstream.request(upstream_request, forward).await?;
    expose_uris(&mut result, &target.server, &snap);
    Ok(result)
}

/// Rewrites upstream resource URIs in a result to their exposed `server+uri` form, so a
/// client can read them back through the gateway.
fn expose_uris(result: &mut ServerResult, server: &str, snap: &crate::federation::Snapshot) {
    let fix_contents = |c: &mut ResourceContents| match c {
        ResourceContents::TextResourceContents { uri, .. }
        | ResourceContents::BlobResourceContents { uri, .. } => {
            *uri = snap.expose_resource_uri(server, uri);
        }
        _ => {}
    };
    let fix_block = |b: &mut ContentBlock| match b {
        ContentBlock::Resource(r) => fix_contents(&mut r.resource),
        ContentBlock::ResourceLink(r) => r.uri = snap.expose_resource_uri(server, &r.uri),
        _ => {}
    };
    match result {
        ServerResult::CallToolResult(r) => r.content.iter_mut().for_each(fix_block),
        ServerResult::GetPromptResult(r) => r.messages.iter_mut().for_each(|m| fix_block(&mut m.content)),
        ServerResult::ReadResourceResult(r) => r.contents.iter_mut().for_each(fix_contents),
        _ => {}
    }
}
