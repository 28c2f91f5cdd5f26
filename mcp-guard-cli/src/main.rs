//! `mcp-guard`: a federating MCP security gateway run from a config file.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program talks on stdout/stderr"
)]

mod access;
mod audit;
mod connect;
mod credentials;
mod demo;
mod explain;
mod fixture;
mod import;
mod load;
mod oauth_client;
mod pins;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use mcp_guard_core::{AuditSink, Principal, Redactor, TracingAuditSink};
use mcp_guard_tower::auth::{AnyOf, ApiTokens, JwksSource, JwtBearer, JwtSettings};
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

/// The redactor for audit records and upstream stderr: every kind of personal data,
/// secrets, and the known credentials.
pub(crate) fn redactor() -> Arc<dyn Redactor> {
    Arc::new(
        mcp_guard_core::redact::PatternRedactor::builder()
            .known_secrets(known_secrets())
            .build(),
    )
}

/// The sink of commands that serve no clients (`tools`, `demo`): log output only.
pub(crate) fn audit_sink() -> Arc<dyn AuditSink> {
    Arc::new(TracingAuditSink::default())
}

/// Client authentication from `[auth]`: configured tokens, gateway-issued tokens from
/// the access store, and JWTs when `[auth.jwt]` is set, tried in that order.
async fn authenticator(
    config: &mcp_guard_core::config::GatewayConfig,
    base: &std::path::Path,
    store: &mcp_guard_core::access::AccessStore,
) -> anyhow::Result<Arc<dyn Authenticate>> {
    let auth = &config.auth;
    if let Some(p) = &auth.dangerously_allow_anonymous {
        tracing::warn!(principal = %p.id, "auth.dangerously_allow_anonymous is set: HTTP clients are NOT authenticated");
        return Ok(Arc::new(Anonymous(load::principal(p))));
    }
    let mut chain = AnyOf::new();
    if !auth.tokens.is_empty() {
        let mut tokens = StaticTokens::new();
        for (i, t) in auth.tokens.iter().enumerate() {
            let secret = env_secret(&format!("auth.tokens[{i}]"), &t.token)?;
            #[expect(
                clippy::disallowed_methods,
                reason = "only the length of the configured token is checked"
            )]
            if secrecy::ExposeSecret::expose_secret(&secret).len() < 16 {
                bail!("auth.tokens[{i}]: the token must be at least 16 characters");
            }
            tokens = tokens.with_token(&secret, load::principal(&t.principal));
        }
        chain = chain.or(Arc::new(tokens));
    }
    chain = chain.or(Arc::new(ApiTokens::new(store.clone())));
    if auth.server.is_some() {
        chain = chain.or(Arc::new(mcp_guard_tower::auth::GrantTokens::new(store.clone())));
    }
    if let Some(j) = &auth.jwt {
        let resource_base = config
            .gateway
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.gateway.listen));
        let mut s = JwtSettings::new(j.issuer.clone(), resource_base);
        s.extra_audiences.clone_from(&j.audiences);
        if !j.algorithms.is_empty() {
            s.algorithms.clone_from(&j.algorithms);
        }
        if let Some(l) = j.leeway_secs {
            s.leeway = Duration::from_secs(l);
        }
        if let Some(c) = &j.principal_claim {
            s.principal_claim.clone_from(c);
        }
        if j.roles_claim.is_some() {
            s.roles_claim.clone_from(&j.roles_claim);
        }
        s.kind_claim.clone_from(&j.kind_claim);
        s.attribute_claims.clone_from(&j.attribute_claims);
        s.required_scopes.clone_from(&j.required_scopes);
        let source = match (&j.jwks_file, &j.jwks_url) {
            (Some(f), _) => JwksSource::File(base.join(f)),
            (None, Some(u)) => JwksSource::Url(u.clone()),
            (None, None) => bail!("auth.jwt: set jwks_file or jwks_url"),
        };
        let jwt = JwtBearer::new(s, source).await.context("auth.jwt")?;
        chain = chain.or(Arc::new(jwt));
    }
    Ok(Arc::new(chain))
}

/// A secret configured as `${NAME}` placeholders, read from the environment (errors
/// name `entry` and the missing variable); it joins the scrubber's known secrets.
pub(crate) fn env_secret(entry: &str, template: &str) -> anyhow::Result<SecretString> {
    let tpl = mcp_guard_core::upstream::Template::parse(template).map_err(anyhow::Error::msg)?;
    let value = tpl
        .names()
        .map(|n| std::env::var(n).with_context(|| format!("{entry}: environment variable {n} is not set")))
        .collect::<anyhow::Result<Vec<_>>>()?
        .concat();
    let secret = SecretString::from(value);
    known_secrets().add(&secret);
    Ok(secret)
}

