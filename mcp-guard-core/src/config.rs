//! Configuration as data: serde types with `deny_unknown_fields`, then
//! [`GatewayConfig::validate`], whose errors name the offending entry.
//!
//! The file syntax (TOML) is the binary's business; these types only describe the shape.
//! Secrets never appear inline: values name them as `${NAME}` and are resolved from a
//! [`CredentialStore`](crate::CredentialStore) when a server connects.
//!
//! ```
//! let cfg: mcp_guard_core::config::GatewayConfig = serde_json::from_value(serde_json::json!({
//!     "servers": { "files": { "transport": "stdio", "command": "mcp-files", "args": ["/srv"] } },
//!     "endpoints": { "eng": { "servers": { "files": { "tools": ["read_*"] } } } },
//! }))?;
//! cfg.validate()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::call::{PrincipalKind, TargetKind};
use crate::policy::{Condition, Pattern, Subject, Test};
use crate::upstream::{Template, UpstreamProtocol};

mod flow;
pub use flow::*;

/// The whole gateway configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Listener, naming, HTTP hygiene.
    pub gateway: GatewaySection,
    /// Client authentication.
    pub auth: AuthSection,
    /// Upstream servers by id.
    pub servers: BTreeMap<String, ServerConfig>,
    /// Endpoints by name.
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// Access grants (default deny).
    pub grants: Vec<GrantConfig>,
    /// Requests per minute, per principal and per tool.
    pub rate_limits: RateLimitsSection,
    /// Tool pinning and hostile-text checks.
    pub pinning: PinningSection,
    /// The audit trail.
    pub audit: AuditSection,
    /// Where upstream credentials are stored.
    pub credentials: CredentialsSection,
    /// Limits on traffic before authentication, per source address.
    pub unauthenticated_limits: UnauthenticatedLimitsSection,
    /// Flow labels of tools (`[[labels]]`), for flow rules.
    pub labels: Vec<LabelConfig>,
    /// Flow rules (`[[flow_rules]]`): what a session may do after what it has done.
    pub flow_rules: Vec<FlowRuleConfig>,
}

/// `[unauthenticated_limits]`: what traffic that has not authenticated may cost, per
/// source address (an IPv4 address, or the /64 of an IPv6 one). Every request to the
/// authorization server, the metadata documents or an unknown path counts; at the MCP
/// endpoints only a request that fails to authenticate does, so clients with valid
/// credentials are served however busy their address is. Over a limit: 429 with
/// `Retry-After`. Refused authentications are audited as one `authentication_failed`
/// record per source and interval, with their count.
///
/// ```toml
/// [unauthenticated_limits]
/// per_minute = 600               # requests before authentication, per source
/// burst = 300
/// registrations_per_hour = 60    # dynamic client registrations, per source
/// registration_burst = 20
/// audit_interval_secs = 60       # one aggregated record per source and interval
/// max_sources = 10000            # tracked at once; more share one budget
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct UnauthenticatedLimitsSection {
    /// Requests per minute before authentication, per source. Default 600.
    pub per_minute: Option<u32>,
    /// How many may come at once. Default 300.
    pub burst: Option<u32>,
    /// Dynamic client registrations per hour, per source. Default 60.
    pub registrations_per_hour: Option<u32>,
    /// How many registrations may come at once. Default 20.
    pub registration_burst: Option<u32>,
    /// Seconds between aggregated audit records of refused authentications. Default 60.
    pub audit_interval_secs: Option<u64>,
    /// Sources tracked at once. Default 10000.
    pub max_sources: Option<usize>,
}

impl UnauthenticatedLimitsSection {
    fn validate(&self, errors: &mut Vec<ConfigError>) {
        for (entry, v) in [
            ("per_minute", self.per_minute.map(u64::from)),
            ("burst", self.burst.map(u64::from)),
            (
                "registrations_per_hour",
                self.registrations_per_hour.map(u64::from),
            ),
            ("registration_burst", self.registration_burst.map(u64::from)),
            ("audit_interval_secs", self.audit_interval_secs),
            (
                "max_sources",
                self.max_sources.map(|n| u64::try_from(n).unwrap_or(u64::MAX)),
            ),
        ] {
            if v == Some(0) {
                errors.push(ConfigError {
                    entry: format!("unauthenticated_limits.{entry}"),
                    message: "must be at least 1".into(),
                });
            }
        }
    }
}

/// `[credentials]`: the encrypted credential store `${NAME}` placeholders resolve from
/// (before the environment). Relative paths are relative to the config file's directory.
///
/// ```toml
/// [credentials]
/// store = "mcp-guard-credentials.json"      # default
/// key_file = "mcp-guard-credentials.key"    # default; created 0600 on the first `credentials set`
/// key_env = "MCP_GUARD_CREDENTIALS_KEY"     # default; when set, its base64 key wins over key_file
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CredentialsSection {
    /// The store file (default `mcp-guard-credentials.json`).
    pub store: Option<String>,
    /// The key file (default `mcp-guard-credentials.key`).
    pub key_file: Option<String>,
    /// The environment variable that may hold the key as base64 (default
    /// `MCP_GUARD_CREDENTIALS_KEY`).
    pub key_env: Option<String>,
}

impl CredentialsSection {
    /// The store file name as configured or the default.
    pub fn store_or_default(&self) -> &str {
        self.store.as_deref().unwrap_or("mcp-guard-credentials.json")
    }

    /// The key file name as configured or the default.
    pub fn key_file_or_default(&self) -> &str {
        self.key_file.as_deref().unwrap_or("mcp-guard-credentials.key")
    }

    /// The key variable as configured or the default.
    pub fn key_env_or_default(&self) -> &str {
        self.key_env.as_deref().unwrap_or("MCP_GUARD_CREDENTIALS_KEY")
    }
}

/// `[audit]`: where every request's record goes.
///
/// The defaults are embedded and fail closed: one SQLite database
/// (`mcp-guard-audit.db` beside the config file), every record durable before the
/// client gets its answer, and a call refused when its record cannot be written.
/// Relative paths are relative to the config file's directory.
///
/// ```toml
/// [audit]
/// sinks = ["sqlite", "jsonl", "tracing"]
/// sqlite_path = "/var/lib/mcp-guard/audit.db"
/// jsonl_dir = "/var/log/mcp-guard"
/// rotate_bytes = 67108864        # 64 MiB
/// rotate_secs = 86400            # 0: never by age
/// keep_files = 90                # 0: keep all
/// mac_key_file = "/etc/mcp-guard/audit.key"   # or mac_key_env = "AUDIT_MAC_KEY"
/// payload_cap_bytes = 65536
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct AuditSection {
    /// Sinks every record goes to (all must succeed). Default `["sqlite"]`.
    pub sinks: Vec<AuditSinkKind>,
    /// The SQLite database. Default `mcp-guard-audit.db` beside the config file.
    pub sqlite_path: Option<std::path::PathBuf>,
    /// The directory of JSON Lines files. Default `audit/` beside the config file.
    pub jsonl_dir: Option<std::path::PathBuf>,
    /// Start a new JSON Lines file after this many bytes.
    pub rotate_bytes: u64,
    /// Start a new JSON Lines file after this many seconds; `0`: never by age.
    pub rotate_secs: u64,
    /// Keep this many JSON Lines files, deleting the oldest; `0`: keep all.
    pub keep_files: usize,
    /// A file holding the key of the per-record HMAC (keep it outside the log).
    pub mac_key_file: Option<std::path::PathBuf>,
    /// An environment variable holding the key of the per-record HMAC.
    pub mac_key_env: Option<String>,
    /// Cap on the recorded (redacted) arguments and on the result, each, in bytes.
    pub payload_cap_bytes: usize,
    /// Record list requests too, not only calls.
    pub record_lists: bool,
    /// Records that may wait for a durable sink's writer before callers wait.
    pub queue: usize,
    /// DANGEROUS: when a record cannot be written, let the call through unrecorded.
    pub dangerously_fail_open: bool,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            sinks: vec![AuditSinkKind::Sqlite],
            sqlite_path: None,
            jsonl_dir: None,
            rotate_bytes: 64 * 1024 * 1024,
            rotate_secs: 86_400,
            keep_files: 0,
            mac_key_file: None,
            mac_key_env: None,
            payload_cap_bytes: 64 * 1024,
            record_lists: true,
            queue: 4096,
            dangerously_fail_open: false,
        }
    }
}

