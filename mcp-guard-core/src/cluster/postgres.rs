//! The PostgreSQL adapter of the shared state: tokens, the change log, its feed, and
//! the schema with its version.
//!
//! Three connections per replica, each named in `pg_stat_activity.application_name`:
//! `mcp-guard:<replica>` reads (the change log every 250 ms, token lookups on a cache
//! miss), `mcp-guard-listen:<replica>` waits for notifications, and
//! `mcp-guard-write:<replica>` runs the transactions that write. Each is reopened when
//! it breaks; reads and the freshness bound do not depend on the listener.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures::StreamExt as _;
use secrecy::SecretString;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::sync::CancellationToken;

use super::{Change, ClusterError, Engine, EngineStatus, Refused, SharedTokens, TokenRecord};
use crate::access::{ClientCredential, tokens};
use crate::call::Principal;

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 1;

/// How often each replica reads the change log, notification or not.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The notification channel (a doorbell: the payload is empty, the log holds the news).
const CHANNEL: &str = "mcp_guard_changes";

/// Advisory lock keys ("mcpg" and a number): schema upgrades, change-log writers.
const SCHEMA_LOCK: i64 = 0x6d63_7067_0001;
const FEED_LOCK: i64 = 0x6d63_7067_0002;

/// At most this many cached tokens (the cache is dropped whole beyond it).
const CACHE_LIMIT: usize = 100_000;

/// Schema steps: step `i` brings version `i` to `i + 1`.
const MIGRATIONS: [&str; 1] = ["
CREATE TABLE mcp_guard_tokens (
    id TEXT PRIMARY KEY,
    digest BYTEA NOT NULL,
    principal TEXT NOT NULL,
    description TEXT,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    revoked_ms BIGINT
);
CREATE TABLE mcp_guard_changes (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    origin TEXT NOT NULL
);
"];

fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ClusterError {
    move |e| ClusterError::Database {
        what: what.into(),
        source: Box::new(e),
    }
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(v: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The connection settings of `url`, named `application`.
fn settings(url: &SecretString, application: &str) -> Result<tokio_postgres::Config, ClusterError> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the connection string goes to the database driver and nowhere else"
    )]
    let text = secrecy::ExposeSecret::expose_secret(url);
    let mut config: tokio_postgres::Config = text.parse().map_err(|e: tokio_postgres::Error| {
        // The parser's message may quote the string, password included: keep only its kind.
        let _ = e;
        ClusterError::Database {
            what: "cluster.database_url does not parse as a PostgreSQL connection string".into(),
            source: "invalid connection string".into(),
        }
    })?;
    config
        .application_name(application)
        .connect_timeout(Duration::from_secs(5));
    Ok(config)
}

