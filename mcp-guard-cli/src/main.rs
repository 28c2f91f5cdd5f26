//! `mcp-guard`: a federating MCP security gateway run from a config file.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program talks on stdout/stderr"
)]

/// `println!` for a command's output: when the reader has gone (`mcp-guard sessions
/// list | head -1`) the command ends quietly with status 0, as grep and ripgrep do,
/// instead of panicking on the broken pipe.
macro_rules! outln {
    () => {
        $crate::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for a command's output, like [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))
    };
}

mod access;
mod audit;
mod connect;
mod credentials;
mod demo;
mod explain;
mod fixture;
mod import;
mod oauth_client;
mod pins;
mod reload;
mod replay;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use mcp_guard_core::Redactor;
use mcp_guard_tower::server::{ServerBuilder, load_config};
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// A security gateway for the Model Context Protocol.
#[derive(Parser, Debug)]
#[command(name = "mcp-guard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum ToolsAction {
    /// Pins the current definitions of the tools in scope into the lock file.
    Approve {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// Only the servers of this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only this server.
        #[arg(long)]
        server: Option<String>,
        /// Only this tool (upstream name).
        #[arg(long)]
        tool: Option<String>,
    },
    /// Shows what waits for approval (new, changed, removed, hostile); exit 1 if anything does.
    Diff {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// Only the servers of this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only this server.
        #[arg(long)]
        server: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the gateway: HTTP at /mcp/{endpoint}, or one endpoint over stdio.
    Serve {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// Serve one endpoint on stdin/stdout instead of HTTP.
        #[arg(long, requires = "endpoint")]
        stdio: bool,
        /// The endpoint to serve over stdio.
        #[arg(long)]
        endpoint: Option<String>,
        /// Listen address (overrides gateway.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Asks the running gateway to apply its configuration file again (it also does on
    /// SIGHUP and when the file changes); the file is checked first.
    Reload {
        /// The configuration file the gateway runs.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
    },
    /// Validates a configuration file; with --connect also connects each server; with
    /// --against-audit replays recorded calls under it and prints the decisions that
    /// would change (exit 1 when any does, 2 when the trail cannot be read).
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Connect to every enabled server and list its tools.
        #[arg(long, conflicts_with = "against_audit")]
        connect: bool,
        /// Replay the policy decisions of the recorded calls under this configuration
        /// and print those whose outcome would change (allowed -> refused, refused ->
        /// allowed), with the deciding rule before and after.
        #[arg(long)]
        against_audit: bool,
        /// With --against-audit: only calls started at or after this: RFC 3339 UTC, a
        /// date, or an age (15m, 2h, 7d).
        #[arg(long, requires = "against_audit", value_parser = audit::parse_when)]
        since: Option<std::time::SystemTime>,
        /// With --against-audit: the trail (a SQLite database, a JSON Lines file or
        /// directory); default: the one the configuration's [audit] names.
        #[arg(long, requires = "against_audit")]
        audit: Option<PathBuf>,
        /// With --against-audit: print JSON.
        #[arg(long, requires = "against_audit")]
        json: bool,
    },
    /// Shows a running gateway's per-server status (from its /readyz).
    Status {
        /// The gateway's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8787")]
        url: String,
        /// Also show this principal's personal credentials per server (connected,
        /// missing, needs re-authentication); needs --config.
        #[arg(long, requires = "config")]
        principal: Option<String>,
        /// The configuration file (locates the credential store).
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Prints an endpoint's catalogue with what is enabled; approves or diffs pinned
    /// tool definitions.
    #[command(args_conflicts_with_subcommands = true)]
    Tools {
        #[command(subcommand)]
        action: Option<ToolsAction>,
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: Option<PathBuf>,
        /// The endpoint.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Issues, lists and revokes gateway API tokens.
    Tokens {
        #[command(subcommand)]
        command: access::TokensCommand,
    },
    /// Stores, lists and removes upstream credentials (encrypted at rest); rotates the key.
    Credentials {
        #[command(subcommand)]
        command: credentials::CredentialsCommand,
    },
    /// Users of the built-in authorization server: one-time sign-in links.
    Users {
        #[command(subcommand)]
        command: connect::UsersCommand,
    },
    /// Prints the client-side configuration (Claude Desktop, Claude Code, Cursor,
    /// VS Code, JSON) for an endpoint.
    ConnectConfig(connect::ConnectConfigArgs),
    /// Lists and revokes gateway sessions.
    Sessions {
        #[command(subcommand)]
        command: access::SessionsCommand,
    },
    /// Checks and searches the audit trail.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Prints what the grants decide for a principal, endpoint and tool, and the rule
    /// that decided (exit 0 allow, 1 deny, 2 error); contacts no upstream.
    Explain(explain::ExplainArgs),
    /// Converts another program's MCP server list into an mcp-guard configuration.
    Import {
        #[command(subcommand)]
        source: import::Source,
    },
    /// Runs a complete demo gateway with bundled upstreams and makes one call.
    Demo {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8787)]
        port: u16,
        /// Exit after the demonstration call instead of serving.
        #[arg(long)]
        once: bool,
    },
    /// The gateway's upstream OAuth client, headless, against one OAuth-protected MCP
    /// server (for the conformance suite's client authorization scenarios).
    #[command(hide = true)]
    OauthClient {
        /// The server's MCP URL.
        url: String,
    },
    /// A bundled MCP server on stdio (the demo's upstreams and the test fixture).
    #[command(hide = true)]
    Fixture {
        /// Its name.
        #[arg(long, default_value = "fixture")]
        name: String,
        /// Extra echo tools.
        #[arg(long = "extra-tool")]
        extra_tools: Vec<String>,
        /// Speak only the revisions before 2026-07-28 (answer `server/discover` with -32601).
        #[arg(long)]
        legacy_only: bool,
        /// A file naming the definition variant to offer (read at every listing).
        #[arg(long)]
        variant_file: Option<PathBuf>,
        /// After this many tool calls, each further call first writes a line that is
        /// not JSON-RPC to stdout (protocol garbage), then answers after 2 s.
        #[arg(long)]
        garbage_after: Option<u64>,
        /// Also offer `ask_name` and `ask_model`, which ask the client (elicitation,
        /// sampling) with requests of their own, the legacy way.
        #[arg(long)]
        questions: bool,
        /// Serve streamable HTTP at `http://ADDR/mcp` (a loopback address) instead of stdio.
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
    },
}

