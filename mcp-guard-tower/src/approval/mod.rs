//! [`Approvals`]: a person's "yes" before a call that a grant or a flow rule marks
//! `approval = "required"`.
//!
//! The gateway asks the client that made the call, the way MCP lets a server ask its
//! user (elicitation):
//!
//! - a client of a revision before 2026-07-28 gets an `elicitation/create` request of
//!   the gateway's own while its call waits;
//! - a 2026-07-28 client gets an input-required result whose `requestState` names the
//!   approval; its retry carries the answer, and only then does the call go ahead;
//! - a client that cannot elicit gets an error with a link to the gateway's approval
//!   page (for the user the call acts for, or a principal with an approver role, signed
//!   in with the gateway's own sign-in); the same call, made again, waits for the
//!   decision.
//!
//! The person sees the tool, its arguments (redacted) and why it needs approval, and
//! answers for this call only or for the rest of the session. A decline, no answer
//! within the timeout, or a client that goes away refuses the call.
//!
//! # Security
//! An approval is bound to exactly one call: principal and the user it acts for,
//! gateway session, endpoint, exposed tool name and a SHA-256 digest of the canonical
//! JSON of the arguments. It is single use and expires. `requestState` handles and page
//! links carry 128 random bits and nothing else. An answer for another call or by
//! another principal, a second answer, or one after the timeout is refused and
//! audited, as is one approval too many (`max_pending`, `max_pending_per_session`).
//! Standing ("rest of the session") approvals live in this process only: after a
//! restart the person is asked again.

mod page;

pub(crate) use page::Decided;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use mcp_guard_core::audit::{AuditPrincipal, EventKind};
use mcp_guard_core::{ApprovalNeeded, AuditEvent, AuditSink, Principal, Redactor, Target};
use rmcp::model::{
    ClientRequest, ElicitRequest, ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationSchema,
    GetExtensions as _, InputRequest, InputRequests, InputRequiredResult, ServerRequest, ServerResult,
};
use rmcp::service::{OriginatingRequestId, PeerRequestOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{ApprovalFailure, GuardError};
use crate::request::{Downstream, McpRequest};

/// Prefix of the `requestState` handles of approvals asked as input-required results.
const PREFIX: &str = "mcp-guard-approval:";
/// The key of the approval question in an input-required result.
const KEY: &str = "approval";
/// How long an answered or expired approval is remembered, to tell a late or second
/// answer from an unknown one.
const REMEMBER: Duration = Duration::from_mins(15);
/// Most answered approvals remembered.
const MAX_FINISHED: usize = 10_000;
/// Most continuation handles of approved calls kept (2026-07-28 upstreams that ask
/// more questions of an approved call).
const MAX_CONTINUATIONS: usize = 10_000;
/// The most argument text shown to the person (after redaction).
const SHOWN_ARGS: usize = 4096;

/// Settings of [`Approvals`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApprovalSettings {
    /// How long an approval waits for its answer. Default 120 s.
    pub timeout: Duration,
    /// Approvals waiting at once, in all. Default 100.
    pub max_pending: usize,
    /// Approvals waiting at once per gateway session. Default 5.
    pub max_pending_per_session: usize,
    /// Roles whose holders may decide anyone's approvals on the approval page.
    pub approver_roles: Vec<String>,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_mins(2),
            max_pending: 100,
            max_pending_per_session: 5,
            approver_roles: Vec::new(),
        }
    }
}

/// Who a browser is signed in as (the gateway's own sign-in).
pub type BrowserCheck = Arc<dyn Fn(&http::HeaderMap) -> Option<Principal> + Send + Sync>;

/// How a person was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    /// An `elicitation/create` request to a legacy client.
    Elicitation,
    /// An input-required result to a 2026-07-28 client.
    InputRequired,
    /// The approval page.
    Web,
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Self::Elicitation => "elicitation",
            Self::InputRequired => "input-required",
            Self::Web => "web",
        }
    }
}

/// What an approval is bound to: exactly one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    principal: String,
    on_behalf_of: Option<String>,
    session: Option<String>,
    endpoint: String,
    name: String,
    digest: String,
}

impl Binding {
    pub(crate) fn of(req: &McpRequest) -> Self {
        let args = match &req.request {
            ClientRequest::CallToolRequest(r) => r.params.arguments.clone(),
            ClientRequest::GetPromptRequest(r) => r.params.arguments.clone().map(|m| m.into_iter().collect()),
            _ => None,
        }
        .map_or(serde_json::Value::Null, serde_json::Value::Object);
        let p = &req.context.principal;
        Self {
            principal: p.id().to_owned(),
            on_behalf_of: p.on_behalf_of().map(str::to_owned),
            session: req.context.session.as_ref().map(|s| s.0.to_string()),
            endpoint: req.context.endpoint.to_string(),
            name: req.requested_name.as_deref().unwrap_or_default().to_owned(),
            digest: mcp_guard_core::pin::sha256_hex(&mcp_guard_core::pin::canonical_json(&args)),
        }
    }

