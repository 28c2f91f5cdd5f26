//! Tower layers and the rmcp adapter of [mcp-guard](https://github.com/mcp-guard/mcp-guard):
//! compose a guarded, federating MCP gateway inside your own agent or server.
//!
//! Every request an MCP client makes becomes one [`McpRequest`] that goes through an
//! ordinary tower stack of guard layers, outer to inner:
//!
//! | layer | does |
//! |---|---|
//! | [`AuditLayer`] | records every request and outcome, refusals included (redacted) |
//! | [`EnforcePolicyLayer`] | refuses calls as "unknown", filters lists, one rule set |
//! | [`Router`] | sends each call to its upstream with the upstream's own name |
//!
//! [`GuardHandler`] puts the stack behind rmcp's `ServerHandler`, so the same stack
//! serves stdio and streamable HTTP ([`HttpEdge`]), legacy and 2026-07-28 clients.
//! Names are resolved once, before any layer, against the endpoint's catalogue (see
//! [`federation`]). See [`docs::layer_order`] for why the layers sit where they do.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use mcp_guard_core::upstream::{StdioConnector, StdioSpec, UpstreamOptions};
//! use mcp_guard_core::{EnvCredentialStore, Grant, GrantPolicy, MemoryAuditSink, Principal, RmcpUpstream};
//! use mcp_guard_tower::{AuditLayer, EndpointSpec, EnforcePolicyLayer, Gateway, GuardHandler, Router, Selection};
//! use rmcp::ServiceExt;
//! use tower::ServiceBuilder;
//! use tower::util::BoxCloneSyncService;
//! # struct NoPii; impl mcp_guard_core::Redactor for NoPii {
//! #   fn redact_str<'a>(&self, s: &'a str) -> std::borrow::Cow<'a, str> { s.into() } }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let files = StdioConnector::new("files", StdioSpec::new("mcp-server-filesystem", ["/srv"]),
//!     Arc::new(EnvCredentialStore::new()));
//! let gateway = Gateway::builder()
//!     .server(Arc::new(RmcpUpstream::new("files", files, UpstreamOptions::default())))
//!     .endpoint(EndpointSpec::new("eng").server("files", Selection::none().tools(["read_*"])?))
//!     .build()
//!     .await?;
//! let policy = GrantPolicy::builder().grant(Grant::allow().principals(["*"])).build()?;
//! let stack = ServiceBuilder::new()
//!     .layer(AuditLayer::new(Arc::new(MemoryAuditSink::new()), Arc::new(NoPii)))
//!     .layer(EnforcePolicyLayer::new(policy))
//!     .service(Router::new());
//! let handler = GuardHandler::new(gateway.endpoint("eng").unwrap(), BoxCloneSyncService::new(stack))
//!     .with_principal(Arc::new(Principal::user("me")));
//! handler.serve(rmcp::transport::stdio()).await?.waiting().await?;
//! # Ok(()) }
//! ```
//!
//! # Security
//! Everything fails closed: no tool is exposed until a [`Selection`] names it, no call
//! passes without a policy allow, an audit failure refuses the call, and HTTP clients
//! must authenticate (the opt-out is [`http::dangerous::Anonymous`]).
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
pub mod auth;
#[cfg(feature = "sqlite")]
pub mod authorize;
pub mod docs;
pub mod drain;
mod error;
pub mod federation;
mod handler;
pub mod http;
pub mod legacy_sessions;
mod macros;
pub mod metrics;
pub mod policy;
pub mod preauth;
mod questions;
pub mod rate_limit;
pub mod redact;
mod request;
mod router;
pub mod stdio;
mod style;
pub mod upstream_auth;

#[doc(no_inline)]
pub use rmcp;

#[doc(inline)]
pub use audit::AuditLayer;
#[doc(inline)]
pub use auth::{Authenticate, Authenticated, StaticTokens};
#[doc(inline)]
pub use drain::{Drain, DrainLayer};
#[doc(inline)]
pub use error::{GuardError, RATE_LIMITED};
#[doc(inline)]
pub use federation::{BuildError, EndpointSpec, Gateway, Selection, Snapshot};
#[doc(inline)]
pub use handler::{DEFAULT_PAGE_SIZE, GuardHandler, GuardService};
#[doc(inline)]
pub use http::{HttpEdge, HttpOptions};
#[doc(inline)]
pub use metrics::{Metrics, MetricsLayer};
#[doc(inline)]
pub use policy::EnforcePolicyLayer;
#[doc(inline)]
pub use rate_limit::{Rate, RateLimitLayer, RateLimits};
#[doc(inline)]
pub use redact::{EndpointRedactors, RedactRequestsLayer, RedactResponsesLayer};
#[doc(inline)]
pub use request::{Downstream, McpRequest, RequestNotes};
#[doc(inline)]
pub use router::Router;
