//! `mcp-guard check` and `check --connect`: the configuration validated, and each
//! server and audit receiver connected once.

use anyhow::bail;
use mcp_guard_tower::server::{ServerBuilder, load_config};

use crate::known_secrets;

pub(crate) fn check(config: &std::path::Path) -> anyhow::Result<()> {
    let loaded = load_config(config)?;
    for w in &loaded.warnings {
        outln!("{w}");
    }
    let c = &loaded.config;
    outln!(
        "{}: ok ({} servers, {} endpoints, {} grants)",
        config.display(),
        c.servers.len(),
        c.endpoints.len(),
        c.grants.len()
    );
    Ok(())
}

/// Connects every enabled server once and lists its tools, then every audit receiver
/// (sending no record); fails if any cannot be reached.
pub(crate) async fn check_connect(config: &std::path::Path) -> anyhow::Result<()> {
    let loaded = load_config(config)?;
    let labels = loaded.config.labels.clone();
    let builder = ServerBuilder::from_loaded(loaded).known_secrets(known_secrets());
    let upstreams = builder.upstreams()?;
    let mut failed = 0;
    let mut served = Vec::new();
    for (upstream, enabled) in upstreams {
        if !enabled {
            outln!("server {}: disabled", upstream.id());
            served.push((upstream.id().to_owned(), None));
            continue;
        }
        match upstream.catalog().await {
            Ok(cat) => {
                let names: Vec<&str> = cat.tools.iter().map(|t| t.name.as_ref()).collect();
                served.push((
                    upstream.id().to_owned(),
                    Some(names.iter().map(|n| (*n).to_owned()).collect()),
                ));
                let version = cat
                    .server_info
                    .as_ref()
                    .map(|i| i.protocol_version.as_str().to_owned())
                    .unwrap_or_default();
                outln!(
                    "server {}: connected ({version}), {} tools: {}",
                    upstream.id(),
                    names.len(),
                    names.join(", ")
                );
            }
            Err(e) => {
                failed += 1;
                served.push((upstream.id().to_owned(), None));
                outln!(
                    "server {}: FAILED: {}",
                    upstream.id(),
                    mcp_guard_core::upstream::error_chain(&e)
                );
            }
        }
        upstream.shutdown().await;
    }
    // Every `[[labels]]` tool glob must match a tool of the servers it names.
    match mcp_guard_core::config::check_label_tools(&labels, &served) {
        Ok(warnings) => {
            for w in warnings {
                outln!("warning: {w}");
            }
        }
        Err(e) => bail!("{}: invalid configuration:\n{e}", config.display()),
    }
    let mut receivers_failed = 0;
    for r in builder.check_receivers().await {
        match (&r.result, r.enabled) {
            (_, false) => outln!("audit receiver {}: disabled", r.name),
            (Ok(what), true) => outln!("audit receiver {} ({}): ok, {what}", r.name, r.destination),
            (Err(e), true) => {
                receivers_failed += 1;
                outln!("audit receiver {} ({}): FAILED: {e}", r.name, r.destination);
            }
        }
    }
    match (failed, receivers_failed) {
        (0, 0) => Ok(()),
        (n, 0) => bail!("{n} server(s) could not be reached"),
        (0, m) => bail!("{m} audit receiver(s) could not be reached"),
        (n, m) => bail!("{n} server(s) and {m} audit receiver(s) could not be reached"),
    }
}
