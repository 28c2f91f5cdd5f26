//! Audit cost per call with the durable sinks: p50/p99 latency of `record` (the time
//! a call waits for its record to be on disk) and records per second, at several
//! numbers of concurrent callers. Group commit is what makes the high-concurrency
//! rows possible: one sync covers every record queued while the previous one ran.
//!
//! A second table measures whole calls: `tools/call` through the audit layer, policy
//! and the router to an in-process upstream, with a durable sink, at 1 and 16
//! concurrent callers: durable calls per second and the latency a caller sees. This
//! is the figure that counts the audit layer's syncs on a call's critical path.
//!
//! A third table measures the same durable calls (SQLite, 16 callers) with an audit
//! forwarder running beside them in the same process, as `[audit.forward.*]` runs in
//! the gateway: off, reading the trail into a transport that drops everything
//! (`discard`: the reading without a receiver), to a syslog receiver over TCP, and to a
//! webhook over HTTP (both receivers on their own thread, discarding what they get).
//! Rounds alternate the kinds; the forwarder's catch-up after the last call and the
//! size of the SQLite write-ahead log at the end are reported too.
//!
//! Run: `cargo bench -p mcp-guard-benches --bench audit` (release build). The files go
//! to `$AUDIT_BENCH_DIR` or a temporary directory under `benches/`; put them on the
//! disk you mean to measure (a tmpfs makes every sync free). `AUDIT_BENCH_ONLY=calls`
//! (or `records`, or `forward`) runs one table.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    missing_docs
)]

#[path = "src/stack_support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_guard_core::audit::{
    AuditPrincipal, EventKind, JsonLinesOptions, MacKey, SqliteAuditSink, SqliteOptions,
};
use mcp_guard_core::{
    Action, AuditEvent, AuditSink, FanOut, JsonLinesAuditSink, Outcome, PrincipalKind, Redactor, Target,
    TargetKind,
};

struct Keep;
impl Redactor for Keep {
    fn redact_str<'a>(&self, s: &'a str) -> std::borrow::Cow<'a, str> {
        s.into()
    }
}

fn event(i: usize) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Request {
        method: "tools/call".to_owned(),
        action: Action::Call,
    });
    e.principal = Some(AuditPrincipal::new("alice", PrincipalKind::User));
    e.endpoint = Some("engineering".to_owned());
    e.target = Some(Target::new("files", "read_file", TargetKind::Tool));
    e.requested_name = Some("files__read_file".to_owned());
    e.request_id = Some(i.to_string());
    e.rule = Some("engineers-read".to_owned());
    e.outcome = Some(Outcome::Ok);
    e.latency_us = 1234;
    e.request_bytes = Some(48);
    e.response_bytes = Some(120);
    e.arguments = Some(Keep.redacted(serde_json::json!({"path": format!("/srv/docs/report-{i}.md")})));
    e.result =
        Some(Keep.redacted(serde_json::json!({"content": [{"type": "text", "text": "x".repeat(96)}]})));
    e
}

