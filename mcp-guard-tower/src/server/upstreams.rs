//! The configured servers as upstreams: stdio servers with their per-session
//! processes, HTTP servers with personal headers or personal OAuth, legacy SSE.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mcp_guard_core::config::{GatewayConfig, Isolation, PrincipalConfig, ServerConfig, StdioServerConfig};
use mcp_guard_core::upstream::oauth::{OAuthConnector, OAuthGate, OAuthMode};
use mcp_guard_core::upstream::{
    Connector, HttpConnector, HttpSpec, MakeInstance, MakeUpstream, PerSessionUpstream, ProcessBudget,
    RecheckCredentials, SessionLimits, SseConnector, StdioConnector, StdioSpec, Template, UpstreamOptions,
};
use mcp_guard_core::{Principal, Redactor, RmcpUpstream, Upstream};
use tokio_util::sync::CancellationToken;

/// `${MCP_GUARD_SESSION}` in a stdio server's environment: the gateway session id
/// (`s_` and hex), so a per-session process can have its own files
/// (`MEMORY_FILE_PATH = "/var/lib/memory/${MCP_GUARD_SESSION}/memory.jsonl"`; such a
/// directory is created 0700 for the session and removed when it ends). The catalogue
/// instance of an HTTP gateway gets `catalogue`; under `serve --stdio` every process gets the id
/// of the stdio front door's one session.
pub const SESSION_PLACEHOLDER: &str = "${MCP_GUARD_SESSION}";

fn with_session(map: &BTreeMap<String, String>, session: &str) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| (k.clone(), v.replace(SESSION_PLACEHOLDER, session)))
        .collect()
}

fn templates(map: &BTreeMap<String, String>) -> anyhow::Result<BTreeMap<String, Template>> {
    map.iter()
        .map(|(k, v)| Ok((k.clone(), Template::parse(v).map_err(anyhow::Error::msg)?)))
        .collect()
}

/// A principal as the configuration writes it (`{ id, kind, roles, on_behalf_of,
/// attributes }`).
pub fn principal(p: &PrincipalConfig) -> Principal {
    let mut out = Principal::new(p.id.clone(), p.kind).with_roles(p.roles.iter().cloned());
    if let Some(u) = &p.on_behalf_of {
        out = out.acting_for(u.clone());
    }
    for (k, v) in &p.attributes {
        out = out.with_attribute(k.clone(), v.clone());
    }
    out
}

/// What it takes to start one principal's own instance of a stdio server.
struct OwnInstance {
    server: String,
    spec: StdioSpec,
    credentials: Arc<dyn mcp_guard_core::CredentialStore>,
    redactor: Arc<dyn Redactor>,
    options: UpstreamOptions,
    personal: Vec<String>,
    /// The environment as configured, when it names `${MCP_GUARD_SESSION}`.
    per_session_env: Option<BTreeMap<String, String>>,
    /// The session name of processes that serve no HTTP gateway session.
    catalogue_session: Arc<str>,
}

impl OwnInstance {
    /// `principal`'s instance: personal names resolve to its own credentials only
    /// (`Declared`), shared ones as for everyone. Before each call the credentials are
    /// resolved again: removed ones stop the process and the call reports them
    /// missing; replaced ones restart it. `${MCP_GUARD_SESSION}` is the catalogue
    /// session's name (the stdio front door's session).
    fn for_principal(&self, principal: Arc<str>) -> Arc<dyn Upstream> {
        let dirs = self.session_dirs(&self.catalogue_session.clone(), None);
        super::session_dir::keep(&dirs);
        self.instance(principal, &self.catalogue_session.clone(), dirs)
    }

    /// The directories the environment names for `session` (see
    /// [`session_dir`](super::session_dir)), kept until `until` is cancelled and the instance
    /// holding them stopped.
    fn session_dirs(
        &self,
        session: &str,
        until: Option<&CancellationToken>,
    ) -> Vec<Arc<super::session_dir::SessionDir>> {
        self.per_session_env.as_ref().map_or_else(Vec::new, |raw| {
            super::session_dir::acquire_all(raw, session, self.spec.cwd.as_deref(), until)
        })
    }

