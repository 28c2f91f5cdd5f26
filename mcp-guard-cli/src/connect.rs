//! Connecting clients: the built-in authorization server as `serve` runs it,
//! `mcp-guard users login-link`, and `mcp-guard connect-config`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use mcp_guard_core::access::{AccessStore, parse_duration};
use mcp_guard_core::config::GatewayConfig;

use mcp_guard_tower::server::{access_store_path, load_config};

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
    let loaded = load_config(config)?;
    let path = access_store_path(&loaded.config, loaded.base_dir());
    let cfg = loaded.config;
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
    let cfg = load_config(&a.config)?.config;
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
