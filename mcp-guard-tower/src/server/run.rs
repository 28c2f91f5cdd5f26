//! Building and running the gateway: HTTP, stdio, or a catalogue read once.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mcp_guard_core::access::{AccessStore, ClientCredential, Session, Sessions};
use mcp_guard_core::audit::forward::Forwarders;
use mcp_guard_core::config::GatewayConfig;
use mcp_guard_core::redact::{KnownSecrets, PatternRedactor};
use mcp_guard_core::{AuditSink, Principal, Redactor, Upstream, UpstreamState};
use rmcp::ServiceExt as _;
use tokio_util::sync::CancellationToken;

use super::stack::{Built, Startup};
use super::{ServerError, auth, authorization, credentials, pinning, session_dir, stack};
use crate::preauth::PreAuth;
use crate::{Drain, Gateway, GuardHandler, HttpEdge, Metrics};

/// A configured server as an upstream, with whether it is enabled.
pub type ConfiguredUpstream = (Arc<dyn Upstream>, bool);

/// Builds the gateway a configuration describes.
///
/// Relative paths in the configuration (the audit trail, the access store, the
/// credential store, the lock file, a JWKS file) are resolved from
/// [`Self::base_dir`]: the configuration file's directory with
/// [`Self::from_loaded`], the working directory otherwise.
#[must_use]
pub struct ServerBuilder {
    config: GatewayConfig,
    base: PathBuf,
    known: Arc<KnownSecrets>,
    audit: Option<Arc<dyn AuditSink>>,
    path_prefix: String,
    /// The file the configuration was read from, and its digest (what reloads and the
    /// console's changes start from).
    file: Option<(PathBuf, String)>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("base", &self.base)
            .field("path_prefix", &self.path_prefix)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// The gateway of `config`, with relative paths from the working directory.
    pub fn new(config: GatewayConfig) -> Self {
        Self {
            config,
            base: PathBuf::new(),
            known: Arc::default(),
            audit: None,
            path_prefix: String::new(),
            file: None,
        }
    }

    /// The gateway of a loaded configuration file, with relative paths from its
    /// directory.
    pub fn from_loaded(loaded: super::LoadedConfig) -> Self {
        let base = loaded.base_dir().to_owned();
        let file = Some((loaded.path, loaded.digest));
        let mut b = Self::new(loaded.config).base_dir(base);
        b.file = file;
        b
    }

