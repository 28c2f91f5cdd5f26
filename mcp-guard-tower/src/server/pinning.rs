//! Tool pinning: the lock file, the gate built on it, and reloading it when it changes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mcp_guard_core::config::{GatewayConfig, ModeConfig};
use mcp_guard_core::pin::{GateMode, HostileTextPolicy, LockFile, PinGate};

use crate::Gateway;

/// The lock file of `config` (read from `config_path`) and the gate built on it.
pub(crate) struct Pinning {
    pub(crate) path: std::path::PathBuf,
    pub(crate) gate: Arc<PinGate>,
}

fn mode(m: ModeConfig) -> GateMode {
    match m {
        ModeConfig::Warn => GateMode::Warn,
        ModeConfig::Off => GateMode::Off,
        _ => GateMode::Enforce,
    }
}

/// The lock file `[pinning] lock_file` names (default `mcp-guard.lock`), relative to
/// `base`.
pub fn lock_path(config: &GatewayConfig, base: &Path) -> std::path::PathBuf {
    base.join(config.pinning.lock_file.as_deref().unwrap_or("mcp-guard.lock"))
}

pub(crate) fn pinning(config: &GatewayConfig, base: &Path) -> anyhow::Result<Pinning> {
    let path = lock_path(config, base);
    let lock = LockFile::load(&path)?;
    let pins = config.pinning.mode.map_or(
        if lock.is_some() {
            GateMode::Enforce
        } else {
            GateMode::Off
        },
        mode,
    );
    let hostile = config.pinning.hostile_text.map_or(GateMode::Enforce, mode);
    let mut policy = HostileTextPolicy::default();
    if let Some(n) = config.pinning.max_description_chars {
        policy.max_description_chars = n;
    }
    let gate = PinGate::new(lock.unwrap_or_default(), pins, hostile).with_policy(policy);
    Ok(Pinning {
        path,
        gate: Arc::new(gate),
    })
}

/// Reloads the lock file into the gate whenever it changes on disk, then reads every
/// server's catalogue again and re-checks it (so an approved tool comes back without a
/// restart, judged on what the server offers now rather than on what the gateway read
/// before the operator approved).
pub(crate) fn watch_lock(path: std::path::PathBuf, gate: Arc<PinGate>, gateway: Gateway) {
    tokio::spawn(async move {
        let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut last = stamp(&path);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            match LockFile::load(&path) {
                Ok(lock) => {
                    tracing::info!(path = %path.display(), "lock file changed; re-checking tools");
                    gate.reload(lock.unwrap_or_default());
                    gateway.reread().await;
                }
                Err(e) => tracing::error!(error = %e, "lock file unreadable; keeping the previous approvals"),
            }
        }
    });
}
