//! `[audit.forward.<name>]`: audit records streamed to a SIEM or collector.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{AuditSinkKind, ConfigError};
use crate::upstream::Template;

/// `[audit.forward.<name>]`: one receiver that gets every audit record, read from the
/// durable local trail after it is on disk, at least once, in chain order, with its
/// `seq`, `prev` and `hash` (so the receiver can check the chain).
///
/// The forwarder keeps its place in a cursor file next to the trail; while the
/// receiver is down it retries with a growing delay and catches up afterwards. A call
/// never waits for a forwarder: the backlog is how far the cursor lags behind the
/// trail, shown on `/metrics`, in `/readyz` and by `mcp-guard status`.
///
/// ```toml
/// [audit.forward.siem]
/// kind = "syslog"                    # RFC 5424, octet-counted (RFC 6587)
/// url = "tls://siem.example.net:6514"  # or tcp://host:port
/// ca_file = "/etc/mcp-guard/siem-ca.pem"
///
/// [audit.forward.hook]
/// kind = "webhook"                   # a JSON array of records, signed
/// url = "https://hooks.example.net/mcp-guard"
/// hmac_secret = "${HOOK_SECRET}"
///
/// [audit.forward.splunk]
/// kind = "splunk_hec"
/// url = "https://splunk.example.net:8088/services/collector/event"
/// token = "${SPLUNK_HEC_TOKEN}"
/// index = "mcp"
///
/// [audit.forward.otel]
/// kind = "otlp"                      # OTLP/HTTP logs, JSON encoding
/// url = "http://127.0.0.1:4318/v1/logs"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ForwardConfig {
    /// The protocol.
    pub kind: ForwardKind,
    /// Where to: `tcp://host:port` or `tls://host:port` for syslog, an `http(s)://`
    /// URL for the others (Splunk: the `/services/collector/event` URL; OTLP: the
    /// `/v1/logs` URL).
    pub url: String,
    /// Which local trail to read: `"sqlite"` or `"jsonl"`; default the first durable
    /// sink of `audit.sinks`.
    #[serde(default)]
    pub trail: Option<AuditSinkKind>,
    /// `false` keeps the entry but forwards nothing.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where a new forwarder (no cursor yet) starts: `"beginning"` of the trail (the
    /// default: every record ever written) or `"end"` (records written from now on).
    #[serde(default)]
    pub start_at: StartAt,
    /// PEM file of the certificate authorities to trust for this receiver, instead of
    /// the system's (relative to the config file).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `syslog` over TLS: the name the receiver's certificate must carry, when it
    /// differs from the URL's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// DANGEROUS: accept any certificate from the receiver (a forged receiver then
    /// reads every record).
    #[serde(default)]
    pub dangerously_accept_invalid_certs: bool,
    /// Extra HTTP headers; values may hold `${VAR}` placeholders.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `webhook`: the key of the HMAC-SHA256 signature over each request body, as a
    /// `${VAR}` placeholder.
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// `webhook`: the header that carries `sha256=<hex>` (default
    /// `X-MCP-Guard-Signature`).
    #[serde(default)]
    pub signature_header: Option<String>,
    /// `webhook`: `"json"` (an array of records, the default) or `"ndjson"` (one
    /// record per line).
    #[serde(default)]
    pub format: Option<WebhookFormat>,
    /// `splunk_hec`: the HEC token, as a `${VAR}` placeholder.
    #[serde(default)]
    pub token: Option<String>,
    /// `splunk_hec`: the index (default: the token's).
    #[serde(default)]
    pub index: Option<String>,
    /// `splunk_hec`: the sourcetype (default `mcp-guard:audit`).
    #[serde(default)]
    pub sourcetype: Option<String>,
    /// `splunk_hec`: the source (default `mcp-guard`).
    #[serde(default)]
    pub source: Option<String>,
    /// `syslog`: the facility name (`audit`, the default, is RFC 5424's "log audit",
    /// 13; also `auth`, `authpriv`, `daemon`, `local0`..`local7`, ...).
    #[serde(default)]
    pub facility: Option<String>,
    /// `syslog`: APP-NAME (default `mcp-guard`); `otlp`: `service.name`.
    #[serde(default)]
    pub app_name: Option<String>,
    /// `syslog`: HOSTNAME (default this machine's name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// `syslog`: records count as delivered once the connection has stayed up this
    /// many milliseconds after they were written (syslog has no acknowledgement).
    /// Default 2000.
    #[serde(default)]
    pub confirm_ms: Option<u64>,
    /// Most records per request or write. Default 500.
    #[serde(default)]
    pub batch: Option<usize>,
    /// Connect and request timeout, in seconds. Default 10.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// First retry delay after a failure, in milliseconds (doubling up to
    /// `retry_max_secs`). Default 500.
    #[serde(default)]
    pub retry_initial_ms: Option<u64>,
    /// Longest retry delay, in seconds. Default 30.
    #[serde(default)]
    pub retry_max_secs: Option<u64>,
    /// Log a warning while the backlog is above this many records. Default 10000.
    #[serde(default)]
    pub warn_backlog: Option<u64>,
}

