//! Limits on traffic that has not authenticated: what an anonymous stranger can make the
//! gateway do is bounded per source address, and refused authentications reach the
//! audit trail as one record per source and interval instead of one durable write each.
//!
//! - **Requests per source before authentication** ([`UnauthenticatedLimits::per_minute`]
//!   with a burst): every request to the authorization server's pages and endpoints,
//!   the metadata documents and anything unknown is counted before it is handled; at
//!   the MCP endpoints only a request that fails to authenticate counts, so a client
//!   with a valid credential is served however busy its address is. Over the limit:
//!   `429 Too Many Requests` with `Retry-After` (an OAuth JSON error at the JSON
//!   endpoints, JSON-RPC error `-32029` at the MCP endpoints, plain text elsewhere). A
//!   request without any credential from an address already over its limit is refused
//!   before authentication runs.
//! - **Dynamic client registrations per source** (a separate, slower budget, per hour),
//!   since each one is stored.
//! - **Aggregated audit of refused authentication**: each refusal at an MCP endpoint
//!   is counted in memory per source; every [`UnauthenticatedLimits::audit_interval`]
//!   (and at [`PreAuth::flush`]) one `authentication_failed` record per source is
//!   written with `source`, `count`, the distinct reasons with their counts, and the
//!   interval as `started_at`..`ended_at`.
//!
//! A source is the peer's IPv4 address, or the /64 network of its IPv6 address (one
//! host usually holds a whole /64). Behind a reverse proxy every request has the
//! proxy's address: limit there, or raise the limits. At most
//! [`UnauthenticatedLimits::max_sources`] sources are tracked at once; beyond that,
//! new ones share one budget and one record (`other`), so memory stays bounded.
//! The peer address comes from axum's `ConnectInfo<SocketAddr>`, which
//! [`serve`](crate::http::serve) provides; without it every request counts as
//! `unknown`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::{HeaderValue, StatusCode, header};
use mcp_guard_core::AuditSink;
use mcp_guard_core::audit::{AuditEvent, EventKind};

/// Where a request comes from, as the limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// An IPv4 address, or the /64 network of an IPv6 address.
    Ip(IpAddr),
    /// No peer address is known (the router is served without connection info).
    Unknown,
    /// Any source beyond [`UnauthenticatedLimits::max_sources`], counted together.
    Other,
}

impl Source {
    /// The source of a peer address: IPv4 as is (also when mapped into IPv6), IPv6 by
    /// its /64.
    pub fn of_addr(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Self::Ip(IpAddr::V4(a)),
            IpAddr::V6(a) => {
                if let Some(v4) = a.to_ipv4_mapped() {
                    Self::Ip(IpAddr::V4(v4))
                } else {
                    let s = a.segments();
                    Self::Ip(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
                }
            }
        }
    }

    /// The source of a request: as an outer [`PreAuth`] layer recorded it, or from
    /// axum's connection info.
    pub fn of(extensions: &http::Extensions) -> Self {
        if let Some(s) = extensions.get::<Self>() {
            return *s;
        }
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(Self::Unknown, |c| Self::of_addr(c.0.ip()))
    }
}

/// A handler's view of where its request came from ([`Source::of`]); never fails.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Self::Ip(IpAddr::V6(a)) => write!(f, "{a}/64"),
            Self::Unknown => f.write_str("unknown"),
            Self::Other => f.write_str("other"),
        }
    }
}

/// The limits on traffic before authentication.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct UnauthenticatedLimits {
    /// Requests per minute one source may make before authentication (at the MCP
    /// endpoints: refused authentications). Default 600.
    pub per_minute: u32,
    /// How many of them may come at once. Default 300.
    pub burst: u32,
    /// Dynamic client registrations per hour from one source. Default 60.
    pub registrations_per_hour: u32,
    /// How many registrations may come at once. Default 20.
    pub registration_burst: u32,
    /// How often refused authentications are written to the audit trail (one record
    /// per source). Default 60 s.
    pub audit_interval: Duration,
    /// Sources tracked at once; more share one budget. Default 10 000.
    pub max_sources: usize,
}

