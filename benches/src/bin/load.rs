//! Loopback HTTP load test: the gateway's added latency, throughput and CPU per call.
//!
//! ```text
//! cargo run --release -p mcp-guard-benches --bin load -- [--calls 3000] [--concurrency 16]
//!     [--tput-calls 5000] [--rounds 2] [--payload 64] [--pii] [--era modern|legacy]
//!     [--time-limit 60] [--gateway-nagle] [--realistic] [--peer-cmd CMD [--peer-tool NAME] [--peer-path P]]
//! ```
//!
//! `--era legacy` opens one session per target (`initialize`, `Mcp-Session-Id`,
//! protocol 2025-11-25) and calls in it; the default sends stateless 2026-07-28
//! requests. `--pii` fills the argument (and so the echoed result) with personal data
//! (e-mail addresses, phone and card numbers) instead of `x`s. `LOAD_FORWARD=1` adds a
//! syslog audit forwarder to the realistic gateway (`--realistic`), sending to a receiver
//! in the gateway's process that reads and discards: the cost of forwarding per call.
//!
//! `--peer-cmd` adds another gateway as target `peer`: the command runs under `sh -c`
//! with `UPSTREAM_URL` (the bench's upstream MCP URL) and `PORT` (where it must listen
//! on 127.0.0.1) in its environment, and should `exec` the gateway so that its CPU is
//! counted. `--peer-tool` is the name the peer gives the upstream's `echo` (default
//! `echo`), `--peer-path` its MCP path (default `/`). `benches/peers/mcp-proxy.sh`
//! runs joshrotenberg/mcp-proxy that way (legacy era only). The peer is never a
//! dependency: install it outside the workspace.
//!
//! Built with feature `count-allocs`, the gateway child counts its heap allocations (a
//! counting allocator) and the summary shows them per call of the concurrency-N phase.
//!
//! Starts, as child processes of this binary, all on 127.0.0.1 with ephemeral ports:
//! - `upstream`: a trivial MCP server (rmcp `StreamableHttpService`, `json_response`)
//!   with an `echo` tool at `/mcp`, and a non-MCP `/ping` route that answers a fixed
//!   JSON body without parsing (the loopback HTTP round trip);
//! - `gateway`: mcp-guard's `HttpEdge` (bearer token auth, audit with a pass-through
//!   redactor and a no-op sink, one allow grant) with an `HttpConnector` upstream
//!   pointing at `upstream`, served as the CLI serves it;
//! - `proxy`: a dumb HTTP forwarder (axum → pooled reqwest → upstream, body bytes
//!   untouched): the cost of one extra loopback hop with nothing MCP-aware in it;
//! - `proxy-nopool`: the same forwarder with `pool_max_idle_per_host(0)`, as the
//!   gateway's upstream client is configured (a new TCP connection per call).
//!
//! Then drives the same stateless 2026-07-28 `tools/call echo` (raw JSON-RPC POST over
//! one keep-alive reqwest client, `MCP-Protocol-Version`/`Mcp-Method`/`Mcp-Name`
//! headers, `_meta` client context) against every target:
//! 1. concurrency 1, interleaved call by call (same machine conditions), latency
//!    percentiles;
//! 2. concurrency N, one target at a time, alternating order over rounds: calls/s.
//!
//! CPU per call comes from each child's `/proc/PID/task/*/schedstat` (ns on CPU,
//! summed over threads) before and after each phase. Stops by itself: every phase
//! checks a hard deadline, children die with the parent (stdin EOF) or after the limit.
//! Prints a table and one `RESULT {json}` line.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command-line tool")]
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "statistics"
)]
#![allow(clippy::expect_used, reason = "setup of a bench tool")]

#[path = "../stack_support.rs"]
mod support;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::serve::ListenerExt as _;
use mcp_guard_core::upstream::{HttpConnector, HttpSpec, UpstreamOptions, ensure_crypto_provider};
use mcp_guard_core::{EnvCredentialStore, Principal, RmcpUpstream};
use mcp_guard_tower::{EndpointSpec, Gateway, HttpEdge, Selection, StaticTokens};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use support::{ENDPOINT, Echo, NoopSink, SERVER};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

const TOKEN: &str = "load-test-token-0123456789abcdef";
const PROTOCOL: &str = "2026-07-28";

// With feature `count-allocs`, counts every heap allocation (the gateway child reports
// its count on request). Off by default: the counters are atomics shared by every
// thread, which adds CPU to each call and would tilt a comparison with a peer.
#[cfg(feature = "count-allocs")]
#[global_allocator]
static ALLOC: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Heap allocations so far (0 without feature `count-allocs`).
fn allocations() -> usize {
    #[cfg(feature = "count-allocs")]
    return ALLOC.stats().allocations;
    #[cfg(not(feature = "count-allocs"))]
    0
}

