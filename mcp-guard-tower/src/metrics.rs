//! [`Metrics`] and [`MetricsLayer`]: Prometheus metrics of the gateway, rendered as
//! `OpenMetrics` text (which Prometheus scrapes) by [`Metrics::render`], served by
//! [`HttpEdge`](crate::HttpEdge) at `/metrics` when given one.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `mcp_guard_requests_total` | endpoint, server, tool, method, outcome | every request through the stack |
//! | `mcp_guard_request_duration_seconds` | endpoint, server, method | latency histogram (the whole stack, audit included) |
//! | `mcp_guard_requests_in_flight` | | requests being handled now |
//! | `mcp_guard_sessions_active` | endpoint | live legacy (`Mcp-Session-Id`) HTTP sessions, parked ones included |
//! | `mcp_guard_sessions_resident` | endpoint | of those, the ones holding a service loop now (busy, or pinned by their state) |
//! | `mcp_guard_gateway_sessions_active` | | gateway sessions; a gauge the owner of sessions drives through [`Metrics::gateway_sessions`] |
//! | `mcp_guard_upstream_processes` | | stdio upstream processes alive (spawned and not yet reaped) |
//! | `mcp_guard_upstream_up` | server | 1 while a server is connected |
//! | `mcp_guard_redactions_total` | kind, direction | values replaced on the wire, counted by [`CountingRedactor`] |
//! | `mcp_guard_audit_forward_backlog_records` | forwarder | durable audit records not yet delivered to the receiver |
//! | `mcp_guard_audit_forward_up` | forwarder | 1 while the forwarder delivers (caught up or sending), 0 while it retries, stands by or failed |
//! | `mcp_guard_audit_forward_delivered_seq` | forwarder | the `seq` of the last record delivered (its cursor) |
//! | `mcp_guard_audit_forward_records_total` | forwarder | records delivered by this process |
//! | `mcp_guard_audit_forward_failures_total` | forwarder | failed sends (each retried) |
//! | `mcp_guard_audit_forward_skipped_records_total` | forwarder | records the trail no longer held when the forwarder reached them |
//!
//! # Security
//! Tool names are chosen by clients, so a label never holds a name as requested: `tool`
//! and `server` are the *resolved* target (a name the endpoint's catalogue contains),
//! and empty for lists and for names that resolve to nothing. Label values are thus
//! bounded by configuration and the exposed catalogue. The metrics reveal server ids,
//! tool names and traffic volumes, not payloads; `/metrics` is unauthenticated like
//! `/readyz`, so keep the listener off public networks or switch it off.
//!
//! ```
//! use mcp_guard_tower::metrics::{Metrics, MetricsLayer};
//! use mcp_guard_tower::Router;
//!
//! let metrics = Metrics::new();
//! let stack = tower::ServiceBuilder::new()
//!     .layer(MetricsLayer::new(metrics.clone()))
//!     .service(Router::new());
//! # let _ = stack;
//! assert!(metrics.render().contains("mcp_guard_upstream_processes"));
//! ```

use std::borrow::Cow;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use mcp_guard_core::{Outcome, Redactor};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rmcp::model::ServerResult;
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::GuardError;
use crate::federation::Gateway;
use crate::legacy_sessions::LeanSessionManager;
use crate::request::McpRequest;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    server: String,
    tool: String,
    method: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    endpoint: String,
    server: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwarderLabel {
    forwarder: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RedactionLabels {
    kind: &'static str,
    direction: &'static str,
}

type LatencyFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.000_5, 2.0, 17))
}

/// The audit forwarders' instruments.
struct ForwardFamilies {
    backlog: Family<ForwarderLabel, Gauge>,
    up: Family<ForwarderLabel, Gauge>,
    seq: Family<ForwarderLabel, Gauge>,
    records: Family<ForwarderLabel, Counter>,
    failures: Family<ForwarderLabel, Counter>,
    skipped: Family<ForwarderLabel, Counter>,
}