pub(crate) fn http_options(config: &mcp_guard_core::config::GatewayConfig) -> HttpOptions {
    let mut o = HttpOptions::default();
    o.allowed_hosts.clone_from(&config.gateway.allowed_hosts);
    o.allowed_origins.clone_from(&config.gateway.allowed_origins);
    o.max_body_bytes = config.gateway.max_body_bytes;
    o.page_size = config.gateway.page_size;
    o.resource_base.clone_from(&config.gateway.public_url);
    if let Some(j) = &config.auth.jwt {
        o.authorization_servers = if j.authorization_servers.is_empty() {
            vec![j.issuer.clone()]
        } else {
            j.authorization_servers.clone()
        };
        o.scopes_supported.clone_from(&j.required_scopes);
    }
    if let (Some(a), Some(issuer)) = (&config.auth.server, &config.gateway.public_url) {
        o.authorization_servers
            .insert(0, issuer.trim_end_matches('/').to_owned());
        o.scopes_supported.extend(a.scopes.iter().cloned());
    }
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

/// `serve --stdio`: one endpoint on stdin/stdout, as the configured stdio principal.
async fn serve_stdio(
    cfg: &mcp_guard_core::config::GatewayConfig,
    config: &std::path::Path,
    sink: Arc<dyn AuditSink>,
    endpoint: Option<String>,
) -> anyhow::Result<()> {
    let name = endpoint.unwrap_or_default();
    let principal = cfg
        .auth
        .stdio_principal
        .as_ref()
        .map_or_else(|| Principal::user("stdio"), load::principal);
    let pinning = load::pinning(cfg, config)?;
    let stores = credentials::stores(cfg, config, Some(principal.id()))?;
    let built = load::build(cfg, &stores, sink.clone(), redactor(), Some(pinning.gate.clone())).await?;
    pins::watch_lock(pinning.path, pinning.gate, built.gateway.clone());
    let ep = built
        .gateway
        .endpoint(&name)
        .with_context(|| format!("no endpoint named {name:?}"))?;
    let handler = GuardHandler::new(ep, built.service)
        .with_principal(Arc::new(principal))
        .page_size(cfg.gateway.page_size);
    let running = handler.serve(mcp_guard_tower::stdio::guarded_stdio()).await?;
    let signal = CancellationToken::new();
    tokio::spawn(shutdown_signal(signal.clone()));
    let stop = running.cancellation_token();
    let waiting = running.waiting();
    tokio::pin!(waiting);
    tokio::select! {
        _ = &mut waiting => {}
        () = signal.cancelled() => {
            drain(&built.drain, grace(cfg)).await;
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        }
    }
    built.gateway.shutdown().await;
    sink.flush().await.context("flushing the audit trail")?;
    Ok(())
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
        return serve_stdio(&cfg, &config, sink, endpoint).await;
    }
    let store_path = access::store_path(&config, &cfg);
    let store = mcp_guard_core::access::AccessStore::open(&store_path)
        .with_context(|| format!("opening the access store {}", store_path.display()))?;
    let auth = authenticator(&cfg, &base, &store).await?;
    let sessions = mcp_guard_core::access::Sessions::with_store(store.clone())?.with_audit(sink.clone());
    let addr: SocketAddr = match listen {
        Some(a) => a,
        None => cfg.gateway.listen.parse()?,
    };
    let pinning = load::pinning(&cfg, &config)?;
    let stores = credentials::stores(&cfg, &config, None)?;
    let built = load::build(
        &cfg,
        &stores,
        sink.clone(),
        redactor(),
        Some(pinning.gate.clone()),
    )
    .await?;
    pins::watch_lock(pinning.path, pinning.gate, built.gateway.clone());
    // Three stages: a signal; then no new connections (in-flight requests drain);
    // then every session and stream is closed.
    let signal = CancellationToken::new();
    let stop_accepting = CancellationToken::new();
    let close_sessions = CancellationToken::new();
    let gauge = built.metrics.gateway_sessions();
    keep_sessions(
        &sessions,
        move |n| {
            gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
        },
        &close_sessions,
    );
    let upstream = upstream_auth(&cfg, &stores)?;
    let authorization = connect::authorization_server(
        &cfg,
        &config,
        &store,
        &sessions,
        &built.gateway,
        &stores,
        upstream.as_ref(),
    )?;
    let mut edge = HttpEdge::new(built.gateway.clone(), built.service, auth.clone())
        .audit(sink.clone())
        .sessions(sessions)
        .options(http_options(&cfg))
        .shutdown_token(close_sessions.clone());
    if cfg.gateway.metrics {
        edge = edge.metrics(built.metrics.clone());
    }
    let mut app = edge.router();
    if let Some(a) = &authorization {
        app = a.router().merge(app);
    }
    if let Some(mut upstream) = upstream {
        if let Some(a) = authorization.clone() {
            // With the gateway's own sign-in, a start link works only in a browser
            // signed in as the principal it was made for.
            upstream = upstream.require_browser_sign_in(move |headers| a.signed_in(headers));
        }
        app = app.merge(upstream.authenticate(auth.clone()).router());
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("mcp-guard listening on http://{local}");
    for name in built.gateway.endpoint_names() {
        eprintln!("  endpoint {name}: http://{local}/mcp/{name}");
    }
    tokio::spawn(shutdown_signal(signal.clone()));
    let server = tokio::spawn(mcp_guard_tower::http::serve(
        listener,
        app,
        stop_accepting.clone(),
    ));
    signal.cancelled().await;
    stop_accepting.cancel();
    drain(&built.drain, grace(&cfg)).await;
    close_sessions.cancel();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the listener failed while stopping"),
        Err(_) => tracing::warn!("connections still open 5 s after sessions closed; stopping anyway"),
        _ => {}
    }
    built.gateway.shutdown().await;
    sink.flush().await.context("flushing the audit trail")?;
    tracing::info!(processes = mcp_guard_core::upstream::live_processes(), "stopped");
    Ok(())
}

