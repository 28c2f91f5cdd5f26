//! The console's pages, as maud templates: every value is escaped by the template
//! engine (a server's description or a tool's text holding markup shows as text).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::PoisonError;
use std::time::{Duration, SystemTime};

use axum::extract::Query;
use axum::response::Response;
use http::{HeaderMap, StatusCode, Uri};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use mcp_guard_core::UpstreamState;
use mcp_guard_core::audit::AuditQuery;
use mcp_guard_core::config::{AuditSinkKind, GatewayConfig, ServerConfig};
use mcp_guard_core::credential::CredentialKey;
use mcp_guard_core::pin::{Admission, LockFile, ToolGate as _, tool_pin};
use mcp_guard_core::time::format_rfc3339;
use rmcp::model::Tool;

use super::{Notice, Operator, Params, Role, Shared, State, one};

/// What the console adds to the shared stylesheet.
pub(super) const STYLE: &str = "\
body.console main{max-width:76rem;margin:1.5rem auto}\
body.console header{background:#1b2a3a;color:#fff;padding:.5rem 1.5rem;display:flex;flex-wrap:wrap;gap:1rem;align-items:center;justify-content:space-between}\
body.console header a{color:#fff}body.console nav ul{list-style:none;display:flex;flex-wrap:wrap;gap:1rem;margin:0;padding:0}\
body.console nav a[aria-current=page]{font-weight:700;text-decoration:underline}\
.notice{padding:.6rem 1rem;border-radius:6px;background:#e7f4ea;color:#114d22}.notice.bad{background:#fbe9ea;color:#7a1016}\
pre{white-space:pre-wrap;word-break:break-word;background:#f3f4f6;padding:.75rem;border-radius:6px;font-size:.85rem}\
td form{display:inline}td{vertical-align:top}.tag{display:inline-block;font-size:.75rem;border:1px solid #99a;border-radius:4px;padding:0 .3rem;margin:0 .2rem .2rem 0}\
.muted{color:#555}.state-failed,.state-missing_credentials{color:#a1151b;font-weight:600}.state-connected{color:#176b2c;font-weight:600}\
form.search{display:grid;grid-template-columns:repeat(auto-fill,minmax(11rem,1fr));gap:.5rem;align-items:end}\
form.search label{display:grid;font-size:.9rem}textarea{width:100%;min-height:24rem;font:.85rem/1.4 ui-monospace,monospace;box-sizing:border-box}\
button.small{padding:.2rem .6rem;font-size:.9rem}";

/// The one script the pages run (with the response's nonce): a confirmation before
/// forms marked `data-confirm` are sent. Everything works without it.
const SCRIPT: &str = "document.addEventListener('submit',function(e){var m=e.target.getAttribute('data-confirm');if(m&&!window.confirm(m)){e.preventDefault();}});";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tab {
    Servers,
    Endpoints,
    Approvals,
    Sessions,
    Audit,
    Config,
}

const TABS: [(Tab, &str, &str); 6] = [
    (Tab::Servers, "/servers", "Servers"),
    (Tab::Endpoints, "/endpoints", "Endpoints"),
    (Tab::Approvals, "/approvals", "Approvals"),
    (Tab::Sessions, "/sessions", "Sessions"),
    (Tab::Audit, "/audit", "Audit"),
    (Tab::Config, "/config", "Config"),
];

fn nonce() -> String {
    mcp_guard_core::hex::random(16).unwrap_or_default()
}

fn csp(nonce: &str) -> String {
    // Without a nonce (the random source failed) no script runs at all.
    let script = if nonce.is_empty() {
        "'none'".to_owned()
    } else {
        format!("'nonce-{nonce}'")
    };
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src {script}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

fn respond(status: StatusCode, markup: &Markup, nonce: &str) -> Response {
    let mut r = crate::web::html_response(status, markup.0.clone(), &csp(nonce));
    // Forms post with the gateway's own Origin (checked), not `null`.
    r.headers_mut().insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("same-origin"),
    );
    r
}

/// A page of its own for a refusal (no navigation: the user may hold no role).
pub(super) fn refusal(status: StatusCode, title: &str, detail: &str) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · mcp-guard console" }
                link rel="stylesheet" href="/oauth/style.css";
            }
            body {
                main {
                    h1 { (title) }
                    p.error role="alert" { (detail) }
                }
            }
        }
    };
    respond(status, &markup, "")
}

impl State {
    fn page(&self, op: &Operator, tab: Tab, title: &str, notice: Option<&Notice>, body: &Markup) -> Response {
        let n = nonce();
        let role = match op.role {
            Role::Admin => self.p.settings.admin_role.as_str(),
            Role::Auditor => self.p.settings.auditor_role.as_str(),
        };
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · mcp-guard console" }
                    link rel="stylesheet" href=(self.path("/style.css"));
                }
                body.console {
                    header {
                        nav aria-label="Console" {
                            ul {
                                @for (t, path, label) in TABS {
                                    li { a href=(self.path(path)) aria-current=[(t == tab).then_some("page")] { (label) } }
                                }
                            }
                        }
                        p #who { "Signed in as " strong { (op.principal.id()) } " (" (role) ")" }
                    }
                    main {
                        h1 { (title) }
                        @if op.role == Role::Auditor {
                            p.muted { "Read-only: your role can look at everything and change nothing." }
                        }
                        @if let Some(n) = notice {
                            p.notice.bad[!n.ok] #notice role="status" { (n.text) }
                        }
                        (body)
                    }
                    @if !n.is_empty() {
                        script nonce=(n) { (PreEscaped(SCRIPT)) }
                    }
                }
            }
        };
        respond(StatusCode::OK, &markup, &n)
    }

    fn hidden(op: &Operator) -> Markup {
        html! { input type="hidden" name="csrf" value=(op.csrf); }
    }
}

