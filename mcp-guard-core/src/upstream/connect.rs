use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use rmcp::ServerHandler;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncBufReadExt;

use super::UpstreamError;
use super::child::{ChildTransport, StopTimes};
use super::client::UpstreamClient;
use super::placeholder::{Template, resolve_template};
use crate::credential::{CredentialError, CredentialStore};
use crate::redact::Redactor;

/// How a connected upstream is produced: spawn a process, dial a URL, start a handler.
///
/// Called by [`RmcpUpstream`](super::RmcpUpstream) for the first connection and every
/// reconnection; credentials are resolved anew each time.
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug {
    /// Connects and completes the MCP handshake, serving `client` on the connection.
    ///
    /// # Errors
    /// [`UpstreamError::MissingCredentials`] when a placeholder cannot be filled;
    /// [`UpstreamError::Unavailable`] for every other failure.
    async fn connect(
        &self,
        client: UpstreamClient,
    ) -> Result<RunningService<RoleClient, UpstreamClient>, UpstreamError>;
}

pub(crate) fn unavailable(server: &str, e: impl Into<crate::BoxError>) -> UpstreamError {
    UpstreamError::Unavailable {
        server: server.to_owned(),
        source: Some(e.into()),
    }
}

fn credential_error(server: &str, e: CredentialError) -> UpstreamError {
    match e {
        CredentialError::Missing { key } => UpstreamError::MissingCredentials {
            server: server.to_owned(),
            missing: key.split(", ").map(str::to_owned).collect(),
        },
        other => unavailable(server, other),
    }
}

/// Resolves every template of a map; missing names from all entries are reported together.
pub(crate) async fn resolve_all(
    server: &str,
    principal: Option<&str>,
    templates: &BTreeMap<String, Template>,
    store: &dyn CredentialStore,
) -> Result<Vec<(String, SecretString)>, UpstreamError> {
    let mut out = Vec::with_capacity(templates.len());
    let mut missing = Vec::new();
    for (k, t) in templates {
        match resolve_template(t, server, principal, store).await {
            Ok(v) => out.push((k.clone(), v)),
            Err(CredentialError::Missing { key }) => missing.extend(key.split(", ").map(str::to_owned)),
            Err(e) => return Err(credential_error(server, e)),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        missing.sort();
        missing.dedup();
        Err(UpstreamError::MissingCredentials {
            server: server.to_owned(),
            missing,
        })
    }
}

/// A stdio upstream's command line.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StdioSpec {
    /// Program to run (looked up on `PATH`).
    pub command: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment variables, values possibly with `${NAME}` placeholders. The child gets
    /// these plus `PATH` and `HOME` from the gateway, nothing else.
    pub env: BTreeMap<String, Template>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
}

impl StdioSpec {
    /// `command` with `args` and no extra environment.
    pub fn new<I, S>(command: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            command: command.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
        }
    }

    /// Adds an environment variable (a template).
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: Template) -> Self {
        self.env.insert(key.into(), value);
        self
    }
}

/// Spawns a stdio upstream: its own process group (so the whole tree dies with it),
/// stderr captured into tracing (never inherited), environment an allow-list.
#[derive(Clone)]
pub struct StdioConnector {
    server: Arc<str>,
    spec: StdioSpec,
    credentials: Arc<dyn CredentialStore>,
    principal: Option<Arc<str>>,
    stderr_redactor: Option<Arc<dyn Redactor>>,
}

