//! The HTTP transports: a signed JSON webhook, Splunk HEC and OTLP/HTTP logs.
//!
//! Each request carries a batch of records; a 2xx answer acknowledges all of them,
//! anything else (or no answer in time) sends the batch again after a delay, and a
//! 413 makes the forwarder halve the batch.

use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

use super::tls::{TlsOptions, client_config};
use super::{ForwardError, ForwardRecord, Sent, Severity, Transport, chain, excerpt};

/// What every HTTP transport needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Where to POST.
    pub url: String,
    /// How the receiver's certificate is checked (for `https://`).
    pub tls: TlsOptions,
    /// Extra headers; values are secrets (an `Authorization` header, a key).
    pub headers: Vec<(String, SecretString)>,
    /// Connect and request timeout.
    pub timeout: Duration,
}

impl HttpOptions {
    /// POST to `url`, the system's trust store, a 10 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls: TlsOptions::default(),
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A reqwest client that checks certificates as `tls` says, with `timeout` for
/// connecting and for each request, no proxy from the environment and no redirects
/// (the receivers' client; the gateway's trace exporter uses it too).
///
/// # Errors
/// [`ForwardError::Setup`] when the TLS settings are unusable.
pub fn http_client(tls: &TlsOptions, timeout: Duration) -> Result<reqwest::Client, ForwardError> {
    let config = client_config(tls)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured((*config).clone())
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ForwardError::Setup(format!("HTTP client: {}", chain(&e))))
}

/// One HTTP client and the URL, shared by the three transports.
#[derive(Debug)]
struct Poster {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
}

impl Poster {
    fn new(o: &HttpOptions) -> Result<Self, ForwardError> {
        let url = reqwest::Url::parse(&o.url).map_err(|e| ForwardError::Setup(format!("{}: {e}", o.url)))?;
        let client = http_client(&o.tls, o.timeout)?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &o.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ForwardError::Setup(format!("{name:?} is not a header name")))?;
            #[expect(
                clippy::disallowed_methods,
                reason = "a configured header value meets the receiver's request here"
            )]
            let mut value = reqwest::header::HeaderValue::from_str(value.expose_secret())
                .map_err(|_| ForwardError::Setup(format!("the value of header {name} is not valid")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Self {
            client,
            url,
            headers,
            timeout: o.timeout,
        })
    }

    fn destination(&self, kind: &str) -> String {
        let mut u = self.url.clone();
        u.set_query(None);
        let _ = u.set_username("");
        let _ = u.set_password(None);
        format!("{kind} {u}")
    }

    /// POSTs `body`; `Ok` on a 2xx answer.
    async fn post(
        &self,
        destination: String,
        content_type: &str,
        extra: &[(&str, String)],
        body: Vec<u8>,
        records: usize,
    ) -> Result<String, ForwardError> {
        let mut req = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type);
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        let resp = req.body(body).send().await.map_err(|e| {
            if e.is_timeout() {
                ForwardError::Timeout {
                    destination: destination.clone(),
                    secs: self.timeout.as_secs(),
                }
            } else if e.is_connect() {
                let reason = chain(&e.without_url());
                if reason.contains("certificate") || reason.contains("TLS") || reason.contains("tls") {
                    ForwardError::Tls {
                        destination: destination.clone(),
                        reason,
                    }
                } else {
                    ForwardError::Connect {
                        destination: destination.clone(),
                        reason,
                    }
                }
            } else {
                ForwardError::Send {
                    destination: destination.clone(),
                    reason: chain(&e.without_url()),
                }
            }
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(text)
        } else if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            Err(ForwardError::TooLarge { destination, records })
        } else {
            Err(ForwardError::Refused {
                destination,
                status: status.as_u16(),
                body: excerpt(&text),
            })
        }
    }
}

/// The name of the header that carries a webhook's signature by default.
pub const SIGNATURE_HEADER: &str = "X-MCP-Guard-Signature";

/// POSTs records as JSON, signed with HMAC-SHA256.
///
/// The body is a JSON array whose elements are the records exactly as stored
/// (`[{"seq":1,"prev":..,"event":{..},"hash":..},...]`), or with `ndjson` one record
/// per line. The header `X-MCP-Guard-Signature: sha256=<hex>` (name configurable) is
/// HMAC-SHA256 over the body with the shared key, as GitHub signs its webhooks; a
/// receiver recomputes it over the raw body before parsing. A replayed request only
/// repeats records the receiver already has (same `seq` and `hash`). An empty array
/// is a connectivity check (`check --connect`).
pub struct WebhookTransport {
    poster: Poster,
    key: SecretString,
    signature_header: String,
    ndjson: bool,
}

