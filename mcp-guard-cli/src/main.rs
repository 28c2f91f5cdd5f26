//! `mcp-guard`: a federating MCP security gateway run from a config file.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program talks on stdout/stderr"
)]

mod audit;
mod demo;
mod fixture;
mod import;
mod load;

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
    /// Validates a configuration file without starting anything.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Connects the servers and prints an endpoint's catalogue, marking what is enabled.
    Tools {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The endpoint.
        #[arg(long)]
        endpoint: String,
    },
    /// Checks and searches the audit trail.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
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
pub(crate) fn redactor() -> Arc<dyn Redactor> {
    Arc::new(Interim)
}

// Interim until the pattern redactor lands: redacts nothing.
struct Interim;
impl Redactor for Interim {
    fn redact_str<'a>(&self, input: &'a str) -> std::borrow::Cow<'a, str> {
        input.into()
    }
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
            tokens = tokens.with_token(&SecretString::from(value), load::principal(&t.principal));
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
        let built = load::build(&cfg, sink.clone(), redactor()).await?;
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
    let built = load::build(&cfg, sink.clone(), redactor()).await?;
    let token = CancellationToken::new();
    let app = HttpEdge::new(built.gateway.clone(), built.service, auth)
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
    axum::serve(listener, app)
        .with_graceful_shutdown(token.cancelled_owned())
        .await?;
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

async fn tools(config: PathBuf, endpoint: String) -> anyhow::Result<()> {
    let loaded = load::load(&config)?;
    let built = load::build(&loaded.config, audit_sink(), redactor()).await?;
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
            Command::Check { config } => check(&config),
            Command::Tools { config, endpoint } => tools(config, endpoint).await,
            Command::Audit { command } => {
                return Ok(audit::run(command).unwrap_or_else(|e| {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::from(audit::EXIT_UNREADABLE)
                }));
            }
            Command::Import { source } => import::run(source),
            Command::Demo { port, once } => demo::run(port, once).await,
            Command::Fixture {
                name,
                extra_tools,
                legacy_only,
            } => {
                let running = fixture::Fixture::new(&name, extra_tools, legacy_only)
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
