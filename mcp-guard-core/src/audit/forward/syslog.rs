//! [`SyslogTransport`]: RFC 5424 messages over TCP or TLS with octet-counted framing
//! (RFC 6587 section 3.4.1; RFC 5425 for TLS).
//!
//! Each record is one message:
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG
//! ```
//!
//! `PRI` is the configured facility and the record's severity (info, notice,
//! warning), `TIMESTAMP` the event's `started_at`, `MSGID` its type (`request`,
//! `authentication_failed`, ...), no structured data, and `MSG` the sealed record
//! exactly as stored (JSON with `seq`, `prev`, `event`, `hash`), so the receiver can
//! check it. Syslog has no acknowledgement: a write counts as delivered once the
//! connection has stayed up for the confirmation window after it (see
//! [`Transport::confirm_after`]).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::tls::{TlsOptions, client_config, server_name};
use super::{ForwardError, ForwardRecord, Sent, Severity, Transport, chain};

/// Settings of a [`SyslogTransport`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyslogOptions {
    /// `host:port`.
    pub address: String,
    /// TLS (RFC 5425) when set; plain TCP otherwise.
    pub tls: Option<TlsOptions>,
    /// The facility code (13: log audit).
    pub facility: u8,
    /// APP-NAME.
    pub app_name: String,
    /// HOSTNAME.
    pub hostname: String,
    /// Connect and write timeout.
    pub timeout: Duration,
    /// How long the connection must stay up after a write before the write counts as
    /// delivered.
    pub confirm: Duration,
}

impl SyslogOptions {
    /// Plain TCP to `address` (`host:port`), facility `audit`, this machine's name.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            tls: None,
            facility: 13,
            app_name: "mcp-guard".to_owned(),
            hostname: local_hostname(),
            timeout: Duration::from_secs(10),
            confirm: Duration::from_secs(2),
        }
    }
}

/// This machine's name, or `-` (RFC 5424's nil value) when it cannot be read.
pub(crate) fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| (33..=126).contains(&b)))
        .unwrap_or_else(|| "-".to_owned())
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Stream for T {}

/// Sends records as syslog messages; see the [module docs](super).
pub struct SyslogTransport {
    options: SyslogOptions,
    tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    conn: Option<Box<dyn Stream>>,
    procid: String,
}

impl std::fmt::Debug for SyslogTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogTransport")
            .field("destination", &self.destination())
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl SyslogTransport {
    /// A transport with `options`; it connects on the first send.
    ///
    /// # Errors
    /// [`ForwardError::Setup`] when the TLS settings are unusable (a CA file that
    /// cannot be read, a bad server name).
    pub fn new(options: SyslogOptions) -> Result<Self, ForwardError> {
        let tls = match &options.tls {
            Some(t) => {
                let host = options
                    .address
                    .rsplit_once(':')
                    .map_or(options.address.as_str(), |(h, _)| h);
                Some((client_config(t)?, server_name(t, host)?))
            }
            None => None,
        };
        Ok(Self {
            options,
            tls,
            conn: None,
            procid: std::process::id().to_string(),
        })
    }

    async fn connect(&mut self) -> Result<&mut Box<dyn Stream>, ForwardError> {
        if self.conn.is_none() {
            let destination = self.destination();
            let timeout = self.options.timeout;
            let tcp = tokio::time::timeout(timeout, TcpStream::connect(&self.options.address))
                .await
                .map_err(|_| ForwardError::Timeout {
                    destination: destination.clone(),
                    secs: timeout.as_secs(),
                })?
                .map_err(|e| ForwardError::Connect {
                    destination: destination.clone(),
                    reason: chain(&e),
                })?;
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn Stream> = match &self.tls {
                Some((config, name)) => {
                    let connector = tokio_rustls::TlsConnector::from(config.clone());
                    let tls = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| ForwardError::Timeout {
                            destination: destination.clone(),
                            secs: timeout.as_secs(),
                        })?
                        .map_err(|e| ForwardError::Tls {
                            destination: destination.clone(),
                            reason: chain(&e),
                        })?;
                    Box::new(tls)
                }
                None => Box::new(tcp),
            };
            tracing::debug!(destination, "syslog connection open");
            self.conn = Some(stream);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| ForwardError::Setup("no connection".to_owned()))
    }

    /// One record as an octet-counted RFC 5424 message, appended to `out`.
    fn frame(&self, r: &ForwardRecord, out: &mut Vec<u8>) {
        let severity = match r.severity() {
            Severity::Warning => 4,
            Severity::Notice => 5,
            _ => 6,
        };
        let pri = u16::from(self.options.facility) * 8 + severity;
        let timestamp = r
            .time()
            .filter(|t| t.len() <= 32 && t.bytes().all(|b| (33..=126).contains(&b)))
            .unwrap_or("-");
        let msgid: String = r
            .event_type()
            .bytes()
            .filter(|b| (33..=126).contains(b))
            .take(32)
            .map(char::from)
            .collect();
        let msgid = if msgid.is_empty() { "-".to_owned() } else { msgid };
        let mut head = String::with_capacity(128);
        let _ = write!(
            head,
            "<{pri}>1 {timestamp} {} {} {} {msgid} - ",
            self.options.hostname, self.options.app_name, self.procid
        );
        let len = head.len() + r.line.len();
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(r.line.as_bytes());
    }
}

