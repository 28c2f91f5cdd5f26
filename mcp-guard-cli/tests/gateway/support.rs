//! Helpers: a gateway process with fixture upstreams, and MCP clients for it.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::ClientHandler;
use rmcp::model::{
    ClientCapabilities, ClientConfig, Implementation, ProgressNotificationParam, ProtocolVersion,
};
use rmcp::service::{
    ClientLifecycleMode, NotificationContext, RoleClient, RunningService, serve_client_with_lifecycle,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use tokio::io::AsyncBufReadExt;

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-guard");
pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const OTHER_TOKEN: &str = "other-token-0123456789abcdef";

/// A `[servers.NAME]` table running the bundled fixture.
pub fn fixture(name: &str, extra: &[&str]) -> String {
    let mut args = vec![format!("\"fixture\""), "\"--name\"".into(), format!("\"{name}\"")];
    for e in extra {
        args.push("\"--extra-tool\"".into());
        args.push(format!("\"{e}\""));
    }
    format!(
        "[servers.{name}]\ntransport = \"stdio\"\ncommand = \"{BIN}\"\nargs = [{}]\n\n",
        args.join(", ")
    )
}

/// `mcp-guard tokens issue` for `principal` with role `eng`: the new token.
pub fn issue_token(config: &std::path::Path, principal: &str, duration: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args([
            "tokens",
            "issue",
            "--principal",
            principal,
            "--role",
            "eng",
            "--duration",
            duration,
            "--config",
        ])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("mcpg_"), "{token}");
    token
}

/// The same table with one process shared by every session (`isolation = "shared"`).
pub fn shared(table: &str) -> String {
    table.replacen(
        "transport = \"stdio\"",
        "transport = \"stdio\"\nisolation = \"shared\"",
        1,
    )
}

/// Token auth for two principals (alice: role eng; bob: role other) and a grant for eng.
pub const AUTH: &str = "[[auth.tokens]]\nprincipal = { id = \"alice\", roles = [\"eng\"] }\ntoken = \"${GW_TEST_TOKEN}\"\n\n\
[[auth.tokens]]\nprincipal = { id = \"bob\", roles = [\"other\"] }\ntoken = \"${GW_TEST_OTHER_TOKEN}\"\n\n\
[[grants]]\nname = \"eng-all\"\nroles = [\"eng\"]\nnames = [\"*\"]\n\n";

pub struct GatewayProc {
    child: Option<tokio::process::Child>,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl GatewayProc {
    /// Starts `mcp-guard serve` on 127.0.0.1 with `config` and waits until it listens.
    pub async fn start(config: &str) -> Self {
        Self::start_with_env(config, &[]).await
    }

    /// Writes the config, lets `prepare` run against it (e.g. `tools approve`), starts.
    pub async fn start_with_lock(config: &str, prepare: impl FnOnce(&std::path::Path)) -> Self {
        Self::start_inner(config, &[], prepare, "127.0.0.1:0", &[]).await
    }

    /// Starts on a chosen address (for configs whose `public_url` names the port).
    pub async fn start_listening(config: &str, listen: &str) -> Self {
        Self::start_inner(config, &[], |_| {}, listen, &[]).await
    }

    /// [`Self::start_listening`] with extra environment variables.
    pub async fn start_listening_with_env(config: &str, listen: &str, env: &[(&str, &str)]) -> Self {
        Self::start_inner(config, env, |_| {}, listen, &[]).await
    }

    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_inner(config, env, |_| {}, "127.0.0.1:0", &[]).await
    }

    /// Starts the gateway through `wrapper` (a program and its arguments, given the
    /// gateway's command line after them), e.g. a shell that sets limits and `exec`s.
    pub async fn start_wrapped(config: &str, wrapper: &[&str]) -> Self {
        Self::start_inner(config, &[], |_| {}, "127.0.0.1:0", wrapper).await
    }

