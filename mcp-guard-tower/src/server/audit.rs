//! The audit sinks `[audit]` names.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mcp_guard_core::audit::forward::TrailSource;
use mcp_guard_core::audit::{JsonLinesOptions, MacKey, SqliteAuditSink, SqliteOptions};
use mcp_guard_core::config::{AuditSection, AuditSinkKind};
use mcp_guard_core::{AuditSink, FanOut, JsonLinesAuditSink, TracingAuditSink};

use super::ServerError;

/// The audit MAC key from a file or an environment variable, if either is given.
///
/// # Errors
/// The key cannot be read or is too short.
pub fn mac_key(file: Option<&Path>, env: Option<&str>) -> Result<Option<MacKey>, ServerError> {
    mac_key_inner(file, env).map_err(ServerError)
}

fn mac_key_inner(file: Option<&Path>, env: Option<&str>) -> anyhow::Result<Option<MacKey>> {
    Ok(match (file, env) {
        (Some(f), _) => Some(MacKey::from_file(f)?),
        (None, Some(v)) => Some(MacKey::from_env(v)?),
        (None, None) => None,
    })
}

/// The sinks `[audit]` asks for, fanned out; relative paths from `base`.
///
/// # Errors
/// A sink cannot be opened (its error names the setting and the path).
pub fn audit_sinks(cfg: &AuditSection, base: &Path) -> Result<Arc<dyn AuditSink>, ServerError> {
    sinks(cfg, base).map_err(ServerError)
}

pub(crate) fn sinks(cfg: &AuditSection, base: &Path) -> anyhow::Result<Arc<dyn AuditSink>> {
    Ok(opened(cfg, base)?.sink)
}

/// The sinks `[audit]` asks for, and the durable trails among them (what forwarders
/// read).
pub(crate) struct Opened {
    pub(crate) sink: Arc<dyn AuditSink>,
    pub(crate) trails: super::forward::Trails,
}

pub(crate) fn opened(cfg: &AuditSection, base: &Path) -> anyhow::Result<Opened> {
    let mut trails = super::forward::Trails::default();
    let key = mac_key_inner(
        cfg.mac_key_file.as_deref().map(|p| base.join(p)).as_deref(),
        cfg.mac_key_env.as_deref(),
    )
    .context("audit")?;
    let mut out: Vec<Arc<dyn AuditSink>> = Vec::new();
    for kind in &cfg.sinks {
        match kind {
            AuditSinkKind::Sqlite => {
                let path = base.join(
                    cfg.sqlite_path
                        .as_deref()
                        .unwrap_or(Path::new("mcp-guard-audit.db")),
                );
                let mut o = SqliteOptions::default();
                o.mac_key.clone_from(&key);
                o.queue = cfg.queue;
                let sink = SqliteAuditSink::open(&path, o)
                    .with_context(|| format!("audit.sqlite_path: cannot use {}", path.display()))?;
                tracing::info!(db = %path.display(), "audit records go to SQLite");
                trails.add(*kind, TrailSource::Sqlite(path.clone()), sink.durable_head());
                out.push(Arc::new(sink));
            }
            AuditSinkKind::Jsonl => {
                let dir = base.join(cfg.jsonl_dir.as_deref().unwrap_or(Path::new("audit")));
                let mut o = JsonLinesOptions::default();
                o.mac_key.clone_from(&key);
                o.queue = cfg.queue;
                o.rotate_bytes = cfg.rotate_bytes;
                o.rotate_after = (cfg.rotate_secs > 0).then(|| Duration::from_secs(cfg.rotate_secs));
                o.keep_files = cfg.keep_files;
                let sink = JsonLinesAuditSink::open(&dir, o)
                    .with_context(|| format!("audit.jsonl_dir: cannot use {}", dir.display()))?;
                tracing::info!(dir = %dir.display(), "audit records go to JSON Lines files");
                trails.add(*kind, TrailSource::Jsonl(dir.clone()), sink.durable_head());
                out.push(Arc::new(sink));
            }
            AuditSinkKind::Tracing => out.push(Arc::new(TracingAuditSink::default())),
            _ => bail!("audit.sinks: unsupported sink {kind:?}"),
        }
    }
    let sink = match out.len() {
        1 => out.remove(0),
        _ => Arc::new(FanOut::new(out)),
    };
    Ok(Opened { sink, trails })
}