impl ForwardFamilies {
    fn register(registry: &mut Registry) -> Self {
        let backlog = Family::<ForwarderLabel, Gauge>::default();
        registry.register(
            "mcp_guard_audit_forward_backlog_records",
            "Durable audit records not yet delivered to the forwarder's receiver",
            backlog.clone(),
        );
        let up = Family::<ForwarderLabel, Gauge>::default();
        registry.register(
            "mcp_guard_audit_forward_up",
            "1 while the audit forwarder delivers, 0 while it retries, stands by or failed",
            up.clone(),
        );
        let seq = Family::<ForwarderLabel, Gauge>::default();
        registry.register(
            "mcp_guard_audit_forward_delivered_seq",
            "The seq of the last audit record delivered by the forwarder",
            seq.clone(),
        );
        let records = Family::<ForwarderLabel, Counter>::default();
        registry.register(
            "mcp_guard_audit_forward_records",
            "Audit records delivered by this process",
            records.clone(),
        );
        let failures = Family::<ForwarderLabel, Counter>::default();
        registry.register(
            "mcp_guard_audit_forward_failures",
            "Failed sends of the audit forwarder (each is retried)",
            failures.clone(),
        );
        let skipped = Family::<ForwarderLabel, Counter>::default();
        registry.register(
            "mcp_guard_audit_forward_skipped_records",
            "Audit records removed from the local trail before the forwarder reached them",
            skipped.clone(),
        );
        Self {
            backlog,
            up,
            seq,
            records,
            failures,
            skipped,
        }
    }
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    in_flight: Gauge,
    sessions: Family<EndpointLabel, Gauge>,
    sessions_resident: Family<EndpointLabel, Gauge>,
    gateway_sessions: Gauge,
    processes: Gauge,
    upstream_up: Family<ServerLabel, Gauge>,
    redactions: Family<RedactionLabels, Counter>,
    session_managers: Mutex<Vec<(String, Weak<LeanSessionManager>)>>,
    gateway: Mutex<Option<Gateway>>,
    forward: ForwardFamilies,
    forwarders: Mutex<Option<mcp_guard_core::audit::forward::Forwarders>>,
}

/// The gateway's metrics: a registry and its instruments. Cheap to clone; clones share.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every instrument registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "mcp_guard_requests",
            "Requests through the guard stack, by endpoint, resolved server and tool, method and outcome",
            requests.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "mcp_guard_request_duration",
            "Time to answer a request, the whole guard stack included",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "mcp_guard_requests_in_flight",
            "Requests being handled now",
            in_flight.clone(),
        );
        let sessions = Family::<EndpointLabel, Gauge>::default();
        registry.register(
            "mcp_guard_sessions_active",
            "Live legacy HTTP sessions (Mcp-Session-Id) per endpoint",
            sessions.clone(),
        );
        let sessions_resident = Family::<EndpointLabel, Gauge>::default();
        registry.register(
            "mcp_guard_sessions_resident",
            "Legacy HTTP sessions holding a service loop now (the others are parked while idle)",
            sessions_resident.clone(),
        );
        let gateway_sessions = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "mcp_guard_gateway_sessions_active",
            "Live gateway sessions",
            gateway_sessions.clone(),
        );
        let processes = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "mcp_guard_upstream_processes",
            "Stdio upstream processes alive (spawned, not yet reaped)",
            processes.clone(),
        );
        let upstream_up = Family::<ServerLabel, Gauge>::default();
        registry.register(
            "mcp_guard_upstream_up",
            "1 while the server is connected, else 0",
            upstream_up.clone(),
        );
        let redactions = Family::<RedactionLabels, Counter>::default();
        registry.register(
            "mcp_guard_redactions",
            "Values redacted on the wire, by kind and direction (request, response)",
            redactions.clone(),
        );
        let forward = ForwardFamilies::register(&mut registry);
        Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                latency,
                in_flight,
                sessions,
                sessions_resident,
                gateway_sessions,
                processes,
                upstream_up,
                redactions,
                session_managers: Mutex::default(),
                gateway: Mutex::default(),
                forward,
                forwarders: Mutex::default(),
            }),
        }
    }

    /// Reports these audit forwarders at every render.
    pub fn track_forwarders(&self, forwarders: &mcp_guard_core::audit::forward::Forwarders) {
        *self
            .inner
            .forwarders
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(forwarders.clone());
    }

    /// The gauge of live gateway sessions, for whatever creates and ends them.
    pub fn gateway_sessions(&self) -> Gauge {
        self.inner.gateway_sessions.clone()
    }

    /// Reports `endpoint`'s legacy sessions from `manager` at every render.
    pub fn track_sessions(&self, endpoint: &str, manager: &Arc<LeanSessionManager>) {
        self.inner
            .session_managers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((endpoint.to_owned(), Arc::downgrade(manager)));
    }

    /// Reports each server of `gateway` as up or not at every render.
    pub fn track_gateway(&self, gateway: &Gateway) {
        *self.inner.gateway.lock().unwrap_or_else(PoisonError::into_inner) = Some(gateway.clone());
    }

    /// Counts one replaced value.
    pub fn record_redaction(&self, kind: &'static str, direction: &'static str) {
        self.inner
            .redactions
            .get_or_create(&RedactionLabels { kind, direction })
            .inc();
    }

    fn refresh(&self) {
        let inner = &self.inner;
        inner
            .processes
            .set(i64::try_from(mcp_guard_core::upstream::live_processes()).unwrap_or(i64::MAX));
        for (endpoint, manager) in inner
            .session_managers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let Some(m) = manager.upgrade() else { continue };
            // A writer holding the lock means a session is being added or removed; the
            // previous value stands until the next scrape.
            if let Some((all, resident)) = m.counts() {
                let label = EndpointLabel {
                    endpoint: endpoint.clone(),
                };
                inner
                    .sessions
                    .get_or_create(&label)
                    .set(i64::try_from(all).unwrap_or(i64::MAX));
                inner
                    .sessions_resident
                    .get_or_create(&label)
                    .set(i64::try_from(resident).unwrap_or(i64::MAX));
            }
        }
        if let Some(gw) = inner
            .gateway
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            // A server a reload removed leaves the family.
            inner.upstream_up.clear();
            for (id, upstream, enabled) in gw.servers() {
                let up =
                    enabled && matches!(upstream.status().state, mcp_guard_core::UpstreamState::Connected);
                inner
                    .upstream_up
                    .get_or_create(&ServerLabel {
                        server: id.to_string(),
                    })
                    .set(i64::from(up));
            }
        }
    }

    fn refresh_forwarders(&self) {
        use mcp_guard_core::audit::forward::ForwardState;
        let inner = &self.inner;
        let Some(fw) = inner
            .forwarders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return;
        };
        let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for s in fw.statuses() {
            let label = ForwarderLabel { forwarder: s.name };
            inner.forward.backlog.get_or_create(&label).set(big(s.backlog));
            inner.forward.seq.get_or_create(&label).set(big(s.delivered_seq));
            let up = matches!(s.state, ForwardState::CaughtUp | ForwardState::Sending);
            inner.forward.up.get_or_create(&label).set(i64::from(up));
            // Counters follow the forwarder's own totals.
            for (family, total) in [
                (&inner.forward.records, s.delivered),
                (&inner.forward.failures, s.failures),
                (&inner.forward.skipped, s.skipped),
            ] {
                let c = family.get_or_create(&label);
                let seen = c.get();
                if total > seen {
                    c.inc_by(total - seen);
                }
            }
        }
    }

    /// Every metric as `OpenMetrics` text (content type [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        self.refresh();
        self.refresh_forwarders();
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        out
    }
}