const fn yes() -> bool {
    true
}

/// The protocol of a forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ForwardKind {
    /// Syslog (RFC 5424) over TCP or TLS, octet-counted framing (RFC 6587).
    Syslog,
    /// An HTTP POST of the records as JSON, signed with HMAC-SHA256.
    Webhook,
    /// Splunk's HTTP Event Collector (`/services/collector/event`).
    SplunkHec,
    /// OpenTelemetry logs over OTLP/HTTP (JSON encoding).
    Otlp,
}

impl ForwardKind {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syslog => "syslog",
            Self::Webhook => "webhook",
            Self::SplunkHec => "splunk_hec",
            Self::Otlp => "otlp",
        }
    }
}

/// Where a forwarder without a cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StartAt {
    /// The first record of the trail.
    #[default]
    Beginning,
    /// After the newest record when the forwarder first starts.
    End,
}

/// The body of a webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WebhookFormat {
    /// `[record, record, ...]` (`application/json`).
    #[default]
    Json,
    /// One record per line (`application/x-ndjson`).
    Ndjson,
}

/// Syslog facility codes by name (RFC 5424 table 1).
pub const SYSLOG_FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("audit", 13),
    ("alert", 14),
    ("clock", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Checks every `[audit.forward.*]` entry against the sinks they may read.
pub(super) fn validate_forwarders(
    forward: &BTreeMap<String, ForwardConfig>,
    sinks: &[AuditSinkKind],
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    let durable: Vec<AuditSinkKind> = sinks
        .iter()
        .copied()
        .filter(|s| matches!(s, AuditSinkKind::Sqlite | AuditSinkKind::Jsonl))
        .collect();
    for (name, f) in forward {
        f.validate(name, &durable, errors);
        f.warn(name, warnings);
    }
}

impl ForwardConfig {
    /// The trail this forwarder reads, given `audit.sinks` (`None`: no durable sink).
    pub fn trail_of(&self, sinks: &[AuditSinkKind]) -> Option<AuditSinkKind> {
        self.trail.or_else(|| {
            sinks
                .iter()
                .copied()
                .find(|s| matches!(s, AuditSinkKind::Sqlite | AuditSinkKind::Jsonl))
        })
    }
}

fn is_placeholder(s: &str) -> bool {
    s.starts_with("${") && s.ends_with('}') && Template::parse(s).is_ok_and(|t| t.has_placeholders())
}

impl ForwardConfig {
    /// Checks one entry; `durable` is the durable sinks of `audit.sinks`, in order.
    #[allow(clippy::too_many_lines, reason = "one check per setting, in order")]
    fn validate(&self, name: &str, durable: &[AuditSinkKind], errors: &mut Vec<ConfigError>) {
        use ForwardKind::{Otlp, SplunkHec, Syslog, Webhook};
        let entry = format!("audit.forward.{name}");
        let mut err = |field: &str, message: &str| {
            errors.push(ConfigError {
                entry: if field.is_empty() {
                    entry.clone()
                } else {
                    format!("{entry}.{field}")
                },
                message: message.to_owned(),
            });
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            err(
                "",
                "forwarder names use [A-Za-z0-9_-] (they name the cursor file)",
            );
        }
        match self.trail {
            Some(t @ (AuditSinkKind::Sqlite | AuditSinkKind::Jsonl)) if !durable.contains(&t) => err(
                "trail",
                "names a sink that audit.sinks does not write; forwarders read a durable trail",
            ),
            Some(AuditSinkKind::Tracing) => err("trail", "must be \"sqlite\" or \"jsonl\""),
            None if durable.is_empty() => err(
                "",
                "forwarding reads the durable local trail: add \"sqlite\" or \"jsonl\" to audit.sinks",
            ),
            _ => {}
        }
        let url = url::Url::parse(&self.url);
        match (self.kind, &url) {
            (Syslog, Ok(u)) if matches!(u.scheme(), "tcp" | "tls") => {
                if u.host_str().is_none() || u.port().is_none() {
                    err(
                        "url",
                        "give a host and a port: tcp://host:port or tls://host:port",
                    );
                }
            }
            (Syslog, _) => err("url", "must be tcp://host:port or tls://host:port"),
            (_, Ok(u)) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            (_, _) => err("url", "must be an http:// or https:// URL"),
        }
        let tls = url.as_ref().is_ok_and(|u| matches!(u.scheme(), "tls" | "https"));
        if !tls {
            for (set, field) in [
                (self.ca_file.is_some(), "ca_file"),
                (
                    self.dangerously_accept_invalid_certs,
                    "dangerously_accept_invalid_certs",
                ),
            ] {
                if set {
                    err(field, "applies to tls:// and https:// receivers only");
                }
            }
        }
        let only = |set: bool, field: &str, kinds: &[ForwardKind], err: &mut dyn FnMut(&str, &str)| {
            if set && !kinds.contains(&self.kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                err(field, &format!("applies to kind {} only", names.join(" or ")));
            }
        };
        only(
            !self.headers.is_empty(),
            "headers",
            &[Webhook, SplunkHec, Otlp],
            &mut err,
        );
        only(self.hmac_secret.is_some(), "hmac_secret", &[Webhook], &mut err);
        only(
            self.signature_header.is_some(),
            "signature_header",
            &[Webhook],
            &mut err,
        );
        only(self.format.is_some(), "format", &[Webhook], &mut err);
        only(self.token.is_some(), "token", &[SplunkHec], &mut err);
        only(self.index.is_some(), "index", &[SplunkHec], &mut err);
        only(self.sourcetype.is_some(), "sourcetype", &[SplunkHec], &mut err);
        only(self.source.is_some(), "source", &[SplunkHec], &mut err);
        only(self.facility.is_some(), "facility", &[Syslog], &mut err);
        only(self.server_name.is_some(), "server_name", &[Syslog], &mut err);
        only(self.hostname.is_some(), "hostname", &[Syslog], &mut err);
        only(self.confirm_ms.is_some(), "confirm_ms", &[Syslog], &mut err);
        only(self.app_name.is_some(), "app_name", &[Syslog, Otlp], &mut err);
        for (field, value) in [("hmac_secret", &self.hmac_secret), ("token", &self.token)] {
            if let Some(v) = value
                && !is_placeholder(v)
            {
                err(
                    field,
                    "must be a ${NAME} placeholder (the value comes from the environment), never inline",
                );
            }
        }
        if self.kind == Webhook && self.hmac_secret.is_none() {
            err(
                "hmac_secret",
                "a webhook's records are signed: give hmac_secret = \"${NAME}\"",
            );
        }
        if self.kind == SplunkHec && self.token.is_none() {
            err("token", "Splunk HEC needs token = \"${NAME}\"");
        }
        for (k, v) in &self.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                err(&format!("headers.{k}"), "is not a valid header name");
            }
            if let Err(m) = Template::parse(v) {
                err(&format!("headers.{k}"), &m);
            }
        }
        if let Some(h) = &self.signature_header
            && http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            err("signature_header", "is not a valid header name");
        }
        if let Some(f) = &self.facility
            && !SYSLOG_FACILITIES.iter().any(|(n, _)| n == f)
        {
            err(
                "facility",
                "unknown facility (audit, auth, authpriv, daemon, local0..local7, ...)",
            );
        }
        let printable = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b))
        };
        if let Some(a) = &self.app_name
            && !printable(a, 48)
        {
            err("app_name", "1 to 48 printable ASCII characters without spaces");
        }
        if let Some(h) = &self.hostname
            && !printable(h, 255)
        {
            err("hostname", "1 to 255 printable ASCII characters without spaces");
        }
        if self.batch == Some(0) || self.batch.is_some_and(|b| b > 10_000) {
            err("batch", "must be between 1 and 10000");
        }
        if self.timeout_secs == Some(0) {
            err("timeout_secs", "must be at least 1");
        }
        if self.retry_initial_ms == Some(0) {
            err("retry_initial_ms", "must be at least 1");
        }
        if self.retry_max_secs == Some(0) {
            err("retry_max_secs", "must be at least 1");
        }
    }

    /// The warnings of one entry.
    fn warn(&self, name: &str, warnings: &mut Vec<ConfigError>) {
        if self.dangerously_accept_invalid_certs {
            warnings.push(ConfigError {
                entry: format!("audit.forward.{name}.dangerously_accept_invalid_certs"),
                message: "any certificate is accepted: whoever can intercept the connection reads every audit record"
                    .into(),
            });
        }
        if self.url.starts_with("tcp://") || self.url.starts_with("http://") {
            let local = url::Url::parse(&self.url).ok().is_some_and(|u| {
                matches!(u.host(), Some(url::Host::Ipv4(a)) if a.is_loopback())
                    || matches!(u.host(), Some(url::Host::Ipv6(a)) if a.is_loopback())
                    || u.host_str() == Some("localhost")
            });
            if !local {
                warnings.push(ConfigError {
                    entry: format!("audit.forward.{name}.url"),
                    message: "records travel unencrypted; use tls:// or https:// across a network".into(),
                });
            }
        }
    }
}
