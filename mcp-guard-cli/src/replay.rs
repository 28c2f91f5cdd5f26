//! `mcp-guard check --config new.toml --against-audit`: the policy decisions of
//! recorded calls, replayed under a new configuration, and those that would change
//! (the replay itself is the library's, [`mcp_guard_tower::server::replay`], which the
//! console's Config page uses too).
//!
//! Exit status: 0 nothing changes, 1 a decision changes, 2 the configuration or the
//! trail cannot be read.

use std::path::Path;
use std::time::SystemTime;

use mcp_guard_tower::server::replay;

use crate::explain::EXIT_DENIED;

/// What `check --against-audit` was asked.
pub(crate) struct ReplayArgs<'a> {
    /// The new configuration.
    pub(crate) config: &'a Path,
    /// The trail; default: the one the new configuration's `[audit]` names.
    pub(crate) audit: Option<&'a Path>,
    /// Only records that started at or after.
    pub(crate) since: Option<SystemTime>,
    /// Machine output.
    pub(crate) json: bool,
}

/// Runs `check --against-audit`; returns the exit status.
pub(crate) fn run(a: &ReplayArgs<'_>) -> anyhow::Result<u8> {
    let loaded = mcp_guard_tower::server::load_config(a.config)?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let config = &loaded.config;
    let trail = match a.audit {
        Some(p) => p.to_owned(),
        None => replay::default_audit_trail(config, loaded.base_dir())?,
    };
    let config_name = a.config.file_name().map_or_else(
        || a.config.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let report = replay::replay(config, &config_name, &trail, a.since)?;
    let shown = a.config.display().to_string();
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report.to_json(&shown))?);
    } else {
        for line in report.to_text(&shown).lines() {
            outln!("{line}");
        }
    }
    Ok(if report.changed() == 0 { 0 } else { EXIT_DENIED })
}
