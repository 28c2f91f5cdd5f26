//! Questions a legacy upstream asks as requests, put to a 2026-07-28 client.
//!
//! On a legacy connection a server asks the client things (elicitation, sampling,
//! roots) with requests of its own while it handles a call. A 2026-07-28 client may not
//! be sent requests; it is asked with an input-required result instead and calls again
//! with the answers. The gateway joins the two: the upstream's request is turned into
//! the client's input-required result, the upstream call stays in flight ("parked")
//! meanwhile, and the client's retry, which names the parked call by its
//! `requestState`, hands the answer to the upstream and goes on waiting for the call's
//! result (or its next question).
//!
//! A parked call is bound to the principal, the exposed name and the arguments of the
//! call that parked it; `requestState` is a random handle (never data the client could
//! shape); a parked call not resumed within [`PARK_TTL`] is cancelled upstream.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mcp_guard_core::UpstreamError;
use mcp_guard_core::upstream::Question;
use rmcp::model::{InputRequests, InputRequiredResult, ServerResult};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::GuardError;

/// How long a parked call waits for the client to call again.
pub(crate) const PARK_TTL: Duration = Duration::from_mins(10);

/// Prefix of the `requestState` handles of parked calls.
const PREFIX: &str = "mcp-guard-parked:";

/// The upstream call of a bridged request, as it goes on.
pub(crate) type CallFuture = Pin<Box<dyn Future<Output = Result<ServerResult, UpstreamError>> + Send>>;

/// What a parked call is bound to: only the same principal calling the same name with
/// the same arguments may resume it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) principal: String,
    pub(crate) name: String,
    pub(crate) arguments: Option<String>,
}

/// A bridged call in progress: the upstream call and the questions it asks.
pub(crate) struct Bridged {
    call: CallFuture,
    questions: mpsc::UnboundedReceiver<Question>,
    /// The upstream call's cancellation.
    cancel: CancellationToken,
    /// Cancels the upstream call when the bridged call is given up (dropped).
    cancel_on_drop: DropGuard,
}

impl Bridged {
    /// `call` (sent with `cancel` as its cancellation), whose questions arrive on
    /// `questions`.
    pub(crate) fn new(
        call: CallFuture,
        questions: mpsc::UnboundedReceiver<Question>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            call,
            questions,
            cancel_on_drop: cancel.clone().drop_guard(),
            cancel,
        }
    }
}

struct Parked {
    bridged: Bridged,
    binding: Binding,
    key: String,
    answer: oneshot::Sender<Result<serde_json::Value, rmcp::ErrorData>>,
    since: Instant,
}

/// The calls parked while their clients answer, by handle.
#[derive(Default)]
pub(crate) struct ParkedCalls {
    calls: Mutex<HashMap<String, Parked>>,
}

impl std::fmt::Debug for ParkedCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedCalls").finish_non_exhaustive()
    }
}

impl ParkedCalls {
    /// Whether `state` (a request's `requestState`) names a call parked here.
    pub(crate) fn is_handle(state: Option<&str>) -> bool {
        state.is_some_and(|s| s.starts_with(PREFIX))
    }

    /// Drives `bridged` until the upstream call ends (its result) or asks a question
    /// (an input-required result naming the parked call), or the client cancels.
    pub(crate) async fn drive(
        &self,
        mut bridged: Bridged,
        binding: Binding,
        client_cancel: &CancellationToken,
    ) -> Result<ServerResult, GuardError> {
        tokio::select! {
            result = &mut bridged.call => result.map_err(GuardError::Upstream),
            Some(question) = bridged.questions.recv() => self.park(bridged, binding, question),
            () = client_cancel.cancelled() => {
                // Cancelled, then awaited briefly: the upstream is told (it sends
                // notifications/cancelled) rather than the call simply dropped.
                bridged.cancel.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut bridged.call).await;
                Err(GuardError::Upstream(UpstreamError::Cancelled))
            }
        }
    }

    /// Keeps the call going in the background and asks the client the question.
    fn park(
        &self,
        bridged: Bridged,
        binding: Binding,
        question: Question,
    ) -> Result<ServerResult, GuardError> {
        let Ok(id) = mcp_guard_core::hex::random(16) else {
            // No handle can be made: the call is not kept (the upstream is told).
            bridged.cancel.cancel();
            return Err(GuardError::Internal(
                "the operating system's random source failed".into(),
            ));
        };
        let Bridged {
            call,
            questions,
            cancel,
            cancel_on_drop,
        } = bridged;
        // The call must go on while no request of the client is waiting for it.
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(call.await);
        });
        let call: CallFuture =
            Box::pin(async move { rx.await.unwrap_or_else(|_| Err(UpstreamError::Cancelled)) });
        let handle = format!("{PREFIX}{id}");
        let key = "input".to_owned();
        let mut requests = InputRequests::new();
        requests.insert(key.clone(), question.request);
        let parked = Parked {
            bridged: Bridged {
                call,
                questions,
                cancel,
                cancel_on_drop,
            },
            binding,
            key,
            answer: question.answer,
            since: Instant::now(),
        };
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.retain(|_, p| p.since.elapsed() < PARK_TTL && !p.answer.is_closed());
        calls.insert(handle.clone(), parked);
        drop(calls);
        Ok(ServerResult::InputRequiredResult(InputRequiredResult::new(
            Some(requests),
            Some(handle),
        )))
    }

    /// The client called again with its answers: hands the answer to the parked call
    /// and drives it on.
    ///
    /// # Errors
    /// An unknown or expired handle, a call bound to another principal, name or
    /// arguments, or no answer to the question asked.
    pub(crate) async fn resume(
        &self,
        handle: &str,
        binding: &Binding,
        answers: Option<&rmcp::model::InputResponses>,
        client_cancel: &CancellationToken,
    ) -> Result<ServerResult, GuardError> {
        let parked = {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            calls.retain(|_, p| p.since.elapsed() < PARK_TTL && !p.answer.is_closed());
            match calls.get(handle) {
                None => {
                    return Err(GuardError::Invalid(
                        "requestState names no call waiting for input (it ended, expired or was answered)"
                            .into(),
                    ));
                }
                Some(p) if p.binding != *binding => {
                    return Err(GuardError::Invalid(
                        "requestState belongs to another call (principal, name or arguments differ)".into(),
                    ));
                }
                Some(_) => calls.remove(handle),
            }
        };
        let Some(parked) = parked else {
            return Err(GuardError::Invalid(
                "requestState names no call waiting for input".into(),
            ));
        };
        let Some(answer) = answers.and_then(|a| a.get(&parked.key)).cloned() else {
            return Err(GuardError::Invalid(format!(
                "inputResponses has no answer for {:?}; the call was cancelled",
                parked.key
            )));
        };
        let _ = parked.answer.send(Ok(answer));
        self.drive(parked.bridged, parked.binding, client_cancel).await
    }
}