/// Opens one connection, driven by a task of its own.
async fn open(url: &SecretString, application: &str) -> Result<Client, ClusterError> {
    let (client, connection) = settings(url, application)?
        .connect(NoTls)
        .await
        .map_err(db("connecting to PostgreSQL"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The schema version the database holds (`None`: no mcp-guard schema), without
/// changing anything.
///
/// # Errors
/// The database cannot be reached or read.
pub async fn inspect(url: &SecretString) -> Result<Option<i32>, ClusterError> {
    let client = open(url, "mcp-guard-check").await?;
    schema_version(&client).await
}

async fn schema_version(client: &Client) -> Result<Option<i32>, ClusterError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('mcp_guard_schema') IS NOT NULL", &[])
        .await
        .map_err(db("reading the schema version"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt("SELECT version FROM mcp_guard_schema", &[])
        .await
        .map_err(db("reading the schema version"))?;
    Ok(row.map(|r| r.get(0)))
}

/// Creates or upgrades the schema to [`SCHEMA_VERSION`] in one transaction (two
/// replicas starting at once upgrade it once); returns the version before.
///
/// # Errors
/// [`ClusterError::SchemaTooNew`] when a newer mcp-guard wrote it (nothing changes);
/// the database failed.
pub async fn migrate(url: &SecretString) -> Result<i32, ClusterError> {
    let mut client = open(url, "mcp-guard-migrate").await?;
    migrate_on(&mut client).await
}

async fn migrate_on(client: &mut Client) -> Result<i32, ClusterError> {
    let what = "upgrading the schema";
    let tx = client.transaction().await.map_err(db(what))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(db(what))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS mcp_guard_schema (
            singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
            version INTEGER NOT NULL,
            updated_ms BIGINT NOT NULL
        )",
    )
    .await
    .map_err(db(what))?;
    let found: i32 = tx
        .query_opt("SELECT version FROM mcp_guard_schema", &[])
        .await
        .map_err(db(what))?
        .map_or(0, |r| r.get(0));
    if found > SCHEMA_VERSION {
        return Err(ClusterError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for step in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)) {
        tx.batch_execute(step).await.map_err(db(what))?;
    }
    tx.execute(
        "INSERT INTO mcp_guard_schema (singleton, version, updated_ms) VALUES (TRUE, $1, $2) \
         ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, updated_ms = EXCLUDED.updated_ms",
        &[&SCHEMA_VERSION, &ms(SystemTime::now())],
    )
    .await
    .map_err(db(what))?;
    tx.commit().await.map_err(db(what))?;
    Ok(found)
}

/// A token found live, as cached between feed events.
#[derive(Debug, Clone)]
struct Cached {
    digest: [u8; 32],
    principal: Principal,
    created: SystemTime,
    expires: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct TokenCache {
    live: HashMap<String, Cached>,
    /// Ids the feed reported revoked since start: never cached again.
    revoked: HashSet<String>,
}

#[derive(Debug)]
struct Inner {
    url: SecretString,
    replica: String,
    max_staleness: Duration,
    started: Instant,
    reader: RwLock<Option<Arc<Client>>>,
    writer: tokio::sync::Mutex<Option<Client>>,
    confirmed: Mutex<Option<Instant>>,
    listening: AtomicBool,
    last_error: Mutex<Option<String>>,
    cache: Mutex<TokenCache>,
    doorbell: tokio::sync::Notify,
    cursor: tokio::sync::Mutex<i64>,
}

/// Cluster state on PostgreSQL: a [`SharedTokens`] store with a cache kept right by
/// the change feed, and an [`Engine`] that refuses once state is not confirmed within
/// `max_staleness`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgCluster {
    inner: Arc<Inner>,
}

impl PgCluster {
    /// Connects as `replica`, creating or upgrading the schema (automatic migration),
    /// and reads the change log's position. Call [`PgCluster::start`] to follow it.
    ///
    /// # Errors
    /// The database cannot be reached, or holds a schema from a newer version.
    pub async fn connect(
        url: SecretString,
        replica: &str,
        max_staleness: Duration,
    ) -> Result<Self, ClusterError> {
        let mut writer = open(&url, &format!("mcp-guard-write:{replica}")).await?;
        migrate_on(&mut writer).await?;
        let reader = open(&url, &format!("mcp-guard:{replica}")).await?;
        let started = Instant::now();
        let cursor: i64 = reader
            .query_one("SELECT COALESCE(MAX(id), 0) FROM mcp_guard_changes", &[])
            .await
            .map_err(db("reading the change log"))?
            .get(0);
        Ok(Self {
            inner: Arc::new(Inner {
                url,
                replica: replica.to_owned(),
                max_staleness,
                started,
                reader: RwLock::new(Some(Arc::new(reader))),
                writer: tokio::sync::Mutex::new(Some(writer)),
                confirmed: Mutex::new(Some(started)),
                listening: AtomicBool::new(false),
                last_error: Mutex::new(None),
                cache: Mutex::new(TokenCache::default()),
                doorbell: tokio::sync::Notify::new(),
                cursor: tokio::sync::Mutex::new(cursor),
            }),
        })
    }

    /// Follows the change feed until `stop`: listens for notifications and reads the
    /// log every [`POLL_INTERVAL`], passing each change to `apply` (after the token
    /// cache has dropped what it names).
    pub fn start(&self, apply: impl Fn(Change) + Send + Sync + 'static, stop: CancellationToken) {
        let apply: Arc<dyn Fn(Change) + Send + Sync> = Arc::new(apply);
        let this = self.clone();
        let halt = stop.clone();
        tokio::spawn(async move { this.poll_loop(apply.as_ref(), &halt).await });
        let this = self.clone();
        tokio::spawn(async move { this.listen_loop(&stop).await });
    }

    /// Reads the change log once now (what the loop does every [`POLL_INTERVAL`]).
    ///
    /// # Errors
    /// The database could not be read.
    pub async fn poll(&self, apply: &(dyn Fn(Change) + Send + Sync)) -> Result<usize, ClusterError> {
        let mut cursor = self.inner.cursor.lock().await;
        let began = Instant::now();
        let client = self.reader().await?;
        let rows = client
            .query(
                "SELECT id, kind, key, at_ms FROM mcp_guard_changes WHERE id > $1 ORDER BY id",
                &[&*cursor],
            )
            .await
            .map_err(db("reading the change log"))?;
        for row in &rows {
            let (id, kind, key, at): (i64, String, String, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            *cursor = id;
            if kind == "token_revoked" {
                {
                    let mut cache = self.inner.cache.lock().unwrap_or_else(PoisonError::into_inner);
                    cache.live.remove(&key);
                    cache.revoked.insert(key.clone());
                }
                apply(Change::TokenRevoked {
                    id: key,
                    at: from_ms(at),
                });
            } else {
                tracing::warn!(%kind, "the change log holds a kind this version does not know");
            }
        }
        let mut confirmed = self
            .inner
            .confirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if confirmed.is_none_or(|c| c < began) {
            *confirmed = Some(began);
        }
        Ok(rows.len())
    }

    async fn poll_loop(&self, apply: &(dyn Fn(Change) + Send + Sync), stop: &CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL_INTERVAL) => {}
                () = self.inner.doorbell.notified() => {}
            }
            let result = self.poll(apply).await;
            let mut last = self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match result {
                Ok(_) => *last = None,
                Err(e) => {
                    let text = crate::upstream::error_chain(&e);
                    if last.as_deref() != Some(text.as_str()) {
                        tracing::error!(error = %text, "cannot read the cluster's shared state: requests are refused once it is older than max_staleness");
                    }
                    *last = Some(text);
                }
            }
        }
    }

    async fn listen_loop(&self, stop: &CancellationToken) {
        while !stop.is_cancelled() {
            if let Err(e) = self.listen_once(stop).await {
                tracing::debug!(error = %crate::upstream::error_chain(&e), "the cluster notification connection failed");
            }
            self.inner.listening.store(false, Ordering::Relaxed);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    async fn listen_once(&self, stop: &CancellationToken) -> Result<(), ClusterError> {
        let (client, mut connection) = settings(
            &self.inner.url,
            &format!("mcp-guard-listen:{}", self.inner.replica),
        )?
        .connect(NoTls)
        .await
        .map_err(db("connecting to PostgreSQL to listen"))?;
        let (bell, mut rung) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if matches!(message, AsyncMessage::Notification(_)) && bell.send(()).is_err() {
                    return;
                }
            }
        });
        let listening = client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(db("listening for changes"));
        if listening.is_ok() {
            self.inner.listening.store(true, Ordering::Relaxed);
            // Catch up on whatever happened while nobody listened.
            self.inner.doorbell.notify_one();
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    m = rung.recv() => match m {
                        Some(()) => self.inner.doorbell.notify_one(),
                        None => break,
                    },
                }
            }
        }
        driver.abort();
        listening
    }

    /// The reading connection, reopened when it broke.
    async fn reader(&self) -> Result<Arc<Client>, ClusterError> {
        let current = self
            .inner
            .reader
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(c) = current.filter(|c| !c.is_closed()) {
            return Ok(c);
        }
        let fresh = Arc::new(open(&self.inner.url, &format!("mcp-guard:{}", self.inner.replica)).await?);
        *self.inner.reader.write().unwrap_or_else(PoisonError::into_inner) = Some(fresh.clone());
        Ok(fresh)
    }

    /// Runs `f` in one transaction on the writing connection (reopened when it broke).
    async fn write<T>(
        &self,
        what: &'static str,
        f: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, ClusterError> {
        let mut writer = self.inner.writer.lock().await;
        if writer.as_ref().is_none_or(Client::is_closed) {
            *writer = Some(
                open(
                    &self.inner.url,
                    &format!("mcp-guard-write:{}", self.inner.replica),
                )
                .await?,
            );
        }
        let Some(client) = writer.as_mut() else {
            return Err(ClusterError::Database {
                what: what.into(),
                source: "no connection".into(),
            });
        };
        let tx = client.transaction().await.map_err(db(what))?;
        let value = f(&tx).await.map_err(db(what))?;
        tx.commit().await.map_err(db(what))?;
        Ok(value)
    }

    fn cached(&self, id: &str) -> Option<Cached> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .live
            .get(id)
            .cloned()
    }

    fn remember(&self, id: &str, token: Cached) {
        let mut cache = self.inner.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.revoked.contains(id) {
            return;
        }
        if cache.live.len() >= CACHE_LIMIT {
            cache.live.clear();
        }
        cache.live.insert(id.to_owned(), token);
    }
}

