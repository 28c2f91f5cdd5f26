//! The audit forwarders `[audit.forward.*]` names: transports from configuration,
//! started on the trails the sinks opened.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mcp_guard_core::audit::DurableHead;
use mcp_guard_core::audit::forward::{
    ForwardOptions, Forwarder, Forwarders, HttpOptions, OtlpLogsTransport, SplunkHecTransport, SyslogOptions,
    SyslogTransport, TlsOptions, TrailSource, Transport, WebhookTransport,
};
use mcp_guard_core::config::{
    AuditSection, AuditSinkKind, ForwardConfig, ForwardKind, SYSLOG_FACILITIES, WebhookFormat,
};
use mcp_guard_core::redact::KnownSecrets;

use super::auth::env_secret;

/// The durable trails the configured sinks write, with their durable heads.
#[derive(Debug, Default)]
pub(crate) struct Trails(Vec<(AuditSinkKind, TrailSource, DurableHead)>);

impl Trails {
    pub(crate) fn add(&mut self, kind: AuditSinkKind, source: TrailSource, head: DurableHead) {
        self.0.push((kind, source, head));
    }

    fn get(&self, kind: AuditSinkKind) -> Option<(&TrailSource, &DurableHead)> {
        self.0.iter().find(|(k, ..)| *k == kind).map(|(_, s, h)| (s, h))
    }
}

/// How long forwarders get at shutdown to deliver what is durable (and, for syslog,
/// to see it confirmed); what is left goes after the next start.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

/// The transport one entry describes; secrets from the environment (registered with
/// `known`, so they are scrubbed from everything the gateway writes).
pub(crate) fn transport(
    name: &str,
    f: &ForwardConfig,
    base: &Path,
    known: &KnownSecrets,
) -> anyhow::Result<Box<dyn Transport>> {
    let entry = format!("audit.forward.{name}");
    let url = url::Url::parse(&f.url).with_context(|| format!("{entry}.url"))?;
    let mut tls = TlsOptions::default();
    tls.ca_file = f.ca_file.as_ref().map(|p| base.join(p));
    tls.server_name.clone_from(&f.server_name);
    tls.dangerously_accept_invalid_certs = f.dangerously_accept_invalid_certs;
    let timeout = Duration::from_secs(f.timeout_secs.unwrap_or(10));
    let http = || -> anyhow::Result<HttpOptions> {
        let mut o = HttpOptions::new(f.url.clone());
        o.tls = tls.clone();
        o.timeout = timeout;
        for (k, v) in &f.headers {
            o.headers
                .push((k.clone(), env_secret(&format!("{entry}.headers.{k}"), v, known)?));
        }
        Ok(o)
    };
    let secret = |field: &str, v: Option<&String>| -> anyhow::Result<secrecy::SecretString> {
        let v = v.with_context(|| format!("{entry}.{field} is required"))?;
        env_secret(&format!("{entry}.{field}"), v, known)
    };
    let built: Box<dyn Transport> = match f.kind {
        ForwardKind::Syslog => {
            let host = url.host_str().with_context(|| format!("{entry}.url: no host"))?;
            let port = url.port().with_context(|| format!("{entry}.url: no port"))?;
            let mut o = SyslogOptions::new(format!("{host}:{port}"));
            o.tls = (url.scheme() == "tls").then_some(tls);
            if let Some(fac) = &f.facility {
                o.facility = SYSLOG_FACILITIES
                    .iter()
                    .find(|(n, _)| n == fac)
                    .map(|(_, c)| *c)
                    .with_context(|| format!("{entry}.facility: unknown facility {fac:?}"))?;
            }
            if let Some(a) = &f.app_name {
                o.app_name.clone_from(a);
            }
            if let Some(h) = &f.hostname {
                o.hostname.clone_from(h);
            }
            o.timeout = timeout;
            o.confirm = Duration::from_millis(f.confirm_ms.unwrap_or(2000));
            Box::new(SyslogTransport::new(o).with_context(|| entry.clone())?)
        }
        ForwardKind::Webhook => {
            let key = secret("hmac_secret", f.hmac_secret.as_ref())?;
            let ndjson = f.format == Some(WebhookFormat::Ndjson);
            let mut t = WebhookTransport::new(&http()?, key, ndjson).with_context(|| entry.clone())?;
            if let Some(h) = &f.signature_header {
                t = t.signature_header(h.clone());
            }
            Box::new(t)
        }
        ForwardKind::SplunkHec => {
            let token = secret("token", f.token.as_ref())?;
            Box::new(
                SplunkHecTransport::new(&http()?, token)
                    .with_context(|| entry.clone())?
                    .fields(f.source.clone(), f.sourcetype.clone(), f.index.clone()),
            )
        }
        ForwardKind::Otlp => Box::new(
            OtlpLogsTransport::new(
                &http()?,
                f.app_name.clone().unwrap_or_else(|| "mcp-guard".to_owned()),
            )
            .with_context(|| entry.clone())?,
        ),
        _ => bail!("{entry}.kind: unsupported"),
    };
    Ok(built)
}