fn init_tracing(stdio: bool) {
    // rmcp logs payloads at INFO/DEBUG; keep it at WARN unless asked otherwise.
    let filter =
        EnvFilter::try_from_env("MCP_GUARD_LOG").unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ScrubbedStderr);
    if stdio {
        builder.with_ansi(false).init();
    } else {
        builder.init();
    }
}

/// Log output: each event is formatted into a buffer, cleaned of every credential the
/// gateway has handed out and of secret patterns, then written to stderr in one piece.
/// rmcp traces whole upstream messages at `trace`, so without this a credential an
/// upstream echoes would reach the log before the response redactor sees it.
struct ScrubbedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedEvent;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedEvent(Vec::with_capacity(256))
    }
}

struct ScrubbedEvent(Vec<u8>);

impl std::io::Write for ScrubbedEvent {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedEvent {
    fn drop(&mut self) {
        static LOG_REDACTOR: std::sync::OnceLock<Arc<dyn Redactor>> = std::sync::OnceLock::new();
        let redactor = LOG_REDACTOR.get_or_init(|| {
            let mut secrets_only = mcp_guard_core::redact::RedactionConfig::default();
            secrets_only.detect.clear();
            Arc::new(secrets_only.build(Some(known_secrets())))
        });
        let text = String::from_utf8_lossy(&self.0);
        let clean = redactor.redact_str(&text);
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), clean.as_bytes());
    }
}

/// The redactor audit records pass through.
/// Every secret the gateway holds (upstream credentials as they are handed out, client
/// tokens): scrubbed from anything an upstream sends back, from logs and from audit.
pub(crate) fn known_secrets() -> Arc<mcp_guard_core::redact::KnownSecrets> {
    static KNOWN: std::sync::OnceLock<Arc<mcp_guard_core::redact::KnownSecrets>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(Arc::default).clone()
}

/// Writes a command's output to stdout: a closed pipe ends the process quietly
/// (status 0), any other write error with a message (status 1).
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

pub(crate) async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        () = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}

