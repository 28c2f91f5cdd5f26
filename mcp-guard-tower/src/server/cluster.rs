//! Cluster mode (`[cluster]`): the PostgreSQL engine connected at start, its change
//! feed applied to this replica's sessions, and the gate that refuses every request
//! while the replica cannot confirm fresh state.

use std::sync::Arc;

use anyhow::Context as _;
use mcp_guard_core::access::Sessions;
use mcp_guard_core::cluster::postgres::PgCluster;
use mcp_guard_core::cluster::{Change, Engine, SharedTokens};
use mcp_guard_core::config::GatewayConfig;
use mcp_guard_core::redact::KnownSecrets;
use tokio_util::sync::CancellationToken;

use crate::HttpEdge;
use crate::auth::{AuthError, Authenticate, Authenticated};

/// Connects to the cluster's database when `[cluster]` is set, creating or upgrading
/// its schema (a schema from a newer version is refused).
pub(crate) async fn connect(cfg: &GatewayConfig, known: &KnownSecrets) -> anyhow::Result<Option<PgCluster>> {
    let Some(c) = &cfg.cluster else {
        return Ok(None);
    };
    let url = c.database_url_from_env().map_err(anyhow::Error::msg)?;
    known.add(&url);
    let engine = PgCluster::connect(url, &c.replica_id, c.staleness())
        .await
        .with_context(|| format!("cluster replica {}: opening the shared state", c.replica_id))?;
    tracing::info!(replica = %c.replica_id, max_staleness = ?c.staleness(), "cluster mode: shared state on PostgreSQL");
    Ok(Some(engine))
}

/// The shared token store, in cluster mode.
pub(crate) fn tokens(engine: Option<&PgCluster>) -> Option<Arc<dyn SharedTokens>> {
    engine.map(|e| Arc::new(e.clone()) as Arc<dyn SharedTokens>)
}

/// In cluster mode, `inner` behind the freshness gate ([`FreshOnly`]).
pub(crate) fn gate(engine: Option<&PgCluster>, inner: Arc<dyn Authenticate>) -> Arc<dyn Authenticate> {
    match engine {
        Some(e) => Arc::new(FreshOnly {
            engine: Arc::new(e.clone()),
            inner,
        }),
        None => inner,
    }
}

/// In cluster mode, `/readyz` reports the engine.
pub(crate) fn report(edge: HttpEdge, engine: Option<PgCluster>) -> HttpEdge {
    match engine {
        Some(e) => edge.cluster(Arc::new(e)),
        None => edge,
    }
}

/// Follows the change feed until `stop`: a token revoked anywhere closes its sessions
/// (and their streams and processes) here.
pub(crate) fn follow(engine: Option<&PgCluster>, sessions: &Sessions, stop: &CancellationToken) {
    let Some(engine) = engine else {
        return;
    };
    let sessions = sessions.clone();
    engine.start(
        move |change| {
            if let Change::TokenRevoked { id, at } = change {
                sessions.revoke_credential(&format!("token:{id}"), at);
            }
        },
        stop.clone(),
    );
}

/// Refuses every request (503, "authentication is unavailable") while the engine
/// cannot confirm fresh state, then asks `inner`.
pub(crate) struct FreshOnly {
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) inner: Arc<dyn Authenticate>,
}

#[async_trait::async_trait]
impl Authenticate for FreshOnly {
    async fn authenticate(&self, parts: &http::request::Parts) -> Result<Authenticated, AuthError> {
        if let Err(e) = self.engine.fresh() {
            return Err(AuthError::Unavailable(Box::new(e)));
        }
        self.inner.authenticate(parts).await
    }
}