    /// Starts and returns as soon as the gateway listens, while its servers may still
    /// be starting.
    pub async fn start_early(config: &str) -> Self {
        Self::start_inner_with(config, &[], |_| {}, "127.0.0.1:0", false, &[]).await
    }

    async fn start_inner(
        config: &str,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&std::path::Path),
        listen: &str,
        wrapper: &[&str],
    ) -> Self {
        Self::start_inner_with(config, env, prepare, listen, true, wrapper).await
    }

    async fn start_inner_with(
        config: &str,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&std::path::Path),
        listen: &str,
        wait_upstreams: bool,
        wrapper: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        prepare(&path);
        Self::spawn(dir, env, listen, wait_upstreams, wrapper).await
    }

    /// Starts again on the `gateway.toml` (and access store) of `dir`, e.g. one that
    /// [`Self::stop_keeping_dir`] left.
    pub async fn start_in(dir: tempfile::TempDir) -> Self {
        Self::spawn(dir, &[], "127.0.0.1:0", true, &[]).await
    }

    async fn spawn(
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
        listen: &str,
        wait_upstreams: bool,
        wrapper: &[&str],
    ) -> Self {
        let path = dir.path().join("gateway.toml");
        let mut cmd = match wrapper {
            [program, rest @ ..] => {
                let mut c = tokio::process::Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            [] => tokio::process::Command::new(BIN),
        };
        cmd.args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", listen])
            .env("GW_TEST_TOKEN", TOKEN)
            .env("GW_TEST_OTHER_TOKEN", OTHER_TOKEN)
            .env("MCP_GUARD_LOG", "info,rmcp=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix("mcp-guard listening on ") {
                    return rest.trim().to_owned();
                }
            }
            panic!("gateway exited before listening");
        })
        .await
        .expect("gateway did not start in 30 s");
        // The gateway answers at once and its servers join as they start; most tests
        // want them all there, so they wait for the first start of every server.
        if wait_upstreams {
            tokio::time::timeout(Duration::from_mins(1), async {
                while let Some(line) = lines.next_line().await.unwrap() {
                    if line.starts_with("upstreams started") {
                        return;
                    }
                }
                panic!("gateway exited before its upstreams started");
            })
            .await
            .expect("upstreams did not start in 60 s");
        }
        // Keep draining stderr so the gateway never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child: Some(child),
            base,
            dir,
        }
    }

    /// The configuration file.
    pub fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("gateway.toml")
    }

    pub fn url(&self, endpoint: &str) -> String {
        format!("{}/mcp/{endpoint}", self.base)
    }

    /// The gateway's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Kills the gateway with SIGKILL (no shutdown code runs) and waits for it.
    pub async fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
        }
    }

    /// [`Self::stop`], keeping the directory (config, access store) for what follows.
    pub async fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        self.stop().await;
        dir
    }

    /// [`Self::kill9`], keeping the directory.
    pub async fn kill9_keeping_dir(mut self) -> tempfile::TempDir {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        self.kill9().await;
        dir
    }

    /// Stops the gateway with SIGTERM (graceful: children are reaped) and waits.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
        }
    }
}

/// Records what the gateway tells the client.
#[derive(Clone, Default)]
pub struct Recorder {
    pub events: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    pub fn seen(&self, what: &str) -> bool {
        self.events.lock().unwrap().iter().any(|e| e.starts_with(what))
    }

    pub fn count(&self, what: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with(what))
            .count()
    }
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("gateway-tests", "0"),
        )
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.events.lock().unwrap().push("tools_changed".into());
    }

    async fn on_progress(&self, p: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        self.events
            .lock()
            .unwrap()
            .push(format!("progress {}", p.progress));
    }
}

pub type Client = RunningService<RoleClient, Recorder>;

#[derive(Clone, Copy, Debug)]
pub enum Era {
    Legacy,
    Modern,
}

fn lifecycle(era: Era) -> ClientLifecycleMode {
    match era {
        Era::Legacy => ClientLifecycleMode::Initialize,
        Era::Modern => ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    }
}

