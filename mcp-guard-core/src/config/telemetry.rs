//! `[telemetry]`: OpenTelemetry traces of the requests through the gateway.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::upstream::Template;

/// `[telemetry]`: a span for each MCP request through the gateway and one for each
/// call it makes to an upstream, with the MCP and generative-AI semantic-convention
/// attributes, exported over OTLP/HTTP. Off by default.
///
/// A client's W3C trace context (`traceparent`/`tracestate` in the request's `_meta`,
/// or the HTTP headers) makes the gateway's span its child; the upstream call's span
/// goes on to the upstream in `_meta` (and, for HTTP upstreams, as the `traceparent`
/// header). A trace the client did not sample is not recorded; one the gateway starts
/// is recorded with probability `sample_ratio`.
///
/// ```toml
/// [telemetry]
/// enabled = true
/// otlp_url = "http://127.0.0.1:4318/v1/traces"
/// sample_ratio = 0.25
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TelemetrySection {
    /// Record and export traces. Default `false`.
    pub enabled: bool,
    /// The collector's OTLP/HTTP traces URL (`.../v1/traces`). Default
    /// `http://127.0.0.1:4318/v1/traces`.
    pub otlp_url: String,
    /// `"json"` (the default) or `"protobuf"`.
    pub encoding: OtlpEncoding,
    /// The share of traces started by the gateway that are recorded, 0.0 to 1.0.
    /// Default 1.0. A client's sampling decision is followed.
    pub sample_ratio: f64,
    /// `service.name` of the spans. Default `mcp-guard`.
    pub service_name: String,
    /// Extra HTTP headers for the collector; values may hold `${VAR}` placeholders.
    pub headers: BTreeMap<String, String>,
    /// PEM file of the certificate authorities to trust for an `https://` collector
    /// (relative to the config file); default the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// DANGEROUS: accept any certificate from the collector.
    pub dangerously_accept_invalid_certs: bool,
    /// Export timeout in seconds. Default 10.
    pub timeout_secs: u64,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            enabled: false,
            otlp_url: "http://127.0.0.1:4318/v1/traces".to_owned(),
            encoding: OtlpEncoding::Json,
            sample_ratio: 1.0,
            service_name: "mcp-guard".to_owned(),
            headers: BTreeMap::new(),
            ca_file: None,
            dangerously_accept_invalid_certs: false,
            timeout_secs: 10,
        }
    }
}

/// How spans are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OtlpEncoding {
    /// OTLP/HTTP with JSON bodies.
    #[default]
    Json,
    /// OTLP/HTTP with protobuf bodies.
    Protobuf,
}

impl TelemetrySection {
    /// Checks the section.
    pub(super) fn validate(&self, errors: &mut Vec<ConfigError>, warnings: &mut Vec<ConfigError>) {
        let mut err = |field: &str, message: &str| {
            errors.push(ConfigError {
                entry: format!("telemetry.{field}"),
                message: message.to_owned(),
            });
        };
        match url::Url::parse(&self.otlp_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                if u.scheme() == "http" && (self.ca_file.is_some() || self.dangerously_accept_invalid_certs) {
                    err("ca_file", "applies to an https:// collector only");
                }
            }
            _ => err("otlp_url", "must be an http:// or https:// URL"),
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) || self.sample_ratio.is_nan() {
            err("sample_ratio", "must be between 0.0 and 1.0");
        }
        if self.service_name.trim().is_empty() {
            err("service_name", "must not be empty");
        }
        if self.timeout_secs == 0 {
            err("timeout_secs", "must be at least 1");
        }
        for (k, v) in &self.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                err(&format!("headers.{k}"), "is not a valid header name");
            }
            if let Err(m) = Template::parse(v) {
                err(&format!("headers.{k}"), &m);
            }
        }
        if self.enabled && self.dangerously_accept_invalid_certs {
            warnings.push(ConfigError {
                entry: "telemetry.dangerously_accept_invalid_certs".into(),
                message: "any certificate is accepted from the trace collector".into(),
            });
        }
    }
}
