//! `[gateway]`: the listener, naming and HTTP hygiene.

use serde::Deserialize;

use super::{ConfigError, is_name_safe};

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct GatewaySection {
    /// Socket address to listen on.
    pub listen: String,
    /// Separator between server id and tool/prompt name; legal in tool names.
    pub separator: String,
    /// Allowed `Host` header values (DNS-rebinding defence). Loopback by default.
    pub allowed_hosts: Vec<String>,
    /// Allowed browser `Origin`s (default: loopback, any port); any other present
    /// `Origin` gets 403.
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Items per page in list results.
    pub page_size: usize,
    /// Default per-request upstream timeout in seconds (a server's `timeout_secs`
    /// overrides it). A request still unanswered then fails with an error naming the
    /// server and the limit, and the upstream is sent `notifications/cancelled`.
    pub request_timeout_secs: u64,
    /// The gateway's public base URL (`https://gw.example.com`). Endpoint resource
    /// URIs are `<public_url>/mcp/<endpoint>`: the audience JWTs must carry and the
    /// `resource` of the RFC 9728 metadata. Default: built from the request's `Host`.
    pub public_url: Option<String>,
    /// Default cap on one message from an upstream, in bytes (a server's
    /// `max_response_bytes` overrides it; at most 16 MiB on stdio).
    pub max_response_bytes: usize,
    /// On SIGTERM/SIGINT, how long calls in flight may take to finish, in seconds,
    /// before they are answered with an error and the gateway stops.
    pub shutdown_grace_secs: u64,
    /// Serve Prometheus metrics at `/metrics` (unauthenticated, like `/readyz`: keep
    /// the listener off public networks, or switch this off).
    pub metrics: bool,
    /// Stdio upstream processes of all servers together, at most (default 256): one
    /// per stdio server always runs, and a per-session process that would exceed the
    /// bound is refused with an error naming it. Each server's `max_processes` and
    /// `max_processes_per_principal` apply as well.
    pub max_upstream_processes: usize,
    /// While servers are making their first start, how long a request that needs the
    /// catalogue (a list, a call) waits for them, in milliseconds (default 3000; 0
    /// never waits). `server/discover` and `initialize` never wait; a server that
    /// starts later joins with `list_changed`.
    pub startup_wait_ms: u64,
    /// How often each server's catalogue is listed again while the gateway runs, in
    /// seconds (default 300; a server's `catalogue_refresh_secs` overrides it): a tool
    /// definition that changes without the server saying so (a restarted HTTP server,
    /// say) is quarantined within this interval. Reconnecting, a new server session, a
    /// list-changed notification or an expired `ttlMs` re-read sooner.
    pub catalogue_refresh_secs: u64,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8787".to_owned(),
            separator: "__".to_owned(),
            allowed_hosts: vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()],
            allowed_origins: loopback_origins(),
            max_body_bytes: 4 * 1024 * 1024,
            page_size: 200,
            request_timeout_secs: 60,
            max_response_bytes: crate::upstream::DEFAULT_MAX_RESPONSE_BYTES,
            shutdown_grace_secs: 10,
            metrics: true,
            public_url: None,
            max_upstream_processes: crate::upstream::DEFAULT_MAX_UPSTREAM_PROCESSES,
            startup_wait_ms: 3000,
            catalogue_refresh_secs: crate::upstream::DEFAULT_CATALOGUE_REFRESH.as_secs(),
        }
    }
}

/// Browser origins on this machine, any port: the default `Origin` allow-list.
pub fn loopback_origins() -> Vec<String> {
    ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
        .map(String::from)
        .to_vec()
}

impl GatewaySection {
    /// Checks of the section's own values, except `public_url` (see
    /// [`Self::validate_public_url`]).
    pub(super) fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut err = |entry: &str, message: String| {
            errors.push(ConfigError {
                entry: format!("gateway.{entry}"),
                message,
            });
        };
        let sep = &self.separator;
        if !is_name_safe(sep) {
            err(
                "separator",
                format!("{sep:?} must be non-empty and use only [A-Za-z0-9_.-]"),
            );
        }
        if self.page_size == 0 {
            err("page_size", "must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            err("max_body_bytes", "must be at least 1024".into());
        }
        if self.request_timeout_secs == 0 {
            err("request_timeout_secs", "must be at least 1".into());
        }
        if self.max_response_bytes < 1024 {
            err("max_response_bytes", "must be at least 1024".into());
        }
        if self.catalogue_refresh_secs == 0 {
            err(
                "catalogue_refresh_secs",
                "must be at least 1 (a catalogue that is never read again would let a changed tool through)"
                    .into(),
            );
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            err(
                "listen",
                format!("{:?} is not a socket address like 127.0.0.1:8787", self.listen),
            );
        }
    }

    /// `public_url` is an http(s) URL.
    pub(super) fn validate_public_url(&self, errors: &mut Vec<ConfigError>) {
        if let Some(u) = &self.public_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            errors.push(ConfigError {
                entry: "gateway.public_url".into(),
                message: "must be an http:// or https:// URL".into(),
            });
        }
    }
}
