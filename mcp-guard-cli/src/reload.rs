//! Reloading a running gateway's configuration: on SIGHUP, when the file changes on
//! disk, and from `mcp-guard reload` (which finds the gateway through its pid file and
//! sends it SIGHUP).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use mcp_guard_tower::server::{Reloader, access_store_path, load_config};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

/// The pid file of the gateway whose access store is `store`: `<store>.pid`, beside it
/// (one gateway per access store).
pub(crate) fn pid_path(store: &Path) -> PathBuf {
    let mut p = store.as_os_str().to_owned();
    p.push(".pid");
    PathBuf::from(p)
}

/// The running gateway's pid file, removed when it stops (if it is still ours).
pub(crate) struct PidFile(PathBuf);

impl PidFile {
    pub(crate) fn write(path: PathBuf) -> anyhow::Result<Self> {
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write the pid file {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0).is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// What identifies a version of the file: its modification time and size, cheap to
/// read every poll; the digest decides whether the content changed.
fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn digest(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| mcp_guard_core::hex::encode(&Sha256::digest(&b)))
}

/// Reloads on SIGHUP, and when the configuration file's content changes (polled every
/// 500 ms, as the lock file is). A version that is refused (half written, garbage,
/// invalid) is not tried again until the file changes again; the running
/// configuration stays meanwhile.
pub(crate) fn watch(reloader: Reloader, path: PathBuf, loaded_digest: String, stop: CancellationToken) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(4);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            let tx = tx.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        got = hup.recv() => {
                            if got.is_none() {
                                return;
                            }
                            let _ = tx.try_send("SIGHUP");
                        }
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by changing the file"),
    }
    {
        let path = path.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut last_stamp = stamp(&path);
            let mut last_digest = Some(loaded_digest);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                let now = stamp(&path);
                if now == last_stamp {
                    continue;
                }
                last_stamp = now;
                let d = digest(&path);
                if d.is_none() || d == last_digest {
                    continue;
                }
                last_digest = d;
                let _ = tx.try_send("the file changed");
            }
        });
    }
    tokio::spawn(async move {
        loop {
            let why = tokio::select! {
                () = stop.cancelled() => return,
                why = rx.recv() => match why { Some(w) => w, None => return },
            };
            // The console writes the file after applying it: nothing new to apply.
            if why == "the file changed" && digest(&path).is_some_and(|d| d == reloader.applied_digest()) {
                continue;
            }
            tracing::info!(path = %path.display(), trigger = why, "reloading the configuration");
            match reloader.reload_file(&path).await {
                Ok(report) => eprintln!("configuration reloaded ({why}): {report}"),
                Err(e) => eprintln!("configuration refused ({why}); the running one stays: {e}"),
            }
        }
    });
}

/// `mcp-guard reload --config FILE`: checks the file as `check` does (a refused file
/// is reported here and the gateway is not disturbed), then signals the gateway whose
/// pid file sits beside the configuration's access store.
pub(crate) fn run(config: &Path) -> anyhow::Result<()> {
    let loaded = load_config(config)?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let store = access_store_path(&loaded.config, loaded.base_dir());
    let pid_file = pid_path(&store);
    let text = std::fs::read_to_string(&pid_file).with_context(|| {
        format!(
            "no running gateway found: cannot read {} (mcp-guard serve writes it while it runs)",
            pid_file.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{}: not a process id", pid_file.display()))?;
    // A pid file left by a gateway that was killed may name another process by now.
    if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if !args.contains(&b"serve".as_slice()) {
            bail!(
                "{} names process {pid}, which is not an mcp-guard gateway (a stale pid file?)",
                pid_file.display()
            );
        }
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP) {
        bail!(
            "cannot signal the gateway (pid {pid} from {}): {e}",
            pid_file.display()
        );
    }
    outln!(
        "asked mcp-guard (pid {pid}) to reload {} (digest {}); it logs and audits the outcome",
        config.display(),
        loaded.digest
    );
    Ok(())
}
