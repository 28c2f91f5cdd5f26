//! The approval page: server-rendered HTML without script, for a person signed in
//! with the gateway's own sign-in (the user the call acts for, or a holder of an
//! approver role). Forms carry a single-use token bound to the approval and the
//! signed-in principal; pages cannot be framed or cached.
// Axum handlers take their extractors by value.
#![allow(clippy::needless_pass_by_value)]

use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mcp_guard_core::{AuditEvent, Principal};

use super::{Answer, Approvals, Channel, Pending, lock, random_id};

/// How long a page's form stays valid.
const FORM_TTL: Duration = Duration::from_mins(15);

pub(super) fn router(approvals: Approvals) -> axum::Router {
    axum::Router::new()
        .route("/approvals", get(list))
        .route("/approvals/{id}", get(show).post(decide))
        .with_state(approvals)
}

use crate::web::escape as esc;

/// The pages run no script, load only the gateway's stylesheet, post forms to this
/// origin only, and cannot be framed.
const CSP: &str =
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    crate::web::page(
        status,
        title,
        &format!("<h1>{}</h1>{body}", esc(title)),
        "/oauth/style.css",
        CSP,
    )
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let class = if status.is_success() {
        ""
    } else {
        " class=\"error\" role=\"alert\""
    };
    page(status, title, &format!("<p{class}>{}</p>", esc(text)))
}

/// Sends the browser to the gateway's sign-in, which comes back to `next`.
fn sign_in_first(next: &str) -> Response {
    let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(l) = HeaderValue::from_str(&format!("/oauth/signin?next={next}")) {
        r.headers_mut().insert(header::LOCATION, l);
    }
    crate::web::secure_headers(r.headers_mut());
    r
}

fn when(t: SystemTime) -> String {
    mcp_guard_core::time::format_rfc3339(t)
}

impl Approvals {
    /// Why `me` may not answer approval `id` on the page now, if not: the event to
    /// record with the refusal, and the reason.
    fn page_answer_allowed(&self, id: &str, me: &Principal) -> Result<AuditEvent, Box<(AuditEvent, String)>> {
        let st = lock(&self.inner.state);
        match st.pending.get(id) {
            Some(p) if p.channel == Channel::Web => {
                let event = p.event.clone();
                if !self.may_decide(me, p.binding.subject()) {
                    Err(Box::new((
                        event,
                        "the signed-in principal may not decide this approval".to_owned(),
                    )))
                } else if p.expires <= Instant::now() {
                    Err(Box::new((
                        event,
                        "the approval expired before this answer came".to_owned(),
                    )))
                } else if p.decision.borrow().is_some() {
                    Err(Box::new((event, "the approval was already answered".to_owned())))
                } else {
                    Ok(event)
                }
            }
            _ => Err(Box::new((
                AuditEvent::new(super::placeholder()),
                match st.finished.get(id) {
                    Some(f) if f.what == "expired" => {
                        "the approval expired before this answer came".to_owned()
                    }
                    Some(f) => format!("the approval was already answered ({})", f.what),
                    None => "no such approval waits here".to_owned(),
                },
            ))),
        }
    }

    /// Hands a recorded answer to the call waiting for it; `Err` when the approval was
    /// answered or ended meanwhile (a second answer loses).
    fn publish_page_answer(&self, id: &str, me: &Principal, answer: &Answer) -> Result<(), String> {
        let mut st = lock(&self.inner.state);
        match st.pending.get_mut(id) {
            Some(p) if p.decision.borrow().is_none() && self.may_decide(me, p.binding.subject()) => {
                // The caller gets as long again to make the call once more.
                p.expires = Instant::now() + self.inner.settings.timeout;
                p.decision.send_replace(Some(answer.clone()));
                Ok(())
            }
            Some(_) => Err("the approval was already answered".to_owned()),
            None => Err("the approval ended before this answer came".to_owned()),
        }
    }

    fn browser(&self, headers: &HeaderMap) -> Option<Principal> {
        self.inner.browser.get().and_then(|(check, _)| check(headers))
    }

