//! The core of [mcp-guard](https://github.com/mcp-guard/mcp-guard), a security gateway for the
//! Model Context Protocol: five traits, the data they exchange, and reference adapters.
//!
//! | trait | what it decides or does | reference adapters |
//! |---|---|---|
//! | [`Upstream`] | one MCP server: catalogue, requests, events, status | [`RmcpUpstream`] over stdio, streamable HTTP, in-process |
//! | [`CredentialStore`] | upstream secrets by (server, mode, principal) | [`MemoryCredentialStore`], [`EnvCredentialStore`] |
//! | [`Policy`] | may this principal do this? | [`GrantPolicy`], [`DenyAll`] |
//! | [`Redactor`] | what must not leave, or be stored | see [`redact`] |
//! | [`AuditSink`] | where records go | [`MemoryAuditSink`], [`TracingAuditSink`], [`FanOut`] |
//!
//! Four are `#[async_trait]` because they are picked at run time and held as
//! `Arc<dyn _>`; [`Redactor`] is synchronous and pure.
//!
//! This crate knows nothing of tower or HTTP front doors: `mcp-guard-tower` builds the
//! gateway from these pieces, and the `mcp-guard` binary builds it from a config file.
//!
//! # Security
//! Defaults fail closed: an empty policy refuses everything ([`DenyAll`]), a stdio
//! upstream inherits only `PATH` and `HOME`, every secret is a [`secrecy::SecretString`]
//! and only a [`Redactor`] can produce the [`Redacted`] payloads an [`AuditSink`] accepts.
//!
//! # Feature flags
//! - `test-util`: conformance helpers for implementors of the traits, and
//!   `random::fail_on_this_thread` for tests of what callers do when the random source fails.
//! - `sqlite`: the SQLite audit sink and the [`access::AccessStore`] of tokens and sessions.
//! - `postgres`: cluster mode's shared state on PostgreSQL ([`cluster`]).
//!
//! # Minimum supported Rust version
//! 1.95.
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod access;
pub mod audit;
mod call;
pub mod cluster;
pub mod config;
pub mod credential;
pub mod fetch;
pub mod flow;
pub mod hex;
pub mod pin;
pub mod policy;
pub mod random;
pub mod redact;
pub mod time;
pub mod upstream;

/// A boxed error, as used for sources that are not part of the API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[doc(no_inline)]
pub use rmcp;

#[doc(inline)]
pub use audit::{
    AuditError, AuditEvent, AuditSink, FanOut, JsonLinesAuditSink, MemoryAuditSink, Outcome, TracingAuditSink,
};
#[doc(inline)]
pub use call::{
    Action, CallContext, ClientInfo, Operation, Principal, PrincipalKind, SessionId, Target, TargetKind,
};
#[doc(inline)]
pub use credential::{
    Credential, CredentialError, CredentialKey, CredentialMode, CredentialStore, CredentialWriter,
    EnvCredentialStore, MemoryCredentialStore,
};
#[doc(inline)]
pub use policy::{ApprovalNeeded, Decision, Denial, DenyAll, Grant, GrantPolicy, Policy, PolicyError};
#[doc(inline)]
pub use redact::{KnownSecrets, PatternRedactor, Redacted, Redactor};
#[doc(inline)]
pub use upstream::{
    Catalog, Connector, Forward, RmcpUpstream, Upstream, UpstreamError, UpstreamEvent, UpstreamState,
    UpstreamStatus,
};