fn outcome_label(result: &Result<ServerResult, GuardError>) -> &'static str {
    match crate::audit::outcome_of(result) {
        Outcome::Ok => "ok",
        Outcome::ToolError => "tool_error",
        Outcome::Denied => "denied",
        Outcome::Unauthenticated => "unauthenticated",
        Outcome::RateLimited => "rate_limited",
        Outcome::Timeout => "timeout",
        Outcome::UpstreamTerminated => "upstream_terminated",
        Outcome::UpstreamError => "upstream_error",
        Outcome::Cancelled => "cancelled",
        Outcome::AuditFailed => "audit_failed",
        _ => "gateway_error",
    }
}

/// Counts and times every request (see the [module docs](self)). Put it outermost.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl MetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
}

crate::macros::inner_service_accessors!(MetricsService<S>);

struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<S> Service<McpRequest> for MetricsService<S>
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
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let metrics = self.metrics.clone();
        // Only resolved names: a name the client made up never becomes a label.
        let (server, tool) = req.target.as_ref().map_or((String::new(), String::new()), |t| {
            (t.server.to_string(), t.name.to_string())
        });
        let endpoint = req.context.endpoint.to_string();
        let method = req.request.method().to_owned();
        Box::pin(async move {
            let gauge = metrics.inner.in_flight.clone();
            gauge.inc();
            let _in_flight = InFlight(gauge);
            let started = Instant::now();
            let result = inner.call(req).await.map_err(Into::into);
            let elapsed = started.elapsed().as_secs_f64();
            metrics
                .inner
                .latency
                .get_or_create(&LatencyLabels {
                    endpoint: endpoint.clone(),
                    server: server.clone(),
                    method: method.clone(),
                })
                .observe(elapsed);
            metrics
                .inner
                .requests
                .get_or_create(&RequestLabels {
                    endpoint,
                    server,
                    tool,
                    method,
                    outcome: outcome_label(&result),
                })
                .inc();
            result
        })
    }
}

/// A [`Redactor`] that counts what the redactor it wraps replaced, by kind, into
/// `mcp_guard_redactions_total`.
///
/// It recognises the replacement markers of
/// [`PatternRedactor`](mcp_guard_core::redact::PatternRedactor) in the cleaned text
/// (`[REDACTED_EMAIL]`, `[REDACTED_SSN:…1234]`, `[EMAIL:1a2b3c4d]`), so it costs one
/// byte search over what changed and never a second detection pass. A marker that was
/// already in the input is counted again.
#[derive(Clone)]
pub struct CountingRedactor {
    inner: Arc<dyn Redactor>,
    metrics: Metrics,
    direction: &'static str,
}

