//! Tower layers and the rmcp adapter of [mcp-guard](https://github.com/mcp-guard/mcp-guard):
//! compose a guarded, federating MCP gateway inside your own agent or server.
//!
//! Two ways in:
//!
//! - **The whole gateway from a configuration** (feature `server`): [`server::ServerBuilder`]
//!   builds exactly what the `mcp-guard` binary runs (upstreams with per-session
//!   isolation, credential stores, the full guard stack, client authentication, the
//!   authorization server, pinning, metrics, drain) and hands you an axum router to
//!   mount in your own app under any path prefix. Start here.
//! - **The parts**: the layers below, composed by hand around your own upstreams.
//!
//! Every request an MCP client makes becomes one [`McpRequest`] that goes through an
//! ordinary tower stack of guard layers. The stack the binary runs, outer to inner:
//!
//! | layer | does |
//! |---|---|
//! | [`MetricsLayer`] | counts calls, refusals and latency per endpoint |
//! | [`DrainLayer`] | refuses new calls while stopping, tracks those in flight |
//! | [`AuditLayer`] | a durable, redacted record of every request and outcome, refusals included; an audit failure refuses the call |
//! | [`DrainLayer::abort_point`] | where calls still running at the end of the grace period are ended |
//! | [`EnforcePolicyLayer`] | refuses calls no grant allows (as "unknown"), filters lists |
//! | [`RateLimitLayer`] | per principal and tool budgets |
//! | [`RedactRequestsLayer`] | personal data out of arguments, where an endpoint asks |
//! | [`RedactResponsesLayer`] | secrets and held credentials out of every answer, personal data where an endpoint asks |
//! | [`Router`] | sends each call to its upstream under the upstream's own name |
//!
//! [`GuardHandler`] puts the stack behind rmcp's `ServerHandler`, so the same stack
//! serves stdio and streamable HTTP ([`HttpEdge`]), legacy and 2026-07-28 clients.
//! Names are resolved once, before any layer, against the endpoint's catalogue (see
//! [`federation`]). See [`docs::layer_order`] for why the layers sit where they do.
//!
//! # Example: the parts, over HTTP
//! An MCP server you already have (here one in the same process; a command or a URL
//! works the same), one endpoint that exposes only its `search` tool, and the guard
//! stack, served over streamable HTTP next to your own routes, then called by an MCP
//! client with a bearer token.
//! ```
//! use std::sync::Arc;
//! use mcp_guard_core::upstream::{InProcessConnector, UpstreamOptions};
//! use mcp_guard_core::{Grant, GrantPolicy, MemoryAuditSink, PatternRedactor, Principal, RmcpUpstream};
//! use mcp_guard_tower::{
//!     AuditLayer, EndpointRedactors, EndpointSpec, EnforcePolicyLayer, Gateway, HttpEdge,
//!     RedactResponsesLayer, Router, Selection, StaticTokens,
//! };
//! use rmcp::model::CallToolRequestParams;
//! use rmcp::ServiceExt;
//! use rmcp::transport::StreamableHttpClientTransport;
//! use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
//! use secrecy::SecretString;
//! use tower::ServiceBuilder;
//! use tower::util::BoxCloneSyncService;
//! # mod notes {
//! #   use rmcp::model::*;
//! #   use rmcp::service::{RequestContext, RoleServer};
//! #   #[derive(Clone)] pub struct Notes;
//! #   impl rmcp::ServerHandler for Notes {
//! #     fn get_info(&self) -> InitializeResult {
//! #       InitializeResult::new(ServerCapabilities::builder().enable_tools().build()) }
//! #     async fn list_tools(&self, _: Option<PaginatedRequestParams>, _: RequestContext<RoleServer>)
//! #       -> Result<ListToolsResult, rmcp::ErrorData> {
//! #       let schema = std::sync::Arc::new(serde_json::Map::new());
//! #       Ok(ListToolsResult::with_all_items(vec![
//! #         Tool::new("search", "Finds notes.", schema.clone()),
//! #         Tool::new("delete_all", "Deletes every note.", schema)])) }
//! #     async fn call_tool(&self, _: CallToolRequestParams, _: RequestContext<RoleServer>)
//! #       -> Result<CallToolResponse, rmcp::ErrorData> {
//! #       Ok(CallToolResult::success(vec![ContentBlock::text(
//! #         "ask ops: key sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")]).into()) }
//! #   }
//! # }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let notes = RmcpUpstream::new("notes", InProcessConnector::new("notes", || notes::Notes),
//!     UpstreamOptions::default());
//! let gateway = Gateway::builder()
//!     .server(Arc::new(notes))
//!     .endpoint(EndpointSpec::new("team").server("notes", Selection::none().tools(["search"])?))
//!     .build()
//!     .await?;
//!
//! // Audit records lose personal data and secrets; answers lose secrets.
//! let audit = MemoryAuditSink::new();
//! let policy = GrantPolicy::builder().grant(Grant::allow().roles(["staff"])).build()?;
//! let stack = ServiceBuilder::new()
//!     .layer(AuditLayer::new(Arc::new(audit.clone()), Arc::new(PatternRedactor::builder().build())))
//!     .layer(EnforcePolicyLayer::new(policy))
//!     .layer(RedactResponsesLayer::new(EndpointRedactors::new(Some(Arc::new(
//!         PatternRedactor::secrets_only(),
//!     )))))
//!     .service(Router::new());
//!
//! // HTTP clients authenticate; this one is `ada`, a member of staff.
//! let token = SecretString::from("a-long-random-token-for-ada");
//! let tokens = StaticTokens::new().with_token(&token, Principal::user("ada").with_roles(["staff"]));
//! let edge = HttpEdge::new(gateway.clone(), BoxCloneSyncService::new(stack), Arc::new(tokens));
//!
//! // Your app, with the gateway's routes merged in: /mcp/team is the endpoint.
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "my app" }))
//!     .merge(edge.router())
//!     .fallback(|| async { "not here" });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}/mcp/team", listener.local_addr()?);
//! tokio::spawn(async move {
//!     axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
//! });
//!
//! mcp_guard_core::upstream::ensure_crypto_provider(); // rustls, for the client below
//! let transport = StreamableHttpClientTransport::from_config(
//!     StreamableHttpClientTransportConfig::with_uri(url).auth_header("a-long-random-token-for-ada"),
//! );
//! let client = ().serve(transport).await?;
//! let tools = client.list_all_tools().await?;
//! assert_eq!(tools.iter().map(|t| t.name.as_ref()).collect::<Vec<_>>(), ["notes__search"]);
//! let found = client.call_tool(CallToolRequestParams::new("notes__search")).await?;
//! let text = &found.content[0].as_text().expect("text").text;
//! assert!(!text.contains("sk-ant-"), "{text}");
//! assert!(client.call_tool(CallToolRequestParams::new("notes__delete_all")).await.is_err());
//! client.cancel().await?;
//! gateway.shutdown().await;
//! assert!(!audit.events().is_empty());
//! # Ok(()) }
//! ```
//!
//! # Security
//! Everything fails closed: no tool is exposed until a [`Selection`] names it, no call
//! passes without a policy allow, an audit failure refuses the call, and HTTP clients
//! must authenticate (the opt-out is [`http::dangerous::Anonymous`]).
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod approval;
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
#[cfg(feature = "server")]
pub mod server;
pub mod stdio;
#[cfg(feature = "telemetry")]
pub mod telemetry;
pub mod upstream_auth;
mod web;

#[doc(no_inline)]
pub use rmcp;

#[doc(inline)]
pub use audit::AuditLayer;
#[doc(inline)]
pub use auth::{Authenticate, Authenticated, StaticTokens};
#[doc(inline)]
pub use drain::{Drain, DrainLayer};
#[doc(inline)]
pub use error::{APPROVAL_REFUSED, ApprovalFailure, FLOW_REFUSED, GuardError, RATE_LIMITED};
#[doc(inline)]
pub use federation::{BuildError, EndpointSpec, Gateway, Reconfigured, Selection, Snapshot};
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