/// `serve`: the gateway the configuration describes, built by the library
/// ([`mcp_guard_tower::server`]); this function only adds the listener, the signals and
/// what is printed on stderr.
async fn serve(
    config: PathBuf,
    stdio: bool,
    endpoint: Option<String>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let loaded = load_config(&config)?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let addr: SocketAddr = match listen {
        Some(a) => a,
        None => loaded.config.gateway.listen.parse()?,
    };
    let pid_file = reload::pid_path(&mcp_guard_tower::server::access_store_path(
        &loaded.config,
        loaded.base_dir(),
    ));
    let digest = loaded.digest.clone();
    let builder = ServerBuilder::from_loaded(loaded).known_secrets(known_secrets());
    let signal = CancellationToken::new();
    tokio::spawn(shutdown_signal(signal.clone()));
    let on_started = |r: &mcp_guard_tower::server::StartupReport| eprintln!("{r}");
    if stdio {
        let gateway = builder.build_stdio(endpoint.as_deref()).await?;
        reload::watch(gateway.reloader(), config, digest, signal.clone());
        return Ok(gateway.serve(signal.cancelled_owned(), on_started).await?);
    }
    let gateway = builder.build().await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let _pid = reload::PidFile::write(pid_file)?;
    reload::watch(gateway.reloader(), config, digest, signal.clone());
    eprintln!("mcp-guard listening on http://{local}");
    for name in gateway.gateway().endpoint_names() {
        eprintln!("  endpoint {name}: http://{local}/mcp/{name}");
    }
    Ok(gateway
        .serve(listener, signal.cancelled_owned(), on_started)
        .await?)
}

fn check(config: &std::path::Path) -> anyhow::Result<()> {
    let loaded = load_config(config)?;
    for w in &loaded.warnings {
        outln!("{w}");
    }
    let c = &loaded.config;
    outln!(
        "{}: ok ({} servers, {} endpoints, {} grants)",
        config.display(),
        c.servers.len(),
        c.endpoints.len(),
        c.grants.len()
    );
    Ok(())
}

/// Connects every enabled server once and lists its tools; fails if any cannot connect.
async fn check_connect(config: &std::path::Path) -> anyhow::Result<()> {
    let loaded = load_config(config)?;
    let labels = loaded.config.labels.clone();
    let upstreams = ServerBuilder::from_loaded(loaded)
        .known_secrets(known_secrets())
        .upstreams()?;
    let mut failed = 0;
    let mut served = Vec::new();
    for (upstream, enabled) in upstreams {
        if !enabled {
            outln!("server {}: disabled", upstream.id());
            served.push((upstream.id().to_owned(), None));
            continue;
        }
        match upstream.catalog().await {
            Ok(cat) => {
                let names: Vec<&str> = cat.tools.iter().map(|t| t.name.as_ref()).collect();
                served.push((
                    upstream.id().to_owned(),
                    Some(names.iter().map(|n| (*n).to_owned()).collect()),
                ));
                let version = cat
                    .server_info
                    .as_ref()
                    .map(|i| i.protocol_version.as_str().to_owned())
                    .unwrap_or_default();
                outln!(
                    "server {}: connected ({version}), {} tools: {}",
                    upstream.id(),
                    names.len(),
                    names.join(", ")
                );
            }
            Err(e) => {
                failed += 1;
                served.push((upstream.id().to_owned(), None));
                outln!(
                    "server {}: FAILED: {}",
                    upstream.id(),
                    mcp_guard_core::upstream::error_chain(&e)
                );
            }
        }
        upstream.shutdown().await;
    }
    match mcp_guard_core::config::check_label_tools(&labels, &served) {
        Ok(warnings) => {
            for w in warnings {
                outln!("warning: {w}");
            }
        }
        Err(e) => bail!("{}: invalid configuration:\n{e}", config.display()),
    }
    if failed > 0 {
        bail!("{failed} server(s) could not be reached");
    }
    Ok(())
}

async fn status(url: &str, principal: Option<&str>, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let body = reqwest::Client::builder()
        .build()?
        .get(format!("{}/readyz", url.trim_end_matches('/')))
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {url}"))?
        .text()
        .await?;
    let report: serde_json::Value =
        serde_json::from_str(&body).context("the gateway's /readyz did not answer JSON")?;
    for s in report["servers"].as_array().into_iter().flatten() {
        outln!(
            "{:<24} {:<20} since {}{}{}",
            s["id"].as_str().unwrap_or_default(),
            s["state"].as_str().unwrap_or_default(),
            s["since"].as_str().unwrap_or_default(),
            s["protocol"]
                .as_str()
                .map(|p| format!("  protocol {p}"))
                .unwrap_or_default(),
            s["detail"]
                .as_str()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default()
        );
    }
    if let (Some(p), Some(config)) = (principal, config) {
        let loaded = load_config(config)?;
        let store = mcp_guard_tower::server::sealed_store(&loaded.config, loaded.base_dir());
        let lines = credentials::principal_report(&loaded.config, &store, None, p)?;
        outln!("\npersonal credentials of {p}:");
        if lines.is_empty() {
            outln!("  (no server takes personal credentials)");
        }
        for l in lines {
            outln!("  {l}");
        }
    }
    if report["ready"] != serde_json::Value::Bool(true) {
        bail!("not every enabled server is connected");
    }
    Ok(())
}