fn since(t: SystemTime) -> String {
    format_rfc3339(t)
}

fn ago(t: SystemTime) -> String {
    let d = SystemTime::now().duration_since(t).unwrap_or_default();
    human(d)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

// ---- Servers ---------------------------------------------------------------------------

fn transport(s: &ServerConfig) -> &'static str {
    match s {
        ServerConfig::Stdio(_) => "stdio",
        ServerConfig::Http(_) => "http",
        ServerConfig::Sse(_) => "sse",
        _ => "other",
    }
}

/// The personal credential names of a server, and whether it signs in per user
/// with OAuth.
fn personal(s: &ServerConfig) -> (Vec<String>, bool) {
    match s {
        ServerConfig::Stdio(x) => (x.personal.clone(), false),
        ServerConfig::Http(h) | ServerConfig::Sse(h) => (
            h.personal.clone(),
            h.oauth
                .as_ref()
                .is_some_and(|o| o.mode == mcp_guard_core::config::OAuthModeConfig::Personal),
        ),
        _ => (Vec::new(), false),
    }
}

/// How many configured users hold a server's personal credentials, in words.
async fn coverage(
    def: Option<&ServerConfig>,
    stores: Option<&super::super::credentials::Stores>,
    users: &[String],
    id: &str,
) -> String {
    match (def.map(personal), stores) {
        (Some((names, _)), Some(stores)) if !names.is_empty() => {
            let mut have = Vec::new();
            for u in users {
                let mut all = true;
                for n in &names {
                    let key = CredentialKey::personal(id, u.as_str(), n.as_str());
                    all &= matches!(stores.calls.get(&key).await, Ok(Some(_)));
                }
                if all {
                    have.push(u.as_str());
                }
            }
            let missing: Vec<&str> = users
                .iter()
                .map(String::as_str)
                .filter(|u| !have.contains(u))
                .collect();
            let mut s = format!(
                "{} of {} configured users ({})",
                have.len(),
                users.len(),
                names.join(", ")
            );
            if !missing.is_empty() {
                let _ = write!(s, "; missing: {}", missing.join(", "));
            }
            s
        }
        (Some((_, true)), _) => "each user signs in with OAuth (their own account page)".to_owned(),
        _ => "no personal credentials".to_owned(),
    }
}

pub(super) async fn servers(state: Shared, headers: HeaderMap, uri: Uri) -> Response {
    let op = match state.viewer(&headers, &uri).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let cfg = state.p.reloader.running().await;
    let users: Vec<String> = cfg
        .auth
        .server
        .as_ref()
        .map(|a| a.users.iter().map(|u| u.id.clone()).collect())
        .unwrap_or_default();
    let stores = super::super::credentials::stores(&cfg, &state.p.base, None, &state.p.known).ok();
    let mut rows = Vec::new();
    for (id, upstream, enabled) in state.p.gateway.servers() {
        let status = upstream.status();
        let (word, reason) = match &status.state {
            _ if !enabled => ("disabled", "switched off (enabled = false)".to_owned()),
            UpstreamState::Connected => ("connected", String::new()),
            UpstreamState::Idle => ("idle", "not started yet (it starts on first use)".to_owned()),
            UpstreamState::MissingCredentials { missing } => (
                "missing_credentials",
                format!("missing credentials: {}", missing.join(", ")),
            ),
            UpstreamState::Disabled => ("disabled", "switched off (enabled = false)".to_owned()),
            UpstreamState::Failed { error } => ("failed", error.clone()),
            UpstreamState::Stopped => ("stopped", "stopped".to_owned()),
            _ => ("unknown", String::new()),
        };
        if let UpstreamState::Failed { error } = &status.state {
            state
                .last_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.to_string(), (status.since, error.clone()));
        }
        let last_error = state
            .last_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id.as_ref())
            .cloned();
        let test = state
            .tests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id.as_ref())
            .cloned();
        let def = cfg.servers.get(id.as_ref());
        let coverage = coverage(def, stores.as_ref(), &users, &id).await;
        rows.push((
            id,
            def.map_or("?", transport),
            def.and_then(ServerConfig::description).map(str::to_owned),
            word,
            status.since,
            reason,
            last_error,
            test,
            coverage,
        ));
    }
    let flash = state.take_flash(&op);
    let body = html! {
        table {
            thead { tr {
                th scope="col" { "Server" } th scope="col" { "State" } th scope="col" { "Reason" }
                th scope="col" { "Last error" } th scope="col" { "Personal credentials" } th scope="col" { "Connection" }
            } }
            tbody {
                @for (id, transport, description, word, since_t, reason, last_error, test, coverage) in &rows {
                    tr #{ "server-" (id) } {
                        td { strong { (id) } " " span.muted { "(" (transport) ")" }
                            @if let Some(d) = description { br; span.muted.description { (d) } } }
                        td { span class={ "state state-" (word) } #{ "state-" (id) } { (word) } br; span.muted { "since " (since(*since_t)) } }
                        td #{ "reason-" (id) } { (reason) }
                        td { @if let Some((t, e)) = last_error { (e) br; span.muted { (ago(*t)) " ago" } } @else { span.muted { "none seen" } } }
                        td { (coverage) }
                        td {
                            @if let Some((t, r)) = test {
                                p #{ "test-" (id) } { @match r { Ok(m) => { "OK: " (m) }, Err(m) => { "Failed: " (m) } } br; span.muted { "tested " (ago(*t)) " ago" } }
                            }
                            form method="post" action=(state.path("/servers/test")) {
                                (State::hidden(&op))
                                input type="hidden" name="server" value=(id);
                                button.small.secondary type="submit" #{ "test-button-" (id) } disabled[op.role != Role::Admin] { "Test connection" }
                            }
                        }
                    }
                }
            }
        }
    };
    state.page(&op, Tab::Servers, "Servers", flash.as_ref(), &body)
}

