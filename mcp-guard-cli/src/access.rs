//! `mcp-guard tokens …` and `mcp-guard sessions …`: gateway-issued API tokens and the
//! gateway sessions they (and JWTs) open, in the access store shared with `serve`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use std::sync::Arc;

use mcp_guard_core::access::{AccessStore, SessionState, parse_duration};
use mcp_guard_core::cluster::SharedTokens;
use mcp_guard_core::{Principal, PrincipalKind};

#[derive(Subcommand, Debug)]
pub(crate) enum TokensCommand {
    /// Issues an API token with an access duration; prints it once.
    Issue {
        /// The configuration file (locates the access store).
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// Who presents it.
        #[arg(long)]
        principal: String,
        /// The principal is an agent (robot identity), not a person.
        #[arg(long)]
        agent: bool,
        /// Roles (repeat the flag).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// For an agent: the user it acts for.
        #[arg(long)]
        on_behalf_of: Option<String>,
        /// Attributes for policy conditions, `key=value` (repeat the flag).
        #[arg(long = "attr")]
        attributes: Vec<String>,
        /// How long it is valid: `30d`, `12h`, `15m`, `2w`.
        #[arg(long)]
        duration: String,
        /// A note for listings (where the token went).
        #[arg(long)]
        description: Option<String>,
    },
    /// Lists tokens (never their secrets).
    List {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// JSON Lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a token: refused from the next request, its sessions closed.
    Revoke {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// The token id (the 12 hex digits after `mcpg_`).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SessionsCommand {
    /// Lists gateway sessions (active ones unless --all), each in the state it is in
    /// now: active, revoked (the session, or its token or grant), expired, or ended (its
    /// gateway process stopped).
    List {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// Include revoked, expired and ended sessions.
        #[arg(long)]
        all: bool,
        /// JSON Lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a session: its next request is refused and its streams close.
    Revoke {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// The session id (`s_…`).
        id: String,
    },
    /// Clears a session's flow taint (what its earlier calls did, for flow rules): the
    /// calls flow rules refused become possible again. A running gateway applies it
    /// within a second; calls made after the clear taint the session anew.
    ClearTaint {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// The session id (`s_…`).
        id: String,
    },
}

pub(crate) fn open(config_path: &Path) -> anyhow::Result<AccessStore> {
    let loaded = mcp_guard_tower::server::load_config(config_path)?;
    let path = mcp_guard_tower::server::access_store_path(&loaded.config, loaded.base_dir());
    AccessStore::open(&path).with_context(|| format!("opening the access store {}", path.display()))
}

fn when(t: Option<std::time::SystemTime>) -> String {
    t.map_or_else(|| "never".to_owned(), mcp_guard_core::time::format_rfc3339)
}

/// The token store: the shared database with `[cluster]`, else the access store.
async fn token_store(config: &Path) -> anyhow::Result<Arc<dyn SharedTokens>> {
    Ok(match crate::cluster::shared(config).await? {
        Some(shared) => Arc::new(shared),
        None => Arc::new(open(config)?),
    })
}

pub(crate) async fn tokens(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Issue {
            config,
            principal,
            agent,
            roles,
            on_behalf_of,
            attributes,
            duration,
            description,
        } => {
            let duration = parse_duration(&duration).map_err(anyhow::Error::msg)?;
            if principal.trim().is_empty() || principal.chars().any(char::is_control) {
                bail!("--principal: give a non-empty id without control characters");
            }
            if on_behalf_of.is_some() && !agent {
                bail!("--on-behalf-of is for agents: add --agent");
            }
            let kind = if agent {
                PrincipalKind::Agent
            } else {
                PrincipalKind::User
            };
            let mut p = Principal::new(principal, kind).with_roles(roles);
            if let Some(u) = on_behalf_of {
                p = p.acting_for(u);
            }
            for a in attributes {
                let (k, v) = a
                    .split_once('=')
                    .with_context(|| format!("--attr {a:?}: expected key=value"))?;
                p = p.with_attribute(k, v);
            }
            let store = token_store(&config).await?;
            let (record, token) = store.issue(&p, Some(duration), description.as_deref()).await?;
            eprintln!(
                "issued token {} for {} {} (roles: {}), expires {}",
                record.id,
                p.kind(),
                p.id(),
                if p.roles().is_empty() {
                    "none".to_owned()
                } else {
                    p.roles().join(", ")
                },
                when(record.expires)
            );
            eprintln!("this is the only time the token is shown:");
            #[expect(
                clippy::disallowed_methods,
                reason = "the one place a new token is shown to its owner"
            )]
            let shown = secrecy::ExposeSecret::expose_secret(&token).to_owned();
            outln!("{shown}");
            Ok(())
        }
        TokensCommand::List { config, json } => {
            let store = token_store(&config).await?;
            let tokens = store.list().await?;
            if json {
                for t in &tokens {
                    outln!("{}", serde_json::to_string(t)?);
                }
                return Ok(());
            }
            if tokens.is_empty() {
                outln!("no tokens (issue one with `mcp-guard tokens issue`)");
            }
            for t in &tokens {
                let state = if t.revoked.is_some() {
                    "revoked"
                } else if t.expires.is_some_and(|e| e <= std::time::SystemTime::now()) {
                    "expired"
                } else {
                    "active"
                };
                outln!(
                    "{}  {:<8} {} {:<16} roles={:<20} expires={}  {}",
                    t.id,
                    state,
                    t.principal.kind(),
                    t.principal.id(),
                    t.principal.roles().join(","),
                    when(t.expires),
                    t.description.as_deref().unwrap_or("")
                );
            }
            Ok(())
        }
        TokensCommand::Revoke { config, id } => revoke_token(&config, &id).await,
    }
}

