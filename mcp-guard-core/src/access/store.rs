//! The access store: API tokens and the session journal in one SQLite file, shared by
//! the serving gateway and the `mcp-guard tokens|sessions` commands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use secrecy::SecretString;

use super::sessions::SessionInfo;
use super::tokens::TokenRecord;
use super::{ClientCredential, SessionState, tokens};
use crate::call::{Principal, PrincipalKind};
use crate::flow::{TaintJournal, TaintMark};

/// Why the access store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("access store {path}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored row does not parse.
    #[error("access store {path}: corrupt row {id}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The row's id.
        id: String,
    },
    /// The random source failed.
    #[error("no random source for a new token")]
    Random,
}

/// Why a presented token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRefused {
    /// Not a gateway token, unknown id, or wrong secret.
    #[error("unknown or invalid token")]
    Invalid,
    /// Revoked.
    #[error("the token was revoked")]
    Revoked,
    /// Past its access duration.
    #[error("the token has expired")]
    Expired,
}

/// A `sessions` row with the revocation of the credential behind it.
struct SessionRow {
    id: String,
    principal: String,
    kind: String,
    credential: String,
    endpoint: String,
    created: i64,
    seen: i64,
    expires: Option<i64>,
    revoked: Option<i64>,
    on_behalf_of: Option<String>,
    gateway: Option<String>,
    ended: Option<i64>,
    credential_revoked: Option<i64>,
    taint: Option<String>,
}

pub(super) struct RevokedSession {
    pub(super) id: String,
    pub(super) credential: String,
    pub(super) endpoint: String,
    pub(super) at: SystemTime,
}

pub(super) struct Revocations {
    pub(super) sessions: Vec<RevokedSession>,
    pub(super) credentials: Vec<(String, SystemTime)>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    principal TEXT NOT NULL,
    description TEXT,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    kind TEXT NOT NULL,
    credential TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    revoked_ms INTEGER,
    on_behalf_of TEXT,
    gateway TEXT,
    ended_ms INTEGER
);
CREATE INDEX IF NOT EXISTS sessions_revoked ON sessions(revoked_ms) WHERE revoked_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS session_taint (
    session TEXT NOT NULL,
    label TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    mark TEXT NOT NULL,
    PRIMARY KEY (session, label)
);
CREATE TABLE IF NOT EXISTS taint_clears (
    session TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gateways (
    id TEXT PRIMARY KEY,
    boot_id TEXT,
    pid INTEGER NOT NULL,
    process_start TEXT,
    started_ms INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    stopped_ms INTEGER
);
";

/// Columns added to `sessions` after its first release, with their types.
const SESSION_COLUMNS: [(&str, &str); 3] = [
    ("on_behalf_of", "TEXT"),
    ("gateway", "TEXT"),
    ("ended_ms", "INTEGER"),
];

/// Brings a store written by an earlier version up to date, in one write transaction
/// (two processes opening an old store at once do it once).
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let have: Vec<String> = c
            .prepare("SELECT name FROM pragma_table_info('sessions')")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for (name, ty) in SESSION_COLUMNS {
            if !have.iter().any(|h| h == name) {
                c.execute_batch(&format!("ALTER TABLE sessions ADD COLUMN {name} {ty}"))?;
            }
        }
        c.execute_batch(
            "CREATE INDEX IF NOT EXISTS sessions_open ON sessions(gateway) WHERE ended_ms IS NULL",
        )
    })();
    match result {
        Ok(()) => c.execute_batch("COMMIT"),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// A gateway whose heartbeat is older than this is taken to be gone (used only where
/// the process cannot be looked at: another machine, or no `/proc`).
const GATEWAY_STALE: Duration = Duration::from_mins(1);

/// This machine's boot id (Linux): with a pid and the process's start time, it names
/// one process for good, so `sessions list` can check whether a gateway still runs.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// A process's start time in clock ticks after boot (`/proc/<pid>/stat`, field 22),
/// which tells a reused pid from the process that had it.
fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields go on after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split(' ').nth(19).map(str::to_owned)
}

/// A serving gateway as the store knows it.
struct GatewayRow {
    boot_id: Option<String>,
    pid: u32,
    process_start: Option<String>,
    heartbeat: SystemTime,
    stopped: Option<SystemTime>,
}

