//! Read-only views: `mcp-guard status` (a running gateway's readiness and its audit
//! forwarders) and `mcp-guard tools` (what an endpoint exposes).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use mcp_guard_tower::server::{ServerBuilder, load_config};

use crate::{credentials, known_secrets};

pub(crate) async fn status(
    url: &str,
    principal: Option<&str>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let body = reqwest::Client::builder()
        .build()?
        .get(format!("{}/readyz", url.trim_end_matches('/')))
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {url}"))?
        .text()
        .await?;
    let report: serde_json::Value =
        serde_json::from_str(&body).context("the gateway's /readyz did not answer JSON")?;
    for s in report["servers"].as_array().into_iter().flatten() {
        outln!(
            "{:<24} {:<20} since {}{}{}",
            s["id"].as_str().unwrap_or_default(),
            s["state"].as_str().unwrap_or_default(),
            s["since"].as_str().unwrap_or_default(),
            s["protocol"]
                .as_str()
                .map(|p| format!("  protocol {p}"))
                .unwrap_or_default(),
            s["detail"]
                .as_str()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default()
        );
    }
    for f in report["audit_forward"].as_array().into_iter().flatten() {
        outln!("{}", forwarder_line(f));
    }
    if let (Some(p), Some(config)) = (principal, config) {
        let loaded = load_config(config)?;
        let store = mcp_guard_tower::server::sealed_store(&loaded.config, loaded.base_dir());
        let lines = credentials::principal_report(&loaded.config, &store, None, p)?;
        outln!("\npersonal credentials of {p}:");
        if lines.is_empty() {
            outln!("  (no server takes personal credentials)");
        }
        for l in lines {
            outln!("  {l}");
        }
    }
    if report["ready"] != serde_json::Value::Bool(true) {
        bail!("not every enabled server is connected");
    }
    Ok(())
}

/// One audit forwarder of `/readyz` as `status` prints it.
fn forwarder_line(f: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let n = |k: &str| f[k].as_u64().unwrap_or_default();
    let mut line = format!(
        "audit forward {:<12} {:<10} delivered up to seq {} of {} (backlog {})  -> {}",
        f["name"].as_str().unwrap_or_default(),
        f["state"].as_str().unwrap_or_default(),
        n("delivered_seq"),
        n("durable_seq"),
        n("backlog"),
        f["destination"].as_str().unwrap_or_default(),
    );
    if n("skipped") > 0 {
        let _ = write!(line, "  {} SKIPPED (removed from the trail first)", n("skipped"));
    }
    if let Some(e) = f["last_error"].as_str() {
        let _ = write!(
            line,
            "  last error at {}: {e}",
            f["last_error_at"].as_str().unwrap_or_default()
        );
    }
    line
}

pub(crate) async fn tools(config: PathBuf, endpoint: String) -> anyhow::Result<()> {
    let loaded = load_config(&config)?;
    let built = ServerBuilder::from_loaded(loaded)
        .known_secrets(known_secrets())
        .build_catalogue()
        .await?;
    let ep = built
        .gateway
        .endpoint(&endpoint)
        .with_context(|| format!("no endpoint named {endpoint:?}"))?;
    for (server, enabled, status) in ep.members() {
        outln!(
            "server {server}: {}{:?}",
            if enabled { "" } else { "disabled, " },
            status.state
        );
    }
    for (exposed, kind, _server, _name, enabled) in ep.selection_report().await {
        outln!(
            "[{}] {:<8} {exposed}",
            if enabled { "x" } else { " " },
            kind.to_string()
        );
    }
    built.gateway.shutdown().await;
    Ok(())
}
