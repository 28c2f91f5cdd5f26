//! The forwarder's task: read after the cursor, send, confirm, advance, retry.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::cursor::{Cursor, Position};
use super::trail::TrailReader;
use super::{ForwardError, ForwardRecord, Sent, TrailSource, Transport};
use crate::audit::{DurableHead, GENESIS};
use crate::config::StartAt;

/// How a [`Forwarder`] paces itself.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ForwardOptions {
    /// Most records per send. Default 500.
    pub batch: usize,
    /// Where to start without a cursor. Default the beginning of the trail.
    pub start_at: StartAt,
    /// First delay after a failure (doubling). Default 500 ms.
    pub retry_initial: Duration,
    /// Longest delay between retries. Default 30 s.
    pub retry_max: Duration,
    /// A send that takes longer than this counts as failed. Default 30 s (each
    /// transport has its own, shorter, connect and request timeouts).
    pub send_timeout: Duration,
    /// Warn while the backlog is above this many records. Default 10000.
    pub warn_backlog: u64,
    /// While idle or standing by: how often to look for records written by other
    /// processes and for a free cursor lock. Default 1 s.
    pub poll: Duration,
    /// The cursor file is rewritten at most this often while records flow (and
    /// whenever the forwarder catches up or stops). Default 250 ms.
    pub persist_every: Duration,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        Self {
            batch: 500,
            start_at: StartAt::Beginning,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            warn_backlog: 10_000,
            poll: Duration::from_secs(1),
            persist_every: Duration::from_millis(250),
        }
    }
}

/// What a forwarder is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardState {
    /// Taking its cursor, reading its position.
    Starting,
    /// Another process forwards under this name (it holds the cursor's lock).
    Standby,
    /// Sending the backlog.
    Sending,
    /// Everything durable has been delivered.
    CaughtUp,
    /// The last send failed; waiting to retry.
    Retrying,
    /// It cannot run (an unreadable cursor file); the error says why.
    Failed,
    /// Stopped.
    Stopped,
}

impl ForwardState {
    /// A short name (`caught_up`, `retrying`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Standby => "standby",
            Self::Sending => "sending",
            Self::CaughtUp => "caught_up",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// A snapshot of one forwarder.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ForwardStatus {
    /// The configured name.
    pub name: String,
    /// Where records go.
    pub destination: String,
    /// What it is doing.
    pub state: ForwardState,
    /// Since when.
    pub since: SystemTime,
    /// The `seq` of the last record delivered (its cursor).
    pub delivered_seq: u64,
    /// The `seq` of the newest durable record of the trail.
    pub durable_seq: u64,
    /// Records durable and not delivered yet: `durable_seq - delivered_seq`.
    pub backlog: u64,
    /// Records delivered by this process.
    pub delivered: u64,
    /// Failed sends (each is retried).
    pub failures: u64,
    /// Records the trail no longer held when the forwarder reached them.
    pub skipped: u64,
    /// Records whose hash or link to the previous record did not check out when
    /// read (they are forwarded as they are; the receiver sees the same).
    pub chain_problems: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<SystemTime>,
    /// When a record was last delivered.
    pub last_delivery_at: Option<SystemTime>,
}

impl ForwardStatus {
    fn new(name: &str, destination: String) -> Self {
        Self {
            name: name.to_owned(),
            destination,
            state: ForwardState::Starting,
            since: SystemTime::now(),
            delivered_seq: 0,
            durable_seq: 0,
            backlog: 0,
            delivered: 0,
            failures: 0,
            skipped: 0,
            chain_problems: 0,
            last_error: None,
            last_error_at: None,
            last_delivery_at: None,
        }
    }

    /// One line for `mcp-guard status`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} -> {}: {}, delivered up to seq {} of {} (backlog {})",
            self.name,
            self.destination,
            self.state.as_str(),
            self.delivered_seq,
            self.durable_seq,
            self.backlog
        );
        if self.skipped > 0 {
            let _ = write!(s, ", {} skipped (gone from the trail)", self.skipped);
        }
        if let Some(e) = &self.last_error {
            let _ = write!(s, ", last error: {e}");
        }
        s
    }
}