    /// Like [`Self::for_principal`], with `${MCP_GUARD_SESSION}` set to `session`, and
    /// the session's directories held by the instance (until it is dropped after
    /// its process stopped).
    fn instance(
        &self,
        principal: Arc<str>,
        session: &str,
        dirs: Vec<Arc<super::session_dir::SessionDir>>,
    ) -> Arc<dyn Upstream> {
        let mut spec = self.spec.clone();
        if let Some(raw) = &self.per_session_env
            && let Ok(env) = templates(&with_session(raw, session))
        {
            spec.env = env;
        }
        let (server, spec, credentials, redactor, options, p) = (
            self.server.clone(),
            spec,
            self.credentials.clone(),
            self.redactor.clone(),
            self.options.clone(),
            principal.clone(),
        );
        let instance: MakeInstance = Arc::new(move || {
            // Each (re)start finds its directories in place.
            for d in &dirs {
                d.ensure();
            }
            let c = StdioConnector::new(server.as_str(), spec.clone(), credentials.clone())
                .for_principal(p.clone())
                .redact_stderr(redactor.clone());
            Arc::new(RmcpUpstream::new(server.as_str(), c, options.clone()))
        });
        Arc::new(
            RecheckCredentials::new(
                self.server.as_str(),
                Some(principal),
                self.spec.env.values().cloned().collect(),
                self.credentials.clone(),
                instance,
            )
            .personal_names(self.personal.iter().cloned()),
        )
    }
}

/// An HTTP server: one connection for everyone, or (personal header credentials,
/// personal OAuth) one per gateway session with the principal's own credentials and a
/// separate listing connection.
fn http_upstream(
    id: &str,
    personal: &[String],
    spec: HttpSpec,
    stores: &super::credentials::Stores,
    options: UpstreamOptions,
) -> Arc<dyn Upstream> {
    let oauth = stores.oauth.get(id).cloned();
    let personal_oauth = oauth
        .as_ref()
        .filter(|o| o.spec().mode == OAuthMode::Personal)
        .cloned();
    if personal.is_empty() && personal_oauth.is_none() {
        let connector: Arc<dyn Connector> = match oauth {
            Some(o) => Arc::new(OAuthConnector::new(o, spec, stores.calls.clone())),
            None => Arc::new(HttpConnector::new(id, spec, stores.calls.clone())),
        };
        return Arc::new(RmcpUpstream::from_arc(id, connector, options));
    }
    // The listing connection: without the personal headers; for OAuth without a token
    // unless the server refuses that, then with the first signed-in principal's.
    let catalogue: Arc<dyn Connector> = if let Some(o) = &personal_oauth {
        Arc::new(OAuthConnector::new(
            o.clone(),
            spec.clone(),
            stores.listing.clone(),
        ))
    } else {
        let mut listing = spec.clone();
        listing
            .headers
            .retain(|_, t| !t.names().any(|n| personal.iter().any(|p| p == n)));
        Arc::new(HttpConnector::new(id, listing, stores.listing.clone()))
    };
    let catalogue: Arc<dyn Upstream> = Arc::new(RmcpUpstream::from_arc(id, catalogue, options.clone()));
    if let Some(o) = &personal_oauth {
        // A listing connection may be waiting for a first signed-in principal.
        let weak = Arc::downgrade(&catalogue);
        o.on_sign_in(move |_| {
            if let Some(c) = weak.upgrade() {
                tokio::spawn(async move { c.refresh().await });
            }
        });
    }
    let (id, calls, personal): (Arc<str>, _, Vec<String>) =
        (id.into(), stores.calls.clone(), personal.to_vec());
    let own = move |p: Arc<str>| -> Arc<dyn Upstream> {
        let (id2, spec2, calls2, options2, p2, o2) = (
            id.clone(),
            spec.clone(),
            calls.clone(),
            options.clone(),
            p.clone(),
            personal_oauth.clone(),
        );
        let instance: MakeInstance = Arc::new(move || {
            let c: Arc<dyn Connector> = match &o2 {
                Some(o) => Arc::new(
                    OAuthConnector::new(o.clone(), spec2.clone(), calls2.clone()).for_principal(p2.clone()),
                ),
                None => Arc::new(
                    HttpConnector::new(id2.clone(), spec2.clone(), calls2.clone()).for_principal(p2.clone()),
                ),
            };
            Arc::new(RmcpUpstream::from_arc(id2.clone(), c, options2.clone()))
        });
        let recheck: Arc<dyn Upstream> = Arc::new(
            RecheckCredentials::new(
                id.clone(),
                Some(p.clone()),
                spec.headers.values().cloned().collect(),
                calls.clone(),
                instance,
            )
            .personal_names(personal.iter().cloned()),
        );
        match &personal_oauth {
            Some(o) => Arc::new(OAuthGate::new(o.clone(), p, recheck)),
            None => recheck,
        }
    };
    let sessionless = stores.catalogue_principal.clone().map(&own);
    // Personal credentials are the session subject's: an agent acting for alice uses
    // alice's.
    let make: MakeUpstream = Arc::new(move |session| own(session.subject().into()));
    let mut per_session = PerSessionUpstream::new(catalogue, make, SessionLimits::default());
    if let Some(u) = sessionless {
        per_session = per_session.sessionless(u);
    }
    Arc::new(per_session)
}