#[derive(Debug, Clone)]
#[expect(clippy::struct_excessive_bools, reason = "command-line switches")]
struct Opts {
    calls: usize,
    concurrency: usize,
    tput_calls: usize,
    rounds: usize,
    payload: usize,
    pii: bool,
    legacy: bool,
    time_limit: Duration,
    gateway_nagle: bool,
    realistic: bool,
    peer_cmd: Option<String>,
    peer_tool: String,
    peer_path: String,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        calls: 3000,
        concurrency: 16,
        tput_calls: 5000,
        rounds: 2,
        payload: 64,
        pii: false,
        legacy: false,
        time_limit: Duration::from_mins(1),
        gateway_nagle: false,
        realistic: false,
        peer_cmd: None,
        peer_tool: "echo".to_owned(),
        peer_path: "/".to_owned(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--calls" => o.calls = num(a)?,
            "--concurrency" => o.concurrency = num(a)?.max(1),
            "--tput-calls" => o.tput_calls = num(a)?,
            "--rounds" => o.rounds = num(a)?.max(1),
            "--payload" => o.payload = num(a)?,
            "--time-limit" => o.time_limit = Duration::from_secs(num(a)? as u64),
            "--gateway-nagle" => o.gateway_nagle = true,
            "--pii" => o.pii = true,
            "--realistic" => o.realistic = true,
            "--era" => match it.next().map(String::as_str) {
                Some("legacy") => o.legacy = true,
                Some("modern") => o.legacy = false,
                _ => return Err("--era is legacy or modern".into()),
            },
            "--peer-cmd" => o.peer_cmd = Some(it.next().ok_or("--peer-cmd needs a command")?.clone()),
            "--peer-tool" => o
                .peer_tool
                .clone_from(it.next().ok_or("--peer-tool needs a name")?),
            "--peer-path" => o
                .peer_path
                .clone_from(it.next().ok_or("--peer-path needs a path")?),
            "-h" | "--help" => {
                return Err(
                    "usage: load [--calls N] [--concurrency N] [--tput-calls N] [--rounds N] \
                            [--payload BYTES] [--pii] [--era modern|legacy] [--time-limit SECS] \
                            [--gateway-nagle] [--realistic] [--peer-cmd CMD] [--peer-tool NAME] [--peer-path PATH]"
                        .into(),
                );
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first().map(String::as_str);
    // Children: `load child ROLE ARG...`, run on a default (2-worker here) runtime,
    // like a deployed gateway.
    if role == Some("child") {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(child(&args[1..]));
        return;
    }
    let opts = match parse_opts(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let limit = opts.time_limit;
    match rt.block_on(async { tokio::time::timeout(limit + Duration::from_secs(5), run(opts)).await }) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("load: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("load: hard time limit reached");
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------- children

async fn child(args: &[String]) {
    // Die with the parent: it holds our stdin; EOF means it is gone. Hard limit too.
    let limit: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(120);
    // A line `stats` asks for the allocation count so far.
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line == "stats" {
                println!("STATS {}", allocations());
            }
        }
        std::process::exit(0);
    });
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(limit)).await;
        std::process::exit(0);
    });
    let arg = args.get(1).cloned().unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("upstream") => serve_upstream(arg == "legacy").await,
        Some("gateway") => serve_gateway(&arg, true).await,
        Some("gateway-nagle") => serve_gateway(&arg, false).await,
        Some("gateway-real") => serve_configured(&arg).await,
        Some("proxy") => serve_proxy(&arg, true).await,
        Some("proxy-nopool") => serve_proxy(&arg, false).await,
        other => Err(format!("unknown child role {other:?}").into()),
    };
    if let Err(e) = result {
        eprintln!("child {args:?}: {e}");
        std::process::exit(1);
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn bind() -> Result<tokio::net::TcpListener, BoxError> {
    let l = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    println!("ADDR {}", l.local_addr()?);
    Ok(l)
}

/// The upstream: stateless, or with legacy sessions (`legacy`: rmcp's
/// `LocalSessionManager`, which also serves stateless 2026-07-28 requests).
async fn serve_upstream(legacy: bool) -> Result<(), BoxError> {
    let config = StreamableHttpServerConfig::default().with_json_response(true);
    let mcp = if legacy {
        axum::Router::new().nest_service(
            "/mcp",
            StreamableHttpService::new(|| Ok(Echo), Arc::new(LocalSessionManager::default()), config),
        )
    } else {
        axum::Router::new().nest_service(
            "/mcp",
            StreamableHttpService::new(|| Ok(Echo), Arc::new(NeverSessionManager::default()), config),
        )
    };
    let ping_body = Bytes::from_static(
        br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"pong"}],"isError":false}}"#,
    );
    let app = axum::Router::new()
        .route(
            "/ping",
            axum::routing::post(move |_: Bytes| {
                let b = ping_body.clone();
                async move { ([(http::header::CONTENT_TYPE, "application/json")], b) }
            }),
        )
        .merge(mcp);
    // `LOAD_UPSTREAM_NAGLE` leaves Nagle's algorithm on, as many MCP servers do (axum's
    // `serve` without `tap_io`): a reused connection then meets delayed ACKs.
    let nagle = std::env::var_os("LOAD_UPSTREAM_NAGLE").is_some();
    let listener = bind().await?.tap_io(move |s| {
        let _ = s.set_nodelay(!nagle);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

async fn serve_gateway(upstream: &str, nodelay: bool) -> Result<(), BoxError> {
    ensure_crypto_provider();
    let upstream = RmcpUpstream::new(
        SERVER,
        HttpConnector::new(
            SERVER,
            {
                let mut spec = HttpSpec::new(upstream);
                spec.reuse_connections = std::env::var_os("LOAD_NO_REUSE").is_none();
                spec
            },
            Arc::new(EnvCredentialStore::new()),
        ),
        UpstreamOptions::default(),
    );
    upstream.connect().await?;
    let gateway = Gateway::builder()
        .server(Arc::new(upstream))
        .endpoint(
            EndpointSpec::new(ENDPOINT)
                .without_namespace()
                .server(SERVER, Selection::none().tools(["*"])?),
        )
        .build()
        .await?;
    let service = support::guard_stack(Arc::new(NoopSink::default()));
    let auth = StaticTokens::new().with_token(&secrecy::SecretString::from(TOKEN), Principal::user("load"));
    let app = HttpEdge::new(gateway, service, Arc::new(auth)).router();
    let listener = bind().await?;
    if nodelay {
        axum::serve(
            listener.tap_io(|s| {
                let _ = s.set_nodelay(true);
            }),
            app,
        )
        .await?;
    } else {
        // Nagle's algorithm left on: a reply written in pieces (an event stream) meets
        // the client's delayed ACK.
        axum::serve(listener, app).await?;
    }
    Ok(())
}

/// The realistic gateway: what `mcp-guard serve` runs, built by `ServerBuilder` from a
/// configuration file: token auth, one grant, a durable SQLite audit trail (in a
/// temporary directory) and personal-data redaction of responses.
async fn serve_configured(upstream: &str) -> Result<(), BoxError> {
    ensure_crypto_provider();
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("audit.db");
    let config = format!(
        "[[auth.tokens]]\nprincipal = {{ id = \"load\", roles = [\"bench\"] }}\ntoken = \"${{LOAD_GATEWAY_TOKEN}}\"\n\n\
         [[grants]]\nname = \"bench\"\nroles = [\"bench\"]\nnames = [\"*\"]\n\n\
         [audit]\nsinks = [\"sqlite\"]\nsqlite_path = \"{db}\"\n\n\
         [servers.{SERVER}]\ntransport = \"http\"\nurl = \"{upstream}\"\n{reuse}\n\
         [endpoints.{ENDPOINT}]\nnamespace = false\n\
         [endpoints.{ENDPOINT}.redaction]\nresponses = true\n\
         [endpoints.{ENDPOINT}.servers.{SERVER}]\ntools = [\"*\"]\n",
        db = db.display(),
        // Stated either way, so that one build measures both.
        reuse = if std::env::var_os("LOAD_NO_REUSE").is_some() {
            "reuse_connections = false\n"
        } else {
            "reuse_connections = true\n"
        },
    );
    let mut config = config;
    // `LOAD_FORWARD=1`: the audit trail is also forwarded as syslog to a receiver that
    // reads and discards, in this process (its CPU counts as the gateway's).
    if std::env::var_os("LOAD_FORWARD").is_some() {
        let receiver = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = receiver.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = receiver.accept().await {
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut conn, &mut tokio::io::sink()).await;
                });
            }
        });
        let _ = write!(
            config,
            "\n[audit.forward.bench]\nkind = \"syslog\"\nurl = \"tcp://{addr}\"\n"
        );
    }
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config)?;
    let server =
        mcp_guard_tower::server::ServerBuilder::from_loaded(mcp_guard_tower::server::load_config(&path)?)
            .build()
            .await?;
    let listener = bind().await?;
    server.serve(listener, std::future::pending(), |_| {}).await?;
    drop(dir);
    Ok(())
}