/// One audit sink kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum AuditSinkKind {
    /// Hash-chained rows in an embedded SQLite database (durable, queryable).
    Sqlite,
    /// Hash-chained JSON Lines files (durable, rotated).
    Jsonl,
    /// One `tracing` event per record (not durable).
    Tracing,
}

/// `[pinning]`: tool definitions pinned in a lock file, hostile text checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PinningSection {
    /// The lock file (relative to the config file); default `mcp-guard.lock` beside it.
    pub lock_file: Option<String>,
    /// `enforce`, `warn` or `off`; default: `enforce` when the lock file exists, else `off`.
    pub mode: Option<ModeConfig>,
    /// What hostile text in a tool definition does: `enforce` (quarantine, the
    /// default), `warn` or `off`.
    pub hostile_text: Option<ModeConfig>,
    /// Longest tool description accepted, in characters (default 4096).
    pub max_description_chars: Option<usize>,
}

/// A gate mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ModeConfig {
    /// Quarantine.
    Enforce,
    /// Admit and report.
    Warn,
    /// No checks.
    Off,
}

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

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct AuthSection {
    /// Static API tokens (values are `${NAME}` placeholders).
    pub tokens: Vec<TokenConfig>,
    /// The principal of the stdio front door (the process that launched the gateway).
    pub stdio_principal: Option<PrincipalConfig>,
    /// DANGEROUS: serve HTTP clients without authentication, as this principal.
    pub dangerously_allow_anonymous: Option<PrincipalConfig>,
    /// The access store (issued API tokens, the session journal), relative to the
    /// configuration file. Default `mcp-guard-access.db`.
    pub store: Option<String>,
    /// JWT bearer tokens from an identity provider.
    pub jwt: Option<JwtConfig>,
    /// The built-in OAuth authorization server (sign-in, consent with an access
    /// duration, personal credentials), for clients that connect the MCP way.
    pub server: Option<AuthServerConfig>,
}

/// `[auth.server]`: the built-in authorization server. Its issuer is
/// `gateway.public_url`, which must be set (https, or http on loopback).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthServerConfig {
    /// Access token lifetime (never past the chosen duration). Default `1h`.
    #[serde(default)]
    pub access_token_ttl: Option<String>,
    /// The access durations offered on the consent page, in order. Default
    /// `["1h", "1d", "7d", "30d"]`.
    #[serde(default)]
    pub durations: Vec<String>,
    /// How long a browser sign-in lasts. Default `12h`.
    #[serde(default)]
    pub signin_ttl: Option<String>,
    /// Scopes advertised (none by default).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The users who may sign in (with one-time links from `mcp-guard users
    /// login-link`), with their roles and attributes.
    #[serde(default)]
    pub users: Vec<PrincipalConfig>,
    /// DANGEROUS: fetch client metadata documents from plain-HTTP or private
    /// addresses (tests on loopback only).
    #[serde(default)]
    pub dangerously_allow_private_client_metadata: bool,
    /// Sign-in delegated to an external OpenID Connect provider.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// Clients (by `client_id`) whose redirect URI receives an authorization error
    /// sent before the user has signed in; for any other client the error is shown
    /// on the gateway's own page (RFC 9700 §4.11.2). Loopback redirect URIs are
    /// always trusted.
    #[serde(default)]
    pub trusted_clients: Vec<String>,
    /// Authorization requests and OpenID Connect sign-ins in progress at once, in
    /// all (each lives up to 10 minutes). Default 1000.
    #[serde(default)]
    pub max_pending_authorizations: Option<usize>,
    /// Of those, from one source address. Default 50.
    #[serde(default)]
    pub max_pending_authorizations_per_source: Option<usize>,
    /// The longest `state` (and `scope`) an authorization request may carry, in
    /// bytes. Default 1024.
    #[serde(default)]
    pub max_state_bytes: Option<usize>,
    /// Clients registered at once (dynamic registrations and metadata documents);
    /// when full, clients that never obtained a grant are forgotten first. Default
    /// 5000.
    #[serde(default)]
    pub max_clients: Option<usize>,
}

/// `[auth.server.oidc]`: users sign in at an OpenID Connect provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OidcConfig {
    /// The provider's issuer URL.
    pub issuer: String,
    /// The gateway's client id there.
    pub client_id: String,
    /// The client secret, as a `${NAME}` placeholder (read from the environment).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Scopes. Default `openid profile email`.
    #[serde(default)]
    pub scopes: Option<String>,
    /// The claim naming the user. Default `sub`.
    #[serde(default)]
    pub principal_claim: Option<String>,
    /// A claim holding roles.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// The provider's name on the sign-in button.
    #[serde(default)]
    pub display_name: Option<String>,
}

impl AuthServerConfig {
    fn validate(&self, public_url: Option<&str>, errors: &mut Vec<ConfigError>) {
        let mut err = |entry: &str, message: String| {
            errors.push(ConfigError {
                entry: format!("auth.server{entry}"),
                message,
            });
        };
        match public_url {
            None => err(
                "",
                "set gateway.public_url: it is the authorization server's issuer".into(),
            ),
            Some(u) if u.starts_with("http://") => {
                let host = u
                    .trim_start_matches("http://")
                    .split(['/', ':'])
                    .next()
                    .unwrap_or("");
                if !matches!(host, "127.0.0.1" | "localhost") && !u.starts_with("http://[::1]") {
                    err(
                        "",
                        "gateway.public_url must be https:// (plain http only on loopback)".into(),
                    );
                }
            }
            Some(_) => {}
        }
        for (entry, v) in [
            ("access_token_ttl", &self.access_token_ttl),
            ("signin_ttl", &self.signin_ttl),
        ] {
            if let Some(v) = v
                && let Err(m) = crate::access::parse_duration(v)
            {
                err(&format!(".{entry}"), m);
            }
        }
        for (i, d) in self.durations.iter().enumerate() {
            if let Err(m) = crate::access::parse_duration(d) {
                err(&format!(".durations[{i}]"), m);
            }
        }
        if let Some(o) = &self.oidc {
            if !(o.issuer.starts_with("https://")
                || o.issuer.starts_with("http://127.0.0.1")
                || o.issuer.starts_with("http://localhost"))
            {
                err(
                    ".oidc.issuer",
                    "must be an https:// URL (plain http only on loopback)".into(),
                );
            }
            if let Some(secret) = &o.client_secret {
                match Template::parse(secret) {
                    Ok(t) if t.has_placeholders() => {}
                    Ok(_) => err(
                        ".oidc.client_secret",
                        "give the secret as a ${NAME} placeholder, never inline".into(),
                    ),
                    Err(m) => err(".oidc.client_secret", m),
                }
            }
        }
        if self.users.is_empty() && self.oidc.is_none() {
            err(
                "",
                "nobody can sign in: add [[auth.server.users]] or [auth.server.oidc]".into(),
            );
        }
        for (entry, v) in [
            ("max_pending_authorizations", self.max_pending_authorizations),
            (
                "max_pending_authorizations_per_source",
                self.max_pending_authorizations_per_source,
            ),
            ("max_state_bytes", self.max_state_bytes),
            ("max_clients", self.max_clients),
        ] {
            if v == Some(0) {
                err(&format!(".{entry}"), "must be at least 1".into());
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if !seen.insert(u.id.as_str()) {
                err(&format!(".users[{i}]"), format!("user {} is listed twice", u.id));
            }
            if u.kind != PrincipalKind::User {
                err(
                    &format!(".users[{i}]"),
                    "only users sign in (agents use tokens)".into(),
                );
            }
        }
    }
}

/// `[auth.jwt]`: JWTs from an identity provider, checked against its JWKS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct JwtConfig {
    /// The required `iss`.
    pub issuer: String,
    /// A JWKS file (relative to the configuration file).
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// A JWKS URL (`https://`, or `http://` on loopback).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Audiences accepted besides the endpoint's resource URI.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted algorithms (asymmetric only). Default `["RS256", "ES256"]`.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`/`nbf`, seconds (at most 300). Default 30.
    #[serde(default)]
    pub leeway_secs: Option<u64>,
    /// The claim holding the principal id. Default `sub`.
    #[serde(default)]
    pub principal_claim: Option<String>,
    /// The claim holding roles. Default `roles`.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// A claim whose value `agent` marks an agent.
    #[serde(default)]
    pub kind_claim: Option<String>,
    /// Claims copied into principal attributes.
    #[serde(default)]
    pub attribute_claims: Vec<String>,
    /// Scopes every token must carry (403 `insufficient_scope` otherwise).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Authorization servers named in the protected-resource metadata. Default: the
    /// issuer.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
}