pub(super) fn upstreams(
    config: &GatewayConfig,
    stores: &super::credentials::Stores,
    stderr_redactor: &Arc<dyn Redactor>,
) -> anyhow::Result<Vec<(Arc<dyn Upstream>, bool)>> {
    let credentials = &stores.calls;
    let mut out = Vec::new();
    let budget = ProcessBudget::new(config.gateway.max_upstream_processes);
    for (id, server) in &config.servers {
        let mut options = UpstreamOptions::default();
        options.request_timeout = Some(Duration::from_secs(
            server
                .timeout_secs()
                .unwrap_or(config.gateway.request_timeout_secs),
        ));
        options.max_response_bytes = server
            .max_response_bytes()
            .unwrap_or(config.gateway.max_response_bytes);
        options.catalogue_refresh = Duration::from_secs(
            server
                .catalogue_refresh_secs()
                .unwrap_or(config.gateway.catalogue_refresh_secs),
        );
        options.connect_timeout = server.start_timeout();
        options.protocol = server.protocol();
        let upstream: Arc<dyn Upstream> = match server {
            ServerConfig::Stdio(s) => {
                let mut spec = StdioSpec::new(s.command.clone(), s.args.clone());
                let per_session_env = s
                    .env
                    .values()
                    .any(|v| v.contains(SESSION_PLACEHOLDER))
                    .then(|| s.env.clone());
                spec.cwd = s.cwd.clone().map(Into::into);
                let catalogue_session = catalogue_session(stores, per_session_env.as_ref(), &spec);
                let catalogue_env = with_session(&s.env, &catalogue_session);
                spec.env = templates(&catalogue_env).with_context(|| format!("servers.{id}.env"))?;
                // The catalogue instance of a per-session server serves no one's calls
                // over HTTP: personal names are blank there. Over stdio (one client) it
                // also serves the stdio principal's calls, unless the server has
                // personal names: then those go to that principal's own instance.
                let personal_stdio = (!s.personal.is_empty())
                    .then_some(stores.catalogue_principal.as_ref())
                    .flatten();
                let mut c = match (&stores.catalogue_principal, s.isolation) {
                    (_, Isolation::Shared) => {
                        StdioConnector::new(id.as_str(), spec.clone(), credentials.clone())
                    }
                    (Some(p), _) if personal_stdio.is_none() => {
                        StdioConnector::new(id.as_str(), spec.clone(), credentials.clone())
                            .for_principal(p.clone())
                    }
                    _ => StdioConnector::new(id.as_str(), spec.clone(), stores.listing.clone()),
                };
                c = c.redact_stderr(stderr_redactor.clone());
                let always = 1 + usize::from(personal_stdio.is_some() && s.isolation != Isolation::Shared);
                reserve_always(&budget, id, always)?;
                let shared: Arc<dyn Upstream> = Arc::new(RmcpUpstream::new(id.as_str(), c, options.clone()));
                if s.isolation == Isolation::Shared {
                    shared
                } else {
                    let own = OwnInstance {
                        server: id.clone(),
                        spec: spec.clone(),
                        credentials: credentials.clone(),
                        redactor: stderr_redactor.clone(),
                        options: options.clone(),
                        personal: s.personal.clone(),
                        per_session_env,
                        catalogue_session,
                    };
                    let sessionless = personal_stdio.map(|p| own.for_principal(p.clone()));
                    // Personal credentials are the session subject's (an agent acting
                    // for alice uses alice's); the session's directories end with it.
                    let make: MakeUpstream = Arc::new(move |session| {
                        let dirs = own.session_dirs(&session.id().0, Some(session.closed()));
                        own.instance(session.subject().into(), &session.id().0, dirs)
                    });
                    let mut per_session =
                        PerSessionUpstream::new(shared, make, session_limits(s)).budget(budget.clone());
                    if let Some(u) = sessionless {
                        per_session = per_session.sessionless(u);
                    }
                    Arc::new(per_session)
                }
            }
            ServerConfig::Http(h) => {
                let mut spec = HttpSpec::new(h.url.clone());
                spec.headers = templates(&h.headers).with_context(|| format!("servers.{id}.headers"))?;
                spec.reuse_connections = h.reuse_connections;
                http_upstream(id, &h.personal, spec, stores, options)
            }
            ServerConfig::Sse(h) => {
                let mut spec = HttpSpec::new(h.url.clone());
                spec.headers = templates(&h.headers).with_context(|| format!("servers.{id}.headers"))?;
                spec.reuse_connections = h.reuse_connections;
                Arc::new(RmcpUpstream::new(
                    id.as_str(),
                    SseConnector::new(id.as_str(), spec, credentials.clone()),
                    options,
                ))
            }
            _ => bail!("servers.{id}: unsupported transport"),
        };
        out.push((upstream, server.enabled()));
    }
    Ok(out)
}

