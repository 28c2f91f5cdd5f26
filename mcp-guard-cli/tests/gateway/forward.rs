//! Audit forwarding against real receivers started here on 127.0.0.1: rsyslog from
//! Debian (imtcp, plain and TLS with a CA made by `openssl` for the test, writing each
//! message to a file with omfile), an OTLP/HTTP receiver built on the official
//! `opentelemetry-proto` classes (`interop/siem/otlp_receiver.py`), and small webhook
//! receivers written here (a signed webhook has no registry implementation to run).
//!
//! The receivers come from `interop/siem/setup.sh`. Without them these tests say SKIP
//! and pass, unless `MCP_GUARD_REQUIRE_SIEM=1` (set by `.ci/run`) makes that a failure.
//! The outage lasts `MCP_GUARD_SIEM_OUTAGE_SECS` seconds (default 5; CI runs 30).

#![allow(
    clippy::print_stderr,
    reason = "the tests report what they measured and what they skipped"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;

use crate::support::*;

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/siem/.venv/bin/python");
const OTLP_RECEIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/siem/otlp_receiver.py");

/// Whether the real receivers are installed; SKIP (or fail, when required) otherwise.
pub(crate) fn receivers_installed(test: &str) -> bool {
    let rsyslog = std::process::Command::new("rsyslogd")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let python = Path::new(PYTHON).exists();
    let openssl = std::process::Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if rsyslog && python && openssl {
        return true;
    }
    let missing = format!(
        "{test}: the SIEM receivers are not installed (rsyslogd: {rsyslog}, OTLP venv: {python}, openssl: {openssl}); run interop/siem/setup.sh"
    );
    assert!(std::env::var_os("MCP_GUARD_REQUIRE_SIEM").is_none(), "{missing}");
    eprintln!("SKIP {missing}");
    false
}

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("MCP_GUARD_SIEM_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    )
}

/// A throwaway CA and a server certificate for 127.0.0.1 / localhost, made by openssl.
struct TestCa {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    fn new(dir: &Path) -> Self {
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=mcp-guard test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("srv.pem"),
            key: dir.join("srv.key"),
        }
    }
}

/// rsyslogd in the foreground with a configuration written here: one imtcp input on
/// 127.0.0.1 (TLS through the gtls driver when given a CA), every message's MSG (the
/// sealed record) written as one line to `out`.
struct Rsyslog {
    child: Option<tokio::process::Child>,
    dir: PathBuf,
    tls: bool,
    port: u16,
    out: PathBuf,
}

impl Rsyslog {
    async fn start(dir: &Path, tls: Option<&TestCa>) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut r = Self {
            child: None,
            dir: dir.to_owned(),
            tls: tls.is_some(),
            port: 0,
            out: dir.join("received.log"),
        };
        let mut global = format!("global(workDirectory=\"{}\" maxMessageSize=\"1m\"", dir.display());
        let mut module = "module(load=\"imtcp\"".to_owned();
        if let Some(ca) = tls {
            let _ = write!(
                global,
                " DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{}\" DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\"",
                ca.ca.display(),
                ca.cert.display(),
                ca.key.display()
            );
            module.push_str(
                " StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\"",
            );
        }
        global.push(')');
        module.push(')');
        r.write_conf(&global, &module, 0);
        r.spawn();
        r.port = r.wait_port().await;
        r
    }

    fn write_conf(&self, global: &str, module: &str, port: u16) {
        let conf = format!(
            "{global}\n{module}\n\
             template(name=\"msgonly\" type=\"string\" string=\"%msg%\\n\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" listenPortFileName=\"{}\" ruleset=\"fwd\")\n\
             ruleset(name=\"fwd\") {{ action(type=\"omfile\" file=\"{}\" template=\"msgonly\") }}\n",
            self.dir.join("port").display(),
            self.out.display()
        );
        std::fs::write(self.dir.join("rsyslog.conf"), conf).unwrap();
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("port"));
        let child = tokio::process::Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("rsyslogd.stderr")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("rsyslogd");
        self.child = Some(child);
    }

    async fn wait_port(&self) -> u16 {
        for _ in 0..300 {
            if let Ok(p) = std::fs::read_to_string(self.dir.join("port"))
                && let Ok(p) = p.trim().parse::<u16>()
                && p > 0
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "rsyslogd did not listen in 15 s ({}): {}",
            self.dir.display(),
            std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
        );
    }

    fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "tls" } else { "tcp" },
            self.port
        )
    }

    /// Stops it (SIGTERM) and waits for it to exit.
    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                signal(pid, "TERM");
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
    }

    /// Starts it again on the same port, appending to the same file.
    async fn restart(&mut self) {
        let conf = std::fs::read_to_string(self.dir.join("rsyslog.conf")).unwrap();
        std::fs::write(
            self.dir.join("rsyslog.conf"),
            conf.replace("port=\"0\"", &format!("port=\"{}\"", self.port)),
        )
        .unwrap();
        self.spawn();
        // rsyslog writes the port file only for a port it chose: wait until it accepts.
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "rsyslogd did not listen again in 15 s: {}",
            std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
        );
    }

    /// Every record the receiver wrote: (seq, hash), in file order.
    fn received(&self) -> Vec<(u64, String)> {
        sealed_lines(&std::fs::read_to_string(&self.out).unwrap_or_default())
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(c) = &self.child
            && let Some(pid) = c.id()
        {
            signal(pid, "KILL");
        }
    }
}

