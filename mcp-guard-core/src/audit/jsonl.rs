//! [`JsonLinesAuditSink`]: append-only JSON Lines files with a hash chain.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::chain::{Checker, Head, MacKey, sha256_hex};
use super::verify::{file_name, files_in, seq_of_name};
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
    /// After writing deferred records ([`AuditSink::record_deferred`]), sync them
    /// once this long has passed without a record that syncs anyway. Default
    /// [`DEFAULT_IDLE_SYNC`](super::DEFAULT_IDLE_SYNC).
    pub idle_sync: Duration,
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
            idle_sync: super::DEFAULT_IDLE_SYNC,
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
/// **Several writers** (a `serve` and a `serve --stdio` on one configuration, or two
/// sinks in one process) share the directory safely: each batch is written under an
/// exclusive lock on `audit.lock` in the directory (`flock`), and under that lock the
/// sink first reads whatever the others appended since its last batch (checking each
/// record's hash, MAC and place in the chain) and follows their rotations, so every
/// writer continues one chain. A failed append is undone only down to where this
/// batch began, never into another writer's records. Every process that writes a
/// trail must lock it this way; a lock over a network filesystem is as good as that
/// filesystem's `flock`.
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
        let (queue, max_batch, idle_sync) = (options.queue, options.max_batch, options.idle_sync);
        let mut backend = Jsonl::open(&dir, options)?;
        // What an earlier process wrote without a sync is made durable now, so the
        // durable head (what forwarders may send) starts at the newest record.
        backend
            .state
            .file
            .sync_data()
            .map_err(|e| AuditError::open(&dir, e))?;
        if !backend.state.notes.is_empty() {
            // Write the recovery record now, so a crash loop leaves a trace of each recovery.
            backend
                .commit(&[], true)
                .map_err(|e| AuditError::open(&dir, io::Error::new(e.kind, e.message)))?;
        }
        let writer = GroupCommit::spawn("mcp-guard-audit-jsonl", backend, queue, max_batch, idle_sync)?;
        Ok(Self { writer, dir })
    }

    /// The newest durable record, for an audit forwarder reading this trail.
    pub fn durable_head(&self) -> super::DurableHead {
        self.writer.durable()
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

    async fn record_deferred(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.writer.submit_deferred(Job::of(event)?).await
    }

    async fn flush(&self) -> Result<(), AuditError> {
        self.writer.flush().await
    }
}

/// The lock every writer of a directory takes around each batch.
const LOCK_FILE: &str = "audit.lock";

/// The backend: the lock, and the state it protects.
struct Jsonl {
    lock: File,
    state: State,
}

/// Holds the directory's lock until dropped (also on unwinding, so a panicking
/// writer never leaves other processes waiting).
struct Held<'a>(&'a File);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn hold(lock: &File) -> io::Result<Held<'_>> {
    lock.lock()?;
    Ok(Held(lock))
}

struct State {
    dir: PathBuf,
    options: JsonLinesOptions,
    head: Head,
    file: File,
    name: String,
    /// Bytes of `file` read or written by this process: the chain up to `head`.
    len: u64,
    started: SystemTime,
    /// `audit_log` records (action, detail) to write first in the next batch.
    notes: Vec<(String, String)>,
    /// Written to `file` and not synced yet.
    unsynced: bool,
    /// Set after a failure that could not be undone: every later batch fails.
    poisoned: bool,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_err(what: impl Into<String>, e: &io::Error) -> BatchError {
    BatchError::new(what, e, e.kind())
}

fn other(message: String) -> BatchError {
    BatchError {
        kind: io::ErrorKind::Other,
        message,
    }
}

fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).append(true).open(path)
}

impl Jsonl {
    fn open(dir: &Path, options: JsonLinesOptions) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::open(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| AuditError::open(&lock_path, e))?;
        let state = {
            let _held = hold(&lock).map_err(|e| AuditError::open(&lock_path, e))?;
            State::open(dir, options)?
        };
        Ok(Self { lock, state })
    }
}

impl State {
    fn open(dir: &Path, options: JsonLinesOptions) -> Result<Self, AuditError> {
        let files = files_in(dir).map_err(|e| AuditError::open(dir, e))?;
        let Some(last) = files.last() else {
            let name = file_name(1);
            let path = dir.join(&name);
            let file = OpenOptions::new()
                .create_new(true)
                .read(true)
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
                notes: Vec::new(),
                unsynced: false,
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
                first_time = parsed.as_ref().and_then(started_at);
            }
            good += line.len();
        }
        let mut notes = Vec::new();
        if good < bytes.len() {
            let torn = &bytes[good..];
            let file = OpenOptions::new()
                .write(true)
                .open(last)
                .map_err(|e| AuditError::open(last, e))?;
            file.set_len(good as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| AuditError::open(last, e))?;
            let note = torn_note(last, good, torn);
            tracing::warn!(dir = %dir.display(), %note, "audit log recovered after a crash");
            notes.push(("recovered".to_owned(), note));
        }
        let head = match checker.last() {
            Some((seq, hash)) => Head {
                next_seq: seq + 1,
                prev: hash.clone(),
            },
            // An empty newest file: continue from the file before it.
            None => Self::head_before(&files, key)?,
        };
        let file = open_file(last).map_err(|e| AuditError::open(last, e))?;
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
            started: first_time.unwrap_or_else(SystemTime::now),
            notes,
            unsynced: false,
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