/// A principal as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PrincipalConfig {
    /// Id.
    pub id: String,
    /// `user` (default) or `agent`.
    #[serde(default = "default_kind")]
    pub kind: PrincipalKind,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// For agents: the user they act for.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// Attributes grant conditions may test (`team = "infra"`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn default_kind() -> PrincipalKind {
    PrincipalKind::User
}

/// One static API token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TokenConfig {
    /// Who presents it.
    pub principal: PrincipalConfig,
    /// The token, as a `${NAME}` placeholder (never inline).
    pub token: String,
}

/// `[servers.ID]`: one upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "transport", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum ServerConfig {
    /// A child process speaking MCP on stdin/stdout.
    Stdio(StdioServerConfig),
    /// Streamable HTTP.
    Http(HttpServerConfig),
    /// Legacy HTTP+SSE (2024-11-05).
    Sse(HttpServerConfig),
}

impl ServerConfig {
    /// Whether the server is switched on.
    pub fn enabled(&self) -> bool {
        match self {
            Self::Stdio(s) => s.enabled,
            Self::Http(h) | Self::Sse(h) => h.enabled,
        }
    }

    /// The description.
    pub fn description(&self) -> Option<&str> {
        match self {
            Self::Stdio(s) => s.description.as_deref(),
            Self::Http(h) | Self::Sse(h) => h.description.as_deref(),
        }
    }

    /// Per-request timeout override, in seconds.
    pub fn timeout_secs(&self) -> Option<u64> {
        match self {
            Self::Stdio(s) => s.timeout_secs,
            Self::Http(h) | Self::Sse(h) => h.timeout_secs,
        }
    }

    /// Cap override on one message from the server, in bytes.
    pub fn max_response_bytes(&self) -> Option<usize> {
        match self {
            Self::Stdio(s) => s.max_response_bytes,
            Self::Http(h) | Self::Sse(h) => h.max_response_bytes,
        }
    }

    /// How long starting may take (`start_timeout_secs`, else 60 s for stdio and 30 s
    /// for HTTP).
    pub fn start_timeout(&self) -> std::time::Duration {
        match self {
            Self::Stdio(s) => s.start_timeout_secs.map_or(
                crate::upstream::DEFAULT_START_TIMEOUT,
                std::time::Duration::from_secs,
            ),
            Self::Http(h) | Self::Sse(h) => std::time::Duration::from_secs(
                h.start_timeout_secs.unwrap_or(DEFAULT_HTTP_START_TIMEOUT_SECS),
            ),
        }
    }

    /// The protocol era spoken to the server.
    pub fn protocol(&self) -> UpstreamProtocol {
        match self {
            Self::Stdio(s) => s.protocol,
            Self::Http(h) => h.protocol,
            Self::Sse(_) => UpstreamProtocol::Legacy,
        }
    }

    /// Re-list interval override, in seconds.
    pub fn catalogue_refresh_secs(&self) -> Option<u64> {
        match self {
            Self::Stdio(s) => s.catalogue_refresh_secs,
            Self::Http(h) | Self::Sse(h) => h.catalogue_refresh_secs,
        }
    }
}

fn yes() -> bool {
    true
}

/// Default `start_timeout_secs` of an HTTP server: dialling and a handshake need no
/// package download.
pub const DEFAULT_HTTP_START_TIMEOUT_SECS: u64 = 30;

/// A stdio server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StdioServerConfig {
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// The program.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment (values may hold `${NAME}`); the child gets only these plus PATH, HOME.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Switched on (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Per-request timeout in seconds (default `gateway.request_timeout_secs`).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Largest single message accepted from the server, in bytes (default
    /// `gateway.max_response_bytes`).
    #[serde(default)]
    pub max_response_bytes: Option<usize>,
    /// How often the server's catalogue is listed again, in seconds (default
    /// `gateway.catalogue_refresh_secs`).
    #[serde(default)]
    pub catalogue_refresh_secs: Option<u64>,
    /// `session` (default): each client session gets its own process, stopped when
    /// the session ends; `shared`: one process for everyone (only for stateless
    /// servers that hold no per-user data or credentials).
    #[serde(default)]
    pub isolation: Isolation,
    /// Per-session processes of this server, at most (default 256).
    #[serde(default)]
    pub max_processes: Option<usize>,
    /// Per-session processes of this server per principal, at most (default 8).
    #[serde(default)]
    pub max_processes_per_principal: Option<usize>,
    /// A per-session process idle this long is stopped, seconds (default 900).
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
    /// Placeholder names that are personal: `${NAME}` is filled with the calling
    /// principal's own credential (`credentials set --principal`), never a shared one
    /// or the environment. Needs `isolation = "session"`.
    #[serde(default)]
    pub personal: Vec<String>,
    /// How long the server may take to start and answer the MCP handshake, in
    /// seconds (default 60: long enough for a first `npx -y` or `uvx` run to download
    /// its package). A server that has not answered by then fails with "did not answer
    /// within N s" and is started again on a later request.
    #[serde(default)]
    pub start_timeout_secs: Option<u64>,
    /// The protocol era spoken to the server: `auto` (default: 2026-07-28 when the
    /// server offers it, else `initialize`), `legacy` (always `initialize`), or
    /// `2026-07-28` (only that).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
}

/// How a stdio server's processes are shared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Isolation {
    /// One process per client session.
    #[default]
    Session,
    /// One process for every client.
    Shared,
}

/// An HTTP server (streamable or legacy SSE).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpServerConfig {
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// The MCP URL.
    pub url: String,
    /// Headers (values may hold `${NAME}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Keep connections to the server open between requests (default false: only for
    /// servers known to answer without delayed-ACK stalls).
    #[serde(default)]
    pub reuse_connections: bool,
    /// Switched on (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Per-request timeout in seconds (default `gateway.request_timeout_secs`).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Largest single message accepted from the server, in bytes (default
    /// `gateway.max_response_bytes`).
    #[serde(default)]
    pub max_response_bytes: Option<usize>,
    /// How often the server's catalogue is listed again, in seconds (default
    /// `gateway.catalogue_refresh_secs`).
    #[serde(default)]
    pub catalogue_refresh_secs: Option<u64>,
    /// Placeholder names of `headers` that are personal: `${NAME}` is filled with the
    /// calling principal's own credential, and each gateway session gets its own
    /// connection (listing uses a connection with those headers left out).
    #[serde(default)]
    pub personal: Vec<String>,
    /// The gateway signs in to this server with OAuth 2.1 (streamable HTTP only).
    #[serde(default)]
    pub oauth: Option<OAuthConfig>,
    /// How long connecting and the MCP handshake may take, in seconds (default 30).
    #[serde(default)]
    pub start_timeout_secs: Option<u64>,
    /// The protocol era spoken to the server: `auto` (default), `legacy` or
    /// `2026-07-28` (not for `transport = "sse"`, which is always legacy).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
}

