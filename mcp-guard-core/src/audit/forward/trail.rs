//! Reading the durable local trail in chain order, from a position on.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use super::ForwardRecord;
use crate::audit::AuditError;
use crate::audit::chain::parse;
use crate::audit::verify::{file_name, files_in, seq_of_name};

/// The local trail a forwarder reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrailSource {
    /// The database of a `SqliteAuditSink`.
    Sqlite(PathBuf),
    /// The directory of a [`JsonLinesAuditSink`](crate::audit::JsonLinesAuditSink).
    Jsonl(PathBuf),
}

impl TrailSource {
    /// Where the cursors of this trail's forwarders live: `<database>-forward/` beside
    /// a database, `forward/` inside a JSON Lines directory.
    pub fn cursor_dir(&self) -> PathBuf {
        match self {
            Self::Sqlite(db) => {
                let mut name = db.as_os_str().to_owned();
                name.push("-forward");
                PathBuf::from(name)
            }
            Self::Jsonl(dir) => dir.join("forward"),
        }
    }
}

/// Where a JSON Lines reader stands: after the record `last` of `file`, at `offset`.
struct JsonlPos {
    name: String,
    reader: BufReader<File>,
    /// Just after the record `last`.
    offset: u64,
    /// Where the reader is (ahead of `offset` after reading a line it did not take).
    at: u64,
    last: u64,
}

/// Reads records of a trail; blocking (call it from `spawn_blocking`).
pub(crate) struct TrailReader {
    source: TrailSource,
    #[cfg(feature = "sqlite")]
    db: Option<rusqlite::Connection>,
    pos: Option<JsonlPos>,
}

/// A read stops once its records hold this many bytes (after at least one record), so
/// a batch of large records stays small in memory.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Longest line read from a JSON Lines file (a record is far smaller: payloads are
/// capped).
const MAX_LINE: u64 = 64 * 1024 * 1024;

fn open_err(path: &Path, e: std::io::Error) -> AuditError {
    AuditError::open(path, e)
}

fn record_of(line: &str) -> Result<ForwardRecord, String> {
    let p = parse(line, None)?;
    Ok(ForwardRecord {
        seq: p.seq,
        prev: p.prev,
        hash: p.hash,
        hash_ok: p.hash_ok,
        line: line.to_owned(),
        event: p.event,
    })
}

impl TrailReader {
    pub(crate) fn new(source: TrailSource) -> Self {
        Self {
            source,
            #[cfg(feature = "sqlite")]
            db: None,
            pos: None,
        }
    }

    /// Up to `max` records with `after < seq <= upto`, in order, and no more once they
    /// hold `MAX_BATCH_BYTES`. A record that does not parse ends the read with an
    /// error naming it.
    pub(crate) fn read(
        &mut self,
        after: u64,
        upto: u64,
        max: usize,
    ) -> Result<Vec<ForwardRecord>, AuditError> {
        if upto <= after || max == 0 {
            return Ok(Vec::new());
        }
        match self.source.clone() {
            #[cfg(feature = "sqlite")]
            TrailSource::Sqlite(path) => self.read_sqlite(&path, after, upto, max),
            #[cfg(not(feature = "sqlite"))]
            TrailSource::Sqlite(path) => Err(no_sqlite(&path)),
            TrailSource::Jsonl(dir) => self.read_jsonl(&dir, after, upto, max),
        }
    }

    /// The hash of record `seq`, if the trail holds it.
    pub(crate) fn hash_of(&mut self, seq: u64) -> Result<Option<String>, AuditError> {
        if seq == 0 {
            return Ok(None);
        }
        Ok(self
            .read(seq - 1, seq, 1)?
            .into_iter()
            .find(|r| r.seq == seq)
            .map(|r| r.hash))
    }

    /// Whether the trail holds a record after `seq` (cheap; may say `false` for a
    /// JSON Lines trail whose reader stands elsewhere).
    pub(crate) fn has_after(&mut self, seq: u64) -> Result<bool, AuditError> {
        match self.source.clone() {
            #[cfg(feature = "sqlite")]
            TrailSource::Sqlite(path) => {
                let db = self.db(&path)?;
                let found: Option<i64> = rusqlite::OptionalExtension::optional(db.query_row(
                    "SELECT seq FROM audit_records WHERE seq > ?1 LIMIT 1",
                    [i64::try_from(seq).unwrap_or(i64::MAX)],
                    |r| r.get(0),
                ))
                .map_err(db_err)?;
                Ok(found.is_some())
            }
            #[cfg(not(feature = "sqlite"))]
            TrailSource::Sqlite(path) => Err(no_sqlite(&path)),
            TrailSource::Jsonl(dir) => {
                let Some(pos) = self.pos.as_mut().filter(|p| p.last == seq) else {
                    return Ok(false);
                };
                let len = pos
                    .reader
                    .get_ref()
                    .metadata()
                    .map_err(|e| open_err(&dir.join(&pos.name), e))?
                    .len();
                Ok(len > pos.offset || dir.join(file_name(seq + 1)).exists())
            }
        }
    }

