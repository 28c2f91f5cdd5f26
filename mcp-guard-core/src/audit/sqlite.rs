//! [`SqliteAuditSink`]: hash-chained records in an embedded SQLite database, with
//! indexed columns for [`query_database`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};

use super::chain::{Checker, Head, MacKey, parse};
use super::verify::VerifyReport;
use super::writer::{Backend, BatchError, GroupCommit, Job, micros};
use super::{AuditError, AuditEvent, AuditSink};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_records (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    method     TEXT,
    time_us    INTEGER NOT NULL,
    principal  TEXT,
    endpoint   TEXT,
    server     TEXT,
    tool       TEXT,
    outcome    TEXT,
    session    TEXT,
    request_id TEXT,
    prev       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    mac        TEXT,
    record     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time      ON audit_records (time_us);
CREATE INDEX IF NOT EXISTS audit_principal ON audit_records (principal, time_us);
CREATE INDEX IF NOT EXISTS audit_endpoint  ON audit_records (endpoint, time_us);
CREATE INDEX IF NOT EXISTS audit_server    ON audit_records (server, tool, time_us);
CREATE INDEX IF NOT EXISTS audit_tool      ON audit_records (tool, time_us);
CREATE INDEX IF NOT EXISTS audit_outcome   ON audit_records (outcome, time_us);
CREATE INDEX IF NOT EXISTS audit_session   ON audit_records (session, time_us);
CREATE INDEX IF NOT EXISTS audit_id        ON audit_records (id);
";

/// A row that is the start record of a call (`r`: the row's alias).
const STARTED: &str = "(r.kind = 'request' AND r.outcome IS NULL AND COALESCE(json_extract(r.record, '$.event.phase'), '') = 'started')";
/// The call of row `r` has an outcome record after it.
const HAS_OUTCOME: &str =
    "EXISTS (SELECT 1 FROM audit_records f WHERE f.id = r.id AND f.seq > r.seq AND f.outcome IS NOT NULL)";

fn db_err(e: rusqlite::Error) -> AuditError {
    AuditError::Database(Box::new(e))
}

/// Options of [`SqliteAuditSink`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// Add an HMAC-SHA256 to each record with this key.
    pub mac_key: Option<MacKey>,
    /// Records that may wait for the writer; further callers wait (backpressure).
    pub queue: usize,
    /// Most records committed by one transaction.
    pub max_batch: usize,
    /// After writing deferred records ([`AuditSink::record_deferred`]), sync them
    /// once this long has passed without a record that syncs anyway. Default
    /// [`DEFAULT_IDLE_SYNC`](super::DEFAULT_IDLE_SYNC).
    pub idle_sync: std::time::Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            mac_key: None,
            queue: 4096,
            max_batch: 1024,
            idle_sync: super::DEFAULT_IDLE_SYNC,
        }
    }
}

/// Stores each event as a sealed, hash-chained record (the same bytes as a line of
/// [`JsonLinesAuditSink`](super::JsonLinesAuditSink)) in table `audit_records`,
/// with indexed columns for time, principal, endpoint, server, tool, outcome and
/// session.
///
/// **Durable**: the database runs in WAL mode with `synchronous = FULL`, so every
/// commit syncs the WAL before it returns; `record` returns after the commit that
/// holds its record. (`NORMAL` would survive a process crash but may lose the last
/// commits on power loss, which breaks the promise that an answered call is
/// recorded.) Concurrent records share one transaction (group commit). Deferred
/// records ([`AuditSink::record_deferred`]) are committed with `synchronous = NORMAL`
/// (written to the WAL, which a crash of the process cannot lose) and made durable by
/// the next `FULL` commit's sync of the WAL, or by an idle sync.
///
/// **Several writers** (processes, or sinks in one process) may share the database:
/// each transaction takes SQLite's write lock and continues the chain from the newest
/// row under it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use mcp_guard_core::audit::{AuditQuery, EventKind, SqliteAuditSink, SqliteOptions, query_database};
/// use mcp_guard_core::{AuditEvent, AuditSink};
/// let dir = tempfile::tempdir()?;
/// let db = dir.path().join("audit.db");
/// let sink = SqliteAuditSink::open(&db, SqliteOptions::default())?;
/// sink.record(&AuditEvent::new(EventKind::ConfigReloaded { digest: String::new(), changes: String::new() })).await?;
/// let rows = query_database(&db, &AuditQuery::default())?;
/// assert_eq!(rows.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SqliteAuditSink {
    writer: GroupCommit,
    path: PathBuf,
}

