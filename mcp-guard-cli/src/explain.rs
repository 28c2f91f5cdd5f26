//! `mcp-guard explain`: what the grants decide for one principal, endpoint and target,
//! and which rule decided, without starting the gateway or contacting an upstream.
//!
//! Exit status: 0 when the call would be allowed (a grant allows it and the endpoint's
//! selection exposes it), 1 when it would be refused (by a deny, by default deny, by a
//! flow rule, or because the endpoint does not expose it), 2 for a usage or
//! configuration error, 3 when it would wait for a person's approval.
//!
//! With `--session`, the principal, the endpoint and the session's flow taint come from
//! the access store: the output names the earlier calls that set the taint a flow rule
//! reads.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use mcp_guard_core::config::GatewayConfig;
use mcp_guard_core::flow::{Labels, Taint};
use mcp_guard_core::{
    Action, CallContext, Decision, Denial, Operation, Principal, PrincipalKind, Target, TargetKind,
};

/// Exit status of a refusal.
pub(crate) const EXIT_DENIED: u8 = 1;
/// Exit status of a usage or configuration error.
pub(crate) const EXIT_ERROR: u8 = 2;
/// Exit status of a call that would wait for a person's approval.
pub(crate) const EXIT_APPROVAL: u8 = 3;

/// What kind of name `--tool` is.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Kind {
    Tool,
    Prompt,
    Resource,
    Template,
}

impl From<Kind> for TargetKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Tool => Self::Tool,
            Kind::Prompt => Self::Prompt,
            Kind::Resource => Self::Resource,
            Kind::Template => Self::ResourceTemplate,
        }
    }
}

/// `mcp-guard explain` arguments.
#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// The configuration file.
    #[arg(long, short, env = "MCP_GUARD_CONFIG")]
    config: PathBuf,
    /// The principal's id (with `--session`: the session's).
    #[arg(long, required_unless_present = "session")]
    principal: Option<String>,
    /// A role the principal holds (repeatable).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// The principal is an agent, not a user.
    #[arg(long)]
    agent: bool,
    /// A principal attribute, `key=value` (repeatable).
    #[arg(long = "attr", value_parser = parse_attr)]
    attributes: Vec<(String, String)>,
    /// The endpoint the call comes through (with `--session`: the session's).
    #[arg(long, required_unless_present = "session")]
    endpoint: Option<String>,
    /// A gateway session (`s_…`, see `sessions list`): its principal, endpoint and
    /// flow taint come from the access store, and the output names the earlier calls
    /// that set the taint.
    #[arg(long)]
    session: Option<String>,
    /// The name as a client sends it (`github__create_issue`, `files+file:///a` for a
    /// resource), or the upstream's own name when `--server` is given.
    #[arg(long)]
    tool: String,
    /// The server; then `--tool` is the upstream's own name.
    #[arg(long)]
    server: Option<String>,
    /// What `--tool` names.
    #[arg(long, value_enum, default_value = "tool")]
    kind: Kind,
    /// The call's arguments, a JSON object.
    #[arg(long)]
    args: Option<String>,
}