struct Figures {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

async fn run(sink: Arc<dyn AuditSink>, callers: usize, total: usize) -> Figures {
    let per = total / callers;
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for k in 0..per {
                    let e = event(c * per + k);
                    let t = Instant::now();
                    sink.record(&e).await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort();
    Figures {
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    }
}

/// An in-process gateway (one echo upstream) and its guard stack over `sink`:
/// audit (pass-through redactor) → policy (allow all) → router.
async fn call_stack(sink: Arc<dyn AuditSink>) -> (mcp_guard_tower::Gateway, mcp_guard_tower::GuardService) {
    use mcp_guard_core::RmcpUpstream;
    use mcp_guard_core::upstream::{InProcessConnector, UpstreamOptions};
    use mcp_guard_tower::{AuditLayer, EndpointSpec, EnforcePolicyLayer, Gateway, Router, Selection};
    let upstream = RmcpUpstream::new(
        support::SERVER,
        InProcessConnector::new(support::SERVER, || support::Echo),
        UpstreamOptions::default(),
    );
    upstream.connect().await.unwrap();
    let gateway = Gateway::builder()
        .server(Arc::new(upstream))
        .endpoint(
            EndpointSpec::new(support::ENDPOINT)
                .without_namespace()
                .server(support::SERVER, Selection::none().tools(["*"]).unwrap()),
        )
        .build()
        .await
        .unwrap();
    let stack = tower::ServiceBuilder::new()
        .layer(AuditLayer::new(sink, Arc::new(support::PassThrough)))
        .layer(EnforcePolicyLayer::new(support::allow_all()))
        .service(Router::new());
    (gateway, tower::util::BoxCloneSyncService::new(stack))
}

/// `total` echo calls through the guard stack from `callers` concurrent tasks.
async fn run_calls(sink: Arc<dyn AuditSink>, callers: usize, total: usize) -> Figures {
    use mcp_guard_core::{CallContext, Principal};
    use mcp_guard_tower::McpRequest;
    use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest, ServerResult};
    use tower::ServiceExt as _;
    let (gateway, service) = call_stack(sink).await;
    let endpoint = gateway.endpoint(support::ENDPOINT).unwrap();
    let principal = Arc::new(Principal::user("alice"));
    let per = total / callers;
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (service, endpoint, principal) = (service.clone(), endpoint.clone(), principal.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for k in 0..per {
                    let args = serde_json::json!({"text": format!("/srv/docs/report-{}.md", c * per + k)});
                    let params = CallToolRequestParams::new("echo")
                        .with_arguments(args.as_object().cloned().unwrap_or_default());
                    let request = McpRequest::new(
                        ClientRequest::CallToolRequest(CallToolRequest::new(params)),
                        CallContext::new(principal.clone(), support::ENDPOINT),
                        endpoint.snapshot(),
                    );
                    let t = Instant::now();
                    let r = service.clone().oneshot(request).await.unwrap();
                    lat.push(t.elapsed());
                    assert!(matches!(r, ServerResult::CallToolResult(_)));
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    gateway.shutdown().await;
    all.sort();
    Figures {
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    }
}

/// The sink `name` (`sqlite`, `jsonl`, `jsonl+mac`, `sqlite+jsonl`) in `dir`.
fn open_sink(dir: &std::path::Path, name: &str, key: &MacKey) -> Arc<dyn AuditSink> {
    let sqlite = || {
        Arc::new(SqliteAuditSink::open(dir.join("audit.db"), SqliteOptions::default()).unwrap())
            as Arc<dyn AuditSink>
    };
    let jsonl = |mac: bool| {
        let mut o = JsonLinesOptions::default();
        if mac {
            o.mac_key = Some(key.clone());
        }
        Arc::new(JsonLinesAuditSink::open(dir.join("jsonl"), o).unwrap()) as Arc<dyn AuditSink>
    };
    match name {
        "sqlite" => sqlite(),
        "jsonl" => jsonl(false),
        "jsonl+mac" => jsonl(true),
        _ => Arc::new(FanOut::new(vec![sqlite(), jsonl(false)])),
    }
}

fn print_row(name: &str, callers: usize, f: &Figures) {
    println!(
        "{name:<18} {callers:>8} {:>12.0} {:>8.0}us {:>8.0}us",
        f.per_sec,
        f.p50.as_secs_f64() * 1e6,
        f.p99.as_secs_f64() * 1e6
    );
}

/// A receiver on its own thread that reads and discards: a TCP listener (syslog) or an
/// HTTP server answering 200 (webhook). Returns its address.
fn discard_receiver(http: bool) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    if http {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "" }));
                axum::serve(listener, app).await.unwrap();
            });
        });
    } else {
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut conn, &mut std::io::sink());
                });
            }
        });
    }
    addr
}

/// A transport that acknowledges everything at once: a forwarder's reading of the trail
/// without a receiver's cost.
struct Discard;

#[async_trait::async_trait]
impl mcp_guard_core::audit::forward::Transport for Discard {
    fn destination(&self) -> String {
        "discard".to_owned()
    }
    async fn send(
        &mut self,
        _: &[mcp_guard_core::audit::forward::ForwardRecord],
    ) -> Result<mcp_guard_core::audit::forward::Sent, mcp_guard_core::audit::forward::ForwardError> {
        Ok(mcp_guard_core::audit::forward::Sent::Acknowledged)
    }
    async fn check(&mut self) -> Result<String, mcp_guard_core::audit::forward::ForwardError> {
        Ok(String::new())
    }
}