impl GatewayRow {
    /// When the gateway stopped, or `None` while it runs. A process that died without
    /// saying so is reported at its last heartbeat.
    fn gone_at(&self, now: SystemTime, here: Option<&str>) -> Option<SystemTime> {
        if self.stopped.is_some() {
            return self.stopped;
        }
        let alive = match (&self.boot_id, &self.process_start) {
            (Some(boot), Some(start)) if Some(boot.as_str()) == here => {
                process_start(self.pid).as_ref() == Some(start)
            }
            _ => now
                .duration_since(self.heartbeat)
                .map_or(true, |d| d < GATEWAY_STALE),
        };
        (!alive).then_some(self.heartbeat)
    }
}

pub(super) fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(super) fn from_ms(v: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

/// Tokens and sessions in a SQLite file (WAL, `synchronous = FULL`), shared between
/// processes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessStore {
    conn: Arc<Mutex<Connection>>,
    path: Arc<Path>,
}

impl AccessStore {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// [`StoreError::Database`] when SQLite cannot open or initialise it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path: Arc<Path> = path.as_ref().into();
        let err = |source| StoreError::Database {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(parent);
        }
        let conn = Connection::open(&path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.execute_batch(super::oauth::SCHEMA).map_err(err)?;
        migrate(&conn).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&conn).map_err(|source| StoreError::Database {
            path: self.path.to_path_buf(),
            source,
        })
    }

    /// Issues a token for `principal`, valid for `duration` (forever when `None`).
    /// The returned secret is the only copy.
    ///
    /// # Errors
    /// When the store cannot be written or the random source fails.
    pub fn issue_token(
        &self,
        principal: &Principal,
        duration: Option<Duration>,
        description: Option<&str>,
    ) -> Result<(TokenRecord, SecretString), StoreError> {
        let minted = tokens::mint().map_err(|_| StoreError::Random)?;
        let record = TokenRecord::issued_now(&minted, principal, duration, description);
        let principal_json = serde_json::to_string(principal).unwrap_or_default();
        self.with(|c| {
            c.execute(
                "INSERT INTO tokens (id, digest, principal, description, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    record.id,
                    minted.digest.as_slice(),
                    principal_json,
                    record.description,
                    ms(record.created),
                    record.expires.map(ms)
                ],
            )
        })?;
        Ok((record, minted.token))
    }

    /// Checks a presented token.
    ///
    /// # Errors
    /// `Ok(Err(TokenRefused))` when the token is refused; `Err` when the store failed.
    pub fn verify_token(
        &self,
        token: &str,
    ) -> Result<Result<(Principal, ClientCredential), TokenRefused>, StoreError> {
        type Row = (Vec<u8>, String, i64, Option<i64>, Option<i64>);
        let Some((id, secret)) = tokens::split(token) else {
            return Ok(Err(TokenRefused::Invalid));
        };
        let row: Option<Row> = self.with(|c| {
            c.prepare_cached(
                "SELECT digest, principal, created_ms, expires_ms, revoked_ms FROM tokens WHERE id = ?1",
            )?
            .query_row([id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()
        })?;
        let presented = tokens::digest(secret);
        let Some((digest, principal, created, expires, revoked)) = row else {
            // Same work as a hit, so timing does not tell ids apart.
            let _ = tokens::digests_equal(&presented, &[0; 32]);
            return Ok(Err(TokenRefused::Invalid));
        };
        let Ok(stored) = <[u8; 32]>::try_from(digest.as_slice()) else {
            return Err(StoreError::Corrupt {
                path: self.path.to_path_buf(),
                id: id.to_owned(),
            });
        };
        if !tokens::digests_equal(&stored, &presented) {
            return Ok(Err(TokenRefused::Invalid));
        }
        if revoked.is_some() {
            return Ok(Err(TokenRefused::Revoked));
        }
        let expires = expires.map(from_ms);
        if expires.is_some_and(|e| e <= SystemTime::now()) {
            return Ok(Err(TokenRefused::Expired));
        }
        let principal: Principal = serde_json::from_str(&principal).map_err(|_| StoreError::Corrupt {
            path: self.path.to_path_buf(),
            id: id.to_owned(),
        })?;
        let credential = ClientCredential::new(format!("token:{id}"))
            .issued_at(Some(from_ms(created)))
            .expires_at(expires);
        Ok(Ok((principal, credential)))
    }

    /// Every token, newest first.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        type Row = (String, String, Option<String>, i64, Option<i64>, Option<i64>);
        let rows: Vec<Row> = self.with(|c| {
            c.prepare(
                "SELECT id, principal, description, created_ms, expires_ms, revoked_ms FROM tokens ORDER BY created_ms DESC, id",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
            .collect()
        })?;
        rows.into_iter()
            .map(|(id, p, description, created, expires, revoked)| {
                let principal = serde_json::from_str(&p).map_err(|_| StoreError::Corrupt {
                    path: self.path.to_path_buf(),
                    id: id.clone(),
                })?;
                Ok(TokenRecord {
                    id,
                    principal,
                    description,
                    created: from_ms(created),
                    expires: expires.map(from_ms),
                    revoked: revoked.map(from_ms),
                })
            })
            .collect()
    }

    /// Revokes a token (and, through the serving gateway, closes its sessions).
    /// Returns whether a live token had that id.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let now = ms(SystemTime::now());
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let n = tx.execute(
                "UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, now],
            )?;
            if n > 0 {
                // Its sessions end with it, in the journal too.
                tx.execute(
                    "UPDATE sessions SET revoked_ms = ?2 WHERE credential = 'token:' || ?1 \
                     AND revoked_ms IS NULL AND ended_ms IS NULL AND (expires_ms IS NULL OR expires_ms > ?2)",
                    params![id, now],
                )?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
    }

    pub(super) fn insert_session(&self, s: &SessionInfo, gateway: Option<&str>) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO sessions (id, principal, kind, credential, endpoint, created_ms, last_seen_ms, expires_ms, on_behalf_of, gateway) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    s.id,
                    s.principal,
                    s.kind.to_string(),
                    s.credential,
                    s.endpoint,
                    ms(s.created),
                    ms(s.last_seen),
                    s.expires.map(ms),
                    s.on_behalf_of,
                    gateway
                ],
            )
        })
        .map(drop)
    }

    /// Records this process as a serving gateway (the owner of the sessions it
    /// journals): its id.
    pub(super) fn register_gateway(&self) -> Result<String, StoreError> {
        let id = format!("g_{}", crate::hex::random(8).map_err(|_| StoreError::Random)?);
        let now = ms(SystemTime::now());
        let pid = std::process::id();
        self.with(|c| {
            c.execute(
                "INSERT INTO gateways (id, boot_id, pid, process_start, started_ms, heartbeat_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![id, boot_id(), pid, process_start(pid), now],
            )
        })?;
        Ok(id)
    }

    /// Records that `gateway` still runs.
    pub(super) fn heartbeat(&self, gateway: &str, at: SystemTime) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE gateways SET heartbeat_ms = ?2 WHERE id = ?1",
                params![gateway, ms(at)],
            )
        })
        .map(drop)
    }

    /// Records that `gateway` stopped: its open sessions ended.
    pub(super) fn end_gateway(&self, gateway: &str, at: SystemTime) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "UPDATE sessions SET ended_ms = ?2 WHERE gateway = ?1 AND ended_ms IS NULL",
                params![gateway, ms(at)],
            )?;
            tx.execute(
                "UPDATE gateways SET stopped_ms = ?2, heartbeat_ms = ?2 WHERE id = ?1",
                params![gateway, ms(at)],
            )?;
            tx.commit()
        })
    }

    /// Records that one session ended (replaced).
    pub(super) fn end_session(&self, id: &str, at: SystemTime) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE sessions SET ended_ms = ?2 WHERE id = ?1 AND ended_ms IS NULL",
                params![id, ms(at)],
            )
        })
        .map(drop)
    }

    pub(super) fn touch_session(&self, id: &str, at: SystemTime) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE sessions SET last_seen_ms = ?2 WHERE id = ?1",
                params![id, ms(at)],
            )
        })
        .map(drop)
    }

    /// Revokes a session by id. Returns whether a live session had that id.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn revoke_session(&self, id: &str, at: SystemTime) -> Result<bool, StoreError> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE sessions SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, ms(at)],
            )
        })?;
        Ok(n > 0)
    }

    /// Every journalled session, newest first, each in the state it is in now:
    /// revoked (the session, or the token or grant behind it), expired, ended (its
    /// gateway process stopped or is gone), or active; where it is not active, the
    /// earliest of these says which and when.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn list_sessions(&self) -> Result<Vec<SessionInfo>, StoreError> {
        let gateways = self.gateways()?;
        let rows: Vec<SessionRow> = self.with(|c| {
            c.prepare(
                "SELECT s.id, s.principal, s.kind, s.credential, s.endpoint, s.created_ms, s.last_seen_ms, \
                 s.expires_ms, s.revoked_ms, s.on_behalf_of, s.gateway, s.ended_ms, \
                 CASE WHEN s.credential LIKE 'token:%' THEN t.revoked_ms ELSE g.revoked_ms END, \
                 (SELECT group_concat(label) FROM session_taint st WHERE st.session = s.id) \
                 FROM sessions s \
                 LEFT JOIN tokens t ON s.credential LIKE 'token:%' AND t.id = substr(s.credential, 7) \
                 LEFT JOIN oauth_grants g ON s.credential LIKE 'grant:%' AND g.id = substr(s.credential, 7) \
                 ORDER BY s.created_ms DESC, s.id",
            )?
            .query_map([], |r| {
                Ok(SessionRow {
                    id: r.get(0)?,
                    principal: r.get(1)?,
                    kind: r.get(2)?,
                    credential: r.get(3)?,
                    endpoint: r.get(4)?,
                    created: r.get(5)?,
                    seen: r.get(6)?,
                    expires: r.get(7)?,
                    revoked: r.get(8)?,
                    on_behalf_of: r.get(9)?,
                    gateway: r.get(10)?,
                    ended: r.get(11)?,
                    credential_revoked: r.get(12)?,
                    taint: r.get(13)?,
                })
            })?
            .collect()
        })?;
        let now = SystemTime::now();
        let here = boot_id();
        Ok(rows
            .into_iter()
            .map(|r| {
                let expires = r.expires.map(from_ms);
                let revoked = match (r.revoked, r.credential_revoked) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
                .map(from_ms);
                let ended = r.ended.map(from_ms).or_else(|| {
                    r.gateway
                        .as_deref()
                        .and_then(|g| gateways.get(g))
                        .and_then(|g| g.gone_at(now, here.as_deref()))
                });
                let (ended, state) = [
                    (revoked, SessionState::Revoked),
                    (expires.filter(|e| *e <= now), SessionState::Expired),
                    (ended, SessionState::Ended),
                ]
                .into_iter()
                .filter_map(|(t, state)| t.map(|t| (t, state)))
                .min_by_key(|(t, _)| *t)
                .map_or((None, SessionState::Active), |(t, state)| (Some(t), state));
                SessionInfo {
                    id: r.id,
                    principal: r.principal,
                    on_behalf_of: r.on_behalf_of,
                    kind: if r.kind == "agent" {
                        PrincipalKind::Agent
                    } else {
                        PrincipalKind::User
                    },
                    credential: r.credential,
                    endpoint: r.endpoint,
                    created: from_ms(r.created),
                    last_seen: from_ms(r.seen),
                    expires,
                    state,
                    ended,
                    taint: r
                        .taint
                        .as_deref()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or_default(),
                }
            })
            .collect())
    }

    /// The flow taint a session carries, first mark per label.
    ///
    /// # Errors
    /// When the store cannot be read or a mark does not parse.
    pub fn session_taint(&self, id: &str) -> Result<Vec<TaintMark>, StoreError> {
        let rows: Vec<String> = self.with(|c| {
            c.prepare_cached("SELECT mark FROM session_taint WHERE session = ?1 ORDER BY at_ms, label")?
                .query_map([id], |r| r.get(0))?
                .collect()
        })?;
        rows.iter()
            .map(|m| {
                serde_json::from_str(m).map_err(|_| StoreError::Corrupt {
                    path: self.path.to_path_buf(),
                    id: id.to_owned(),
                })
            })
            .collect()
    }

    /// The taint a new session `id` continues: that of the latest earlier session of
    /// the same credential, endpoint and delegation chain, if that one was neither
    /// revoked nor expired. Marks name the session they were set in.
    pub(super) fn inherited_taint(
        &self,
        id: &str,
        credential: &str,
        endpoint: &str,
        chain: (&str, Option<&str>),
    ) -> Result<Vec<TaintMark>, StoreError> {
        let now = ms(SystemTime::now());
        let previous: Option<(String, Option<i64>, Option<i64>)> = self.with(|c| {
            c.prepare_cached(
                "SELECT id, revoked_ms, expires_ms FROM sessions WHERE credential = ?1 AND endpoint = ?2 \
                 AND principal = ?3 AND on_behalf_of IS ?4 AND id != ?5 \
                 ORDER BY created_ms DESC, rowid DESC LIMIT 1",
            )?
            .query_row(params![credential, endpoint, chain.0, chain.1, id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })?;
        let Some((previous, revoked, expires)) = previous else {
            return Ok(Vec::new());
        };
        if revoked.is_some() || expires.is_some_and(|e| e <= now) {
            return Ok(Vec::new());
        }
        let mut marks = self.session_taint(&previous)?;
        for m in &mut marks {
            m.session.get_or_insert_with(|| previous.clone());
        }
        Ok(marks)
    }

    /// Clears a session's flow taint as of `at` (a serving gateway applies it within a
    /// second; marks set later stay). Returns whether the store knows the session.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn clear_taint(&self, id: &str, at: SystemTime) -> Result<bool, StoreError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let known: bool = tx
                .prepare_cached("SELECT 1 FROM sessions WHERE id = ?1")?
                .exists([id])?;
            if known {
                tx.execute(
                    "DELETE FROM session_taint WHERE session = ?1 AND at_ms <= ?2",
                    params![id, ms(at)],
                )?;
                tx.execute(
                    "INSERT INTO taint_clears (session, at_ms) VALUES (?1, ?2) \
                     ON CONFLICT(session) DO UPDATE SET at_ms = max(at_ms, excluded.at_ms)",
                    params![id, ms(at)],
                )?;
            }
            tx.commit()?;
            Ok(known)
        })
    }

    /// When each of `ids` last had its taint cleared, for those that did.
    pub(super) fn taint_clears<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, SystemTime>, StoreError> {
        self.with(|c| {
            let mut q = c.prepare_cached("SELECT at_ms FROM taint_clears WHERE session = ?1")?;
            let mut out = HashMap::new();
            for id in ids {
                if let Some(at) = q.query_row([id], |r| r.get::<_, i64>(0)).optional()? {
                    out.insert(id.to_owned(), from_ms(at));
                }
            }
            Ok(out)
        })
    }

    fn gateways(&self) -> Result<HashMap<String, GatewayRow>, StoreError> {
        self.with(|c| {
            c.prepare("SELECT id, boot_id, pid, process_start, heartbeat_ms, stopped_ms FROM gateways")?
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        GatewayRow {
                            boot_id: r.get(1)?,
                            pid: r.get(2)?,
                            process_start: r.get(3)?,
                            heartbeat: from_ms(r.get(4)?),
                            stopped: r.get::<_, Option<i64>>(5)?.map(from_ms),
                        },
                    ))
                })?
                .collect()
        })
    }

    /// SQLite's `data_version`: changes when another connection commits.
    pub(super) fn data_version(&self) -> Result<u64, StoreError> {
        self.with(|c| c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)))
            .map(|v| u64::try_from(v).unwrap_or(0))
    }

    pub(super) fn revocations(&self) -> Result<Revocations, StoreError> {
        self.with(|c| {
            let sessions = c
                .prepare(
                    "SELECT id, credential, endpoint, revoked_ms FROM sessions WHERE revoked_ms IS NOT NULL",
                )?
                .query_map([], |r| {
                    Ok(RevokedSession {
                        id: r.get(0)?,
                        credential: r.get(1)?,
                        endpoint: r.get(2)?,
                        at: from_ms(r.get(3)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let credentials = c
                .prepare("SELECT id, revoked_ms FROM tokens WHERE revoked_ms IS NOT NULL")?
                .query_map([], |r| {
                    Ok((format!("token:{}", r.get::<_, String>(0)?), from_ms(r.get(1)?)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let grants = c
                .prepare("SELECT id, revoked_ms FROM oauth_grants WHERE revoked_ms IS NOT NULL")?
                .query_map([], |r| {
                    Ok((format!("grant:{}", r.get::<_, String>(0)?), from_ms(r.get(1)?)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut credentials = credentials;
            credentials.extend(grants);
            Ok(Revocations {
                sessions,
                credentials,
            })
        })
    }
}

impl TaintJournal for AccessStore {
    fn save_mark(&self, session: &str, mark: &TaintMark) -> Result<(), crate::BoxError> {
        let text = serde_json::to_string(mark)?;
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO session_taint (session, label, at_ms, mark) VALUES (?1, ?2, ?3, ?4)",
                params![session, mark.label.as_str(), ms(mark.at), text],
            )
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{SessionRefused, Sessions};

    fn expose(s: &SecretString) -> String {
        #[expect(clippy::disallowed_methods, reason = "test presents the token it issued")]
        secrecy::ExposeSecret::expose_secret(s).to_owned()
    }

    #[test]
    fn tokens_issue_verify_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccessStore::open(dir.path().join("access.db")).unwrap();
        let alice = Principal::user("alice").with_roles(["engineer"]);
        let (rec, secret) = store
            .issue_token(&alice, Some(Duration::from_hours(1)), Some("laptop"))
            .unwrap();
        let token = expose(&secret);
        let (p, cred) = store.verify_token(&token).unwrap().unwrap();
        assert_eq!(p, alice);
        assert_eq!(&*cred.id, format!("token:{}", rec.id).as_str());
        let mut wrong = token.clone();
        wrong.pop();
        wrong.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            store.verify_token(&wrong).unwrap().unwrap_err(),
            TokenRefused::Invalid
        );
        assert_eq!(store.list_tokens().unwrap().len(), 1);
        assert!(store.revoke_token(&rec.id).unwrap());
        assert!(!store.revoke_token(&rec.id).unwrap());
        assert_eq!(
            store.verify_token(&token).unwrap().unwrap_err(),
            TokenRefused::Revoked
        );
        // The file never holds the secret.
        let bytes = std::fs::read(store.path()).unwrap();
        let secret_part = token.rsplit('_').next().unwrap();
        assert!(
            !bytes
                .windows(secret_part.len())
                .any(|w| w == secret_part.as_bytes())
        );
    }

    #[test]
    fn revocation_in_another_connection_reaches_live_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.db");
        let serving = Sessions::with_store(AccessStore::open(&path).unwrap()).unwrap();
        let cli = AccessStore::open(&path).unwrap();
        let alice = Arc::new(Principal::user("alice"));
        let cred = ClientCredential::new("token:0123456789ab");
        let s = serving.admit(&alice, &cred, "eng").unwrap();
        let listed = cli.list_sessions().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, s.id().0.as_ref());
        assert!(cli.revoke_session(&listed[0].id, SystemTime::now()).unwrap());
        serving.sync().unwrap();
        assert!(s.closed().is_cancelled());
        assert_eq!(
            serving.admit(&alice, &cred, "eng").unwrap_err(),
            SessionRefused::Revoked
        );
        // A restarted gateway still refuses it.
        let restarted = Sessions::with_store(AccessStore::open(&path).unwrap()).unwrap();
        assert_eq!(
            restarted.admit(&alice, &cred, "eng").unwrap_err(),
            SessionRefused::Revoked
        );
        assert_eq!(cli.list_sessions().unwrap()[0].state, SessionState::Revoked);
    }

    fn state_of(store: &AccessStore, id: &str) -> SessionState {
        store
            .list_sessions()
            .unwrap()
            .into_iter()
            .find(|s| s.id == id)
            .unwrap()
            .state
    }

    #[tokio::test]
    async fn listed_states_follow_tokens_expiry_and_the_owning_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.db");
        let serving = Sessions::with_store(AccessStore::open(&path).unwrap()).unwrap();
        let cli = AccessStore::open(&path).unwrap();
        let carol = Principal::user("carol");
        let (rec, _) = cli.issue_token(&carol, None, None).unwrap();
        let by_token = serving
            .admit(
                &Arc::new(carol.clone()),
                &ClientCredential::new(format!("token:{}", rec.id)),
                "eng",
            )
            .unwrap();
        let soon = ClientCredential::new("token:short")
            .expires_at(Some(SystemTime::now() + Duration::from_millis(30)));
        let short = serving.admit(&Arc::new(carol.clone()), &soon, "eng").unwrap();
        let bot = Arc::new(Principal::agent("ci-bot").acting_for("alice"));
        let open = serving
            .admit(&bot, &ClientCredential::new("jwt:i#alice#act:ci-bot"), "eng")
            .unwrap();
        assert_eq!(state_of(&cli, &by_token.id().0), SessionState::Active);
        let listed = cli.list_sessions().unwrap();
        let delegated = listed.iter().find(|s| s.id == open.id().0.as_ref()).unwrap();
        assert_eq!(
            (delegated.principal.as_str(), delegated.on_behalf_of.as_deref()),
            ("ci-bot", Some("alice"))
        );

        // Revoking the token ends its session in the journal too.
        assert!(cli.revoke_token(&rec.id).unwrap());
        assert_eq!(state_of(&cli, &by_token.id().0), SessionState::Revoked);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(state_of(&cli, &short.id().0), SessionState::Expired);

        // The gateway stops: what was open has ended; what ended before keeps its state.
        serving.close_all();
        assert!(open.closed().is_cancelled());
        assert_eq!(state_of(&cli, &open.id().0), SessionState::Ended);
        assert_eq!(state_of(&cli, &by_token.id().0), SessionState::Revoked);
        assert_eq!(state_of(&cli, &short.id().0), SessionState::Expired);
    }

    #[test]
    fn sessions_of_a_gateway_that_died_without_a_word_are_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.db");
        let store = AccessStore::open(&path).unwrap();
        let alive = Sessions::with_store(AccessStore::open(&path).unwrap()).unwrap();
        let s = alive
            .admit(
                &Arc::new(Principal::user("a")),
                &ClientCredential::new("token:a"),
                "e",
            )
            .unwrap();
        assert_eq!(
            state_of(&store, &s.id().0),
            SessionState::Active,
            "this process runs"
        );
        let now = ms(SystemTime::now());
        let old = ms(SystemTime::now() - Duration::from_mins(5));
        store
            .with(|c| {
                // On this machine, a process that is not (or no longer) there; elsewhere,
                // one fresh and one silent heartbeat.
                c.execute_batch(&format!(
                    "INSERT INTO gateways (id, boot_id, pid, process_start, started_ms, heartbeat_ms) VALUES \
                     ('g_gone', '{boot}', {pid}, 'not-its-start', {old}, {old}), \
                     ('g_far', 'another-machine', 1, '1', {old}, {now}), \
                     ('g_silent', 'another-machine', 1, '1', {old}, {old}); \
                     INSERT INTO sessions (id, principal, kind, credential, endpoint, created_ms, last_seen_ms, gateway) VALUES \
                     ('s_gone', 'a', 'user', 'token:b', 'e', {old}, {old}, 'g_gone'), \
                     ('s_far', 'a', 'user', 'token:c', 'e', {old}, {old}, 'g_far'), \
                     ('s_silent', 'a', 'user', 'token:d', 'e', {old}, {old}, 'g_silent');",
                    boot = boot_id().unwrap_or_default(),
                    pid = std::process::id(),
                ))
            })
            .unwrap();
        if boot_id().is_some() {
            assert_eq!(state_of(&store, "s_gone"), SessionState::Ended);
        }
        assert_eq!(state_of(&store, "s_far"), SessionState::Active);
        assert_eq!(state_of(&store, "s_silent"), SessionState::Ended);
    }

    #[test]
    fn a_store_of_the_previous_version_gains_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, principal TEXT NOT NULL, kind TEXT NOT NULL, \
             credential TEXT NOT NULL, endpoint TEXT NOT NULL, created_ms INTEGER NOT NULL, \
             last_seen_ms INTEGER NOT NULL, expires_ms INTEGER, revoked_ms INTEGER); \
             INSERT INTO sessions VALUES ('s_old', 'a', 'user', 'token:x', 'e', 1, 1, NULL, NULL);",
        )
        .unwrap();
        drop(old);
        let store = AccessStore::open(&path).unwrap();
        let _again = AccessStore::open(&path).unwrap();
        let listed = store.list_sessions().unwrap();
        assert_eq!(listed[0].id, "s_old");
        assert_eq!(listed[0].state, SessionState::Active, "no owner known: as it was");
    }
}