    /// The person the call acts for: who may approve it on the page.
    fn subject(&self) -> &str {
        self.on_behalf_of.as_deref().unwrap_or(&self.principal)
    }

    fn who(&self) -> String {
        match &self.on_behalf_of {
            Some(u) => format!("{} acting for {u}", self.principal),
            None => self.principal.clone(),
        }
    }

    /// Why `other` (a retry presenting this approval) is not this call.
    fn mismatch(&self, other: &Self) -> Option<&'static str> {
        if self.principal != other.principal || self.on_behalf_of != other.on_behalf_of {
            Some("the approval belongs to another principal")
        } else if self.session != other.session || self.endpoint != other.endpoint {
            Some("the approval belongs to another session")
        } else if self.name != other.name || self.digest != other.digest {
            Some("the approval is for another call (tool or arguments differ)")
        } else {
            None
        }
    }
}

/// A person's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Approved { for_session: bool, by: Option<String> },
    Declined { by: Option<String> },
}

impl Answer {
    fn name(&self) -> &'static str {
        match self {
            Self::Approved {
                for_session: false, ..
            } => "approved-once",
            Self::Approved {
                for_session: true, ..
            } => "approved-for-session",
            Self::Declined { .. } => "declined",
        }
    }

    fn by(&self) -> Option<String> {
        match self {
            Self::Approved { by, .. } | Self::Declined { by } => by.clone(),
        }
    }
}

/// What the page and the audit records show of a call waiting for approval.
#[derive(Debug, Clone)]
struct Shown {
    name: String,
    target: Option<Target>,
    arguments: String,
    rule: Arc<str>,
    reason: Arc<str>,
    requested_at: SystemTime,
    expires_at: SystemTime,
}

struct Pending {
    binding: Binding,
    channel: Channel,
    shown: Shown,
    /// The base of this approval's audit records (who, where, what, arguments).
    event: AuditEvent,
    expires: Instant,
    /// Set once decided on the page; the waiting retry watches it.
    decision: watch::Sender<Option<Answer>>,
}

struct Finished {
    binding: Binding,
    what: &'static str,
    at: Instant,
}

/// A standing approval's key: (gateway session, exposed name, rule).
type StandingKey = (String, String, Arc<str>);

#[derive(Default)]
struct State {
    pending: HashMap<String, Pending>,
    finished: HashMap<String, Finished>,
    /// Standing approvals: (session, exposed name, rule) → the approval that granted
    /// it, and the session's end.
    standing: HashMap<StandingKey, (String, Option<CancellationToken>)>,
    /// `requestState`s of approved calls' input-required results (the call goes on).
    continuations: HashMap<String, (Binding, Instant)>,
}

impl State {
    fn finish(&mut self, id: &str, binding: Binding, what: &'static str) {
        let now = Instant::now();
        self.finished.retain(|_, f| now.duration_since(f.at) < REMEMBER);
        if self.finished.len() >= MAX_FINISHED
            && let Some(oldest) = self
                .finished
                .iter()
                .min_by_key(|(_, f)| f.at)
                .map(|(k, _)| k.clone())
        {
            self.finished.remove(&oldest);
        }
        self.finished.insert(
            id.to_owned(),
            Finished {
                binding,
                what,
                at: now,
            },
        );
    }
}

struct Inner {
    settings: ApprovalSettings,
    audit: Option<Arc<dyn AuditSink>>,
    redactor: Option<Arc<dyn Redactor>>,
    /// Who a browser is signed in as, and the base URL of the page's links.
    browser: OnceLock<(BrowserCheck, String)>,
    state: Mutex<State>,
    /// Page form tokens: token → (approval id, principal, issued).
    forms: Mutex<HashMap<String, (String, String, Instant)>>,
}

/// The approvals of one gateway: pending questions, standing approvals, the page.
/// Cheap to clone.
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("settings", &self.inner.settings)
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl Default for Approvals {
    fn default() -> Self {
        Self::new(ApprovalSettings::default())
    }
}

/// What [`Approvals::obtain`] came to.
pub(crate) enum Obtained {
    /// The call may go ahead.
    Approved,
    /// The answer to send now (an input-required result asking the question).
    Asked(Box<ServerResult>),
}