// ---- Endpoints -------------------------------------------------------------------------

/// The catalogue of every server (a server that does not answer in time is left out).
async fn catalogues(state: &State) -> BTreeMap<String, Vec<Tool>> {
    let mut out = BTreeMap::new();
    for (id, upstream, enabled) in state.p.gateway.servers() {
        if !enabled
            || !matches!(
                upstream.status().state,
                UpstreamState::Connected | UpstreamState::Idle
            )
        {
            continue;
        }
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(3), upstream.catalog()).await {
            out.insert(id.to_string(), c.tools.clone());
        }
    }
    out
}

fn labels(t: &Tool) -> Vec<&'static str> {
    let mut out = Vec::new();
    if let Some(a) = &t.annotations {
        if a.read_only_hint == Some(true) {
            out.push("read-only");
        }
        if a.destructive_hint == Some(true) {
            out.push("destructive");
        }
        if a.idempotent_hint == Some(true) {
            out.push("idempotent");
        }
        if a.open_world_hint == Some(true) {
            out.push("open world");
        }
    }
    out
}

/// Whether the endpoint's selection switches `tool` of `server` on (as the
/// federation decides it).
fn switched_on(cfg: &GatewayConfig, endpoint: &str, server: &str, tool: &str) -> bool {
    let Some(sel) = cfg.endpoints.get(endpoint).and_then(|e| e.servers.get(server)) else {
        return false;
    };
    sel.enabled
        && sel
            .tools
            .iter()
            .any(|g| mcp_guard_core::policy::Pattern::new(g).is_ok_and(|p| p.is_match(tool)))
        && !sel.disabled_tools.iter().any(|t| t == tool)
}

/// The pin state of a tool, in words.
fn pin_state(state: &State, lock: Option<&LockFile>, server: &str, tool: &Tool) -> (String, bool) {
    match state.p.pins.admit(server, tool, &[]) {
        Admission::Quarantine { reason, .. } => (format!("quarantined: {reason}"), true),
        Admission::Warn { reason, .. } => (format!("admitted with a warning: {reason}"), false),
        _ => {
            let pinned = lock
                .and_then(|l| l.tool(server, &tool.name))
                .is_some_and(|l| l.sha256 == tool_pin(tool));
            (if pinned { "approved" } else { "not pinned" }.to_owned(), false)
        }
    }
}