    /// Where relative paths in the configuration are resolved from.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base = dir.into();
        self
    }

    /// The registry of secrets the gateway holds (upstream credentials as they are
    /// handed out, client tokens), which every response, audit record and log line
    /// is scrubbed of. Share it with your log output's scrubber; by default the
    /// gateway has its own.
    pub fn known_secrets(mut self, known: Arc<KnownSecrets>) -> Self {
        self.known = known;
        self
    }

    /// Records to `sink` instead of the sinks `[audit]` names.
    pub fn audit_sink(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Serves the MCP endpoints at `<prefix>/mcp/{endpoint}` (e.g. `/tools`); see
    /// [`HttpOptions::path_prefix`](crate::HttpOptions::path_prefix).
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        prefix
            .into()
            .trim_end_matches('/')
            .clone_into(&mut self.path_prefix);
        self
    }

    fn sink(&self) -> anyhow::Result<Arc<dyn AuditSink>> {
        Ok(self.sink_and_trails()?.0)
    }

    /// The audit sink, and the durable trails it writes when the configuration's sinks
    /// are used (what forwarders read).
    fn sink_and_trails(&self) -> anyhow::Result<(Arc<dyn AuditSink>, Option<super::forward::Trails>)> {
        if let Some(s) = &self.audit {
            return Ok((s.clone(), None));
        }
        let o = super::audit::opened(&self.config.audit, &self.base)?;
        Ok((o.sink, Some(o.trails)))
    }

    /// Starts the `[audit.forward.*]` forwarders on `trails`.
    fn forwarders(&self, trails: Option<&super::forward::Trails>) -> anyhow::Result<Forwarders> {
        super::forward::spawn(&self.config.audit, &self.base, trails, &self.known)
    }

    /// Connects to every `[audit.forward.*]` receiver once, sending no record
    /// (`check --connect`).
    pub async fn check_receivers(&self) -> Vec<super::ReceiverCheck> {
        super::forward::check(&self.config.audit, &self.base, &self.known).await
    }

    /// The redactor audit records and upstream stderr pass through: every kind of
    /// personal data, secrets, and the known credentials.
    fn audit_redactor(&self) -> Arc<dyn Redactor> {
        Arc::new(
            PatternRedactor::builder()
                .known_secrets(self.known.clone())
                .build(),
        )
    }

    /// The guard stack and gateway of `cfg`, its servers starting in the background,
    /// with the lock file watched for approvals.
    async fn start_stack(
        &self,
        cfg: &GatewayConfig,
        stores: &credentials::Stores,
        sink: &Arc<dyn AuditSink>,
        pins: pinning::Pinning,
        tracing: Option<&super::telemetry::Tracing>,
    ) -> anyhow::Result<Built> {
        let built = stack::build(
            cfg,
            stores,
            sink.clone(),
            self.audit_redactor(),
            Some(pins.gate.clone()),
            Startup::Background,
            tracing.map(|t| crate::telemetry::Telemetry::new(&t.provider)),
        )
        .await?;
        pinning::watch_lock(pins.path, pins.gate, built.gateway.clone());
        Ok(built)
    }

    /// What reloads the built gateway, starting from this configuration.
    fn reloader(
        &self,
        sink: &Arc<dyn AuditSink>,
        built: &Built,
        tokens: Option<auth::ConfiguredTokens>,
        stdio: Option<(Arc<str>, Arc<str>)>,
    ) -> super::Reloader {
        super::Reloader::new(
            self.config.clone(),
            self.file.as_ref().map(|(_, d)| d.clone()).unwrap_or_default(),
            self.base.clone(),
            self.known.clone(),
            sink.clone(),
            self.audit_redactor(),
            built.gateway.clone(),
            built.guards.clone(),
            tokens,
            stdio,
        )
    }

    /// The operator console of the gateway being built.
    #[expect(clippy::too_many_arguments, reason = "the running gateway's parts")]
    fn console(
        &self,
        auth: &crate::authorize::AuthorizationServer,
        reloader: &super::Reloader,
        built: &Built,
        sessions: &Sessions,
        store: &AccessStore,
        sink: &Arc<dyn AuditSink>,
        (pins, lock_path): (Arc<mcp_guard_core::pin::PinGate>, PathBuf),
    ) -> super::console::Console {
        super::console::Console::new(super::console::Parts {
            settings: self.config.console.clone(),
            prefix: self.path_prefix.clone(),
            auth: auth.clone(),
            reloader: reloader.clone(),
            gateway: built.gateway.clone(),
            sessions: sessions.clone(),
            store: store.clone(),
            sink: sink.clone(),
            pins,
            lock_path,
            config_path: self.file.as_ref().map(|(p, _)| p.clone()),
            base: self.base.clone(),
            known: self.known.clone(),
            redactor: self.audit_redactor(),
            approvals: built.approvals.clone(),
        })
    }

    /// The access store `[auth] store` names (default `mcp-guard-access.db`).
    fn access_store(&self) -> anyhow::Result<AccessStore> {
        let path = access_store_path(&self.config, &self.base);
        AccessStore::open(&path).with_context(|| format!("opening the access store {}", path.display()))
    }

    /// The HTTP gateway: every endpoint, client authentication, the authorization
    /// server and upstream sign-in pages when configured, health and metrics. It
    /// answers at once; its servers start in the background and join as they connect.
    ///
    /// # Errors
    /// A store, sink or key cannot be opened, a secret is missing from the environment,
    /// or the configuration does not compile (a pattern, a placeholder).
    pub async fn build(self) -> Result<GatewayServer, ServerError> {
        self.build_http().await.map_err(ServerError)
    }

    /// The base of every protected resource's URL: the public URL (else the listen
    /// address) and the mount prefix.
    fn resource_base(&self) -> String {
        let cfg = &self.config;
        let mut base = cfg
            .gateway
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", cfg.gateway.listen))
            .trim_end_matches('/')
            .to_owned();
        base.push_str(&self.path_prefix);
        base
    }

    async fn build_http(self) -> anyhow::Result<GatewayServer> {
        let cfg = &self.config;
        let (sink, trails) = self.sink_and_trails()?;
        let store = self.access_store()?;
        let resource_base = self.resource_base();
        let tokens = auth::ConfiguredTokens::default();
        if cfg.auth.dangerously_allow_anonymous.is_none() {
            tokens.set(auth::static_tokens(cfg, &self.known)?);
        }
        let engine = super::cluster::connect(cfg, &self.known).await?;
        let authenticate =
            auth::authenticator(cfg, &self.base, &store, engine.as_ref(), &tokens, &resource_base).await?;
        let sessions = Sessions::with_store(store.clone())?.with_audit(sink.clone());
        let pins = pinning::pinning(cfg, &self.base)?;
        let (pin_gate, lock_path) = (pins.gate.clone(), pins.path.clone());
        let stores = credentials::stores(cfg, &self.base, None, &self.known)?;
        let tracing = super::telemetry::tracing_from(&cfg.telemetry, &self.base, &self.known)?;
        let built = self
            .start_stack(cfg, &stores, &sink, pins, tracing.as_ref())
            .await?;
        let close_sessions = CancellationToken::new();
        let gauge = built.metrics.gateway_sessions();
        keep_sessions(
            &sessions,
            move |n| {
                gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
            },
            &close_sessions,
        );
        super::cluster::follow(engine.as_ref(), &sessions, &close_sessions);
        let upstream = auth::upstream_auth(cfg, &stores)?;
        let site = authorization::Site {
            cfg,
            base: &self.base,
            resource_prefix: &self.path_prefix,
        };
        let authorization = authorization::authorization_server(
            &site,
            &store,
            &sessions,
            &built.gateway,
            &stores,
            upstream.as_ref(),
        )?;
        let pre_auth = PreAuth::new(auth::unauthenticated_limits(cfg));
        let mut options = auth::http_options(cfg);
        options.path_prefix.clone_from(&self.path_prefix);
        let forwarders = self.forwarders(trails.as_ref())?;
        let mut edge = HttpEdge::new(built.gateway.clone(), built.service.clone(), authenticate.clone())
            .pre_auth(pre_auth.clone())
            .audit(sink.clone())
            .audit_forwarders(forwarders.clone())
            .sessions(sessions.clone())
            .options(options)
            .shutdown_token(close_sessions.clone());
        if cfg.gateway.metrics {
            edge = edge.metrics(built.metrics.clone());
        }
        edge = super::cluster::report(edge, engine);
        let mut router = edge.router();
        let mount = |r: axum::Router| pre_auth.wrap_mounted(r, &self.path_prefix);
        if let Some(a) = &authorization {
            router = mount(sign_in_routes(&built, a)).merge(router);
        }
        if let Some(mut upstream) = upstream {
            if let Some(a) = authorization.clone() {
                // With the gateway's own sign-in, a start link works only in a browser
                // signed in as the principal it was made for.
                upstream = upstream.require_browser_sign_in(move |headers| a.signed_in(headers));
            }
            router = router.merge(mount(upstream.authenticate(authenticate).router()));
        }
        let tokens = cfg.auth.dangerously_allow_anonymous.is_none().then_some(tokens);
        let reloader = self.reloader(&sink, &built, tokens, None);
        if let (true, Some(auth)) = (cfg.console.enabled, &authorization) {
            let console = self.console(
                auth,
                &reloader,
                &built,
                &sessions,
                &store,
                &sink,
                (pin_gate, lock_path),
            );
            router = router.merge(mount(console.router()));
        }
        Ok(GatewayServer {
            reloader,
            built,
            router,
            sessions,
            close_sessions,
            pre_auth,
            sink,
            forwarders,
            tracing,
            grace: Duration::from_secs(cfg.gateway.shutdown_grace_secs),
            path_prefix: self.path_prefix,
            known: self.known,
        })
    }

    /// The stdio front door of `endpoint` (the unnamed endpoint `""` when `None`): one
    /// client, the configured `[auth] stdio_principal`, in one gateway session that
    /// `sessions list` shows and `sessions revoke` ends.
    ///
    /// # Errors
    /// As [`Self::build`], or no such endpoint.
    pub async fn build_stdio(self, endpoint: Option<&str>) -> Result<StdioGateway, ServerError> {
        self.build_stdio_inner(endpoint.unwrap_or_default())
            .await
            .map_err(ServerError)
    }

    async fn build_stdio_inner(self, name: &str) -> anyhow::Result<StdioGateway> {
        let cfg = &self.config;
        let (sink, trails) = self.sink_and_trails()?;
        let principal = Arc::new(
            cfg.auth
                .stdio_principal
                .as_ref()
                .map_or_else(|| Principal::user("stdio"), super::principal),
        );
        let pins = pinning::pinning(cfg, &self.base)?;
        // Personal credentials are the subject's (an agent acting for a user: the user's).
        let mut stores = credentials::stores(cfg, &self.base, Some(principal.subject()), &self.known)?;
        let (sessions, session) = self.stdio_session(&sink, &principal, name);
        let session = session?;
        stores.catalogue_session = Some(session.id().0.clone());
        let maintain_stop = CancellationToken::new();
        tokio::spawn(
            sessions
                .clone()
                .maintain(Duration::from_millis(250), maintain_stop.clone()),
        );
        let tracing = super::telemetry::tracing_from(&cfg.telemetry, &self.base, &self.known)?;
        let built = self
            .start_stack(cfg, &stores, &sink, pins, tracing.as_ref())
            .await?;
        let ep = built
            .gateway
            .endpoint(name)
            .with_context(|| format!("no endpoint named {name:?}"))?;
        let stdio = (principal.subject().into(), session.id().0.clone());
        let reloader = self.reloader(&sink, &built, None, Some(stdio));
        let forwarders = self.forwarders(trails.as_ref())?;
        let handler = GuardHandler::new(ep, built.service.clone())
            .with_principal(principal)
            .with_session(session.id().clone())
            .with_session_taint(&session)
            .page_size(cfg.gateway.page_size);
        Ok(StdioGateway {
            reloader,
            built,
            handler,
            session,
            maintain_stop,
            sink,
            forwarders,
            tracing,
            grace: Duration::from_secs(cfg.gateway.shutdown_grace_secs),
        })
    }

    /// The stdio front door's gateway session: journalled in the access store like any
    /// other, so `sessions list` shows it and `sessions revoke` ends it. Without a
    /// usable store it is kept in memory (the gateway still serves).
    fn stdio_session(
        &self,
        sink: &Arc<dyn AuditSink>,
        principal: &Arc<Principal>,
        endpoint: &str,
    ) -> (Sessions, anyhow::Result<Arc<Session>>) {
        let sessions = match self.access_store().and_then(|s| Ok(Sessions::with_store(s)?)) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "the stdio session is not journalled (sessions list will not show it)"
                );
                Sessions::new()
            }
        }
        .with_audit(sink.clone());
        // One credential per process, issued now: revoking one stdio session leaves the
        // others, and a later process, alone.
        let credential = ClientCredential::new(format!("stdio:{}", std::process::id()))
            .issued_at(Some(std::time::SystemTime::now()));
        let session = sessions
            .admit(principal, &credential, endpoint)
            .map_err(|e| anyhow::anyhow!("the stdio session was refused: {e}"));
        (sessions, session)
    }

    /// The gateway for commands that read the catalogue once (`tools`, `tools
    /// approve`): every server's first start has ended when it returns, and records go
    /// to the log only unless [`Self::audit_sink`] says otherwise.
    ///
    /// # Errors
    /// As [`Self::build`], or two servers produce one name.
    pub async fn build_catalogue(mut self) -> Result<Catalogue, ServerError> {
        async {
            if self.audit.is_none() {
                self.audit = Some(Arc::new(mcp_guard_core::TracingAuditSink::default()));
            }
            let pins = pinning::pinning(&self.config, &self.base)?;
            let stores = credentials::stores(&self.config, &self.base, None, &self.known)?;
            let built = stack::build(
                &self.config,
                &stores,
                self.sink()?,
                self.audit_redactor(),
                Some(pins.gate.clone()),
                Startup::Wait,
                None,
            )
            .await?;
            Ok(Catalogue {
                gateway: built.gateway,
                pins: pins.gate,
            })
        }
        .await
        .map_err(ServerError)
    }

    /// Every configured server as an upstream, unconnected, with whether it is
    /// enabled (`check --connect` connects each once).
    ///
    /// # Errors
    /// A placeholder or the credential store is invalid.
    pub fn upstreams(&self) -> Result<Vec<ConfiguredUpstream>, ServerError> {
        let stores = credentials::stores(&self.config, &self.base, None, &self.known)?;
        Ok(super::upstreams::upstreams(
            &self.config,
            &stores,
            &self.audit_redactor(),
        )?)
    }
}

