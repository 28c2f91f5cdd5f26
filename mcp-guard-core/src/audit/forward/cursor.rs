//! A forwarder's place in the trail, kept in a small file next to it.
//!
//! `<dir>/<name>.cursor` holds one line of JSON: the `seq` and `hash` of the last
//! record the receiver has (acknowledged, or confirmed for syslog), and where it was
//! sent. It is replaced atomically (write, sync, rename, sync the directory), so a crash
//! leaves the old or the new position, never a torn one. `<dir>/<name>.lock` is held
//! (`flock`) by the one process that forwards under this name: a second gateway on the
//! same trail stands by instead of sending every record again.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A position in the chain: the last record delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position {
    pub(crate) seq: u64,
    pub(crate) hash: String,
}

impl Position {
    pub(crate) fn start() -> Self {
        Self {
            seq: 0,
            hash: String::new(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    seq: u64,
    hash: String,
    #[serde(default)]
    destination: String,
}

/// The cursor file of one forwarder, with its lock held.
#[derive(Debug)]
pub(crate) struct Cursor {
    path: PathBuf,
    dir: PathBuf,
    _lock: File,
    destination: String,
}

impl Cursor {
    /// Takes the lock of `name` in `dir` (creating both); `Ok(None)` when another
    /// process holds it.
    pub(crate) fn acquire(dir: &Path, name: &str, destination: &str) -> std::io::Result<Option<Self>> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(format!("{name}.lock")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok(Some(Self {
            path: dir.join(format!("{name}.cursor")),
            dir: dir.to_owned(),
            _lock: lock,
            destination: destination.to_owned(),
        }))
    }

    /// The stored position; `None` when there is none yet. A file that does not
    /// parse is an error (it names the file): guessing could resend or skip records.
    pub(crate) fn load(&self) -> std::io::Result<Option<(Position, String)>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let s: Stored = serde_json::from_str(text.trim()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a forwarder cursor: {e}", self.path.display()),
            )
        })?;
        Ok(Some((
            Position {
                seq: s.seq,
                hash: s.hash,
            },
            s.destination,
        )))
    }

    /// Replaces the stored position.
    pub(crate) fn store(&self, pos: &Position) -> std::io::Result<()> {
        let mut line = serde_json::to_string(&Stored {
            seq: pos.seq,
            hash: pos.hash.clone(),
            destination: self.destination.clone(),
        })
        .map_err(std::io::Error::other)?;
        line.push('\n');
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut f = File::create(&tmp)?;
            f.write_all(line.as_bytes())?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_holds_a_cursor_and_it_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursor::acquire(dir.path(), "siem", "tcp://x").unwrap().unwrap();
        assert!(c.load().unwrap().is_none());
        // A second holder (another process, or another open in this one) is refused.
        assert!(Cursor::acquire(dir.path(), "siem", "tcp://x").unwrap().is_none());
        let pos = Position {
            seq: 42,
            hash: "ab".repeat(32),
        };
        c.store(&pos).unwrap();
        drop(c);
        let c = Cursor::acquire(dir.path(), "siem", "tcp://x").unwrap().unwrap();
        assert_eq!(c.load().unwrap().unwrap().0, pos);
        std::fs::write(c.path(), "garbage").unwrap();
        assert!(
            c.load()
                .unwrap_err()
                .to_string()
                .contains("not a forwarder cursor")
        );
    }
}
