//! `mcp-guard`: a federating MCP security gateway run from a config file.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program talks on stdout/stderr"
)]

mod audit;
mod demo;
mod explain;
mod fixture;
mod import;
mod load;
mod pins;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use mcp_guard_core::{AuditSink, Principal, Redactor, TracingAuditSink};
use mcp_guard_tower::http::dangerous::Anonymous;
use mcp_guard_tower::{Authenticate, GuardHandler, HttpEdge, HttpOptions, StaticTokens};
use rmcp::ServiceExt;
use secrecy::SecretString;
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
    /// Validates a configuration file; with --connect also connects each server.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Connect to every enabled server and list its tools.
        #[arg(long)]
        connect: bool,
    },
    /// Shows a running gateway's per-server status (from its /readyz).
    Status {
        /// The gateway's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8787")]
        url: String,
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
    },
}

fn init_tracing(stdio: bool) {
    // rmcp logs payloads at INFO/DEBUG; keep it at WARN unless asked otherwise.
    let filter =
        EnvFilter::try_from_env("MCP_GUARD_LOG").unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if stdio {
        builder.with_ansi(false).init();
    } else {
        builder.init();
    }
}

/// The redactor audit records pass through.
/// Every secret the gateway holds (upstream credentials as they are handed out, client
/// tokens): scrubbed from anything an upstream sends back, from logs and from audit.
pub(crate) fn known_secrets() -> Arc<mcp_guard_core::redact::KnownSecrets> {
    static KNOWN: std::sync::OnceLock<Arc<mcp_guard_core::redact::KnownSecrets>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(Arc::default).clone()
}

/// The redactor for audit records and upstream stderr: every kind of personal data,
/// secrets, and the known credentials.
pub(crate) fn redactor() -> Arc<dyn Redactor> {
    Arc::new(
        mcp_guard_core::redact::PatternRedactor::builder()
            .known_secrets(known_secrets())
            .build(),
    )
}

/// The credential store: the gateway's environment, feeding the scrubber.
pub(crate) fn credentials() -> Arc<dyn mcp_guard_core::CredentialStore> {
    Arc::new(mcp_guard_core::credential::Scrubbing::new(
        mcp_guard_core::EnvCredentialStore::new(),
        known_secrets(),
    ))
}

/// The sink of commands that serve no clients (`tools`, `demo`): log output only.
pub(crate) fn audit_sink() -> Arc<dyn AuditSink> {
    Arc::new(TracingAuditSink::default())
}

