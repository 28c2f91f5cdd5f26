//! [`RateLimitLayer`]: requests per minute with a burst, per principal and per tool,
//! by the `governor` crate (GCRA, one keyed limiter per scope).
//!
//! Three optional scopes, each a [`Rate`] (a steady rate per minute and a burst):
//! - **per principal**: every request a principal makes (calls and lists); an agent
//!   acting for a user is keyed on the whole chain, so it has a budget per user;
//! - **per tool**: calls to one target (server and upstream name) by everyone together,
//!   which protects an upstream;
//! - **per principal and tool**: one principal's calls to one target.
//!
//! A request over any limit fails with [`GuardError::RateLimited`], which clients see
//! as JSON-RPC error `-32029` ("rate limit exceeded") with
//! `data: {"limit": "per_principal", "retryAfterMs": 1200, "retryAfterSecs": 2}`; the
//! inner service is not called. The audit layer records it with outcome
//! `rate_limited` and the limit as the rule (`rate_limits.per_principal`). A request
//! refused by one scope may already have used a token of a scope checked before it
//! (principal, then tool, then principal and tool).
//!
//! # Where it goes
//! Inside [`EnforcePolicyLayer`](crate::EnforcePolicyLayer), so refused calls do not use
//! up anyone's budget and a principal cannot learn about tools it may not call from
//! rate-limit answers; inside [`AuditLayer`](crate::AuditLayer), so refusals are
//! recorded.
//!
//! ```
//! use mcp_guard_core::{Grant, GrantPolicy};
//! use mcp_guard_tower::{EnforcePolicyLayer, Rate, RateLimitLayer, RateLimits, Router};
//! use tower::ServiceBuilder;
//!
//! let policy = GrantPolicy::builder().grant(Grant::allow().roles(["eng"])).build()?;
//! let limits = RateLimits::new()
//!     .per_principal(Rate::per_minute(600)?.burst(60)?)
//!     .per_tool(Rate::per_minute(1200)?);
//! let stack = ServiceBuilder::new()
//!     .layer(EnforcePolicyLayer::new(policy))
//!     .layer(RateLimitLayer::new(limits))
//!     .service(Router::new());
//! # let _ = stack;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt as _};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use rmcp::model::ServerResult;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::GuardError;
use crate::request::McpRequest;

/// A steady rate per minute and a burst (how many may come at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    per_minute: NonZeroU32,
    burst: NonZeroU32,
}

/// A [`Rate`] of zero was asked for.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a rate limit needs at least 1 request per minute and a burst of at least 1")]
#[non_exhaustive]
pub struct ZeroRate;

impl Rate {
    /// `n` requests per minute, with a burst of `n`.
    ///
    /// # Errors
    /// [`ZeroRate`] when `n` is 0.
    pub fn per_minute(n: u32) -> Result<Self, ZeroRate> {
        let n = NonZeroU32::new(n).ok_or(ZeroRate)?;
        Ok(Self {
            per_minute: n,
            burst: n,
        })
    }

    /// Sets the burst.
    ///
    /// # Errors
    /// [`ZeroRate`] when `burst` is 0.
    pub fn burst(mut self, burst: u32) -> Result<Self, ZeroRate> {
        self.burst = NonZeroU32::new(burst).ok_or(ZeroRate)?;
        Ok(self)
    }

    fn quota(self) -> Quota {
        // One cell every 60 s / per_minute, at least 1 ns apart.
        let period = Duration::from_mins(1) / self.per_minute.get();
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(self.burst)
    }
}

/// Which limits apply; each scope is optional.
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
#[non_exhaustive]
pub struct RateLimits {
    /// Every request of one principal.
    pub principal: Option<Rate>,
    /// Calls to one target by all principals together.
    pub tool: Option<Rate>,
    /// One principal's calls to one target.
    pub principal_tool: Option<Rate>,
}

impl RateLimits {
    /// No limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits every request of each principal.
    pub fn per_principal(mut self, rate: Rate) -> Self {
        self.principal = Some(rate);
        self
    }

    /// Limits calls to each target (all principals together).
    pub fn per_tool(mut self, rate: Rate) -> Self {
        self.tool = Some(rate);
        self
    }

    /// Limits each principal's calls to each target.
    pub fn per_principal_tool(mut self, rate: Rate) -> Self {
        self.principal_tool = Some(rate);
        self
    }

    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        self.principal.is_none() && self.tool.is_none() && self.principal_tool.is_none()
    }
}

/// How often (in checks) idle keys are forgotten.
const SWEEP_EVERY: u64 = 4096;