/// One forwarder, ready to run: a transport, the trail it reads, the sink's durable
/// head and where its cursor lives.
pub struct Forwarder {
    name: String,
    transport: Box<dyn Transport>,
    trail: TrailSource,
    durable: DurableHead,
    cursor_dir: PathBuf,
    options: ForwardOptions,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("name", &self.name)
            .field("destination", &self.transport.destination())
            .field("trail", &self.trail)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder named `name` (it names the cursor file) sending `trail`'s records,
    /// up to `durable`, through `transport`; the cursor lives in
    /// [`TrailSource::cursor_dir`].
    pub fn new(
        name: impl Into<String>,
        transport: Box<dyn Transport>,
        trail: TrailSource,
        durable: DurableHead,
    ) -> Self {
        Self {
            name: name.into(),
            transport,
            cursor_dir: trail.cursor_dir(),
            trail,
            durable,
            options: ForwardOptions::default(),
        }
    }

    /// Sets the pacing.
    #[must_use]
    pub fn options(mut self, options: ForwardOptions) -> Self {
        self.options = options;
        self
    }

    /// Keeps the cursor in `dir` instead of next to the trail.
    #[must_use]
    pub fn cursor_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cursor_dir = dir.into();
        self
    }

    /// Starts the forwarder's task on the current Tokio runtime.
    pub fn spawn(self) -> ForwarderHandle {
        let status = Arc::new(Mutex::new(ForwardStatus::new(
            &self.name,
            self.transport.destination(),
        )));
        let stop = CancellationToken::new();
        let deadline = Arc::new(Mutex::new(None));
        let task = Run {
            f: self,
            status: status.clone(),
            stop: stop.clone(),
            deadline: deadline.clone(),
            logged_at: None,
            quiet_failures: 0,
            warned_backlog: false,
            skipped_to: 0,
        };
        let handle = tokio::spawn(task.run());
        ForwarderHandle {
            inner: Arc::new(HandleInner {
                status,
                stop,
                deadline,
                task: Mutex::new(Some(handle)),
            }),
        }
    }
}

struct HandleInner {
    status: Arc<Mutex<ForwardStatus>>,
    stop: CancellationToken,
    deadline: Arc<Mutex<Option<Instant>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A running forwarder.
#[derive(Clone)]
pub struct ForwarderHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for ForwarderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwarderHandle")
            .field("status", &self.status())
            .finish()
    }
}

impl ForwarderHandle {
    /// What it is doing now.
    pub fn status(&self) -> ForwardStatus {
        self.inner
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks it to deliver what is durable and stop, within `grace`; waits for it.
    /// What it could not deliver in time stays in the trail and is sent after the
    /// next start.
    pub async fn stop(&self, grace: Duration) {
        *self.inner.deadline.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + grace);
        self.inner.stop.cancel();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = task {
            let abort = t.abort_handle();
            if tokio::time::timeout(grace + Duration::from_secs(2), t)
                .await
                .is_err()
            {
                abort.abort();
                tracing::warn!(forwarder = %self.status().name, "the audit forwarder did not stop in time");
            }
        }
    }
}

/// The forwarders of a gateway.
#[derive(Debug, Clone, Default)]
pub struct Forwarders {
    handles: Arc<Vec<ForwarderHandle>>,
}

