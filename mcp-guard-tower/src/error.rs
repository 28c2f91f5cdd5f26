//! [`GuardError`]: the one error type of every guard layer, and how clients see it.

use mcp_guard_core::{BoxError, Denial, TargetKind, UpstreamError};
use rmcp::ErrorData;
use rmcp::model::ErrorCode;

/// Why the gateway did not produce a result.
///
/// Every guard layer uses this error, so a denial from an inner layer comes out of an
/// outer one unchanged. Clients see a deliberately plain [`ErrorData`] (see the
/// `From` impl): a refused name answers exactly like an unknown one, and internal
/// details go to logs and audit, never to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// The name resolves to nothing on this endpoint.
    #[error("unknown {kind} {name:?}")]
    Unknown {
        /// Tool, prompt, resource...
        kind: TargetKind,
        /// The name as requested.
        name: String,
    },
    /// Policy refused. Rendered exactly like [`GuardError::Unknown`].
    #[error("denied: {}", denial.reason)]
    Denied {
        /// Tool, prompt, resource...
        kind: TargetKind,
        /// The name as requested.
        name: String,
        /// Which rule, and why (for audit).
        denial: Denial,
    },
    /// The tool is held back until an operator approves its definition.
    #[error("tool {name:?} awaits approval: {reason}")]
    Quarantined {
        /// The name as requested.
        name: String,
        /// Why (new, changed, hostile text).
        reason: String,
        /// The definition changed while this call was in flight: the call reached the
        /// server, and its answer is withheld.
        during_call: bool,
    },
    /// The request is malformed (bad cursor, missing argument...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The method is not served by the gateway.
    #[error("method not found: {0}")]
    MethodNotFound(String),
    /// No authenticated principal.
    #[error("unauthenticated")]
    Unauthenticated,
    /// A rate limit refused the request. Clients see JSON-RPC error `-32029` with
    /// `data: {"limit": .., "retryAfterMs": .., "retryAfterSecs": ..}`.
    #[error("rate limited by {limit} (retry after {retry_after:?})")]
    RateLimited {
        /// Which limit (`per_principal`, `per_tool`, `per_principal_tool`).
        limit: String,
        /// How long until a request would pass.
        retry_after: std::time::Duration,
    },
    /// A timeout (tower's stock timeout layer, or the upstream's).
    #[error("timed out")]
    Timeout,
    /// The upstream failed.
    #[error("upstream failed")]
    Upstream(#[source] UpstreamError),
    /// The audit record could not be written, so the request was refused (fail
    /// closed) before it reached any upstream.
    #[error("audit unavailable")]
    AuditFailed(#[source] BoxError),
    /// Any other failure inside the gateway.
    #[error("gateway error")]
    Internal(#[source] BoxError),
    /// The gateway is shutting down: the request was refused, or abandoned at the end
    /// of the shutdown grace period.
    #[error("gateway shutting down")]
    ShuttingDown,
    /// The call needs a person's approval, which it did not get (or has not got yet).
    /// Clients see JSON-RPC error [`APPROVAL_REFUSED`] with `data.reason` (and, for an
    /// approval waiting on the web page, `data.approvalUrl`).
    #[error("approval for {name:?} by {rule}: {why}")]
    ApprovalRefused {
        /// The name as requested.
        name: String,
        /// The grant or flow rule that asked for approval.
        rule: std::sync::Arc<str>,
        /// What happened.
        why: ApprovalFailure,
    },
}

/// Why a call that needs approval did not go ahead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalFailure {
    /// The person declined (or cancelled the question).
    #[error("declined")]
    Declined,
    /// No answer within the approval timeout.
    #[error("no answer within {}", human_duration(*.0))]
    TimedOut(std::time::Duration),
    /// Waiting for a decision on the approval page: open the link, decide, call again.
    #[error("waiting for a decision at {url}")]
    Pending {
        /// The approval page.
        url: String,
        /// The approval's id.
        id: String,
    },
    /// The client cannot be asked (no elicitation) and there is no approval page.
    #[error("no way to ask a person")]
    Unavailable,
    /// The client was asked but did not put the question to a person (it failed or
    /// refused the request).
    #[error("the client did not ask a person")]
    NotAsked,
    /// Too many approvals wait already (`scope`: this session, or the gateway).
    #[error("too many approvals waiting in this {scope} (limit {limit})")]
    TooMany {
        /// `session` or `gateway`.
        scope: &'static str,
        /// The limit.
        limit: usize,
    },
    /// An answer that does not count: for another call or principal, already used,
    /// or after its approval expired.
    #[error("{0}")]
    Invalid(String),
}

/// The JSON-RPC error code of a call refused for want of a person's approval.
pub const APPROVAL_REFUSED: ErrorCode = ErrorCode(-32030);

/// The JSON-RPC error code of a call a flow rule refused (the tool exists; what the
/// session did before rules it out).
pub const FLOW_REFUSED: ErrorCode = ErrorCode(-32031);

impl From<UpstreamError> for GuardError {
    /// Kept as [`GuardError::Upstream`], timeouts included, so the client's error can
    /// name the server and its limit.
    fn from(e: UpstreamError) -> Self {
        Self::Upstream(e)
    }
}

impl From<BoxError> for GuardError {
    /// Recognises tower's stock errors (timeout, overload) and boxes the rest.
    fn from(e: BoxError) -> Self {
        if e.is::<tower::timeout::error::Elapsed>() {
            return Self::Timeout;
        }
        match e.downcast::<Self>() {
            Ok(g) => *g,
            Err(e) => Self::Internal(e),
        }
    }
}

/// The JSON-RPC error code of a request refused by a rate limit (in the range
/// JSON-RPC reserves for implementation-defined server errors).
pub const RATE_LIMITED: ErrorCode = ErrorCode(-32029);

fn unknown(kind: TargetKind, name: &str) -> ErrorData {
    match kind {
        TargetKind::Resource | TargetKind::ResourceTemplate => {
            ErrorData::resource_not_found(format!("Resource not found: {name}"), None)
        }
        TargetKind::Prompt => ErrorData::invalid_params(format!("Unknown prompt: {name}"), None),
        _ => ErrorData::invalid_params(format!("Unknown tool: {name}"), None),
    }
}

impl From<GuardError> for ErrorData {
    fn from(e: GuardError) -> Self {
        match e {
            GuardError::Denied {
                name,
                denial: Denial { flow: Some(flow), .. },
                ..
            } => ErrorData::new(
                FLOW_REFUSED,
                format!(
                    "{name} is not allowed in this session: {}. If the call is intended, an operator can review the session and clear its flow restrictions.",
                    flow.explain()
                ),
                Some(serde_json::json!({ "reason": "flow" })),
            ),
            GuardError::Unknown { kind, name } | GuardError::Denied { kind, name, .. } => {
                unknown(kind, &name)
            }
            GuardError::ApprovalRefused { name, why, .. } => approval_error(&name, why),
            GuardError::Quarantined {
                name,
                during_call: false,
                ..
            } => ErrorData::invalid_params(
                format!(
                    "Tool {name} is awaiting approval: its definition is new or changed since it was approved"
                ),
                None,
            ),
            GuardError::Quarantined { name, .. } => ErrorData::invalid_params(
                format!(
                    "Tool {name} changed its definition while this call was in flight; the answer is withheld, \
                     and the tool is awaiting approval"
                ),
                None,
            ),
            GuardError::Invalid(m) => ErrorData::invalid_params(m, None),
            GuardError::MethodNotFound(m) => ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!("Method not found: {m}"),
                None,
            ),
            GuardError::Unauthenticated => ErrorData::invalid_request("authentication required", None),
            GuardError::RateLimited { limit, retry_after } => ErrorData::new(
                RATE_LIMITED,
                "rate limit exceeded, retry later",
                Some(serde_json::json!({
                    "limit": limit,
                    "retryAfterMs": u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                    "retryAfterSecs": retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0),
                })),
            ),
            GuardError::Timeout => ErrorData::internal_error("upstream timed out", None),
            GuardError::Upstream(u) => upstream_error(u),
            GuardError::AuditFailed(_) => ErrorData::internal_error(
                "audit unavailable: the request's audit record could not be written, so it was refused and reached no upstream",
                None,
            ),
            GuardError::Internal(_) => ErrorData::internal_error("internal gateway error", None),
            GuardError::ShuttingDown => ErrorData::internal_error(
                "the gateway is shutting down; the request was not completed",
                None,
            ),
        }
    }
}