/// The limits on a per-session stdio server's processes.
fn session_limits(s: &StdioServerConfig) -> SessionLimits {
    let mut limits = SessionLimits::default();
    if let Some(n) = s.max_processes {
        limits.max_total = n;
    }
    if let Some(n) = s.max_processes_per_principal {
        limits.max_per_principal = n;
    }
    if let Some(t) = s.idle_timeout_secs {
        limits.idle_timeout = Duration::from_secs(t);
    }
    limits
}

/// What `${MCP_GUARD_SESSION}` names in a stdio server's processes that serve no HTTP
/// gateway session (`catalogue`, or the stdio front door's session id); the
/// directories it names are kept until the gateway stops.
fn catalogue_session(
    stores: &super::credentials::Stores,
    per_session_env: Option<&BTreeMap<String, String>>,
    spec: &StdioSpec,
) -> Arc<str> {
    let name = stores
        .catalogue_session
        .clone()
        .unwrap_or_else(|| "catalogue".into());
    if let Some(env) = per_session_env {
        super::session_dir::keep(&super::session_dir::acquire_all(
            env,
            &name,
            spec.cwd.as_deref(),
            None,
        ));
    }
    name
}

/// Counts a stdio server's processes that always run (the shared or catalogue one, and
/// the stdio principal's own where there is one) against `gateway.max_upstream_processes`.
fn reserve_always(budget: &ProcessBudget, id: &str, always: usize) -> anyhow::Result<()> {
    if !budget.reserve(always) {
        bail!(
            "gateway.max_upstream_processes = {} leaves no room for servers.{id}'s process",
            budget.limit()
        );
    }
    Ok(())
}
