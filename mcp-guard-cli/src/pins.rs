//! `mcp-guard tools approve` and `mcp-guard tools diff`: the operator's side of pinning.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use mcp_guard_core::Upstream;
use mcp_guard_core::pin::{Admission, GateMode, LockFile, PinGate, ToolGate, diff_definitions, tool_pin};

/// What to approve or compare.
pub(crate) struct Scope<'a> {
    pub(crate) endpoint: Option<&'a str>,
    pub(crate) server: Option<&'a str>,
    pub(crate) tool: Option<&'a str>,
}

/// The servers in scope (those of the endpoint, if one is named), connected.
fn servers(
    config_path: &Path,
    scope: &Scope<'_>,
) -> anyhow::Result<(std::path::PathBuf, Vec<Arc<dyn Upstream>>)> {
    let loaded = mcp_guard_tower::server::load_config(config_path)?;
    let base = loaded.base_dir().to_owned();
    let cfg = &loaded.config;
    let wanted: Option<BTreeSet<String>> = match scope.endpoint {
        Some(e) => Some(
            cfg.endpoints
                .get(e)
                .with_context(|| format!("no endpoint named {e:?}"))?
                .servers
                .keys()
                .cloned()
                .collect(),
        ),
        None => None,
    };
    let lock = mcp_guard_tower::server::lock_path(cfg, &base);
    let mut out = Vec::new();
    let upstreams = mcp_guard_tower::server::ServerBuilder::from_loaded(loaded)
        .known_secrets(crate::known_secrets())
        .upstreams()?;
    for (upstream, enabled) in upstreams {
        let id = upstream.id().to_owned();
        if !enabled
            || wanted.as_ref().is_some_and(|w| !w.contains(&id))
            || scope.server.is_some_and(|s| s != id)
        {
            continue;
        }
        out.push(upstream);
    }
    if let Some(s) = scope.server
        && out.is_empty()
    {
        anyhow::bail!("no enabled server {s:?} in scope");
    }
    Ok((lock, out))
}

#[allow(clippy::print_stdout, reason = "command output")]
pub(crate) async fn approve(config_path: &Path, scope: &Scope<'_>) -> anyhow::Result<()> {
    let (lock_path, upstreams) = servers(config_path, scope)?;
    let mut lock = LockFile::load(&lock_path)?.unwrap_or_default();
    let mut changed = 0;
    for u in &upstreams {
        let catalog = u
            .catalog()
            .await
            .with_context(|| format!("cannot read server {}", u.id()))?;
        for tool in catalog
            .tools
            .iter()
            .filter(|t| scope.tool.is_none_or(|n| n == t.name))
        {
            let before = lock.tool(u.id(), &tool.name).map(|l| l.sha256.clone());
            let pin = tool_pin(tool);
            if before.as_deref() != Some(pin.as_str()) {
                outln!(
                    "approved {}/{} {pin}{}",
                    u.id(),
                    tool.name,
                    if before.is_some() { " (changed)" } else { " (new)" }
                );
                changed += 1;
            }
            lock.approve_tool(u.id(), tool);
        }
        if scope.tool.is_none() {
            // Approving a whole server forgets tools it no longer offers.
            let offered: BTreeSet<&str> = catalog.tools.iter().map(|t| t.name.as_ref()).collect();
            if let Some(entry) = lock.servers.get_mut(u.id()) {
                let before = entry.tools.len();
                entry.tools.retain(|name, _| offered.contains(name.as_str()));
                if entry.tools.len() != before {
                    outln!(
                        "forgot {} tool(s) {} no longer offers",
                        before - entry.tools.len(),
                        u.id()
                    );
                }
            }
            lock.approve_instructions(
                u.id(),
                catalog
                    .server_info
                    .as_ref()
                    .and_then(|i| i.instructions.as_deref()),
            );
        }
        u.shutdown().await;
    }
    lock.save(&lock_path)?;
    outln!("{}: {changed} definition(s) approved", lock_path.display());
    Ok(())
}

/// Prints what waits for approval; returns how many entries differ.
#[allow(clippy::print_stdout, reason = "command output")]
pub(crate) async fn diff(config_path: &Path, scope: &Scope<'_>) -> anyhow::Result<usize> {
    let (lock_path, upstreams) = servers(config_path, scope)?;
    let lock = LockFile::load(&lock_path)?.unwrap_or_default();
    let gate = PinGate::new(lock.clone(), GateMode::Enforce, GateMode::Enforce);
    let mut pending = 0;
    for u in &upstreams {
        let catalog = u
            .catalog()
            .await
            .with_context(|| format!("cannot read server {}", u.id()))?;
        let names: BTreeSet<&str> = catalog.tools.iter().map(|t| t.name.as_ref()).collect();
        for tool in catalog
            .tools
            .iter()
            .filter(|t| scope.tool.is_none_or(|n| n == t.name))
        {
            if let Admission::Quarantine { reason, diff } = gate.admit(u.id(), tool, &[]) {
                pending += 1;
                outln!("{}/{}: {reason}", u.id(), tool.name);
                if let Some(d) = diff {
                    for line in d.lines() {
                        outln!("    {line}");
                    }
                }
            }
        }
        if let Some(locked) = lock.servers.get(u.id()) {
            for (name, l) in &locked.tools {
                if !names.contains(name.as_str()) && scope.tool.is_none_or(|n| n == name) {
                    pending += 1;
                    outln!("{}/{name}: approved but no longer offered", u.id());
                    for line in diff_definitions(&l.definition, &serde_json::Value::Null).lines() {
                        outln!("    {line}");
                    }
                }
            }
        }
        if let Some(note) = gate.check_instructions(
            u.id(),
            catalog
                .server_info
                .as_ref()
                .and_then(|i| i.instructions.as_deref()),
        ) {
            pending += 1;
            outln!("{}: {note}", u.id());
        }
        u.shutdown().await;
    }
    if pending == 0 {
        outln!("nothing waits for approval");
    }
    Ok(pending)
}
