//! [`Drain`] and [`DrainLayer`]: graceful shutdown of a guard stack.
//!
//! [`DrainLayer::new`], outermost, counts the requests in flight (their audit record
//! included). [`Drain::start`] makes it refuse new requests
//! ([`GuardError::ShuttingDown`]); [`Drain::wait_idle`] waits until the count reaches
//! zero or a deadline passes; [`Drain::abort`] answers whatever is still in flight
//! with the same error at [`DrainLayer::abort_point`], which goes just inside the audit
//! layer so an aborted call still gets its record (the inner future is dropped, which
//! abandons the upstream request).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use mcp_guard_tower::drain::{Drain, DrainLayer};
//! use mcp_guard_tower::Router;
//!
//! let drain = Drain::new();
//! # let audit = tower::layer::util::Identity::new();
//! let stack = tower::ServiceBuilder::new()
//!     .layer(DrainLayer::new(drain.clone()))
//!     .layer(audit)
//!     .layer(DrainLayer::abort_point(drain.clone()))
//!     .service(Router::new());
//! # let _ = stack;
//! // On SIGTERM:
//! drain.start();
//! if !drain.wait_idle(Duration::from_secs(10)).await {
//!     drain.abort();
//! }
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::model::ServerResult;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::GuardError;
use crate::request::McpRequest;

struct Inner {
    in_flight: AtomicUsize,
    idle: Notify,
    draining: CancellationToken,
    aborted: CancellationToken,
}

/// The shutdown handle shared by a [`DrainLayer`] and whoever stops the gateway.
#[derive(Clone)]
pub struct Drain {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("in_flight", &self.in_flight())
            .field("draining", &self.inner.draining.is_cancelled())
            .finish()
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// A handle with nothing in flight.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
                draining: CancellationToken::new(),
                aborted: CancellationToken::new(),
            }),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// From now on new requests are refused.
    pub fn start(&self) {
        self.inner.draining.cancel();
    }

    /// Waits until nothing is in flight, at most `grace`. Returns whether it got there.
    ///
    /// # Cancel safety
    /// Safe.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, async {
            loop {
                let idle = self.inner.idle.notified();
                if self.in_flight() == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await
        .is_ok()
    }

    /// Answers every request still in flight with [`GuardError::ShuttingDown`].
    pub fn abort(&self) {
        self.inner.draining.cancel();
        self.inner.aborted.cancel();
    }
}

/// Tracks requests for a [`Drain`], or aborts them (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct DrainLayer {
    drain: Drain,
    track: bool,
}

impl DrainLayer {
    /// Counts requests for `drain` and refuses new ones once it has started. Outermost.
    pub fn new(drain: Drain) -> Self {
        Self { drain, track: true }
    }

    /// Where [`Drain::abort`] answers requests still in flight: just inside the audit
    /// layer.
    pub fn abort_point(drain: Drain) -> Self {
        Self { drain, track: false }
    }
}

impl<S> Layer<S> for DrainLayer {
    type Service = DrainService<S>;
    fn layer(&self, inner: S) -> DrainService<S> {
        DrainService {
            inner,
            drain: self.drain.clone(),
            track: self.track,
        }
    }
}

/// The service made by [`DrainLayer`].
#[derive(Clone, Debug)]
pub struct DrainService<S> {
    inner: S,
    drain: Drain,
    track: bool,
}

crate::macros::inner_service_accessors!(DrainService<S>);

struct Tracked(Arc<Inner>);

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl<S> Service<McpRequest> for DrainService<S>
where
    S: Service<McpRequest, Response = ServerResult> + Clone + Send + 'static,
    S::Error: Into<GuardError>,
    S::Future: Send,
{
    type Response = ServerResult;
    type Error = GuardError;
    type Future = BoxFuture<'static, Result<ServerResult, GuardError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GuardError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: McpRequest) -> Self::Future {
        let shared = self.drain.inner.clone();
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        if self.track {
            if shared.draining.is_cancelled() {
                return Box::pin(async { Err(GuardError::ShuttingDown) });
            }
            shared.in_flight.fetch_add(1, Ordering::AcqRel);
            let tracked = Tracked(shared);
            return Box::pin(async move {
                let _tracked = tracked;
                inner.call(req).await.map_err(Into::into)
            });
        }
        Box::pin(async move {
            tokio::select! {
                result = inner.call(req) => result.map_err(Into::into),
                () = shared.aborted.cancelled() => Err(GuardError::ShuttingDown),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_the_last_request_and_aborts_at_the_deadline() {
        let drain = Drain::new();
        assert!(drain.wait_idle(Duration::from_millis(10)).await);
        let t = Tracked(drain.inner.clone());
        drain.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        assert!(!drain.wait_idle(Duration::from_millis(20)).await);
        let waiter = {
            let d = drain.clone();
            tokio::spawn(async move { d.wait_idle(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(t);
        assert!(waiter.await.unwrap());
        drain.abort();
        assert!(drain.inner.aborted.is_cancelled());
    }
}
