//! State shared between gateway replicas (cluster mode, `[cluster]`).
//!
//! A single gateway keeps its API tokens in the SQLite [`AccessStore`](crate::access::AccessStore)
//! (several processes of one host share it). Replicas on several hosts share them in
//! PostgreSQL instead. Two small traits separate what the gateway needs from where the
//! state lives:
//!
//! - [`SharedTokens`]: issue, check, list and revoke gateway API tokens. The SQLite
//!   access store implements it (today's behaviour); [`postgres::PgCluster`] (feature
//!   `postgres`) is the shared adapter.
//! - [`Engine`]: whether this replica's view of the shared state is fresh enough to
//!   serve ([`Engine::fresh`]), and what `/readyz` reports about it.
//!
//! # Revocation fan-out and fail closed
//! Every write that takes something back (a token revoked) commits, in the same
//! transaction, a row in a change log and a `NOTIFY`. Each replica listens for the
//! notification (a doorbell: it reads the log at once) and also reads the log every
//! 250 ms whatever happens to the listening connection. A replica answers requests only
//! while its last successful read of the log began less than `max_staleness` ago, so a
//! revocation committed at time T refuses every request that arrives on any replica
//! after T + `max_staleness`, even when notifications are lost or the database is down
//! (then the replica refuses everything). See `docs/cluster.md`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use secrecy::SecretString;

use crate::access::ClientCredential;
use crate::call::Principal;

#[cfg(feature = "postgres")]
pub mod postgres;

pub use crate::access::TokenRecord;

/// Why a presented token was refused (not an error: the store answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// Not a gateway token, unknown id, or wrong secret.
    #[error("unknown or invalid token")]
    Invalid,
    /// Revoked.
    #[error("the token was revoked")]
    Revoked,
    /// Past its access duration.
    #[error("the token has expired")]
    Expired,
}

/// Why the shared state could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The database failed or is unreachable.
    #[error("shared state: {what}")]
    Database {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: crate::BoxError,
    },
    /// This replica could not confirm fresh state within the bound: it refuses rather
    /// than serve what may have been revoked.
    #[error(
        "shared state not confirmed for {for_ms} ms (bound {bound_ms} ms): refusing until the database answers"
    )]
    Stale {
        /// How long ago state was last confirmed (or since start).
        for_ms: u64,
        /// `max_staleness`.
        bound_ms: u64,
    },
    /// The database holds a schema written by a newer mcp-guard.
    #[error(
        "the database schema is version {found}, newer than this mcp-guard understands (up to {supported}): upgrade this binary, never downgrade a schema"
    )]
    SchemaTooNew {
        /// The version found.
        found: i32,
        /// The newest this binary knows.
        supported: i32,
    },
    /// The database has no schema yet and this operation does not create one.
    #[error("the database has no mcp-guard schema: run `mcp-guard migrate --config <file>`")]
    NoSchema,
    /// A stored row does not parse.
    #[error("shared state: corrupt row {id}")]
    Corrupt {
        /// The row's id.
        id: String,
    },
    /// The random source failed.
    #[error("no random source for a new token")]
    Random,
}

/// Gateway API tokens wherever they are kept.
#[async_trait]
pub trait SharedTokens: Send + Sync + std::fmt::Debug {
    /// Issues a token for `principal`, valid for `duration` (forever when `None`); the
    /// returned secret is the only copy.
    ///
    /// # Errors
    /// The store cannot be written or the random source failed.
    async fn issue(
        &self,
        principal: &Principal,
        duration: Option<Duration>,
        description: Option<&str>,
    ) -> Result<(TokenRecord, SecretString), ClusterError>;

    /// Checks a presented token.
    ///
    /// # Errors
    /// `Ok(Err(_))` when refused; `Err` when the store could not answer, or (shared
    /// adapters) could not confirm fresh state: the caller must refuse then.
    async fn verify(
        &self,
        token: &str,
    ) -> Result<Result<(Principal, ClientCredential), Refused>, ClusterError>;

    /// Revokes a token; whether a live token had that id.
    ///
    /// # Errors
    /// The store cannot be written.
    async fn revoke(&self, id: &str) -> Result<bool, ClusterError>;

    /// Every token, newest first.
    ///
    /// # Errors
    /// The store cannot be read.
    async fn list(&self) -> Result<Vec<TokenRecord>, ClusterError>;
}

/// A change another replica (or the CLI) made, as the change feed delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The API token with this id was revoked: close its sessions.
    TokenRevoked {
        /// The token id (`token:<id>` is its credential).
        id: String,
        /// When.
        at: SystemTime,
    },
}

/// What `/readyz` reports about the shared state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct EngineStatus {
    /// `postgres`.
    pub engine: &'static str,
    /// This replica's id.
    pub replica: String,
    /// Whether state was confirmed within the bound (requests are served).
    pub fresh: bool,
    /// Milliseconds since the last confirmed read.
    pub confirmed_ms_ago: u64,
    /// The bound.
    pub max_staleness_ms: u64,
    /// Whether the notification connection is up (polling goes on without it).
    pub listening: bool,
    /// The schema version in use.
    pub schema_version: i32,
    /// The last error reaching the database, if the last read failed.
    pub last_error: Option<String>,
}

/// A replica's view of the shared state.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// `Ok` while the last confirmed read is within the bound.
    ///
    /// # Errors
    /// [`ClusterError::Stale`] otherwise.
    fn fresh(&self) -> Result<(), ClusterError>;

    /// The status for `/readyz`.
    fn status(&self) -> EngineStatus;
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl SharedTokens for crate::access::AccessStore {
    async fn issue(
        &self,
        principal: &Principal,
        duration: Option<Duration>,
        description: Option<&str>,
    ) -> Result<(TokenRecord, SecretString), ClusterError> {
        self.issue_token(principal, duration, description)
            .map_err(sqlite_error)
    }

    async fn verify(
        &self,
        token: &str,
    ) -> Result<Result<(Principal, ClientCredential), Refused>, ClusterError> {
        use crate::access::TokenRefused;
        // An indexed lookup in a local file: microseconds, fine on the async thread.
        Ok(self
            .verify_token(token)
            .map_err(sqlite_error)?
            .map_err(|r| match r {
                TokenRefused::Revoked => Refused::Revoked,
                TokenRefused::Expired => Refused::Expired,
                _ => Refused::Invalid,
            }))
    }

    async fn revoke(&self, id: &str) -> Result<bool, ClusterError> {
        self.revoke_token(id).map_err(sqlite_error)
    }

    async fn list(&self) -> Result<Vec<TokenRecord>, ClusterError> {
        self.list_tokens().map_err(sqlite_error)
    }
}

#[cfg(feature = "sqlite")]
fn sqlite_error(e: crate::access::StoreError) -> ClusterError {
    ClusterError::Database {
        what: "access store".into(),
        source: Box::new(e),
    }
}