    /// Catches up with what other writers did since this one's last batch (call it
    /// holding the lock): reads and checks the records they appended to the current
    /// file, cuts a torn tail a dead writer left, and moves on to the files they
    /// started by rotation.
    fn follow(&mut self) -> Result<(), BatchError> {
        loop {
            let meta = self
                .file
                .metadata()
                .map_err(|e| io_err(format!("cannot read {}", self.name), &e))?;
            let actual = meta.len();
            if actual < self.len {
                return Err(other(format!(
                    "audit file {} shrank from {} to {actual} bytes while this process had it open: \
                     something other than a writer of this trail truncated it",
                    self.name, self.len
                )));
            }
            if actual > self.len {
                self.read_from(self.len, actual, true)?;
            }
            // A writer that rotated started the file named by the next seq.
            let successor = file_name(self.head.next_seq);
            if successor != self.name && self.exists(&successor)? {
                self.switch_to(successor, true)?;
                continue;
            }
            if unlinked(&meta) {
                // Removed by another writer's retention after more than one rotation:
                // continue in the newest file.
                let files = files_in(&self.dir).map_err(|e| io_err("cannot list the audit directory", &e))?;
                let newest = files
                    .last()
                    .and_then(|p| p.file_name()?.to_str().map(str::to_owned))
                    .filter(|n| seq_of_name(n) > seq_of_name(&self.name));
                if let Some(n) = newest {
                    self.switch_to(n, false)?;
                    continue;
                }
                let previous = self.name.clone();
                self.start_file()?;
                self.notes.push((
                    "rotated".to_owned(),
                    format!("continues {previous}, which was removed while this process wrote it"),
                ));
            }
            return Ok(());
        }
    }

