//! Soak and idle-session memory of the real `mcp-guard` binary.
//!
//! ```text
//! cargo build --release -p mcp-guard-cli -p mcp-guard-benches --bin mcp-guard --bin soak
//! target/release/soak [--calls 10000] [--warmup 1000] [--concurrency 8]
//!     [--sessions 10000] [--settle-secs 65] [--time-limit 600] [--gateway-bin PATH]
//! ```
//!
//! 1. **Soak.** Starts `mcp-guard serve` (127.0.0.1, ephemeral port, token auth, the
//!    default SQLite audit trail) with three stdio upstreams (`mcp-guard fixture`), sends
//!    `--warmup` calls, samples the gateway's resident memory (`VmRSS`), open file
//!    descriptors and child processes, then sends `--calls` stateless 2026-07-28
//!    `tools/call echo` requests spread over the three servers, sampling every 1000
//!    calls. Reports growth after warm-up (the issue's bar: RSS < 10 %, fds and children
//!    flat).
//! 2. **Idle sessions.** Opens `--sessions` legacy sessions (`initialize` +
//!    `notifications/initialized`, `Mcp-Session-Id` kept, never deleted) and reports the
//!    RSS delta per session, first against the gateway (whose `LeanSessionManager`
//!    parks idle sessions), then against a bare rmcp `StreamableHttpService` with rmcp's
//!    `LocalSessionManager` and a trivial handler in a child of this binary (the cost
//!    of an idle session in rmcp's own manager, for comparison). Measured right after opening and again
//!    after `--settle-secs` idle (rmcp keeps each finished request stream's replay cache
//!    for 60 s). Upstream processes are not involved.
//!
//! Everything is bounded: a hard time limit, loopback only, children die with the
//! parent. Prints a table and one `RESULT {json}` line.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command-line tool")]
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    reason = "statistics"
)]

#[path = "../stack_support.rs"]
mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const TOKEN: &str = "soak-test-token-0123456789abcdef";

#[derive(Debug, Clone)]
struct Opts {
    calls: usize,
    warmup: usize,
    concurrency: usize,
    sessions: usize,
    settle: Duration,
    time_limit: Duration,
    gateway_bin: PathBuf,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut o = Opts {
        calls: 10_000,
        warmup: 1000,
        concurrency: 8,
        sessions: 10_000,
        settle: Duration::from_secs(65),
        time_limit: Duration::from_mins(10),
        gateway_bin: exe.with_file_name("mcp-guard"),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || it.next().ok_or_else(|| format!("{a} needs a value"));
        let num = |s: &String| s.parse::<usize>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--calls" => o.calls = num(v()?)?,
            "--warmup" => o.warmup = num(v()?)?,
            "--concurrency" => o.concurrency = num(v()?)?.max(1),
            "--sessions" => o.sessions = num(v()?)?,
            "--settle-secs" => o.settle = Duration::from_secs(num(v()?)? as u64),
            "--time-limit" => o.time_limit = Duration::from_secs(num(v()?)? as u64),
            "--gateway-bin" => o.gateway_bin = PathBuf::from(v()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child-rmcp") {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        if let Err(e) = rt.block_on(bare_rmcp()) {
            eprintln!("child: {e}");
            std::process::exit(1);
        }
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
    match rt.block_on(async { tokio::time::timeout(limit, run(opts)).await }) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("soak: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("soak: hard time limit reached");
            std::process::exit(1);
        }
    }
}

/// A bare rmcp streamable-HTTP server with legacy sessions (the baseline).
async fn bare_rmcp() -> Result<(), BoxError> {
    tokio::spawn(async {
        let mut buf = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut buf).await;
        std::process::exit(0);
    });
    let service = StreamableHttpService::new(
        || Ok(support::Echo),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp/main", service);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    println!("mcp-guard listening on http://{}", listener.local_addr()?);
    let listener = listener.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    calls: usize,
    rss_kib: u64,
    fds: usize,
    children: usize,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Direct children of `pid` (any state, zombies included).
fn children(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .count()
}

fn sample(pid: u32, calls: usize) -> Sample {
    Sample {
        calls,
        rss_kib: rss_kib(pid),
        fds: fds(pid),
        children: children(pid),
    }
}

struct Proc {
    child: tokio::process::Child,
    pid: u32,
    base: String,
}

impl Proc {
    /// SIGTERM, then waits (15 s at most): whether it exited cleanly.
    async fn stop(mut self) -> bool {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        matches!(
            tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await,
            Ok(Ok(s)) if s.success()
        )
    }
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id().to_string();
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy() != me.as_str())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .count()
}

async fn start(mut cmd: tokio::process::Command) -> Result<Proc, BoxError> {
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pid = child.id().ok_or("exited")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
    for lines in [
        Box::pin(tokio::io::BufReader::new(stderr)) as std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
        Box::pin(tokio::io::BufReader::new(stdout)),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(lines).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("mcp-guard listening on ") {
                    let _ = tx.send(rest.trim().to_owned()).await;
                }
            }
        });
    }
    let base = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .map_err(|_| "server did not start")?
        .ok_or("server exited")?;
    Ok(Proc { child, pid, base })
}