/// The built-in authorization server's routes and the approval page's, which signs in
/// with it.
fn sign_in_routes(built: &Built, a: &crate::authorize::AuthorizationServer) -> axum::Router {
    a.router().merge(approval_page(built, a))
}

/// The approval page's routes: approvals a client cannot be asked for are decided
/// there, by the user the call acts for (or an approver), signed in with the gateway's
/// own sign-in; links start with its issuer (the public URL).
fn approval_page(built: &Built, a: &crate::authorize::AuthorizationServer) -> axum::Router {
    let signed_in = a.clone();
    built
        .approvals
        .clone()
        .browser_sign_in(
            Arc::new(move |headers: &http::HeaderMap| signed_in.signed_in_principal(headers)),
            a.issuer(),
        )
        .router()
}

/// The access store `[auth] store` names (default `mcp-guard-access.db`), relative to
/// `base`.
pub fn access_store_path(config: &GatewayConfig, base: &Path) -> PathBuf {
    base.join(config.auth.store.as_deref().unwrap_or("mcp-guard-access.db"))
}

/// The catalogue of a gateway whose servers have all made their first start.
#[derive(Debug)]
#[non_exhaustive]
pub struct Catalogue {
    /// The gateway (its endpoints' snapshots hold the catalogue).
    pub gateway: Gateway,
    /// The pin gate (what is approved, quarantined).
    pub pins: Arc<mcp_guard_core::pin::PinGate>,
}