    /// A single-use token for the form of approval `id` shown to `principal`; `None`
    /// when the random source fails (the page is refused then).
    fn form_token(&self, id: &str, principal: &str) -> Option<String> {
        let token = random_id().ok()?;
        let mut forms = lock(&self.inner.forms);
        forms.retain(|_, (_, _, at)| at.elapsed() < FORM_TTL);
        // Bounded by the pending approvals' own bound: one live form per viewing.
        if forms.len() > 10 * self.inner.settings.max_pending.max(1) {
            forms.clear();
        }
        forms.insert(
            token.clone(),
            (id.to_owned(), principal.to_owned(), Instant::now()),
        );
        Some(token)
    }

    fn describe(id: &str, p: &Pending) -> String {
        let s = &p.shown;
        let target = s.target.as_ref().map_or_else(String::new, |t| {
            format!(
                "<dt>Server</dt><dd>{}</dd><dt>Tool (upstream name)</dt><dd>{}</dd>",
                esc(&t.server),
                esc(&t.name)
            )
        });
        format!(
            "<dl><dt>Tool</dt><dd><code>{name}</code></dd>{target}\
             <dt>Called by</dt><dd>{who}</dd><dt>Endpoint</dt><dd>{endpoint}</dd>\
             <dt>Session</dt><dd><code>{session}</code></dd>\
             <dt>Why it needs approval</dt><dd>{reason} (rule {rule})</dd>\
             <dt>Arguments (redacted)</dt><dd><pre>{args}</pre></dd>\
             <dt>Asked</dt><dd>{asked}</dd><dt>Expires</dt><dd>{expires}</dd>\
             <dt>Approval</dt><dd><code>{id}</code></dd></dl>",
            name = esc(&s.name),
            who = esc(&p.binding.who()),
            endpoint = esc(&p.binding.endpoint),
            session = esc(p.binding.session.as_deref().unwrap_or("(none)")),
            reason = esc(&s.reason),
            rule = esc(&s.rule),
            args = esc(&s.arguments),
            asked = when(s.requested_at),
            expires = when(s.expires_at),
            id = esc(id),
        )
    }
}

async fn list(State(a): State<Approvals>, headers: HeaderMap) -> Response {
    let Some(me) = a.browser(&headers) else {
        return sign_in_first("/approvals");
    };
    let rows: Vec<String> = {
        let st = lock(&a.inner.state);
        let mut v: Vec<(&String, &Pending)> = st
            .pending
            .iter()
            .filter(|(_, p)| p.channel == Channel::Web && p.decision.borrow().is_none())
            .filter(|(_, p)| a.may_decide(&me, p.binding.subject()))
            .collect();
        v.sort_by_key(|(_, p)| p.shown.requested_at);
        v.into_iter()
            .map(|(id, p)| {
                format!(
                    "<li><a href=\"/approvals/{id}\"><code>{}</code></a> for {} ({})</li>",
                    esc(&p.shown.name),
                    esc(&p.binding.who()),
                    esc(&p.shown.reason),
                    id = esc(id)
                )
            })
            .collect()
    };
    let body = if rows.is_empty() {
        format!("<p>Nothing waits for a decision by {}.</p>", esc(me.id()))
    } else {
        format!("<ul>{}</ul>", rows.concat())
    };
    page(StatusCode::OK, "Calls waiting for approval", &body)
}

/// Whether `id` is shaped like an approval's id (`a_` and 32 hex digits).
fn is_id(id: &str) -> bool {
    id.strip_prefix("a_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn unknown() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Unknown approval",
        "No approval with this link waits here; it may have been for another gateway or a restarted one.",
    )
}