fn config(dir: &Path, gateway_bin: &Path) -> String {
    let mut c = format!(
        "[[auth.tokens]]\nprincipal = {{ id = \"soak\" }}\ntoken = \"${{SOAK_TOKEN}}\"\n\n[[grants]]\nprincipals = [\"soak\"]\nnames = [\"*\"]\n\n[audit]\nsqlite_path = \"{}\"\n\n",
        dir.join("audit.db").display()
    );
    for s in ["s1", "s2", "s3"] {
        let _ = write!(
            c,
            "[servers.{s}]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"fixture\", \"--name\", \"{s}\"]\n\n",
            gateway_bin.display()
        );
    }
    for s in ["s1", "s2", "s3"] {
        let _ = write!(c, "[endpoints.main.servers.{s}]\ntools = [\"*\"]\n");
    }
    c
}

fn call_body(server: &str, i: usize) -> String {
    json!({
        "jsonrpc": "2.0", "id": i, "method": "tools/call",
        "params": {
            "name": format!("{server}__echo"),
            "arguments": {"text": format!("soak call {i} to {server}")},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "mcp-guard-soak", "version": "0.1.0"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    })
    .to_string()
}

async fn one_call(http: &reqwest::Client, url: &str, i: usize) -> Result<(), BoxError> {
    let server = ["s1", "s2", "s3"][i % 3];
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", format!("{server}__echo"))
        .body(call_body(server, i))
        .send()
        .await?;
    let status = r.status();
    let body = r.text().await?;
    if !status.is_success() || !body.contains(&format!("soak call {i} to {server}")) {
        return Err(format!("call {i}: {status}: {}", &body[..body.len().min(300)]).into());
    }
    Ok(())
}

/// Calls `from..to`, `concurrency` at a time.
async fn calls(
    http: &reqwest::Client,
    url: &str,
    from: usize,
    to: usize,
    concurrency: usize,
) -> Result<(), BoxError> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(from));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, url, next) = (http.clone(), url.to_owned(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= to {
                    return Ok::<(), BoxError>(());
                }
                one_call(&http, &url, i).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// Opens `n` legacy sessions; returns how many answered with a session id.
async fn open_sessions(http: &reqwest::Client, url: &str, n: usize, auth: bool) -> Result<usize, BoxError> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (http, url, next, opened) = (http.clone(), url.to_owned(), next.clone(), opened.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), BoxError>(());
                }
                let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "mcp-guard-soak", "version": "0.1.0"}}});
                let mut req = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream");
                if auth {
                    req = req.header("authorization", format!("Bearer {TOKEN}"));
                }
                let r = req.body(init.to_string()).send().await?;
                let Some(id) = r
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                else {
                    return Err(format!("initialize {i}: {} without a session id", r.status()).into());
                };
                let _ = r.bytes().await?;
                let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
                let mut req = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-session-id", &id)
                    .header("mcp-protocol-version", "2025-11-25");
                if auth {
                    req = req.header("authorization", format!("Bearer {TOKEN}"));
                }
                let r = req.body(note.to_string()).send().await?;
                let _ = r.bytes().await?;
                opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(opened.load(std::sync::atomic::Ordering::Relaxed))
}

/// RSS once it stops moving (after the allocator settles), KiB.
async fn settled_rss(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = rss_kib(pid);
        if now.abs_diff(last) < 64 {
            return now;
        }
        last = now;
    }
    last
}

struct SessionCost {
    opened: usize,
    before_kib: u64,
    after_kib: u64,
    settled_kib: u64,
}

impl SessionCost {
    fn per_session_bytes(&self) -> f64 {
        (self.after_kib.saturating_sub(self.before_kib) * 1024) as f64 / self.opened.max(1) as f64
    }

    fn settled_per_session_bytes(&self) -> f64 {
        (self.settled_kib.saturating_sub(self.before_kib) * 1024) as f64 / self.opened.max(1) as f64
    }
}

async fn session_cost(
    http: &reqwest::Client,
    p: &Proc,
    n: usize,
    auth: bool,
    settle: Duration,
) -> Result<SessionCost, BoxError> {
    let url = format!("{}/mcp/main", p.base);
    // One session first, so lazily built state is not billed to the 10k.
    open_sessions(http, &url, 1, auth).await?;
    let before_kib = settled_rss(p.pid).await;
    let opened = open_sessions(http, &url, n, auth).await?;
    let after_kib = settled_rss(p.pid).await;
    tokio::time::sleep(settle).await;
    let settled_kib = settled_rss(p.pid).await;
    Ok(SessionCost {
        opened,
        before_kib,
        after_kib,
        settled_kib,
    })
}