impl fmt::Debug for StdioConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdioConnector")
            .field("server", &self.server)
            .field("command", &self.spec.command)
            .field("args", &self.spec.args)
            .field("env", &self.spec.env.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl StdioConnector {
    /// A connector for `server` that resolves placeholders from `credentials`.
    pub fn new(server: impl Into<Arc<str>>, spec: StdioSpec, credentials: Arc<dyn CredentialStore>) -> Self {
        Self {
            server: server.into(),
            spec,
            credentials,
            principal: None,
            stderr_redactor: None,
        }
    }

    /// Resolves personal credentials of `principal` (per-principal processes).
    #[must_use]
    pub fn for_principal(mut self, principal: impl Into<Arc<str>>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// Passes each stderr line through `redactor` before it is logged.
    #[must_use]
    pub fn redact_stderr(mut self, redactor: Arc<dyn Redactor>) -> Self {
        self.stderr_redactor = Some(redactor);
        self
    }
}

/// Variables a child inherits from the gateway; everything else must be configured.
const INHERITED_ENV: &[&str] = &["PATH", "HOME"];

#[async_trait]
impl Connector for StdioConnector {
    async fn connect(
        &self,
        client: UpstreamClient,
    ) -> Result<RunningService<RoleClient, UpstreamClient>, UpstreamError> {
        let server = &*self.server;
        let env = resolve_all(
            server,
            self.principal.as_deref(),
            &self.spec.env,
            &*self.credentials,
        )
        .await?;
        let mut cmd = tokio::process::Command::new(&self.spec.command);
        cmd.args(&self.spec.args).env_clear().kill_on_drop(true);
        for key in INHERITED_ENV {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        for (k, v) in &env {
            #[expect(
                clippy::disallowed_methods,
                reason = "a stdio upstream's credential enters its environment"
            )]
            cmd.env(k, v.expose_secret());
        }
        if let Some(cwd) = &self.spec.cwd {
            cmd.current_dir(cwd);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut wrapped = process_wrap::tokio::CommandWrap::from(cmd);
        wrapped.wrap(process_wrap::tokio::ProcessGroup::leader());
        let mut child = wrapped.spawn().map_err(|e| unavailable(server, e))?;
        let pid = child.id();
        let stderr = child.stderr().take();
        let transport = ChildTransport::new(
            child,
            client.max_response_bytes,
            client.fault.clone(),
            StopTimes::default(),
        )
        .map_err(|e| unavailable(server, e))?;
        if let Some(stderr) = stderr {
            let server = self.server.clone();
            let redactor = self.stderr_redactor.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = match &redactor {
                        Some(r) => r.redact_str(&line).into_owned(),
                        None => line,
                    };
                    tracing::debug!(target: "mcp_guard::upstream::stderr", server = %server, "{line}");
                }
            });
        }
        tracing::debug!(server, ?pid, command = %self.spec.command, "spawned stdio upstream");
        client.serve(transport).await.map_err(|e| unavailable(server, e))
    }
}

/// An HTTP upstream's address and headers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpSpec {
    /// The MCP endpoint URL (`https://...` or `http://...`).
    pub url: String,
    /// Headers, values possibly with `${NAME}` placeholders (`Authorization` included).
    pub headers: BTreeMap<String, Template>,
    /// Keep connections open between requests (default: a pool per connector, so per
    /// upstream session where sessions are isolated). `false` opens a new connection
    /// per request: for a server that writes its answer in pieces with Nagle's
    /// algorithm on (no `TCP_NODELAY`), where a reused connection meets the client's
    /// delayed ACK and each reply stalls ~40 ms.
    pub reuse_connections: bool,
}

impl HttpSpec {
    /// `url` with no headers, connections pooled.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: BTreeMap::new(),
            reuse_connections: true,
        }
    }

    /// Adds a header (a template).
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: Template) -> Self {
        self.headers.insert(key.into(), value);
        self
    }
}

/// Installs ring as rustls's process-wide crypto provider if none is installed.
///
/// HTTP upstream connectors call it themselves; call it early if your program builds
/// other TLS clients with the same rustls.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) fn http_client(reuse_connections: bool) -> Result<reqwest::Client, reqwest::Error> {
    ensure_crypto_provider();
    let builder = reqwest::Client::builder()
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none());
    if reuse_connections {
        builder.build()
    } else {
        // Asked for a server that writes its answer in pieces without TCP_NODELAY: a
        // reused connection would meet delayed ACK and stall ~40 ms (rmcp issue 789).
        builder.pool_max_idle_per_host(0).build()
    }
}

