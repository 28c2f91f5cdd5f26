//! `mcp-guard explain`: what the grants decide for one principal, endpoint and target,
//! and which rule decided, without starting the gateway or contacting an upstream.
//!
//! Exit status: 0 when the call would be allowed (a grant allows it and the endpoint's
//! selection exposes it), 1 when it would be refused (by a deny, by default deny, or
//! because the endpoint does not expose it), 2 for a usage or configuration error.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use mcp_guard_core::config::GatewayConfig;
use mcp_guard_core::{
    Action, CallContext, Decision, Operation, Principal, PrincipalKind, Target, TargetKind,
};

/// Exit status of a refusal.
pub(crate) const EXIT_DENIED: u8 = 1;
/// Exit status of a usage or configuration error.
pub(crate) const EXIT_ERROR: u8 = 2;

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
    /// The principal's id.
    #[arg(long)]
    principal: String,
    /// A role the principal holds (repeatable).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// The principal is an agent, not a user.
    #[arg(long)]
    agent: bool,
    /// A principal attribute, `key=value` (repeatable).
    #[arg(long = "attr", value_parser = parse_attr)]
    attributes: Vec<(String, String)>,
    /// The endpoint the call comes through.
    #[arg(long)]
    endpoint: String,
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
fn resolve(config: &GatewayConfig, a: &ExplainArgs) -> anyhow::Result<(String, String)> {
    let ep = config
        .endpoints
        .get(&a.endpoint)
        .with_context(|| format!("no endpoint named {:?} in the configuration", a.endpoint))?;
    if let Some(server) = &a.server {
        if !ep.servers.contains_key(server) {
            bail!("endpoint {:?} has no server {server:?}", a.endpoint);
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
            "{:?} names server {server:?}, which endpoint {:?} does not federate (it would answer as unknown)",
            a.tool,
            a.endpoint
        );
    }
    Ok((server.to_owned(), name.to_owned()))
}

fn rule_text(d: &Decision) -> String {
    match d.rule() {
        Some(r) => format!("grant {r:?}"),
        None => "no grant matched (default deny)".to_owned(),
    }
}

/// Runs `explain`; returns the exit status.
pub(crate) fn run(a: &ExplainArgs) -> anyhow::Result<u8> {
    let loaded = mcp_guard_tower::server::load_config(&a.config)?;
    let config = &loaded.config;
    let policy = mcp_guard_tower::server::grant_policy(config)?;
    let (server, name) = resolve(config, a)?;
    let arguments = match &a.args {
        None => None,
        Some(text) => match serde_json::from_str::<serde_json::Value>(text).context("--args is not JSON")? {
            serde_json::Value::Object(m) => Some(m),
            _ => bail!("--args must be a JSON object"),
        },
    };
    let kind = if a.agent {
        PrincipalKind::Agent
    } else {
        PrincipalKind::User
    };
    let mut principal = Principal::new(a.principal.clone(), kind).with_roles(a.roles.iter().cloned());
    for (k, v) in &a.attributes {
        principal = principal.with_attribute(k.clone(), v.clone());
    }
    let ctx = CallContext::new(Arc::new(principal), a.endpoint.as_str());
    let target = Target::new(server.as_str(), name.as_str(), a.kind.into());
    let call = Operation::new(Action::Call, Some(target.clone()), a.tool.as_str()).with_arguments(arguments);
    let decision = policy.decide(&call, &ctx);
    let listed = policy.decide(&Operation::new(Action::List, Some(target), a.tool.as_str()), &ctx);
    let mcp_guard_tower::server::replay::Exposure { exposed, why, .. } =
        mcp_guard_tower::server::replay::exposure(config, &a.endpoint, &server, a.kind.into(), &name);

    let allowed = decision.is_allow() && exposed;
    outln!("decision: {}", if allowed { "allow" } else { "deny" });
    outln!(
        "policy:   {} by {}",
        if decision.is_allow() { "allow" } else { "deny" },
        rule_text(&decision)
    );
    outln!(
        "target:   server {server:?}, {} {name:?} on endpoint {:?}",
        TargetKind::from(a.kind),
        a.endpoint
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
    if decision.is_allow() && !exposed {
        outln!("note:     the grant allows it, but the endpoint does not expose it");
    }
    Ok(if allowed { 0 } else { EXIT_DENIED })
}