async fn serve_proxy(upstream: &str, pooled: bool) -> Result<(), BoxError> {
    ensure_crypto_provider();
    let mut b = reqwest::Client::builder().tcp_nodelay(true);
    if !pooled {
        b = b.pool_max_idle_per_host(0);
    }
    let client = b.build()?;
    let url: Arc<str> = upstream.into();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: http::HeaderMap, body: Bytes| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let mut req = client.post(&*url).body(body);
                for h in [
                    "content-type",
                    "accept",
                    "mcp-protocol-version",
                    "mcp-method",
                    "mcp-name",
                    "mcp-session-id",
                ] {
                    if let Some(v) = headers.get(h) {
                        req = req.header(h, v.clone());
                    }
                }
                match req.send().await {
                    Ok(r) => {
                        let status = r.status();
                        let ct = r.headers().get(http::header::CONTENT_TYPE).cloned();
                        let session = r.headers().get("mcp-session-id").cloned();
                        let bytes = r.bytes().await.unwrap_or_default();
                        let mut resp = axum::response::Response::new(axum::body::Body::from(bytes));
                        *resp.status_mut() = status;
                        if let Some(ct) = ct {
                            resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
                        }
                        if let Some(id) = session {
                            resp.headers_mut().insert("mcp-session-id", id);
                        }
                        resp
                    }
                    Err(e) => {
                        let mut resp = axum::response::Response::new(axum::body::Body::from(e.to_string()));
                        *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
                        resp
                    }
                }
            }
        }),
    );
    let listener = bind().await?.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

