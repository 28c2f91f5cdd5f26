//! Reading a config file and turning it into a running gateway.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mcp_guard_core::config::{
    EffectConfig, GatewayConfig, Isolation, ModeConfig, PrincipalConfig, ServerConfig,
};
use mcp_guard_core::pin::{GateMode, HostileTextPolicy, LockFile, PinGate, ToolGate};
use mcp_guard_core::redact::RedactionConfig;
use mcp_guard_core::upstream::oauth::{OAuthConnector, OAuthGate, OAuthMode};
use mcp_guard_core::upstream::{
    Connector, HttpConnector, HttpSpec, MakeInstance, MakeUpstream, PerSessionUpstream, ProcessBudget,
    RecheckCredentials, SessionLimits, SseConnector, StdioConnector, StdioSpec, Template, UpstreamOptions,
};
use mcp_guard_core::{
    AuditSink, Grant, GrantPolicy, Principal, Redactor, RmcpUpstream, TargetKind, Upstream,
};
use mcp_guard_tower::metrics::CountingRedactor;
use mcp_guard_tower::{
    AuditLayer, Drain, DrainLayer, EndpointSpec, EnforcePolicyLayer, Gateway, GuardService, Metrics,
    MetricsLayer, Rate, RateLimitLayer, RateLimits, Router, Selection,
};
use mcp_guard_tower::{EndpointRedactors, RedactRequestsLayer, RedactResponsesLayer};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

/// A config file, parsed and validated, with its text for error locations.
pub(crate) struct Loaded {
    pub(crate) config: GatewayConfig,
    pub(crate) warnings: Vec<String>,
}

/// The 1-based line where `entry` (a dotted path such as `servers.github.url`) is
/// defined, found by looking for its table header or key.
fn line_of(text: &str, entry: &str) -> Option<usize> {
    let path: Vec<&str> = entry.split(['.', '[']).collect();
    // Longest prefix first: `[servers.github]` for `servers.github.url`, then the key.
    for n in (1..=path.len()).rev() {
        let prefix = path[..n].join(".");
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.starts_with('[') && l.trim_matches(['[', ']']).trim() == prefix {
                // Prefer the key line inside the table when the entry goes deeper.
                if n < path.len() {
                    let key = path[n];
                    for (j, inner) in text.lines().enumerate().skip(i + 1) {
                        let t = inner.trim();
                        if t.starts_with('[') {
                            break;
                        }
                        if t.split('=')
                            .next()
                            .is_some_and(|k| k.trim().trim_matches('"') == key)
                        {
                            return Some(j + 1);
                        }
                    }
                }
                return Some(i + 1);
            }
        }
    }
    None
}

pub(crate) fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config: GatewayConfig = match toml::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .map(|l| format!("{l}:"))
                .unwrap_or_default();
            bail!("{}:{line} {}", path.display(), e.message());
        }
    };
    let locate = |entry: &str| match line_of(&text, entry) {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    };
    match config.validate() {
        Ok(w) => Ok(Loaded {
            warnings: w
                .0
                .iter()
                .map(|e| format!("{}: warning: {e}", locate(&e.entry)))
                .collect(),
            config,
        }),
        Err(errors) => {
            let lines: Vec<String> = errors
                .0
                .iter()
                .map(|e| format!("{}: {e}", locate(&e.entry)))
                .collect();
            bail!("invalid configuration:\n{}", lines.join("\n"))
        }
    }
}

/// `${MCP_GUARD_SESSION}` in a stdio server's environment: the gateway session id
/// (`s_` and hex), so a per-session process can have its own files
/// (`MEMORY_FILE_PATH = "/var/lib/memory/${MCP_GUARD_SESSION}.jsonl"`). The catalogue
/// instance and the stdio front door get `catalogue` and `stdio`.
pub(crate) const SESSION_PLACEHOLDER: &str = "${MCP_GUARD_SESSION}";

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

pub(crate) fn principal(p: &PrincipalConfig) -> Principal {
    let mut out = Principal::new(p.id.clone(), p.kind).with_roles(p.roles.iter().cloned());
    if let Some(u) = &p.on_behalf_of {
        out = out.acting_for(u.clone());
    }
    for (k, v) in &p.attributes {
        out = out.with_attribute(k.clone(), v.clone());
    }
    out
}

/// Everything a front door needs: the gateway and the guard stack.
pub(crate) struct Built {
    pub(crate) gateway: Gateway,
    pub(crate) service: GuardService,
    /// What the stack counts (served at `/metrics`).
    pub(crate) metrics: Metrics,
    /// Requests in flight, for graceful shutdown.
    pub(crate) drain: Drain,
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
}

