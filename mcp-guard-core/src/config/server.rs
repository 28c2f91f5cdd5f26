//! `[servers.ID]`: the upstream servers, stdio or HTTP, and the gateway's OAuth
//! sign-in to an HTTP upstream.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, is_name_safe, yes};
use crate::upstream::{Template, UpstreamProtocol};

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

    /// Checks of server `id`; `sep` is `gateway.separator`, which an id must not
    /// contain.
    #[allow(
        clippy::too_many_lines,
        reason = "one linear list of checks reads best in one place"
    )]
    pub(super) fn validate(
        &self,
        id: &str,
        sep: &str,
        has_public_url: bool,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<ConfigError>,
    ) {
        let err = |errors: &mut Vec<ConfigError>, entry: String, message: String| {
            errors.push(ConfigError { entry, message });
        };
        let server = self;
        let entry = format!("servers.{id}");
        if !is_name_safe(id) {
            err(errors, entry.clone(), "server ids use only [A-Za-z0-9_.-]".into());
        } else if !sep.is_empty() && id.contains(sep) {
            err(
                errors,
                entry.clone(),
                format!("server id contains the separator {sep:?}, which would make names ambiguous"),
            );
        }
        if server.timeout_secs() == Some(0) {
            err(
                errors,
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
                errors,
                format!("{entry}.start_timeout_secs"),
                "must be at least 1".into(),
            );
        }
        if matches!(server, ServerConfig::Sse(_)) && protocol == UpstreamProtocol::Modern {
            err(
                errors,
                format!("{entry}.protocol"),
                "an sse server speaks only the legacy protocol (use \"auto\" or \"legacy\")".into(),
            );
        }
        if server.catalogue_refresh_secs() == Some(0) {
            err(
                errors,
                format!("{entry}.catalogue_refresh_secs"),
                "must be at least 1".into(),
            );
        }
        if server.max_response_bytes().is_some_and(|b| b < 1024) {
            err(
                errors,
                format!("{entry}.max_response_bytes"),
                "must be at least 1024".into(),
            );
        }
        let check_templates = |kind: &str, map: &BTreeMap<String, String>, errs: &mut Vec<ConfigError>| {
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
                    err(errors, format!("{entry}.command"), "must not be empty".into());
                }
                check_templates("env", &s.env, errors);
                check_personal(&entry, &s.personal, &s.env, errors);
                if !s.personal.is_empty() && s.isolation == Isolation::Shared {
                    err(
                        errors,
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
                        message: "placeholders are not allowed in URLs; put credentials in headers".into(),
                    });
                }
                check_templates("headers", &h.headers, errors);
                check_personal(&entry, &h.personal, &h.headers, errors);
                if h.oauth.is_some() && !h.personal.is_empty() {
                    err(
                        errors,
                        format!("{entry}.personal"),
                        "personal header credentials cannot be combined with oauth on one server".into(),
                    );
                }
                if let Some(o) = &h.oauth {
                    let sse = matches!(server, ServerConfig::Sse(_));
                    check_oauth(&entry, o, h, sse, has_public_url, errors);
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