impl std::fmt::Debug for WebhookTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTransport")
            .field("destination", &self.destination())
            .finish_non_exhaustive()
    }
}

impl WebhookTransport {
    /// A webhook to `options.url` signed with `key`; `ndjson` for one record per line.
    ///
    /// # Errors
    /// [`ForwardError::Setup`] for an unusable URL, header or TLS setting.
    pub fn new(options: &HttpOptions, key: SecretString, ndjson: bool) -> Result<Self, ForwardError> {
        Ok(Self {
            poster: Poster::new(options)?,
            key,
            signature_header: SIGNATURE_HEADER.to_owned(),
            ndjson,
        })
    }

    /// Carries the signature in `name` instead of [`SIGNATURE_HEADER`].
    #[must_use]
    pub fn signature_header(mut self, name: impl Into<String>) -> Self {
        self.signature_header = name.into();
        self
    }

    /// `sha256=<hex>` of `body`.
    pub fn sign(key: &SecretString, body: &[u8]) -> String {
        #[expect(
            clippy::disallowed_methods,
            reason = "the webhook key meets the data only inside the HMAC computation"
        )]
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()) else {
            return String::new();
        };
        m.update(body);
        format!("sha256={}", crate::hex::encode(&m.finalize().into_bytes()))
    }

    fn body(&self, records: &[ForwardRecord]) -> Vec<u8> {
        let mut body = Vec::with_capacity(records.iter().map(|r| r.line.len() + 1).sum::<usize>() + 2);
        if self.ndjson {
            for r in records {
                body.extend_from_slice(r.line.as_bytes());
                body.push(b'\n');
            }
        } else {
            body.push(b'[');
            for (i, r) in records.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(r.line.as_bytes());
            }
            body.push(b']');
        }
        body
    }

    async fn post(&self, records: &[ForwardRecord]) -> Result<String, ForwardError> {
        let body = self.body(records);
        let signature = Self::sign(&self.key, &body);
        let content_type = if self.ndjson {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        self.poster
            .post(
                self.destination(),
                content_type,
                &[(self.signature_header.as_str(), signature)],
                body,
                records.len(),
            )
            .await
    }
}

#[async_trait]
impl Transport for WebhookTransport {
    fn destination(&self) -> String {
        self.poster.destination("webhook")
    }

    async fn send(&mut self, records: &[ForwardRecord]) -> Result<Sent, ForwardError> {
        self.post(records).await?;
        Ok(Sent::Acknowledged)
    }

    async fn check(&mut self) -> Result<String, ForwardError> {
        self.post(&[]).await?;
        Ok("accepted an empty signed batch".to_owned())
    }
}

/// Sends records to Splunk's HTTP Event Collector (`/services/collector/event`).
///
/// Each record is one HEC event, the batch their concatenation: `time` (the
/// event's start, seconds with microseconds), `host`, `source`, `sourcetype`,
/// `index` when configured, and `event`: the record exactly as stored (an object
/// with `seq`, `prev`, `event`, `hash`). The token goes in `Authorization: Splunk
/// <token>`. With indexer acknowledgement off, HEC's 200 means the events were
/// received.
pub struct SplunkHecTransport {
    poster: Poster,
    token: SecretString,
    host: String,
    source: String,
    sourcetype: String,
    index: Option<String>,
}

impl std::fmt::Debug for SplunkHecTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplunkHecTransport")
            .field("destination", &self.destination())
            .finish_non_exhaustive()
    }
}

impl SplunkHecTransport {
    /// HEC at `options.url` with `token`; source `mcp-guard`, sourcetype
    /// `mcp-guard:audit`, the token's default index.
    ///
    /// # Errors
    /// [`ForwardError::Setup`] for an unusable URL, header or TLS setting.
    pub fn new(options: &HttpOptions, token: SecretString) -> Result<Self, ForwardError> {
        Ok(Self {
            poster: Poster::new(options)?,
            token,
            host: super::syslog::local_hostname(),
            source: "mcp-guard".to_owned(),
            sourcetype: "mcp-guard:audit".to_owned(),
            index: None,
        })
    }

