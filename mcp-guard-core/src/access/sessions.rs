use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::ClientCredential;
use crate::call::{Principal, PrincipalKind, SessionId};

/// Why a request was not admitted into a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionRefused {
    /// The session (or the credential behind it) was revoked.
    #[error("the session was revoked")]
    Revoked,
    /// The credential's access duration is over.
    #[error("the session has expired")]
    Expired,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SessionState {
    /// In use.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked (the session, or the token or grant behind it).
    Revoked,
    /// Closed before its expiry without a revocation: its gateway process stopped (or
    /// is gone), or it was replaced.
    Ended,
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Ended => "ended",
        })
    }
}

/// One gateway session: a credential's use of one endpoint.
///
/// Everything that belongs to the session (open streams, per-session upstream
/// processes) watches [`Session::closed`] and ends with it.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    principal_id: Arc<str>,
    on_behalf_of: Option<Arc<str>>,
    kind: PrincipalKind,
    credential: Arc<str>,
    endpoint: Arc<str>,
    created: SystemTime,
    expires: Mutex<Option<SystemTime>>,
    last_seen: AtomicU64,
    persisted_seen: AtomicU64,
    closed: CancellationToken,
    revoked_at: Mutex<Option<SystemTime>>,
    taint: Arc<crate::flow::Taint>,
}

impl Session {
    /// The id (random, not guessable).
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The principal the session is bound to.
    pub fn principal_id(&self) -> &str {
        &self.principal_id
    }

    /// The user the principal acts for, when it is an agent with a delegation: part of
    /// what the session is bound to.
    pub fn on_behalf_of(&self) -> Option<&str> {
        self.on_behalf_of.as_deref()
    }

    /// Whose authority the session's calls carry (see [`Principal::subject`]): its
    /// per-session processes get this party's personal credentials.
    pub fn subject(&self) -> &str {
        self.on_behalf_of.as_deref().unwrap_or(&self.principal_id)
    }

    /// The delegation chain the session is bound to (see [`Principal::chain`]).
    pub fn chain(&self) -> (&str, Option<&str>) {
        (&self.principal_id, self.on_behalf_of.as_deref())
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The credential id that opened it.
    pub fn credential(&self) -> &str {
        &self.credential
    }

    /// Cancelled when the session ends (revoked, expired, gateway shutting down).
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// What the session's calls have done so far, for flow rules (see
    /// [`crate::flow`]). Ends with the session; journalled when the sessions are.
    pub fn taint(&self) -> &Arc<crate::flow::Taint> {
        &self.taint
    }

    /// When it expires, if ever.
    pub fn expires(&self) -> Option<SystemTime> {
        *self.expires.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self, now: SystemTime) -> SessionState {
        if self
            .revoked_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            SessionState::Revoked
        } else if self.expires().is_some_and(|e| e <= now) {
            SessionState::Expired
        } else if self.closed.is_cancelled() {
            SessionState::Ended
        } else {
            SessionState::Active
        }
    }

    /// A snapshot for listings.
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.0.to_string(),
            principal: self.principal_id.to_string(),
            on_behalf_of: self.on_behalf_of.as_deref().map(str::to_owned),
            kind: self.kind,
            credential: self.credential.to_string(),
            endpoint: self.endpoint.to_string(),
            created: self.created,
            last_seen: from_secs(self.last_seen.load(Ordering::Relaxed)),
            expires: self.expires(),
            state: self.state(SystemTime::now()),
            ended: None,
            taint: self.taint.labels(),
        }
    }

    fn revoke(&self, at: SystemTime) {
        self.revoked_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(at);
        self.closed.cancel();
    }
}