pub async fn http_client(url: &str, token: &str, era: Era) -> Client {
    mcp_guard_core::upstream::ensure_crypto_provider();
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url);
    cfg.auth_header = Some(token.to_owned());
    let transport = StreamableHttpClientTransport::from_config(cfg);
    let rec = Recorder::default();
    tokio::time::timeout(
        Duration::from_secs(20),
        serve_client_with_lifecycle(rec, transport, lifecycle(era)),
    )
    .await
    .expect("connect timed out")
    .expect("connect failed")
}

/// `mcp-guard serve --stdio` as a child process, with an rmcp client on its pipes.
pub async fn stdio_client(config_path: &std::path::Path, endpoint: &str, era: Era) -> Client {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["serve", "--stdio", "--endpoint", endpoint, "--config"])
        .arg(config_path);
    cmd.env("MCP_GUARD_LOG", "warn");
    let (transport, stderr) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The front door answers at once; these tests want every server there, so they
    // wait for the first start of each (the gateway says so on stderr).
    let mut lines = tokio::io::BufReader::new(stderr.unwrap()).lines();
    tokio::time::timeout(Duration::from_mins(1), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("upstreams started") {
                return;
            }
        }
        panic!("the stdio gateway exited before its upstreams started");
    })
    .await
    .expect("upstreams did not start in 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tokio::time::timeout(
        Duration::from_secs(20),
        serve_client_with_lifecycle(Recorder::default(), transport, lifecycle(era)),
    )
    .await
    .expect("connect timed out")
    .expect("connect failed")
}

pub fn args(v: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap()
}

pub fn text_of(r: &rmcp::model::CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text())
        .map(|t| t.text.as_str())
        .collect()
}

pub async fn names(client: &Client) -> Vec<String> {
    client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect()
}

/// Checks a latency the gateway promises without letting a busy machine fail the test:
/// prints the measured figure and fails only beyond ten times the promise (a call that
/// waited for some timeout, not a slow machine). The benches report the figures.
#[allow(clippy::print_stderr, reason = "the measured figure is the test's report")]
pub fn within_promise(what: &str, took: Duration, promised: Duration) {
    eprintln!("{what}: {took:?} (promised {promised:?})");
    assert!(
        took < promised * 10,
        "{what} took {took:?}, promised {promised:?}"
    );
}

/// Waits until `f` holds, up to `secs` seconds.
pub async fn eventually(secs: u64, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl GatewayProc {
    /// Sends SIGTERM and waits (up to `limit`) for the gateway to exit: its exit status
    /// and how long it took.
    pub async fn terminate(mut self, limit: Duration) -> (Option<std::process::ExitStatus>, Duration) {
        let started = std::time::Instant::now();
        let Some(mut child) = self.child.take() else {
            return (None, Duration::ZERO);
        };
        if let Some(pid) = child.id() {
            signal(pid, "TERM");
        }
        let status = tokio::time::timeout(limit, child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        (status, started.elapsed())
    }
}

/// `kill -SIG pid`.
pub fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// One process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    /// `R`, `S`, `Z`...
    pub state: char,
    pub cmdline: String,
}

/// Every process on the machine (from /proc).
pub fn processes() -> Vec<ProcInfo> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // comm may hold spaces and parentheses: the fields start after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        if f.len() < 4 {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push(ProcInfo {
            pid,
            ppid: f[1].parse().unwrap_or(0),
            pgid: f[2].parse().unwrap_or(0),
            state: f[0].chars().next().unwrap_or('?'),
            cmdline,
        });
    }
    out
}

/// Processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<ProcInfo> {
    processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(marker))
        .collect()
}

/// Direct children of `pid`.
pub fn children_of(pid: u32) -> Vec<ProcInfo> {
    processes().into_iter().filter(|p| p.ppid == pid).collect()
}

/// A port free on 127.0.0.1 right now (for a `public_url` that must name it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