// ---------------------------------------------------------------- parent

struct Child {
    proc: tokio::process::Child,
    pid: u32,
    addr: String,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    /// The child's heap allocations so far (children of this binary only).
    async fn allocations(&mut self) -> Option<u64> {
        let stdin = self.proc.stdin.as_mut()?;
        stdin.write_all(b"stats\n").await.ok()?;
        stdin.flush().await.ok()?;
        let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await
            .ok()?
            .ok()??;
        line.strip_prefix("STATS ")?.parse().ok()
    }
}

/// Starts `--peer-cmd` (under `sh -c`, with `UPSTREAM_URL` and `PORT`) and waits until
/// it accepts connections on its port.
async fn spawn_peer(
    cmd: &str,
    upstream: &str,
    limit: Duration,
) -> Result<(tokio::process::Child, u32, String), BoxError> {
    let port = {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        l.local_addr()?.port()
    };
    // `exec`: the pid measured is the peer's own, not a shell's.
    let proc = tokio::process::Command::new("sh")
        .args(["-c", &format!("exec {cmd}")])
        .env("UPSTREAM_URL", upstream)
        .env("PORT", port.to_string())
        // Its own logging would count against it.
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = proc.id().ok_or("peer exited")?;
    let addr = format!("127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(20).min(limit);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        if Instant::now() > until {
            return Err(format!("the peer did not listen on {addr}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((proc, pid, addr))
}

async fn spawn_child(role: &str, arg: &str, limit: Duration) -> Result<Child, BoxError> {
    let exe = std::env::current_exe()?;
    let mut proc = tokio::process::Command::new(exe)
        .args(["child", role, arg, &(limit.as_secs() + 10).to_string()])
        // The realistic gateway's configuration names its token by variable.
        .env("LOAD_GATEWAY_TOKEN", TOKEN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = proc.id().ok_or("child exited")?;
    let stdout = proc.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .map_err(|_| format!("{role} did not start"))??
        .ok_or_else(|| format!("{role} exited before listening"))?;
    let addr = line.strip_prefix("ADDR ").ok_or("bad ADDR line")?.to_owned();
    Ok(Child {
        proc,
        pid,
        addr,
        lines,
    })
}

/// ns on CPU of every live thread of `pid` (schedstat), or utime+stime at 100 Hz.
fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0u64;
    let mut any = false;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat"))
                && let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok())
            {
                total += ns;
                any = true;
            }
        }
    }
    if any {
        return total;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let u: u64 = f.get(11)?.parse().ok()?;
            let k: u64 = f.get(12)?.parse().ok()?;
            Some((u + k) * 10_000_000)
        })
        .unwrap_or(0)
}

#[derive(Clone)]
struct Target {
    name: &'static str,
    url: String,
    /// The call's `params`, serialised; each call gets its own JSON-RPC id.
    params: Arc<str>,
    auth: bool,
    /// Child process that serves only this target (for CPU attribution).
    pid: Option<u32>,
    /// The tool's name at this target.
    tool: String,
    /// Legacy era: the session's id, once initialised (`None` for a stateless server).
    legacy: bool,
    session: Option<String>,
}

/// The legacy protocol revision the bench speaks with `--era legacy`.
const LEGACY_PROTOCOL: &str = "2025-11-25";