pub(super) async fn endpoints(state: Shared, headers: HeaderMap, uri: Uri) -> Response {
    let op = match state.viewer(&headers, &uri).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let cfg = state.p.reloader.running().await;
    let digest = state.file().map(|(_, d)| d).unwrap_or_default();
    let cats = catalogues(&state).await;
    let lock = LockFile::load(&state.p.lock_path).ok().flatten();
    let sep = state.p.gateway.separator().to_owned();
    let admin = op.role == Role::Admin;
    let flash = state.take_flash(&op);
    let body = html! {
        @for (name, ep) in &cfg.endpoints {
            section #{ "endpoint-" (name) } {
                h2 { "Endpoint " code { (name) } }
                @if let Some(d) = &ep.description { p.description { (d) } }
                h3 { "Personal-data redaction" }
                table {
                    thead { tr { th scope="col" { "Direction" } th scope="col" { "State" } th scope="col" { "Change" } } }
                    tbody {
                        @for (dir, on, label) in [("requests", ep.redaction.requests, "Arguments, before they reach a server"), ("responses", ep.redaction.responses, "Results, before they reach the client")] {
                            tr {
                                td { (label) }
                                td #{ "redaction-" (name) "-" (dir) } { @if on { "on" } @else { "off" } }
                                td { form method="post" action=(state.path("/endpoints/redaction")) {
                                    (State::hidden(&op))
                                    input type="hidden" name="endpoint" value=(name);
                                    input type="hidden" name="direction" value=(dir);
                                    input type="hidden" name="on" value=(!on);
                                    input type="hidden" name="digest" value=(digest);
                                    button.small.secondary type="submit" disabled[!admin] { @if on { "Turn off" } @else { "Turn on" } }
                                } }
                            }
                        }
                    }
                }
                p.muted {
                    "Kinds: " (ep.redaction.rules.detect.iter().map(|k| format!("{k:?}").to_lowercase()).collect::<Vec<_>>().join(", "))
                    "; style: " (format!("{:?}", ep.redaction.rules.style).to_lowercase())
                    ". Secrets and the credentials the gateway holds are always removed from results and audit records."
                }
                @for (server, sel) in &ep.servers {
                    h3 { "Server " code { (server) } @if !sel.enabled { " (off on this endpoint)" } }
                    @match cats.get(server) {
                        None => p.muted { "Its tools are not known now (the server is not connected)." },
                        Some(tools) => table {
                            thead { tr {
                                th scope="col" { "Tool" } th scope="col" { "Labels" } th scope="col" { "Pin" }
                                th scope="col" { "State" } th scope="col" { "Switch" }
                            } }
                            tbody {
                                @for t in tools {
                                    @let on = switched_on(&cfg, name, server, &t.name);
                                    @let (pin, _) = pin_state(&state, lock.as_ref(), server, t);
                                    @let exposed = if ep.namespace { format!("{server}{sep}{}", t.name) } else { t.name.to_string() };
                                    tr {
                                        td { code { (exposed) } br; span.muted.description { (t.description.as_deref().unwrap_or_default()) } }
                                        td { @for l in labels(t) { span.tag { (l) } } }
                                        td { (pin) }
                                        td #{ "tool-" (name) "-" (server) "-" (t.name) } { @if on { "on" } @else { "off" } }
                                        td { form method="post" action=(state.path("/endpoints/toggle")) {
                                            (State::hidden(&op))
                                            input type="hidden" name="endpoint" value=(name);
                                            input type="hidden" name="server" value=(server);
                                            input type="hidden" name="tool" value=(t.name);
                                            input type="hidden" name="on" value=(!on);
                                            input type="hidden" name="digest" value=(digest);
                                            button.small.secondary type="submit" #{ "toggle-" (name) "-" (server) "-" (t.name) } disabled[!admin]
                                                aria-label={ @if on { "Turn off " } @else { "Turn on " } (exposed) } {
                                                @if on { "Turn off" } @else { "Turn on" }
                                            }
                                        } }
                                    }
                                }
                            }
                        },
                    }
                }
            }
        }
    };
    state.page(&op, Tab::Endpoints, "Endpoints", flash.as_ref(), &body)
}

// ---- Approvals -------------------------------------------------------------------------

pub(super) async fn approvals(state: Shared, headers: HeaderMap, uri: Uri) -> Response {
    let op = match state.viewer(&headers, &uri).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let cats = catalogues(&state).await;
    let digest = state.file().map(|(_, d)| d).unwrap_or_default();
    let mut held = Vec::new();
    for (server, tools) in &cats {
        for t in tools {
            if let Admission::Quarantine { reason, diff } = state.p.pins.admit(server, t, &[]) {
                held.push((
                    server.clone(),
                    t.clone(),
                    reason,
                    diff.unwrap_or_default(),
                    tool_pin(t),
                ));
            }
        }
    }
    let admin = op.role == Role::Admin;
    let flash = state.take_flash(&op);
    let body = html! {
        section #tools {
            h2 { "Tool definitions waiting for approval" }
            @if held.is_empty() {
                p #no-quarantine { "Nothing is quarantined." }
            }
            @for (server, t, reason, diff, pin) in &held {
                article.held #{ "held-" (server) "-" (t.name) } {
                    h3 { code { (server) "/" (t.name) } }
                    p { strong { "Why: " } (reason) }
                    p.muted.description { (t.description.as_deref().unwrap_or_default()) }
                    h4 { "What changed (approved → offered now)" }
                    pre.diff { (diff) }
                    p.muted { "Pin of the definition offered now: " code { (pin) } }
                    div.actions {
                        form method="post" action=(state.path("/approvals/approve")) data-confirm={ "Approve " (server) "/" (t.name) "?" } {
                            (State::hidden(&op))
                            input type="hidden" name="server" value=(server);
                            input type="hidden" name="tool" value=(t.name);
                            input type="hidden" name="pin" value=(pin);
                            button type="submit" #{ "approve-" (server) "-" (t.name) } disabled[!admin] { "Approve" }
                        }
                        form method="post" action=(state.path("/approvals/reject")) data-confirm={ "Reject " (server) "/" (t.name) " and switch it off?" } {
                            (State::hidden(&op))
                            input type="hidden" name="server" value=(server);
                            input type="hidden" name="tool" value=(t.name);
                            input type="hidden" name="digest" value=(digest);
                            button.secondary type="submit" #{ "reject-" (server) "-" (t.name) } disabled[!admin] { "Reject" }
                        }
                    }
                }
            }
        }
        (waiting_calls(&state, &op))
    };
    state.page(&op, Tab::Approvals, "Approvals", flash.as_ref(), &body)
}