/// `[servers.ID.oauth]`: the gateway as the OAuth client of an HTTP upstream.
///
/// ```toml
/// [servers.github.oauth]
/// mode = "personal"                      # or "shared" (client credentials)
/// client_id = "Iv1.0123"                 # optional: else a metadata document or registration
/// client_secret = "${GITHUB_CLIENT_SECRET}"
/// scopes = ["repo"]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OAuthConfig {
    /// `personal`: each principal signs in (authorization code + PKCE); `shared`: the
    /// gateway's own client-credentials token for everyone.
    pub mode: OAuthModeConfig,
    /// A pre-registered client id (may be a `${NAME}` placeholder).
    #[serde(default)]
    pub client_id: Option<String>,
    /// The pre-registered client's secret: a `${NAME}` placeholder, never inline.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Scopes to request (default: what the server's challenge or metadata names).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// An HTTPS URL of the gateway's client ID metadata document, used when the
    /// authorization server supports those and no `client_id` is set.
    #[serde(default)]
    pub client_metadata_url: Option<String>,
    /// The client name given at dynamic registration (default `mcp-guard`).
    #[serde(default)]
    pub client_name: Option<String>,
    /// The authorization server's issuer URL, pinned: discovery that finds another one
    /// is refused. Without it, a configured client secret is bound to the issuer of its
    /// first use, and tokens to the issuer that issued them.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Origins (`https://sso.corp`) the operator vouches for besides the server's own:
    /// fetched during sign-in and refresh whatever their addresses. URLs the server or
    /// its authorization server name elsewhere must be on public addresses.
    #[serde(default)]
    pub trusted_origins: Vec<String>,
    /// DANGEROUS: URLs the server or its authorization server name may be on loopback,
    /// private, CGNAT and unique-local addresses (link-local and cloud metadata
    /// addresses stay refused). Prefer `trusted_origins`.
    #[serde(default)]
    pub dangerously_allow_private_addresses: bool,
}

/// Who signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OAuthModeConfig {
    /// Each principal with their own account.
    Personal,
    /// The gateway, with client credentials.
    Shared,
}

/// `[endpoints.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// What it is for.
    pub description: Option<String>,
    /// The servers it federates, with what each exposes.
    pub servers: BTreeMap<String, EndpointServerConfig>,
    /// Prefix names with the server id (default true). `false` is allowed only for an
    /// endpoint with exactly one server, whose names then pass through unchanged.
    pub namespace: bool,
    /// Personal-data redaction on this endpoint.
    pub redaction: EndpointRedaction,
}

/// `[endpoints.NAME.redaction]`: which personal data is removed, in which direction.
/// Secrets and the credentials the gateway holds are always scrubbed from responses,
/// and audit records are always redacted for every kind, whatever this says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EndpointRedaction {
    /// Redact arguments before they reach upstreams.
    pub requests: bool,
    /// Redact results before they reach clients.
    pub responses: bool,
    /// Kinds and replacement style (`detect = ["email", ...]`, `style = "placeholder" |
    /// "pseudonym" | "partial"`, `style-overrides`, `e164`).
    pub rules: crate::redact::RedactionConfig,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            description: None,
            servers: BTreeMap::new(),
            namespace: true,
            redaction: EndpointRedaction::default(),
        }
    }
}

/// `[endpoints.NAME.servers.ID]`: what of a server an endpoint exposes.
///
/// Nothing is exposed until named: an empty `tools` list exposes no tool.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EndpointServerConfig {
    /// Switched on for this endpoint (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Tool name globs (upstream names).
    pub tools: Vec<String>,
    /// Prompt name globs.
    pub prompts: Vec<String>,
    /// Resource URI globs (upstream URIs, also matched against templates).
    pub resources: Vec<String>,
}

/// `[[grants]]`: who may do what, under which conditions.
///
/// ```toml
/// [[grants]]
/// name = "eng-create"
/// roles = ["engineer"]
/// servers = ["github"]
/// kinds = ["tool"]                          # tool | prompt | resource | template
/// names = ["create_*"]
/// principal_kind = "user"                   # or "agent"
/// endpoint = { glob = "engineering-*" }     # eq | ne | glob | in, optional not = true
///
/// [[grants.when]]                           # every condition must hold
/// arg = "/repo"                             # a JSON pointer into the call's arguments
/// in = ["infra", "docs"]
///
/// [[grants.when]]
/// attr = "team"                             # a principal attribute
/// eq = "platform"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct GrantConfig {
    /// A name for audit records and `explain`.
    pub name: Option<String>,
    /// `allow` (default) or `deny` (wins).
    pub effect: EffectConfig,
    /// Principal id globs.
    pub principals: Vec<String>,
    /// Roles (exact names); `"*"` stands for every principal.
    pub roles: Vec<String>,
    /// Only users or only agents.
    pub principal_kind: Option<PrincipalKind>,
    /// Endpoint globs.
    pub endpoints: Vec<String>,
    /// A test on the endpoint name.
    pub endpoint: Option<TestConfig>,
    /// Server id globs.
    pub servers: Vec<String>,
    /// What kinds of target the grant covers; empty: all.
    pub kinds: Vec<KindConfig>,
    /// Tool/prompt name or resource URI globs (upstream names).
    pub names: Vec<String>,
    /// Conditions on principal attributes and call arguments; all must hold.
    pub when: Vec<ConditionConfig>,
}

/// A kind of target in `grants.kinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum KindConfig {
    /// Tools.
    Tool,
    /// Prompts.
    Prompt,
    /// Concrete resources.
    Resource,
    /// Resource templates.
    Template,
}

impl From<KindConfig> for TargetKind {
    fn from(k: KindConfig) -> Self {
        match k {
            KindConfig::Tool => Self::Tool,
            KindConfig::Prompt => Self::Prompt,
            KindConfig::Resource => Self::Resource,
            KindConfig::Template => Self::ResourceTemplate,
        }
    }
}

/// A test: exactly one of `eq`, `ne`, `glob`, `in`, optionally `not = true`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TestConfig {
    /// Equal to.
    pub eq: Option<serde_json::Value>,
    /// Not equal to (an absent value is not equal).
    pub ne: Option<serde_json::Value>,
    /// A string matching the glob.
    pub glob: Option<String>,
    /// Equal to one of.
    #[serde(rename = "in")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// Inverts the test.
    pub not: bool,
}

/// `[[grants.when]]`: a test on a principal attribute (`attr`) or a call argument
/// (`arg`, a JSON pointer), with exactly one of `eq`, `ne`, `glob`, `in`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ConditionConfig {
    /// A JSON pointer into the arguments (`/repo`).
    pub arg: Option<String>,
    /// A principal attribute key (`team`).
    pub attr: Option<String>,
    /// Equal to.
    pub eq: Option<serde_json::Value>,
    /// Not equal to (an absent value is not equal).
    pub ne: Option<serde_json::Value>,
    /// A string matching the glob.
    pub glob: Option<String>,
    /// Equal to one of.
    #[serde(rename = "in")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// Inverts the test.
    pub not: bool,
}

/// Builds the test of a condition: (error entry suffix, message) on failure.
fn test_of(
    eq: Option<&serde_json::Value>,
    ne: Option<&serde_json::Value>,
    glob: Option<&String>,
    one_of: Option<&Vec<serde_json::Value>>,
    strings_only: bool,
) -> Result<Test, (&'static str, String)> {
    let given = [eq.is_some(), ne.is_some(), glob.is_some(), one_of.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given != 1 {
        return Err(("", "give exactly one of eq, ne, glob, in".into()));
    }
    let scalar = |v: &serde_json::Value| match v {
        serde_json::Value::String(_) => true,
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) | serde_json::Value::Null => !strings_only,
        _ => false,
    };
    let what = if strings_only {
        "a string"
    } else {
        "a string, number or boolean"
    };
    if let Some(v) = eq {
        return if scalar(v) {
            Ok(Test::Eq(v.clone()))
        } else {
            Err((".eq", format!("must be {what}")))
        };
    }
    if let Some(v) = ne {
        return if scalar(v) {
            Ok(Test::Ne(v.clone()))
        } else {
            Err((".ne", format!("must be {what}")))
        };
    }
    if let Some(g) = glob {
        return match Pattern::new(g) {
            Ok(_) => Ok(Test::Glob(g.clone())),
            Err(e) => Err((".glob", e.to_string())),
        };
    }
    let vs = one_of.map(Vec::as_slice).unwrap_or_default();
    if vs.iter().all(scalar) {
        Ok(Test::In(vs.to_vec()))
    } else {
        Err((".in", format!("every value must be {what}")))
    }
}