fn request(client: &reqwest::Client, t: &Target, body: Bytes) -> reqwest::RequestBuilder {
    let mut req = client
        .post(&t.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        // A stalled answer fails the run instead of holding it to the time limit.
        .timeout(Duration::from_secs(10))
        .body(body);
    if t.legacy {
        req = req.header("mcp-protocol-version", LEGACY_PROTOCOL);
        if let Some(id) = &t.session {
            req = req.header("mcp-session-id", id);
        }
    } else {
        req = req
            .header("mcp-protocol-version", PROTOCOL)
            .header("mcp-method", "tools/call")
            .header("mcp-name", &t.tool);
    }
    if t.auth {
        req = req.header(
            "authorization",
            concat!("Bearer ", "load-test-token-0123456789abcdef"),
        );
    }
    req
}

/// Opens a legacy session at `t` (`initialize`, then `notifications/initialized`).
async fn initialize(client: &reqwest::Client, t: &mut Target) -> Result<(), BoxError> {
    let init = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": LEGACY_PROTOCOL, "capabilities": {},
                   "clientInfo": {"name": "mcp-guard-load", "version": "0.1.0"}}
    });
    let failed = |e: reqwest::Error| format!("{}: initialize: {e}", t.name);
    let r = request(client, t, Bytes::from(init.to_string()))
        .send()
        .await
        .map_err(failed)?;
    let status = r.status();
    t.session = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = r.bytes().await.map_err(failed)?;
    if !status.is_success() {
        return Err(format!(
            "{}: initialize: {status} {}",
            t.name,
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = request(client, t, Bytes::from(done.to_string())).send().await?;
    if !r.status().is_success() {
        return Err(format!("{}: notifications/initialized: {}", t.name, r.status()).into());
    }
    Ok(())
}

async fn call(client: &reqwest::Client, t: &Target, expect: &str) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let failed = |e: reqwest::Error| format!("{}: tools/call: {e}", t.name);
    let r = request(client, t, call_body(&t.params))
        .send()
        .await
        .map_err(failed)?;
    let status = r.status();
    let body = r.bytes().await.map_err(failed)?;
    let elapsed = start.elapsed();
    if !status.is_success() || memchr(&body, expect.as_bytes()).is_none() {
        return Err(format!(
            "{}: unexpected answer {status}: {}",
            t.name,
            String::from_utf8_lossy(&body[..body.len().min(400)])
        )
        .into());
    }
    Ok(elapsed)
}

fn memchr(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, Default, Clone)]
struct Lat {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

fn lat(mut v: Vec<u64>) -> Lat {
    if v.is_empty() {
        return Lat::default();
    }
    v.sort_unstable();
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    Lat {
        n: v.len(),
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        max: *v.last().unwrap_or(&0) as f64 / 1000.0,
        mean: v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0,
    }
}

#[derive(Debug, Default, Clone)]
struct Tput {
    calls: usize,
    secs: f64,
    /// CPU ns per call of the target's own child (gateway/proxy), if any.
    own_cpu_ns: Option<f64>,
    /// CPU ns per call of the upstream process.
    upstream_cpu_ns: f64,
}

async fn throughput(
    client: &reqwest::Client,
    t: &Target,
    calls: usize,
    concurrency: usize,
    upstream_pid: u32,
    deadline: Instant,
    expect: &str,
) -> Result<Tput, BoxError> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let own0 = t.pid.map(cpu_ns);
    let up0 = cpu_ns(upstream_pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, t, next, expect) = (client.clone(), t.clone(), next.clone(), expect.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < calls && Instant::now() < deadline
            {
                call(&client, &t, &expect).await?;
                done += 1;
            }
            Ok::<usize, BoxError>(done)
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += task.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let per = |d: u64| d as f64 / done.max(1) as f64;
    Ok(Tput {
        calls: done,
        secs,
        own_cpu_ns: t.pid.zip(own0).map(|(p, c0)| per(cpu_ns(p).saturating_sub(c0))),
        upstream_cpu_ns: per(cpu_ns(upstream_pid).saturating_sub(up0)),
    })
}

/// Personal data the `--pii` argument is made of (a redactor finds every kind).
const PII: &str = "Contact jane.doe@example.org or call (415) 555-0132; card 4111 1111 1111 1111, \
                   SSN 078-05-1120, host 192.168.10.24. ";

/// The argument text of `payload` bytes, ending in a marker the answer must contain.
/// p50 of one small append and `fdatasync` in the temporary directory (where the
/// realistic gateway keeps its audit database), in µs: what one disk sync costs now.
fn sync_p50() -> f64 {
    use std::io::Write as _;
    let Ok(mut f) = tempfile::tempfile() else {
        return f64::NAN;
    };
    let mut v: Vec<u64> = (0..200)
        .filter_map(|_| {
            let t = Instant::now();
            f.write_all(&[b'x'; 512]).ok()?;
            f.sync_data().ok()?;
            Some(t.elapsed().as_nanos() as u64)
        })
        .collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[v.len() / 2] as f64 / 1000.0
}

fn text(payload: usize, pii: bool) -> String {
    let n = payload.saturating_sub(8);
    let filler = if pii {
        PII.repeat(n / PII.len() + 1)[..n].to_owned()
    } else {
        "x".repeat(n)
    };
    filler + "-marker!"
}

/// The `params` of a `tools/call` of `tool` with `text` (with the 2026-07-28 `_meta`
/// unless legacy).
fn params(tool: &str, text: &str, legacy: bool) -> Arc<str> {
    let mut params = json!({"name": tool, "arguments": {"text": text}});
    if !legacy {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": PROTOCOL,
            "io.modelcontextprotocol/clientInfo": {"name": "mcp-guard-load", "version": "0.1.0"},
            "io.modelcontextprotocol/clientCapabilities": {}
        });
    }
    params.to_string().into()
}

/// A `tools/call` with `params` and an id no other call of this run has: calls in
/// flight together in one legacy session must not share an id (a server routes each
/// answer to the request of that id; rmcp's session answered one of two twins and
/// left the other's stream open).
fn call_body(params: &str) -> Bytes {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{params}}}"#
    ))
}

