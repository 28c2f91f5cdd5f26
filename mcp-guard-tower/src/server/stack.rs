//! The gateway and its guard stack, in the documented order, from a configuration.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use mcp_guard_core::config::{ApprovalMode, EffectConfig, GatewayConfig};
use mcp_guard_core::pin::ToolGate;
use mcp_guard_core::redact::{KnownSecrets, RedactionConfig};
use mcp_guard_core::{AuditSink, Grant, GrantPolicy, Redactor, TargetKind};
use rmcp::model::ServerResult;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use super::upstreams::upstreams;
use crate::metrics::CountingRedactor;
use crate::{
    AuditLayer, Drain, DrainLayer, EndpointRedactors, EndpointSpec, EnforcePolicyLayer, Gateway, GuardError,
    GuardService, McpRequest, Metrics, MetricsLayer, Rate, RateLimitLayer, RateLimits, RedactRequestsLayer,
    RedactResponsesLayer, Router, Selection,
};

/// Everything a front door needs: the gateway and the guard stack.
pub(crate) struct Built {
    pub(crate) gateway: Gateway,
    pub(crate) service: GuardService,
    /// What the stack counts (served at `/metrics`).
    pub(crate) metrics: Metrics,
    /// Requests in flight, for graceful shutdown.
    pub(crate) drain: Drain,
    /// The layers a reload replaces.
    pub(crate) guards: Arc<Guards>,
    /// `[[labels]]` as built, checked against the servers' tools once they started.
    pub(crate) labels: Vec<mcp_guard_core::config::LabelConfig>,
    /// The approvals the policy layer asks (kept across reloads); their page is served
    /// when the built-in sign-in is on.
    pub(crate) approvals: crate::approval::Approvals,
}

/// Compiles `[[grants]]` with `[[labels]]` and `[[flow_rules]]`; an unnamed grant is
/// named after its entry (`grants[2]`), so audit records and `explain` point at the
/// config.
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
        if g.approval == Some(ApprovalMode::Required) {
            grant = grant.approval_required();
        }
        b = b.grant(grant);
    }
    Ok(super::flow::rules(config, b)?.build()?)
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

/// `[endpoints]` as the federation takes them.
pub(crate) fn endpoint_specs(config: &GatewayConfig) -> anyhow::Result<Vec<EndpointSpec>> {
    let mut specs = Vec::new();
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
                .resources(&sel.resources)?
                .without_tools(&sel.disabled_tools);
            if !sel.enabled {
                s = s.disabled();
            }
            spec = spec.server(sid.as_str(), s);
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// Whether building the gateway waits for its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Startup {
    /// Every server's first start ends before the gateway is returned; a name collision
    /// is an error (commands that read the catalogue once).
    Wait,
    /// The servers start in the background (front doors, which answer at once).
    Background,
}

pub(crate) async fn build(
    config: &GatewayConfig,
    credentials: &super::credentials::Stores,
    audit: Arc<dyn AuditSink>,
    redactor: Arc<dyn Redactor>,
    gate: Option<Arc<dyn ToolGate>>,
    startup: Startup,
    telemetry: Option<crate::telemetry::Telemetry>,
) -> anyhow::Result<Built> {
    let mut builder = Gateway::builder()
        .separator(config.gateway.separator.clone())
        .startup_wait(Duration::from_millis(config.gateway.startup_wait_ms))
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
    for spec in endpoint_specs(config)? {
        builder = builder.endpoint(spec);
    }
    let gateway = match startup {
        Startup::Wait => builder.build().await?,
        Startup::Background => builder.start()?,
    };
    let metrics = Metrics::new();
    let approvals = super::flow::approvals(config, audit.clone(), redactor.clone());
    let guards = Arc::new(Guards::new(
        config,
        credentials.known.clone(),
        metrics.clone(),
        approvals.clone(),
    )?);
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
        .option_layer(telemetry.map(crate::telemetry::TelemetryLayer::new))
        .layer(MetricsLayer::new(metrics.clone()))
        .layer(DrainLayer::new(drain.clone()))
        .layer(audit_layer)
        .layer(DrainLayer::abort_point(drain.clone()))
        .service(guards.service());
    Ok(Built {
        gateway,
        service: BoxCloneSyncService::new(stack),
        metrics,
        drain,
        guards,
        labels: config.labels.clone(),
        approvals,
    })
}