    /// Sets `source`, `sourcetype` and `index` (each when given).
    #[must_use]
    pub fn fields(
        mut self,
        source: Option<String>,
        sourcetype: Option<String>,
        index: Option<String>,
    ) -> Self {
        if let Some(s) = source {
            self.source = s;
        }
        if let Some(s) = sourcetype {
            self.sourcetype = s;
        }
        self.index = index.or(self.index);
        self
    }

    fn body(&self, records: &[ForwardRecord]) -> Vec<u8> {
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
        let mut meta = format!(
            ",\"host\":{},\"source\":{},\"sourcetype\":{}",
            quoted(&self.host),
            quoted(&self.source),
            quoted(&self.sourcetype)
        );
        if let Some(i) = &self.index {
            let _ = write!(meta, ",\"index\":{}", quoted(i));
        }
        let mut body = String::with_capacity(records.iter().map(|r| r.line.len() + meta.len() + 64).sum());
        for r in records {
            let micros = r
                .system_time()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .unwrap_or_default()
                .as_micros();
            let _ = writeln!(
                body,
                "{{\"time\":{}.{:06}{meta},\"event\":{}}}",
                micros / 1_000_000,
                micros % 1_000_000,
                r.line
            );
        }
        body.into_bytes()
    }

    fn authorization(&self) -> String {
        #[expect(
            clippy::disallowed_methods,
            reason = "the HEC token meets the receiver's request here"
        )]
        let token = self.token.expose_secret();
        format!("Splunk {token}")
    }
}

#[async_trait]
impl Transport for SplunkHecTransport {
    fn destination(&self) -> String {
        self.poster.destination("splunk_hec")
    }

    async fn send(&mut self, records: &[ForwardRecord]) -> Result<Sent, ForwardError> {
        let body = self.body(records);
        self.poster
            .post(
                self.destination(),
                "application/json",
                &[("authorization", self.authorization())],
                body,
                records.len(),
            )
            .await?;
        Ok(Sent::Acknowledged)
    }

    async fn check(&mut self) -> Result<String, ForwardError> {
        // HEC answers an empty request with 400 "No data" (code 5) once the token is
        // accepted, and 401/403 for a bad token.
        match self
            .poster
            .post(
                self.destination(),
                "application/json",
                &[("authorization", self.authorization())],
                Vec::new(),
                0,
            )
            .await
        {
            Ok(_) => Ok("accepted the token".to_owned()),
            Err(ForwardError::Refused {
                status: 400, body, ..
            }) if body.contains("\"code\":5") => {
                Ok("accepted the token (\"No data\" for an empty request)".to_owned())
            }
            Err(e) => Err(e),
        }
    }
}

/// Sends records as OpenTelemetry log records over OTLP/HTTP, JSON encoding (POST to
/// the `/v1/logs` URL).
///
/// One `ResourceLogs` with `service.name` (and `host.name`), one scope
/// `mcp-guard.audit`, one log record per audit record: `timeUnixNano` (the event's
/// start), `severityNumber` (INFO 9, notice as INFO2 10, WARN 13), `body` the record
/// exactly as stored (a string), and attributes for searching:
/// `mcp_guard.audit.seq`, `.hash`, `.prev`, `event.name` (`mcp_guard.audit.<type>`),
/// and when present `mcp.method.name`, `gen_ai.tool.name`, `mcp_guard.server`,
/// `mcp_guard.endpoint`, `mcp_guard.principal`, `mcp_guard.outcome`,
/// `mcp.session.id`. A record with a trace id carries it as `traceId`, so the
/// backend links it to the call's trace.
pub struct OtlpLogsTransport {
    poster: Poster,
    service: String,
    host: String,
}

impl std::fmt::Debug for OtlpLogsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpLogsTransport")
            .field("destination", &self.destination())
            .finish_non_exhaustive()
    }
}

fn attr_str(out: &mut String, key: &str, value: &str) {
    let _ = write!(
        out,
        "{}{{\"key\":{},\"value\":{{\"stringValue\":{}}}}}",
        if out.ends_with('[') { "" } else { "," },
        serde_json::to_string(key).unwrap_or_default(),
        serde_json::to_string(value).unwrap_or_default()
    );
}

impl OtlpLogsTransport {
    /// OTLP logs to `options.url` (the full `/v1/logs` URL) as service `service`.
    ///
    /// # Errors
    /// [`ForwardError::Setup`] for an unusable URL, header or TLS setting.
    pub fn new(options: &HttpOptions, service: impl Into<String>) -> Result<Self, ForwardError> {
        Ok(Self {
            poster: Poster::new(options)?,
            service: service.into(),
            host: super::syslog::local_hostname(),
        })
    }