fn approval_error(name: &str, why: ApprovalFailure) -> ErrorData {
    let (reason, message, url) = match why {
        ApprovalFailure::Declined => (
            "declined",
            format!("{name} was not run: the person asked to approve it declined"),
            None,
        ),
        ApprovalFailure::TimedOut(d) => (
            "timed-out",
            format!(
                "{name} was not run: it needs a person's approval and none came within {}",
                human_duration(d)
            ),
            None,
        ),
        ApprovalFailure::Pending { url, id } => (
            "pending",
            format!(
                "{name} needs a person's approval before it runs. Open {url} to approve or decline it, then call it again with the same arguments (approval {id})"
            ),
            Some(url),
        ),
        ApprovalFailure::NotAsked => (
            "not-asked",
            format!(
                "{name} was not run: it needs a person's approval, and the client did not put the question to a person"
            ),
            None,
        ),
        ApprovalFailure::Unavailable => (
            "unavailable",
            format!(
                "{name} needs a person's approval, and this client cannot be asked (it does not support elicitation) and the gateway has no approval page (it needs the built-in sign-in, [auth.server])"
            ),
            None,
        ),
        ApprovalFailure::TooMany { scope, limit } => (
            "too-many-pending",
            format!(
                "{name} was not run: {limit} approvals are already waiting in this {scope}; answer them or let them expire first"
            ),
            None,
        ),
        ApprovalFailure::Invalid(m) => ("invalid-answer", format!("{name} was not run: {m}"), None),
    };
    let mut data = serde_json::json!({ "reason": reason });
    if let Some(u) = url {
        data["approvalUrl"] = u.into();
    }
    ErrorData::new(APPROVAL_REFUSED, message, Some(data))
}