/// The layers a reload replaces (policy, rate limits, request and response
/// redaction), over the router, behind one swappable service: each request runs
/// through the layers current when it entered, and a reload changes them for the next.
///
/// A lock rather than a lock-free cell: a request takes the read lock for the time of
/// one clone of a boxed service, a reload takes the write lock once.
pub(crate) struct Guards {
    current: Arc<RwLock<GuardService>>,
    /// Kept across reloads: calls parked on a client's answers find their way back.
    router: Router,
    /// Kept across reloads while `[rate_limits]` is unchanged, so a reload does not
    /// refill everyone's budget: the section as read, and the layer.
    limits: Mutex<(String, Option<RateLimitLayer>)>,
    known: Arc<KnownSecrets>,
    metrics: Metrics,
    /// Kept across reloads: pending questions and standing approvals outlive a reload.
    approvals: crate::approval::Approvals,
}

impl Guards {
    fn new(
        config: &GatewayConfig,
        known: Arc<KnownSecrets>,
        metrics: Metrics,
        approvals: crate::approval::Approvals,
    ) -> anyhow::Result<Self> {
        let limits = rate_limits(config)?.map(RateLimitLayer::new);
        let router = Router::new();
        let current = guard_layers(
            config,
            &known,
            &metrics,
            limits.clone(),
            router.clone(),
            &approvals,
        )?;
        Ok(Self {
            current: Arc::new(RwLock::new(current)),
            router,
            limits: Mutex::new((format!("{:?}", config.rate_limits), limits)),
            known,
            metrics,
            approvals,
        })
    }

    /// The service that runs each request through the current layers.
    fn service(&self) -> Current {
        Current(self.current.clone())
    }

    /// Builds the layers of `config`, without installing them.
    ///
    /// # Errors
    /// A grant, a rate limit or a pattern does not compile.
    pub(crate) fn prepare(&self, config: &GatewayConfig) -> anyhow::Result<Prepared> {
        let section = format!("{:?}", config.rate_limits);
        let kept = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = if kept.0 == section {
            kept.1.clone()
        } else {
            rate_limits(config)?.map(RateLimitLayer::new)
        };
        drop(kept);
        let service = guard_layers(
            config,
            &self.known,
            &self.metrics,
            limits.clone(),
            self.router.clone(),
            &self.approvals,
        )?;
        Ok(Prepared {
            service,
            limits: (section, limits),
        })
    }

    /// Installs layers [`Self::prepare`] built: the next request runs through them.
    pub(crate) fn install(&self, prepared: Prepared) {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner) = prepared.limits;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = prepared.service;
    }
}

/// Layers built for a reload, not yet installed.
pub(crate) struct Prepared {
    service: GuardService,
    limits: (String, Option<RateLimitLayer>),
}

/// Runs each request through the layers installed when it arrives.
#[derive(Clone)]
struct Current(Arc<RwLock<GuardService>>);

impl tower::Service<McpRequest> for Current {
    type Response = ServerResult;
    type Error = GuardError;
    type Future = tower::util::Oneshot<GuardService, McpRequest>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), GuardError>> {
        // Readiness is the installed service's, checked by `oneshot` on the call.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: McpRequest) -> Self::Future {
        let service = self.0.read().unwrap_or_else(PoisonError::into_inner).clone();
        tower::ServiceExt::oneshot(service, req)
    }
}

/// Policy, rate limits, request and response redaction over `router`: responses
/// always lose secrets and known credentials; endpoints add personal data.
fn guard_layers(
    config: &GatewayConfig,
    known: &Arc<KnownSecrets>,
    metrics: &Metrics,
    limits: Option<RateLimitLayer>,
    router: Router,
    approvals: &crate::approval::Approvals,
) -> anyhow::Result<GuardService> {
    let counted = |r: Arc<dyn Redactor>, direction| -> Arc<dyn Redactor> {
        Arc::new(CountingRedactor::new(r, metrics.clone(), direction))
    };
    let mut secrets_only = RedactionConfig::default();
    secrets_only.detect.clear();
    let mut requests = EndpointRedactors::new(None);
    let mut responses = EndpointRedactors::new(Some(counted(
        Arc::new(secrets_only.build(Some(known.clone()))),
        "response",
    )));
    for (name, ep) in &config.endpoints {
        let r: Arc<dyn Redactor> = Arc::new(ep.redaction.rules.build(Some(known.clone())));
        if ep.redaction.requests {
            requests = requests.with(name.as_str(), counted(r.clone(), "request"));
        }
        if ep.redaction.responses {
            responses = responses.with(name.as_str(), counted(r, "response"));
        }
    }
    let stack = ServiceBuilder::new()
        .layer(EnforcePolicyLayer::new(policy(config)?).approvals(approvals.clone()))
        .option_layer(limits)
        .layer(RedactRequestsLayer::new(requests))
        .layer(RedactResponsesLayer::new(responses))
        .service(router);
    Ok(BoxCloneSyncService::new(stack))
}