impl SqliteAuditSink {
    /// Opens (creating it if needed) the database at `path` and starts its writer.
    ///
    /// Blocking: call it at startup. The newest record is checked before the chain
    /// is continued.
    ///
    /// # Errors
    /// [`AuditError::Database`] when SQLite fails, [`AuditError::Corrupt`] when the
    /// newest record fails its hash or MAC.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, AuditError> {
        let path = path.as_ref().to_owned();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| AuditError::open(parent, e))?;
        }
        let conn = Connection::open(&path).map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        let last: Option<(i64, String)> = conn
            .query_row(
                "SELECT seq, record FROM audit_records ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_err)?;
        let head = match last {
            None => Head::default(),
            Some((seq, record)) => {
                let corrupt = |reason: String| AuditError::Corrupt {
                    path: path.clone(),
                    line: usize::try_from(seq).unwrap_or(0),
                    reason,
                };
                let p = parse(&record, options.mac_key.as_ref()).map_err(&corrupt)?;
                if !p.hash_ok || p.mac_ok == Some(false) || i64::try_from(p.seq).ok() != Some(seq) {
                    return Err(corrupt("the newest record fails its hash, MAC or seq".to_owned()));
                }
                Head {
                    next_seq: p.seq + 1,
                    prev: p.hash,
                }
            }
        };
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let mut backend = Sqlite {
            conn,
            head,
            key: options.mac_key,
            wal: wal.into(),
            full: true,
        };
        // What an earlier process committed without a sync is made durable now, so the
        // durable head (what forwarders may send) starts at the newest record.
        backend
            .sync()
            .map_err(|e| AuditError::open(&path, std::io::Error::new(e.kind, e.message)))?;
        let writer = GroupCommit::spawn(
            "mcp-guard-audit-sqlite",
            backend,
            options.queue,
            options.max_batch,
            options.idle_sync,
        )?;
        Ok(Self { writer, path })
    }

    /// The newest durable record, for an audit forwarder reading this database.
    pub fn durable_head(&self) -> super::DurableHead {
        self.writer.durable()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer after it has committed everything queued.
    pub fn close(self) {
        self.writer.close();
    }
}

#[async_trait]
impl AuditSink for SqliteAuditSink {
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

struct Sqlite {
    conn: Connection,
    head: Head,
    key: Option<MacKey>,
    /// The write-ahead log, synced by an idle sync.
    wal: PathBuf,
    /// `synchronous` is `FULL` (else `NORMAL`, for deferred records only).
    full: bool,
}

impl Sqlite {
    fn insert(&mut self, batch: &[Job]) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may share the database (a stdio gateway next to an HTTP one):
        // under the write lock, continue the chain from whatever is newest now.
        let newest: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((seq, hash)) = newest {
            self.head = Head {
                next_seq: u64::try_from(seq).unwrap_or(0) + 1,
                prev: hash,
            };
        }
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO audit_records (seq, id, kind, method, time_us, principal, endpoint, server, tool, outcome, session, request_id, prev, hash, mac, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            for job in batch {
                let prev = self.head.prev.clone();
                let s = self.head.seal(&job.event_json, self.key.as_ref());
                let i = &job.index;
                stmt.execute(params![
                    i64::try_from(s.seq).unwrap_or(i64::MAX),
                    i.id,
                    i.kind,
                    i.method,
                    i.time_us,
                    i.principal,
                    i.endpoint,
                    i.server,
                    i.tool,
                    i.outcome,
                    i.session,
                    i.request_id,
                    prev,
                    s.hash,
                    s.mac,
                    s.line.trim_end(),
                ])?;
            }
        }
        tx.commit()
    }
}

impl Backend for Sqlite {
    fn commit(&mut self, batch: &[Job], sync: bool) -> Result<(), BatchError> {
        let failed = |e: &rusqlite::Error| {
            BatchError::new("audit database write failed", e, std::io::ErrorKind::Other)
        };
        if self.full != sync {
            self.conn
                .pragma_update(None, "synchronous", if sync { "FULL" } else { "NORMAL" })
                .map_err(|e| failed(&e))?;
            self.full = sync;
        }
        let saved = self.head.clone();
        // A failed transaction rolls back when dropped: undo the head with it.
        self.insert(batch).map_err(|e| {
            self.head = saved;
            failed(&e)
        })
    }

