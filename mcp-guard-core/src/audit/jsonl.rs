//! [`JsonLinesAuditSink`]: append-only JSON Lines files with a hash chain.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::chain::{Checker, Head, MacKey, sha256_hex};
use super::verify::{file_name, files_in};
use super::writer::{Backend, BatchError, GroupCommit, Job};
use super::{AuditError, AuditEvent, AuditSink, EventKind};

/// Options of [`JsonLinesAuditSink`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JsonLinesOptions {
    /// Start a new file once the current one holds this many bytes (checked between
    /// batches, so a file can exceed it by one batch). Default 64 MiB.
    pub rotate_bytes: u64,
    /// Start a new file once the current one is this old. Default one day; `None`:
    /// never.
    pub rotate_after: Option<Duration>,
    /// Keep at most this many files, deleting the oldest at rotation; `0` keeps all
    /// (the default).
    pub keep_files: usize,
    /// Add an HMAC-SHA256 to each record with this key.
    pub mac_key: Option<MacKey>,
    /// Records that may wait for the writer; further callers wait (backpressure).
    pub queue: usize,
    /// Most records committed by one write and one sync.
    pub max_batch: usize,
}

impl Default for JsonLinesOptions {
    fn default() -> Self {
        Self {
            rotate_bytes: 64 * 1024 * 1024,
            rotate_after: Some(Duration::from_hours(24)),
            keep_files: 0,
            mac_key: None,
            queue: 4096,
            max_batch: 1024,
        }
    }
}

/// Appends each event as one line of JSON to files in a directory, chained by hash
/// (see [`verify_paths`](super::verify_paths) for the format and what a check proves).
///
/// **Durable**: when [`record`](AuditSink::record) returns `Ok`, the line has been
/// written and `fdatasync`ed. Concurrent records share one write and one sync (group
/// commit, see the module docs); the queue is bounded, so callers wait rather than
/// records being dropped.
///
/// **Files** are named `audit-<first seq, 20 digits>.jsonl`; the first record of a
/// new file links to the last record of the previous one, and is itself a record
/// (`"type": "audit_log", "action": "rotated"`) that names the file it continues and
/// any old files removed by [`keep_files`](JsonLinesOptions::keep_files).
///
/// **Recovery**: [`open`](Self::open) checks the newest file. A last line cut short by
/// a crash is cut off (the record was never acknowledged to a caller) and the sink
/// records that it did so (`"action": "recovered"`, with the number and SHA-256 of the
/// bytes removed) before continuing the chain. Any other damage stops `open` with
/// [`AuditError::Corrupt`]: the sink never writes onto a chain it cannot trust.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use mcp_guard_core::audit::{EventKind, JsonLinesAuditSink, JsonLinesOptions};
/// use mcp_guard_core::{AuditEvent, AuditSink};
/// let dir = tempfile::tempdir()?;
/// let mut options = JsonLinesOptions::default();
/// options.rotate_bytes = 16 * 1024 * 1024;
/// options.keep_files = 30;
/// let sink = JsonLinesAuditSink::open(dir.path(), options)?;
/// sink.record(&AuditEvent::new(EventKind::ConfigReloaded { digest: String::new(), changes: String::new() })).await?; // on disk now
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct JsonLinesAuditSink {
    writer: GroupCommit,
    dir: PathBuf,
}

impl JsonLinesAuditSink {
    /// Opens (creating it if needed) the trail in `dir`, recovering from a crash as
    /// described above, and starts its writer thread.
    ///
    /// Blocking: reads the newest file once. Call it at startup.
    ///
    /// # Errors
    /// [`AuditError::Open`] when the directory or a file cannot be used,
    /// [`AuditError::Corrupt`] when the newest file fails verification.
    pub fn open(dir: impl AsRef<Path>, options: JsonLinesOptions) -> Result<Self, AuditError> {
        let dir = dir.as_ref().to_owned();
        let (queue, max_batch) = (options.queue, options.max_batch);
        let mut backend = Jsonl::open(&dir, options)?;
        if let Some(note) = backend.recovered.take() {
            tracing::warn!(dir = %dir.display(), %note, "audit log recovered after a crash");
            let event = AuditEvent::new(EventKind::AuditLog {
                action: "recovered".to_owned(),
                detail: note,
            });
            backend
                .commit(&[Job::of(&event)?])
                .map_err(|e| AuditError::open(&dir, io::Error::new(e.kind, e.message)))?;
        }
        let writer = GroupCommit::spawn("mcp-guard-audit-jsonl", backend, queue, max_batch)?;
        Ok(Self { writer, dir })
    }