impl TestConfig {
    /// The condition this test puts on the endpoint name.
    ///
    /// # Errors
    /// `(entry suffix, message)` when the test is malformed.
    pub fn endpoint_condition(&self) -> Result<Condition, (&'static str, String)> {
        let t = test_of(
            self.eq.as_ref(),
            self.ne.as_ref(),
            self.glob.as_ref(),
            self.one_of.as_ref(),
            true,
        )?;
        let c = Condition::new(Subject::Endpoint, t);
        Ok(if self.not { c.negate() } else { c })
    }
}

impl ConditionConfig {
    /// The condition this entry describes.
    ///
    /// # Errors
    /// `(entry suffix, message)` when the entry is malformed.
    pub fn condition(&self) -> Result<Condition, (&'static str, String)> {
        let subject = match (&self.arg, &self.attr) {
            (Some(p), None) => {
                if !p.starts_with('/') {
                    return Err((
                        ".arg",
                        format!("{p:?} is not a JSON pointer (it starts with '/', e.g. \"/repo\")"),
                    ));
                }
                Subject::Argument(p.clone())
            }
            (None, Some(k)) => Subject::Attribute(k.clone()),
            _ => return Err(("", "give exactly one of arg, attr".into())),
        };
        let strings_only = matches!(subject, Subject::Attribute(_));
        let t = test_of(
            self.eq.as_ref(),
            self.ne.as_ref(),
            self.glob.as_ref(),
            self.one_of.as_ref(),
            strings_only,
        )?;
        let c = Condition::new(subject, t);
        Ok(if self.not { c.negate() } else { c })
    }
}

/// `[rate_limits]`: requests per minute with a burst; every scope is optional.
///
/// ```toml
/// [rate_limits]
/// per_principal = { per_minute = 600, burst = 60 }   # every request of one principal
/// per_tool = { per_minute = 1200 }                  # one tool, all principals together
/// per_principal_tool = { per_minute = 60, burst = 10 }
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RateLimitsSection {
    /// Every request (calls and lists) of one principal.
    pub per_principal: Option<RateConfig>,
    /// Calls to one tool, prompt or resource by all principals together.
    pub per_tool: Option<RateConfig>,
    /// One principal's calls to one tool, prompt or resource.
    pub per_principal_tool: Option<RateConfig>,
}

/// A steady rate and a burst.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateConfig {
    /// Requests per minute (at least 1).
    pub per_minute: u32,
    /// How many may come at once (default: `per_minute`).
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimitsSection {
    /// The scopes by config name.
    pub fn scopes(&self) -> [(&'static str, Option<RateConfig>); 3] {
        [
            ("per_principal", self.per_principal),
            ("per_tool", self.per_tool),
            ("per_principal_tool", self.per_principal_tool),
        ]
    }

    fn validate(&self, errors: &mut Vec<ConfigError>) {
        for (name, rate) in self.scopes() {
            let Some(r) = rate else { continue };
            if r.per_minute == 0 {
                errors.push(ConfigError {
                    entry: format!("rate_limits.{name}.per_minute"),
                    message: "must be at least 1".into(),
                });
            }
            if r.burst == Some(0) {
                errors.push(ConfigError {
                    entry: format!("rate_limits.{name}.burst"),
                    message: "must be at least 1".into(),
                });
            }
        }
    }
}

/// Grant effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EffectConfig {
    /// Allow.
    #[default]
    Allow,
    /// Deny.
    Deny,
}

impl JwtConfig {
    fn validate(&self, errors: &mut Vec<ConfigError>) {
        let err = |entry: &str, message: &str| ConfigError {
            entry: format!("auth.jwt.{entry}"),
            message: message.to_owned(),
        };
        if self.issuer.trim().is_empty() {
            errors.push(err("issuer", "must not be empty"));
        }
        match (&self.jwks_file, &self.jwks_url) {
            (None, None) => errors.push(err("jwks_file", "set jwks_file or jwks_url")),
            (Some(_), Some(_)) => errors.push(err("jwks_url", "set jwks_file or jwks_url, not both")),
            (None, Some(u)) if !is_secure_url(u) => errors.push(err(
                "jwks_url",
                "must be https:// (http:// only on 127.0.0.1, ::1 or localhost)",
            )),
            _ => {}
        }
        for (i, a) in self.algorithms.iter().enumerate() {
            let ok = matches!(
                a.as_str(),
                "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EdDSA"
            );
            if !ok {
                errors.push(err(
                    &format!("algorithms[{i}]"),
                    &format!("{a:?} is not accepted: asymmetric algorithms only (RS256/384/512, PS256/384/512, ES256/384, EdDSA)"),
                ));
            }
        }
        if self.leeway_secs.is_some_and(|l| l > 300) {
            errors.push(err("leeway_secs", "at most 300 seconds"));
        }
    }
}

/// `https://`, or `http://` to this machine.
fn is_secure_url(u: &str) -> bool {
    if u.starts_with("https://") {
        return true;
    }
    let Some(rest) = u.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(h) => h.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    matches!(host, "127.0.0.1" | "::1" | "localhost")
}

/// A configuration problem, naming the entry (`servers.github.env.TOKEN`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// Dotted path of the entry.
    pub entry: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.entry, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found, so an operator fixes them in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Whether `s` is a legal MCP tool name fragment: `[A-Za-z0-9_.-]+`.