/// (seq, hash) of each sealed record among `text`'s lines; a line that is not one
/// fails the test (the receiver must get the record as stored).
fn sealed_lines(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| seal_of(l.trim()))
        .collect()
}

fn seal_of(line: &str) -> (u64, String) {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let seq = v["seq"].as_u64().unwrap();
    let hash = v["hash"].as_str().unwrap().to_owned();
    // The hash is over the bytes up to `,"hash":`: the receiver can check it.
    let body = &line[..line.rfind(",\"hash\":").unwrap()];
    assert_eq!(
        mcp_guard_core::hex::encode(&sha2::Sha256::digest(body.as_bytes())),
        hash,
        "record {seq} arrived changed"
    );
    (seq, hash)
}

use sha2::Digest as _;

/// The OTLP/HTTP receiver (opentelemetry-proto + http.server).
pub(crate) struct OtlpReceiver {
    child: Option<tokio::process::Child>,
    pub(crate) port: u16,
    out: PathBuf,
}

impl OtlpReceiver {
    pub(crate) async fn start(dir: &Path, port: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = dir.join("otlp.jsonl");
        let mut child = tokio::process::Command::new(PYTHON)
            .arg(OTLP_RECEIVER)
            .arg("--out")
            .arg(&out)
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("OTLP receiver did not start")
            .unwrap()
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .parse()
            .unwrap();
        Self {
            child: Some(child),
            port,
            out,
        }
    }

    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    pub(crate) fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every audit record received as a log record: (seq, hash), in order.
    fn received(&self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for r in self.requests().iter().filter(|r| r["signal"] == "logs") {
            for rl in r["request"]["resourceLogs"].as_array().into_iter().flatten() {
                for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                    for lr in sl["logRecords"].as_array().into_iter().flatten() {
                        let line = lr["body"]["stringValue"].as_str().unwrap();
                        let (seq, hash) = seal_of(line);
                        let attr = |k: &str| {
                            lr["attributes"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .find(|a| a["key"] == k)
                                .map(|a| a["value"].clone())
                        };
                        assert_eq!(attr("mcp_guard.audit.seq").unwrap()["intValue"], seq.to_string());
                        assert_eq!(
                            attr("mcp_guard.audit.hash").unwrap()["stringValue"],
                            hash.as_str()
                        );
                        out.push((seq, hash));
                    }
                }
            }
        }
        out
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(c) = &self.child
            && let Some(pid) = c.id()
        {
            signal(pid, "KILL");
        }
    }
}

/// The gateway's configuration: one fixture server, the SQLite trail, and `forward`
/// (the `[audit.forward.*]` tables).
fn gateway_config(forward: &str) -> String {
    let mut c = String::from("[auth]\nstdio_principal = { id = \"alice\", roles = [\"eng\"] }\n\n");
    c.push_str(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"echo\"]\n\n[audit]\nsinks = [\"sqlite\"]\n\n");
    c.push_str(forward);
    c
}

/// A forwarder table with quick retries (and, for syslog, a short confirmation
/// window), for tests; `extra` adds lines.
fn forward_table(name: &str, kind: &str, url: &str, extra: &str) -> String {
    let confirm = if kind == "syslog" {
        "confirm_ms = 500\n"
    } else {
        ""
    };
    format!(
        "[audit.forward.{name}]\nkind = \"{kind}\"\nurl = \"{url}\"\nretry_initial_ms = 100\nretry_max_secs = 1\n{confirm}{extra}\n"
    )
}

