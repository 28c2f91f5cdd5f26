#![allow(
    deprecated,
    reason = "sampling and logging are deprecated upstream but still spoken by clients of the revisions the gateway serves"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use rmcp::ClientHandler;
use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientResult, CreateMessageRequest, CreateMessageRequestParams,
    CreateMessageResult, ElicitRequest, ElicitRequestParams, ElicitResult, ErrorCode, Implementation,
    ProgressNotificationParam, ProgressToken, ProtocolVersion, ResourceUpdatedNotificationParam,
    ServerRequest,
};
use rmcp::service::{NotificationContext, OriginatingRequestId, RequestContext, RoleClient};
use rmcp::{ErrorData, model::GetExtensions as _};

use super::rmcp_upstream::Shared;
use super::{ClientLink, Progress, ProgressSink, UpstreamEvent};

/// What the gateway knows about one request in flight to an upstream.
#[derive(Clone, Default)]
pub(crate) struct InFlight {
    pub(crate) progress: Option<ProgressSink>,
    pub(crate) client: Option<ClientLink>,
    /// When the answer came; the entry lingers briefly for notifications the server
    /// wrote just before its answer but that are handled just after it.
    pub(crate) done: Option<std::time::Instant>,
}

/// How long a finished request still receives its late notifications.
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_millis(500);

pub(crate) type InFlightMap = Arc<Mutex<HashMap<ProgressToken, InFlight>>>;

/// The gateway's rmcp client handler for one upstream connection.
///
/// It routes progress to the downstream request that caused it (by progress token),
/// and turns list-changed notifications into a catalogue re-read. Log messages,
/// sampling and elicitation carry no request id on the wire, so they are forwarded
/// only when exactly one request with a client is in flight on the connection (the
/// client that can have caused them); otherwise log messages are dropped and requests
/// refused. It declares sampling and elicitation support, bridged to the client.
#[derive(Clone)]
pub struct UpstreamClient {
    pub(super) shared: Weak<Shared>,
    pub(super) inflight: InFlightMap,
    /// With the `initialize` lifecycle, the version to offer (rmcp's default offers
    /// 2026-07-28, which has no `initialize`); `None` keeps rmcp's default.
    pub(super) initialize_version: Option<ProtocolVersion>,
    /// Where a transport records why it ended a connection itself.
    pub(super) fault: super::child::FaultSlot,
    /// Largest message accepted from the server, in bytes.
    pub(super) max_response_bytes: usize,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// The lifecycle a connector should use: `server/discover` with fallback to
    /// `initialize` (the default), or `initialize` only once the server has shown it
    /// shares no 2026-07-28 version with the gateway.
    pub fn lifecycle(&self) -> rmcp::service::ClientLifecycleMode {
        if self.initialize_version.is_some() {
            rmcp::service::ClientLifecycleMode::Initialize
        } else {
            super::connect::auto_lifecycle()
        }
    }

    /// The largest message a connector should accept from the server, in bytes
    /// (`UpstreamOptions::max_response_bytes`).
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    fn catalog_changed(&self) {
        if let Some(shared) = self.shared.upgrade() {
            tokio::spawn(async move { shared.refresh_catalog(true).await });
        }
    }

    /// The client of the only request in flight, if exactly one has a client; with
    /// none in flight, the client of the request that finished last (within
    /// [`LINGER`]).
    fn sole_client(&self) -> Option<ClientLink> {
        let map = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        let mut active = map
            .values()
            .filter(|f| f.done.is_none())
            .filter_map(|f| f.client.clone());
        if let Some(first) = active.next() {
            return active.next().is_none().then_some(first);
        }
        map.values()
            .filter(|f| f.done.is_some_and(|d| d.elapsed() < LINGER))
            .max_by_key(|f| f.done)
            .and_then(|f| f.client.clone())
    }

    async fn ask_client(
        &self,
        request: ServerRequest,
        wants: impl Fn(&ClientCapabilities) -> bool,
    ) -> Result<ClientResult, ErrorData> {
        let link = self
            .sole_client()
            .filter(|l| l.accepts_requests && wants(&l.capabilities))
            .ok_or_else(|| {
                ErrorData::new(
                    ErrorCode::METHOD_NOT_FOUND,
                    "no client able to answer this request",
                    None,
                )
            })?;
        let mut request = request;
        request
            .extensions_mut()
            .insert(OriginatingRequestId(link.request_id.clone()));
        // Sent from a fresh task so rmcp routes it by the extension above, onto the
        // client's request stream.
        let peer = link.peer.clone();
        tokio::spawn(async move { peer.send_request(request).await })
            .await
            .map_err(|_| ErrorData::internal_error("client request task failed", None))?
            .map_err(|e| match e {
                rmcp::ServiceError::McpError(e) => e,
                other => ErrorData::internal_error(format!("client unreachable: {other}"), None),
            })
    }
}

impl ClientHandler for UpstreamClient {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        caps.sampling = Some(rmcp::model::SamplingCapability::default());
        caps.elicitation = Some(rmcp::model::ElicitationCapability::default());
        let mut config = ClientConfig::new(caps, Implementation::new("mcp-guard", env!("CARGO_PKG_VERSION")));
        if let Some(v) = &self.initialize_version {
            config = config.with_protocol_version(v.clone());
        }
        config
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        let sink = self
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&params.progress_token)
            .and_then(|f| f.progress.clone());
        if let Some(sink) = sink {
            sink.send(Progress {
                progress: params.progress,
                total: params.total,
                message: params.message,
            });
        }
    }

    #[allow(
        deprecated,
        reason = "log messages are still part of the revisions clients speak"
    )]
    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        if let Some(link) = self.sole_client().filter(|l| l.accepts_requests) {
            let _ = link.peer.notify_logging_message(params).await;
        }
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let request = ServerRequest::CreateMessageRequest(CreateMessageRequest::new(params));
        match self.ask_client(request, |c| c.sampling.is_some()).await? {
            ClientResult::CreateMessageResult(r) => Ok(*r),
            _ => Err(ErrorData::internal_error(
                "client answered sampling with another result",
                None,
            )),
        }
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
        match self.ask_client(request, |c| c.elicitation.is_some()).await? {
            ClientResult::ElicitResult(r) => Ok(r),
            _ => Err(ErrorData::internal_error(
                "client answered elicitation with another result",
                None,
            )),
        }
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.catalog_changed();
    }

    async fn on_prompt_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.catalog_changed();
    }

    async fn on_resource_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.catalog_changed();
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        if let Some(shared) = self.shared.upgrade() {
            let _ = shared.events.send(UpstreamEvent::ResourceUpdated(params.uri));
        }
    }
}