async fn show(State(a): State<Approvals>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !is_id(&id) {
        return unknown();
    }
    let Some(me) = a.browser(&headers) else {
        return sign_in_first(&format!("/approvals/{id}"));
    };
    let view = {
        let st = lock(&a.inner.state);
        match st.pending.get(&id) {
            Some(p) if p.channel == Channel::Web => Ok((
                Approvals::describe(&id, p),
                p.binding.subject().to_owned(),
                p.decision.borrow().clone(),
                p.event.clone(),
            )),
            _ => Err(st.finished.get(&id).map(|f| f.what)),
        }
    };
    let (described, subject, decided, event) = match view {
        Ok(v) => v,
        Err(Some(what)) => {
            return message(
                StatusCode::GONE,
                "No longer waiting",
                &format!("This approval is no longer waiting for a decision ({what})."),
            );
        }
        Err(None) => return unknown(),
    };
    if !a.may_decide(&me, &subject) {
        a.refused(
            event,
            Some(id),
            "the signed-in principal may not decide this approval",
            Some(me.id().to_owned()),
        )
        .await;
        return message(
            StatusCode::FORBIDDEN,
            "Not yours to decide",
            "This call acts for another user, and you hold no approver role.",
        );
    }
    if let Some(answer) = decided {
        return page(
            StatusCode::OK,
            "Already decided",
            &format!(
                "<p>This call was {} already.</p>{described}",
                if matches!(answer, Answer::Approved { .. }) {
                    "approved"
                } else {
                    "declined"
                }
            ),
        );
    }
    let Some(token) = a.form_token(&id, me.id()) else {
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unavailable",
            "The page could not be prepared; try again.",
        );
    };
    let body = format!(
        "<p>You are signed in as <b>{me}</b>. A call through the gateway waits for a person's approval.</p>\
         {described}\
         <form method=\"post\" action=\"/approvals/{id}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <div class=\"actions\">\
         <button name=\"decision\" value=\"once\">Approve this call</button>\
         <button name=\"decision\" value=\"session\">Approve this tool for the session</button>\
         <button name=\"decision\" value=\"decline\" class=\"secondary\">Decline</button>\
         </div></form>",
        me = esc(me.id()),
        id = esc(&id),
        token = esc(&token),
    );
    page(StatusCode::OK, "Approve a call?", &body)
}

#[derive(serde::Deserialize)]
struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
}

async fn decide(
    State(a): State<Approvals>,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<DecideForm>,
) -> Response {
    if !is_id(&id) {
        return unknown();
    }
    let Some(me) = a.browser(&headers) else {
        return sign_in_first(&format!("/approvals/{id}"));
    };
    // The token must come from a page shown for this approval to this principal.
    let token_ok = !form.csrf.is_empty()
        && lock(&a.inner.forms)
            .remove(&form.csrf)
            .is_some_and(|(for_id, who, at)| for_id == id && who == me.id() && at.elapsed() < FORM_TTL);
    if !token_ok {
        return message(
            StatusCode::BAD_REQUEST,
            "Form expired",
            "The form is invalid or expired; open the approval link again.",
        );
    }
    match a.decide_as(&id, &me, &form.decision).await {
        Decided::Recorded(text) => message(StatusCode::OK, "Decision recorded", text),
        Decided::Unknown => message(
            StatusCode::BAD_REQUEST,
            "Unknown decision",
            "Choose one of the buttons.",
        ),
        Decided::NotRecorded => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not recorded",
            "The decision could not be recorded in the audit trail, so it does not stand. Try again.",
        ),
        Decided::Refused(reason) => message(
            StatusCode::CONFLICT,
            "Not accepted",
            &format!("Your answer was not accepted: {reason}."),
        ),
    }
}

/// What became of a person's decision on an approval ([`Approvals::decide_as`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decided {
    /// Recorded in the audit trail and handed to the waiting call; what to tell the
    /// person.
    Recorded(&'static str),
    /// Not one of `once`, `session`, `decline`.
    Unknown,
    /// The audit record could not be written: the decision does not stand.
    NotRecorded,
    /// Refused (and audited): not this person's to decide, expired, answered already,
    /// or no such approval waits on the page.
    Refused(String),
}