/// Durable calls (SQLite) with a forwarder of `kind` (`off`, `discard`, `syslog`,
/// `webhook`) beside them; also how long the forwarder took, after the last call, to
/// deliver the whole trail, and the size of the write-ahead log at the end.
async fn run_forwarded(
    dir: &std::path::Path,
    kind: &str,
    callers: usize,
    total: usize,
) -> (Figures, Duration, u64) {
    use mcp_guard_core::audit::forward::{
        Forwarder, HttpOptions, SyslogOptions, SyslogTransport, TrailSource, Transport, WebhookTransport,
    };
    let db = dir.join("audit.db");
    let sqlite = Arc::new(SqliteAuditSink::open(&db, SqliteOptions::default()).unwrap());
    let transport: Option<Box<dyn Transport>> = match kind {
        "syslog" => {
            let addr = discard_receiver(false);
            Some(Box::new(
                SyslogTransport::new(SyslogOptions::new(addr.to_string())).unwrap(),
            ))
        }
        "webhook" => {
            let addr = discard_receiver(true);
            let o = HttpOptions::new(format!("http://{addr}/hook"));
            let key = secrecy::SecretString::from("bench-webhook-key".to_owned());
            Some(Box::new(WebhookTransport::new(&o, key, false).unwrap()))
        }
        "discard" => Some(Box::new(Discard)),
        _ => None,
    };
    let forwarder = transport
        .map(|t| Forwarder::new("bench", t, TrailSource::Sqlite(db.clone()), sqlite.durable_head()).spawn());
    let sink: Arc<dyn AuditSink> = sqlite.clone();
    let figures = run_calls(sink.clone(), callers, total).await;
    sink.flush().await.unwrap();
    let done = Instant::now();
    let mut catch_up = Duration::ZERO;
    if let Some(f) = forwarder {
        let head = sqlite.durable_head().current();
        while f.status().delivered_seq < head && done.elapsed() < Duration::from_mins(1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        catch_up = done.elapsed();
        f.stop(Duration::from_secs(5)).await;
    }
    let wal = std::fs::metadata(dir.join("audit.db-wal")).map_or(0, |m| m.len());
    (figures, catch_up, wal)
}

fn forward_table(runtime: &tokio::runtime::Runtime, base: &std::path::Path, smoke: bool) {
    let (callers, total, rounds) = if smoke { (4, 40, 1) } else { (16, 20_000, 3) };
    println!();
    println!(
        "{:<18} {:>8} {:>12} {:>10} {:>10} {:>12} {:>10}",
        "forwarding", "callers", "calls/s", "p50", "p99", "catch-up", "WAL"
    );
    let kinds = ["off", "discard", "syslog", "webhook"];
    let mut sums = [0.0f64; 4];
    for round in 0..rounds {
        // Alternate the order so that no kind always runs first.
        for i in 0..kinds.len() {
            let k = (i + round) % kinds.len();
            let dir = tempfile::tempdir_in(base).unwrap();
            let (f, catch_up, wal) = runtime.block_on(run_forwarded(dir.path(), kinds[k], callers, total));
            sums[k] += f.per_sec;
            println!(
                "{:<18} {callers:>8} {:>12.0} {:>8.0}us {:>8.0}us {:>10.0}ms {:>8.1}MB",
                kinds[k],
                f.per_sec,
                f.p50.as_secs_f64() * 1e6,
                f.p99.as_secs_f64() * 1e6,
                catch_up.as_secs_f64() * 1e3,
                wal as f64 / 1e6
            );
        }
    }
    let off = sums[0] / rounds as f64;
    for (k, name) in kinds.iter().enumerate().skip(1) {
        let mean = sums[k] / rounds as f64;
        println!(
            "mean over {rounds} rounds: {name} {mean:.0} calls/s vs off {off:.0} ({:+.1}%)",
            (mean / off - 1.0) * 100.0
        );
    }
}

fn main() {
    // `cargo test --benches` passes `--bench`-less args; run a tiny smoke pass then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = std::env::var_os("AUDIT_BENCH_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        Into::into,
    );
    let key = MacKey::new(b"bench key, thirty-two bytes long".to_vec()).unwrap();
    let only = std::env::var("AUDIT_BENCH_ONLY").unwrap_or_default();
    let levels: &[usize] = if smoke {
        &[4]
    } else if only == "calls" || only == "forward" {
        &[]
    } else {
        &[1, 16, 64, 256]
    };
    println!(
        "{:<18} {:>8} {:>12} {:>10} {:>10}",
        "sink", "callers", "records/s", "p50", "p99"
    );
    for &callers in levels {
        let total = match (smoke, callers) {
            (true, _) => 40,
            (false, 1) => 2_000,
            _ => 40_000,
        };
        for name in ["sqlite", "jsonl", "jsonl+mac", "sqlite+jsonl"] {
            let dir = tempfile::tempdir_in(&base).unwrap();
            let figures = runtime.block_on(run(open_sink(dir.path(), name, &key), callers, total));
            print_row(name, callers, &figures);
        }
    }
    let levels: &[usize] = if smoke {
        &[4]
    } else if only == "records" || only == "forward" {
        &[]
    } else {
        &[1, 16]
    };
    println!();
    println!(
        "{:<18} {:>8} {:>12} {:>10} {:>10}",
        "calls through", "callers", "calls/s", "p50", "p99"
    );
    for &callers in levels {
        let total = match (smoke, callers) {
            (true, _) => 40,
            (false, 1) => 2_000,
            _ => 20_000,
        };
        for name in ["sqlite", "jsonl", "sqlite+jsonl"] {
            let dir = tempfile::tempdir_in(&base).unwrap();
            let figures = runtime.block_on(async {
                let sink = open_sink(dir.path(), name, &key);
                let figures = run_calls(sink.clone(), callers, total).await;
                sink.flush().await.unwrap();
                figures
            });
            print_row(name, callers, &figures);
        }
    }
    if smoke || only.is_empty() || only == "forward" {
        forward_table(&runtime, &base, smoke);
    }
}