    fn last_seq(&self) -> u64 {
        self.head.next_seq - 1
    }

    fn sync(&mut self) -> Result<(), BatchError> {
        // Commits made with `NORMAL` are in the WAL file; syncing it makes them durable
        // (a checkpoint since then has synced them into the database already).
        match std::fs::File::open(&self.wal) {
            Ok(f) => f
                .sync_data()
                .map_err(|e| BatchError::new(format!("cannot sync {}", self.wal.display()), &e, e.kind())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BatchError::new(
                format!("cannot open {}", self.wal.display()),
                &e,
                e.kind(),
            )),
        }
    }
}

/// Filters for [`query_database`]; every field set must match.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AuditQuery {
    /// Principal id.
    pub principal: Option<String>,
    /// Endpoint name.
    pub endpoint: Option<String>,
    /// Configured server id.
    pub server: Option<String>,
    /// The upstream's tool (or prompt, resource) name.
    pub tool: Option<String>,
    /// Outcome (`ok`, `denied`, `tool_error`, ...).
    pub outcome: Option<String>,
    /// Gateway session.
    pub session: Option<String>,
    /// The record's type (`request`, `session_revoked`, `console_action`, ...).
    pub kind: Option<String>,
    /// Started at or after.
    pub since: Option<SystemTime>,
    /// Started before.
    pub until: Option<SystemTime>,
    /// At most this many (the newest), returned oldest first.
    pub limit: Option<usize>,
    /// Only calls started without an outcome record (the gateway stopped during the
    /// call, its outcome could not be written, or the call is still running).
    pub incomplete: bool,
    /// Every record. By default the start record of a call whose outcome record
    /// exists is left out (the outcome record repeats everything it says), so each
    /// call is one row.
    pub all_records: bool,
}

/// One row found by [`query_database`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueryRow {
    /// Position in the chain.
    pub seq: u64,
    /// The indexed columns.
    pub principal: Option<String>,
    /// Endpoint.
    pub endpoint: Option<String>,
    /// Server.
    pub server: Option<String>,
    /// Tool.
    pub tool: Option<String>,
    /// Outcome.
    pub outcome: Option<String>,
    /// The start record of a call that has no outcome record.
    pub incomplete: bool,
    /// The event as recorded.
    pub event: serde_json::Value,
}

fn open_read_only(path: &Path) -> Result<Connection, AuditError> {
    if !path.is_file() {
        return Err(AuditError::open(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such database file"),
        ));
    }
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)
}

/// Finds records in a database written by [`SqliteAuditSink`].
///
/// # Errors
/// [`AuditError::Open`] when the file does not exist, [`AuditError::Database`] when
/// it is not an audit database.
pub fn query_database(path: &Path, q: &AuditQuery) -> Result<Vec<QueryRow>, AuditError> {
    let conn = open_read_only(path)?;
    let mut sql = format!(
        "SELECT r.seq, r.principal, r.endpoint, r.server, r.tool, r.outcome, r.record, \
         ({STARTED} AND NOT {HAS_OUTCOME}) FROM audit_records r WHERE 1=1"
    );
    if q.incomplete {
        let _ = write!(sql, " AND {STARTED} AND NOT {HAS_OUTCOME}");
    } else if !q.all_records {
        let _ = write!(sql, " AND NOT ({STARTED} AND {HAS_OUTCOME})");
    }
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    for (col, v) in [
        ("principal", &q.principal),
        ("endpoint", &q.endpoint),
        ("server", &q.server),
        ("tool", &q.tool),
        ("outcome", &q.outcome),
        ("session", &q.session),
        ("kind", &q.kind),
    ] {
        if let Some(v) = v {
            args.push(v.clone().into());
            let _ = write!(sql, " AND r.{col} = ?{}", args.len());
        }
    }
    if let Some(t) = q.since {
        args.push(micros(t).into());
        let _ = write!(sql, " AND r.time_us >= ?{}", args.len());
    }
    if let Some(t) = q.until {
        args.push(micros(t).into());
        let _ = write!(sql, " AND r.time_us < ?{}", args.len());
    }
    sql.push_str(" ORDER BY r.seq DESC");
    if let Some(n) = q.limit {
        let _ = write!(sql, " LIMIT {n}");
    }
    let mut stmt = conn.prepare(&sql).map_err(db_err)?;
    let mut rows: Vec<QueryRow> = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            let record: String = r.get(6)?;
            let event = serde_json::from_str::<serde_json::Value>(&record)
                .ok()
                .and_then(|mut v| v.get_mut("event").map(serde_json::Value::take))
                .unwrap_or(serde_json::Value::Null);
            Ok(QueryRow {
                seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                principal: r.get(1)?,
                endpoint: r.get(2)?,
                server: r.get(3)?,
                tool: r.get(4)?,
                outcome: r.get(5)?,
                incomplete: r.get::<_, Option<bool>>(7)?.unwrap_or(false),
                event,
            })
        })
        .map_err(db_err)?
        .collect::<Result<_, _>>()
        .map_err(db_err)?;
    rows.reverse();
    Ok(rows)
}