fn options(f: &ForwardConfig) -> ForwardOptions {
    let mut o = ForwardOptions::default();
    if let Some(b) = f.batch {
        o.batch = b;
    }
    o.start_at = f.start_at;
    if let Some(ms) = f.retry_initial_ms {
        o.retry_initial = Duration::from_millis(ms);
    }
    if let Some(s) = f.retry_max_secs {
        o.retry_max = Duration::from_secs(s);
    }
    if let Some(s) = f.timeout_secs {
        o.send_timeout = Duration::from_secs(s.saturating_mul(3).max(30));
    }
    if let Some(w) = f.warn_backlog {
        o.warn_backlog = w;
    }
    o
}

/// Starts a forwarder for every enabled `[audit.forward.*]` entry on the trail it
/// reads. Every entry is built before any starts, so one bad entry starts none.
pub(crate) fn spawn(
    audit: &AuditSection,
    base: &Path,
    trails: Option<&Trails>,
    known: &KnownSecrets,
) -> anyhow::Result<Forwarders> {
    let mut ready = Vec::new();
    for (name, f) in audit.forward.iter().filter(|(_, f)| f.enabled) {
        let entry = format!("audit.forward.{name}");
        let Some(trails) = trails else {
            bail!(
                "{entry}: forwarders read the gateway's own durable trail; an audit sink given in code (ServerBuilder::audit_sink) has none"
            );
        };
        let kind = f
            .trail_of(&audit.sinks)
            .with_context(|| format!("{entry}: no durable sink (\"sqlite\" or \"jsonl\") in audit.sinks"))?;
        let (source, head) = trails
            .get(kind)
            .with_context(|| format!("{entry}.trail: audit.sinks does not write {kind:?}"))?;
        let t = transport(name, f, base, known)?;
        ready.push(Forwarder::new(name.clone(), t, source.clone(), head.clone()).options(options(f)));
    }
    Ok(Forwarders::new(ready.into_iter().map(Forwarder::spawn).collect()))
}

/// What `check --connect` found for one receiver.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReceiverCheck {
    /// The entry's name.
    pub name: String,
    /// Where records go (no secrets).
    pub destination: String,
    /// `false`: the entry is disabled and was not checked.
    pub enabled: bool,
    /// What was checked, or why it failed.
    pub result: Result<String, String>,
}

/// Connects to every configured receiver once without sending a record.
pub(crate) async fn check(audit: &AuditSection, base: &Path, known: &KnownSecrets) -> Vec<ReceiverCheck> {
    let mut out = Vec::new();
    for (name, f) in &audit.forward {
        let mut check = ReceiverCheck {
            name: name.clone(),
            destination: f.url.clone(),
            enabled: f.enabled,
            result: Ok(String::new()),
        };
        if f.enabled {
            match transport(name, f, base, known) {
                Ok(mut t) => {
                    check.destination = t.destination();
                    check.result = t.check().await.map_err(|e| e.to_string());
                }
                Err(e) => check.result = Err(format!("{e:#}")),
            }
        }
        out.push(check);
    }
    out
}
