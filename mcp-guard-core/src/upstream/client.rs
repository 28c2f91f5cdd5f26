#![allow(
    deprecated,
    reason = "sampling and logging are deprecated upstream but still spoken by clients of the revisions the gateway serves"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use rmcp::ClientHandler;
use rmcp::model::{
    ClientCapabilities, ClientConfig, CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequest, ElicitRequestParams, ElicitResult, ErrorCode, Implementation, InputRequest,
    ProgressNotificationParam, ProgressToken, ProtocolVersion, ResourceUpdatedNotificationParam,
    ServerRequest,
};
use rmcp::service::{
    ClientInitializeError, ClientLifecycleMode, NotificationContext, OriginatingRequestId, RequestContext,
    RoleClient, serve_client_with_lifecycle,
};
use rmcp::{ErrorData, model::GetExtensions as _};

use super::probe::Era;
use super::rmcp_upstream::Shared;
use super::{ClientLink, Progress, ProgressSink, UpstreamEvent, UpstreamProtocol};

/// What the gateway knows about one request in flight to an upstream.
#[derive(Clone, Default)]
pub(crate) struct InFlight {
    pub(crate) progress: Option<ProgressSink>,
    pub(crate) client: Option<ClientLink>,
    /// When the answer came; the entry lingers briefly for notifications the server
    /// wrote just before its answer but that are handled just after it.
    pub(crate) done: Option<std::time::Instant>,
    /// A question the server asked for this request waits for its client's answer:
    /// the server is blocked on it, so what it sends meanwhile is for another request.
    pub(crate) asking: bool,
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
    /// Which protocol era to speak to the server.
    pub(super) protocol: UpstreamProtocol,
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
    /// Completes the MCP handshake over `transport` in the era this upstream is
    /// configured for ([`UpstreamProtocol`]) and serves this client on the connection.
    ///
    /// With [`UpstreamProtocol::Auto`] the gateway first asks `server/discover` itself and
    /// waits for the answer as long as the caller lets it (the server's start timeout),
    /// not rmcp's fixed 10 s: a server still starting (a package being downloaded)
    /// answers late, and a late `-32601` must lead to `initialize`, never to an answer
    /// that arrives on the wrong request. A server that offers 2026-07-28 is then
    /// served on it; any other answer means `initialize`, on the same connection.
    ///
    /// # Errors
    /// rmcp's handshake errors; [`ClientInitializeError::ConnectionClosed`] when the
    /// server closes the connection before it answers the probe.
    ///
    /// # Cancel safety
    /// Dropping the future drops the transport (a child process is killed).
    pub async fn serve<T>(
        mut self,
        transport: T,
    ) -> Result<rmcp::service::RunningService<RoleClient, Self>, ClientInitializeError>
    where
        T: rmcp::transport::Transport<RoleClient> + 'static,
    {
        let mut transport = transport;
        let era = match self.protocol {
            UpstreamProtocol::Legacy => Era::Legacy,
            UpstreamProtocol::Modern => Era::Modern,
            UpstreamProtocol::Auto => super::probe::discover(&self.get_info(), &mut transport).await?,
        };
        let lifecycle = match era {
            Era::Legacy => {
                self.initialize_version = Some(ProtocolVersion::LATEST_WITH_INITIALIZE);
                ClientLifecycleMode::Initialize
            }
            Era::Modern => ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        };
        let modern_only = self.protocol == UpstreamProtocol::Modern;
        match serve_client_with_lifecycle(self, transport, lifecycle).await {
            // With `protocol = "2026-07-28"`, a server that answers `server/discover` with
            // an error (-32601 from a legacy server) offers no version the gateway may use.
            Err(ClientInitializeError::JsonRpcError(e))
                if modern_only && e.code == ErrorCode::METHOD_NOT_FOUND =>
            {
                Err(ClientInitializeError::NoCompatibleProtocolVersion {
                    client_supported: vec![ProtocolVersion::V_2026_07_28],
                    server_supported: Vec::new(),
                })
            }
            other => other,
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

    /// The client of the only request in flight, if exactly one has a client (not
    /// counting requests whose question waits for an answer); with none in flight, the
    /// client of the request that finished last (within [`LINGER`]). With the request's
    /// progress token.
    fn sole_client(&self) -> Option<(ProgressToken, ClientLink)> {
        let map = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        let mut active = map
            .iter()
            .filter(|(_, f)| f.done.is_none() && !f.asking)
            .filter_map(|(t, f)| Some((t.clone(), f.client.clone()?)));
        if let Some(first) = active.next() {
            return active.next().is_none().then_some(first);
        }
        map.iter()
            .filter(|(_, f)| f.done.is_some_and(|d| d.elapsed() < LINGER))
            .max_by_key(|(_, f)| f.done)
            .and_then(|(t, f)| Some((t.clone(), f.client.clone()?)))
    }

    /// Marks the request of `token` as waiting for its client's answer until the guard
    /// is dropped.
    fn asking(&self, token: &ProgressToken) -> Asking {
        set_asking(&self.inflight, token, true);
        Asking {
            map: self.inflight.clone(),
            token: token.clone(),
        }
    }

    /// Puts the upstream's `request` to the client that caused it: as a request to a
    /// client that accepts them, or as a [`Question`](super::Question) to whoever drives
    /// a 2026-07-28 client's request (asked there as an input-required result).
    async fn ask_client<T: serde::de::DeserializeOwned>(
        &self,
        request: ServerRequest,
        wants: impl Fn(&ClientCapabilities) -> bool,
    ) -> Result<T, ErrorData> {
        let nobody = || {
            ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                "no client able to answer this request",
                None,
            )
        };
        let (token, link) = self
            .sole_client()
            .filter(|(_, l)| wants(&l.capabilities))
            .ok_or_else(nobody)?;
        let _asking = self.asking(&token);
        let answer = if link.accepts_requests {
            let mut request = request;
            request
                .extensions_mut()
                .insert(OriginatingRequestId(link.request_id.clone()));
            // Sent from a fresh task so rmcp routes it by the extension above, onto the
            // client's request stream.
            let peer = link.peer.clone();
            let result = tokio::spawn(async move { peer.send_request(request).await })
                .await
                .map_err(|_| ErrorData::internal_error("client request task failed", None))?
                .map_err(|e| match e {
                    rmcp::ServiceError::McpError(e) => e,
                    other => ErrorData::internal_error(format!("client unreachable: {other}"), None),
                })?;
            serde_json::to_value(result)
                .map_err(|e| ErrorData::internal_error(format!("client answer: {e}"), None))?
        } else {
            let questions = link.questions.as_ref().ok_or_else(nobody)?;
            let request = match request {
                ServerRequest::ElicitRequest(r) => InputRequest::Elicitation(r),
                ServerRequest::CreateMessageRequest(r) => InputRequest::CreateMessage(r),
                ServerRequest::ListRootsRequest(r) => InputRequest::ListRoots(r),
                _ => return Err(nobody()),
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            questions
                .send(super::Question { request, answer: tx })
                .map_err(|_| nobody())?;
            rx.await.map_err(|_| {
                ErrorData::internal_error("the client's request ended before it answered", None)
            })??
        };
        serde_json::from_value(answer).map_err(|e| {
            ErrorData::invalid_params(format!("the client's answer does not fit the request: {e}"), None)
        })
    }
}

fn set_asking(map: &InFlightMap, token: &ProgressToken, on: bool) {
    if let Some(f) = map.lock().unwrap_or_else(PoisonError::into_inner).get_mut(token) {
        f.asking = on;
    }
}

/// A request's question waits for its client's answer while this lives.
struct Asking {
    map: InFlightMap,
    token: ProgressToken,
}

impl Drop for Asking {
    fn drop(&mut self) {
        set_asking(&self.map, &self.token, false);
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
        if let Some((_, link)) = self.sole_client().filter(|(_, l)| l.accepts_requests) {
            let _ = link.peer.notify_logging_message(params).await;
        }
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let request = ServerRequest::CreateMessageRequest(CreateMessageRequest::new(params));
        self.ask_client(request, |c| c.sampling.is_some()).await
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
        self.ask_client(request, |c| c.elicitation.is_some()).await
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