impl Default for UnauthenticatedLimits {
    fn default() -> Self {
        Self {
            per_minute: 600,
            burst: 300,
            registrations_per_hour: 60,
            registration_burst: 20,
            audit_interval: Duration::from_mins(1),
            max_sources: 10_000,
        }
    }
}

fn quota(per: Duration, n: u32, burst: u32) -> Quota {
    let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period((per / n.get()).max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

/// Distinct reasons and endpoints kept per source and interval (the rest are counted).
const MAX_REASONS: usize = 8;
const MAX_ENDPOINTS: usize = 8;
/// The longest reason kept (the authenticators' messages are short; this only bounds).
const MAX_REASON_CHARS: usize = 200;

/// Refusals of one source within the current interval.
struct Bucket {
    first: SystemTime,
    last: SystemTime,
    count: u64,
    reasons: Vec<(String, u64)>,
    other_reasons: u64,
    endpoints: Vec<String>,
    many_endpoints: bool,
}

impl Bucket {
    fn new(now: SystemTime) -> Self {
        Self {
            first: now,
            last: now,
            count: 0,
            reasons: Vec::new(),
            other_reasons: 0,
            endpoints: Vec::new(),
            many_endpoints: false,
        }
    }

    fn add(&mut self, now: SystemTime, endpoint: Option<&str>, reason: &str) {
        self.last = now;
        self.count += 1;
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        if let Some((_, n)) = self.reasons.iter_mut().find(|(r, _)| *r == reason) {
            *n += 1;
        } else if self.reasons.len() < MAX_REASONS {
            self.reasons.push((reason, 1));
        } else {
            self.other_reasons += 1;
        }
        if let Some(e) = endpoint
            && !self.endpoints.iter().any(|x| x == e)
        {
            if self.endpoints.len() < MAX_ENDPOINTS {
                self.endpoints.push(e.to_owned());
            } else {
                self.many_endpoints = true;
            }
        }
    }

    fn event(&self, source: Source) -> AuditEvent {
        let reason = if self.count == 1 && self.reasons.len() == 1 {
            self.reasons[0].0.clone()
        } else {
            let mut parts: Vec<String> = self
                .reasons
                .iter()
                .map(|(r, n)| format!("{r} ({n} times)"))
                .collect();
            if self.other_reasons > 0 {
                parts.push(format!("other reasons ({} times)", self.other_reasons));
            }
            parts.join("; ")
        };
        let mut event = AuditEvent::new(EventKind::AuthenticationFailed {
            reason,
            source: Some(source.to_string()),
            count: Some(self.count),
        });
        event.started_at = self.first;
        event.ended_at = self.last;
        if self.endpoints.len() == 1 && !self.many_endpoints {
            event.endpoint = Some(self.endpoints[0].clone());
        }
        event.outcome = Some(mcp_guard_core::Outcome::Unauthenticated);
        event.rule = Some(format!("http edge: {} refused from {source}", self.count));
        event
    }
}

struct Inner {
    limits: UnauthenticatedLimits,
    requests: DefaultKeyedRateLimiter<Source>,
    registrations: DefaultKeyedRateLimiter<Source>,
    clock: DefaultClock,
    /// Sources over their request budget, until when: a request without a credential
    /// from one of them is refused before authentication.
    blocked: Mutex<HashMap<Source, Instant>>,
    refusals: Mutex<HashMap<Source, Bucket>>,
    audit: OnceLock<Arc<dyn AuditSink>>,
    /// Held while a flush writes, so [`PreAuth::flush`] returns only once every
    /// refusal counted before it is recorded.
    flushing: tokio::sync::Mutex<()>,
    flusher: OnceLock<()>,
}

/// The limits on unauthenticated traffic, shared by the HTTP edge and the routes around
/// it. Cheap to clone.
#[derive(Clone)]
pub struct PreAuth {
    inner: Arc<Inner>,
}

impl fmt::Debug for PreAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreAuth")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Default for PreAuth {
    fn default() -> Self {
        Self::new(UnauthenticatedLimits::default())
    }
}

/// Why a request was refused by a limit: which one, and how long until one would pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverLimit {
    pub(crate) wait: Duration,
}