    #[cfg(feature = "sqlite")]
    fn db(&mut self, path: &Path) -> Result<&rusqlite::Connection, AuditError> {
        if self.db.is_none() {
            let conn = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(db_err)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(db_err)?;
            self.db = Some(conn);
        }
        self.db
            .as_ref()
            .ok_or_else(|| AuditError::Unavailable("the audit database is not open".into()))
    }

    #[cfg(feature = "sqlite")]
    fn read_sqlite(
        &mut self,
        path: &Path,
        after: u64,
        upto: u64,
        max: usize,
    ) -> Result<Vec<ForwardRecord>, AuditError> {
        let db = self.db(path)?;
        let mut stmt = db
            .prepare_cached(
                "SELECT seq, record FROM audit_records WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(db_err)?;
        let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(
                [big(after), big(upto), i64::try_from(max).unwrap_or(i64::MAX)],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .map_err(db_err)?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for row in rows {
            if bytes >= MAX_BATCH_BYTES {
                break;
            }
            let (seq, line) = row.map_err(db_err)?;
            bytes += line.len();
            let record = record_of(&line).map_err(|reason| AuditError::Corrupt {
                path: path.to_owned(),
                line: usize::try_from(seq).unwrap_or(0),
                reason,
            })?;
            out.push(record);
        }
        Ok(out)
    }

    /// Puts the reader at the file that holds the record after `after` (or the first
    /// file after a gap), at its start.
    fn locate(dir: &Path, after: u64) -> Result<Option<JsonlPos>, AuditError> {
        let files = files_in(dir).map_err(|e| open_err(dir, e))?;
        let named = |p: &PathBuf| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| Some((n.to_owned(), seq_of_name(n)?)))
        };
        let pick = files
            .iter()
            .filter_map(|p| Some((p, named(p)?)))
            .take_while(|(_, (_, first))| *first <= after + 1)
            .last()
            .or_else(|| files.iter().find_map(|p| Some((p, named(p)?))));
        let Some((path, (name, first))) = pick else {
            return Ok(None);
        };
        let file = File::open(path).map_err(|e| open_err(path, e))?;
        Ok(Some(JsonlPos {
            name,
            reader: BufReader::with_capacity(256 * 1024, file),
            offset: 0,
            at: 0,
            last: first.saturating_sub(1),
        }))
    }

    fn read_jsonl(
        &mut self,
        dir: &Path,
        after: u64,
        upto: u64,
        max: usize,
    ) -> Result<Vec<ForwardRecord>, AuditError> {
        if self.pos.as_ref().is_none_or(|p| p.last != after) {
            self.pos = Self::locate(dir, after)?;
        }
        let mut out = Vec::new();
        let mut line = Vec::new();
        let mut bytes = 0;
        while out.len() < max && bytes < MAX_BATCH_BYTES {
            let Some(pos) = self.pos.as_mut() else { break };
            let path = dir.join(&pos.name);
            line.clear();
            if pos.at != pos.offset {
                pos.reader
                    .seek(SeekFrom::Start(pos.offset))
                    .map_err(|e| open_err(&path, e))?;
                pos.at = pos.offset;
            }
            let n = (&mut pos.reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .map_err(|e| open_err(&path, e))?;
            pos.at += n as u64;
            if n > 0 && line.ends_with(b"\n") {
                let text = std::str::from_utf8(&line[..n - 1]).map_err(|_| AuditError::Corrupt {
                    path: path.clone(),
                    line: 0,
                    reason: format!("the record after seq {} is not UTF-8", pos.last),
                })?;
                let record = record_of(text).map_err(|reason| AuditError::Corrupt {
                    path: path.clone(),
                    line: 0,
                    reason: format!("the record after seq {}: {reason}", pos.last),
                })?;
                if record.seq > upto {
                    break;
                }
                pos.offset += n as u64;
                pos.last = record.seq;
                if record.seq > after {
                    bytes += n;
                    out.push(record);
                }
                continue;
            }
            // The end of this file (or a line still being written, past the durable
            // head). Move on when the next file exists: named by the next seq, or the
            // first later one (older files removed by retention).
            if pos.last >= upto {
                break;
            }
            let next = file_name(pos.last + 1);
            if next != pos.name && dir.join(&next).exists() {
                self.pos = Self::locate(dir, pos.last)?;
                continue;
            }
            let later = files_in(dir)
                .map_err(|e| open_err(dir, e))?
                .into_iter()
                .filter_map(|p| seq_of_name(p.file_name()?.to_str()?))
                .find(|&first| first > pos.last + 1);
            match later {
                Some(first) if first <= upto => self.pos = Self::locate(dir, first - 1)?,
                _ => break,
            }
        }
        Ok(out)
    }
}

#[cfg(feature = "sqlite")]
fn db_err(e: rusqlite::Error) -> AuditError {
    AuditError::Database(Box::new(e))
}

#[cfg(not(feature = "sqlite"))]
fn no_sqlite(path: &Path) -> AuditError {
    AuditError::open(
        path,
        std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this build has no SQLite (feature `sqlite`)",
        ),
    )
}