/// The HTTP gateway a configuration describes, ready to serve.
pub struct GatewayServer {
    reloader: super::Reloader,
    built: Built,
    router: axum::Router,
    sessions: Sessions,
    close_sessions: CancellationToken,
    pre_auth: PreAuth,
    sink: Arc<dyn AuditSink>,
    forwarders: Forwarders,
    tracing: Option<super::telemetry::Tracing>,
    grace: Duration,
    path_prefix: String,
    known: Arc<KnownSecrets>,
}

impl std::fmt::Debug for GatewayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayServer")
            .field("gateway", &self.built.gateway)
            .field("path_prefix", &self.path_prefix)
            .finish_non_exhaustive()
    }
}

impl GatewayServer {
    /// Every route of the gateway (the MCP endpoints, the authorization server and
    /// upstream sign-in pages when configured, `/healthz`, `/readyz`, `/metrics`,
    /// the protected-resource metadata). It has no fallback, so it merges into an app
    /// that has its own; serve it with `into_make_service_with_connect_info::<SocketAddr>()`
    /// so the limits before authentication can tell sources apart.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// [`Self::router`] with a fallback that answers `404 no such endpoint` (counted
    /// against the limits before authentication): what the binary serves.
    pub fn app(&self) -> axum::Router {
        let not_found =
            axum::Router::new().fallback(|| async { (http::StatusCode::NOT_FOUND, "no such endpoint\n") });
        self.router
            .clone()
            .merge(self.pre_auth.wrap_mounted(not_found, &self.path_prefix))
    }