    fn exists(&self, name: &str) -> Result<bool, BatchError> {
        match std::fs::metadata(self.dir.join(name)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(format!("cannot look for {name}"), &e)),
        }
    }

    /// Makes `name` the current file and reads it; `linked`: its first record must
    /// continue the current head.
    fn switch_to(&mut self, name: String, linked: bool) -> Result<(), BatchError> {
        self.sync_pending()?;
        let path = self.dir.join(&name);
        self.file = open_file(&path).map_err(|e| io_err(format!("cannot open {name}"), &e))?;
        self.name = name;
        self.len = 0;
        self.started = SystemTime::now();
        let end = self
            .file
            .metadata()
            .map_err(|e| io_err(format!("cannot read {}", self.name), &e))?
            .len();
        if end > 0 {
            self.read_from(0, end, linked)?;
        }
        Ok(())
    }

    /// Reads and checks the records in `from..to` of the current file; they must
    /// continue the chain (`linked`) or at least hold together. A last line without
    /// its newline was left by a writer that stopped mid-write (a live one holds the
    /// lock until its line is complete or undone): it is cut off and the cut recorded.
    fn read_from(&mut self, from: u64, to: u64, linked: bool) -> Result<(), BatchError> {
        let name = self.name.clone();
        let cannot = |e: &io::Error| io_err(format!("cannot read {name}"), e);
        let mut bytes =
            vec![0; usize::try_from(to - from).map_err(|_| other(format!("{name} is too large")))?];
        (&self.file)
            .seek(SeekFrom::Start(from))
            .and_then(|_| (&self.file).read_exact(&mut bytes))
            .map_err(|e| cannot(&e))?;
        let key = self.options.mac_key.as_ref();
        let mut checker = if linked {
            Checker::continuing(key, &self.head)
        } else {
            Checker::new(key)
        };
        let mut good = 0usize;
        let mut first_time = None;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let Some(text) = line.strip_suffix(b"\n") else {
                break;
            };
            let at = from + good as u64;
            let broken = |what: String| {
                other(format!(
                    "audit file {name}, record at byte {at} (written by another process): {what}"
                ))
            };
            let text = std::str::from_utf8(text).map_err(|_| broken("not UTF-8".to_owned()))?;
            let (parsed, problems) = checker.check(text);
            if let Some(p) = problems.into_iter().next() {
                return Err(broken(p));
            }
            if from == 0 && first_time.is_none() {
                first_time = parsed.as_ref().and_then(started_at);
            }
            good += line.len();
        }
        if let Some(t) = first_time {
            self.started = t;
        }
        let end = from + good as u64;
        if good < bytes.len() {
            self.file
                .set_len(end)
                .and_then(|()| self.file.sync_all())
                .map_err(|e| io_err(format!("cannot cut the torn tail of {name}"), &e))?;
            let note = torn_note(
                Path::new(&name),
                usize::try_from(end).unwrap_or(usize::MAX),
                &bytes[good..],
            );
            tracing::warn!(dir = %self.dir.display(), %note, "audit log: a writer stopped mid-write");
            self.notes.push(("recovered".to_owned(), note));
        }
        if let Some((seq, hash)) = checker.last() {
            self.head = Head {
                next_seq: seq + 1,
                prev: hash.clone(),
            };
        }
        self.len = end;
        Ok(())
    }

    /// Syncs the current file if it holds records written without a sync.
    fn sync_pending(&mut self) -> Result<(), BatchError> {
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(|e| io_err(format!("cannot sync {}", self.name), &e))?;
            self.unsynced = false;
        }
        Ok(())
    }

    fn due(&self) -> bool {
        self.len > 0
            && (self.len >= self.options.rotate_bytes
                || self
                    .options
                    .rotate_after
                    .is_some_and(|age| self.started.elapsed().is_ok_and(|e| e >= age)))
    }

    /// Creates the file named by the next seq and makes it current.
    fn start_file(&mut self) -> Result<(), BatchError> {
        self.sync_pending()?;
        let name = file_name(self.head.next_seq);
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)
            .and_then(|f| sync_dir(&self.dir).map(|()| f))
            .map_err(|e| io_err("cannot start a new audit file", &e))?;
        self.file = file;
        self.name = name;
        self.len = 0;
        self.started = SystemTime::now();
        Ok(())
    }

    /// Starts the next file; returns the names of old files to remove once the new
    /// file's first batch is durable.
    fn rotate(&mut self) -> Result<Vec<PathBuf>, BatchError> {
        let previous = self.name.clone();
        self.start_file()?;
        let mut remove = Vec::new();
        if self.options.keep_files > 0 {
            let files = files_in(&self.dir).map_err(|e| io_err("cannot list the audit directory", &e))?;
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
        self.notes.push(("rotated".to_owned(), detail));
        Ok(remove)
    }

    /// One batch, holding the lock.
    fn commit(&mut self, batch: &[Job], sync: bool) -> Result<(), BatchError> {
        if self.poisoned {
            return Err(other(
                "audit log is unusable after an earlier write failure".to_owned(),
            ));
        }
        self.follow()?;
        let mut remove = Vec::new();
        if self.due() {
            remove = self.rotate()?;
        }
        // Everything before `start` belongs to the chain as read or written so far
        // (other writers' records included): an undo never goes below it.
        let start = self.len;
        let saved = self.head.clone();
        let key = self.options.mac_key.as_ref();
        let mut buf = String::with_capacity(batch.iter().map(|j| j.event_json.len() + 256).sum());
        for (action, detail) in &self.notes {
            let event = AuditEvent::new(EventKind::AuditLog {
                action: action.clone(),
                detail: detail.clone(),
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
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // Undo this batch's bytes, and only those, so the chain on disk and in
            // memory agree.
            self.head = saved;
            if self
                .file
                .set_len(start)
                .and_then(|()| self.file.sync_all())
                .is_err()
            {
                self.poisoned = true;
            }
            self.unsynced = false;
            return Err(io_err(format!("cannot append to {}", self.name), &e));
        }
        self.notes.clear();
        self.len += buf.len() as u64;
        self.unsynced = !sync;
        for path in remove {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove an old audit file");
            }
        }
        Ok(())
    }
}

fn started_at(p: &super::chain::Parsed) -> Option<SystemTime> {
    p.event
        .get("started_at")?
        .as_str()
        .and_then(crate::time::parse_rfc3339)
}

fn torn_note(file: &Path, at: usize, torn: &[u8]) -> String {
    format!(
        "removed a torn last line from {} at byte {at}: {} bytes, sha256 {}",
        file.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        torn.len(),
        sha256_hex(torn)
    )
}

#[cfg(unix)]
fn unlinked(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    meta.nlink() == 0
}

#[cfg(not(unix))]
fn unlinked(_: &std::fs::Metadata) -> bool {
    false
}

impl Backend for Jsonl {
    fn commit(&mut self, batch: &[Job], sync: bool) -> Result<(), BatchError> {
        let _held = hold(&self.lock).map_err(|e| io_err("cannot lock the audit directory", &e))?;
        self.state.commit(batch, sync)
    }

    fn sync(&mut self) -> Result<(), BatchError> {
        self.state.sync_pending()
    }

    fn last_seq(&self) -> u64 {
        self.state.head.next_seq - 1
    }
}
