//! Directories named after a gateway session.
//!
//! Where `${MCP_GUARD_SESSION}` is (part of) a directory in a stdio server's
//! environment, that is, a slash follows the path component that holds it
//! (`DATA_DIR = "/var/lib/notes/${MCP_GUARD_SESSION}/"`,
//! `MEMORY_FILE_PATH = "/var/lib/memory/${MCP_GUARD_SESSION}/memory.jsonl"`), the
//! directory belongs to the session: the gateway creates it, mode 0700, before the
//! session's first process starts, and removes it with everything in it once the
//! session has ended and the last process using it has stopped. Parents are created
//! as needed with the default mode. A name in a file component
//! (`/var/lib/memory/${MCP_GUARD_SESSION}.jsonl`) is substituted and left alone.
//!
//! An existing path is used only when it is a directory (not a symlink) owned by the
//! gateway's user; it is then set to 0700. Directories are tracked by path in one
//! registry, so two servers of one session that name the same directory share it and
//! it goes only after both stopped.
//!
//! Written by hand: it is a few calls to `std::fs` plus reference counting, and no
//! crate ties a directory's life to other objects this way.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use tokio_util::sync::CancellationToken;

use super::upstreams::SESSION_PLACEHOLDER;

/// A session's directory: removed when the last holder drops it.
#[derive(Debug)]
pub(crate) struct SessionDir {
    path: PathBuf,
}

static REGISTRY: LazyLock<Mutex<HashMap<PathBuf, Weak<SessionDir>>>> = LazyLock::new(Mutex::default);

impl Drop for SessionDir {
    fn drop(&mut self) {
        let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        match reg.get(&self.path) {
            // Acquired anew since (a holder of a new entry): it stays.
            Some(w) if w.strong_count() > 0 => return,
            Some(_) => {
                reg.remove(&self.path);
            }
            None => {}
        }
        // Under the lock, so no one acquires it while it goes.
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => tracing::info!(dir = %self.path.display(), "removed a session directory"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %self.path.display(), error = %e, "could not remove a session directory");
            }
        }
    }
}

impl SessionDir {
    /// Creates it again if it went missing (a process restarting within the session).
    pub(crate) fn ensure(&self) {
        if let Err(e) = create(&self.path) {
            tracing::warn!(dir = %self.path.display(), error = %e, "could not create a session directory");
        }
    }
}

/// Directories of processes that live as long as the gateway (the catalogue
/// instance's, the stdio front door's session's): removed by [`release_kept`].
static KEPT: LazyLock<Mutex<Vec<Arc<SessionDir>>>> = LazyLock::new(Mutex::default);

/// Keeps `dirs` until [`release_kept`].
pub(crate) fn keep(dirs: &[Arc<SessionDir>]) {
    KEPT.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(dirs.iter().cloned());
}

/// Removes the directories [`keep`] kept: call once the processes using them stopped.
pub(crate) fn release_kept() {
    let kept = std::mem::take(&mut *KEPT.lock().unwrap_or_else(PoisonError::into_inner));
    let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    for d in &kept {
        // Other holders (the upstreams of a stopped gateway) may outlive this: the
        // directory goes now, and their drop later finds nothing to do.
        reg.remove(&d.path);
        match std::fs::remove_dir_all(&d.path) {
            Ok(()) => tracing::info!(dir = %d.path.display(), "removed a session directory"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %d.path.display(), error = %e, "could not remove a session directory");
            }
        }
    }
    // Dropped after the lock is released: a last holder's drop takes it.
    drop(reg);
    drop(kept);
}

