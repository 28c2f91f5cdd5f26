//! The whole gateway from a configuration: what `mcp-guard serve` runs, as a library.
//!
//! [`ServerBuilder`] turns a [`GatewayConfig`](mcp_guard_core::config::GatewayConfig)
//! (read from a file with [`load_config`], or built in code) into the complete
//! gateway: upstreams with their isolation (one process per client session for stdio
//! servers), the credential stores, the guard stack in the documented order, the
//! client authentication chain, the built-in authorization server, the limits before
//! authentication, pinning, metrics, drain and shutdown. The defaults are the
//! binary's: secrets and every credential the gateway hands out are scrubbed from
//! responses and audit records; audit failures refuse the call; nothing is exposed or
//! allowed until the configuration says so.
//!
//! ```no_run
//! # async fn run() -> Result<(), mcp_guard_tower::server::ServerError> {
//! use mcp_guard_tower::server::{ServerBuilder, load_config};
//!
//! let loaded = load_config(std::path::Path::new("gateway.toml"))?;
//! let gateway = ServerBuilder::from_loaded(loaded).build().await?;
//!
//! // Your own axum app: its routes, its middleware, its fallback. The gateway's
//! // routes have no fallback, so `merge` cannot panic.
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "my app" }))
//!     .merge(gateway.router())
//!     .fallback(|| async { "not here" });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8787").await.expect("bind");
//! let stop = gateway.shutdown_token();
//! tokio::spawn(async move {
//!     let _ = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
//!         .with_graceful_shutdown(async move { stop.cancelled().await })
//!         .await;
//! });
//! // ... later: drain calls in flight, close sessions, stop upstreams, flush the audit.
//! gateway.shutdown().await?;
//! # Ok(()) }
//! # let _ = run();
//! ```
//!
//! [`GatewayServer::serve`] does the serving and the whole stop sequence itself, as
//! the binary does.
//!
//! With `[console] enabled = true` the router also serves the operator console at
//! `{prefix}/console`: pages for servers, endpoints and their tools, approvals,
//! sessions, the audit trail and the configuration, for principals holding the
//! configured admin role (changes, written back to the configuration file and applied
//! through [`Reloader`]) or auditor role (looks only). The check of a proposed file
//! against the audit trail is [`replay`].

mod audit;
mod auth;
mod authorization;
mod cluster;
mod config_file;
mod console;
mod credentials;
mod flow;
mod forward;
mod pinning;
mod reload;
pub mod replay;
mod run;
mod session_dir;
mod stack;
mod telemetry;
mod upstreams;

pub use audit::{audit_sinks, mac_key};
pub use config_file::{LoadedConfig, load_config, load_config_text};
pub use credentials::sealed_store;
pub use forward::ReceiverCheck;
pub use pinning::lock_path;
pub use reload::{LastReload, ReloadReport, Reloader};
pub use run::access_store_path;
pub use run::{Catalogue, ConfiguredUpstream, GatewayServer, ServerBuilder, StartupReport, StdioGateway};
pub use upstreams::{SESSION_PLACEHOLDER, principal};

/// Why the gateway could not be built or served.
///
/// Its `Display` is the whole chain of causes (`servers.github.env: invalid placeholder
/// name ...`), fit for an operator; the text is not API.
#[derive(Debug)]
pub struct ServerError(anyhow::Error);

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<anyhow::Error> for ServerError {
    fn from(e: anyhow::Error) -> Self {
        Self(e)
    }
}

/// The grants of `[[grants]]` with the labels and flow rules of `[[labels]]` and
/// `[[flow_rules]]`, compiled; an unnamed grant or rule is named after its entry
/// (`grants[2]`, `flow_rules[0]`), so audit records and `explain` point at the
/// configuration.
///
/// # Errors
/// A pattern or condition does not compile.
pub fn grant_policy(
    config: &mcp_guard_core::config::GatewayConfig,
) -> Result<mcp_guard_core::GrantPolicy, ServerError> {
    stack::policy(config).map_err(ServerError)
}
