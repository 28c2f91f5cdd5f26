//! Streaming the durable audit trail to SIEMs and collectors, at least once.
//!
//! A [`Forwarder`] reads the local trail (the database of a `SqliteAuditSink` or the
//! directory of a [`JsonLinesAuditSink`](super::JsonLinesAuditSink)) in chain order,
//! up to the sink's [`DurableHead`](super::DurableHead) and no further, and hands the
//! records to a [`Transport`]: [`SyslogTransport`] (RFC 5424 over TCP or TLS,
//! octet-counted framing per RFC 6587), [`WebhookTransport`] (a signed JSON POST),
//! [`SplunkHecTransport`] (Splunk's HTTP Event Collector) or [`OtlpLogsTransport`]
//! (OpenTelemetry logs over OTLP/HTTP, JSON encoding).
//!
//! # Delivery
//!
//! - **At least once.** A record counts as delivered when the receiver acknowledged
//!   it (an HTTP 2xx), or, for syslog, which has no acknowledgement, when the
//!   connection stayed up for the transport's confirmation window after it was
//!   written. The position of the last delivered record is kept in a cursor file next
//!   to the trail (`seq` and `hash`), so a restarted gateway, a receiver that was down
//!   or a broken connection resend from there: a receiver can see a record twice
//!   (same `seq`, same `hash`), never miss one.
//! - **Verifiable.** Every record travels as stored: the sealed line with `seq`,
//!   `prev`, the event and `hash` (and `mac` with a key), so the receiver can check
//!   the hash and the chain itself (`mcp-guard audit verify` reads a file of such
//!   lines).
//! - **Never in a call's way.** A forwarder is its own task reading the trail after
//!   the fact; a call only waits for the local sink, as before. Its memory holds one
//!   batch. The backlog is how far the cursor lags behind the durable head, reported
//!   by [`ForwarderHandle::status`].
//! - **Nothing dropped silently.** While the receiver is down or refuses, the
//!   forwarder retries with a doubling delay and catches up afterwards. Records that
//!   the local trail no longer holds when the forwarder reaches them (JSON Lines
//!   retention removed their file) are counted as skipped and logged as an error.
//!
//! One process forwards under a name: the cursor's lock file is held while a
//! forwarder runs, and another gateway on the same trail stands by (and takes over
//! when the first stops).

mod cursor;
mod http;
mod run;
mod syslog;
mod tls;
mod trail;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub use http::{
    HttpOptions, OtlpLogsTransport, SIGNATURE_HEADER, SplunkHecTransport, WebhookTransport, http_client,
};
pub use run::{ForwardOptions, ForwardState, ForwardStatus, Forwarder, ForwarderHandle, Forwarders};
pub use syslog::{SyslogOptions, SyslogTransport};
pub use tls::TlsOptions;
pub use trail::TrailSource;

/// One record of the trail as a forwarder sends it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ForwardRecord {
    /// Its place in the chain.
    pub seq: u64,
    /// The previous record's hash.
    pub prev: String,
    /// Its own hash (SHA-256 over the line up to `,"hash":`).
    pub hash: String,
    /// The hash matches the stored bytes.
    pub hash_ok: bool,
    /// The record exactly as stored, one line of JSON without the newline.
    pub line: String,
    /// The event, parsed.
    pub event: serde_json::Value,
}

/// How serious a record is, for receivers that sort by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Severity {
    /// Routine: calls answered, lists, sessions.
    Info,
    /// Refusals: denied, rate limited, unauthenticated, audit failed.
    Notice,
    /// Worth a look: authentication failures, refused configurations, changed tool
    /// definitions.
    Warning,
}

impl ForwardRecord {
    /// The event's `type` (`request`, `authentication_failed`, ...).
    pub fn event_type(&self) -> &str {
        self.event
            .get("type")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("event")
    }

