//! Connecting clients: the built-in authorization server as `serve` runs it,
//! `mcp-guard users login-link`, and `mcp-guard connect-config`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use clap::{Subcommand, ValueEnum};
use mcp_guard_core::access::{AccessStore, Sessions, parse_duration};
use mcp_guard_core::config::{GatewayConfig, ServerConfig};
use mcp_guard_core::credential::{CredentialKey, CredentialStore, SealedFileStore};
use mcp_guard_core::policy::GrantPolicy;
use mcp_guard_core::upstream::oauth::PersonalState as OAuthState;
use mcp_guard_core::{Action, CallContext, Operation, Principal};
use mcp_guard_tower::authorize::{
    AuthServerSettings, AuthorizationServer, EndpointCatalog, OidcSettings, PersonalCredentials,
    PersonalServer, PersonalState,
};
use mcp_guard_tower::federation::Gateway;
use mcp_guard_tower::upstream_auth::UpstreamAuth;
use secrecy::SecretString;

use crate::load;

/// `mcp-guard users …`.
#[derive(Subcommand, Debug)]
pub(crate) enum UsersCommand {
    /// Prints a one-time sign-in link for a configured user of the built-in
    /// authorization server (`[[auth.server.users]]`).
    LoginLink {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// The user's id.
        user: String,
        /// How long the link stays valid (single use): `15m`, `1h`.
        #[arg(long, default_value = "15m")]
        ttl: String,
    },
}

/// Which client `connect-config` writes for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ClientKind {
    /// Claude Desktop (`claude_desktop_config.json`, through `mcp-remote`).
    ClaudeDesktop,
    /// Claude Code (`claude mcp add` command).
    ClaudeCode,
    /// Cursor (`.cursor/mcp.json`).
    Cursor,
    /// VS Code (`.vscode/mcp.json`).
    Vscode,
    /// A neutral JSON description.
    Json,
}

/// `mcp-guard connect-config` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct ConnectConfigArgs {
    /// The configuration file.
    #[arg(long, short, env = "MCP_GUARD_CONFIG")]
    config: PathBuf,
    /// The endpoint to connect to.
    #[arg(long)]
    endpoint: String,
    /// The client to write the configuration for.
    #[arg(long, value_enum)]
    client: ClientKind,
    /// The name the server gets in the client (default `mcp-guard-<endpoint>`).
    #[arg(long)]
    name: Option<String>,
}

fn store_for(config: &Path) -> anyhow::Result<(GatewayConfig, AccessStore)> {
    let cfg = load::load(config)?.config;
    let path = crate::access::store_path(config, &cfg);
    let store =
        AccessStore::open(&path).with_context(|| format!("opening the access store {}", path.display()))?;
    Ok((cfg, store))
}

#[allow(clippy::print_stdout, reason = "a command prints its result")]
pub(crate) fn users(command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::LoginLink { config, user, ttl } => {
            let (cfg, store) = store_for(&config)?;
            let Some(server) = &cfg.auth.server else {
                bail!("the built-in authorization server is not configured (add [auth.server])");
            };
            if !server.users.iter().any(|u| u.id == user) {
                bail!(
                    "{user:?} is not a user of the built-in authorization server (add it to [[auth.server.users]])"
                );
            }
            let ttl = parse_duration(&ttl).map_err(anyhow::Error::msg)?;
            let code = store.issue_login_link(&user, ttl)?;
            let base = cfg
                .gateway
                .public_url
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('/');
            #[expect(clippy::disallowed_methods, reason = "the link is printed once, for its user")]
            let code = secrecy::ExposeSecret::expose_secret(&code).to_owned();
            outln!("{base}/login?code={code}");
            Ok(())
        }
    }
}

#[allow(clippy::print_stdout, reason = "a command prints its result")]
pub(crate) fn connect_config(a: &ConnectConfigArgs) -> anyhow::Result<()> {
    let cfg = load::load(&a.config)?.config;
    if !cfg.endpoints.contains_key(&a.endpoint) {
        let known: Vec<&str> = cfg.endpoints.keys().map(String::as_str).collect();
        bail!(
            "no endpoint named {:?} (endpoints: {})",
            a.endpoint,
            known.join(", ")
        );
    }
    let base = cfg
        .gateway
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", cfg.gateway.listen));
    let url = format!("{}/mcp/{}", base.trim_end_matches('/'), a.endpoint);
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("mcp-guard-{}", a.endpoint));
    outln!(
        "{}",
        render_client_config(a.client, &name, &url, cfg.auth.server.is_some())?
    );
    Ok(())
}