/// The Approvals page's second section: calls a grant or a flow rule holds for a
/// person's approval (who calls, what, why); whoever may decide one asked on the
/// approval page decides it here too.
fn waiting_calls(state: &State, op: &Operator) -> Markup {
    let calls = state.p.approvals.waiting(&op.principal);
    html! {
        section #calls {
            h2 { "Calls waiting for approval" }
            @if calls.is_empty() {
                p.muted #no-calls { "No call waits for a person's approval." }
            }
            @for w in &calls {
                article.held #{ "call-" (w.id) } {
                    h3 { code { (w.name) } " for " (w.who) }
                    dl {
                        @if let Some((server, tool)) = &w.target {
                            dt { "Server / tool" } dd { code { (server) "/" (tool) } }
                        }
                        dt { "Endpoint" } dd { code { (w.endpoint) } }
                        dt { "Session" } dd { code { (w.session.as_deref().unwrap_or("(none)")) } }
                        dt { "Why" } dd { (w.reason) " (rule " code { (w.rule) } ")" }
                        dt { "Arguments (redacted)" } dd { pre { (w.arguments) } }
                        dt { "Asked" } dd {
                            (since(w.requested_at)) ", "
                            (match w.channel {
                                "web" => "on the approval page",
                                "elicitation" => "of the calling client (elicitation)",
                                _ => "of the calling client (input-required)",
                            })
                        }
                        dt { "Expires" } dd { (since(w.expires_at)) }
                    }
                    @if w.decided {
                        p.muted { "Decided; the call runs or is refused when the client makes it again." }
                    } @else if w.channel != "web" {
                        p.muted { "The calling client asks its user; only that answer counts." }
                    } @else if !w.may_decide {
                        p.muted { "Only the user the call acts for or a holder of an approver role decides it." }
                    } @else {
                        form.actions method="post" action=(state.path("/approvals/calls")) data-confirm={ "Decide the call of " (w.name) "?" } {
                            (State::hidden(op))
                            input type="hidden" name="approval" value=(w.id);
                            button type="submit" name="decision" value="once" #{ "approve-call-" (w.id) } { "Approve this call" }
                            button type="submit" name="decision" value="session" { "Approve for the session" }
                            button.secondary type="submit" name="decision" value="decline" #{ "decline-call-" (w.id) } { "Decline" }
                        }
                    }
                }
            }
        }
    }
}

// ---- Sessions --------------------------------------------------------------------------

pub(super) async fn sessions(
    state: Shared,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<Params>,
) -> Response {
    let op = match state.viewer(&headers, &uri).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let all = one(&q, "all") == Some("1");
    let mut list = state.p.store.list_sessions().unwrap_or_default();
    list.retain(|s| all || s.state == mcp_guard_core::access::SessionState::Active);
    list.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
    list.truncate(500);
    let now = SystemTime::now();
    let admin = op.role == Role::Admin;
    let flash = state.take_flash(&op);
    let body = html! {
        p { @if all { a href=(state.path("/sessions")) { "Show active sessions only" } } @else { a href=(state.path("/sessions?all=1")) { "Show ended sessions too" } } }
        @if list.is_empty() { p { "No sessions." } }
        @else {
            table {
                thead { tr {
                    th scope="col" { "Principal" } th scope="col" { "Endpoint" } th scope="col" { "Credential" }
                    th scope="col" { "Opened" } th scope="col" { "Duration" } th scope="col" { "Last seen" }
                    th scope="col" { "Expires" } th scope="col" { "State" } th scope="col" { "Action" }
                } }
                tbody {
                    @for s in &list {
                        tr #{ "session-" (s.id) } {
                            td { (s.principal) @if let Some(u) = &s.on_behalf_of { br; span.muted { "for " (u) } } }
                            td { code { (s.endpoint) } }
                            td { code { (s.credential) } }
                            td { (since(s.created)) }
                            td { (human(s.ended.unwrap_or(now).duration_since(s.created).unwrap_or_default())) }
                            td { (ago(s.last_seen)) " ago" }
                            td { @if let Some(e) = s.expires { (since(e)) } @else { "never" } }
                            td { (s.state) }
                            td { @if s.state == mcp_guard_core::access::SessionState::Active {
                                form method="post" action=(state.path("/sessions/revoke")) data-confirm={ "Revoke the session of " (s.principal) "?" } {
                                    (State::hidden(&op))
                                    input type="hidden" name="session" value=(s.id);
                                    button.small.secondary type="submit" #{ "revoke-" (s.id) } disabled[!admin] { "Revoke" }
                                }
                            } }
                        }
                    }
                }
            }
        }
    };
    state.page(&op, Tab::Sessions, "Sessions", flash.as_ref(), &body)
}

// ---- Audit -----------------------------------------------------------------------------

/// What a check of the audit trail's chain found.
#[derive(Debug, Clone)]
pub(super) struct Chain {
    records: u64,
    head: Option<String>,
    problems: Vec<String>,
    torn: Option<String>,
    incomplete: usize,
}

/// Where the trail can be read: the SQLite database, else the JSON Lines directory.
enum Trail {
    Sqlite(std::path::PathBuf),
    Jsonl(std::path::PathBuf),
    None,
}