/// `tokens revoke`: the token, and its open sessions with it.
async fn revoke_token(config: &Path, id: &str) -> anyhow::Result<()> {
    if let Some(shared) = crate::cluster::shared(config).await? {
        if shared.revoke(id).await? {
            outln!(
                "revoked token {id} in the cluster's shared state; every replica refuses it within its max_staleness and closes its sessions"
            );
            return Ok(());
        }
        bail!("no active token {id:?} (see `mcp-guard tokens list`)");
    }
    let store = open(config)?;
    let credential = format!("token:{id}");
    let open_sessions = store
        .list_sessions()?
        .iter()
        .filter(|s| s.credential == credential && s.state == SessionState::Active)
        .count();
    if store.revoke_token(id)? {
        outln!(
            "revoked token {id} and its {open_sessions} open session{}; a running gateway refuses it from its next request",
            if open_sessions == 1 { "" } else { "s" }
        );
        Ok(())
    } else {
        bail!("no active token {id:?} (see `mcp-guard tokens list`)")
    }
}

pub(crate) fn sessions(command: SessionsCommand) -> anyhow::Result<()> {
    match command {
        SessionsCommand::List { config, all, json } => {
            let store = open(&config)?;
            let (sessions, hidden): (Vec<_>, Vec<_>) = store
                .list_sessions()?
                .into_iter()
                .partition(|s| all || s.state == SessionState::Active);
            if json {
                for s in &sessions {
                    outln!("{}", serde_json::to_string(s)?);
                }
                return Ok(());
            }
            if sessions.is_empty() {
                outln!("no active sessions");
            }
            for s in &sessions {
                let who = match &s.on_behalf_of {
                    Some(user) => format!("{} for {user}", s.principal),
                    None => s.principal.clone(),
                };
                let ended = match s.ended {
                    Some(t) => format!(" {}={}", s.state, mcp_guard_core::time::format_rfc3339(t)),
                    None => String::new(),
                };
                let taint = if s.taint.is_empty() {
                    String::new()
                } else {
                    format!(" taint={}", s.taint)
                };
                outln!(
                    "{}  {:<8} {} {:<16} endpoint={:<12} via={} last_seen={} expires={}{ended}{taint}",
                    s.id,
                    s.state,
                    s.kind,
                    who,
                    s.endpoint,
                    s.credential,
                    mcp_guard_core::time::format_rfc3339(s.last_seen),
                    when(s.expires)
                );
            }
            if !hidden.is_empty() {
                eprintln!(
                    "({} revoked, expired or ended session{} not shown: --all lists them)",
                    hidden.len(),
                    if hidden.len() == 1 { "" } else { "s" }
                );
            }
            Ok(())
        }
        SessionsCommand::ClearTaint { config, id } => {
            let store = open(&config)?;
            let marks = store.session_taint(&id)?;
            if !store.clear_taint(&id, std::time::SystemTime::now())? {
                bail!("no session {id:?} (see `mcp-guard sessions list --all`)");
            }
            if marks.is_empty() {
                outln!("session {id} carried no flow taint; nothing to clear");
            } else {
                let labels: mcp_guard_core::flow::Labels = marks.iter().map(|m| m.label).collect();
                outln!(
                    "cleared the flow taint of session {id} ({labels}); a running gateway applies it within a second"
                );
                for m in &marks {
                    outln!("  was: {m}");
                }
            }
            Ok(())
        }
        SessionsCommand::Revoke { config, id } => {
            let store = open(&config)?;
            if store.revoke_session(&id, std::time::SystemTime::now())? {
                outln!("revoked session {id}; a running gateway closes it within a second");
                Ok(())
            } else {
                bail!("no active session {id:?} (see `mcp-guard sessions list`)")
            }
        }
    }
}