impl OverLimit {
    fn retry_after_secs(self) -> u64 {
        self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0)
    }
}

impl PreAuth {
    /// Enforces `limits`.
    pub fn new(limits: UnauthenticatedLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                requests: DefaultKeyedRateLimiter::keyed(quota(
                    Duration::from_mins(1),
                    limits.per_minute,
                    limits.burst,
                )),
                registrations: DefaultKeyedRateLimiter::keyed(quota(
                    Duration::from_hours(1),
                    limits.registrations_per_hour,
                    limits.registration_burst,
                )),
                limits,
                clock: DefaultClock::default(),
                blocked: Mutex::default(),
                refusals: Mutex::default(),
                audit: OnceLock::new(),
                flushing: tokio::sync::Mutex::new(()),
                flusher: OnceLock::new(),
            }),
        }
    }

    /// The limits enforced.
    pub fn limits(&self) -> &UnauthenticatedLimits {
        &self.inner.limits
    }

    /// Writes the aggregated refusals to `sink` (the first sink given is kept).
    pub fn audit_to(&self, sink: Arc<dyn AuditSink>) {
        let _ = self.inner.audit.set(sink);
    }

    /// Applies the limits to every route of `router` but the MCP endpoints (whose
    /// refused authentications the HTTP edge counts itself) and the probes
    /// (`/healthz`, `/readyz`, `/metrics`), and records each request's [`Source`] in
    /// its extensions for the handlers.
    pub fn wrap(&self, router: axum::Router) -> axum::Router {
        self.wrap_mounted(router, "")
    }

    /// Like [`Self::wrap`], for MCP endpoints mounted under `prefix`
    /// (`/tools/mcp/{endpoint}`; see [`HttpOptions::path_prefix`](crate::HttpOptions::path_prefix)).
    pub fn wrap_mounted(&self, router: axum::Router, prefix: &str) -> axum::Router {
        let state = Limit {
            pre: self.clone(),
            mcp: format!("{}/mcp/", prefix.trim_end_matches('/')).into(),
        };
        router.layer(axum::middleware::from_fn_with_state(state, limit))
    }

    /// Writes every refusal counted so far to the audit trail, one record per source.
    /// Call it before the audit sinks are flushed at shutdown.
    pub async fn flush(&self) {
        flush(&self.inner).await;
    }

    fn key(&self, limiter: &DefaultKeyedRateLimiter<Source>, source: Source) -> Source {
        if limiter.len() >= self.inner.limits.max_sources {
            Source::Other
        } else {
            source
        }
    }

    /// Counts one request of `source` against its budget.
    pub(crate) fn charge(&self, source: Source) -> Result<(), OverLimit> {
        let i = &self.inner;
        let key = self.key(&i.requests, source);
        match i.requests.check_key(&key) {
            Ok(()) => Ok(()),
            Err(n) => {
                let wait = n.wait_time_from(i.clock.now());
                let mut blocked = i.blocked.lock().unwrap_or_else(PoisonError::into_inner);
                if blocked.len() < i.limits.max_sources {
                    blocked.insert(source, Instant::now() + wait);
                }
                Err(OverLimit { wait })
            }
        }
    }

    /// Counts one dynamic registration of `source`.
    fn charge_registration(&self, source: Source) -> Result<(), OverLimit> {
        let i = &self.inner;
        let key = self.key(&i.registrations, source);
        i.registrations.check_key(&key).map_err(|n| OverLimit {
            wait: n.wait_time_from(i.clock.now()),
        })
    }

    /// Whether `source` is over its request budget now (without counting a request).
    pub(crate) fn blocked(&self, source: Source) -> Option<OverLimit> {
        let blocked = self.inner.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        let until = *blocked.get(&source)?;
        let now = Instant::now();
        (until > now).then(|| OverLimit { wait: until - now })
    }

    /// Counts a refused authentication for the audit trail.
    pub(crate) fn refused(&self, source: Source, endpoint: Option<&str>, reason: &str) {
        let i = &self.inner;
        let now = SystemTime::now();
        {
            let mut buckets = i.refusals.lock().unwrap_or_else(PoisonError::into_inner);
            let key = if buckets.len() >= i.limits.max_sources && !buckets.contains_key(&source) {
                Source::Other
            } else {
                source
            };
            buckets
                .entry(key)
                .or_insert_with(|| Bucket::new(now))
                .add(now, endpoint, reason);
        }
        self.start_flusher();
    }

    /// Starts the task that flushes every interval (once, inside a Tokio runtime). It
    /// ends when the last clone of this `PreAuth` is dropped.
    fn start_flusher(&self) {
        if self.inner.flusher.get().is_some() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.flusher.set(()).is_err() {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.inner.limits.audit_interval.max(Duration::from_secs(1));
        rt.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                flush(&inner).await;
                inner.requests.retain_recent();
                inner.requests.shrink_to_fit();
                inner.registrations.retain_recent();
                inner.registrations.shrink_to_fit();
                let now = Instant::now();
                inner
                    .blocked
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|_, until| *until > now);
            }
        });
    }
}