fn trail(cfg: &GatewayConfig, base: &std::path::Path) -> Trail {
    let a = &cfg.audit;
    if a.sinks.contains(&AuditSinkKind::Sqlite) {
        Trail::Sqlite(
            base.join(
                a.sqlite_path
                    .clone()
                    .unwrap_or_else(|| "mcp-guard-audit.db".into()),
            ),
        )
    } else if a.sinks.contains(&AuditSinkKind::Jsonl) {
        Trail::Jsonl(base.join(a.jsonl_dir.clone().unwrap_or_else(|| "audit".into())))
    } else {
        Trail::None
    }
}

fn parse_when(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if let Some(t) = mcp_guard_core::time::parse_rfc3339(s) {
        return Some(t);
    }
    // `datetime-local` inputs send `2026-11-21T09:30` (taken as UTC).
    if s.len() == 16 && s.as_bytes().get(10) == Some(&b'T') {
        return mcp_guard_core::time::parse_rfc3339(&format!("{s}:00Z"));
    }
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n * 60,
        'h' => n * 3600,
        'd' => n * 86_400,
        _ => return None,
    };
    SystemTime::now().checked_sub(Duration::from_secs(secs))
}

/// A found record: seq and the event.
type Found = (u64, serde_json::Value);

/// Records of a JSON Lines trail matching `q` (the newest `limit`, oldest first).
fn search_jsonl(dir: &std::path::Path, query: &AuditQuery, seq: Option<u64>) -> Result<Vec<Found>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let field = |value: &serde_json::Value, path: &[&str]| -> Option<String> {
        path.iter()
            .try_fold(value, |v, k| v.get(k))?
            .as_str()
            .map(str::to_owned)
    };
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let n = v["seq"].as_u64().unwrap_or(0);
            let event = &v["event"];
            if seq.is_some_and(|want| want != n) {
                continue;
            }
            let checks = [
                (&query.principal, field(event, &["principal", "id"])),
                (&query.endpoint, field(event, &["endpoint"])),
                (&query.server, field(event, &["target", "server"])),
                (&query.tool, field(event, &["target", "name"])),
                (&query.outcome, field(event, &["outcome"])),
                (&query.session, field(event, &["session"])),
                (&query.kind, field(event, &["type"])),
            ];
            if checks
                .iter()
                .any(|(want, have)| want.as_ref().is_some_and(|w| have.as_ref() != Some(w)))
            {
                continue;
            }
            let at = field(event, &["started_at"]).and_then(|t| mcp_guard_core::time::parse_rfc3339(&t));
            if query.since.is_some_and(|t| at.is_none_or(|a| a < t))
                || query.until.is_some_and(|t| at.is_none_or(|a| a >= t))
            {
                continue;
            }
            out.push((n, event.clone()));
        }
    }
    let limit = query.limit.unwrap_or(100);
    if out.len() > limit {
        out.drain(..out.len() - limit);
    }
    Ok(out)
}

async fn search(state: &State, q: AuditQuery, seq: Option<u64>) -> Result<Vec<Found>, String> {
    let cfg = state.p.reloader.running().await;
    match trail(&cfg, &state.p.base) {
        Trail::Sqlite(path) => tokio::task::spawn_blocking(move || {
            let mut q = q;
            if seq.is_some() {
                q.all_records = true;
                q.limit = None;
            }
            mcp_guard_core::audit::query_database(&path, &q)
                .map(|rows| {
                    rows.into_iter()
                        .filter(|r| seq.is_none_or(|s| s == r.seq))
                        .map(|r| (r.seq, r.event))
                        .collect()
                })
                .map_err(|e| mcp_guard_core::upstream::error_chain(&e))
        })
        .await
        .map_err(|e| e.to_string())?,
        Trail::Jsonl(dir) => tokio::task::spawn_blocking(move || search_jsonl(&dir, &q, seq))
            .await
            .map_err(|e| e.to_string())?,
        Trail::None => Err("no durable audit sink is configured ([audit] sinks)".to_owned()),
    }
}