/// The kind of an approval record's base, replaced when it is written.
fn placeholder() -> EventKind {
    EventKind::ApprovalRefused {
        approval: None,
        reason: String::new(),
        by: None,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// 128 random bits, `a_` and hex: an approval's id (in its `requestState` handle and
/// its page's link) or a page form's token. A failing random source refuses.
fn random_id() -> Result<String, GuardError> {
    mcp_guard_core::hex::random(16)
        .map(|h| format!("a_{h}"))
        .map_err(|e| GuardError::Internal(Box::new(e)))
}

/// The `requestState` of a call, if it carries one.
fn request_state(request: &ClientRequest) -> Option<&str> {
    match request {
        ClientRequest::CallToolRequest(r) => r.params.request_state.as_deref(),
        ClientRequest::GetPromptRequest(r) => r.params.request_state.as_deref(),
        _ => None,
    }
}

/// Takes the answers off a retry (they were for the gateway, not the upstream).
fn take_answers(request: &mut ClientRequest) -> Option<rmcp::model::InputResponses> {
    match request {
        ClientRequest::CallToolRequest(r) => {
            r.params.request_state = None;
            r.params.input_responses.take()
        }
        ClientRequest::GetPromptRequest(r) => {
            r.params.request_state = None;
            r.params.input_responses.take()
        }
        _ => None,
    }
}

/// The question as an elicitation: a choice between this call and the session.
fn question(shown: &Shown, who: &str) -> ElicitRequestParams {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "scope": {
                "type": "string",
                "title": "Approve",
                "oneOf": [
                    { "const": "once", "title": "This call only" },
                    { "const": "session", "title": "This tool for the rest of the session" },
                ],
                "default": "once",
            },
        },
        "required": ["scope"],
    });
    let requested_schema = match schema {
        serde_json::Value::Object(o) => ElicitationSchema::from_json_schema(o).unwrap_or_else(|_| {
            ElicitationSchema::builder()
                .build()
                .unwrap_or_else(|_| ElicitationSchema::new(std::collections::BTreeMap::new()))
        }),
        _ => ElicitationSchema::new(std::collections::BTreeMap::new()),
    };
    let target = shown.target.as_ref().map_or_else(String::new, |t| {
        format!(" (server {}, tool {})", t.server, t.name)
    });
    let message = format!(
        "mcp-guard asks for your approval before this call runs.\n\
         Tool: {}{target}\nCalled by: {who}\nWhy: {}.\nArguments (redacted): {}\n\
         Decline to refuse the call; no answer by {} refuses it too.",
        shown.name,
        shown.reason,
        shown.arguments,
        mcp_guard_core::time::format_rfc3339(shown.expires_at),
    );
    ElicitRequestParams::FormElicitationParams {
        meta: None,
        message,
        requested_schema,
    }
}

/// Reads a person's answer from an elicitation result.
fn answer_of(result: &ElicitResult, by: Option<String>) -> Answer {
    match result.action {
        ElicitationAction::Accept => Answer::Approved {
            for_session: result
                .content
                .as_ref()
                .and_then(|c| c.get("scope"))
                .and_then(serde_json::Value::as_str)
                == Some("session"),
            by,
        },
        _ => Answer::Declined { by },
    }
}

/// What became of a question sent to a legacy client.
enum Asked {
    Answered(ElicitResult),
    TimedOut,
    Failed(GuardError),
}

