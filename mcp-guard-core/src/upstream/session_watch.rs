//! Noticing a new upstream session on a streamable-HTTP connection.
//!
//! When a legacy server restarts, it answers the old `Mcp-Session-Id` with 404 and
//! rmcp's transport quietly runs `initialize` again and retries the request: the
//! connection looks unbroken, but the server behind it is a new one whose tools may
//! differ. [`WatchSessions`] wraps the HTTP client, sees every `initialize` after the
//! first, and has the upstream re-read its catalogue. (A 2026-07-28 server has no
//! session: its restart leaves no trace on the connection, and only the periodic
//! re-list, or the end of its change stream where it offers one, notices it.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, GetMeta as _};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};

use super::UpstreamClient;

/// Called when the server behind a connection started a new session.
pub(crate) type OnNewSession = Arc<dyn Fn() + Send + Sync>;

/// An HTTP client that reports each re-initialization (a new server session).
#[derive(Clone)]
pub(crate) struct WatchSessions<C> {
    inner: C,
    initialized: Arc<AtomicBool>,
    on_new_session: OnNewSession,
}

impl<C> WatchSessions<C> {
    /// Wraps `inner`; `on_new_session` runs (synchronously, so keep it short) after every
    /// successful `initialize` but the first.
    pub(crate) fn new(inner: C, on_new_session: OnNewSession) -> Self {
        Self {
            inner,
            initialized: Arc::new(AtomicBool::new(false)),
            on_new_session,
        }
    }

    fn after_post(&self, message_was_initialize: bool, ok: bool) {
        if message_was_initialize && ok && self.initialized.swap(true, Ordering::AcqRel) {
            (self.on_new_session)();
        }
    }
}

/// Puts the request's W3C trace context (`_meta.traceparent`, `tracestate`) into HTTP
/// headers too, where HTTP servers and proxies look for it.
fn trace_headers(message: &ClientJsonRpcMessage, headers: &mut HashMap<HeaderName, HeaderValue>) {
    let ClientJsonRpcMessage::Request(r) = message else {
        return;
    };
    let meta = r.request.get_meta();
    for (name, value) in [
        (HeaderName::from_static("traceparent"), meta.get_traceparent()),
        (HeaderName::from_static("tracestate"), meta.get_tracestate()),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, v);
        }
    }
}

fn is_initialize(message: &ClientJsonRpcMessage) -> bool {
    matches!(message, ClientJsonRpcMessage::Request(r) if matches!(r.request, ClientRequest::InitializeRequest(_)))
}

type HttpResult<T, E> = Result<T, StreamableHttpError<E>>;

impl<C: StreamableHttpClient + Sync> StreamableHttpClient for WatchSessions<C> {
    type Error = C::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<StreamableHttpPostResponse, C::Error> {
        let init = is_initialize(&message);
        trace_headers(&message, &mut custom_headers);
        let r = self
            .inner
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await;
        self.after_post(init, r.is_ok());
        r
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<StreamableHttpPostResponse, C::Error> {
        let init = is_initialize(&message);
        trace_headers(&message, &mut custom_headers);
        let r = self
            .inner
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        self.after_post(init, r.is_ok());
        r
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<(), C::Error> {
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<BoxStream<'static, Result<sse_stream::Sse, sse_stream::Error>>, C::Error> {
        self.inner
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<BoxStream<'static, Result<sse_stream::Sse, sse_stream::Error>>, C::Error> {
        self.inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}

impl UpstreamClient {
    /// Wraps a connector's HTTP client so that a new server session behind the
    /// connection (a restarted legacy server) makes the upstream re-read its catalogue;
    /// at most one such re-read starts per second.
    pub(crate) fn watch_sessions<C: StreamableHttpClient + Sync>(&self, http: C) -> WatchSessions<C> {
        let shared = self.shared.clone();
        let last = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
        WatchSessions::new(
            http,
            Arc::new(move || {
                let Some(shared) = shared.upgrade() else { return };
                {
                    let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
                        return;
                    }
                    *last = Some(std::time::Instant::now());
                }
                tracing::info!(server = %shared.id, "the server started a new session; re-reading its catalogue");
                tokio::spawn(async move {
                    let _ = shared.refresh_catalog(false).await;
                });
            }),
        )
    }
}