    /// The directory written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the writer after it has committed everything queued.
    pub fn close(self) {
        self.writer.close();
    }
}

#[async_trait]
impl AuditSink for JsonLinesAuditSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.writer.submit(Job::of(event)?).await
    }

    async fn flush(&self) -> Result<(), AuditError> {
        self.writer.flush().await
    }
}

struct Jsonl {
    dir: PathBuf,
    options: JsonLinesOptions,
    head: Head,
    file: File,
    name: String,
    len: u64,
    started: SystemTime,
    recovered: Option<String>,
    /// The rotation record to write first in the next batch.
    pending_rotation: Option<String>,
    /// Set after a failure that could not be undone: every later batch fails.
    poisoned: bool,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Jsonl {
    fn open(dir: &Path, options: JsonLinesOptions) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::open(dir, e))?;
        let files = files_in(dir).map_err(|e| AuditError::open(dir, e))?;
        let Some(last) = files.last() else {
            let name = file_name(1);
            let path = dir.join(&name);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(|e| AuditError::open(&path, e))?;
            sync_dir(dir).map_err(|e| AuditError::open(dir, e))?;
            return Ok(Self {
                dir: dir.to_owned(),
                options,
                head: Head::default(),
                file,
                name,
                len: 0,
                started: SystemTime::now(),
                recovered: None,
                pending_rotation: None,
                poisoned: false,
            });
        };
        let bytes = std::fs::read(last).map_err(|e| AuditError::open(last, e))?;
        let key = options.mac_key.as_ref();
        let mut checker = Checker::new(key);
        let mut good = 0usize;
        let mut first_time = None;
        for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
            let Some(text) = line.strip_suffix(b"\n") else {
                break; // a torn tail: handled below
            };
            let corrupt = |reason: String| AuditError::Corrupt {
                path: last.clone(),
                line: i + 1,
                reason,
            };
            let text = std::str::from_utf8(text).map_err(|_| corrupt("not UTF-8".to_owned()))?;
            let (parsed, problems) = checker.check(text);
            if let Some(p) = problems.into_iter().next() {
                return Err(corrupt(p));
            }
            if first_time.is_none() {
                first_time = parsed
                    .as_ref()
                    .and_then(|p| p.event.get("started_at")?.as_str().map(str::to_owned));
            }
            good += line.len();
        }
        let mut recovered = None;
        if good < bytes.len() {
            let torn = &bytes[good..];
            let file = OpenOptions::new()
                .write(true)
                .open(last)
                .map_err(|e| AuditError::open(last, e))?;
            file.set_len(good as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| AuditError::open(last, e))?;
            recovered = Some(format!(
                "removed a torn last line from {} at byte {good}: {} bytes, sha256 {}",
                last.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
                torn.len(),
                sha256_hex(torn)
            ));
        }
        let head = match checker.last() {
            Some((seq, hash)) => Head {
                next_seq: seq + 1,
                prev: hash.clone(),
            },
            // An empty newest file: continue from the file before it.
            None => Self::head_before(&files, key)?,
        };
        let file = OpenOptions::new()
            .append(true)
            .open(last)
            .map_err(|e| AuditError::open(last, e))?;
        Ok(Self {
            dir: dir.to_owned(),
            options,
            head,
            file,
            name: last
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned(),
            len: good as u64,
            started: first_time
                .as_deref()
                .and_then(crate::time::parse_rfc3339)
                .unwrap_or_else(SystemTime::now),
            recovered,
            pending_rotation: None,
            poisoned: false,
        })
    }

    /// The head after the last record of the files before the (empty) newest one.
    fn head_before(files: &[PathBuf], key: Option<&MacKey>) -> Result<Head, AuditError> {
        for path in files.iter().rev().skip(1) {
            let bytes = std::fs::read(path).map_err(|e| AuditError::open(path, e))?;
            let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
            if let Some(last) = lines.last() {
                let corrupt = |reason: String| AuditError::Corrupt {
                    path: path.clone(),
                    line: lines.len(),
                    reason,
                };
                let text = std::str::from_utf8(last).map_err(|_| corrupt("not UTF-8".to_owned()))?;
                let p = super::chain::parse(text, key).map_err(&corrupt)?;
                if !p.hash_ok || p.mac_ok == Some(false) {
                    return Err(corrupt("the last record fails its hash or MAC".to_owned()));
                }
                return Ok(Head {
                    next_seq: p.seq + 1,
                    prev: p.hash,
                });
            }
        }
        Ok(Head::default())
    }

    fn due(&self) -> bool {
        self.len > 0
            && (self.len >= self.options.rotate_bytes
                || self
                    .options
                    .rotate_after
                    .is_some_and(|age| self.started.elapsed().is_ok_and(|e| e >= age)))
    }

    /// Starts the next file; returns the names of old files to remove once the new
    /// file's first batch is durable.
    fn rotate(&mut self) -> io::Result<Vec<PathBuf>> {
        let name = file_name(self.head.next_seq);
        let path = self.dir.join(&name);
        let file = OpenOptions::new().create_new(true).append(true).open(&path)?;
        sync_dir(&self.dir)?;
        let previous = std::mem::replace(&mut self.name, name);
        self.file = file;
        self.len = 0;
        self.started = SystemTime::now();
        let mut remove = Vec::new();
        if self.options.keep_files > 0 {
            let files = files_in(&self.dir)?;
            let excess = files.len().saturating_sub(self.options.keep_files);
            remove.extend(files.into_iter().take(excess));
        }
        let removed: Vec<String> = remove
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        let mut detail = format!("continues {previous}");
        if !removed.is_empty() {
            let _ = write!(
                detail,
                "; removing {} (keep_files = {})",
                removed.join(", "),
                self.options.keep_files
            );
        }
        self.pending_rotation = Some(detail);
        Ok(remove)
    }
}