impl OwnInstance {
    /// `principal`'s instance: personal names resolve to its own credentials only
    /// (`Declared`), shared ones as for everyone. Before each call the credentials are
    /// resolved again: removed ones stop the process and the call reports them
    /// missing; replaced ones restart it.
    fn for_principal(&self, principal: Arc<str>) -> Arc<dyn Upstream> {
        self.instance(principal, "stdio")
    }

    /// Like [`Self::for_principal`], with `${MCP_GUARD_SESSION}` set to `session`.
    fn instance(&self, principal: Arc<str>, session: &str) -> Arc<dyn Upstream> {
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
    stores: &crate::credentials::Stores,
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
    let make: MakeUpstream = Arc::new(move |session| own(session.principal_id().into()));
    let mut per_session = PerSessionUpstream::new(catalogue, make, SessionLimits::default());
    if let Some(u) = sessionless {
        per_session = per_session.sessionless(u);
    }
    Arc::new(per_session)
}

pub(crate) fn upstreams(
    config: &GatewayConfig,
    stores: &crate::credentials::Stores,
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
        let upstream: Arc<dyn Upstream> = match server {
            ServerConfig::Stdio(s) => {
                let mut spec = StdioSpec::new(s.command.clone(), s.args.clone());
                let per_session_env = s
                    .env
                    .values()
                    .any(|v| v.contains(SESSION_PLACEHOLDER))
                    .then(|| s.env.clone());
                let catalogue_env = with_session(&s.env, "catalogue");
                spec.env = templates(&catalogue_env).with_context(|| format!("servers.{id}.env"))?;
                spec.cwd = s.cwd.clone().map(Into::into);
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
                    };
                    let sessionless = personal_stdio.map(|p| own.for_principal(p.clone()));
                    let make: MakeUpstream =
                        Arc::new(move |session| own.instance(session.principal_id().into(), &session.id().0));
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
                    let mut per_session =
                        PerSessionUpstream::new(shared, make, limits).budget(budget.clone());
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

/// Compiles `[[grants]]`; an unnamed grant is named after its entry (`grants[2]`), so
/// audit records and `explain` point at the config.
pub(crate) fn policy(config: &GatewayConfig) -> anyhow::Result<GrantPolicy> {
    let mut b = GrantPolicy::builder();
    for (i, g) in config.grants.iter().enumerate() {
        let mut grant = match g.effect {
            EffectConfig::Deny => Grant::deny(),
            _ => Grant::allow(),
        };
        grant = grant
            .named(g.name.clone().unwrap_or_else(|| format!("grants[{i}]")))
            .principals(g.principals.iter().cloned())
            .roles(g.roles.iter().cloned())
            .endpoints(g.endpoints.iter().cloned())
            .servers(g.servers.iter().cloned())
            .kinds(g.kinds.iter().copied().map(TargetKind::from))
            .names(g.names.iter().cloned());
        if let Some(k) = g.principal_kind {
            grant = grant.principal_kind(k);
        }
        if let Some(t) = &g.endpoint {
            let c = t
                .endpoint_condition()
                .map_err(|(suffix, m)| anyhow::anyhow!("grants[{i}].endpoint{suffix}: {m}"))?;
            grant = grant.when(c);
        }
        for (j, w) in g.when.iter().enumerate() {
            let c = w
                .condition()
                .map_err(|(suffix, m)| anyhow::anyhow!("grants[{i}].when[{j}]{suffix}: {m}"))?;
            grant = grant.when(c);
        }
        b = b.grant(grant);
    }
    Ok(b.build()?)
}

/// `[rate_limits]` as tower limits; `None` when no scope is set.
pub(crate) fn rate_limits(config: &GatewayConfig) -> anyhow::Result<Option<RateLimits>> {
    let mut limits = RateLimits::new();
    for (name, rate) in config.rate_limits.scopes() {
        let Some(r) = rate else { continue };
        let rate = Rate::per_minute(r.per_minute)
            .and_then(|x| x.burst(r.burst.unwrap_or(r.per_minute)))
            .with_context(|| format!("rate_limits.{name}"))?;
        limits = match name {
            "per_principal" => limits.per_principal(rate),
            "per_tool" => limits.per_tool(rate),
            _ => limits.per_principal_tool(rate),
        };
    }
    Ok((!limits.is_empty()).then_some(limits))
}

/// The lock file of `config` (read from `config_path`) and the gate built on it.
pub(crate) struct Pinning {
    pub(crate) path: std::path::PathBuf,
    pub(crate) gate: Arc<PinGate>,
}

fn mode(m: ModeConfig) -> GateMode {
    match m {
        ModeConfig::Warn => GateMode::Warn,
        ModeConfig::Off => GateMode::Off,
        _ => GateMode::Enforce,
    }
}

pub(crate) fn pinning(config: &GatewayConfig, config_path: &Path) -> anyhow::Result<Pinning> {
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let path = dir.join(config.pinning.lock_file.as_deref().unwrap_or("mcp-guard.lock"));
    let lock = LockFile::load(&path)?;
    let pins = config.pinning.mode.map_or(
        if lock.is_some() {
            GateMode::Enforce
        } else {
            GateMode::Off
        },
        mode,
    );
    let hostile = config.pinning.hostile_text.map_or(GateMode::Enforce, mode);
    let mut policy = HostileTextPolicy::default();
    if let Some(n) = config.pinning.max_description_chars {
        policy.max_description_chars = n;
    }
    let gate = PinGate::new(lock.unwrap_or_default(), pins, hostile).with_policy(policy);
    Ok(Pinning {
        path,
        gate: Arc::new(gate),
    })
}

pub(crate) async fn build(
    config: &GatewayConfig,
    credentials: &crate::credentials::Stores,
    audit: Arc<dyn AuditSink>,
    redactor: Arc<dyn Redactor>,
    gate: Option<Arc<dyn ToolGate>>,
) -> anyhow::Result<Built> {
    let mut builder = Gateway::builder()
        .separator(config.gateway.separator.clone())
        .audit(audit.clone());
    if let Some(gate) = gate {
        builder = builder.gate(gate);
    }
    for (upstream, enabled) in upstreams(config, credentials, &redactor)? {
        builder = if enabled {
            builder.server(upstream)
        } else {
            builder.disabled_server(upstream)
        };
    }
    for (name, ep) in &config.endpoints {
        let mut spec = EndpointSpec::new(name.as_str());
        if !ep.namespace {
            spec = spec.without_namespace();
        }
        if let Some(d) = &ep.description {
            spec = spec.description(d.clone());
        }
        for (sid, sel) in &ep.servers {
            let mut s = Selection::none()
                .tools(&sel.tools)?
                .prompts(&sel.prompts)?
                .resources(&sel.resources)?;
            if !sel.enabled {
                s = s.disabled();
            }
            spec = spec.server(sid.as_str(), s);
        }
        builder = builder.endpoint(spec);
    }
    let gateway = builder.build().await?;
    // Responses always lose secrets and known credentials; endpoints add personal data.
    let metrics = Metrics::new();
    let counted = |r: Arc<dyn Redactor>, direction| -> Arc<dyn Redactor> {
        Arc::new(CountingRedactor::new(r, metrics.clone(), direction))
    };
    let mut secrets_only = RedactionConfig::default();
    secrets_only.detect.clear();
    let mut requests = EndpointRedactors::new(None);
    let mut responses = EndpointRedactors::new(Some(counted(
        Arc::new(secrets_only.build(Some(crate::known_secrets()))),
        "response",
    )));
    for (name, ep) in &config.endpoints {
        let r: Arc<dyn Redactor> = Arc::new(ep.redaction.rules.build(Some(crate::known_secrets())));
        if ep.redaction.requests {
            requests = requests.with(name.as_str(), counted(r.clone(), "request"));
        }
        if ep.redaction.responses {
            responses = responses.with(name.as_str(), counted(r, "response"));
        }
    }
    let mut audit_layer = AuditLayer::new(audit, redactor)
        .payload_cap(config.audit.payload_cap_bytes)
        .record_lists(config.audit.record_lists);
    if config.audit.dangerously_fail_open {
        tracing::warn!(
            "audit.dangerously_fail_open is set: calls go through even when they cannot be recorded"
        );
        audit_layer = audit_layer.dangerous().fail_open();
    }
    let drain = Drain::new();
    let stack = ServiceBuilder::new()
        .layer(MetricsLayer::new(metrics.clone()))
        .layer(DrainLayer::new(drain.clone()))
        .layer(audit_layer)
        .layer(DrainLayer::abort_point(drain.clone()))
        .layer(EnforcePolicyLayer::new(policy(config)?))
        .option_layer(rate_limits(config)?.map(RateLimitLayer::new))
        .layer(RedactRequestsLayer::new(requests))
        .layer(RedactResponsesLayer::new(responses))
        .service(Router::new());
    Ok(Built {
        gateway,
        service: BoxCloneSyncService::new(stack),
        metrics,
        drain,
    })
}

#[cfg(test)]
mod tests {
    use super::line_of;

    #[test]
    fn finds_tables_and_keys() {
        let text = "[gateway]\nlisten = \"x\"\n\n[servers.github]\ntransport = \"http\"\nurl = \"ftp://x\"\n\n[endpoints.eng.servers.github]\ntools = [\"[a\"]\n";
        assert_eq!(line_of(text, "servers.github.url"), Some(6));
        assert_eq!(line_of(text, "servers.github"), Some(4));
        assert_eq!(line_of(text, "endpoints.eng.servers.github.tools"), Some(9));
        assert_eq!(line_of(text, "gateway.listen"), Some(2));
        assert_eq!(line_of(text, "nothing.here"), None);
    }
}