fn parse_attr(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

/// The target `name` resolves to on `endpoint`: (server, upstream name).
fn resolve(config: &GatewayConfig, a: &ExplainArgs, endpoint: &str) -> anyhow::Result<(String, String)> {
    let ep = config
        .endpoints
        .get(endpoint)
        .with_context(|| format!("no endpoint named {endpoint:?} in the configuration"))?;
    if let Some(server) = &a.server {
        if !ep.servers.contains_key(server) {
            bail!("endpoint {endpoint:?} has no server {server:?}");
        }
        return Ok((server.clone(), a.tool.clone()));
    }
    if !ep.namespace {
        let server = ep.servers.keys().next().context("the endpoint has no server")?;
        return Ok((server.clone(), a.tool.clone()));
    }
    let sep = match a.kind {
        Kind::Tool | Kind::Prompt => config.gateway.separator.as_str(),
        Kind::Resource | Kind::Template => "+",
    };
    // Server ids never contain the separator, so the first one ends the server part.
    let (server, name) = a.tool.split_once(sep).with_context(|| {
        format!(
            "{:?} has no {sep:?}: name it as the endpoint exposes it (<server>{sep}<name>) or give --server",
            a.tool
        )
    })?;
    if !ep.servers.contains_key(server) {
        bail!(
            "{:?} names server {server:?}, which endpoint {endpoint:?} does not federate (it would answer as unknown)",
            a.tool,
        );
    }
    Ok((server.to_owned(), name.to_owned()))
}

fn rule_text(d: &Decision) -> String {
    match d {
        Decision::Deny(Denial {
            rule: Some(r),
            flow: Some(_),
            ..
        }) => format!("flow rule {r:?}"),
        Decision::NeedsApproval(n) if n.flow.is_some() => format!("flow rule {:?}", n.rule),
        _ => match d.rule() {
            Some(r) => format!("grant {r:?}"),
            None => "no grant matched (default deny)".to_owned(),
        },
    }
}

/// Who a session is, where, and what its calls have done, from the access store.
struct SessionView {
    principal: Principal,
    endpoint: String,
    taint: Taint,
    /// Said when the session's credential does not record roles and attributes.
    note: Option<String>,
}

/// The session `id` from the access store: its principal (with the roles and
/// attributes of its issued or configured token where there is one, plus
/// `--role`/`--attr`), endpoint and flow taint.
fn session_view(config: &GatewayConfig, a: &ExplainArgs, id: &str) -> anyhow::Result<SessionView> {
    let store = crate::access::open(&a.config)?;
    let info = store
        .list_sessions()?
        .into_iter()
        .find(|s| s.id == id)
        .with_context(|| format!("no session {id:?} (see `mcp-guard sessions list --all`)"))?;
    let issued = info
        .credential
        .strip_prefix("token:")
        .and_then(|t| store.list_tokens().ok()?.into_iter().find(|r| r.id == t))
        .map(|r| r.principal);
    let configured = info
        .credential
        .strip_prefix("config:")
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| config.auth.tokens.get(n.checked_sub(1)?))
        .map(|t| mcp_guard_tower::server::principal(&t.principal));
    let recorded = issued.or(configured);
    let note = recorded.is_none().then(|| {
        format!(
            "the session's credential ({}) does not record roles or attributes: --role and --attr give them",
            info.credential
        )
    });
    let mut principal = recorded.unwrap_or_else(|| {
        let p = Principal::new(info.principal.clone(), info.kind);
        match &info.on_behalf_of {
            Some(u) => p.acting_for(u.clone()),
            None => p,
        }
    });
    principal = principal.with_roles(a.roles.iter().cloned());
    for (k, v) in &a.attributes {
        principal = principal.with_attribute(k.clone(), v.clone());
    }
    let taint = Taint::new();
    for m in store.session_taint(id)? {
        taint.record(m);
    }
    Ok(SessionView {
        principal,
        endpoint: info.endpoint,
        taint,
        note,
    })
}