impl Backend for Jsonl {
    fn commit(&mut self, batch: &[Job]) -> Result<(), BatchError> {
        if self.poisoned {
            return Err(BatchError {
                kind: io::ErrorKind::Other,
                message: "audit log is unusable after an earlier write failure".to_owned(),
            });
        }
        let mut remove = Vec::new();
        if self.due() {
            remove = self
                .rotate()
                .map_err(|e| BatchError::new("cannot start a new audit file", &e, e.kind()))?;
        }
        let saved = self.head.clone();
        let key = self.options.mac_key.as_ref();
        let mut buf = String::with_capacity(batch.iter().map(|j| j.event_json.len() + 256).sum());
        if let Some(detail) = self.pending_rotation.take() {
            let event = AuditEvent::new(EventKind::AuditLog {
                action: "rotated".to_owned(),
                detail,
            });
            if let Ok(json) = serde_json::to_string(&event) {
                buf.push_str(&self.head.seal(&json, key).line);
            }
        }
        for job in batch {
            buf.push_str(&self.head.seal(&job.event_json, key).line);
        }
        let written = self
            .file
            .write_all(buf.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Undo the partial append so the chain on disk and in memory agree.
            self.head = saved;
            if self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_all())
                .is_err()
            {
                self.poisoned = true;
            }
            return Err(BatchError::new(
                format!("cannot append to {}", self.name),
                &e,
                e.kind(),
            ));
        }
        self.len += buf.len() as u64;
        for path in remove {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove an old audit file");
            }
        }
        Ok(())
    }
}
