//! What the console's forms do. Each handler first asks [`State::poster`] for the
//! operator (signed in, a console role, the CSRF token, the gateway's own origin; the
//! admin role for anything that changes something), and records what it did, or why
//! it refused, in the audit trail.

use std::sync::PoisonError;
use std::time::{Duration, SystemTime};

use axum::Form;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use mcp_guard_core::pin::{LockFile, tool_pin};
use mcp_guard_core::{Target, TargetKind};

use super::change::{self, Refused};
use super::{Params, Shared, one, pages};

/// The refusal page of a change that was not applied (and its audit record).
async fn not_applied(
    state: &super::State,
    op: &super::Operator,
    action: &str,
    what: &str,
    e: &Refused,
) -> Response {
    state
        .record(
            &op.principal,
            action,
            format!("{what}: refused, {e}"),
            false,
            None,
        )
        .await;
    let status = match e {
        Refused::Stale | Refused::NoFile => StatusCode::CONFLICT,
        Refused::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Refused::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let title = if matches!(e, Refused::Stale) {
        "Stale change"
    } else {
        "Change refused"
    };
    pages::refusal(status, title, &format!("Not applied: {e}. Nothing was changed."))
}

/// The answer to a change that was made: its audit record, then the page it leads to
/// with `text` as the notice.
async fn applied(
    state: &super::State,
    op: &super::Operator,
    action: &str,
    detail: String,
    target: Option<Target>,
    to: &str,
    text: String,
) -> Response {
    state.record(&op.principal, action, detail, true, target).await;
    state.done(op, to, true, text)
}

fn missing(what: &str) -> Response {
    pages::refusal(
        StatusCode::BAD_REQUEST,
        "Invalid request",
        &format!("The form lacks {what} (or gives it twice)."),
    )
}

/// `POST /console/endpoints/toggle`: a tool on or off on an endpoint.
pub(super) async fn toggle_tool(state: Shared, headers: HeaderMap, Form(form): Form<Params>) -> Response {
    let (endpoint, server, tool) = (one(&form, "endpoint"), one(&form, "server"), one(&form, "tool"));
    let on = one(&form, "on") == Some("true");
    let what = format!(
        "{} tool {}/{} on endpoint {}",
        if on { "switch on" } else { "switch off" },
        server.unwrap_or("?"),
        tool.unwrap_or("?"),
        endpoint.unwrap_or("?")
    );
    let op = match state.poster(&headers, &form, "toggle_tool", &what, false).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let (Some(endpoint), Some(server), Some(tool), Some(digest)) =
        (endpoint, server, tool, one(&form, "digest"))
    else {
        return missing("the endpoint, server, tool or digest");
    };
    match state
        .change(digest, |doc| change::toggle_tool(doc, endpoint, server, tool, on))
        .await
    {
        Ok(a) => {
            applied(
                &state,
                &op,
                "toggle_tool",
                format!(
                    "{what}: done (config {} -> {}): {}",
                    short(&a.before),
                    short(&a.after),
                    a.report
                ),
                Some(Target::new(server, tool, TargetKind::Tool)),
                "/endpoints",
                format!(
                    "Tool {server}/{tool} is {} on endpoint {endpoint}. {}",
                    if on { "on" } else { "off" },
                    a.report
                ),
            )
            .await
        }
        Err(e) => not_applied(&state, &op, "toggle_tool", &what, &e).await,
    }
}

/// `POST /console/endpoints/redaction`: personal-data redaction of one direction on
/// or off on an endpoint.
pub(super) async fn redaction(state: Shared, headers: HeaderMap, Form(form): Form<Params>) -> Response {
    let (endpoint, direction) = (one(&form, "endpoint"), one(&form, "direction"));
    let on = one(&form, "on") == Some("true");
    let what = format!(
        "redaction of {} {} on endpoint {}",
        direction.unwrap_or("?"),
        if on { "on" } else { "off" },
        endpoint.unwrap_or("?")
    );
    let op = match state.poster(&headers, &form, "set_redaction", &what, false).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let (Some(endpoint), Some(direction), Some(digest)) = (endpoint, direction, one(&form, "digest")) else {
        return missing("the endpoint, direction or digest");
    };
    match state
        .change(digest, |doc| change::set_redaction(doc, endpoint, direction, on))
        .await
    {
        Ok(a) => {
            applied(
                &state,
                &op,
                "set_redaction",
                format!("{what}: done: {}", a.report),
                None,
                "/endpoints",
                format!("Redaction updated. {}", a.report),
            )
            .await
        }
        Err(e) => not_applied(&state, &op, "set_redaction", &what, &e).await,
    }
}

/// `POST /console/servers/test`: connects to one server anew (a separate connection,
/// as `check --connect` makes) and reads its tools.
pub(super) async fn test_connection(state: Shared, headers: HeaderMap, Form(form): Form<Params>) -> Response {
    let server = one(&form, "server");
    let what = format!("test connection to {}", server.unwrap_or("?"));
    let op = match state
        .poster(&headers, &form, "test_connection", &what, false)
        .await
    {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Some(server) = server else {
        return missing("the server");
    };
    // Transport errors may quote what a server said: secrets are scrubbed as in logs.
    let result = state
        .test(server)
        .await
        .map_err(|e| state.p.redactor.redact_str(&e).into_owned());
    state
        .tests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(server.to_owned(), (SystemTime::now(), result.clone()));
    let (ok, text) = match &result {
        Ok(m) => (true, format!("{server}: {m}")),
        Err(m) => (false, format!("{server}: connection failed: {m}")),
    };
    state
        .record(
            &op.principal,
            "test_connection",
            format!("{what}: {text}"),
            true,
            None,
        )
        .await;
    state.done(&op, "/servers", ok, text)
}

impl super::State {
    async fn test(&self, server: &str) -> Result<String, String> {
        let mut cfg = self.p.reloader.running().await;
        let Some(def) = cfg.servers.get(server).cloned() else {
            return Err("no such server".to_owned());
        };
        cfg.servers.retain(|id, _| id == server);
        let stores = crate::server::credentials::stores(&cfg, &self.p.base, None, &self.p.known)
            .map_err(|e| format!("{e:#}"))?;
        let upstream = crate::server::upstreams::upstreams(&cfg, &stores, &self.p.redactor)
            .map_err(|e| format!("{e:#}"))?
            .into_iter()
            .next()
            .map(|(u, _)| u)
            .ok_or("no such server")?;
        let limit = def.start_timeout() + Duration::from_secs(5);
        let outcome = tokio::time::timeout(limit, upstream.catalog()).await;
        upstream.shutdown().await;
        match outcome {
            Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
            Ok(Err(e)) => Err(mcp_guard_core::upstream::error_chain(&e)),
            Ok(Ok(cat)) => {
                let protocol = cat
                    .server_info
                    .as_ref()
                    .map(|i| i.protocol_version.as_str().to_owned())
                    .unwrap_or_default();
                Ok(format!(
                    "connected (protocol {protocol}), {} tools",
                    cat.tools.len()
                ))
            }
        }
    }
}

/// `POST /console/approvals/approve`: pins the definition the operator read (by its
/// pin) into the lock file; the gateway re-reads its servers and admits it.
pub(super) async fn approve(state: Shared, headers: HeaderMap, Form(form): Form<Params>) -> Response {
    let (server, tool, pin) = (one(&form, "server"), one(&form, "tool"), one(&form, "pin"));
    let what = format!("approve tool {}/{}", server.unwrap_or("?"), tool.unwrap_or("?"));
    let op = match state.poster(&headers, &form, "approve_tool", &what, false).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let (Some(server), Some(tool), Some(pin)) = (server, tool, pin) else {
        return missing("the server, tool or pin");
    };
    let Some(upstream) = state
        .p
        .gateway
        .servers()
        .into_iter()
        .find(|(id, _, _)| id.as_ref() == server)
        .map(|(_, u, _)| u)
    else {
        return missing("a known server");
    };
    // The definition the server serves now must be the one whose diff was read.
    let current = match tokio::time::timeout(Duration::from_secs(10), upstream.catalog()).await {
        Ok(Ok(c)) => c.tools.iter().find(|t| t.name == tool).cloned(),
        _ => None,
    };
    let Some(definition) = current.filter(|t| tool_pin(t) == pin) else {
        let e = Refused::Invalid(
            "the server no longer offers the definition whose diff you read (it changed again, or went away); read the new diff".into(),
        );
        return not_applied(&state, &op, "approve_tool", &what, &e).await;
    };
    let saved = {
        let _one_at_a_time = state.change.lock().await;
        LockFile::load(&state.p.lock_path)
            .map(Option::unwrap_or_default)
            .and_then(|mut lock| {
                lock.approve_tool(server, &definition);
                lock.save(&state.p.lock_path).map(|()| lock)
            })
    };
    match saved {
        Ok(lock) => {
            state.p.pins.reload(lock);
            state.p.gateway.reread().await;
            applied(
                &state,
                &op,
                "approve_tool",
                format!("{what}: done, pinned {pin}"),
                Some(Target::new(server, tool, TargetKind::Tool)),
                "/approvals",
                format!("Approved {server}/{tool} ({pin})."),
            )
            .await
        }
        Err(e) => not_applied(&state, &op, "approve_tool", &what, &Refused::Io(e.to_string())).await,
    }
}

/// `POST /console/approvals/calls`: a call waiting for a person's approval, approved
/// (once or for the session) or declined by a signed-in person who may decide it on
/// the approval page. The answer is an `approval_answered` record naming the approver,
/// and the console's own record says it was given here.
pub(super) async fn decide_call(state: Shared, headers: HeaderMap, Form(form): Form<Params>) -> Response {
    let (id, decision) = (one(&form, "approval"), one(&form, "decision"));
    let what = format!("{} call approval {}", decision.unwrap_or("?"), id.unwrap_or("?"));
    // Not a change of the gateway's configuration: who may decide is the approval's
    // rule (an approver role, or the user the call acts for), whatever the console role.
    let op = match state.poster(&headers, &form, "decide_call", &what, true).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let (Some(id), Some(decision)) = (id, decision) else {
        return missing("the approval or the decision");
    };
    let target = state
        .p
        .approvals
        .waiting(&op.principal)
        .into_iter()
        .find(|w| w.id == id)
        .and_then(|w| w.target)
        .map(|(server, tool)| Target::new(server, tool, TargetKind::Tool));
    match state.p.approvals.decide_as(id, &op.principal, decision).await {
        crate::approval::Decided::Recorded(text) => {
            applied(
                &state,
                &op,
                "decide_call",
                format!("{what}: done"),
                target,
                "/approvals",
                text.to_owned(),
            )
            .await
        }
        crate::approval::Decided::Unknown => missing("a decision of once, session or decline"),
        crate::approval::Decided::NotRecorded => pages::refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not recorded",
            "The decision could not be recorded in the audit trail, so it does not stand. Try again.",
        ),
        crate::approval::Decided::Refused(reason) => {
            state
                .record(
                    &op.principal,
                    "decide_call",
                    format!("{what}: refused, {reason}"),
                    false,
                    target,
                )
                .await;
            pages::refusal(
                StatusCode::CONFLICT,
                "Not accepted",
                &format!("Your decision was not accepted: {reason}."),
            )
        }
    }
}

/// `POST /console/approvals/reject`: the definition stays unapproved, and the tool
/// is switched off on every endpoint that exposes it (so a later approval does not
/// expose it by accident).
pub(super) async fn reject(state: Shared, headers: HeaderMap, Form(form): Form<Params>) -> Response {
    let (server, tool) = (one(&form, "server"), one(&form, "tool"));
    let what = format!("reject tool {}/{}", server.unwrap_or("?"), tool.unwrap_or("?"));
    let op = match state.poster(&headers, &form, "reject_tool", &what, false).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let (Some(server), Some(tool), Some(digest)) = (server, tool, one(&form, "digest")) else {
        return missing("the server, tool or digest");
    };
    let running = state.p.reloader.running().await;
    let endpoints: Vec<String> = running
        .endpoints
        .iter()
        .filter(|(_, e)| e.servers.contains_key(server))
        .map(|(n, _)| n.clone())
        .collect();
    let result = state
        .change(digest, |doc| {
            for e in &endpoints {
                change::toggle_tool(doc, e, server, tool, false)?;
            }
            Ok(())
        })
        .await;
    match result {
        Ok(a) => {
            applied(
                &state,
                &op,
                "reject_tool",
                format!(
                    "{what}: done, switched off on {}: {}",
                    endpoints.join(", "),
                    a.report
                ),
                Some(Target::new(server, tool, TargetKind::Tool)),
                "/approvals",
                format!(
                    "Rejected {server}/{tool}: it stays unapproved and is off on {}.",
                    endpoints.join(", ")
                ),
            )
            .await
        }
        Err(e) => not_applied(&state, &op, "reject_tool", &what, &e).await,
    }
}

/// `POST /console/sessions/revoke`: ends a gateway session now (its client's next
/// request is refused; a grant's session ends the grant).
pub(super) async fn revoke(state: Shared, headers: HeaderMap, Form(form): Form<Params>) -> Response {
    let session = one(&form, "session");
    let what = format!("revoke session {}", session.unwrap_or("?"));
    let op = match state
        .poster(&headers, &form, "revoke_session", &what, false)
        .await
    {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Some(session) = session else {
        return missing("the session");
    };
    let known = state
        .p
        .store
        .list_sessions()
        .unwrap_or_default()
        .into_iter()
        .find(|s| s.id == session);
    let Some(info) = known else {
        return pages::refusal(StatusCode::NOT_FOUND, "Not found", "No such session.");
    };
    let found = state.p.sessions.revoke(session);
    let detail = format!(
        "{what} (principal {}, endpoint {}, credential {}): {}",
        info.principal,
        info.endpoint,
        info.credential,
        if found { "done" } else { "not found" }
    );
    state
        .record(&op.principal, "revoke_session", detail, found, None)
        .await;
    state.done(
        &op,
        "/sessions",
        found,
        if found {
            format!("Revoked the session of {} on {}.", info.principal, info.endpoint)
        } else {
            "That session was not found.".to_owned()
        },
    )
}

/// `POST /console/config/check`: checks a proposed file (as `mcp-guard check`) and
/// replays the recorded calls' policy decisions under it (`check --against-audit`).
/// Changes nothing, so the auditor role may use it too.
pub(super) async fn config_check(state: Shared, headers: HeaderMap, Form(form): Form<Params>) -> Response {
    let op = match state
        .poster(
            &headers,
            &form,
            "check_config",
            "check a proposed configuration",
            true,
        )
        .await
    {
        Ok(o) => o,
        Err(r) => return r,
    };
    let text = one(&form, "text").unwrap_or_default();
    let outcome = state.check(text).await;
    pages::config_page(&state, &op, Some(text), Some(outcome)).await
}

/// `POST /console/config/apply`: applies a proposed file (stale when the file
/// changed since the page was rendered).
pub(super) async fn config_apply(state: Shared, headers: HeaderMap, Form(form): Form<Params>) -> Response {
    let what = "apply a proposed configuration".to_owned();
    let op = match state.poster(&headers, &form, "apply_config", &what, false).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let (Some(text), Some(digest)) = (one(&form, "text"), one(&form, "digest")) else {
        return missing("the text or digest");
    };
    let text = text.replace("\r\n", "\n");
    match state.change_text(digest, |_| Ok(text)).await {
        Ok(a) => {
            applied(
                &state,
                &op,
                "apply_config",
                format!(
                    "{what}: done (config {} -> {}): {}",
                    short(&a.before),
                    short(&a.after),
                    a.report
                ),
                None,
                "/config",
                format!("Applied: {}", a.report),
            )
            .await
        }
        Err(e) => not_applied(&state, &op, "apply_config", &what, &e).await,
    }
}

/// The first 12 characters of a digest.
fn short(d: &str) -> &str {
    d.get(..12).unwrap_or(d)
}