/// The trail's records: (seq, hash), in order.
fn trail(gw: &GatewayProc) -> Vec<(u64, String)> {
    let db = rusqlite::Connection::open_with_flags(
        gw.dir.path().join("mcp-guard-audit.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db
        .prepare("SELECT seq, hash FROM audit_records ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?.cast_unsigned(), r.get::<_, String>(1)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Runs the binary with `args` (without blocking the test's runtime, which serves
/// some receivers): success and stdout + stderr.
async fn cli(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .arg(config)
        .env("GW_TEST_TOKEN", TOKEN)
        .env("GW_TEST_OTHER_TOKEN", OTHER_TOKEN);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn readyz(gw: &GatewayProc) -> serde_json::Value {
    reqwest::get(format!("{}/readyz", gw.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn forwarder(gw: &GatewayProc, name: &str) -> serde_json::Value {
    readyz(gw).await["audit_forward"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no forwarder {name} in /readyz"))
}

/// Waits until every forwarder of the gateway has delivered the whole trail.
async fn caught_up(gw: &GatewayProc, names: &[&str], secs: u64) {
    let ok = eventually(secs, async || {
        let newest = trail(gw).last().map_or(0, |r| r.0);
        let mut all = true;
        for n in names {
            let f = forwarder(gw, n).await;
            all &= f["delivered_seq"].as_u64() == Some(newest) && f["backlog"] == 0;
        }
        all
    })
    .await;
    assert!(ok, "not caught up: {}", readyz(gw).await["audit_forward"]);
}

/// `n` calls through `clients` clients at once; panics on any failed call.
async fn calls(gw: &GatewayProc, n: usize, clients: usize) {
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = gw.url("main");
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let client = http_client(&url, TOKEN, Era::Modern).await;
            let mut i = c;
            while i < n {
                let r = client
                    .call_tool(
                        CallToolRequestParams::new("alpha__echo")
                            .with_arguments(args(&serde_json::json!({"text": format!("call-{i}")}))),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("call {i} failed: {e}"));
                assert_eq!(text_of(&r), format!("call-{i}"));
                done.fetch_add(1, Ordering::Relaxed);
                i += clients;
            }
            client.cancel().await.ok();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), n);
}

/// Asserts that `received` holds every record of `trail` exactly `once` (or at least
/// once), with the same hash; returns how many arrived more than once.
fn compare(what: &str, trail: &[(u64, String)], received: &[(u64, String)], exactly_once: bool) -> usize {
    let mut count: BTreeMap<u64, (usize, &str)> = BTreeMap::new();
    for (seq, hash) in received {
        let e = count.entry(*seq).or_insert((0, hash));
        assert_eq!(
            e.1, hash,
            "{what}: record {seq} arrived with two different hashes"
        );
        e.0 += 1;
    }
    let mut missing = Vec::new();
    let mut duplicates = 0;
    for (seq, hash) in trail {
        match count.get(seq) {
            None => missing.push(*seq),
            Some((n, h)) => {
                assert_eq!(h, hash, "{what}: record {seq} differs from the trail");
                duplicates += n - 1;
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{what}: {} of {} records missing (first: {:?})",
        missing.len(),
        trail.len(),
        &missing[..missing.len().min(10)]
    );
    if exactly_once {
        assert_eq!(duplicates, 0, "{what}: records arrived twice");
    }
    duplicates
}

/// Waits until `f` yields at least `n` records.
async fn received_at_least(n: usize, mut f: impl FnMut() -> Vec<(u64, String)>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while f().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_record_of_a_1000_call_run_reaches_rsyslog_over_tcp_and_tls_and_an_otlp_receiver_exactly_once()
{
    if !receivers_installed("forward::thousand_calls") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let ca = TestCa::new(scratch.path());
    let plain = Rsyslog::start(&scratch.path().join("tcp"), None).await;
    let tls = Rsyslog::start(&scratch.path().join("tls"), Some(&ca)).await;
    let otlp = OtlpReceiver::start(&scratch.path().join("otlp"), 0).await;
    let mut forward = forward_table("plain", "syslog", &plain.url(), "");
    forward.push_str(&forward_table(
        "secure",
        "syslog",
        &tls.url(),
        &format!("ca_file = \"{}\"", ca.ca.display()),
    ));
    forward.push_str(&forward_table(
        "otel",
        "otlp",
        &format!("http://127.0.0.1:{}/v1/logs", otlp.port),
        "",
    ));
    let gw = GatewayProc::start(&gateway_config(&forward)).await;
    let started = Instant::now();
    calls(&gw, 1000, 8).await;
    let took = started.elapsed();
    caught_up(&gw, &["plain", "secure", "otel"], 60).await;
    let trail = trail(&gw);
    assert!(
        trail.len() >= 2000,
        "a start and an outcome record per call: {}",
        trail.len()
    );
    received_at_least(trail.len(), || plain.received()).await;
    received_at_least(trail.len(), || tls.received()).await;
    compare("rsyslog tcp", &trail, &plain.received(), true);
    compare("rsyslog tls", &trail, &tls.received(), true);
    compare("otlp receiver", &trail, &otlp.received(), true);
    eprintln!(
        "forward: 1000 calls in {took:?}; {} records each to rsyslog (tcp, tls) and the OTLP receiver, each exactly once",
        trail.len()
    );
    // The receiver's own file is a chain `mcp-guard audit verify` checks.
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&plain.out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // /metrics shows the forwarders.
    let metrics = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mcp_guard_audit_forward_backlog_records{forwarder=\"plain\"} 0"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn receivers_stopped_mid_run_and_restarted_still_end_with_every_record() {
    if !receivers_installed("forward::outage") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::start(&scratch.path().join("tcp"), None).await;
    let mut otlp = OtlpReceiver::start(&scratch.path().join("otlp"), 0).await;
    let otlp_port = otlp.port;
    let mut forward = forward_table("siem", "syslog", &rsyslog.url(), "");
    forward.push_str(&forward_table(
        "otel",
        "otlp",
        &format!("http://127.0.0.1:{otlp_port}/v1/logs"),
        "",
    ));
    let gw = GatewayProc::start(&gateway_config(&forward)).await;
    calls(&gw, 300, 4).await;
    caught_up(&gw, &["siem", "otel"], 60).await;

    // Both receivers go away; calls go on meanwhile and are served.
    rsyslog.stop().await;
    otlp.stop().await;
    let down = Instant::now();
    let mut during = 0;
    let mut peak_backlog = 0;
    while down.elapsed() < outage() {
        calls(&gw, 50, 2).await;
        during += 50;
        let f = forwarder(&gw, "siem").await;
        peak_backlog = peak_backlog.max(f["backlog"].as_u64().unwrap());
    }
    let siem = forwarder(&gw, "siem").await;
    assert_eq!(siem["state"], "retrying", "{siem}");
    assert!(
        siem["last_error"].as_str().unwrap().contains("127.0.0.1"),
        "{siem}"
    );
    assert!(
        peak_backlog > 0,
        "the backlog is visible while the receiver is down"
    );
    let metrics = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("mcp_guard_audit_forward_backlog_records{forwarder=\"siem\"}"))
        .unwrap();
    assert_ne!(line.rsplit(' ').next(), Some("0"), "{line}");
    let (_, status) = cli(&["status", "--url"], Path::new(&gw.base), &[]).await;
    assert!(
        status.contains("audit forward siem") && status.contains("retrying"),
        "{status}"
    );

    rsyslog.restart().await;
    otlp = OtlpReceiver::start(&scratch.path().join("otlp"), otlp_port).await;
    calls(&gw, 100, 2).await;
    caught_up(&gw, &["siem", "otel"], 60).await;
    let trail = trail(&gw);
    received_at_least(trail.len(), || rsyslog.received()).await;
    let dup_syslog = compare("rsyslog after an outage", &trail, &rsyslog.received(), false);
    let dup_otlp = compare("otlp after an outage", &trail, &otlp.received(), false);
    eprintln!(
        "forward: receivers down {:?} while {during} calls were served (peak backlog {peak_backlog}); afterwards every one of {} records arrived: {dup_syslog} duplicates at rsyslog (it cannot deduplicate; same seq and hash), {dup_otlp} at the OTLP receiver",
        outage(),
        trail.len()
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_certificate_that_does_not_verify_is_refused_and_the_records_wait_for_a_fixed_configuration() {
    if !receivers_installed("forward::bad_certificate") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let ca = TestCa::new(scratch.path());
    let tls = Rsyslog::start(&scratch.path().join("tls"), Some(&ca)).await;
    // No ca_file: the system's trust store does not know the test CA.
    let config = gateway_config(&forward_table("siem", "syslog", &tls.url(), ""));
    let gw = GatewayProc::start(&config).await;
    calls(&gw, 40, 2).await;
    let ok = eventually(20, async || {
        forwarder(&gw, "siem").await["failures"].as_u64() > Some(0)
    })
    .await;
    let f = forwarder(&gw, "siem").await;
    assert!(ok, "{f}");
    let error = f["last_error"].as_str().unwrap();
    assert!(
        error.contains("TLS") && error.to_lowercase().contains("certificate"),
        "{error}"
    );
    assert_eq!(f["delivered_seq"], 0, "{f}");
    assert!(f["backlog"].as_u64().unwrap() >= 20, "{f}");
    assert!(tls.received().is_empty());
    // check --connect names the failure.
    let (ok, text) = cli(&["check", "--connect", "--config"], &gw.config(), &[]).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("audit receiver siem") && text.contains("FAILED") && text.contains("certificate"),
        "{text}"
    );

    // The operator trusts the CA; after a restart every waiting record goes out.
    let dir = gw.stop_keeping_dir().await;
    let fixed = gateway_config(&forward_table(
        "siem",
        "syslog",
        &tls.url(),
        &format!("ca_file = \"{}\"", ca.ca.display()),
    ));
    std::fs::write(dir.path().join("gateway.toml"), fixed).unwrap();
    let (ok, text) = cli(
        &["check", "--connect", "--config"],
        &dir.path().join("gateway.toml"),
        &[],
    )
    .await;
    assert!(ok && text.contains("certificate verified"), "{text}");
    let gw = GatewayProc::start_in(dir).await;
    caught_up(&gw, &["siem"], 60).await;
    let trail = trail(&gw);
    received_at_least(trail.len(), || tls.received()).await;
    compare("rsyslog tls after the fix", &trail, &tls.received(), true);
    gw.stop().await;

    // The named opt-out accepts the unknown CA (and `check` warns about it).
    let tls2 = Rsyslog::start(&scratch.path().join("tls2"), Some(&ca)).await;
    let config = gateway_config(&forward_table(
        "siem",
        "syslog",
        &tls2.url(),
        "dangerously_accept_invalid_certs = true",
    ));
    let gw = GatewayProc::start(&config).await;
    let (_, text) = cli(&["check", "--config"], &gw.config(), &[]).await;
    assert!(text.contains("dangerously_accept_invalid_certs"), "{text}");
    calls(&gw, 10, 1).await;
    caught_up(&gw, &["siem"], 30).await;
    gw.stop().await;
}

/// A webhook receiver: checks each request's signature, and answers as `behave` says
/// for the request's number (0-based): `Ok(delay)` 200 after the delay, `Err(status)`.
struct Webhook {
    port: u16,
    records: Arc<Mutex<Vec<(u64, String)>>>,
    requests: Arc<AtomicUsize>,
    bad_signatures: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    fn start(
        listener: tokio::net::TcpListener,
        key: &'static str,
        behave: impl Fn(usize) -> Result<Duration, u16> + Send + Sync + 'static,
    ) -> Self {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode};
        let records = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(AtomicUsize::new(0));
        let (r, q, b) = (records.clone(), requests.clone(), bad.clone());
        let behave = Arc::new(behave);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (r, q, b, behave) = (r.clone(), q.clone(), b.clone(), behave.clone());
                async move {
                    let n = q.fetch_add(1, Ordering::SeqCst);
                    let expected = mcp_guard_core::audit::forward::WebhookTransport::sign(
                        &secrecy::SecretString::from(key.to_owned()),
                        &body,
                    );
                    if headers.get("x-mcp-guard-signature").and_then(|v| v.to_str().ok()) != Some(&expected) {
                        b.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::UNAUTHORIZED;
                    }
                    match behave(n) {
                        Err(status) => StatusCode::from_u16(status).unwrap(),
                        Ok(delay) => {
                            tokio::time::sleep(delay).await;
                            // Each element is the stored record, byte for byte.
                            let text = std::str::from_utf8(&body).unwrap();
                            let array: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
                            let mut got = r.lock().unwrap();
                            for v in array {
                                got.push((
                                    v["seq"].as_u64().unwrap(),
                                    v["hash"].as_str().unwrap().to_owned(),
                                ));
                            }
                            StatusCode::OK
                        }
                    }
                }
            }),
        );
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            port,
            records,
            requests,
            bad_signatures: bad,
            task,
        }
    }

    fn received(&self) -> Vec<(u64, String)> {
        self.records.lock().unwrap().clone()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const HOOK_KEY: &str = "webhook-test-key-0123456789";

#[tokio::test]
async fn an_unreachable_then_erroring_then_slow_webhook_gets_every_record_signed_and_the_gateway_keeps_serving()
 {
    // A port with nothing behind it yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let forward = forward_table(
        "hook",
        "webhook",
        &format!("http://127.0.0.1:{port}/hook"),
        "hmac_secret = \"${HOOK_KEY}\"\ntimeout_secs = 1",
    );
    let gw = GatewayProc::start_with_env(&gateway_config(&forward), &[("HOOK_KEY", HOOK_KEY)]).await;
    // Unreachable: calls are served; the forwarder retries with the backlog visible.
    calls(&gw, 60, 2).await;
    let f = forwarder(&gw, "hook").await;
    assert_eq!(f["state"], "retrying", "{f}");
    assert!(
        f["last_error"].as_str().unwrap().contains("cannot connect"),
        "{f}"
    );
    assert!(f["backlog"].as_u64().unwrap() >= 30, "{f}");
    let (_, status) = cli(&["status", "--url"], Path::new(&gw.base), &[]).await;
    assert!(
        status.contains("audit forward hook") && status.contains("backlog"),
        "{status}"
    );

    // The receiver comes up: three errors, then two answers slower than the timeout
    // (the gateway gives up on them and sends again), then prompt answers.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let hook = Webhook::start(listener, HOOK_KEY, |n| match n {
        0..=2 => Err(503),
        3 | 4 => Ok(Duration::from_secs(3)),
        _ => Ok(Duration::ZERO),
    });
    calls(&gw, 60, 2).await;
    caught_up(&gw, &["hook"], 60).await;
    let trail = trail(&gw);
    tokio::time::sleep(Duration::from_secs(3)).await; // let the slow answers land
    let duplicates = compare("webhook", &trail, &hook.received(), false);
    assert_eq!(hook.bad_signatures.load(Ordering::SeqCst), 0);
    assert!(hook.requests.load(Ordering::SeqCst) >= 6);
    let f = forwarder(&gw, "hook").await;
    eprintln!(
        "forward: webhook unreachable, then 3 errors and 2 slow answers: {} records delivered, {duplicates} duplicates the receiver can drop by seq, {} failed sends",
        trail.len(),
        f["failures"]
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_webhook_refuses_a_forged_signature_and_secrets_stay_out_of_the_config() {
    // The key must be a ${VAR}: an inline secret is refused at load.
    let inline = gateway_config(&forward_table(
        "hook",
        "webhook",
        "http://127.0.0.1:9/hook",
        "hmac_secret = \"inline-secret-value\"",
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.toml"), inline).unwrap();
    let (ok, text) = cli(&["check", "--config"], &dir.path().join("gateway.toml"), &[]).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("audit.forward.hook.hmac_secret") && !text.contains("inline-secret-value"),
        "{text}"
    );

    // A receiver with another key refuses every request (401): nothing is counted as
    // delivered, and the records wait.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = Webhook::start(listener, "a-different-key-0123456789", |_| Ok(Duration::ZERO));
    let forward = forward_table(
        "hook",
        "webhook",
        &format!("http://127.0.0.1:{}/hook", hook.port),
        "hmac_secret = \"${HOOK_KEY}\"",
    );
    let gw = GatewayProc::start_with_env(&gateway_config(&forward), &[("HOOK_KEY", HOOK_KEY)]).await;
    calls(&gw, 10, 1).await;
    let ok = eventually(20, async || {
        forwarder(&gw, "hook").await["failures"].as_u64() >= Some(2)
    })
    .await;
    let f = forwarder(&gw, "hook").await;
    assert!(ok, "{f}");
    assert!(f["last_error"].as_str().unwrap().contains("HTTP 401"), "{f}");
    assert_eq!(f["delivered_seq"], 0);
    assert!(hook.received().is_empty());
    assert!(hook.bad_signatures.load(Ordering::SeqCst) >= 2);
    gw.stop().await;
}

#[tokio::test]
async fn splunk_hec_gets_concatenated_events_with_the_token_and_check_connect_reads_its_answer() {
    // No Splunk can be installed from the package registries: a receiver that answers
    // as HEC documents (200 {"text":"Success","code":0}; 400 {"text":"No data","code":5};
    // 403 {"text":"Invalid token","code":4}).
    use axum::http::{HeaderMap, StatusCode};
    let events = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let e = events.clone();
    let app = axum::Router::new().route(
        "/services/collector/event",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let e = e.clone();
            async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok())
                    != Some("Splunk hec-token-0123456789")
                {
                    return (StatusCode::FORBIDDEN, r#"{"text":"Invalid token","code":4}"#);
                }
                if body.trim().is_empty() {
                    return (StatusCode::BAD_REQUEST, r#"{"text":"No data","code":5}"#);
                }
                // Concatenated JSON objects, one per event.
                let mut got = e.lock().unwrap();
                for v in serde_json::Deserializer::from_str(&body).into_iter::<serde_json::Value>() {
                    got.push(v.unwrap());
                }
                (StatusCode::OK, r#"{"text":"Success","code":0}"#)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let forward = forward_table(
        "splunk",
        "splunk_hec",
        &format!("http://127.0.0.1:{port}/services/collector/event"),
        "token = \"${HEC_TOKEN}\"\nindex = \"mcp\"",
    );
    let env = [("HEC_TOKEN", "hec-token-0123456789")];
    let gw = GatewayProc::start_with_env(&gateway_config(&forward), &env).await;
    calls(&gw, 20, 2).await;
    caught_up(&gw, &["splunk"], 30).await;
    let trail = trail(&gw);
    let got: Vec<(u64, String)> = events
        .lock()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v["index"], "mcp");
            assert_eq!(v["sourcetype"], "mcp-guard:audit");
            assert!(v["time"].as_f64().unwrap() > 1e9);
            (
                v["event"]["seq"].as_u64().unwrap(),
                v["event"]["hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    compare("splunk hec", &trail, &got, true);
    let config = gw.config();
    let check = async |token: &str| {
        cli(
            &["check", "--connect", "--config"],
            &config,
            &[("HEC_TOKEN", token)],
        )
        .await
    };
    let (ok, text) = check("hec-token-0123456789").await;
    assert!(ok && text.contains("accepted the token"), "{text}");
    let (ok, text) = check("wrong-token-0123456789").await;
    assert!(
        !ok && text.contains("HTTP 403") && !text.contains("wrong-token"),
        "{text}"
    );
    gw.stop().await;
    server.abort();
}

#[tokio::test]
async fn two_gateways_on_one_trail_forward_each_record_once() {
    // `serve` and `serve --stdio` on one configuration share the trail: one of them
    // forwards (it holds the cursor), the other stands by, and the stdio gateway's
    // records still go out.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = Webhook::start(listener, HOOK_KEY, |_| Ok(Duration::ZERO));
    let forward = forward_table(
        "hook",
        "webhook",
        &format!("http://127.0.0.1:{}/hook", hook.port),
        "hmac_secret = \"${HOOK_KEY}\"",
    );
    let gw = GatewayProc::start_with_env(&gateway_config(&forward), &[("HOOK_KEY", HOOK_KEY)]).await;
    calls(&gw, 10, 1).await;
    caught_up(&gw, &["hook"], 30).await;
    let stdio = {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["serve", "--stdio", "--endpoint", "main", "--config"])
            .arg(gw.config())
            .env("GW_TEST_TOKEN", TOKEN)
            .env("GW_TEST_OTHER_TOKEN", OTHER_TOKEN)
            .env("HOOK_KEY", HOOK_KEY)
            .env("MCP_GUARD_LOG", "warn");
        let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rmcp::ServiceExt::serve((), transport).await.unwrap()
    };
    for i in 0..5 {
        stdio
            .call_tool(
                CallToolRequestParams::new("alpha__echo")
                    .with_arguments(args(&serde_json::json!({"text": format!("stdio-{i}")}))),
            )
            .await
            .unwrap();
    }
    stdio.cancel().await.ok();
    caught_up(&gw, &["hook"], 30).await;
    let trail = trail(&gw);
    compare("two writers, one forwarder", &trail, &hook.received(), true);
    // The stdio gateway's calls are in the trail, so they were delivered too.
    let db = gw.dir.path().join("mcp-guard-audit.db");
    let stdio_records: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM audit_records WHERE record LIKE '%stdio-4%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stdio_records >= 1);
    gw.stop().await;
}