/// `60s`, `1.5s`, `250ms`.
fn human_duration(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < std::time::Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A server that did not start in time, or is down: what happened and when it is
/// started again.
fn start_error(u: UpstreamError) -> ErrorData {
    match u {
        UpstreamError::StartTimeout { server, timeout } => ErrorData::internal_error(
            format!(
                "server {server} did not answer within {} of starting; it is started again on a later request",
                spaced_duration(timeout)
            ),
            None,
        ),
        UpstreamError::Down {
            server,
            reason,
            retry_in,
        } => ErrorData::internal_error(
            match retry_in {
                Some(d) => format!(
                    "server {server} is down ({reason}); the next start attempt is in {}",
                    spaced_duration(d)
                ),
                None => {
                    format!("server {server} is down ({reason}); it is started again on the next request")
                }
            },
            None,
        ),
        other => ErrorData::internal_error(format!("upstream error: {other}"), None),
    }
}

/// `2 s`, `1.5 s`, `250 ms`: durations in sentences about server starts.
fn spaced_duration(d: std::time::Duration) -> String {
    if d < std::time::Duration::from_secs(1) {
        format!("{} ms", d.as_millis().max(1))
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A call that needs the principal to sign in to the upstream (first time or again).
fn sign_in_error(u: UpstreamError) -> ErrorData {
    match u {
        UpstreamError::MissingPersonalCredentials {
            server,
            principal,
            authorize_url: Some(url),
            ..
        } => ErrorData::invalid_request(
            format!("server {server} needs you to sign in first: open {url}"),
            Some(serde_json::json!({ "authorizationRequired": {
                "server": server,
                "principal": principal,
                "authorizeUrl": url,
            } })),
        ),
        UpstreamError::NeedsReauthentication {
            server,
            principal,
            reason,
            authorize_url,
        } => ErrorData::invalid_request(
            match &authorize_url {
                Some(url) => format!("server {server} needs you to sign in again ({reason}): open {url}"),
                None => format!("server {server} needs you to sign in again ({reason})"),
            },
            Some(serde_json::json!({ "authorizationRequired": {
                "server": server,
                "principal": principal,
                "reauthenticate": true,
                "reason": reason,
                "authorizeUrl": authorize_url,
            } })),
        ),
        other => ErrorData::internal_error(format!("upstream error: {other}"), None),
    }
}

fn upstream_error(u: UpstreamError) -> ErrorData {
    // Why a start failed, in the gateway's words (never the transport's text).
    let reason = mcp_guard_core::upstream::start_failure(&u);
    match u {
        UpstreamError::Rpc(e) => e,
        UpstreamError::MissingCredentials { server, missing } => {
            let set: Vec<String> = missing
                .iter()
                .map(|n| format!("mcp-guard credentials set --server {server} --name {n}"))
                .collect();
            ErrorData::invalid_request(
                format!("server {server} needs credentials before it can be used"),
                Some(
                    serde_json::json!({ "missingCredentials": [{ "server": server, "names": missing, "set": set }] }),
                ),
            )
        }
        u @ (UpstreamError::MissingPersonalCredentials {
            authorize_url: Some(_),
            ..
        }
        | UpstreamError::NeedsReauthentication { .. }) => sign_in_error(u),
        UpstreamError::MissingPersonalCredentials {
            server,
            principal,
            personal,
            shared,
            ..
        } => {
            let set: Vec<String> = personal
                .iter()
                .map(|n| {
                    format!("mcp-guard credentials set --server {server} --name {n} --principal {principal}")
                })
                .chain(
                    shared
                        .iter()
                        .map(|n| format!("mcp-guard credentials set --server {server} --name {n}")),
                )
                .collect();
            let names: Vec<&String> = personal.iter().chain(&shared).collect();
            ErrorData::invalid_request(
                format!(
                    "server {server} needs credentials before it can be used; set yours with: {}",
                    set.first().map_or("", String::as_str)
                ),
                Some(serde_json::json!({ "missingCredentials": [{
                    "server": server,
                    "names": names,
                    "principal": principal,
                    "personal": personal,
                    "set": set,
                }] })),
            )
        }
        UpstreamError::Terminated { server } => ErrorData::internal_error(
            format!("server {server} terminated while handling the request"),
            None,
        ),
        UpstreamError::Unavailable { server, .. } => match reason {
            Some(r) => ErrorData::internal_error(format!("server {server} is unavailable ({r})"), None),
            None => ErrorData::internal_error(format!("server {server} is unavailable"), None),
        },
        UpstreamError::Disabled { server } => {
            ErrorData::internal_error(format!("server {server} is disabled"), None)
        }
        UpstreamError::Timeout { server, timeout } => ErrorData::internal_error(
            format!(
                "server {server} timed out after {}; the request was cancelled",
                human_duration(timeout)
            ),
            None,
        ),
        u @ (UpstreamError::StartTimeout { .. } | UpstreamError::Down { .. }) => start_error(u),
        UpstreamError::ResponseTooLarge { server, limit } => ErrorData::internal_error(
            format!(
                "server {server} sent a response larger than its limit of {limit} bytes; the connection was reset"
            ),
            None,
        ),
        UpstreamError::Protocol { server } => {
            ErrorData::internal_error(format!("server {server} sent an invalid response"), None)
        }
        UpstreamError::Cancelled => ErrorData::internal_error("request cancelled", None),
        UpstreamError::Catalogue { server, reason } => ErrorData::internal_error(
            format!("server {server} is unavailable: its tool list cannot be used ({reason})"),
            None,
        ),
        UpstreamError::Exhausted { server, limit } => ErrorData::internal_error(
            format!("server {server} cannot start another process ({limit}); try again later"),
            None,
        ),
        other => ErrorData::internal_error(format!("upstream error: {other}"), None),
    }
}