    /// The federated gateway: endpoints, servers, catalogues.
    pub fn gateway(&self) -> &Gateway {
        &self.built.gateway
    }

    /// Applies a new configuration to the next request, without a restart; see
    /// [`Reloader::reload`](super::Reloader::reload).
    ///
    /// # Errors
    /// Something in `new` does not build; the running configuration stays.
    pub async fn reload(&self, new: super::LoadedConfig) -> Result<super::ReloadReport, ServerError> {
        self.reloader.reload(new).await
    }

    /// A handle that reloads this gateway while [`Self::serve`] runs (for a signal
    /// handler or a file watcher).
    pub fn reloader(&self) -> super::Reloader {
        self.reloader.clone()
    }

    /// The gateway sessions (for listing and revoking in process).
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// What the stack counts.
    pub fn metrics(&self) -> &Metrics {
        &self.built.metrics
    }

    /// The audit forwarders (`[audit.forward.*]`) and their status.
    pub fn forwarders(&self) -> &Forwarders {
        &self.forwarders
    }

    /// The registry of secrets scrubbed from responses, audit records and logs.
    pub fn known_secrets(&self) -> &Arc<KnownSecrets> {
        &self.known
    }

    /// Cancelled when [`Self::shutdown`] closes the sessions: end your listener's
    /// graceful shutdown on it (open SSE streams end with their sessions).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.close_sessions.clone()
    }

    /// Waits until every server's first start has ended; a name that two started
    /// servers both produce is an error then (as it would have been had the gateway
    /// waited for them before serving), and so is a `[[labels]]` tool glob that
    /// matches no tool of the servers it names.
    ///
    /// # Errors
    /// A name collision, or a label naming no tool.
    pub async fn started(&self) -> Result<StartupReport, ServerError> {
        Ok(startup_report(&self.built).await?)
    }

    /// Serves [`Self::app`] on `listener` until `stop` completes or the servers' first
    /// start reveals a name collision, then shuts down as [`Self::shutdown`] does.
    /// `on_started` is called once every server's first start has ended.
    ///
    /// # Errors
    /// A name collision, a listener failure, or the audit trail cannot be flushed.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        stop: impl Future<Output = ()> + Send,
        on_started: impl FnOnce(&StartupReport) + Send,
    ) -> Result<(), ServerError> {
        let stop_accepting = CancellationToken::new();
        let server = tokio::spawn(crate::http::serve(listener, self.app(), stop_accepting.clone()));
        let mut stop = std::pin::pin!(stop);
        let failed = tokio::select! {
            () = &mut stop => None,
            report = startup_report(&self.built) => match report {
                Ok(r) => {
                    on_started(&r);
                    stop.await;
                    None
                }
                Err(e) => Some(e),
            },
        };
        stop_accepting.cancel();
        let result = self.shutdown().await;
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the listener failed while stopping"),
            Err(_) => tracing::warn!("connections still open 5 s after sessions closed; stopping anyway"),
            _ => {}
        }
        match failed {
            Some(e) => Err(ServerError(e)),
            None => result,
        }
    }

    /// Stops: new requests are refused, those in flight get up to
    /// `gateway.shutdown_grace_secs` (then an error, each still audited), every session
    /// and stream is closed, every upstream stopped, and the audit trail flushed.
    ///
    /// # Errors
    /// The audit trail cannot be flushed.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        drain(&self.built.drain, self.grace).await;
        self.close_sessions.cancel();
        self.built.gateway.shutdown().await;
        session_dir::release_kept();
        self.pre_auth.flush().await;
        let flushed = self.sink.flush().await.context("flushing the audit trail");
        self.forwarders.stop(super::forward::STOP_GRACE).await;
        if let Some(t) = self.tracing {
            t.shutdown().await;
        }
        flushed?;
        tracing::info!(processes = mcp_guard_core::upstream::live_processes(), "stopped");
        Ok(())
    }
}