/// What `sessions list` shows of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Id.
    pub id: String,
    /// Principal id.
    pub principal: String,
    /// The user the principal acts for (an agent's delegation), part of the session's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// User or agent.
    pub kind: PrincipalKind,
    /// Credential id (never the secret).
    pub credential: String,
    /// Endpoint.
    pub endpoint: String,
    /// Opened.
    #[serde(serialize_with = "rfc3339")]
    pub created: SystemTime,
    /// Last request (to the minute).
    #[serde(serialize_with = "rfc3339")]
    pub last_seen: SystemTime,
    /// Expiry.
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires: Option<SystemTime>,
    /// State.
    pub state: SessionState,
    /// When it stopped being active, where the journal knows (revocation, expiry, its
    /// gateway process stopping).
    #[serde(serialize_with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub ended: Option<SystemTime>,
    /// The flow labels its calls have carried so far (see [`crate::flow`]).
    #[serde(skip_serializing_if = "crate::flow::no_labels")]
    pub taint: crate::flow::Labels,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::format_rfc3339(*t))
}

#[allow(clippy::ref_option, reason = "serde's serialize_with signature")]
fn rfc3339_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

pub(super) fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn from_secs(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

type Key = (Arc<str>, Arc<str>);

#[derive(Debug, Default)]
struct State {
    by_key: HashMap<Key, Arc<Session>>,
    by_id: HashMap<Arc<str>, Arc<Session>>,
    /// Credential-and-endpoint revocations: refused unless issued after.
    revoked: HashMap<Key, SystemTime>,
    /// Revoked credentials (every endpoint).
    revoked_credentials: HashMap<Arc<str>, SystemTime>,
}

/// The gateway's sessions: admission, listing, revocation.
///
/// Cheap to clone (one `Arc`).
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use mcp_guard_core::Principal;
/// use mcp_guard_core::access::{ClientCredential, SessionRefused, Sessions};
///
/// let sessions = Sessions::new();
/// let alice = Arc::new(Principal::user("alice"));
/// let cred = ClientCredential::new("token:0123456789ab");
/// let s = sessions.admit(&alice, &cred, "eng").unwrap();
/// assert!(sessions.revoke(&s.id().0));
/// assert!(s.closed().is_cancelled());
/// assert_eq!(sessions.admit(&alice, &cred, "eng").unwrap_err(), SessionRefused::Revoked);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    shutdown: CancellationToken,
    audit: std::sync::OnceLock<Arc<dyn crate::audit::AuditSink>>,
    #[cfg(feature = "sqlite")]
    store: Option<super::AccessStore>,
    #[cfg(feature = "sqlite")]
    seen_version: AtomicU64,
    /// This process's row in the store's `gateways` table: the owner of the sessions it
    /// journals, so `sessions list` can tell when they ended with it.
    #[cfg(feature = "sqlite")]
    gateway: Option<Arc<str>>,
    #[cfg(feature = "sqlite")]
    heartbeat: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field(
                "open",
                &self
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .by_id
                    .len(),
            )
            .finish_non_exhaustive()
    }
}

/// How often `last_seen` reaches the journal.
const TOUCH_EVERY_SECS: u64 = 60;
/// How often a serving process tells the store it still runs (read only where the
/// process cannot be checked directly: another machine, or not Linux).
#[cfg(feature = "sqlite")]
const HEARTBEAT_EVERY_SECS: u64 = 10;

impl Sessions {
    /// Sessions kept in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sessions journalled to `store`, so other processes can list and revoke them.
    /// Revocations already in the store apply at once.
    ///
    /// # Errors
    /// When the store cannot be read.
    #[cfg(feature = "sqlite")]
    pub fn with_store(store: super::AccessStore) -> Result<Self, super::StoreError> {
        let gateway = store.register_gateway()?;
        let this = Self {
            inner: Arc::new(Inner {
                store: Some(store),
                gateway: Some(gateway.into()),
                heartbeat: AtomicU64::new(secs(SystemTime::now())),
                ..Inner::default()
            }),
        };
        this.sync()?;
        Ok(this)
    }