#[expect(clippy::too_many_lines, reason = "one linear script")]
async fn run(o: Opts) -> Result<(), BoxError> {
    ensure_crypto_provider();
    let t0 = Instant::now();
    let deadline = t0 + o.time_limit;
    let up = spawn_child("upstream", if o.legacy { "legacy" } else { "" }, o.time_limit).await?;
    let up_url = format!("http://{}/mcp", up.addr);
    let gw_role = if o.gateway_nagle {
        "gateway-nagle"
    } else {
        "gateway"
    };
    let mut gw = spawn_child(gw_role, &up_url, o.time_limit).await?;
    let px = spawn_child("proxy", &up_url, o.time_limit).await?;
    let pxn = spawn_child("proxy-nopool", &up_url, o.time_limit).await?;
    let text = text(o.payload, o.pii);
    // The answer must hold the argument's end (the whole of a large one costs the
    // client more than the call).
    let expect = text[text.len().saturating_sub(40)..].to_owned();
    let real = if o.realistic {
        Some(spawn_child("gateway-real", &up_url, o.time_limit).await?)
    } else {
        None
    };
    let peer = match &o.peer_cmd {
        Some(cmd) => Some(spawn_peer(cmd, &up_url, o.time_limit).await?),
        None => None,
    };
    let target = |name: &'static str, url: String, pid: Option<u32>, tool: &str| Target {
        name,
        url,
        params: params(tool, &text, o.legacy),
        auth: name == "gateway" || name == "gw-real",
        pid,
        tool: tool.to_owned(),
        legacy: o.legacy,
        session: None,
    };
    let mut targets = vec![
        target("rtt", format!("http://{}/ping", up.addr), None, "echo"),
        target("direct", up_url.clone(), None, "echo"),
        target("proxy", format!("http://{}/mcp", px.addr), Some(px.pid), "echo"),
        target(
            "proxy-nopool",
            format!("http://{}/mcp", pxn.addr),
            Some(pxn.pid),
            "echo",
        ),
        target(
            "gateway",
            format!("http://{}/mcp/{ENDPOINT}", gw.addr),
            Some(gw.pid),
            "echo",
        ),
    ];
    if let Some(real) = &real {
        targets.push(target(
            "gw-real",
            format!("http://{}/mcp/{ENDPOINT}", real.addr),
            Some(real.pid),
            "echo",
        ));
    }
    if let Some((_, pid, addr)) = &peer {
        targets.push(target(
            "peer",
            format!("http://{addr}{}", o.peer_path),
            Some(*pid),
            &o.peer_tool,
        ));
    }
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .build()?;
    let check = |t: &Target| {
        if t.name == "rtt" {
            "pong".to_owned()
        } else {
            expect.clone()
        }
    };
    if o.legacy {
        for t in targets.iter_mut().filter(|t| t.name != "rtt") {
            initialize(&client, t).await?;
        }
    }

    // Warm-up (connections, allocator, catalogues).
    for _ in 0..200 {
        for t in &targets {
            call(&client, t, &check(t)).await?;
        }
    }

    // Phase 1: concurrency 1, interleaved call by call, rotating the order.
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(o.calls); targets.len()];
    let cpu0: Vec<Option<u64>> = targets.iter().map(|t| t.pid.map(cpu_ns)).collect();
    let up_cpu0 = cpu_ns(up.pid);
    let mut c1_calls = 0;
    for i in 0..o.calls {
        if Instant::now() >= deadline {
            break;
        }
        for k in 0..targets.len() {
            let j = (i + k) % targets.len();
            let d = call(&client, &targets[j], &check(&targets[j])).await?;
            samples[j].push(d.as_nanos() as u64);
        }
        c1_calls += 1;
    }
    let c1_cpu: Vec<Option<f64>> = targets
        .iter()
        .zip(&cpu0)
        .map(|(t, c0)| {
            t.pid
                .zip(*c0)
                .map(|(p, c0)| cpu_ns(p).saturating_sub(c0) as f64 / f64::from(c1_calls.max(1)))
        })
        .collect();
    let c1_up_cpu = cpu_ns(up.pid).saturating_sub(up_cpu0) as f64 / f64::from(c1_calls.max(1));
    let lats: Vec<Lat> = samples.into_iter().map(lat).collect();

    // Phase 2: concurrency N, one target at a time, order reversed every round.
    let mut tputs: Vec<Vec<Tput>> = vec![Vec::new(); targets.len()];
    // The gateway's heap allocations and calls in phase 2.
    let mut gw_allocs = (0u64, 0u64);
    for round in 0..o.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..targets.len()).collect()
        } else {
            (0..targets.len()).rev().collect()
        };
        for j in order {
            if Instant::now() >= deadline {
                break;
            }
            let t = &targets[j];
            let counted = t.name == "gateway";
            let a0 = if counted { gw.allocations().await } else { None };
            let r = throughput(
                &client,
                t,
                o.tput_calls,
                o.concurrency,
                up.pid,
                deadline,
                &check(t),
            )
            .await?;
            if let (Some(a0), Some(a1)) = (a0, if counted { gw.allocations().await } else { None }) {
                gw_allocs.0 += a1.saturating_sub(a0);
                gw_allocs.1 += r.calls as u64;
            }
            tputs[j].push(r);
        }
    }
    let agg: Vec<Tput> = tputs
        .iter()
        .map(|rs| {
            let calls: usize = rs.iter().map(|r| r.calls).sum();
            let secs: f64 = rs.iter().map(|r| r.secs).sum();
            let w = |f: &dyn Fn(&Tput) -> f64| {
                rs.iter().map(|r| f(r) * r.calls as f64).sum::<f64>() / calls.max(1) as f64
            };
            Tput {
                calls,
                secs,
                own_cpu_ns: rs
                    .first()
                    .and_then(|r| r.own_cpu_ns)
                    .map(|_| w(&|r| r.own_cpu_ns.unwrap_or(0.0))),
                upstream_cpu_ns: w(&|r| r.upstream_cpu_ns),
            }
        })
        .collect();

    let sync = if o.realistic { sync_p50() } else { f64::NAN };

    // Report.
    let idx = |n: &str| targets.iter().position(|t| t.name == n).unwrap_or(0);
    let (rtt, direct, proxy, gateway) = (idx("rtt"), idx("direct"), idx("proxy"), idx("gateway"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mcp-guard load: tools/call echo ({} B payload{}), {} over loopback HTTP, {} CPUs",
        o.payload,
        if o.pii { ", personal data" } else { "" },
        if o.legacy {
            "legacy sessions (2025-11-25)"
        } else {
            "2026-07-28 stateless JSON-RPC"
        },
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    let _ = writeln!(
        out,
        "\nconcurrency 1, {c1_calls} calls per target, interleaved (µs)"
    );
    let _ = writeln!(
        out,
        "{:<13} {:>8} {:>8} {:>8} {:>8} {:>8} {:>14}",
        "target", "p50", "p90", "p99", "max", "mean", "own CPU/call"
    );
    for (j, t) in targets.iter().enumerate() {
        let l = &lats[j];
        let cpu = c1_cpu[j].map_or_else(|| "-".to_owned(), |c| format!("{:.1}", c / 1000.0));
        let _ = writeln!(
            out,
            "{:<13} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>14}",
            t.name, l.p50, l.p90, l.p99, l.max, l.mean, cpu
        );
    }
    let _ = writeln!(
        out,
        "(upstream process CPU during phase 1: {:.1} µs per round of {} calls)",
        c1_up_cpu / 1000.0,
        targets.len() - 1
    );
    let _ = writeln!(
        out,
        "\nconcurrency {}, {} round(s) of up to {} calls per target",
        o.concurrency, o.rounds, o.tput_calls
    );
    let _ = writeln!(
        out,
        "{:<13} {:>10} {:>14} {:>16} {:>16}",
        "target", "calls/s", "own CPU/call", "upstream CPU/call", "own calls/s/core"
    );
    for (j, t) in targets.iter().enumerate() {
        let a = &agg[j];
        let own = a
            .own_cpu_ns
            .map_or_else(|| "-".to_owned(), |c| format!("{:.1} µs", c / 1000.0));
        let per_core = a
            .own_cpu_ns
            .map_or_else(|| "-".to_owned(), |c| format!("{:.0}", 1e9 / c.max(1.0)));
        let _ = writeln!(
            out,
            "{:<13} {:>10.0} {:>14} {:>13.1} µs {:>16}",
            t.name,
            a.calls as f64 / a.secs.max(1e-9),
            own,
            a.upstream_cpu_ns / 1000.0,
            per_core
        );
    }
    let add50 = lats[gateway].p50 - lats[direct].p50;
    let add99 = lats[gateway].p99 - lats[direct].p99;
    let gw_cpu = agg[gateway].own_cpu_ns.unwrap_or(0.0) / 1000.0;
    let px_cpu = agg[proxy].own_cpu_ns.unwrap_or(0.0) / 1000.0;
    let up_extra = (agg[gateway].upstream_cpu_ns - agg[direct].upstream_cpu_ns) / 1000.0;
    let _ = writeln!(
        out,
        "\nsummary (targets: ≤ RTT+15 µs p50, ≤ RTT+40 µs p99, ≤ 5 µs CPU beyond the hop, ≥ 25k calls/s/core)"
    );
    let _ = writeln!(
        out,
        "  loopback round trip (rtt p50/p99):        {:.1} / {:.1} µs",
        lats[rtt].p50, lats[rtt].p99
    );
    let _ = writeln!(
        out,
        "  gateway added latency p50 (gw − direct):  {add50:.1} µs  = RTT + {:.1} µs",
        add50 - lats[rtt].p50
    );
    let _ = writeln!(
        out,
        "  gateway added latency p99 (gw − direct):  {add99:.1} µs  = RTT + {:.1} µs",
        add99 - lats[rtt].p99
    );
    let _ = writeln!(
        out,
        "  dumb proxy added p50 / p99:               {:.1} / {:.1} µs",
        lats[proxy].p50 - lats[direct].p50,
        lats[proxy].p99 - lats[direct].p99
    );
    let _ = writeln!(
        out,
        "  gateway process CPU per call:             {gw_cpu:.1} µs (dumb pooled proxy: {px_cpu:.1} µs; beyond the hop: {:.1} µs)",
        gw_cpu - px_cpu
    );
    let _ = writeln!(
        out,
        "  extra upstream CPU per call via gateway:  {up_extra:.1} µs"
    );
    let _ = writeln!(
        out,
        "  calls/s direct / gateway:                 {:.0} / {:.0}",
        agg[direct].calls as f64 / agg[direct].secs.max(1e-9),
        agg[gateway].calls as f64 / agg[gateway].secs.max(1e-9)
    );
    let allocs_per_call = gw_allocs.0 as f64 / gw_allocs.1.max(1) as f64;
    if cfg!(feature = "count-allocs") {
        let _ = writeln!(
            out,
            "  gateway heap allocations per call (c={}):  {allocs_per_call:.1}",
            o.concurrency
        );
    }
    if let Some(real) = targets.iter().position(|t| t.name == "gw-real") {
        let _ = writeln!(
            out,
            "  realistic gateway added p50:              {:.1} µs; CPU per call {:.1} µs; calls/s {:.0}; one disk sync p50 {sync:.1} µs",
            lats[real].p50 - lats[direct].p50,
            agg[real].own_cpu_ns.unwrap_or(0.0) / 1000.0,
            agg[real].calls as f64 / agg[real].secs.max(1e-9)
        );
    }
    if let Some(peer) = targets.iter().position(|t| t.name == "peer") {
        let peer_cpu = agg[peer].own_cpu_ns.unwrap_or(0.0) / 1000.0;
        let _ = writeln!(
            out,
            "  peer added p50 (peer − direct):           {:.1} µs; CPU per call {peer_cpu:.1} µs; calls/s {:.0}",
            lats[peer].p50 - lats[direct].p50,
            agg[peer].calls as f64 / agg[peer].secs.max(1e-9)
        );
        let _ = writeln!(
            out,
            "  gateway / peer: CPU per call {:.2}x, added p50 {:.2}x, calls/s {:.2}x",
            gw_cpu / peer_cpu.max(1e-9),
            add50 / (lats[peer].p50 - lats[direct].p50).max(1e-9),
            (agg[gateway].calls as f64 / agg[gateway].secs.max(1e-9))
                / (agg[peer].calls as f64 / agg[peer].secs.max(1e-9)).max(1e-9)
        );
    }
    print!("{out}");

    let mut j = serde_json::Map::new();
    j.insert("payload_bytes".into(), json!(o.payload));
    j.insert("concurrency".into(), json!(o.concurrency));
    j.insert("gateway_nagle".into(), json!(o.gateway_nagle));
    j.insert(
        "era".into(),
        json!(if o.legacy { "legacy" } else { "2026-07-28" }),
    );
    j.insert("pii".into(), json!(o.pii));
    if o.realistic {
        j.insert("disk_sync_p50_us".into(), json!(sync));
    }
    j.insert("gateway_allocations_per_call".into(), json!(allocs_per_call));
    for (k, t) in targets.iter().enumerate() {
        let l = &lats[k];
        let a = &agg[k];
        j.insert(
            t.name.into(),
            json!({
                "c1": {"n": l.n, "p50_us": l.p50, "p90_us": l.p90, "p99_us": l.p99, "max_us": l.max, "mean_us": l.mean,
                       "own_cpu_us_per_call": c1_cpu[k].map(|c| c / 1000.0)},
                "cN": {"calls": a.calls, "calls_per_s": a.calls as f64 / a.secs.max(1e-9),
                       "own_cpu_us_per_call": a.own_cpu_ns.map(|c| c / 1000.0),
                       "upstream_cpu_us_per_call": a.upstream_cpu_ns / 1000.0},
            }),
        );
    }
    j.insert("added_p50_us".into(), json!(add50));
    j.insert("added_p99_us".into(), json!(add99));
    j.insert("rtt_p50_us".into(), json!(lats[rtt].p50));
    j.insert("gateway_cpu_us_per_call".into(), json!(gw_cpu));
    j.insert(
        "gateway_cpu_beyond_proxy_us_per_call".into(),
        json!(gw_cpu - px_cpu),
    );
    j.insert("elapsed_s".into(), json!(t0.elapsed().as_secs_f64()));
    println!("RESULT {}", serde_json::Value::Object(j));

    drop((up.proc, gw.proc, px.proc, pxn.proc, peer));
    Ok(())
}