/// How the servers' first start ended.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StartupReport {
    /// Servers connected.
    pub connected: Vec<String>,
    /// Enabled servers that did not connect (retried on use).
    pub not_connected: Vec<String>,
}

impl std::fmt::Display for StartupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstreams started: {} connected", self.connected.len())?;
        if !self.not_connected.is_empty() {
            write!(
                f,
                ", {} not ({}); they are retried on use",
                self.not_connected.len(),
                self.not_connected.join(", ")
            )?;
        }
        Ok(())
    }
}

async fn startup_report(built: &Built) -> anyhow::Result<StartupReport> {
    let gateway = &built.gateway;
    gateway.started().await;
    if let Some(c) = gateway.collisions().into_iter().next() {
        return Err(c.into());
    }
    super::flow::check_labels(&built.labels, gateway).await?;
    let mut report = StartupReport::default();
    for (id, upstream, enabled) in gateway.servers() {
        if !enabled {
            continue;
        }
        match upstream.status().state {
            UpstreamState::Connected => report.connected.push(id.to_string()),
            _ => report.not_connected.push(id.to_string()),
        }
    }
    Ok(report)
}

/// The stdio front door of one endpoint, ready to serve.
pub struct StdioGateway {
    reloader: super::Reloader,
    built: Built,
    handler: GuardHandler,
    session: Arc<Session>,
    maintain_stop: CancellationToken,
    sink: Arc<dyn AuditSink>,
    forwarders: Forwarders,
    tracing: Option<super::telemetry::Tracing>,
    grace: Duration,
}