    /// A top-level string field of the event.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.event.get(name).and_then(serde_json::Value::as_str)
    }

    /// When the event happened (`started_at`), as stored (RFC 3339, UTC).
    pub fn time(&self) -> Option<&str> {
        self.field("started_at")
    }

    /// [`Self::time`] as a [`SystemTime`].
    pub fn system_time(&self) -> Option<SystemTime> {
        self.time().and_then(crate::time::parse_rfc3339)
    }

    /// How serious the record is.
    pub fn severity(&self) -> Severity {
        match self.event_type() {
            "authentication_failed" | "config_refused" | "tool_definition_changed" => Severity::Warning,
            _ => match self.field("outcome") {
                Some("denied" | "unauthenticated" | "rate_limited" | "audit_failed") => Severity::Notice,
                _ => Severity::Info,
            },
        }
    }
}

/// What [`Transport::send`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sent {
    /// The receiver acknowledged every record.
    Acknowledged,
    /// Written to the connection; delivered once [`Transport::probe`] finds the
    /// connection sound [`Transport::confirm_after`] later.
    Written,
}

/// Why a send failed; the text names the receiver and never holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The receiver cannot be reached.
    #[error("cannot connect to {destination}: {reason}")]
    Connect {
        /// The receiver.
        destination: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed (a certificate that does not verify, among others).
    #[error("TLS with {destination} failed: {reason}")]
    Tls {
        /// The receiver.
        destination: String,
        /// Why.
        reason: String,
    },
    /// The receiver answered with an error status.
    #[error("{destination} answered HTTP {status}: {body}")]
    Refused {
        /// The receiver.
        destination: String,
        /// The HTTP status.
        status: u16,
        /// The start of its answer.
        body: String,
    },
    /// The receiver refused the request as too large (HTTP 413).
    #[error("{destination} refused {records} records as too large (HTTP 413)")]
    TooLarge {
        /// The receiver.
        destination: String,
        /// How many records the request held.
        records: usize,
    },
    /// Writing or reading failed, or the receiver closed the connection.
    #[error("sending to {destination} failed: {reason}")]
    Send {
        /// The receiver.
        destination: String,
        /// Why.
        reason: String,
    },
    /// The receiver did not answer in time.
    #[error("{destination} did not answer within {secs} s")]
    Timeout {
        /// The receiver.
        destination: String,
        /// The limit.
        secs: u64,
    },
    /// The transport cannot be set up (a CA file, a TLS name).
    #[error("{0}")]
    Setup(String),
}

/// Sends records to one receiver. One forwarder owns one transport and calls it
/// from one task.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Where records go, for logs and status (no secrets).
    fn destination(&self) -> String;

    /// Sends `records` in chain order (connecting first when needed).
    ///
    /// # Errors
    /// [`ForwardError`]; the forwarder then calls [`Self::reset`], waits and resends
    /// from the last delivered record.
    async fn send(&mut self, records: &[ForwardRecord]) -> Result<Sent, ForwardError>;

    /// For a transport whose sends return [`Sent::Written`]: how long the connection
    /// must stay sound after a write before the write counts as delivered.
    fn confirm_after(&self) -> Duration {
        Duration::ZERO
    }

    /// Checks that the connection is still sound (the receiver has not closed it).
    ///
    /// # Errors
    /// The connection broke: what was written since the last confirmation is sent
    /// again.
    async fn probe(&mut self) -> Result<(), ForwardError> {
        Ok(())
    }

    /// Drops the connection after a failure.
    fn reset(&mut self) {}

    /// Connects and checks the receiver without sending a record (`check --connect`);
    /// says what was checked.
    ///
    /// # Errors
    /// The receiver cannot be reached, refuses the credentials, or its certificate
    /// does not verify.
    async fn check(&mut self) -> Result<String, ForwardError>;
}

/// Shortens a receiver's answer for an error message.
fn excerpt(body: &str) -> String {
    let body = body.trim();
    let mut end = body.len().min(200);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    let mut s: String = body[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if end < body.len() {
        s.push_str("...");
    }
    s
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = c.source();
    }
    s
}

// The tests read both trail formats; the workspace builds core with `sqlite`.
#[cfg(test)]
#[cfg(feature = "sqlite")]
mod tests;