fn authenticator(config: &mcp_guard_core::config::GatewayConfig) -> anyhow::Result<Arc<dyn Authenticate>> {
    let auth = &config.auth;
    if !auth.tokens.is_empty() {
        let mut tokens = StaticTokens::new();
        for (i, t) in auth.tokens.iter().enumerate() {
            let tpl = mcp_guard_core::upstream::Template::parse(&t.token).map_err(anyhow::Error::msg)?;
            let names: Vec<&str> = tpl.names().collect();
            let value = names
                .iter()
                .map(|n| {
                    std::env::var(n)
                        .with_context(|| format!("auth.tokens[{i}]: environment variable {n} is not set"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?
                .concat();
            if value.len() < 16 {
                bail!("auth.tokens[{i}]: the token must be at least 16 characters");
            }
            let secret = SecretString::from(value);
            known_secrets().add(&secret);
            tokens = tokens.with_token(&secret, load::principal(&t.principal));
        }
        return Ok(Arc::new(tokens));
    }
    if let Some(p) = &auth.dangerously_allow_anonymous {
        tracing::warn!(principal = %p.id, "auth.dangerously_allow_anonymous is set: HTTP clients are NOT authenticated");
        return Ok(Arc::new(Anonymous(load::principal(p))));
    }
    bail!(
        "no client authentication is configured: add [[auth.tokens]] (or, for local experiments only, auth.dangerously_allow_anonymous)"
    )
}

pub(crate) fn http_options(config: &mcp_guard_core::config::GatewayConfig) -> HttpOptions {
    let mut o = HttpOptions::default();
    o.allowed_hosts.clone_from(&config.gateway.allowed_hosts);
    o.allowed_origins.clone_from(&config.gateway.allowed_origins);
    o.max_body_bytes = config.gateway.max_body_bytes;
    o.page_size = config.gateway.page_size;
    o
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

async fn serve(
    config: PathBuf,
    stdio: bool,
    endpoint: Option<String>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let loaded = load::load(&config)?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let cfg = loaded.config;
    let base = config.parent().unwrap_or(std::path::Path::new("")).to_owned();
    let sink = audit::sinks(&cfg.audit, &base)?;
    if stdio {
        let name = endpoint.unwrap_or_default();
        let principal = cfg
            .auth
            .stdio_principal
            .as_ref()
            .map_or_else(|| Principal::user("stdio"), load::principal);
        let pinning = load::pinning(&cfg, &config)?;
        let built = load::build(&cfg, sink.clone(), redactor(), Some(pinning.gate.clone())).await?;
        pins::watch_lock(pinning.path, pinning.gate, built.gateway.clone());
        let ep = built
            .gateway
            .endpoint(&name)
            .with_context(|| format!("no endpoint named {name:?}"))?;
        let handler = GuardHandler::new(ep, built.service)
            .with_principal(Arc::new(principal))
            .page_size(cfg.gateway.page_size);
        let running = handler.serve(mcp_guard_tower::stdio::guarded_stdio()).await?;
        let _ = running.waiting().await;
        built.gateway.shutdown().await;
        sink.flush().await.context("flushing the audit trail")?;
        return Ok(());
    }
    let auth = authenticator(&cfg)?;
    let addr: SocketAddr = match listen {
        Some(a) => a,
        None => cfg.gateway.listen.parse()?,
    };
    let pinning = load::pinning(&cfg, &config)?;
    let built = load::build(&cfg, sink.clone(), redactor(), Some(pinning.gate.clone())).await?;
    pins::watch_lock(pinning.path, pinning.gate, built.gateway.clone());
    let token = CancellationToken::new();
    let app = HttpEdge::new(built.gateway.clone(), built.service, auth)
        .audit(sink.clone())
        .options(http_options(&cfg))
        .shutdown_token(token.clone())
        .router();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("mcp-guard listening on http://{local}");
    for name in built.gateway.endpoint_names() {
        eprintln!("  endpoint {name}: http://{local}/mcp/{name}");
    }
    tokio::spawn(shutdown_signal(token.clone()));
    mcp_guard_tower::http::serve(listener, app, token.clone()).await?;
    built.gateway.shutdown().await;
    sink.flush().await.context("flushing the audit trail")?;
    Ok(())
}

fn check(config: &std::path::Path) -> anyhow::Result<()> {
    let loaded = load::load(config)?;
    for w in &loaded.warnings {
        println!("{w}");
    }
    let c = &loaded.config;
    println!(
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
    let loaded = load::load(config)?;
    let credentials = credentials();
    let mut failed = 0;
    for (upstream, enabled) in load::upstreams(&loaded.config, &credentials, &redactor())? {
        if !enabled {
            println!("server {}: disabled", upstream.id());
            continue;
        }
        match upstream.catalog().await {
            Ok(cat) => {
                let names: Vec<&str> = cat.tools.iter().map(|t| t.name.as_ref()).collect();
                let version = cat
                    .server_info
                    .as_ref()
                    .map(|i| i.protocol_version.as_str().to_owned())
                    .unwrap_or_default();
                println!(
                    "server {}: connected ({version}), {} tools: {}",
                    upstream.id(),
                    names.len(),
                    names.join(", ")
                );
            }
            Err(e) => {
                failed += 1;
                println!(
                    "server {}: FAILED: {}",
                    upstream.id(),
                    mcp_guard_core::upstream::error_chain(&e)
                );
            }
        }
        upstream.shutdown().await;
    }
    if failed > 0 {
        bail!("{failed} server(s) could not be reached");
    }
    Ok(())
}

async fn status(url: &str) -> anyhow::Result<()> {
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
        println!(
            "{:<24} {:<20} since {}{}",
            s["id"].as_str().unwrap_or_default(),
            s["state"].as_str().unwrap_or_default(),
            s["since"].as_str().unwrap_or_default(),
            s["detail"]
                .as_str()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default()
        );
    }
    if report["ready"] != serde_json::Value::Bool(true) {
        bail!("not every enabled server is connected");
    }
    Ok(())
}

async fn tools(config: PathBuf, endpoint: String) -> anyhow::Result<()> {
    let loaded = load::load(&config)?;
    let pinning = load::pinning(&loaded.config, &config)?;
    let built = load::build(
        &loaded.config,
        audit_sink(),
        redactor(),
        Some(pinning.gate.clone()),
    )
    .await?;
    let ep = built
        .gateway
        .endpoint(&endpoint)
        .with_context(|| format!("no endpoint named {endpoint:?}"))?;
    for (server, enabled, status) in ep.members() {
        println!(
            "server {server}: {}{:?}",
            if enabled { "" } else { "disabled, " },
            status.state
        );
    }
    for (exposed, kind, _server, _name, enabled) in ep.selection_report().await {
        println!(
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
            Command::Check { config, connect } => {
                check(&config)?;
                if connect {
                    check_connect(&config).await
                } else {
                    Ok(())
                }
            }
            Command::Status { url } => status(&url).await,
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
            Command::Explain(args) => {
                return Ok(explain::run(&args).map_or_else(
                    |e| {
                        eprintln!("error: {e:#}");
                        std::process::ExitCode::from(explain::EXIT_ERROR)
                    },
                    std::process::ExitCode::from,
                ));
            }
            Command::Import { source } => import::run(source),
            Command::Demo { port, once } => demo::run(port, once).await,
            Command::Fixture {
                name,
                extra_tools,
                legacy_only,
                variant_file,
            } => {
                let running = fixture::Fixture::new(&name, extra_tools, legacy_only, variant_file)
                    .serve(rmcp::transport::stdio())
                    .await?;
                let _ = running.waiting().await;
                Ok(())
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