impl std::fmt::Debug for StdioGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioGateway")
            .field("session", &self.session.id())
            .finish_non_exhaustive()
    }
}

impl StdioGateway {
    /// The federated gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.built.gateway
    }

    /// A handle that reloads this gateway while [`Self::serve`] runs; see
    /// [`Reloader::reload`](super::Reloader::reload). The principal stays the one the
    /// front door was built with (`auth.stdio_principal` needs a restart).
    pub fn reloader(&self) -> super::Reloader {
        self.reloader.clone()
    }

    /// Serves one client on stdin/stdout until it disconnects, `stop` completes, the
    /// session is revoked, or the servers' first start reveals a name collision; then
    /// drains, stops the upstreams and flushes the audit trail.
    ///
    /// # Errors
    /// A name collision, the transport fails, or the audit trail cannot be flushed.
    pub async fn serve(
        self,
        stop: impl Future<Output = ()> + Send,
        on_started: impl FnOnce(&StartupReport) + Send,
    ) -> Result<(), ServerError> {
        self.serve_inner(stop, on_started).await.map_err(ServerError)
    }

    async fn serve_inner(
        self,
        stop: impl Future<Output = ()> + Send,
        on_started: impl FnOnce(&StartupReport) + Send,
    ) -> anyhow::Result<()> {
        // The servers start in the background; the first start of each ending is
        // reported (and a name collision ends the gateway) whether or not a client is
        // talking yet.
        let mut startup = std::pin::pin!(startup_report(&self.built));
        let mut on_started = Some(on_started);
        let mut startup_done = false;
        let serving = self.handler.clone().serve(crate::stdio::guarded_stdio());
        let mut serving = std::pin::pin!(serving);
        let running = loop {
            tokio::select! {
                r = &mut serving => break r?,
                outcome = &mut startup, if !startup_done => {
                    startup_done = true;
                    match outcome {
                        Ok(r) => if let Some(f) = on_started.take() { f(&r) },
                        Err(e) => {
                            self.built.gateway.shutdown().await;
                            return Err(e);
                        }
                    }
                }
            }
        };
        let cancel = running.cancellation_token();
        let mut waiting = std::pin::pin!(running.waiting());
        let mut stop = std::pin::pin!(stop);
        let mut failed = None;
        loop {
            tokio::select! {
                _ = &mut waiting => break,
                () = &mut stop => {
                    drain(&self.built.drain, self.grace).await;
                    cancel.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut waiting).await;
                    break;
                }
                outcome = &mut startup, if !startup_done => {
                    startup_done = true;
                    match outcome {
                        Ok(r) => if let Some(f) = on_started.take() { f(&r) },
                        Err(e) => {
                            cancel.cancel();
                            let _ = tokio::time::timeout(Duration::from_secs(5), &mut waiting).await;
                            failed = Some(e);
                            break;
                        }
                    }
                }
                () = self.session.closed().cancelled() => {
                    // Revoked (`sessions revoke` in another shell): the client is served no more.
                    tracing::warn!(session = %self.session.id(), "the stdio session was revoked; stopping");
                    drain(&self.built.drain, self.grace).await;
                    cancel.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut waiting).await;
                    break;
                }
            }
        }
        self.built.gateway.shutdown().await;
        session_dir::release_kept();
        self.maintain_stop.cancel();
        let flushed = self.sink.flush().await.context("flushing the audit trail");
        self.forwarders.stop(super::forward::STOP_GRACE).await;
        if let Some(t) = self.tracing {
            t.shutdown().await;
        }
        flushed?;
        failed.map_or(Ok(()), Err)
    }
}

/// Applies revocations from other processes and expiries every 250 ms, and keeps the
/// sessions gauge current, until `stop`; then closes every session.
fn keep_sessions(sessions: &Sessions, report: impl Fn(usize) + Send + 'static, stop: &CancellationToken) {
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

/// Refuses new requests, waits up to `grace` for those in flight, then answers the rest
/// with an error (each still gets its audit record) and gives their answers a moment
/// to reach the clients.
async fn drain(drain: &Drain, grace: Duration) {
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