async fn tools(config: PathBuf, endpoint: String) -> anyhow::Result<()> {
    let loaded = load_config(&config)?;
    let built = ServerBuilder::from_loaded(loaded)
        .known_secrets(known_secrets())
        .build_catalogue()
        .await?;
    let ep = built
        .gateway
        .endpoint(&endpoint)
        .with_context(|| format!("no endpoint named {endpoint:?}"))?;
    for (server, enabled, status) in ep.members() {
        outln!(
            "server {server}: {}{:?}",
            if enabled { "" } else { "disabled, " },
            status.state
        );
    }
    for (exposed, kind, _server, _name, enabled) in ep.selection_report().await {
        outln!(
            "[{}] {:<8} {exposed}",
            if enabled { "x" } else { " " },
            kind.to_string()
        );
    }
    built.gateway.shutdown().await;
    Ok(())
}

#[allow(clippy::too_many_lines, reason = "one dispatch over every subcommand")]
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let stdio = matches!(
        cli.command,
        Command::Serve { stdio: true, .. } | Command::Fixture { .. }
    );
    init_tracing(stdio);
    mcp_guard_core::upstream::ensure_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                config,
                stdio,
                endpoint,
                listen,
            } => serve(config, stdio, endpoint, listen).await,
            Command::Reload { config } => reload::run(&config),
            Command::Check {
                config,
                against_audit: true,
                since,
                audit,
                json,
                ..
            } => {
                let args = replay::ReplayArgs {
                    config: &config,
                    audit: audit.as_deref(),
                    since,
                    json,
                };
                return Ok(replay::run(&args).map_or_else(
                    |e| {
                        eprintln!("error: {e:#}");
                        std::process::ExitCode::from(explain::EXIT_ERROR)
                    },
                    std::process::ExitCode::from,
                ));
            }
            Command::Check { config, connect, .. } => {
                check(&config)?;
                if connect {
                    check_connect(&config).await
                } else {
                    Ok(())
                }
            }
            Command::Status {
                url,
                principal,
                config,
            } => status(&url, principal.as_deref(), config.as_deref()).await,
            Command::Tools {
                action: None,
                config,
                endpoint,
            } => {
                let config = config.context("--config is required")?;
                let endpoint = endpoint.context("--endpoint is required")?;
                tools(config, endpoint).await
            }
            Command::Tools {
                action:
                    Some(ToolsAction::Approve {
                        config,
                        endpoint,
                        server,
                        tool,
                    }),
                ..
            } => {
                let scope = pins::Scope {
                    endpoint: endpoint.as_deref(),
                    server: server.as_deref(),
                    tool: tool.as_deref(),
                };
                pins::approve(&config, &scope).await
            }
            Command::Tools {
                action:
                    Some(ToolsAction::Diff {
                        config,
                        endpoint,
                        server,
                    }),
                ..
            } => {
                let scope = pins::Scope {
                    endpoint: endpoint.as_deref(),
                    server: server.as_deref(),
                    tool: None,
                };
                if pins::diff(&config, &scope).await? > 0 {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Audit { command } => {
                return Ok(audit::run(command).unwrap_or_else(|e| {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::from(audit::EXIT_UNREADABLE)
                }));
            }
            Command::Tokens { command } => access::tokens(command),
            Command::Sessions { command } => access::sessions(command),
            Command::Users { command } => connect::users(command),
            Command::ConnectConfig(args) => connect::connect_config(&args),
            Command::Explain(args) => {
                return Ok(explain::run(&args).map_or_else(
                    |e| {
                        eprintln!("error: {e:#}");
                        std::process::ExitCode::from(explain::EXIT_ERROR)
                    },
                    std::process::ExitCode::from,
                ));
            }
            Command::Credentials { command } => credentials::run(command),
            Command::OauthClient { url } => oauth_client::run(url).await,
            Command::Import { source } => import::run(source),
            Command::Demo { port, once } => demo::run(port, once).await,
            Command::Fixture {
                name,
                extra_tools,
                legacy_only,
                variant_file,
                garbage_after,
                questions,
                http,
            } => {
                let fixture = fixture::Fixture::new(&name, extra_tools, legacy_only, variant_file)
                    .garbage_after(garbage_after)
                    .questions(questions);
                if let Some(addr) = http {
                    fixture::serve_http(fixture, addr).await
                } else {
                    let running = fixture.serve(rmcp::transport::stdio()).await?;
                    let _ = running.waiting().await;
                    Ok(())
                }
            }
        }
        .map(|()| std::process::ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