impl Approvals {
    /// `me` decides approval `id` (one asked on the page): `once`, `session` or
    /// `decline`. Checked under the lock, recorded, then published under the lock
    /// again, so a decision that is not in the audit trail never reaches the waiting
    /// call, and of two answers only the first counts.
    pub(crate) async fn decide_as(&self, id: &str, me: &Principal, decision: &str) -> Decided {
        let by = Some(me.id().to_owned());
        let answer = match decision {
            "once" => Answer::Approved {
                for_session: false,
                by,
            },
            "session" => Answer::Approved {
                for_session: true,
                by,
            },
            "decline" => Answer::Declined { by },
            _ => return Decided::Unknown,
        };
        let event = match self.page_answer_allowed(id, me) {
            Ok(event) => event,
            Err(refused) => {
                let (event, reason) = *refused;
                self.refused(event, Some(id.to_owned()), &reason, Some(me.id().to_owned()))
                    .await;
                return Decided::Refused(reason);
            }
        };
        if self
            .answered(id, event.clone(), Channel::Web, answer.name(), answer.by())
            .await
            .is_err()
        {
            return Decided::NotRecorded;
        }
        if let Err(reason) = self.publish_page_answer(id, me, &answer) {
            self.refused(event, Some(id.to_owned()), &reason, Some(me.id().to_owned()))
                .await;
            return Decided::Refused(reason);
        }
        Decided::Recorded(match answer {
            Answer::Approved {
                for_session: false, ..
            } => "Approved. The call runs when it is made again (the agent or client retries it).",
            Answer::Approved {
                for_session: true, ..
            } => "Approved for the rest of the session. The call runs when it is made again.",
            Answer::Declined { .. } => "Declined. The call will not run.",
        })
    }

    /// The calls waiting for a person's approval now, oldest first, as `me` may see
    /// them (the operator console lists them all; `may_decide` says which `me` may
    /// decide, which only an approval asked on the page can be).
    pub(crate) fn waiting(&self, me: &Principal) -> Vec<Waiting> {
        let st = lock(&self.inner.state);
        let mut v: Vec<Waiting> = st
            .pending
            .iter()
            .map(|(id, p)| {
                let decided = p.decision.borrow().is_some();
                Waiting {
                    id: id.clone(),
                    name: p.shown.name.clone(),
                    target: p
                        .shown
                        .target
                        .as_ref()
                        .map(|t| (t.server.to_string(), t.name.to_string())),
                    who: p.binding.who(),
                    endpoint: p.binding.endpoint.clone(),
                    session: p.binding.session.clone(),
                    channel: p.channel.as_str(),
                    rule: p.shown.rule.to_string(),
                    reason: p.shown.reason.to_string(),
                    arguments: p.shown.arguments.clone(),
                    requested_at: p.shown.requested_at,
                    expires_at: p.shown.expires_at,
                    decided,
                    may_decide: p.channel == Channel::Web
                        && !decided
                        && self.may_decide(me, p.binding.subject()),
                }
            })
            .collect();
        v.sort_by_key(|w| w.requested_at);
        v
    }
}

/// A call waiting for a person's approval, as the operator console lists it.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    /// The approval's id.
    pub(crate) id: String,
    /// The exposed tool name.
    pub(crate) name: String,
    /// Server and upstream tool name.
    pub(crate) target: Option<(String, String)>,
    /// Who calls (and for whom).
    pub(crate) who: String,
    pub(crate) endpoint: String,
    pub(crate) session: Option<String>,
    /// How the person is asked: `elicitation`, `input-required` or `web`.
    pub(crate) channel: &'static str,
    pub(crate) rule: String,
    pub(crate) reason: String,
    /// The arguments after redaction.
    pub(crate) arguments: String,
    pub(crate) requested_at: SystemTime,
    pub(crate) expires_at: SystemTime,
    /// Decided on the page; the call has not been made again yet.
    pub(crate) decided: bool,
    /// Whether the viewer may decide it here.
    pub(crate) may_decide: bool,
}