    fn body(&self, records: &[ForwardRecord]) -> Vec<u8> {
        let mut out =
            String::with_capacity(records.iter().map(|r| r.line.len() * 2 + 512).sum::<usize>() + 256);
        out.push_str("{\"resourceLogs\":[{\"resource\":{\"attributes\":[");
        attr_str(&mut out, "service.name", &self.service);
        attr_str(&mut out, "host.name", &self.host);
        let _ = write!(
            out,
            "]}},\"scopeLogs\":[{{\"scope\":{{\"name\":\"mcp-guard.audit\",\"version\":\"{}\"}},\"logRecords\":[",
            env!("CARGO_PKG_VERSION")
        );
        let observed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let nanos = r
                .system_time()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(observed, |d| d.as_nanos());
            let (number, text) = match r.severity() {
                Severity::Warning => (13, "WARN"),
                Severity::Notice => (10, "INFO2"),
                _ => (9, "INFO"),
            };
            let _ = write!(
                out,
                "{{\"timeUnixNano\":\"{nanos}\",\"observedTimeUnixNano\":\"{observed}\",\"severityNumber\":{number},\"severityText\":\"{text}\",\"body\":{{\"stringValue\":{}}},\"attributes\":[",
                serde_json::to_string(&r.line).unwrap_or_default()
            );
            let _ = write!(
                out,
                "{{\"key\":\"mcp_guard.audit.seq\",\"value\":{{\"intValue\":\"{}\"}}}}",
                r.seq
            );
            attr_str(&mut out, "mcp_guard.audit.hash", &r.hash);
            attr_str(&mut out, "mcp_guard.audit.prev", &r.prev);
            attr_str(
                &mut out,
                "event.name",
                &format!("mcp_guard.audit.{}", r.event_type()),
            );
            let e = &r.event;
            let at = |path: &[&str]| path.iter().try_fold(e, |v, k| v.get(k))?.as_str();
            for (key, value) in [
                ("mcp.method.name", at(&["method"])),
                ("gen_ai.tool.name", at(&["target", "name"])),
                ("mcp_guard.server", at(&["target", "server"])),
                ("mcp_guard.endpoint", at(&["endpoint"])),
                ("mcp_guard.principal", at(&["principal", "id"])),
                ("mcp_guard.outcome", at(&["outcome"])),
                ("mcp.session.id", at(&["session"])),
                ("mcp_guard.phase", at(&["phase"])),
            ] {
                if let Some(v) = value {
                    attr_str(&mut out, key, v);
                }
            }
            out.push(']');
            if let Some(t) =
                at(&["trace_id"]).filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                let _ = write!(out, ",\"traceId\":\"{}\"", t.to_ascii_lowercase());
            }
            out.push('}');
        }
        out.push_str("]}]}]}");
        out.into_bytes()
    }
}

#[async_trait]
impl Transport for OtlpLogsTransport {
    fn destination(&self) -> String {
        self.poster.destination("otlp")
    }

    async fn send(&mut self, records: &[ForwardRecord]) -> Result<Sent, ForwardError> {
        let body = self.body(records);
        let answer = self
            .poster
            .post(self.destination(), "application/json", &[], body, records.len())
            .await?;
        // A partial success names records the collector dropped: that is a refusal,
        // and the batch is sent again.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&answer)
            && let Some(p) = v.get("partialSuccess")
        {
            let rejected = p
                .get("rejectedLogRecords")
                .and_then(|n| {
                    n.as_str()
                        .and_then(|s| s.parse::<u64>().ok())
                        .or_else(|| n.as_u64())
                })
                .unwrap_or(0);
            if rejected > 0 {
                return Err(ForwardError::Refused {
                    destination: self.destination(),
                    status: 200,
                    body: excerpt(&format!(
                        "rejected {rejected} log records: {}",
                        p.get("errorMessage").and_then(|m| m.as_str()).unwrap_or_default()
                    )),
                });
            }
        }
        Ok(Sent::Acknowledged)
    }

    async fn check(&mut self) -> Result<String, ForwardError> {
        self.poster
            .post(
                self.destination(),
                "application/json",
                &[],
                b"{\"resourceLogs\":[]}".to_vec(),
                0,
            )
            .await?;
        Ok("accepted an empty export".to_owned())
    }
}