async fn verify(state: &State) -> Result<Chain, String> {
    let cfg = state.p.reloader.running().await;
    let file = cfg.audit.mac_key_file.as_ref().map(|f| state.p.base.join(f));
    let key = super::super::mac_key(file.as_deref(), cfg.audit.mac_key_env.as_deref())
        .map_err(|e| e.to_string())?;
    let t = trail(&cfg, &state.p.base);
    if matches!(t, Trail::None) {
        return Err("no durable audit sink is configured ([audit] sinks)".to_owned());
    }
    let report = tokio::task::spawn_blocking(move || match t {
        Trail::Sqlite(p) => mcp_guard_core::audit::verify_database(&p, key.as_ref()),
        Trail::Jsonl(d) => mcp_guard_core::audit::verify_paths(&[d], key.as_ref()),
        Trail::None => Ok(mcp_guard_core::audit::VerifyReport::default()),
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| mcp_guard_core::upstream::error_chain(&e))?;
    Ok(Chain {
        records: report.records,
        head: report.head.clone(),
        problems: report.problems.iter().map(ToString::to_string).collect(),
        torn: report.torn_tail.as_ref().map(ToString::to_string),
        incomplete: report.incomplete.len(),
    })
}

fn event_row(seq: u64, e: &serde_json::Value) -> (u64, String, String, String, String, String, String) {
    let s = |path: &[&str]| {
        path.iter()
            .try_fold(e, |v, k| v.get(k))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut kind = s(&["type"]);
    let action = s(&["action"]);
    let method = s(&["method"]);
    if !action.is_empty() {
        let _ = write!(kind, " ({action})");
    } else if !method.is_empty() {
        let _ = write!(kind, " ({method})");
    }
    let target = match (s(&["target", "server"]), s(&["target", "name"])) {
        (a, b) if a.is_empty() => b,
        (a, b) => format!("{a}/{b}"),
    };
    (
        seq,
        s(&["started_at"]),
        kind,
        s(&["principal", "id"]),
        target,
        s(&["outcome"]),
        s(&["endpoint"]),
    )
}

pub(super) async fn audit(state: Shared, headers: HeaderMap, uri: Uri, Query(q): Query<Params>) -> Response {
    let op = match state.viewer(&headers, &uri).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let field = |n: &str| one(&q, n).map(str::to_owned);
    let mut query = AuditQuery::default();
    query.principal = field("principal");
    query.tool = field("tool");
    query.server = field("server");
    query.outcome = field("outcome");
    query.kind = field("type");
    query.session = field("session");
    query.endpoint = field("endpoint");
    query.since = one(&q, "since").and_then(parse_when);
    query.until = one(&q, "until").and_then(parse_when);
    query.limit = Some(
        one(&q, "limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(100)
            .min(1000),
    );
    let found = search(&state, query, None).await;
    if one(&q, "verify") == Some("1") {
        let result = verify(&state).await;
        *state.chain.lock().unwrap_or_else(PoisonError::into_inner) = Some((SystemTime::now(), result));
    }
    let chain = state.chain.lock().unwrap_or_else(PoisonError::into_inner).clone();
    // "Check the chain" keeps the search.
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in q.iter().filter(|(k, _)| k != "verify") {
        kept.append_pair(k, v);
    }
    kept.append_pair("verify", "1");
    let verify_href = state.path(&format!("/audit?{}", kept.finish()));
    let value = |n: &str| one(&q, n).unwrap_or_default().to_owned();
    let body = html! {
        form.search method="get" action=(state.path("/audit")) role="search" {
            @for (name, label, hint) in [("principal", "Principal", ""), ("tool", "Tool", "upstream name"), ("server", "Server", ""), ("outcome", "Outcome", "ok, denied, …"), ("type", "Type", "request, session_revoked, console_action, …"), ("session", "Session", ""), ("since", "Since", "RFC 3339 or 15m, 2h, 7d"), ("until", "Until", "RFC 3339 or an age")] {
                label { (label) input type="text" name=(name) value=(value(name)) placeholder=(hint); }
            }
            button type="submit" #search { "Search" }
        }
        section #chain {
            h2 { "Chain" }
            @match &chain {
                None => p { "Not checked yet. " a href=(verify_href) #verify { "Check the chain now" } },
                Some((t, Ok(c))) => {
                    p #chain-status {
                        @if c.problems.is_empty() { strong { "Intact" } } @else { strong.error { (c.problems.len()) " problem(s)" } }
                        ": " (c.records) " records"
                        @if let Some(h) = &c.head { ", head " code { (h.get(..16).unwrap_or(h)) } }
                        @if c.incomplete > 0 { "; " (c.incomplete) " call(s) started without an outcome" }
                        @if let Some(tt) = &c.torn { "; torn last line: " (tt) }
                        " (checked " (ago(*t)) " ago). "
                        a href=(verify_href) #verify { "Check again" }
                    }
                    @for p in c.problems.iter().take(20) { p.error { (p) } }
                },
                Some((_, Err(e))) => p.error { "The chain could not be checked: " (e) },
            }
        }
        section #results {
            h2 { "Records" }
            @match &found {
                Err(e) => p.error { (e) },
                Ok(rows) if rows.is_empty() => p { "No record matches." },
                Ok(rows) => table {
                    thead { tr {
                        th scope="col" { "Seq" } th scope="col" { "Time" } th scope="col" { "Type" } th scope="col" { "Principal" }
                        th scope="col" { "Endpoint" } th scope="col" { "Target" } th scope="col" { "Outcome" }
                    } }
                    tbody {
                        @for (seq, e) in rows.iter().rev() {
                            @let (n, time, kind, who, target, outcome, endpoint) = event_row(*seq, e);
                            tr.record {
                                td { a href=(state.path(&format!("/audit/record?seq={n}"))) { (n) } }
                                td { (time) } td.type { (kind) } td { (who) } td { (endpoint) } td { (target) } td { (outcome) }
                            }
                        }
                    }
                },
            }
        }
    };
    state.page(&op, Tab::Audit, "Audit", None, &body)
}

pub(super) async fn audit_record(
    state: Shared,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<Params>,
) -> Response {
    let op = match state.viewer(&headers, &uri).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Some(seq) = one(&q, "seq").and_then(|s| s.parse::<u64>().ok()) else {
        return refusal(StatusCode::BAD_REQUEST, "Invalid request", "Which record? (seq)");
    };
    let found = search(&state, AuditQuery::default(), Some(seq)).await;
    let body = html! {
        p { a href=(state.path("/audit")) { "Back to the search" } }
        @match found {
            Err(e) => p.error { (e) },
            Ok(rows) if rows.is_empty() => p { "No record " (seq) "." },
            Ok(rows) => @for (_, e) in &rows {
                p.muted { "As recorded: arguments and results were redacted before they were written." }
                pre #record { (serde_json::to_string_pretty(e).unwrap_or_default()) }
            },
        }
    };
    state.page(&op, Tab::Audit, &format!("Audit record {seq}"), None, &body)
}

// ---- Config ----------------------------------------------------------------------------

/// What checking a proposed configuration found.
pub(super) struct Checked {
    valid: Result<Vec<String>, String>,
    replay: Option<Result<String, String>>,
}

impl State {
    /// Checks `text` as `mcp-guard check` does, then replays the recorded calls'
    /// policy decisions under it.
    pub(super) async fn check(&self, text: &str) -> Checked {
        let path = self
            .p
            .config_path
            .clone()
            .unwrap_or_else(|| self.p.base.join("gateway.toml"));
        let loaded = match crate::server::load_config_text(&path, &text.replace("\r\n", "\n")) {
            Ok(l) => l,
            Err(e) => {
                return Checked {
                    valid: Err(e.to_string()),
                    replay: None,
                };
            }
        };
        let running = self.reloader_running().await;
        let trail = match trail(&running, &self.p.base) {
            Trail::Sqlite(p) | Trail::Jsonl(p) => Some(p),
            Trail::None => None,
        };
        let replay = match trail {
            None => Some(Err("no durable audit sink is configured".to_owned())),
            Some(t) => {
                let (config, base) = (loaded.config.clone(), self.p.base.clone());
                Some(
                    tokio::task::spawn_blocking(move || {
                        crate::server::replay::replay_text(&config, &base, &t)
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| format!("{e:#}"))),
                )
            }
        };
        Checked {
            valid: Ok(loaded.warnings),
            replay,
        }
    }

    async fn reloader_running(&self) -> GatewayConfig {
        self.p.reloader.running().await
    }
}

pub(super) async fn config(state: Shared, headers: HeaderMap, uri: Uri) -> Response {
    let op = match state.viewer(&headers, &uri).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    config_page(&state, &op, None, None).await
}

pub(super) async fn config_page(
    state: &State,
    op: &Operator,
    proposed: Option<&str>,
    checked: Option<Checked>,
) -> Response {
    let running = state.p.reloader.running().await;
    let effective = state.p.redactor.redact_str(&format!("{running:#?}")).into_owned();
    let file = state.file();
    let applied = state.p.reloader.applied_digest();
    let last = state.p.reloader.last();
    let flash = state.take_flash(op);
    let admin = op.role == Role::Admin;
    let body = html! {
        section #file {
            h2 { "The file" }
            @match (&state.p.config_path, &file) {
                (None, _) => p { "This gateway's configuration was built in code; the console cannot change it." },
                (Some(p), None) => p.error { (p.display()) " cannot be read." },
                (Some(p), Some((_, d))) => p {
                    code { (p.display()) } ", digest " code #digest { (d.get(..16).unwrap_or(d)) }
                    @if *d == applied { " (applied)" } @else { strong { " (differs from the configuration in force, digest " (applied.get(..16).unwrap_or(&applied)) ")" } }
                },
            }
        }
        section #last-reload {
            h2 { "Last reload" }
            @match &last {
                None => p { "No reload since the gateway started." },
                Some(l) => p #last-reload-result {
                    (since(l.at)) ": "
                    @match &l.outcome { Ok(r) => { "applied: " (r) }, Err(e) => { strong.error { "refused: " } (e) } }
                },
            }
        }
        @if let Some(c) = &checked {
            section #check-result {
                h2 { "Check of the proposed configuration" }
                @match &c.valid {
                    Err(e) => { p.error { "Invalid:" } pre { (e) } },
                    Ok(w) => {
                        p { strong { "Valid." } @if !w.is_empty() { " Warnings:" } }
                        @if !w.is_empty() { pre { (w.join("\n")) } }
                    },
                }
                @if let Some(r) = &c.replay {
                    h3 { "Recorded calls replayed under it (check --against-audit)" }
                    @match r { Ok(t) => pre #replay { (t) }, Err(e) => p.error { (e) } }
                }
            }
        }
        @if let Some((text, digest)) = &file {
            section #propose {
                h2 { "Propose a change" }
                form method="post" action=(state.path("/config/check")) {
                    (State::hidden(op))
                    input type="hidden" name="digest" value=(digest);
                    label for="text" { "Configuration file" }
                    textarea #text name="text" spellcheck="false" { (proposed.unwrap_or(text)) }
                    div.actions {
                        button type="submit" #check { "Check against the audit trail" }
                        button.secondary type="submit" #apply formaction=(state.path("/config/apply")) disabled[!admin] { "Apply" }
                    }
                }
            }
        }
        section #effective {
            h2 { "Effective configuration" }
            p.muted { "What the gateway runs now (settings that need a restart keep their running value)." }
            pre { (effective) }
        }
    };
    state.page(op, Tab::Config, "Config", flash.as_ref(), &body)
}