/// Sends the question to a legacy client on the stream of its call and waits at most
/// `timeout` (rmcp then tells the client the request is cancelled).
///
/// # Cancel safety
/// Dropping the future aborts the question (its task is aborted).
async fn ask_client(d: &Downstream, params: ElicitRequestParams, timeout: Duration) -> Asked {
    let mut request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
    request
        .extensions_mut()
        .insert(OriginatingRequestId(d.request_id.clone()));
    let peer = d.peer.clone();
    // A fresh task so rmcp routes the request by the extension, onto the client's stream.
    let task = tokio::spawn(async move {
        peer.send_request_with_option(request, PeerRequestOptions::with_timeout(timeout))
            .await?
            .await_response()
            .await
    });
    let abort = task.abort_handle();
    let _abort_on_drop = scopeguard_abort(abort);
    let answer = match task.await {
        Ok(Ok(a)) => a,
        Ok(Err(rmcp::ServiceError::Timeout { .. })) => return Asked::TimedOut,
        Ok(Err(e)) => return Asked::Failed(GuardError::Internal(Box::new(e))),
        Err(e) => return Asked::Failed(GuardError::Internal(Box::new(e))),
    };
    let parsed = serde_json::to_value(&answer).and_then(serde_json::from_value::<ElicitResult>);
    match parsed {
        Ok(r) => Asked::Answered(r),
        Err(e) => Asked::Failed(GuardError::Internal(Box::new(e))),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn scopeguard_abort(h: tokio::task::AbortHandle) -> AbortOnDrop {
    AbortOnDrop(h)
}

impl Approvals {
    /// Approvals with `settings`, recorded nowhere (the person still sees no
    /// arguments: they are shown only after redaction).
    pub fn new(settings: ApprovalSettings) -> Self {
        Self::build(settings, None, None)
    }

    /// Approvals with `settings` that record every request, answer and refusal to
    /// `sink`; arguments shown to the person and recorded pass through `redactor`.
    pub fn audited(
        settings: ApprovalSettings,
        sink: Arc<dyn AuditSink>,
        redactor: Arc<dyn Redactor>,
    ) -> Self {
        Self::build(settings, Some(sink), Some(redactor))
    }

    fn build(
        settings: ApprovalSettings,
        audit: Option<Arc<dyn AuditSink>>,
        redactor: Option<Arc<dyn Redactor>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                audit,
                redactor,
                browser: OnceLock::new(),
                state: Mutex::default(),
                forms: Mutex::default(),
            }),
        }
    }

    /// Enables the approval page for clients that cannot be asked: `signed_in` tells
    /// who a browser is signed in as (the gateway's own sign-in), and links to the
    /// page start with `base_url` (the gateway's public URL). Set once; later calls
    /// change nothing.
    #[must_use]
    pub fn browser_sign_in(self, signed_in: BrowserCheck, base_url: impl Into<String>) -> Self {
        let _ = self.inner.browser.set((signed_in, base_url.into()));
        self
    }

    /// How many approvals wait for an answer now.
    pub fn pending(&self) -> usize {
        lock(&self.inner.state).pending.len()
    }

    /// The routes of the approval page: `GET /approvals` (what the signed-in person may
    /// decide), `GET /approvals/{id}` and `POST /approvals/{id}`.
    pub fn router(&self) -> axum::Router {
        page::router(self.clone())
    }

    fn web_enabled(&self) -> bool {
        self.inner.browser.get().is_some()
    }

    fn url(&self, id: &str) -> String {
        let base = self.inner.browser.get().map_or("", |(_, b)| b.as_str());
        format!("{}/approvals/{id}", base.trim_end_matches('/'))
    }

    /// Whether `principal` may decide approvals of calls acting for `subject` on the
    /// page.
    fn may_decide(&self, principal: &Principal, subject: &str) -> bool {
        principal.id() == subject
            || self
                .inner
                .settings
                .approver_roles
                .iter()
                .any(|r| principal.has_role(r))
    }

    /// The base of an approval's audit records: who, where, what (arguments redacted).
    fn event_base(&self, req: &McpRequest) -> AuditEvent {
        // The kind is a placeholder: each record sets its own.
        let mut e = AuditEvent::new(placeholder());
        let p = &req.context.principal;
        let mut who = AuditPrincipal::new(p.id(), p.kind());
        who.on_behalf_of = p.on_behalf_of().map(str::to_owned);
        e.principal = Some(who);
        e.session = req.context.session.as_ref().map(ToString::to_string);
        e.endpoint = Some(req.context.endpoint.to_string());
        e.target.clone_from(&req.target);
        e.requested_name = req.requested_name.as_deref().map(str::to_owned);
        e.request_id.clone_from(&req.context.request_id);
        e.protocol_version.clone_from(&req.context.protocol_version);
        e.trace_id.clone_from(&req.context.trace_id);
        if let (Some(r), ClientRequest::CallToolRequest(c)) = (&self.inner.redactor, &req.request)
            && let Some(args) = &c.params.arguments
        {
            let mut redacted = r.redacted(serde_json::Value::Object(args.clone()));
            e.truncated |= redacted.cap(crate::audit::DEFAULT_PAYLOAD_CAP);
            e.arguments = Some(redacted);
        }
        e
    }

    fn shown_arguments(&self, req: &McpRequest) -> String {
        let args = match &req.request {
            ClientRequest::CallToolRequest(c) => c.params.arguments.clone(),
            _ => None,
        };
        let Some(args) = args else {
            return "(none)".to_owned();
        };
        let value = serde_json::Value::Object(args);
        // Without a redactor nothing is shown: the person still sees tool and reason.
        let Some(r) = &self.inner.redactor else {
            return "(not shown)".to_owned();
        };
        let mut text = serde_json::to_string(r.redacted(value).get()).unwrap_or_default();
        if text.len() > SHOWN_ARGS {
            let mut cut = SHOWN_ARGS;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("… (truncated)");
        }
        text
    }

    /// Writes one approval record; `Err` when the sink failed (the caller decides
    /// whether that refuses the call).
    async fn record(&self, mut event: AuditEvent, kind: EventKind) -> Result<(), GuardError> {
        let Some(sink) = &self.inner.audit else {
            return Ok(());
        };
        let fresh = AuditEvent::new(kind);
        event.id = fresh.id;
        event.kind = fresh.kind;
        let now = SystemTime::now();
        event.started_at = now;
        event.ended_at = now;
        sink.record(&event).await.map_err(|e| {
            tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "an approval record could not be written");
            GuardError::AuditFailed(Box::new(e))
        })
    }

    /// Records a refused answer or request (the refusal stands whether or not the
    /// record could be written).
    async fn refused(&self, event: AuditEvent, approval: Option<String>, reason: &str, by: Option<String>) {
        tracing::warn!(
            approval = approval.as_deref(),
            reason,
            by = by.as_deref(),
            "approval answer refused"
        );
        let _ = self
            .record(
                event,
                EventKind::ApprovalRefused {
                    approval,
                    reason: reason.to_owned(),
                    by,
                },
            )
            .await;
    }

    fn refuse(binding: &Binding, need: &ApprovalNeeded, why: ApprovalFailure) -> GuardError {
        GuardError::ApprovalRefused {
            name: binding.name.clone(),
            rule: need.rule.clone(),
            why,
        }
    }

    /// Decides whether the call `req` may go ahead under `need`: a standing approval,
    /// the answer its retry carries, a decision on the page, or a new question.
    pub(crate) async fn obtain(
        &self,
        req: &mut McpRequest,
        need: &ApprovalNeeded,
    ) -> Result<Obtained, GuardError> {
        let binding = Binding::of(req);
        if let Some(id) = self.standing(&binding, &need.rule) {
            req.notes.flow(|f| f.approval = Some(id));
            return Ok(Obtained::Approved);
        }
        if let Some(state) = request_state(&req.request).map(str::to_owned) {
            if let Some(id) = state.strip_prefix(PREFIX) {
                return self.answer_from_retry(req, id, &binding, need).await;
            }
            if self.continues(&state, &binding) {
                return Ok(Obtained::Approved);
            }
        }
        if let Some(obtained) = self.decided_on_page(req, &binding, need).await? {
            return Ok(obtained);
        }
        let downstream = req.downstream.clone();
        let elicits = downstream
            .as_ref()
            .is_some_and(|d| d.capabilities.elicitation.is_some());
        match downstream {
            Some(d) if elicits && d.accepts_requests => self.ask_by_request(req, &d, binding, need).await,
            Some(_) if elicits => self.ask_by_input_required(req, binding, need).await,
            _ if self.web_enabled() => self.ask_on_page(req, binding, need).await,
            _ => {
                self.refused(
                    self.event_base(req),
                    None,
                    "the client cannot be asked (no elicitation) and there is no approval page",
                    Some(binding.who()),
                )
                .await;
                Err(Self::refuse(&binding, need, ApprovalFailure::Unavailable))
            }
        }
    }

    /// The approval of a standing ("rest of the session") grant for this call, if any.
    fn standing(&self, binding: &Binding, rule: &Arc<str>) -> Option<String> {
        let session = binding.session.clone()?;
        let mut st = lock(&self.inner.state);
        st.standing
            .retain(|_, (_, closed)| closed.as_ref().is_none_or(|c| !c.is_cancelled()));
        st.standing
            .get(&(session, binding.name.clone(), rule.clone()))
            .map(|(id, _)| id.clone())
    }

    /// Whether `state` is the `requestState` of an approved call's input-required
    /// result, presented by that same call.
    fn continues(&self, state: &str, binding: &Binding) -> bool {
        let mut st = lock(&self.inner.state);
        st.continuations
            .retain(|_, (_, at)| at.elapsed() < crate::questions::PARK_TTL);
        st.continuations
            .get(state)
            .is_some_and(|(b, _)| b.mismatch(binding).is_none())
    }

    /// Remembers that an approved call answered with an input-required result: its
    /// retries carry `state` and need no new approval.
    pub(crate) fn continued(&self, result: &ServerResult, req_binding: Binding) {
        let ServerResult::InputRequiredResult(ir) = result else {
            return;
        };
        let Some(state) = ir.request_state.clone() else {
            return;
        };
        let mut st = lock(&self.inner.state);
        if st.continuations.len() >= MAX_CONTINUATIONS
            && let Some(oldest) = st
                .continuations
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            st.continuations.remove(&oldest);
        }
        st.continuations.insert(state, (req_binding, Instant::now()));
    }

    /// Opens a pending approval within the limits; the refusal of one too many is
    /// audited.
    async fn open(
        &self,
        req: &McpRequest,
        binding: Binding,
        need: &ApprovalNeeded,
        channel: Channel,
    ) -> Result<(String, Shown, AuditEvent), GuardError> {
        let now = SystemTime::now();
        let timeout = self.inner.settings.timeout;
        let shown = Shown {
            name: binding.name.clone(),
            target: req.target.clone(),
            arguments: self.shown_arguments(req),
            rule: need.rule.clone(),
            reason: need.reason.clone(),
            requested_at: now,
            expires_at: now + timeout,
        };
        let event = self.event_base(req);
        let id = random_id()?;
        let full = {
            let mut st = lock(&self.inner.state);
            let s = &self.inner.settings;
            let in_session = st
                .pending
                .values()
                .filter(|p| p.binding.session == binding.session)
                .count();
            if st.pending.len() >= s.max_pending {
                Some(("gateway", s.max_pending))
            } else if in_session >= s.max_pending_per_session {
                Some(("session", s.max_pending_per_session))
            } else {
                let (decision, _) = watch::channel(None);
                st.pending.insert(
                    id.clone(),
                    Pending {
                        binding: binding.clone(),
                        channel,
                        shown: shown.clone(),
                        event: event.clone(),
                        expires: Instant::now() + timeout,
                        decision,
                    },
                );
                None
            }
        };
        if let Some((scope, limit)) = full {
            self.refused(
                event,
                None,
                &format!("{limit} approvals already wait in this {scope}"),
                Some(binding.who()),
            )
            .await;
            return Err(Self::refuse(
                &binding,
                need,
                ApprovalFailure::TooMany { scope, limit },
            ));
        }
        let requested = EventKind::ApprovalRequested {
            approval: id.clone(),
            channel: channel.as_str().to_owned(),
            reason: need.reason.to_string(),
            expires_at: mcp_guard_core::time::format_rfc3339(shown.expires_at),
        };
        tracing::info!(approval = %id, channel = channel.as_str(), name = %binding.name, who = %binding.who(), "asking for approval");
        if let Err(e) = self.record(event.clone(), requested).await {
            lock(&self.inner.state).pending.remove(&id);
            return Err(e);
        }
        req.notes.flow(|f| f.approval = Some(id.clone()));
        Ok((id, shown, event))
    }

    /// Ends a pending approval with `answer` (recorded); `Err` when the record failed.
    async fn answered(
        &self,
        id: &str,
        event: AuditEvent,
        channel: Channel,
        answer: &str,
        approver: Option<String>,
    ) -> Result<(), GuardError> {
        tracing::info!(approval = %id, answer, approver = approver.as_deref(), "approval answered");
        self.record(
            event,
            EventKind::ApprovalAnswered {
                approval: id.to_owned(),
                answer: answer.to_owned(),
                channel: channel.as_str().to_owned(),
                approver,
            },
        )
        .await
    }

    /// Takes a pending approval out (its answer came or it is given up) and remembers
    /// how it ended.
    fn close(&self, id: &str, what: &'static str) -> Option<Pending> {
        let mut st = lock(&self.inner.state);
        let p = st.pending.remove(id)?;
        st.finish(id, p.binding.clone(), what);
        Some(p)
    }

    /// Grants the rest of the session to the call's tool under `rule`.
    fn stand(&self, binding: &Binding, rule: &Arc<str>, id: &str, req: &McpRequest) {
        if let Some(session) = binding.session.clone() {
            let closed = req.context.gateway_session.as_ref().map(|s| s.closed().clone());
            lock(&self.inner.state).standing.insert(
                (session, binding.name.clone(), rule.clone()),
                (id.to_owned(), closed),
            );
        }
    }

    /// Ends `id` when its time is up, unless an answer came first (recorded as timed
    /// out when none did).
    fn expire_later(&self, id: String) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let when = {
                    let st = lock(&this.inner.state);
                    match st.pending.get(&id) {
                        Some(p) => p.expires,
                        None => return,
                    }
                };
                tokio::time::sleep_until(when.into()).await;
                let gone = {
                    let mut st = lock(&this.inner.state);
                    match st.pending.get(&id) {
                        Some(p) if p.expires <= Instant::now() => {
                            let undecided = p.decision.borrow().is_none();
                            let p = st.pending.remove(&id);
                            p.map(|p| {
                                st.finish(&id, p.binding.clone(), "expired");
                                (p, undecided)
                            })
                        }
                        Some(_) => continue,
                        None => return,
                    }
                };
                if let Some((p, true)) = gone {
                    let _ = this.answered(&id, p.event, p.channel, "timed-out", None).await;
                }
                return;
            }
        });
    }

    /// A legacy client: an `elicitation/create` request while the call waits.
    async fn ask_by_request(
        &self,
        req: &McpRequest,
        d: &Downstream,
        binding: Binding,
        need: &ApprovalNeeded,
    ) -> Result<Obtained, GuardError> {
        let (id, shown, event) = self
            .open(req, binding.clone(), need, Channel::Elicitation)
            .await?;
        let timeout = self.inner.settings.timeout;
        let outcome = tokio::select! {
            r = ask_client(d, question(&shown, &binding.who()), timeout) => r,
            () = req.cancel.cancelled() => {
                self.close(&id, "cancelled");
                let _ = self.answered(&id, event, Channel::Elicitation, "cancelled", None).await;
                return Err(GuardError::Upstream(mcp_guard_core::UpstreamError::Cancelled));
            }
        };
        match outcome {
            Asked::TimedOut => {
                self.close(&id, "expired");
                self.answered(&id, event, Channel::Elicitation, "timed-out", None)
                    .await?;
                Err(Self::refuse(&binding, need, ApprovalFailure::TimedOut(timeout)))
            }
            Asked::Failed(e) => {
                tracing::warn!(approval = %id, error = %mcp_guard_core::upstream::error_chain(&e), "the client did not put the approval question to a person");
                self.close(&id, "failed");
                self.answered(&id, event, Channel::Elicitation, "failed", None)
                    .await?;
                Err(Self::refuse(&binding, need, ApprovalFailure::NotAsked))
            }
            Asked::Answered(result) => {
                let answer = answer_of(&result, Some(binding.who()));
                self.close(&id, answer.name());
                self.answered(&id, event, Channel::Elicitation, answer.name(), answer.by())
                    .await?;
                self.approved(&answer, &binding, need, &id, req)
            }
        }
    }

    fn approved(
        &self,
        answer: &Answer,
        binding: &Binding,
        need: &ApprovalNeeded,
        id: &str,
        req: &McpRequest,
    ) -> Result<Obtained, GuardError> {
        match answer {
            Answer::Approved { for_session, .. } => {
                if *for_session {
                    self.stand(binding, &need.rule, id, req);
                }
                req.notes.flow(|f| f.approval = Some(id.to_owned()));
                Ok(Obtained::Approved)
            }
            Answer::Declined { .. } => Err(Self::refuse(binding, need, ApprovalFailure::Declined)),
        }
    }

    /// A 2026-07-28 client: an input-required result naming the approval.
    async fn ask_by_input_required(
        &self,
        req: &McpRequest,
        binding: Binding,
        need: &ApprovalNeeded,
    ) -> Result<Obtained, GuardError> {
        let (id, shown, _) = self
            .open(req, binding.clone(), need, Channel::InputRequired)
            .await?;
        self.expire_later(id.clone());
        let mut requests = InputRequests::new();
        requests.insert(
            KEY.to_owned(),
            InputRequest::Elicitation(ElicitRequest::new(question(&shown, &binding.who()))),
        );
        Ok(Obtained::Asked(Box::new(ServerResult::InputRequiredResult(
            InputRequiredResult::new(Some(requests), Some(format!("{PREFIX}{id}"))),
        ))))
    }

    /// A 2026-07-28 client's retry with the answer to approval `id`.
    async fn answer_from_retry(
        &self,
        req: &mut McpRequest,
        id: &str,
        binding: &Binding,
        need: &ApprovalNeeded,
    ) -> Result<Obtained, GuardError> {
        let id = id.to_owned();
        let event = self.event_base(req);
        let found = {
            let mut st = lock(&self.inner.state);
            match st.pending.get(&id) {
                None => Err(match st.finished.get(&id) {
                    Some(f) if f.binding.mismatch(binding).is_some() => (
                        "the approval belongs to another call, and it is no longer waiting".to_owned(),
                        false,
                    ),
                    Some(f) if f.what == "expired" => {
                        ("the approval expired before this answer came".to_owned(), true)
                    }
                    Some(f) => (format!("the approval was already answered ({})", f.what), false),
                    None => (
                        "the requestState names no approval waiting here".to_owned(),
                        false,
                    ),
                }),
                Some(p) if p.channel != Channel::InputRequired => {
                    Err(("the approval is not answered this way".to_owned(), false))
                }
                Some(p) => match p.binding.mismatch(binding) {
                    Some(why) => Err((why.to_owned(), false)),
                    None => Ok(st.pending.remove(&id)),
                },
            }
        };
        let pending = match found {
            Err((reason, late)) => {
                self.refused(event, Some(id), &reason, Some(binding.who())).await;
                let why = if late {
                    ApprovalFailure::TimedOut(self.inner.settings.timeout)
                } else {
                    ApprovalFailure::Invalid(reason)
                };
                return Err(Self::refuse(binding, need, why));
            }
            Ok(None) => return Err(GuardError::Internal("an approval vanished".into())),
            Ok(Some(p)) => p,
        };
        if pending.expires <= Instant::now() {
            lock(&self.inner.state).finish(&id, pending.binding.clone(), "expired");
            let _ = self
                .answered(
                    &id,
                    pending.event.clone(),
                    Channel::InputRequired,
                    "timed-out",
                    None,
                )
                .await;
            let reason = "the approval expired before this answer came";
            self.refused(event, Some(id), reason, Some(binding.who())).await;
            return Err(Self::refuse(
                binding,
                need,
                ApprovalFailure::TimedOut(self.inner.settings.timeout),
            ));
        }
        let answers = take_answers(&mut req.request);
        let result = answers
            .as_ref()
            .and_then(|a| a.get(KEY))
            .and_then(|v| serde_json::from_value::<ElicitResult>(v.clone()).ok());
        let Some(result) = result else {
            lock(&self.inner.state).finish(&id, pending.binding.clone(), "no answer");
            let reason = "the retry carries no answer to the approval question";
            self.refused(event, Some(id), reason, Some(binding.who())).await;
            return Err(Self::refuse(
                binding,
                need,
                ApprovalFailure::Invalid(reason.into()),
            ));
        };
        let answer = answer_of(&result, Some(binding.who()));
        lock(&self.inner.state).finish(&id, pending.binding.clone(), answer.name());
        self.answered(
            &id,
            pending.event,
            Channel::InputRequired,
            answer.name(),
            answer.by(),
        )
        .await?;
        self.approved(&answer, binding, need, &id, req)
    }

    /// A client that cannot be asked: a link to the page, and an error for now.
    async fn ask_on_page(
        &self,
        req: &McpRequest,
        binding: Binding,
        need: &ApprovalNeeded,
    ) -> Result<Obtained, GuardError> {
        let (id, _, _) = self.open(req, binding.clone(), need, Channel::Web).await?;
        self.expire_later(id.clone());
        Err(Self::refuse(
            &binding,
            need,
            ApprovalFailure::Pending {
                url: self.url(&id),
                id,
            },
        ))
    }

    /// The same call made again while its approval waits on the page: waits for the
    /// decision (at most until the approval expires). `None` when no such approval.
    async fn decided_on_page(
        &self,
        req: &McpRequest,
        binding: &Binding,
        need: &ApprovalNeeded,
    ) -> Result<Option<Obtained>, GuardError> {
        let found = {
            let st = lock(&self.inner.state);
            st.pending
                .iter()
                .find(|(_, p)| p.channel == Channel::Web && p.binding == *binding)
                .map(|(id, p)| (id.clone(), p.decision.subscribe(), p.expires))
        };
        let Some((id, mut decision, expires)) = found else {
            return Ok(None);
        };
        let decided = tokio::select! {
            r = decision.wait_for(Option::is_some) => r.ok().and_then(|v| v.clone()),
            () = tokio::time::sleep_until(expires.into()) => None,
            () = req.cancel.cancelled() => {
                return Err(GuardError::Upstream(mcp_guard_core::UpstreamError::Cancelled));
            }
        };
        let Some(answer) = decided else {
            return Err(Self::refuse(
                binding,
                need,
                ApprovalFailure::TimedOut(self.inner.settings.timeout),
            ));
        };
        // Single use: the first call to find the decision takes it.
        if self.close(&id, answer.name()).is_none() {
            return Err(Self::refuse(
                binding,
                need,
                ApprovalFailure::Invalid("the approval was already used".into()),
            ));
        }
        self.approved(&answer, binding, need, &id, req).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_question_offers_once_or_session() {
        let shown = Shown {
            name: "mail__send".into(),
            target: Some(Target::new("mail", "send", mcp_guard_core::TargetKind::Tool)),
            arguments: "{\"to\":\"[EMAIL]\"}".into(),
            rule: "r".into(),
            reason: "the tool can send data out".into(),
            requested_at: SystemTime::now(),
            expires_at: SystemTime::now(),
        };
        let ElicitRequestParams::FormElicitationParams {
            message,
            requested_schema,
            ..
        } = question(&shown, "alice")
        else {
            panic!("a form");
        };
        assert!(
            message.contains("mail__send") && message.contains("[EMAIL]"),
            "{message}"
        );
        let schema = serde_json::to_value(&requested_schema).unwrap();
        assert_eq!(schema["properties"]["scope"]["oneOf"][1]["const"], "session");
        let accept = ElicitResult::new(ElicitationAction::Accept)
            .with_content(serde_json::json!({"scope": "session"}));
        assert_eq!(
            answer_of(&accept, None),
            Answer::Approved {
                for_session: true,
                by: None
            }
        );
        let bare = ElicitResult::new(ElicitationAction::Accept);
        assert_eq!(answer_of(&bare, None).name(), "approved-once");
        let no = ElicitResult::new(ElicitationAction::Cancel);
        assert_eq!(answer_of(&no, None).name(), "declined");
    }
}