impl Engine for PgCluster {
    fn fresh(&self) -> Result<(), ClusterError> {
        let confirmed = *self
            .inner
            .confirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let age = confirmed.map_or_else(|| self.inner.started.elapsed(), |c| c.elapsed());
        if age <= self.inner.max_staleness {
            Ok(())
        } else {
            Err(ClusterError::Stale {
                for_ms: millis(age),
                bound_ms: millis(self.inner.max_staleness),
            })
        }
    }

    fn status(&self) -> EngineStatus {
        let confirmed = *self
            .inner
            .confirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let age = confirmed.map_or_else(|| self.inner.started.elapsed(), |c| c.elapsed());
        EngineStatus {
            engine: "postgres",
            replica: self.inner.replica.clone(),
            fresh: self.fresh().is_ok(),
            confirmed_ms_ago: millis(age),
            max_staleness_ms: millis(self.inner.max_staleness),
            listening: self.inner.listening.load(Ordering::Relaxed),
            schema_version: SCHEMA_VERSION,
            last_error: self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

#[async_trait]
impl SharedTokens for PgCluster {
    async fn issue(
        &self,
        principal: &Principal,
        duration: Option<Duration>,
        description: Option<&str>,
    ) -> Result<(TokenRecord, SecretString), ClusterError> {
        let minted = tokens::mint().map_err(|_| ClusterError::Random)?;
        let record = TokenRecord::issued_now(&minted, principal, duration, description);
        let principal_json = serde_json::to_string(principal).unwrap_or_default();
        let digest = minted.digest.to_vec();
        self.write("issuing a token", async |tx| {
            tx.execute(
                "INSERT INTO mcp_guard_tokens (id, digest, principal, description, created_ms, expires_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &record.id,
                    &digest,
                    &principal_json,
                    &record.description,
                    &ms(record.created),
                    &record.expires.map(ms),
                ],
            )
            .await
        })
        .await?;
        Ok((record, minted.token))
    }

    async fn verify(
        &self,
        token: &str,
    ) -> Result<Result<(Principal, ClientCredential), Refused>, ClusterError> {
        self.fresh()?;
        let Some((id, secret)) = tokens::split(token) else {
            return Ok(Err(Refused::Invalid));
        };
        let presented = tokens::digest(secret);
        let found = if let Some(c) = self.cached(id) {
            Some((c, None))
        } else {
            let client = self.reader().await?;
            let row = client
                .query_opt(
                    "SELECT digest, principal, created_ms, expires_ms, revoked_ms FROM mcp_guard_tokens WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(db("looking up a token"))?;
            match row {
                None => None,
                Some(row) => {
                    let (digest, principal, created, expires, revoked): (
                        Vec<u8>,
                        String,
                        i64,
                        Option<i64>,
                        Option<i64>,
                    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
                    let corrupt = || ClusterError::Corrupt { id: id.to_owned() };
                    let digest = <[u8; 32]>::try_from(digest.as_slice()).map_err(|_| corrupt())?;
                    let principal: Principal = serde_json::from_str(&principal).map_err(|_| corrupt())?;
                    let cached = Cached {
                        digest,
                        principal,
                        created: from_ms(created),
                        expires: expires.map(from_ms),
                    };
                    Some((cached, Some(revoked)))
                }
            }
        };
        let Some((token, looked_up)) = found else {
            // Same work as a hit, so timing does not tell ids apart.
            let _ = tokens::digests_equal(&presented, &[0; 32]);
            return Ok(Err(Refused::Invalid));
        };
        if !tokens::digests_equal(&token.digest, &presented) {
            return Ok(Err(Refused::Invalid));
        }
        if let Some(Some(_)) = looked_up {
            return Ok(Err(Refused::Revoked));
        }
        if token.expires.is_some_and(|e| e <= SystemTime::now()) {
            return Ok(Err(Refused::Expired));
        }
        if looked_up.is_some() {
            self.remember(id, token.clone());
        }
        let credential = ClientCredential::new(format!("token:{id}"))
            .issued_at(Some(token.created))
            .expires_at(token.expires);
        Ok(Ok((token.principal, credential)))
    }

    async fn revoke(&self, id: &str) -> Result<bool, ClusterError> {
        let now = ms(SystemTime::now());
        let origin = self.inner.replica.clone();
        self.write("revoking a token", async |tx| {
            // One writer of the change log at a time, so ids commit in order and a
            // reader that has seen id n has seen everything below it.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&FEED_LOCK]).await?;
            let n = tx
                .execute(
                    "UPDATE mcp_guard_tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL",
                    &[&id, &now],
                )
                .await?;
            if n > 0 {
                tx.execute(
                    "INSERT INTO mcp_guard_changes (kind, key, at_ms, origin) VALUES ('token_revoked', $1, $2, $3)",
                    &[&id, &now, &origin],
                )
                .await?;
                tx.batch_execute(&format!("NOTIFY {CHANNEL}")).await?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<TokenRecord>, ClusterError> {
        let client = self.reader().await?;
        let rows = client
            .query(
                "SELECT id, principal, description, created_ms, expires_ms, revoked_ms FROM mcp_guard_tokens \
                 ORDER BY created_ms DESC, id",
                &[],
            )
            .await
            .map_err(db("listing tokens"))?;
        rows.iter()
            .map(|r| {
                let id: String = r.get(0);
                let principal: String = r.get(1);
                let principal =
                    serde_json::from_str(&principal).map_err(|_| ClusterError::Corrupt { id: id.clone() })?;
                Ok(TokenRecord {
                    id,
                    principal,
                    description: r.get(2),
                    created: from_ms(r.get(3)),
                    expires: r.get::<_, Option<i64>>(4).map(from_ms),
                    revoked: r.get::<_, Option<i64>>(5).map(from_ms),
                })
            })
            .collect()
    }
}