async fn flush(inner: &Inner) {
    let _writing = inner.flushing.lock().await;
    let taken = std::mem::take(&mut *inner.refusals.lock().unwrap_or_else(PoisonError::into_inner));
    let Some(sink) = inner.audit.get() else {
        return;
    };
    let mut taken: Vec<(Source, Bucket)> = taken.into_iter().collect();
    taken.sort_by_key(|(_, b)| b.first);
    for (source, bucket) in taken {
        if let Err(e) = sink.record(&bucket.event(source)).await {
            tracing::error!(
                error = %mcp_guard_core::upstream::error_chain(&e),
                %source,
                count = bucket.count,
                "could not record refused authentications"
            );
        }
    }
}

/// Paths that answer OAuth JSON errors.
fn json_path(path: &str) -> bool {
    matches!(path, "/oauth/token" | "/oauth/register" | "/oauth/revoke") || path.starts_with("/.well-known/")
}

/// `429 Too Many Requests` for `path`: an OAuth JSON error at the JSON endpoints,
/// plain text elsewhere.
fn too_many(path: &str, over: OverLimit, what: &str) -> Response {
    let secs = over.retry_after_secs();
    let description = format!("too many {what} from this address; retry in {secs} s");
    let mut r = if json_path(path) {
        (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!({"error": "too_many_requests", "error_description": description})),
        )
            .into_response()
    } else {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{description}\n"),
        )
            .into_response()
    };
    let h = r.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `429` at an MCP endpoint: JSON-RPC error `-32029`, as other rate limits answer.
pub(crate) fn too_many_at_mcp(over: OverLimit) -> Response {
    let secs = over.retry_after_secs();
    let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {
        "code": crate::error::RATE_LIMITED.0,
        "message": format!("too many unauthenticated requests from this address; retry in {secs} s"),
        "data": {"limit": "unauthenticated", "retryAfterSecs": secs},
    }});
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// The limits and where the MCP endpoints are mounted.
#[derive(Clone)]
struct Limit {
    pre: PreAuth,
    /// `/mcp/` or `<prefix>/mcp/`.
    mcp: Arc<str>,
}