/// The session directories that the environment `env` names once
/// `${MCP_GUARD_SESSION}` is `session`; relative ones are taken from `cwd` (the
/// server's working directory, else the gateway's).
pub(crate) fn paths(env: &BTreeMap<String, String>, session: &str, cwd: Option<&Path>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for value in env.values() {
        let mut from = 0;
        while let Some(at) = value[from..].find(SESSION_PLACEHOLDER).map(|i| i + from) {
            let after = at + SESSION_PLACEHOLDER.len();
            from = after;
            // The component holding the name ends at the next slash; without one it
            // is a file name.
            let Some(end) = value[after..].find('/').map(|i| i + after) else {
                continue;
            };
            let dir = value[..end].replace(SESSION_PLACEHOLDER, session);
            if dir.is_empty() {
                continue;
            }
            let dir = PathBuf::from(dir);
            let dir = match (dir.is_relative(), cwd) {
                (true, Some(cwd)) => cwd.join(dir),
                _ => dir,
            };
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
    }
    out
}

/// The directory at `path`, created (0700) if needed; it is removed once `until` is
/// cancelled and every holder of the returned value has dropped it. Without `until`,
/// once every holder has dropped it.
///
/// # Errors
/// When it cannot be created, or the path is taken by something that is not the
/// gateway user's own directory.
pub(crate) fn acquire(path: &Path, until: Option<&CancellationToken>) -> std::io::Result<Arc<SessionDir>> {
    let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(dir) = reg.get(path).and_then(Weak::upgrade) {
        drop(reg);
        // Re-created should someone have removed it while the session lives.
        create(path)?;
        return Ok(dir);
    }
    create(path)?;
    let dir = Arc::new(SessionDir {
        path: path.to_owned(),
    });
    reg.insert(path.to_owned(), Arc::downgrade(&dir));
    drop(reg);
    if let Some(until) = until {
        let (keep, until) = (dir.clone(), until.clone());
        tokio::spawn(async move {
            until.cancelled().await;
            drop(keep);
        });
    }
    Ok(dir)
}

fn create(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(path)?;
            if !meta.is_dir() {
                return Err(std::io::Error::other(format!(
                    "{} exists and is not a directory",
                    path.display()
                )));
            }
            if meta.uid() != nix::unistd::geteuid().as_raw() {
                return Err(std::io::Error::other(format!(
                    "{} belongs to another user",
                    path.display()
                )));
            }
        }
        Err(e) => return Err(e),
    }
    // The mode given to mkdir passes through the umask: set it outright.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Acquires every session directory `env` names for `session`, logging (not failing
/// on) those that cannot be made: the server then reports what it misses.
pub(crate) fn acquire_all(
    env: &BTreeMap<String, String>,
    session: &str,
    cwd: Option<&Path>,
    until: Option<&CancellationToken>,
) -> Vec<Arc<SessionDir>> {
    paths(env, session, cwd)
        .into_iter()
        .filter_map(|p| match acquire(&p, until) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(dir = %p.display(), session, error = %e, "could not create a session directory");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directory_components_are_session_directories() {
        let env: BTreeMap<String, String> = [
            ("A", "/data/${MCP_GUARD_SESSION}/memory.jsonl"),
            ("B", "/data/${MCP_GUARD_SESSION}/"),
            ("C", "/data/${MCP_GUARD_SESSION}.jsonl"),
            ("D", "notes-${MCP_GUARD_SESSION}/x"),
            ("E", "${MCP_GUARD_SESSION}"),
            ("F", "/plain/value"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            paths(&env, "s_1", Some(Path::new("/srv"))),
            [PathBuf::from("/data/s_1"), PathBuf::from("/srv/notes-s_1")]
        );
    }

    #[tokio::test]
    async fn created_private_shared_by_holders_and_removed_after_the_session() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("parent/s_test");
        let ended = CancellationToken::new();
        let a = acquire(&path, Some(&ended)).unwrap();
        let b = acquire(&path, Some(&ended)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        std::fs::write(path.join("file"), "x").unwrap();
        drop(a);
        drop(b);
        tokio::task::yield_now().await;
        assert!(path.exists(), "kept while the session lives");
        let c = acquire(&path, Some(&ended)).unwrap();
        ended.cancel();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(path.exists(), "kept while a process holds it");
        drop(c);
        assert!(!path.exists(), "removed with its contents");

        // Something else at the path is refused, never taken over.
        let link = root.path().join("s_link");
        std::os::unix::fs::symlink(root.path(), &link).unwrap();
        assert!(acquire(&link, None).is_err());
        std::fs::write(root.path().join("s_file"), "").unwrap();
        assert!(acquire(&root.path().join("s_file"), None).is_err());
        assert!(root.path().exists());
    }
}