    /// Records session creation, revocation and expiry to `sink` (set once; later
    /// calls are ignored).
    #[must_use]
    pub fn with_audit(self, sink: Arc<dyn crate::audit::AuditSink>) -> Self {
        let _ = self.inner.audit.set(sink);
        self
    }

    fn record(&self, session: &Session, kind: crate::audit::EventKind) {
        let Some(sink) = self.inner.audit.get().cloned() else {
            return;
        };
        let mut event = crate::audit::AuditEvent::new(kind);
        event.session = Some(session.id.0.to_string());
        let mut who = crate::audit::AuditPrincipal::new(session.principal_id.to_string(), session.kind);
        who.on_behalf_of = session.on_behalf_of.as_deref().map(str::to_owned);
        event.principal = Some(who);
        event.endpoint = Some(session.endpoint.to_string());
        event.rule = Some(session.credential.to_string());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = sink.record(&event).await {
                    tracing::error!(error = %crate::upstream::error_chain(&e), "could not record a session event");
                }
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a request by `principal`, authenticated with `credential`, to
    /// `endpoint`: the session it belongs to, opened if needed.
    ///
    /// # Errors
    /// [`SessionRefused`] when the credential was revoked for this endpoint (and not
    /// reissued since) or has expired.
    pub fn admit(
        &self,
        principal: &Arc<Principal>,
        credential: &ClientCredential,
        endpoint: &str,
    ) -> Result<Arc<Session>, SessionRefused> {
        let now = SystemTime::now();
        let key: Key = (credential.id.clone(), endpoint.into());
        if credential.expires_at.is_some_and(|e| e <= now) {
            return Err(SessionRefused::Expired);
        }
        let mut state = self.lock();
        let mut replaced = None;
        let issued_after = |t: SystemTime| credential.issued_at.is_some_and(|i| i > t);
        if let Some(t) = state.revoked_credentials.get(&credential.id)
            && !issued_after(*t)
        {
            return Err(SessionRefused::Revoked);
        }
        if let Some(t) = state.revoked.get(&key)
            && !issued_after(*t)
        {
            return Err(SessionRefused::Revoked);
        }
        if let Some(s) = state.by_key.get(&key).cloned() {
            if s.closed.is_cancelled() || s.chain() != principal.chain() {
                // Revoked, or closed at expiry/shutdown: a fresh credential opens anew.
                // A credential id never names two delegation chains (front doors put
                // the whole chain in it); should one ever do, the old session ends
                // rather than serve another chain.
                state.by_key.remove(&key);
                state.by_id.remove(&s.id.0);
                if !s.closed.is_cancelled() {
                    s.closed.cancel();
                    replaced = Some(s);
                }
            } else {
                if credential.expires_at > s.expires() {
                    *s.expires.lock().unwrap_or_else(PoisonError::into_inner) = credential.expires_at;
                }
                drop(state);
                self.touch(&s, now);
                return Ok(s);
            }
        }
        let session = Arc::new(Session {
            id: SessionId(new_id().into()),
            principal_id: principal.id().into(),
            on_behalf_of: principal.on_behalf_of().map(Into::into),
            kind: principal.kind(),
            credential: credential.id.clone(),
            endpoint: endpoint.into(),
            created: now,
            expires: Mutex::new(credential.expires_at),
            last_seen: AtomicU64::new(secs(now)),
            persisted_seen: AtomicU64::new(secs(now)),
            closed: self.inner.shutdown.child_token(),
            revoked_at: Mutex::new(None),
            taint: Arc::default(),
        });
        state.by_key.insert(key, session.clone());
        state.by_id.insert(session.id.0.clone(), session.clone());
        drop(state);
        #[cfg(feature = "sqlite")]
        if let Some(store) = &self.inner.store {
            if let Some(old) = &replaced {
                let _ = store.end_session(&old.id.0, now);
            }
            if let Err(e) = store.insert_session(&session.info(), self.inner.gateway.as_deref()) {
                tracing::warn!(error = %crate::upstream::error_chain(&e), "could not journal a new session");
            }
            Self::carry_taint(store, &session);
        }
        if let Some(old) = &replaced {
            tracing::warn!(session = %old.id, "session replaced: its credential now names another principal");
        }
        tracing::info!(
            session = %session.id,
            principal = %session.principal_id,
            on_behalf_of = session.on_behalf_of.as_deref(),
            endpoint,
            "session opened"
        );
        self.record(&session, crate::audit::EventKind::SessionCreated);
        Ok(session)
    }

    /// Journals the new session's taint, and carries over the taint of the session it
    /// continues: the latest earlier session of the same credential, endpoint and
    /// delegation chain that was neither revoked nor expired (it ended with its
    /// gateway process, or it is another replica's).
    #[cfg(feature = "sqlite")]
    fn carry_taint(store: &super::AccessStore, session: &Arc<Session>) {
        session
            .taint
            .journal_to(Arc::new(store.clone()), session.id.0.clone());
        let inherited = match store.inherited_taint(
            &session.id.0,
            &session.credential,
            &session.endpoint,
            session.chain(),
        ) {
            Ok(marks) => marks,
            Err(e) => {
                // Fail closed would refuse every request of the credential; instead the
                // gap is logged loudly. The session starts clean.
                tracing::error!(error = %crate::upstream::error_chain(&e), session = %session.id, "could not read the taint of the session this one continues");
                Vec::new()
            }
        };
        for mark in inherited {
            if session.taint.record(mark.clone())
                && let Err(e) = session.taint.persist(&mark)
            {
                tracing::error!(error = %e, session = %session.id, "could not journal a carried-over taint");
            }
        }
        if !session.taint.labels().is_empty() {
            tracing::info!(session = %session.id, taint = %session.taint.labels(), "session carries the taint of the session it continues");
        }
    }

    /// Clears the flow taint of a live session of this process now (an operator's
    /// `sessions clear-taint` reaches a serving gateway through the store instead).
    /// Returns the labels cleared, or `None` when no live session has that id.
    pub fn clear_taint(&self, id: &str) -> Option<crate::flow::Labels> {
        let s = self.get(id)?;
        let cleared = s.taint.clear(None);
        #[cfg(feature = "sqlite")]
        if let Some(store) = &self.inner.store
            && let Err(e) = store.clear_taint(id, SystemTime::now())
        {
            tracing::error!(error = %crate::upstream::error_chain(&e), "could not journal a cleared taint");
        }
        if !cleared.is_empty() {
            self.record_cleared(&s, cleared);
        }
        Some(cleared)
    }

    fn record_cleared(&self, session: &Session, cleared: crate::flow::Labels) {
        tracing::info!(session = %session.id, labels = %cleared, "flow taint cleared");
        self.record(
            session,
            crate::audit::EventKind::TaintCleared {
                labels: cleared.to_string(),
            },
        );
    }

    fn touch(&self, s: &Session, now: SystemTime) {
        let now = secs(now);
        s.last_seen.store(now, Ordering::Relaxed);
        let before = s.persisted_seen.load(Ordering::Relaxed);
        if now.saturating_sub(before) >= TOUCH_EVERY_SECS
            && s.persisted_seen
                .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            #[cfg(feature = "sqlite")]
            if let Some(store) = &self.inner.store {
                let _ = store.touch_session(&s.id.0, from_secs(now));
            }
        }
    }

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().by_id.get(id).cloned()
    }

    /// The sessions this process holds (the store, if any, may know more).
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self.lock().by_id.values().map(|s| s.info()).collect();
        v.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// How many sessions are open.
    pub fn active(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Revokes a session: the next request with its credential on its endpoint is
    /// refused and everything attached to it closes now. Returns whether a session of
    /// this process (or of the store) had that id.
    pub fn revoke(&self, id: &str) -> bool {
        let now = SystemTime::now();
        let found = {
            let mut state = self.lock();
            let s = state.by_id.remove(id);
            if let Some(s) = &s {
                state.by_key.remove(&(s.credential.clone(), s.endpoint.clone()));
                state
                    .revoked
                    .insert((s.credential.clone(), s.endpoint.clone()), now);
                s.revoke(now);
            }
            s
        };
        if let Some(s) = &found {
            self.record(s, crate::audit::EventKind::SessionRevoked);
        }
        let found = found.is_some();
        #[cfg(feature = "sqlite")]
        if let Some(store) = &self.inner.store {
            match store.revoke_session(id, now) {
                Ok(in_store) => return found || in_store,
                Err(e) => {
                    tracing::error!(error = %crate::upstream::error_chain(&e), "could not journal a revocation");
                }
            }
        }
        found
    }

    /// Closes every session whose credential is `credential` (a revoked API token).
    pub fn revoke_credential(&self, credential: &str, at: SystemTime) {
        let mut state = self.lock();
        state.revoked_credentials.insert(credential.into(), at);
        let gone: Vec<Arc<Session>> = state
            .by_id
            .values()
            .filter(|s| s.credential.as_ref() == credential)
            .cloned()
            .collect();
        for s in &gone {
            state.by_id.remove(&s.id.0);
            state.by_key.remove(&(s.credential.clone(), s.endpoint.clone()));
            s.revoke(at);
        }
        drop(state);
        for s in &gone {
            self.record(s, crate::audit::EventKind::SessionRevoked);
        }
    }

    /// Closes sessions past their expiry and forgets them.
    pub fn close_expired(&self) -> usize {
        let now = SystemTime::now();
        let mut state = self.lock();
        let gone: Vec<Arc<Session>> = state
            .by_id
            .values()
            .filter(|s| s.expires().is_some_and(|e| e <= now))
            .cloned()
            .collect();
        for s in &gone {
            state.by_id.remove(&s.id.0);
            state.by_key.remove(&(s.credential.clone(), s.endpoint.clone()));
            s.closed.cancel();
            tracing::info!(session = %s.id, principal = %s.principal_id, "session expired");
        }
        drop(state);
        for s in &gone {
            self.record(s, crate::audit::EventKind::SessionExpired);
        }
        gone.len()
    }

    /// Applies revocations written to the store by other processes (cheap when
    /// nothing changed). A no-op without a store.
    ///
    /// # Errors
    /// When the store cannot be read.
    #[cfg(feature = "sqlite")]
    pub fn sync(&self) -> Result<(), super::StoreError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let version = store.data_version()?;
        if self.inner.seen_version.swap(version, Ordering::Relaxed) == version && version != 0 {
            return Ok(());
        }
        let revoked = store.revocations()?;
        let mut state = self.lock();
        let mut ended = Vec::new();
        for r in revoked.sessions {
            let key: Key = (r.credential.into(), r.endpoint.into());
            state.revoked.insert(key.clone(), r.at);
            if let Some(s) = state.by_id.remove(r.id.as_str()) {
                state.by_key.remove(&key);
                s.revoke(r.at);
                ended.push(s);
            } else if let Some(s) = state.by_key.get(&key).cloned()
                && s.created <= r.at
            {
                state.by_key.remove(&key);
                state.by_id.remove(&s.id.0);
                s.revoke(r.at);
                ended.push(s);
            }
        }
        drop(state);
        for s in &ended {
            self.record(s, crate::audit::EventKind::SessionRevoked);
        }
        for (token, at) in revoked.credentials {
            self.revoke_credential(&token, at);
        }
        self.apply_taint_clears(store)?;
        Ok(())
    }

    /// Clears what `sessions clear-taint` cleared in the store, in the live sessions
    /// that carry taint (marks set after the clear stay).
    #[cfg(feature = "sqlite")]
    fn apply_taint_clears(&self, store: &super::AccessStore) -> Result<(), super::StoreError> {
        let tainted: Vec<Arc<Session>> = self
            .lock()
            .by_id
            .values()
            .filter(|s| !s.taint.labels().is_empty())
            .cloned()
            .collect();
        if tainted.is_empty() {
            return Ok(());
        }
        let clears = store.taint_clears(tainted.iter().map(|s| &*s.id.0))?;
        for s in &tainted {
            if let Some(at) = clears.get(&*s.id.0) {
                let cleared = s.taint.clear(Some(*at));
                if !cleared.is_empty() {
                    self.record_cleared(s, cleared);
                }
            }
        }
        Ok(())
    }

    /// Without the `sqlite` feature there is no store to read.
    ///
    /// # Errors
    /// Never.
    #[cfg(not(feature = "sqlite"))]
    pub fn sync(&self) -> Result<(), std::convert::Infallible> {
        Ok(())
    }

    /// Runs [`Self::sync`] and [`Self::close_expired`] every `period` until `stop` is
    /// cancelled; then closes every session (journalled as ended).
    pub async fn maintain(self, period: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = self.sync() {
                        tracing::warn!(error = %crate::upstream::error_chain(&e), "could not read revocations");
                    }
                    self.close_expired();
                    self.heartbeat();
                }
            }
        }
        self.close_all();
    }

    /// Closes every session now (the gateway is stopping): each is journalled as ended.
    pub fn close_all(&self) {
        self.inner.shutdown.cancel();
        #[cfg(feature = "sqlite")]
        if let (Some(store), Some(gateway)) = (&self.inner.store, &self.inner.gateway)
            && let Err(e) = store.end_gateway(gateway, SystemTime::now())
        {
            tracing::warn!(error = %crate::upstream::error_chain(&e), "could not journal the end of the sessions");
        }
    }

    #[cfg(feature = "sqlite")]
    fn heartbeat(&self) {
        let (Some(store), Some(gateway)) = (&self.inner.store, &self.inner.gateway) else {
            return;
        };
        let now = secs(SystemTime::now());
        let before = self.inner.heartbeat.load(Ordering::Relaxed);
        if now.saturating_sub(before) >= HEARTBEAT_EVERY_SECS {
            self.inner.heartbeat.store(now, Ordering::Relaxed);
            if let Err(e) = store.heartbeat(gateway, from_secs(now)) {
                tracing::warn!(error = %crate::upstream::error_chain(&e), "could not record that the gateway runs");
            }
        }
    }

    #[cfg(not(feature = "sqlite"))]
    #[allow(clippy::unused_self, reason = "the same call with or without a store")]
    fn heartbeat(&self) {}
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        // Unique even without the OS source; never used as a secret.
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        b[..8].copy_from_slice(&n.to_le_bytes());
        b[8..].copy_from_slice(&secs(SystemTime::now()).to_le_bytes());
    }
    let mut s = String::with_capacity(34);
    s.push_str("s_");
    s.push_str(&crate::hex::encode(&b));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str) -> Arc<Principal> {
        Arc::new(Principal::user(id))
    }

    #[test]
    fn one_session_per_credential_and_endpoint() {
        let s = Sessions::new();
        let c = ClientCredential::new("token:a");
        let a = s.admit(&p("alice"), &c, "eng").unwrap();
        let b = s.admit(&p("alice"), &c, "eng").unwrap();
        let other = s.admit(&p("alice"), &c, "ops").unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), other.id());
        assert_eq!(s.active(), 2);
    }

    #[test]
    fn expired_credentials_are_refused_and_sessions_close() {
        let s = Sessions::new();
        let past = SystemTime::now() - Duration::from_secs(1);
        let c = ClientCredential::new("token:a").expires_at(Some(past));
        assert_eq!(s.admit(&p("a"), &c, "e").unwrap_err(), SessionRefused::Expired);
        let soon = SystemTime::now() + Duration::from_millis(50);
        let c = ClientCredential::new("token:b").expires_at(Some(soon));
        let sess = s.admit(&p("a"), &c, "e").unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(s.close_expired(), 1);
        assert!(sess.closed().is_cancelled());
        assert_eq!(s.admit(&p("a"), &c, "e").unwrap_err(), SessionRefused::Expired);
    }

    #[test]
    fn credentials_issued_after_a_revocation_open_a_new_session() {
        let s = Sessions::new();
        let t0 = SystemTime::now() - Duration::from_secs(10);
        let old = ClientCredential::new("jwt:iss#alice").issued_at(Some(t0));
        let first = s.admit(&p("alice"), &old, "e").unwrap();
        assert!(s.revoke(&first.id().0));
        assert_eq!(
            s.admit(&p("alice"), &old, "e").unwrap_err(),
            SessionRefused::Revoked
        );
        let fresh = ClientCredential::new("jwt:iss#alice")
            .issued_at(Some(SystemTime::now() + Duration::from_secs(1)));
        let second = s.admit(&p("alice"), &fresh, "e").unwrap();
        assert_ne!(first.id(), second.id());
        // The old token stays refused even though a session for the key is open again.
        assert_eq!(
            s.admit(&p("alice"), &old, "e").unwrap_err(),
            SessionRefused::Revoked
        );
    }

    #[tokio::test]
    async fn session_lifecycle_is_audited() {
        use crate::audit::EventKind::{SessionCreated, SessionExpired, SessionRevoked};
        let sink = Arc::new(crate::audit::MemoryAuditSink::new());
        let s = Sessions::new().with_audit(sink.clone());
        let c = ClientCredential::new("token:a");
        let a = s.admit(&p("alice"), &c, "eng").unwrap();
        assert!(s.revoke(&a.id().0));
        let soon =
            ClientCredential::new("token:b").expires_at(Some(SystemTime::now() + Duration::from_millis(20)));
        let _b = s.admit(&p("bob"), &soon, "eng").unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        s.close_expired();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let kinds: Vec<(String, crate::audit::EventKind)> = sink
            .events()
            .into_iter()
            .map(|e| (e.principal.map(|p| p.id).unwrap_or_default(), e.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("alice".into(), SessionCreated),
                ("alice".into(), SessionRevoked),
                ("bob".into(), SessionCreated),
                ("bob".into(), SessionExpired)
            ]
        );
    }

    #[test]
    fn a_session_is_bound_to_the_whole_delegation_chain() {
        let s = Sessions::new();
        let for_alice = Arc::new(Principal::agent("ci-bot").acting_for("alice"));
        let for_bob = Arc::new(Principal::agent("ci-bot").acting_for("bob"));
        let c = ClientCredential::new("token:shared");
        let a = s.admit(&for_alice, &c, "e").unwrap();
        assert_eq!(
            (a.principal_id(), a.on_behalf_of(), a.subject()),
            ("ci-bot", Some("alice"), "alice")
        );
        assert_eq!(a.info().on_behalf_of.as_deref(), Some("alice"));
        // Should a credential id ever name another chain, the session is not handed over.
        let b = s.admit(&for_bob, &c, "e").unwrap();
        assert_ne!(a.id(), b.id());
        assert!(a.closed().is_cancelled());
        assert_eq!(a.info().state, SessionState::Ended);
        assert!(s.get(&a.id().0).is_none());
    }

    #[test]
    fn revoking_a_credential_closes_all_its_sessions() {
        let s = Sessions::new();
        let c = ClientCredential::new("token:x");
        let a = s.admit(&p("a"), &c, "e1").unwrap();
        let b = s.admit(&p("a"), &c, "e2").unwrap();
        s.revoke_credential("token:x", SystemTime::now());
        assert!(a.closed().is_cancelled() && b.closed().is_cancelled());
        assert_eq!(s.active(), 0);
        assert_eq!(s.admit(&p("a"), &c, "e1").unwrap_err(), SessionRefused::Revoked);
    }
}
