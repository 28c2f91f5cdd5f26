//! `[telemetry]`: the OpenTelemetry tracer provider, exporting over OTLP/HTTP.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use mcp_guard_core::config::{OtlpEncoding, TelemetrySection};
use mcp_guard_core::redact::KnownSecrets;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use super::auth::env_secret;

/// The gateway's tracer provider, flushed and shut down with the gateway.
#[derive(Debug, Clone)]
pub(crate) struct Tracing {
    pub(crate) provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports what is left and stops the exporter (blocking work, off the runtime's
    /// threads: the exporter's requests run on the runtime).
    pub(crate) async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(Duration::from_secs(15), done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the trace exporter did not shut down cleanly"),
            _ => tracing::warn!("the trace exporter did not shut down in time"),
        }
    }
}

/// The exporter's HTTP client: the gateway's reqwest on the Tokio runtime it was
/// built on. The SDK's batch processor exports from its own thread; the request runs
/// on the runtime and the processor waits for its answer.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let request = reqwest::Request::try_from(request)?;
        let answer = self
            .runtime
            .spawn(async move {
                let resp = client.execute(request).await?;
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = resp.bytes().await?;
                Ok::<_, reqwest::Error>((status, headers, body))
            })
            .await??;
        let (status, headers, body) = answer;
        let mut out = Response::builder().status(status);
        if let Some(h) = out.headers_mut() {
            *h = headers;
        }
        Ok(out.body(body)?)
    }
}

/// The provider `[telemetry]` describes; `None` when it is off.
pub(crate) fn tracing_from(
    cfg: &TelemetrySection,
    base: &Path,
    known: &KnownSecrets,
) -> anyhow::Result<Option<Tracing>> {
    if !cfg.enabled {
        return Ok(None);
    }
    let mut tls = mcp_guard_core::audit::forward::TlsOptions::default();
    tls.ca_file = cfg.ca_file.as_ref().map(|p| base.join(p));
    tls.dangerously_accept_invalid_certs = cfg.dangerously_accept_invalid_certs;
    let timeout = Duration::from_secs(cfg.timeout_secs);
    let client = mcp_guard_core::audit::forward::http_client(&tls, timeout).context("telemetry")?;
    let mut headers = std::collections::HashMap::new();
    for (k, v) in &cfg.headers {
        let value = env_secret(&format!("telemetry.headers.{k}"), v, known)?;
        #[expect(
            clippy::disallowed_methods,
            reason = "a configured header value for the trace collector"
        )]
        headers.insert(k.clone(), secrecy::ExposeSecret::expose_secret(&value).to_owned());
    }
    let protocol = match cfg.encoding {
        OtlpEncoding::Protobuf => Protocol::HttpBinary,
        _ => Protocol::HttpJson,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(RuntimeClient {
            client,
            runtime: tokio::runtime::Handle::current(),
        })
        .with_endpoint(cfg.otlp_url.clone())
        .with_protocol(protocol)
        .with_timeout(timeout)
        .with_headers(headers)
        .build()
        .context("telemetry: the OTLP exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    tracing::info!(url = %cfg.otlp_url, ratio = cfg.sample_ratio, "traces go to the OTLP collector");
    Ok(Some(Tracing { provider }))
}