struct Limiters {
    principal: Option<DefaultKeyedRateLimiter<Chain>>,
    tool: Option<DefaultKeyedRateLimiter<(String, String)>>,
    principal_tool: Option<DefaultKeyedRateLimiter<(Chain, String, String)>>,
    checks: AtomicU64,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("principal", &self.principal.is_some())
            .field("tool", &self.tool.is_some())
            .field("principal_tool", &self.principal_tool.is_some())
            .finish_non_exhaustive()
    }
}

impl Limiters {
    fn new(limits: &RateLimits) -> Self {
        Self {
            principal: limits
                .principal
                .map(|r| DefaultKeyedRateLimiter::keyed(r.quota())),
            tool: limits.tool.map(|r| DefaultKeyedRateLimiter::keyed(r.quota())),
            principal_tool: limits
                .principal_tool
                .map(|r| DefaultKeyedRateLimiter::keyed(r.quota())),
            checks: AtomicU64::new(0),
            clock: DefaultClock::default(),
        }
    }

    /// `Err` names the limit that refused and how long until a request would pass.
    fn check(&self, req: &McpRequest) -> Result<(), GuardError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let now = self.clock.now();
        let refused = |limit: &str, wait: Duration| GuardError::RateLimited {
            limit: limit.to_owned(),
            retry_after: wait,
        };
        // Keyed on the whole delegation chain: an agent acting for alice and the same
        // agent acting for bob have a budget each.
        let principal = chain_key(&req.context.principal);
        if let Some(l) = &self.principal {
            l.check_key(&principal)
                .map_err(|n| refused("per_principal", n.wait_time_from(now)))?;
        }
        let Some(target) = req.target.as_ref().filter(|_| req.is_call()) else {
            return Ok(());
        };
        if let Some(l) = &self.tool {
            l.check_key(&(target.server.to_string(), target.name.to_string()))
                .map_err(|n| refused("per_tool", n.wait_time_from(now)))?;
        }
        if let Some(l) = &self.principal_tool {
            l.check_key(&(principal, target.server.to_string(), target.name.to_string()))
                .map_err(|n| refused("per_principal_tool", n.wait_time_from(now)))?;
        }
        Ok(())
    }

    /// Forgets keys whose budget is full again (they behave exactly like new keys).
    fn sweep(&self) {
        if let Some(l) = &self.principal {
            l.retain_recent();
        }
        if let Some(l) = &self.tool {
            l.retain_recent();
        }
        if let Some(l) = &self.principal_tool {
            l.retain_recent();
        }
    }
}

/// A principal's delegation chain (id, user it acts for) as a limiter key.
type Chain = (String, Option<String>);

fn chain_key(p: &mcp_guard_core::Principal) -> Chain {
    let (id, user) = p.chain();
    (id.to_owned(), user.map(str::to_owned))
}

/// Refuses requests over the configured [`RateLimits`].
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiters: Arc<Limiters>,
}

impl RateLimitLayer {
    /// A layer enforcing `limits` (shared by every service it makes).
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limiters: Arc::new(Limiters::new(&limits)),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiters: self.limiters.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiters: Arc<Limiters>,
}

crate::macros::inner_service_accessors!(RateLimit<S>);

impl<S> Service<McpRequest> for RateLimit<S>
where
    S: Service<McpRequest, Response = ServerResult> + Send + 'static,
    S::Error: Into<GuardError>,
    S::Future: Send + 'static,
{
    type Response = ServerResult;
    type Error = GuardError;
    type Future = BoxFuture<'static, Result<ServerResult, GuardError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GuardError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: McpRequest) -> Self::Future {
        match self.limiters.check(&req) {
            Ok(()) => self.inner.call(req).map(|r| r.map_err(Into::into)).boxed(),
            Err(e) => {
                tracing::info!(principal = req.context.principal.id(), error = %e, "rate limited");
                futures::future::ready(Err(e)).boxed()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_reject_zero_and_quota_has_the_burst() {
        assert!(Rate::per_minute(0).is_err());
        assert!(Rate::per_minute(1).unwrap().burst(0).is_err());
        let q = Rate::per_minute(60).unwrap().burst(5).unwrap().quota();
        assert_eq!(q.burst_size().get(), 5);
        assert_eq!(q.replenish_interval(), Duration::from_secs(1));
    }

    #[test]
    fn keyed_limiter_refuses_after_the_burst_with_a_wait() {
        let l = DefaultKeyedRateLimiter::keyed(Rate::per_minute(60).unwrap().burst(2).unwrap().quota());
        let k = "alice".to_owned();
        assert!(l.check_key(&k).is_ok());
        assert!(l.check_key(&k).is_ok());
        let wait = l
            .check_key(&k)
            .unwrap_err()
            .wait_time_from(DefaultClock::default().now());
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(l.check_key(&"bob".to_owned()).is_ok(), "keys are independent");
    }
}