pub fn is_name_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Non-fatal findings of [`GatewayConfig::validate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Warnings(pub Vec<ConfigError>);

fn is_env_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Every personal name must be a placeholder the server uses.
fn check_personal(
    entry: &str,
    personal: &[String],
    values: &BTreeMap<String, String>,
    errors: &mut Vec<ConfigError>,
) {
    let used: std::collections::BTreeSet<String> = values
        .values()
        .filter_map(|v| Template::parse(v).ok())
        .flat_map(|t| t.names().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    for (i, n) in personal.iter().enumerate() {
        if !used.contains(n) {
            errors.push(ConfigError {
                entry: format!("{entry}.personal[{i}]"),
                message: format!("{n:?} is not a ${{NAME}} placeholder of this server"),
            });
        }
    }
}

fn check_oauth(
    entry: &str,
    o: &OAuthConfig,
    h: &HttpServerConfig,
    sse: bool,
    has_public_url: bool,
    errors: &mut Vec<ConfigError>,
) {
    let mut err = |field: &str, message: &str| {
        errors.push(ConfigError {
            entry: format!("{entry}.oauth{field}"),
            message: message.to_owned(),
        });
    };
    if sse {
        err(
            "",
            "OAuth is supported for streamable HTTP servers (transport = \"http\") only",
        );
    }
    if h.headers.keys().any(|k| k.eq_ignore_ascii_case("authorization")) {
        err(
            "",
            "a server signed in to with OAuth must not also set an Authorization header",
        );
    }
    if o.mode == OAuthModeConfig::Personal && !has_public_url {
        err(
            ".mode",
            "personal OAuth needs gateway.public_url (the sign-in redirect URI is built from it)",
        );
    }
    if o.mode == OAuthModeConfig::Shared && (o.client_id.is_none() || o.client_secret.is_none()) {
        err(
            ".mode",
            "shared OAuth (client credentials) needs client_id and client_secret",
        );
    }
    if o.client_secret.is_some() && o.client_id.is_none() {
        err(".client_secret", "a client secret needs its client_id");
    }
    for (field, u) in o
        .issuer
        .iter()
        .map(|u| (".issuer", u))
        .chain(o.trusted_origins.iter().map(|u| (".trusted_origins", u)))
    {
        match url::Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() => {}
            _ => err(field, &format!("{u:?} is not an http(s) URL")),
        }
    }
    if let Some(s) = &o.client_secret
        && !(s.starts_with("${") && s.ends_with('}') && Template::parse(s).is_ok())
    {
        err(
            ".client_secret",
            "must be a ${NAME} placeholder (set the value with `mcp-guard credentials set`)",
        );
    }
    for (field, v) in [("client_id", &o.client_id), ("client_secret", &o.client_secret)] {
        if let Some(v) = v
            && let Err(e) = Template::parse(v)
        {
            err(&format!(".{field}"), &e);
        }
    }
    if o.client_metadata_url
        .as_deref()
        .is_some_and(|u| !u.starts_with("https://") || u.trim_end_matches('/').matches('/').count() < 3)
    {
        err(
            ".client_metadata_url",
            "must be an https:// URL with a path (a client ID metadata document)",
        );
    }
}

impl GatewayConfig {
    /// Checks everything that can be checked without connecting.
    ///
    /// # Errors
    /// Every problem found, each naming its entry.
    #[allow(
        clippy::too_many_lines,
        reason = "one linear list of checks reads best in one place"
    )]
    pub fn validate(&self) -> Result<Warnings, ConfigErrors> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let err = |errors: &mut Vec<ConfigError>, entry: String, message: String| {
            errors.push(ConfigError { entry, message });
        };
        let stdio = self
            .servers
            .values()
            .filter(|s| matches!(s, ServerConfig::Stdio(_)))
            .count();
        if self.gateway.max_upstream_processes < stdio.max(1) {
            err(
                &mut errors,
                "gateway.max_upstream_processes".into(),
                format!(
                    "{} is too low: {stdio} stdio server(s) each keep one process running, and at least 1 is needed",
                    self.gateway.max_upstream_processes
                ),
            );
        }
        let sep = &self.gateway.separator;
        if !is_name_safe(sep) {
            err(
                &mut errors,
                "gateway.separator".into(),
                format!("{sep:?} must be non-empty and use only [A-Za-z0-9_.-]"),
            );
        }
        if self.gateway.page_size == 0 {
            err(
                &mut errors,
                "gateway.page_size".into(),
                "must be at least 1".into(),
            );
        }
        if self.gateway.max_body_bytes < 1024 {
            err(
                &mut errors,
                "gateway.max_body_bytes".into(),
                "must be at least 1024".into(),
            );
        }
        if self.gateway.request_timeout_secs == 0 {
            err(
                &mut errors,
                "gateway.request_timeout_secs".into(),
                "must be at least 1".into(),
            );
        }
        if self.gateway.max_response_bytes < 1024 {
            err(
                &mut errors,
                "gateway.max_response_bytes".into(),
                "must be at least 1024".into(),
            );
        }
        if self.gateway.catalogue_refresh_secs == 0 {
            err(
                &mut errors,
                "gateway.catalogue_refresh_secs".into(),
                "must be at least 1 (a catalogue that is never read again would let a changed tool through)"
                    .into(),
            );
        }
        if self.gateway.listen.parse::<std::net::SocketAddr>().is_err() {
            err(
                &mut errors,
                "gateway.listen".into(),
                format!(
                    "{:?} is not a socket address like 127.0.0.1:8787",
                    self.gateway.listen
                ),
            );
        }
        for (id, server) in &self.servers {
            let entry = format!("servers.{id}");
            if !is_name_safe(id) {
                err(
                    &mut errors,
                    entry.clone(),
                    "server ids use only [A-Za-z0-9_.-]".into(),
                );
            } else if !sep.is_empty() && id.contains(sep.as_str()) {
                err(
                    &mut errors,
                    entry.clone(),
                    format!("server id contains the separator {sep:?}, which would make names ambiguous"),
                );
            }
            if server.timeout_secs() == Some(0) {
                err(
                    &mut errors,
                    format!("{entry}.timeout_secs"),
                    "must be at least 1".into(),
                );
            }
            let (start_timeout, protocol) = match server {
                ServerConfig::Stdio(s) => (s.start_timeout_secs, s.protocol),
                ServerConfig::Http(h) | ServerConfig::Sse(h) => (h.start_timeout_secs, h.protocol),
            };
            if start_timeout == Some(0) {
                err(
                    &mut errors,
                    format!("{entry}.start_timeout_secs"),
                    "must be at least 1".into(),
                );
            }
            if matches!(server, ServerConfig::Sse(_)) && protocol == UpstreamProtocol::Modern {
                err(
                    &mut errors,
                    format!("{entry}.protocol"),
                    "an sse server speaks only the legacy protocol (use \"auto\" or \"legacy\")".into(),
                );
            }
            if server.catalogue_refresh_secs() == Some(0) {
                err(
                    &mut errors,
                    format!("{entry}.catalogue_refresh_secs"),
                    "must be at least 1".into(),
                );
            }
            if server.max_response_bytes().is_some_and(|b| b < 1024) {
                err(
                    &mut errors,
                    format!("{entry}.max_response_bytes"),
                    "must be at least 1024".into(),
                );
            }
            let check_templates =
                |kind: &str, map: &BTreeMap<String, String>, errs: &mut Vec<ConfigError>| {
                    for (k, v) in map {
                        if let Err(m) = Template::parse(v) {
                            errs.push(ConfigError {
                                entry: format!("{entry}.{kind}.{k}"),
                                message: m,
                            });
                        }
                    }
                };
            match server {
                ServerConfig::Stdio(s) => {
                    if s.command.trim().is_empty() {
                        err(
                            &mut errors,
                            format!("{entry}.command"),
                            "must not be empty".into(),
                        );
                    }
                    check_templates("env", &s.env, &mut errors);
                    check_personal(&entry, &s.personal, &s.env, &mut errors);
                    if !s.personal.is_empty() && s.isolation == Isolation::Shared {
                        err(
                            &mut errors,
                            format!("{entry}.personal"),
                            "personal credentials need isolation = \"session\" (one process per client session)"
                                .into(),
                        );
                    }
                }
                ServerConfig::Http(h) | ServerConfig::Sse(h) => {
                    if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                        errors.push(ConfigError {
                            entry: format!("{entry}.url"),
                            message: format!("{:?} must be an http:// or https:// URL", h.url),
                        });
                    } else if h.url.contains("${") {
                        errors.push(ConfigError {
                            entry: format!("{entry}.url"),
                            message: "placeholders are not allowed in URLs; put credentials in headers"
                                .into(),
                        });
                    }
                    check_templates("headers", &h.headers, &mut errors);
                    check_personal(&entry, &h.personal, &h.headers, &mut errors);
                    if h.oauth.is_some() && !h.personal.is_empty() {
                        err(
                            &mut errors,
                            format!("{entry}.personal"),
                            "personal header credentials cannot be combined with oauth on one server".into(),
                        );
                    }
                    if let Some(o) = &h.oauth {
                        let sse = matches!(server, ServerConfig::Sse(_));
                        check_oauth(&entry, o, h, sse, self.gateway.public_url.is_some(), &mut errors);
                    }
                    for (k, v) in &h.headers {
                        let sensitive = ["authorization", "cookie", "x-api-key", "api-key"]
                            .contains(&k.to_ascii_lowercase().as_str());
                        if sensitive && !v.contains("${") {
                            warnings.push(ConfigError {
                                entry: format!("{entry}.headers.{k}"),
                                message: "looks like an inline secret; use a ${NAME} placeholder".into(),
                            });
                        }
                    }
                }
            }
        }
        let c = &self.credentials;
        for (field, value) in [("store", &c.store), ("key_file", &c.key_file)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                err(
                    &mut errors,
                    format!("credentials.{field}"),
                    "must not be empty".into(),
                );
            }
        }
        if c.store_or_default() == c.key_file_or_default() {
            err(
                &mut errors,
                "credentials.key_file".into(),
                "must differ from credentials.store".into(),
            );
        }
        if !is_env_name(c.key_env_or_default()) {
            err(
                &mut errors,
                "credentials.key_env".into(),
                format!(
                    "{:?} is not an environment variable name ([A-Za-z0-9_])",
                    c.key_env_or_default()
                ),
            );
        }
        for (name, ep) in &self.endpoints {
            let entry = format!("endpoints.{name}");
            if !is_name_safe(name) {
                errors.push(ConfigError {
                    entry: entry.clone(),
                    message: "endpoint names use only [A-Za-z0-9_.-]".into(),
                });
            }
            if !ep.namespace && ep.servers.len() != 1 {
                errors.push(ConfigError {
                    entry: format!("{entry}.namespace"),
                    message: "namespace = false needs exactly one server (names would collide)".into(),
                });
            }
            if ep.servers.is_empty() {
                warnings.push(ConfigError {
                    entry: entry.clone(),
                    message: "has no servers".into(),
                });
            }
            for (sid, sel) in &ep.servers {
                let sentry = format!("{entry}.servers.{sid}");
                if !self.servers.contains_key(sid) {
                    errors.push(ConfigError {
                        entry: sentry.clone(),
                        message: format!("unknown server {sid:?} (not under [servers])"),
                    });
                }
                for (kind, globs) in [
                    ("tools", &sel.tools),
                    ("prompts", &sel.prompts),
                    ("resources", &sel.resources),
                ] {
                    for g in globs {
                        if let Err(e) = Pattern::new(g) {
                            errors.push(ConfigError {
                                entry: format!("{sentry}.{kind}"),
                                message: e.to_string(),
                            });
                        }
                    }
                }
                if sel.enabled && sel.tools.is_empty() && sel.prompts.is_empty() && sel.resources.is_empty() {
                    warnings.push(ConfigError {
                        entry: sentry,
                        message: "exposes nothing (list tools, prompts or resources to enable them)".into(),
                    });
                }
            }
        }
        for (i, g) in self.grants.iter().enumerate() {
            let entry = format!(
                "grants[{i}]{}",
                g.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
            );
            for globs in [&g.principals, &g.endpoints, &g.servers, &g.names] {
                for p in globs {
                    if let Err(e) = Pattern::new(p) {
                        errors.push(ConfigError {
                            entry: entry.clone(),
                            message: e.to_string(),
                        });
                    }
                }
            }
            if let Some(t) = &g.endpoint
                && let Err((suffix, message)) = t.endpoint_condition()
            {
                errors.push(ConfigError {
                    entry: format!("grants[{i}].endpoint{suffix}"),
                    message,
                });
            }
            for (j, w) in g.when.iter().enumerate() {
                if let Err((suffix, message)) = w.condition() {
                    errors.push(ConfigError {
                        entry: format!("grants[{i}].when[{j}]{suffix}"),
                        message,
                    });
                }
            }
            if g.principals.is_empty() && g.roles.is_empty() {
                warnings.push(ConfigError {
                    entry,
                    message: "names no principals or roles, so it applies to nobody".into(),
                });
            }
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            let entry = format!("auth.tokens[{i}]");
            match Template::parse(&t.token) {
                Ok(tpl) if tpl.has_placeholders() => {}
                Ok(_) => errors.push(ConfigError {
                    entry,
                    message: "tokens must be given as a ${NAME} placeholder, never inline".into(),
                }),
                Err(m) => errors.push(ConfigError { entry, message: m }),
            }
        }
        if let Some(j) = &self.auth.jwt {
            j.validate(&mut errors);
        }
        if let Some(a) = &self.auth.server {
            a.validate(self.gateway.public_url.as_deref(), &mut errors);
        }
        if let Some(u) = &self.gateway.public_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            errors.push(ConfigError {
                entry: "gateway.public_url".into(),
                message: "must be an http:// or https:// URL".into(),
            });
        }
        if self.grants.is_empty() && !self.endpoints.is_empty() {
            warnings.push(ConfigError {
                entry: "grants".into(),
                message: "no grants: every call will be refused (default deny)".into(),
            });
        }
        self.audit.validate(&mut errors, &mut warnings);
        self.validate_flow(&mut errors, &mut warnings);
        self.rate_limits.validate(&mut errors);
        self.unauthenticated_limits.validate(&mut errors);
        if errors.is_empty() {
            Ok(Warnings(warnings))
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

impl AuditSection {
    fn validate(&self, errors: &mut Vec<ConfigError>, warnings: &mut Vec<ConfigError>) {
        let mut err = |entry: &str, message: &str| {
            errors.push(ConfigError {
                entry: format!("audit.{entry}"),
                message: message.to_owned(),
            });
        };
        if self.sinks.is_empty() {
            err(
                "sinks",
                "name at least one sink: \"sqlite\", \"jsonl\" or \"tracing\"",
            );
        }
        let mut seen = std::collections::HashSet::new();
        if self.sinks.iter().any(|s| !seen.insert(*s)) {
            err("sinks", "a sink is named twice");
        }
        if self.mac_key_file.is_some() && self.mac_key_env.is_some() {
            err("mac_key_env", "give mac_key_file or mac_key_env, not both");
        }
        if self.rotate_bytes < 4096 {
            err("rotate_bytes", "must be at least 4096");
        }
        if self.payload_cap_bytes < 64 {
            err("payload_cap_bytes", "must be at least 64");
        }
        if self.queue == 0 {
            err("queue", "must be at least 1");
        }
        let durable = self
            .sinks
            .iter()
            .any(|s| matches!(s, AuditSinkKind::Sqlite | AuditSinkKind::Jsonl));
        if !self.sinks.is_empty() && !durable {
            warnings.push(ConfigError {
                entry: "audit.sinks".into(),
                message: "no durable sink: records only go to the log output".into(),
            });
        }
        if self.dangerously_fail_open {
            warnings.push(ConfigError {
                entry: "audit.dangerously_fail_open".into(),
                message: "calls go through even when their audit record cannot be written".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> GatewayConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn audit_defaults_fail_closed_and_bad_values_are_named() {
        let cfg = parse(serde_json::json!({}));
        assert_eq!(cfg.audit.sinks, vec![AuditSinkKind::Sqlite]);
        assert!(!cfg.audit.dangerously_fail_open);
        let cfg = parse(serde_json::json!({"audit": {
            "sinks": [], "rotate_bytes": 10, "mac_key_file": "k", "mac_key_env": "K",
        }}));
        let errors = cfg.validate().unwrap_err().to_string();
        for entry in ["audit.sinks", "audit.rotate_bytes", "audit.mac_key_env"] {
            assert!(errors.contains(entry), "{entry} in {errors}");
        }
        let cfg = parse(serde_json::json!({"audit": {"sinks": ["tracing"], "dangerously_fail_open": true}}));
        let warnings = cfg.validate().unwrap().0;
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            serde_json::from_value::<GatewayConfig>(serde_json::json!({"audit": {"sinks": ["kafka"]}}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<GatewayConfig>(serde_json::json!({"audit": {"rotate": 1}})).is_err()
        );
    }

    #[test]
    fn names_every_bad_entry() {
        let cfg = parse(serde_json::json!({
            "gateway": {"separator": "/"},
            "servers": {
                "a__b": {"transport": "stdio", "command": "x"},
                "h": {"transport": "http", "url": "ftp://x", "headers": {"Authorization": "Bearer ${T"}},
            },
            "endpoints": {"e p": {"servers": {"nope": {"tools": ["[a"]}}}},
        }));
        let errs = cfg.validate().unwrap_err().to_string();
        for needle in [
            "gateway.separator",
            "servers.h.url",
            "servers.h.headers.Authorization",
            "endpoints.e p:",
            "endpoints.e p.servers.nope: unknown server",
            "endpoints.e p.servers.nope.tools",
        ] {
            assert!(errs.contains(needle), "missing {needle:?} in\n{errs}");
        }
    }

    #[test]
    fn zero_limits_before_authentication_are_named() {
        let e = parse(serde_json::json!({
            "gateway": {"public_url": "https://gw.example"},
            "unauthenticated_limits": {"per_minute": 0, "registration_burst": 0, "max_sources": 0},
            "auth": {"server": {"users": [{"id": "a"}], "max_pending_authorizations": 0, "max_state_bytes": 0}},
        }))
        .validate()
        .unwrap_err()
        .to_string();
        for entry in [
            "unauthenticated_limits.per_minute",
            "unauthenticated_limits.registration_burst",
            "unauthenticated_limits.max_sources",
            "auth.server.max_pending_authorizations",
            "auth.server.max_state_bytes",
        ] {
            assert!(e.contains(entry), "{entry}: {e}");
        }
        let ok = parse(serde_json::json!({
            "unauthenticated_limits": {"per_minute": 60, "burst": 10, "audit_interval_secs": 30},
        }));
        assert!(ok.validate().is_ok());
        assert_eq!(ok.unauthenticated_limits.per_minute, Some(60));
    }

    #[test]
    fn start_timeouts_and_protocol_eras_have_defaults_and_bad_values_are_named() {
        let cfg = parse(serde_json::json!({"servers": {
            "s": {"transport": "stdio", "command": "x"},
            "h": {"transport": "http", "url": "http://127.0.0.1:1/mcp"},
            "o": {"transport": "sse", "url": "http://127.0.0.1:1/sse"},
            "l": {"transport": "stdio", "command": "x", "protocol": "legacy", "start_timeout_secs": 5},
            "m": {"transport": "http", "url": "http://127.0.0.1:1/mcp", "protocol": "2026-07-28"},
        }}));
        cfg.validate().unwrap();
        let server = |id: &str| &cfg.servers[id];
        assert_eq!(server("s").start_timeout(), std::time::Duration::from_mins(1));
        assert_eq!(server("h").start_timeout(), std::time::Duration::from_secs(30));
        assert_eq!(server("l").start_timeout(), std::time::Duration::from_secs(5));
        assert_eq!(server("s").protocol(), UpstreamProtocol::Auto);
        assert_eq!(server("l").protocol(), UpstreamProtocol::Legacy);
        assert_eq!(server("m").protocol(), UpstreamProtocol::Modern);
        assert_eq!(server("o").protocol(), UpstreamProtocol::Legacy);
        assert_eq!(cfg.gateway.startup_wait_ms, 3000);

        let errs = parse(serde_json::json!({"servers": {
            "s": {"transport": "stdio", "command": "x", "start_timeout_secs": 0},
            "o": {"transport": "sse", "url": "http://127.0.0.1:1/sse", "protocol": "2026-07-28"},
        }}))
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            errs.contains("servers.s.start_timeout_secs: must be at least 1"),
            "{errs}"
        );
        assert!(
            errs.contains("servers.o.protocol: an sse server speaks only the legacy protocol"),
            "{errs}"
        );
        let bad = serde_json::from_value::<GatewayConfig>(serde_json::json!({"servers": {
            "s": {"transport": "stdio", "command": "x", "protocol": "2025-11-25"},
        }}))
        .unwrap_err()
        .to_string();
        assert!(bad.contains("2025-11-25") && bad.contains("legacy"), "{bad}");
    }

    #[test]
    fn separator_in_server_id_is_rejected() {
        let cfg = parse(serde_json::json!({"servers": {"a__b": {"transport": "stdio", "command": "x"}}}));
        let errs = cfg.validate().unwrap_err().to_string();
        assert!(
            errs.contains("servers.a__b: server id contains the separator"),
            "{errs}"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<GatewayConfig, _> = serde_json::from_value(
            serde_json::json!({"servers": {"a": {"transport": "stdio", "command": "x", "comand": "y"}}}),
        );
        assert!(r.unwrap_err().to_string().contains("comand"));
    }

    #[test]
    fn inline_token_is_refused() {
        let cfg =
            parse(serde_json::json!({"auth": {"tokens": [{"principal": {"id": "a"}, "token": "abc"}]}}));
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("auth.tokens[0]: tokens must be given as a ${NAME} placeholder")
        );
    }

    #[test]
    fn bad_jwt_settings_and_public_url_are_named() {
        let errors = |v: serde_json::Value| parse(v).validate().unwrap_err().to_string();
        let e = errors(serde_json::json!({
            "gateway": {"public_url": "gw.example.com"},
            "auth": {"jwt": {"issuer": " ", "jwks_url": "http://idp.example.com/jwks",
                             "algorithms": ["RS256", "HS256", "none"], "leeway_secs": 301}}}));
        for expected in [
            "gateway.public_url: must be an http:// or https:// URL",
            "auth.jwt.issuer: must not be empty",
            "auth.jwt.jwks_url: must be https:// (http:// only on 127.0.0.1, ::1 or localhost)",
            "auth.jwt.algorithms[1]: \"HS256\" is not accepted: asymmetric algorithms only",
            "auth.jwt.algorithms[2]: \"none\" is not accepted",
            "auth.jwt.leeway_secs: at most 300 seconds",
        ] {
            assert!(e.contains(expected), "{expected:?} missing from {e}");
        }
        assert!(!e.contains("algorithms[0]"), "{e}");
        let e = errors(serde_json::json!({"auth": {"jwt": {"issuer": "i"}}}));
        assert!(e.contains("auth.jwt.jwks_file: set jwks_file or jwks_url"), "{e}");
        let e = errors(
            serde_json::json!({"auth": {"jwt": {"issuer": "i", "jwks_file": "k.json",
            "jwks_url": "https://i/jwks"}}}),
        );
        assert!(
            e.contains("auth.jwt.jwks_url: set jwks_file or jwks_url, not both"),
            "{e}"
        );
        let ok = parse(serde_json::json!({"auth": {"jwt": {"issuer": "i",
            "jwks_url": "http://127.0.0.1:9000/jwks"}}}));
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn grant_conditions_parse_and_bad_ones_are_named() {
        let cfg = parse(serde_json::json!({"grants": [
            {"roles": ["eng"], "kinds": ["tool", "template"], "principal_kind": "agent",
             "endpoint": {"glob": "engineering-*"},
             "when": [{"arg": "/repo", "in": ["a", "b"]}, {"attr": "team", "eq": "x", "not": true}]},
        ]}));
        cfg.validate().unwrap();
        let g = &cfg.grants[0];
        assert_eq!(
            g.when[0].condition().unwrap(),
            Condition::arg("/repo").is_in(["a", "b"])
        );
        assert_eq!(
            g.endpoint.as_ref().unwrap().endpoint_condition().unwrap(),
            Condition::endpoint().glob("engineering-*")
        );
        let cfg = parse(serde_json::json!({"grants": [
            {"roles": ["eng"]},
            {"roles": ["eng"], "endpoint": {"eq": "a", "glob": "b"}},
            {"roles": ["eng"], "when": [
                {"arg": "/ok", "eq": 1},
                {"arg": "repo", "eq": "x"},
                {"attr": "team", "eq": 1},
                {"arg": "/x", "attr": "y", "eq": "z"},
                {"arg": "/x", "glob": "[a"},
                {"arg": "/x", "in": [{"a": 1}]},
            ]},
        ]}));
        let errs = cfg.validate().unwrap_err().to_string();
        for needle in [
            "grants[1].endpoint: give exactly one of eq, ne, glob, in",
            "grants[2].when[1].arg: \"repo\" is not a JSON pointer",
            "grants[2].when[2].eq: must be a string",
            "grants[2].when[3]: give exactly one of arg, attr",
            "grants[2].when[4].glob",
            "grants[2].when[5].in",
        ] {
            assert!(errs.contains(needle), "missing {needle:?} in\n{errs}");
        }
        assert!(!errs.contains("when[0]"), "{errs}");
        assert!(
            serde_json::from_value::<GatewayConfig>(
                serde_json::json!({"grants": [{"when": [{"arg": "/x", "equals": 1}]}]})
            )
            .is_err()
        );
    }

    #[test]
    fn rate_limits_parse_and_zero_is_named() {
        let cfg = parse(serde_json::json!({"rate_limits": {
            "per_principal": {"per_minute": 60, "burst": 5}, "per_tool": {"per_minute": 0, "burst": 0}}}));
        let errs = cfg.validate().unwrap_err().to_string();
        assert!(errs.contains("rate_limits.per_tool.per_minute"), "{errs}");
        assert!(errs.contains("rate_limits.per_tool.burst"), "{errs}");
        assert!(!errs.contains("per_principal"), "{errs}");
        assert!(
            serde_json::from_value::<GatewayConfig>(serde_json::json!({"rate_limits": {"per_user": {}}}))
                .is_err()
        );
    }
}