async fn limit(State(Limit { pre, mcp }): State<Limit>, mut request: Request, next: Next) -> Response {
    let source = Source::of(request.extensions());
    request.extensions_mut().insert(source);
    let path = request.uri().path();
    if path.starts_with(&*mcp) || matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return next.run(request).await;
    }
    if let Err(over) = pre.charge(source) {
        tracing::info!(%source, path, "request refused: over the limit before authentication");
        return too_many(path, over, "requests");
    }
    if request.method() == http::Method::POST
        && path == "/oauth/register"
        && let Err(over) = pre.charge_registration(source)
    {
        tracing::info!(%source, "client registration refused: over the limit");
        return too_many(path, over, "client registrations");
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_addresses_or_ipv6_networks() {
        let v4: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(Source::of_addr(v4).to_string(), "203.0.113.5");
        let mapped: IpAddr = "::ffff:203.0.113.5".parse().unwrap();
        assert_eq!(Source::of_addr(mapped), Source::of_addr(v4));
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(Source::of_addr(a), Source::of_addr(b));
        assert_eq!(Source::of_addr(a).to_string(), "2001:db8:1:2::/64");
        assert_eq!(Source::of(&http::Extensions::new()), Source::Unknown);
    }

    #[test]
    fn the_budget_refuses_past_the_burst_and_blocks_the_source() {
        let p = PreAuth::new(UnauthenticatedLimits {
            per_minute: 60,
            burst: 3,
            ..UnauthenticatedLimits::default()
        });
        let s = Source::of_addr("198.51.100.7".parse().unwrap());
        for _ in 0..3 {
            assert!(p.charge(s).is_ok());
        }
        assert!(p.blocked(s).is_none());
        let over = p.charge(s).unwrap_err();
        assert!(over.wait <= Duration::from_secs(1), "{over:?}");
        assert_eq!(over.retry_after_secs(), 1);
        assert!(p.blocked(s).is_some());
        let other = Source::of_addr("198.51.100.8".parse().unwrap());
        assert!(p.charge(other).is_ok() && p.blocked(other).is_none());
    }

    #[test]
    fn sources_beyond_the_cap_share_one_budget() {
        let p = PreAuth::new(UnauthenticatedLimits {
            max_sources: 2,
            burst: 1,
            ..UnauthenticatedLimits::default()
        });
        let s = |i: u8| Source::of_addr(IpAddr::from([192, 0, 2, i]));
        assert!(p.charge(s(1)).is_ok());
        assert!(p.charge(s(2)).is_ok());
        // The limiter is full: the third and fourth share `other`.
        assert!(p.charge(s(3)).is_ok());
        assert!(p.charge(s(4)).is_err());
    }

    #[tokio::test]
    async fn refusals_are_aggregated_into_one_record_per_source() {
        let sink = Arc::new(mcp_guard_core::audit::MemoryAuditSink::default());
        let p = PreAuth::default();
        p.audit_to(sink.clone());
        let a = Source::of_addr("192.0.2.1".parse().unwrap());
        let b = Source::of_addr("192.0.2.2".parse().unwrap());
        for i in 0..1000 {
            p.refused(
                a,
                Some("main"),
                if i % 2 == 0 {
                    "no credential presented"
                } else {
                    "invalid credential: x"
                },
            );
        }
        p.refused(b, Some("main"), "credential expired");
        p.flush().await;
        let events = sink.events();
        assert_eq!(events.len(), 2);
        let first = &events[0];
        let EventKind::AuthenticationFailed {
            reason,
            source,
            count,
        } = &first.kind
        else {
            panic!("{first:?}");
        };
        assert_eq!((source.as_deref(), *count), (Some("192.0.2.1"), Some(1000)));
        assert!(reason.contains("no credential presented (500 times)"), "{reason}");
        assert_eq!(first.endpoint.as_deref(), Some("main"));
        assert!(first.ended_at >= first.started_at);
        let EventKind::AuthenticationFailed { reason, count, .. } = &events[1].kind else {
            panic!();
        };
        assert_eq!((reason.as_str(), *count), ("credential expired", Some(1)));
        // Nothing is left to write.
        p.flush().await;
        assert_eq!(sink.events().len(), 2);
    }
}
