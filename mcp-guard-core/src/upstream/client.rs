use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use rmcp::ClientHandler;
use rmcp::model::{
    ClientCapabilities, ClientConfig, Implementation, ProgressNotificationParam,
    ProgressToken, ProtocolVersion, ResourceUpdatedNotificationParam,
};
use rmcp::service::{NotificationContext, RoleClient};

use super::rmcp_upstream::Shared;
use super::{Progress, ProgressSink, UpstreamEvent};

/// The gateway's rmcp client handler for one upstream connection.
///
/// It advertises no client capabilities (no sampling, elicitation or roots), routes
/// progress to the downstream request that caused it, and turns list-changed
/// notifications into a catalogue re-read.
#[derive(Clone)]
pub struct UpstreamClient {
    pub(super) shared: Weak<Shared>,
    pub(super) progress: Arc<Mutex<HashMap<ProgressToken, ProgressSink>>>,
    /// The version offered in `initialize`, when not rmcp's default (the SSE connector
    /// offers the newest version that still has `initialize`).
    pub(super) initialize_version: Option<ProtocolVersion>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

impl UpstreamClient {
    fn catalog_changed(&self) {
        if let Some(shared) = self.shared.upgrade() {
            tokio::spawn(async move { shared.refresh_catalog().await });
        }
    }
}

impl ClientHandler for UpstreamClient {
    fn get_info(&self) -> ClientConfig {
        let config = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("mcp-guard", env!("CARGO_PKG_VERSION")),
        );
        match &self.initialize_version {
            Some(v) => config.with_protocol_version(v.clone()),
            None => config,
        }
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        let sink = self
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&params.progress_token)
            .cloned();
        if let Some(sink) = sink {
            sink.send(Progress {
                progress: params.progress,
                total: params.total,
                message: params.message,
            });
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