#[async_trait]
impl Transport for SyslogTransport {
    fn destination(&self) -> String {
        let scheme = if self.options.tls.is_some() { "tls" } else { "tcp" };
        format!("syslog {scheme}://{}", self.options.address)
    }

    async fn send(&mut self, records: &[ForwardRecord]) -> Result<Sent, ForwardError> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.line.len() + 128).sum());
        for r in records {
            self.frame(r, &mut buf);
        }
        // A connection the receiver closed is noticed before writing into it.
        if self.conn.is_some()
            && let Err(e) = self.probe().await
        {
            self.reset();
            return Err(e);
        }
        let destination = self.destination();
        let timeout = self.options.timeout;
        let conn = self.connect().await?;
        let written = tokio::time::timeout(timeout, async {
            conn.write_all(&buf).await?;
            conn.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(Sent::Written),
            Ok(Err(e)) => {
                self.reset();
                Err(ForwardError::Send {
                    destination,
                    reason: chain(&e),
                })
            }
            Err(_) => {
                self.reset();
                Err(ForwardError::Timeout {
                    destination,
                    secs: timeout.as_secs(),
                })
            }
        }
    }

    fn confirm_after(&self) -> Duration {
        self.options.confirm
    }

    async fn probe(&mut self) -> Result<(), ForwardError> {
        let destination = self.destination();
        let Some(conn) = self.conn.as_mut() else {
            return Err(ForwardError::Send {
                destination,
                reason: "not connected".to_owned(),
            });
        };
        // A syslog receiver never writes: anything readable now is the end of the
        // connection (EOF, a reset, a TLS close_notify).
        let mut byte = [0u8; 256];
        loop {
            match conn.read(&mut byte).now_or_never() {
                None => return Ok(()),
                Some(Ok(0)) => {
                    self.reset();
                    return Err(ForwardError::Send {
                        destination,
                        reason: "the receiver closed the connection".to_owned(),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.reset();
                    return Err(ForwardError::Send {
                        destination,
                        reason: chain(&e),
                    });
                }
            }
        }
    }

    fn reset(&mut self) {
        self.conn = None;
    }

    async fn check(&mut self) -> Result<String, ForwardError> {
        self.reset();
        self.connect().await?;
        let what = match &self.options.tls {
            Some(t) if t.dangerously_accept_invalid_certs => {
                "connected over TLS, certificate NOT verified (dangerously_accept_invalid_certs)"
            }
            Some(_) => "connected, TLS certificate verified",
            None => "connected",
        };
        if let Some(mut c) = self.conn.take() {
            let _ = c.shutdown().await;
        }
        Ok(what.to_owned())
    }
}