#[expect(clippy::too_many_lines, reason = "one linear script")]
async fn run(o: Opts) -> Result<(), BoxError> {
    mcp_guard_core::upstream::ensure_crypto_provider();
    let dir = tempfile::tempdir()?;
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(&cfg_path, config(dir.path(), &o.gateway_bin))?;
    let mut cmd = tokio::process::Command::new(&o.gateway_bin);
    cmd.args(["serve", "--config"])
        .arg(&cfg_path)
        .args(["--listen", "127.0.0.1:0"])
        .env("SOAK_TOKEN", TOKEN)
        .env("MCP_GUARD_LOG", "warn");
    let gw = start(cmd).await?;
    let url = format!("{}/mcp/main", gw.base);
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;

    let t0 = Instant::now();
    calls(&http, &url, 0, o.warmup, o.concurrency).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = vec![sample(gw.pid, o.warmup)];
    let total = o.warmup + o.calls;
    let mut done = o.warmup;
    while done < total {
        let to = (done + 1000).min(total);
        calls(&http, &url, done, to, o.concurrency).await?;
        done = to;
        samples.push(sample(gw.pid, done));
    }
    let soak_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    samples.push(sample(gw.pid, done));
    let base = samples[0];
    let last = *samples.last().unwrap_or(&base);
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let growth = (last.rss_kib as f64 - base.rss_kib as f64) / base.rss_kib.max(1) as f64 * 100.0;
    println!(
        "soak: {} calls after {} warm-up, concurrency {}, {soak_secs:.1} s",
        o.calls, o.warmup, o.concurrency
    );
    println!("{:>8} {:>10} {:>6} {:>9}", "calls", "RSS KiB", "fds", "children");
    for s in &samples {
        println!("{:>8} {:>10} {:>6} {:>9}", s.calls, s.rss_kib, s.fds, s.children);
    }
    println!(
        "RSS growth after warm-up: {growth:+.1} % (max {max_rss} KiB); fds {} -> {}; children {} -> {}",
        base.fds, last.fds, base.children, last.children
    );

    let gw_cost = session_cost(&http, &gw, o.sessions, true, o.settle).await?;
    let metrics = http
        .get(format!("{}/metrics", gw.base))
        .send()
        .await?
        .text()
        .await?;
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("mcp_guard_sessions_active{endpoint=\"main\"}"))
        .unwrap_or_default()
        .to_owned();
    println!(
        "gateway: {} idle sessions, RSS {} -> {} KiB: {:.0} bytes per session; after {:?} idle {} KiB: {:.0} bytes per session ({counted})",
        gw_cost.opened,
        gw_cost.before_kib,
        gw_cost.after_kib,
        gw_cost.per_session_bytes(),
        o.settle,
        gw_cost.settled_kib,
        gw_cost.settled_per_session_bytes()
    );
    let gw_pid = gw.pid;
    let clean = gw.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = processes_with(&o.gateway_bin.display().to_string());
    println!("gateway {gw_pid} stopped with SIGTERM: clean exit {clean}; mcp-guard processes left: {left}");

    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("child-rmcp");
    let rmcp_only = start(cmd).await?;
    let bare_cost = session_cost(&http, &rmcp_only, o.sessions, false, o.settle).await?;
    println!(
        "bare rmcp (LocalSessionManager, trivial handler): {} idle sessions, RSS {} -> {} KiB: {:.0} bytes per session; after {:?} idle {} KiB: {:.0} bytes per session",
        bare_cost.opened,
        bare_cost.before_kib,
        bare_cost.after_kib,
        bare_cost.per_session_bytes(),
        o.settle,
        bare_cost.settled_kib,
        bare_cost.settled_per_session_bytes()
    );
    drop(rmcp_only);
    println!(
        "RESULT {}",
        json!({
            "shutdown": {"clean": clean, "processes_left": left},
            "soak": {
                "calls": o.calls, "warmup": o.warmup, "concurrency": o.concurrency, "secs": soak_secs,
                "rss_kib_after_warmup": base.rss_kib, "rss_kib_end": last.rss_kib, "rss_kib_max": max_rss,
                "rss_growth_pct": growth,
                "fds": [base.fds, last.fds], "children": [base.children, last.children],
            },
            "idle_sessions": {
                "gateway": {"sessions": gw_cost.opened, "rss_kib": [gw_cost.before_kib, gw_cost.after_kib, gw_cost.settled_kib], "bytes_per_session": gw_cost.per_session_bytes(), "bytes_per_session_settled": gw_cost.settled_per_session_bytes()},
                "bare_rmcp": {"sessions": bare_cost.opened, "rss_kib": [bare_cost.before_kib, bare_cost.after_kib, bare_cost.settled_kib], "bytes_per_session": bare_cost.per_session_bytes(), "bytes_per_session_settled": bare_cost.settled_per_session_bytes()},
            }
        })
    );
    Ok(())
}