/// The sign-in routes for servers principals sign in to with OAuth (none: `None`).
fn upstream_auth(
    cfg: &mcp_guard_core::config::GatewayConfig,
    stores: &credentials::Stores,
) -> anyhow::Result<Option<mcp_guard_tower::upstream_auth::UpstreamAuth>> {
    let personal: Vec<_> = stores
        .oauth
        .values()
        .filter(|o| o.spec().mode == mcp_guard_core::upstream::oauth::OAuthMode::Personal)
        .cloned()
        .collect();
    if personal.is_empty() {
        return Ok(None);
    }
    let public_url = cfg
        .gateway
        .public_url
        .as_deref()
        .context("personal OAuth servers need gateway.public_url")?;
    Ok(Some(mcp_guard_tower::upstream_auth::UpstreamAuth::new(
        personal, public_url,
    )?))
}

/// Applies revocations from other processes and expiries every 250 ms, and keeps the
/// sessions gauge current, until `stop`; then closes every session.
fn keep_sessions(
    sessions: &mcp_guard_core::access::Sessions,
    report: impl Fn(usize) + Send + 'static,
    stop: &CancellationToken,
) {
    tokio::spawn(
        sessions
            .clone()
            .maintain(Duration::from_millis(250), stop.clone()),
    );
    let (sessions, stop) = (sessions.clone(), stop.clone());
    tokio::spawn(async move {
        while tokio::time::timeout(Duration::from_secs(1), stop.cancelled())
            .await
            .is_err()
        {
            report(sessions.active());
        }
    });
}

fn grace(cfg: &mcp_guard_core::config::GatewayConfig) -> Duration {
    Duration::from_secs(cfg.gateway.shutdown_grace_secs)
}

/// Refuses new requests, waits up to `grace` for those in flight, then answers the rest
/// with an error (each still gets its audit record) and gives their answers a moment
/// to reach the clients.
async fn drain(drain: &mcp_guard_tower::Drain, grace: Duration) {
    drain.start();
    let pending = drain.in_flight();
    if pending > 0 {
        tracing::info!(pending, ?grace, "waiting for requests in flight");
    }
    if !drain.wait_idle(grace).await {
        tracing::warn!(
            pending = drain.in_flight(),
            "shutdown grace period over; abandoning requests in flight"
        );
        drain.abort();
        let _ = drain.wait_idle(Duration::from_secs(2)).await;
    }
    // Answers already produced still have to be written to their streams.
    tokio::time::sleep(Duration::from_millis(100)).await;
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
    let stores = credentials::stores(&loaded.config, config, None)?;
    let mut failed = 0;
    for (upstream, enabled) in load::upstreams(&loaded.config, &stores, &redactor())? {
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
    if let (Some(p), Some(config)) = (principal, config) {
        let loaded = load::load(config)?;
        let store = credentials::sealed(&loaded.config, config);
        let lines = credentials::principal_report(&loaded.config, &store, None, p)?;
        println!("\npersonal credentials of {p}:");
        if lines.is_empty() {
            println!("  (no server takes personal credentials)");
        }
        for l in lines {
            println!("  {l}");
        }
    }
    if report["ready"] != serde_json::Value::Bool(true) {
        bail!("not every enabled server is connected");
    }
    Ok(())
}

async fn tools(config: PathBuf, endpoint: String) -> anyhow::Result<()> {
    let loaded = load::load(&config)?;
    let pinning = load::pinning(&loaded.config, &config)?;
    let stores = credentials::stores(&loaded.config, &config, None)?;
    let built = load::build(
        &loaded.config,
        &stores,
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
                http,
            } => {
                let fixture = fixture::Fixture::new(&name, extra_tools, legacy_only, variant_file)
                    .garbage_after(garbage_after);
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