fn str_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// Verifies a database written by [`SqliteAuditSink`]: the chain of records (as
/// [`verify_paths`](super::verify_paths) does for files) and that every indexed
/// column still says what its record says (so a row cannot be hidden from queries
/// by editing a column). Calls started without an outcome record are listed in
/// [`VerifyReport::incomplete`].
///
/// # Errors
/// [`AuditError::Open`] / [`AuditError::Database`] when the database cannot be read.
pub fn verify_database(path: &Path, key: Option<&MacKey>) -> Result<VerifyReport, AuditError> {
    let conn = open_read_only(path)?;
    let mut stmt = conn
        .prepare(
            "SELECT seq, prev, hash, mac, record, id, kind, time_us, principal, endpoint, server, tool, outcome, session, request_id
             FROM audit_records ORDER BY seq",
        )
        .map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    let mut report = VerifyReport {
        files: 1,
        ..VerifyReport::default()
    };
    let mut checker = Checker::new(key);
    let mut calls = super::verify::Calls::default();
    while let Some(r) = rows.next().map_err(db_err)? {
        let seq: i64 = r.get(0).map_err(db_err)?;
        let row_seq = u64::try_from(seq).ok();
        let record: String = r.get(4).map_err(db_err)?;
        let starts = checker.last().is_none();
        let (parsed, problems) = checker.check(&record);
        for what in problems {
            report.problem(path, None, row_seq, what);
        }
        let Some(p) = parsed else { continue };
        let col = |i: usize| r.get::<_, Option<String>>(i).ok().flatten();
        if row_seq != Some(p.seq) {
            report.problem(
                path,
                None,
                row_seq,
                format!("row seq differs from the record's seq {}", p.seq),
            );
        }
        if col(1).as_deref() != Some(p.prev.as_str()) || col(2).as_deref() != Some(p.hash.as_str()) {
            report.problem(
                path,
                None,
                row_seq,
                "prev/hash columns differ from the record".to_owned(),
            );
        }
        let e = &p.event;
        let expected = [
            ("id", 5, str_at(e, &["id"])),
            ("kind", 6, str_at(e, &["type"])),
            ("principal", 8, str_at(e, &["principal", "id"])),
            ("endpoint", 9, str_at(e, &["endpoint"])),
            ("server", 10, str_at(e, &["target", "server"])),
            ("tool", 11, str_at(e, &["target", "name"])),
            ("outcome", 12, str_at(e, &["outcome"])),
            ("session", 13, str_at(e, &["session"])),
            ("request_id", 14, str_at(e, &["request_id"])),
        ];
        for (name, i, want) in expected {
            if col(i).as_deref() != want {
                report.problem(
                    path,
                    None,
                    row_seq,
                    format!("column {name} differs from the record"),
                );
            }
        }
        let time_us: Option<i64> = r.get(7).ok();
        let want_time = str_at(e, &["started_at"])
            .and_then(crate::time::parse_rfc3339)
            .map(micros);
        if time_us != want_time {
            report.problem(
                path,
                None,
                row_seq,
                "column time_us differs from the record".to_owned(),
            );
        }
        if starts && p.prev != super::GENESIS {
            report.notes.push(format!(
                "the chain starts at seq {}: earlier records are missing",
                p.seq
            ));
        }
        calls.saw(&p.event, path, None, p.seq);
        report.saw(p.seq, &p.hash);
    }
    calls.finish(&mut report);
    if report.records == 0 {
        report.notes.push("no records".to_owned());
    }
    Ok(report)
}