impl std::fmt::Debug for CountingRedactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingRedactor")
            .field("direction", &self.direction)
            .finish_non_exhaustive()
    }
}

impl CountingRedactor {
    /// Wraps `inner`; counts go to `metrics` with label `direction` (e.g. `request`,
    /// `response`).
    pub fn new(inner: Arc<dyn Redactor>, metrics: Metrics, direction: &'static str) -> Self {
        Self {
            inner,
            metrics,
            direction,
        }
    }

    fn count(&self, text: &str) {
        for kind in markers(text) {
            self.metrics.record_redaction(kind, self.direction);
        }
    }

    fn count_json(&self, v: &Value) {
        match v {
            Value::String(s) => self.count(s),
            Value::Array(a) => a.iter().for_each(|v| self.count_json(v)),
            Value::Object(m) => {
                for (k, v) in m {
                    self.count(k);
                    self.count_json(v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

impl Redactor for CountingRedactor {
    fn redact_str<'a>(&self, input: &'a str) -> Cow<'a, str> {
        let out = self.inner.redact_str(input);
        if let Cow::Owned(s) = &out {
            self.count(s);
        }
        out
    }

    fn redact_json(&self, value: &mut Value) {
        self.inner.redact_json(value);
        self.count_json(value);
    }
}

/// The label of each replacement a `PatternRedactor` marker names, and the metric's
/// `kind` value for it.
const LABELS: [(&str, &str); 6] = [
    ("EMAIL", "email"),
    ("PHONE", "phone"),
    ("SSN", "ssn"),
    ("CREDIT_CARD", "credit_card"),
    ("IP", "ip"),
    ("SECRET", "secret"),
];

/// The kinds of the replacement markers in `text`.
fn markers(text: &str) -> impl Iterator<Item = &'static str> + '_ {
    let bytes = text.as_bytes();
    memchr::memchr_iter(b'[', bytes).filter_map(move |i| {
        let rest = &bytes[i + 1..];
        if let Some(r) = rest.strip_prefix(b"REDACTED_") {
            for (label, kind) in LABELS {
                if let Some(after) = r.strip_prefix(label.as_bytes())
                    && matches!(after.first(), Some(b']' | b':'))
                {
                    return Some(kind);
                }
            }
            return None;
        }
        for (label, kind) in LABELS {
            if let Some(after) = rest.strip_prefix(label.as_bytes())
                && let Some(tag) = after.strip_prefix(b":")
                && tag.len() > 8
                && tag[..8].iter().all(u8::is_ascii_hexdigit)
                && tag[8] == b']'
            {
                return Some(kind);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_every_marker_style() {
        let text = "a [REDACTED_EMAIL] b [REDACTED_SSN:\u{2026}1234] c [EMAIL:0a1b2c3d] [IP] [REDACTED_X] [PHONE:zz]";
        let found: Vec<_> = markers(text).collect();
        assert_eq!(found, ["email", "ssn", "email"]);
    }

    #[test]
    fn counting_redactor_counts_what_the_pattern_redactor_replaced() {
        let m = Metrics::new();
        let inner: Arc<dyn Redactor> = Arc::new(mcp_guard_core::redact::PatternRedactor::builder().build());
        let r = CountingRedactor::new(inner, m.clone(), "response");
        let mut v = serde_json::json!({"a": "mail bob@mailhost.io or ann@corp.org", "b": ["nothing here"]});
        r.redact_json(&mut v);
        assert!(!v.to_string().contains("example.com"), "{v}");
        assert_eq!(r.redact_str("call 415-555-0100 now").matches("PHONE").count(), 1);
        let text = m.render();
        assert!(
            text.contains(r#"mcp_guard_redactions_total{kind="email",direction="response"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"mcp_guard_redactions_total{kind="phone",direction="response"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn renders_requests_and_redactions() {
        let m = Metrics::new();
        m.record_redaction("email", "response");
        m.inner
            .requests
            .get_or_create(&RequestLabels {
                endpoint: "main".into(),
                server: "alpha".into(),
                tool: "echo".into(),
                method: "tools/call".into(),
                outcome: "ok",
            })
            .inc();
        let text = m.render();
        assert!(
            text.contains(r#"mcp_guard_redactions_total{kind="email",direction="response"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"mcp_guard_requests_total{endpoint="main",server="alpha",tool="echo",method="tools/call",outcome="ok"} 1"#), "{text}");
        assert!(text.contains("mcp_guard_upstream_processes"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