/// The client-side configuration for one endpoint.
pub(crate) fn render_client_config(
    client: ClientKind,
    name: &str,
    url: &str,
    oauth: bool,
) -> anyhow::Result<String> {
    use serde_json::json;
    let text = match client {
        ClientKind::ClaudeDesktop => serde_json::to_string_pretty(&json!({
            "mcpServers": { name: { "command": "npx", "args": ["-y", "mcp-remote", url] } }
        }))?,
        ClientKind::ClaudeCode => format!(
            "claude mcp add --transport http {} {}",
            shell_quote(name),
            shell_quote(url)
        ),
        ClientKind::Cursor => {
            serde_json::to_string_pretty(&json!({ "mcpServers": { name: { "url": url } } }))?
        }
        ClientKind::Vscode => {
            serde_json::to_string_pretty(&json!({ "servers": { name: { "type": "http", "url": url } } }))?
        }
        ClientKind::Json => serde_json::to_string_pretty(&json!({
            "name": name,
            "url": url,
            "transport": "streamable-http",
            "authorization": if oauth { "oauth" } else { "bearer token (mcp-guard tokens issue)" },
            "protected_resource_metadata": protected_resource_metadata(url),
        }))?,
    };
    Ok(text)
}

fn protected_resource_metadata(url: &str) -> String {
    match url.find("/mcp/") {
        Some(i) => format!("{}/.well-known/oauth-protected-resource{}", &url[..i], &url[i..]),
        None => url.to_owned(),
    }
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./:@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The built-in authorization server of `cfg`, when `[auth.server]` is set.
pub(crate) fn authorization_server(
    cfg: &GatewayConfig,
    config_path: &Path,
    store: &AccessStore,
    sessions: &Sessions,
    gateway: &Gateway,
    stores: &crate::credentials::Stores,
    upstream: Option<&UpstreamAuth>,
) -> anyhow::Result<Option<AuthorizationServer>> {
    let Some(a) = &cfg.auth.server else {
        return Ok(None);
    };
    let issuer = cfg
        .gateway
        .public_url
        .clone()
        .context("auth.server needs gateway.public_url")?;
    let mut settings = AuthServerSettings::new(issuer);
    let dur = |s: &str| parse_duration(s).map_err(anyhow::Error::msg);
    if let Some(t) = &a.access_token_ttl {
        settings.access_token_ttl = dur(t)?;
    }
    if let Some(t) = &a.signin_ttl {
        settings.signin_ttl = dur(t)?;
    }
    if !a.durations.is_empty() {
        settings.durations = a
            .durations
            .iter()
            .map(|d| Ok((d.clone(), dur(d)?)))
            .collect::<anyhow::Result<_>>()?;
    }
    settings.scopes.clone_from(&a.scopes);
    settings.trusted_clients.clone_from(&a.trusted_clients);
    for (value, setting) in [
        (a.max_pending_authorizations, &mut settings.max_pending),
        (
            a.max_pending_authorizations_per_source,
            &mut settings.max_pending_per_source,
        ),
        (a.max_state_bytes, &mut settings.max_state_bytes),
        (a.max_clients, &mut settings.max_clients),
    ] {
        if let Some(v) = value {
            *setting = v;
        }
    }
    settings.dangerously_allow_private_client_metadata = a.dangerously_allow_private_client_metadata;
    if settings.dangerously_allow_private_client_metadata {
        tracing::warn!(
            "auth.server.dangerously_allow_private_client_metadata is set: client metadata may be fetched from private addresses"
        );
    }
    let catalog = Arc::new(Catalog {
        gateway: gateway.clone(),
        policy: load::policy(cfg)?,
        descriptions: cfg
            .endpoints
            .iter()
            .map(|(k, e)| (k.clone(), e.description.clone()))
            .collect(),
    });
    let personal = Arc::new(Personal {
        servers: personal_servers(cfg),
        stores: stores.clone(),
        sealed: crate::credentials::sealed(cfg, config_path),
        oauth: upstream.cloned(),
    });
    let mut server = AuthorizationServer::new(
        settings,
        store.clone(),
        a.users.iter().map(load::principal),
        catalog,
    )
    .personal_credentials(personal)
    .sessions(sessions.clone());
    if let Some(o) = &a.oidc {
        server = server.oidc(oidc_settings(o)?);
    }
    Ok(Some(server))
}

fn oidc_settings(o: &mcp_guard_core::config::OidcConfig) -> anyhow::Result<OidcSettings> {
    let mut s = OidcSettings::new(o.issuer.clone(), o.client_id.clone());
    if let Some(secret) = &o.client_secret {
        let value = crate::env_secret("auth.server.oidc.client_secret", secret)?;
        s.client_secret = Some(value);
    }
    if let Some(v) = &o.scopes {
        s.scopes.clone_from(v);
    }
    if let Some(v) = &o.principal_claim {
        s.principal_claim.clone_from(v);
    }
    s.roles_claim.clone_from(&o.roles_claim);
    if let Some(v) = &o.display_name {
        s.display_name.clone_from(v);
    }
    Ok(s)
}

struct Catalog {
    gateway: Gateway,
    policy: GrantPolicy,
    descriptions: std::collections::BTreeMap<String, Option<String>>,
}

#[async_trait]
impl EndpointCatalog for Catalog {
    fn endpoints(&self) -> Vec<String> {
        self.descriptions.keys().cloned().collect()
    }

    fn describe(&self, endpoint: &str) -> Option<Option<String>> {
        self.descriptions.get(endpoint).cloned()
    }

    async fn tools(&self, principal: &Principal, endpoint: &str) -> Vec<String> {
        let Some(e) = self.gateway.endpoint(endpoint) else {
            return Vec::new();
        };
        let snapshot = e.snapshot();
        let ctx = CallContext::new(Arc::new(principal.clone()), endpoint);
        snapshot
            .tools()
            .iter()
            .filter(|t| {
                snapshot.resolve_tool(&t.name).is_some_and(|target| {
                    self.policy
                        .decide(
                            &Operation::new(Action::List, Some(target.clone()), t.name.as_ref()),
                            &ctx,
                        )
                        .is_allow()
                })
            })
            .map(|t| t.name.to_string())
            .collect()
    }
}

/// Per endpoint: (server, description, personal names, personal OAuth) of its enabled
/// servers that need the user's own credentials.
type PersonalMap = std::collections::BTreeMap<String, Vec<(String, Option<String>, Vec<String>, bool)>>;

fn personal_servers(cfg: &GatewayConfig) -> PersonalMap {
    let mut out = PersonalMap::new();
    for (name, e) in &cfg.endpoints {
        let mut list = Vec::new();
        for (id, sel) in &e.servers {
            let Some(server) = cfg.servers.get(id).filter(|_| sel.enabled) else {
                continue;
            };
            let (names, description, oauth) = match server {
                ServerConfig::Stdio(s) if s.enabled => (&s.personal, &s.description, false),
                ServerConfig::Http(h) | ServerConfig::Sse(h) if h.enabled => (
                    &h.personal,
                    &h.description,
                    h.oauth
                        .as_ref()
                        .is_some_and(|o| o.mode == mcp_guard_core::config::OAuthModeConfig::Personal),
                ),
                _ => continue,
            };
            if !names.is_empty() || oauth {
                list.push((id.clone(), description.clone(), names.clone(), oauth));
            }
        }
        out.insert(name.clone(), list);
    }
    out
}

struct Personal {
    servers: PersonalMap,
    stores: crate::credentials::Stores,
    sealed: SealedFileStore,
    oauth: Option<UpstreamAuth>,
}

#[async_trait]
impl PersonalCredentials for Personal {
    async fn servers(&self, principal: &Principal, endpoint: &str) -> Vec<PersonalServer> {
        let mut out = Vec::new();
        for (server, description, names, oauth) in self.servers.get(endpoint).into_iter().flatten() {
            if *oauth {
                let state = match &self.oauth {
                    Some(o) => match o.personal_state(principal.id(), server).await {
                        OAuthState::Connected { .. } => PersonalState::Done,
                        OAuthState::NeedsReauthentication { .. } => PersonalState::NeedsReauthentication,
                        _ => PersonalState::NeedsOAuth,
                    },
                    None => PersonalState::NeedsOAuth,
                };
                out.push(
                    PersonalServer::new(server.clone(), state)
                        .description(description.clone())
                        .oauth(true),
                );
                continue;
            }
            let mut done = true;
            for n in names {
                let key = CredentialKey::personal(server.as_str(), principal.id(), n.as_str());
                if !matches!(self.stores.calls.get(&key).await, Ok(Some(_))) {
                    done = false;
                }
            }
            let state = if done {
                PersonalState::Done
            } else {
                PersonalState::NeedsToken
            };
            out.push(
                PersonalServer::new(server.clone(), state)
                    .description(description.clone())
                    .token_names(names.clone()),
            );
        }
        out
    }

    async fn set_token(
        &self,
        principal: &Principal,
        server: &str,
        name: &str,
        value: SecretString,
    ) -> Result<(), mcp_guard_core::BoxError> {
        let declared = self
            .servers
            .values()
            .flatten()
            .any(|(s, _, names, _)| s == server && names.iter().any(|n| n == name));
        if !declared {
            return Err(format!("{name} is not a personal credential of {server}").into());
        }
        let key = CredentialKey::personal(server, principal.id(), name);
        crate::known_secrets().add(&value);
        self.sealed.set(&key, &value)?;
        Ok(())
    }

    fn oauth_start(&self, principal: &Principal, server: &str, return_to: &str) -> Option<String> {
        self.oauth
            .as_ref()?
            .start_url(principal, server, Some(return_to))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_configurations_name_the_endpoint_url() {
        let url = "https://gw.example/mcp/eng";
        let d = render_client_config(ClientKind::ClaudeDesktop, "eng", url, true).unwrap();
        let v: serde_json::Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["mcpServers"]["eng"]["args"][2], url);
        let c = render_client_config(ClientKind::Cursor, "eng", url, true).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&c).unwrap()["mcpServers"]["eng"]["url"],
            url
        );
        let v = render_client_config(ClientKind::Vscode, "eng", url, true).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&v).unwrap()["servers"]["eng"]["type"],
            "http"
        );
        assert_eq!(
            render_client_config(ClientKind::ClaudeCode, "my eng", url, true).unwrap(),
            "claude mcp add --transport http 'my eng' https://gw.example/mcp/eng"
        );
        let j: serde_json::Value =
            serde_json::from_str(&render_client_config(ClientKind::Json, "eng", url, true).unwrap()).unwrap();
        assert_eq!(
            j["protected_resource_metadata"],
            "https://gw.example/.well-known/oauth-protected-resource/mcp/eng"
        );
    }
}