/// Runs `explain`; returns the exit status.
#[allow(clippy::too_many_lines, reason = "one report, top to bottom")]
pub(crate) fn run(a: &ExplainArgs) -> anyhow::Result<u8> {
    let loaded = mcp_guard_tower::server::load_config(&a.config)?;
    let config = &loaded.config;
    let policy = mcp_guard_tower::server::grant_policy(config)?;
    let kind = if a.agent {
        PrincipalKind::Agent
    } else {
        PrincipalKind::User
    };
    let (principal, endpoint, taint, note) = if let Some(id) = &a.session {
        let v = session_view(config, a, id)?;
        if let Some(p) = a.principal.as_deref().filter(|p| *p != v.principal.id()) {
            bail!(
                "--principal {p:?} is not the session's principal {:?}",
                v.principal.id()
            );
        }
        if let Some(e) = a.endpoint.as_deref().filter(|e| *e != v.endpoint) {
            bail!("--endpoint {e:?} is not the session's endpoint {:?}", v.endpoint);
        }
        (v.principal, v.endpoint, Some(Arc::new(v.taint)), v.note)
    } else {
        let mut p =
            Principal::new(a.principal.clone().unwrap_or_default(), kind).with_roles(a.roles.iter().cloned());
        for (k, v) in &a.attributes {
            p = p.with_attribute(k.clone(), v.clone());
        }
        (p, a.endpoint.clone().unwrap_or_default(), None, None)
    };
    let (server, name) = resolve(config, a, &endpoint)?;
    let arguments = match &a.args {
        None => None,
        Some(text) => match serde_json::from_str::<serde_json::Value>(text).context("--args is not JSON")? {
            serde_json::Value::Object(m) => Some(m),
            _ => bail!("--args must be a JSON object"),
        },
    };
    let mut ctx = CallContext::new(Arc::new(principal), endpoint.as_str());
    ctx.taint.clone_from(&taint);
    let target = Target::new(server.as_str(), name.as_str(), a.kind.into());
    let call = Operation::new(Action::Call, Some(target.clone()), a.tool.as_str()).with_arguments(arguments);
    let decision = policy.decide(&call, &ctx);
    let listed = policy.decide(&Operation::new(Action::List, Some(target), a.tool.as_str()), &ctx);
    let mcp_guard_tower::server::replay::Exposure { exposed, why, .. } =
        mcp_guard_tower::server::replay::exposure(config, &endpoint, &server, a.kind.into(), &name);

    let verdict = match (&decision, exposed) {
        (Decision::Allow { .. }, true) => "allow",
        (Decision::NeedsApproval(_), true) => "allow after a person's approval",
        _ => "deny",
    };
    outln!("decision: {verdict}");
    outln!(
        "policy:   {} by {}",
        match &decision {
            Decision::Allow { .. } => "allow",
            Decision::NeedsApproval(_) => "approval",
            _ => "deny",
        },
        rule_text(&decision)
    );
    outln!(
        "target:   server {server:?}, {} {name:?} on endpoint {endpoint:?}",
        TargetKind::from(a.kind),
    );
    outln!("exposed:  {why}");
    outln!(
        "listed:   {}",
        if listed.is_allow() && exposed {
            "yes (argument conditions are not applied to lists)".to_owned()
        } else if exposed {
            format!("no, {}", rule_text(&listed))
        } else {
            "no".to_owned()
        }
    );
    if TargetKind::from(a.kind) == TargetKind::Tool {
        outln!("labels:   {}", policy.labels_of(&server, &name));
    }
    if let Some(id) = &a.session {
        let marks = taint.as_ref().map(|t| t.marks()).unwrap_or_default();
        if marks.is_empty() {
            outln!("session:  {id}, no flow taint");
        } else {
            let labels: Labels = marks.iter().map(|m| m.label).collect();
            outln!("session:  {id}, taint {labels}, set by:");
            for m in &marks {
                outln!("          {m}");
            }
        }
        if let Some(n) = note {
            outln!("roles:    {n}");
        }
    }
    let flow = match &decision {
        Decision::Deny(Denial { flow: Some(f), .. }) => Some(f),
        Decision::NeedsApproval(n) => n.flow.as_ref(),
        _ => None,
    };
    if let Some(f) = flow {
        outln!("flow:     {}", f.explain());
        for m in &f.tainted_by {
            outln!("          tainted by {m}");
        }
    }
    if let Decision::NeedsApproval(n) = &decision {
        outln!("approval: {} ({})", n.reason, n.rule);
    }
    if decision.is_allow() && !exposed {
        outln!("note:     the grant allows it, but the endpoint does not expose it");
    }
    Ok(match (&decision, exposed) {
        (Decision::Allow { .. }, true) => 0,
        (Decision::NeedsApproval(_), true) => EXIT_APPROVAL,
        _ => EXIT_DENIED,
    })
}