impl Forwarders {
    /// A set of running forwarders.
    pub fn new(handles: Vec<ForwarderHandle>) -> Self {
        Self {
            handles: Arc::new(handles),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Each one's status, in configuration order.
    pub fn statuses(&self) -> Vec<ForwardStatus> {
        self.handles.iter().map(ForwarderHandle::status).collect()
    }

    /// Stops them all, each delivering what it can within `grace`.
    pub async fn stop(&self, grace: Duration) {
        futures::future::join_all(self.handles.iter().map(|h| h.stop(grace))).await;
    }
}

/// The task's state.
struct Run {
    f: Forwarder,
    status: Arc<Mutex<ForwardStatus>>,
    stop: CancellationToken,
    deadline: Arc<Mutex<Option<Instant>>>,
    /// When a failure was last logged (failures in a row are logged every 30 s).
    logged_at: Option<Instant>,
    quiet_failures: u64,
    warned_backlog: bool,
    /// The last seq counted as skipped.
    skipped_to: u64,
}

/// Failures in a row are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(30);

impl Run {
    fn update(&self, f: impl FnOnce(&mut ForwardStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn set_state(&self, state: ForwardState) {
        self.update(|s| {
            if s.state != state {
                s.state = state;
                s.since = SystemTime::now();
            }
        });
    }

    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps `d`, or less when asked to stop; `true` when stopping.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => self.stop.is_cancelled(),
            () = self.stop.cancelled() => true,
        }
    }

    fn name(&self) -> &str {
        &self.f.name
    }

    /// Takes the cursor lock, waiting in standby while another process holds it.
    async fn acquire(&mut self) -> Option<Cursor> {
        let mut logged = false;
        loop {
            let (dir, name, dest) = (
                self.f.cursor_dir.clone(),
                self.f.name.clone(),
                self.f.transport.destination(),
            );
            let got = tokio::task::spawn_blocking(move || Cursor::acquire(&dir, &name, &dest)).await;
            match got {
                Ok(Ok(Some(c))) => return Some(c),
                Ok(Ok(None)) => {
                    if !logged {
                        tracing::info!(
                            forwarder = self.name(),
                            dir = %self.f.cursor_dir.display(),
                            "another process forwards audit records under this name; standing by"
                        );
                        logged = true;
                    }
                    self.set_state(ForwardState::Standby);
                    self.standby_backlog();
                }
                Ok(Err(e)) => {
                    let message = format!("cannot use the cursor in {}: {e}", self.f.cursor_dir.display());
                    self.failed_quietly(&message);
                }
                Err(e) => self.failed_quietly(&format!("cursor task: {e}")),
            }
            if self.pause(self.f.options.poll.max(Duration::from_secs(2))).await {
                return None;
            }
        }
    }

    /// In standby: the backlog as the other process's cursor file says.
    fn standby_backlog(&self) {
        let path = self.f.cursor_dir.join(format!("{}.cursor", self.f.name));
        let seq = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t.trim()).ok())
            .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64));
        let durable = self.f.durable.current();
        self.update(|s| {
            s.durable_seq = durable;
            if let Some(seq) = seq {
                s.delivered_seq = seq;
                s.backlog = durable.saturating_sub(seq);
            }
        });
    }

    fn failed_quietly(&mut self, message: &str) {
        let now = Instant::now();
        if self.logged_at.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            tracing::error!(forwarder = self.name(), error = message, "audit forwarder");
            self.logged_at = Some(now);
        }
        let message = message.to_owned();
        self.update(|s| {
            s.last_error = Some(message);
            s.last_error_at = Some(SystemTime::now());
        });
    }

    /// Reads the cursor's position and checks it belongs to this trail.
    async fn position(&mut self, cursor: &Cursor, reader: TrailReader) -> (Option<Position>, TrailReader) {
        let loaded = cursor.load();
        let start_at = self.f.options.start_at;
        let durable = self.f.durable.current();
        let name = self.f.name.clone();
        let cursor_path = cursor.path().to_owned();
        let result = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let pos = match loaded {
                Err(e) => Err(format!(
                    "{e}; fix or remove it (removing resends the whole trail)"
                )),
                Ok(Some((pos, _))) if pos.seq == 0 => Ok(Position::start()),
                Ok(Some((pos, _))) => match reader.hash_of(pos.seq) {
                    Ok(Some(h)) if h == pos.hash => Ok(pos),
                    Ok(found) => {
                        tracing::warn!(
                            forwarder = name,
                            cursor = %cursor_path.display(),
                            seq = pos.seq,
                            found = found.is_some(),
                            "the cursor names a record this trail does not hold (the trail was replaced); \
                             forwarding this trail from its beginning"
                        );
                        Ok(Position::start())
                    }
                    Err(e) => Err(format!("cannot read the trail: {e}")),
                },
                Ok(None) => match start_at {
                    StartAt::End if durable > 0 => match reader.hash_of(durable) {
                        Ok(Some(hash)) => Ok(Position { seq: durable, hash }),
                        Ok(None) => Ok(Position::start()),
                        Err(e) => Err(format!("cannot read the trail: {e}")),
                    },
                    _ => Ok(Position::start()),
                },
            };
            (pos, reader)
        })
        .await;
        match result {
            Ok((Ok(p), reader)) => (Some(p), reader),
            Ok((Err(e), reader)) => {
                self.failed_quietly(&e);
                (None, reader)
            }
            Err(e) => {
                self.failed_quietly(&format!("cursor task: {e}"));
                (None, TrailReader::new(self.f.trail.clone()))
            }
        }
    }

    async fn store(&mut self, cursor: &Arc<Cursor>, pos: &Position) {
        let (c, p) = (cursor.clone(), pos.clone());
        match tokio::task::spawn_blocking(move || c.store(&p)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.failed_quietly(&format!(
                "cannot write the cursor {}: {e}",
                cursor.path().display()
            )),
            Err(e) => self.failed_quietly(&format!("cursor task: {e}")),
        }
    }

    async fn run(mut self) {
        let Some(cursor) = self.acquire().await else {
            self.set_state(ForwardState::Stopped);
            return;
        };
        let cursor = Arc::new(cursor);
        let reader = TrailReader::new(self.f.trail.clone());
        let (pos, reader) = self.position(&cursor, reader).await;
        let Some(start) = pos else {
            self.set_state(ForwardState::Failed);
            self.stop.cancelled().await;
            self.set_state(ForwardState::Stopped);
            return;
        };
        tracing::info!(
            forwarder = self.name(),
            destination = %self.f.transport.destination(),
            from_seq = start.seq + 1,
            "forwarding audit records"
        );
        self.update(|s| s.delivered_seq = start.seq);
        self.forward(&cursor, reader, start).await;
        self.set_state(ForwardState::Stopped);
    }

    /// The main loop.
    #[allow(
        clippy::too_many_lines,
        reason = "one loop: read, send, confirm, persist, wait"
    )]
    async fn forward(&mut self, cursor: &Arc<Cursor>, mut reader: TrailReader, start: Position) {
        let mut acked = start.clone();
        let mut sent = start;
        let mut stored = acked.clone();
        let mut stored_at = Instant::now();
        // Written and not yet confirmed (transports without acknowledgement).
        let mut pending: VecDeque<(Position, u64, Instant)> = VecDeque::new();
        let mut backoff = self.f.options.retry_initial;
        let mut limit = self.f.options.batch.max(1);
        // Idle polls that found records past the durable head (written by another
        // process that has not synced them for us).
        let mut beyond = 0u32;
        loop {
            let head = self.f.durable.current();
            let stopping = self.stop.is_cancelled();
            let late = self.deadline().is_some_and(|d| Instant::now() >= d);
            self.update(|s| {
                s.durable_seq = head;
                s.delivered_seq = acked.seq;
                s.backlog = head.saturating_sub(acked.seq);
            });
            self.watch_backlog(head.saturating_sub(acked.seq));
            if late {
                break;
            }
            // 1. Send what is durable and not sent yet.
            if sent.seq < head {
                let after = sent.seq;
                let max = limit;
                let read = tokio::task::spawn_blocking(move || {
                    let r = reader.read(after, head, max);
                    (reader, r)
                })
                .await;
                let records = match read {
                    Ok((r, Ok(records))) => {
                        reader = r;
                        records
                    }
                    Ok((r, Err(e))) => {
                        reader = r;
                        self.failed_quietly(&format!("cannot read the trail: {e}"));
                        self.set_state(ForwardState::Retrying);
                        if stopping {
                            break;
                        }
                        self.pause(backoff).await;
                        backoff = (backoff * 2).min(self.f.options.retry_max);
                        continue;
                    }
                    Err(e) => {
                        self.failed_quietly(&format!("trail reader task: {e}"));
                        reader = TrailReader::new(self.f.trail.clone());
                        if stopping {
                            break;
                        }
                        self.pause(backoff).await;
                        continue;
                    }
                };
                let Some(first) = records.first() else {
                    // Nothing left of (sent, head]: removed from the trail.
                    self.skip(sent.seq + 1, head);
                    sent = Position {
                        seq: head,
                        hash: String::new(),
                    };
                    if pending.is_empty() {
                        acked = sent.clone();
                    }
                    continue;
                };
                if first.seq > sent.seq + 1 {
                    self.skip(sent.seq + 1, first.seq - 1);
                } else {
                    self.check_chain(&sent, &records);
                }
                let last = records.last().map_or_else(
                    || sent.clone(),
                    |r| Position {
                        seq: r.seq,
                        hash: r.hash.clone(),
                    },
                );
                self.set_state(ForwardState::Sending);
                let n = records.len() as u64;
                let result =
                    match tokio::time::timeout(self.f.options.send_timeout, self.f.transport.send(&records))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(ForwardError::Timeout {
                            destination: self.f.transport.destination(),
                            secs: self.f.options.send_timeout.as_secs(),
                        }),
                    };
                match result {
                    Ok(Sent::Acknowledged) => {
                        sent = last.clone();
                        acked = last;
                        pending.clear();
                        self.delivered(n);
                        backoff = self.f.options.retry_initial;
                        limit = (limit * 2).min(self.f.options.batch.max(1));
                    }
                    Ok(_) => {
                        sent = last;
                        pending.push_back((sent.clone(), n, Instant::now()));
                        backoff = self.f.options.retry_initial;
                    }
                    Err(e) => {
                        if let ForwardError::TooLarge { records, .. } = &e {
                            limit = (records / 2).max(1);
                        }
                        self.failure(&e, acked.seq);
                        self.f.transport.reset();
                        sent = acked.clone();
                        pending.clear();
                        if stopping {
                            break;
                        }
                        self.pause(jitter(backoff)).await;
                        backoff = (backoff * 2).min(self.f.options.retry_max);
                        continue;
                    }
                }
            }
            // 2. Confirm writes that have stood long enough.
            let window = self.f.transport.confirm_after();
            if pending.front().is_some_and(|(_, _, at)| at.elapsed() >= window) {
                match self.f.transport.probe().await {
                    Ok(()) => {
                        let mut n = 0;
                        while let Some((p, k, _)) =
                            pending.front().filter(|(_, _, at)| at.elapsed() >= window)
                        {
                            acked = p.clone();
                            n += k;
                            pending.pop_front();
                        }
                        self.delivered(n);
                    }
                    Err(e) => {
                        self.failure(&e, acked.seq);
                        self.f.transport.reset();
                        sent = acked.clone();
                        pending.clear();
                        if stopping {
                            break;
                        }
                        self.pause(jitter(backoff)).await;
                        backoff = (backoff * 2).min(self.f.options.retry_max);
                        continue;
                    }
                }
            }
            // 3. Keep the cursor.
            let caught_up = sent.seq >= head && pending.is_empty();
            if acked != stored
                && (caught_up || stopping || stored_at.elapsed() >= self.f.options.persist_every)
            {
                self.store(cursor, &acked).await;
                stored = acked.clone();
                stored_at = Instant::now();
            }
            if sent.seq < head {
                continue;
            }
            // 4. Everything durable is sent: stop, or wait for more.
            if stopping && pending.is_empty() {
                break;
            }
            if pending.is_empty() {
                self.set_state(ForwardState::CaughtUp);
            }
            let wait = pending.front().map_or(self.f.options.poll, |(_, _, at)| {
                (window.saturating_sub(at.elapsed())).min(self.f.options.poll)
            });
            let mut durable = self.f.durable.clone();
            let moved = async {
                if !durable.wait_past(head).await {
                    // The sink has stopped: nothing more becomes durable.
                    std::future::pending::<()>().await;
                }
            };
            let timed_out = tokio::select! {
                () = moved => false,
                () = tokio::time::sleep(wait.max(Duration::from_millis(10))) => true,
                () = self.stop.cancelled(), if !stopping => false,
            };
            if timed_out && pending.is_empty() && !stopping {
                // Records past the durable head that stay there were written by another
                // process: ask our writer to take them in and sync them.
                let h = head;
                let has = tokio::task::spawn_blocking(move || {
                    let r = reader.has_after(h);
                    (reader, r)
                })
                .await;
                match has {
                    Ok((r, found)) => {
                        reader = r;
                        beyond = if matches!(found, Ok(true)) { beyond + 1 } else { 0 };
                    }
                    Err(_) => reader = TrailReader::new(self.f.trail.clone()),
                }
                if beyond >= 2 {
                    beyond = 0;
                    if let Err(e) = self.f.durable.catch_up().await {
                        tracing::debug!(forwarder = self.name(), error = %e, "catching up with other writers failed");
                    }
                }
            }
        }
        if acked != stored {
            self.store(cursor, &acked).await;
        }
        if !pending.is_empty() {
            tracing::info!(
                forwarder = self.name(),
                unconfirmed = pending.iter().map(|(_, n, _)| n).sum::<u64>(),
                "stopping with records written but not yet confirmed; they are sent again after the next start"
            );
        }
    }

    fn delivered(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        if self.quiet_failures > 0 || self.logged_at.is_some() {
            tracing::info!(
                forwarder = self.name(),
                failures = self.quiet_failures,
                "the receiver takes audit records again"
            );
            self.quiet_failures = 0;
            self.logged_at = None;
        }
        self.update(|s| {
            s.delivered += n;
            s.last_delivery_at = Some(SystemTime::now());
        });
    }

    fn failure(&mut self, e: &ForwardError, acked: u64) {
        self.quiet_failures += 1;
        let now = Instant::now();
        if self.logged_at.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            tracing::warn!(
                forwarder = self.name(),
                error = %e,
                delivered_seq = acked,
                failures = self.quiet_failures,
                "audit forwarding failed; retrying (records wait in the local trail)"
            );
            self.logged_at = Some(now);
        }
        let message = e.to_string();
        self.update(|s| {
            s.failures += 1;
            s.last_error = Some(message);
            s.last_error_at = Some(SystemTime::now());
            if s.state != ForwardState::Retrying {
                s.state = ForwardState::Retrying;
                s.since = SystemTime::now();
            }
        });
    }

    /// Counts records `from..=to` as gone from the trail (once, however often a
    /// retry finds the same gap).
    fn skip(&mut self, from: u64, to: u64) {
        let from = from.max(self.skipped_to + 1);
        if to < from {
            return;
        }
        self.skipped_to = to;
        let n = to - from + 1;
        tracing::error!(
            forwarder = self.name(),
            from_seq = from,
            to_seq = to,
            records = n,
            "audit records were removed from the local trail before they were forwarded (retention ran ahead of the receiver); they are NOT delivered"
        );
        self.update(|s| s.skipped += n);
    }

    fn check_chain(&mut self, before: &Position, records: &[ForwardRecord]) {
        let mut prev = if before.seq == 0 {
            Some(GENESIS.to_owned())
        } else if before.hash.is_empty() {
            None
        } else {
            Some(before.hash.clone())
        };
        let mut problems = 0;
        for r in records {
            let linked = prev.as_ref().is_none_or(|p| *p == r.prev);
            if !r.hash_ok || !linked {
                problems += 1;
                tracing::error!(
                    forwarder = self.name(),
                    seq = r.seq,
                    hash_ok = r.hash_ok,
                    linked,
                    "an audit record fails its chain check as read from the trail (run `mcp-guard audit verify`); it is forwarded as stored"
                );
            }
            prev = Some(r.hash.clone());
        }
        if problems > 0 {
            self.update(|s| s.chain_problems += problems);
        }
    }

    fn watch_backlog(&mut self, backlog: u64) {
        let limit = self.f.options.warn_backlog;
        if backlog > limit && !self.warned_backlog {
            tracing::warn!(
                forwarder = self.name(),
                backlog,
                limit,
                "the audit forwarder's backlog is large (the records wait in the local trail)"
            );
            self.warned_backlog = true;
        } else if backlog <= limit / 2 {
            self.warned_backlog = false;
        }
    }
}

/// `d` give or take a fifth, so forwarders of several gateways do not retry in step.
fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let spread = d.as_millis() / 5;
    if spread == 0 {
        return d;
    }
    let offset = u64::from(nanos) % (2 * u64::try_from(spread).unwrap_or(u64::MAX) + 1);
    (d + Duration::from_millis(offset))
        .saturating_sub(Duration::from_millis(u64::try_from(spread).unwrap_or(0)))
}