pub(crate) async fn resolved_headers(
    server: &str,
    principal: Option<&str>,
    headers: &BTreeMap<String, Template>,
    store: &dyn CredentialStore,
) -> Result<http::HeaderMap, UpstreamError> {
    let mut map = http::HeaderMap::new();
    for (k, v) in resolve_all(server, principal, headers, store).await? {
        let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| unavailable(server, e))?;
        #[expect(
            clippy::disallowed_methods,
            reason = "an HTTP upstream's credential enters its header"
        )]
        let mut value = http::HeaderValue::from_str(v.expose_secret())
            .map_err(|_| unavailable(server, format!("header {k} is not a valid header value")))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

/// Dials a streamable HTTP upstream (`http` or `https`).
#[derive(Clone)]
pub struct HttpConnector {
    server: Arc<str>,
    spec: HttpSpec,
    credentials: Arc<dyn CredentialStore>,
    principal: Option<Arc<str>>,
}

impl fmt::Debug for HttpConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConnector")
            .field("server", &self.server)
            .field("url", &self.spec.url)
            .field("headers", &self.spec.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl HttpConnector {
    /// A connector for `server`.
    pub fn new(server: impl Into<Arc<str>>, spec: HttpSpec, credentials: Arc<dyn CredentialStore>) -> Self {
        Self {
            server: server.into(),
            spec,
            credentials,
            principal: None,
        }
    }

    /// Resolves personal credentials of `principal`.
    #[must_use]
    pub fn for_principal(mut self, principal: impl Into<Arc<str>>) -> Self {
        self.principal = Some(principal.into());
        self
    }
}

#[async_trait]
impl Connector for HttpConnector {
    async fn connect(
        &self,
        client: UpstreamClient,
    ) -> Result<RunningService<RoleClient, UpstreamClient>, UpstreamError> {
        let server = &*self.server;
        let headers = resolved_headers(
            server,
            self.principal.as_deref(),
            &self.spec.headers,
            &*self.credentials,
        )
        .await?;
        let http = http_client(self.spec.reuse_connections).map_err(|e| unavailable(server, e))?;
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.spec.url.as_str());
        config.max_sse_event_size = client.max_response_bytes;
        config.custom_headers = headers.into_iter().filter_map(|(k, v)| Some((k?, v))).collect();
        let transport = StreamableHttpClientTransport::with_client(client.watch_sessions(http), config);
        client.serve(transport).await.map_err(|e| unavailable(server, e))
    }
}

/// Runs an rmcp server handler inside the gateway's process, over an in-memory pipe.
///
/// For embedding a server you already have, and for tests.
pub struct InProcessConnector<F> {
    server: Arc<str>,
    factory: F,
}

impl<F> fmt::Debug for InProcessConnector<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcessConnector")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl<F, H> InProcessConnector<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: ServerHandler,
{
    /// A connector that builds a fresh handler with `factory` for each connection.
    pub fn new(server: impl Into<Arc<str>>, factory: F) -> Self {
        Self {
            server: server.into(),
            factory,
        }
    }
}

#[async_trait]
impl<F, H> Connector for InProcessConnector<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: ServerHandler,
{
    async fn connect(
        &self,
        client: UpstreamClient,
    ) -> Result<RunningService<RoleClient, UpstreamClient>, UpstreamError> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let handler = (self.factory)();
        let server = self.server.clone();
        tokio::spawn(async move {
            match rmcp::ServiceExt::serve(handler, server_io).await {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(e) => tracing::warn!(server = %server, error = %e, "in-process upstream failed to start"),
            }
        });
        let (read, write) = tokio::io::split(client_io);
        client
            .serve(rmcp::transport::async_rw::AsyncRwTransport::new_client(
                read, write,
            ))
            .await
            .map_err(|e| unavailable(&self.server, e))
    }
}
