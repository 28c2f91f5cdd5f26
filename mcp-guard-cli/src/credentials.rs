//! The credential store the gateway resolves `${NAME}` from, and `mcp-guard credentials`.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;

use mcp_guard_core::config::{GatewayConfig, OAuthModeConfig, ServerConfig};
use mcp_guard_core::credential::{SealedFileStore, StoreKey};
use mcp_guard_core::{CredentialKey, CredentialMode};
use secrecy::SecretString;
use zeroize::Zeroizing;

/// `mcp-guard credentials …`.
#[derive(Subcommand, Debug)]
pub(crate) enum CredentialsCommand {
    /// Stores (or replaces) a credential; the value is read from stdin or --value-env,
    /// never from the command line.
    Set {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// The server id.
        #[arg(long)]
        server: String,
        /// The placeholder name (`GITHUB_TOKEN` for `${GITHUB_TOKEN}`).
        #[arg(long)]
        name: String,
        /// Whose personal credential (for names the server declares personal).
        #[arg(long)]
        principal: Option<String>,
        /// Read the value from this environment variable instead of stdin.
        #[arg(long)]
        value_env: Option<String>,
    },
    /// Lists stored credentials (names, never values).
    List {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// Only this server.
        #[arg(long)]
        server: Option<String>,
        /// Show what this principal has for each server with personal credentials
        /// (set / missing; for OAuth servers connected / missing / needs
        /// re-authentication).
        #[arg(long)]
        principal: Option<String>,
    },
    /// Removes a credential.
    Remove {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// The server id.
        #[arg(long)]
        server: String,
        /// The placeholder name.
        #[arg(long)]
        name: String,
        /// Whose personal credential.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Re-seals every record under a new key, atomically. With a key file, a new key
    /// is generated into it; with the key in the environment, give the new one in
    /// --new-key-env.
    RotateKey {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// An environment variable holding the new key (base64 of 32 bytes).
        #[arg(long)]
        new_key_env: Option<String>,
    },
}

/// The sealed store a loaded config names.
fn sealed(loaded: &mcp_guard_tower::server::LoadedConfig) -> SealedFileStore {
    mcp_guard_tower::server::sealed_store(&loaded.config, loaded.base_dir())
}

fn personal_names(server: &ServerConfig) -> &[String] {
    match server {
        ServerConfig::Stdio(s) => &s.personal,
        ServerConfig::Http(h) | ServerConfig::Sse(h) => &h.personal,
        _ => &[],
    }
}

fn key_for(
    config: &GatewayConfig,
    server: &str,
    name: &str,
    principal: Option<&str>,
) -> anyhow::Result<CredentialKey> {
    let s = config
        .servers
        .get(server)
        .with_context(|| format!("no server named {server:?} in the configuration"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!("invalid name {name:?} (use [A-Za-z0-9_], as in ${{NAME}})");
    }
    let oauth_personal = matches!(s, ServerConfig::Http(h) if h.oauth.as_ref().is_some_and(|o| o.mode == OAuthModeConfig::Personal))
        && [
            mcp_guard_core::upstream::oauth::TOKENS,
            mcp_guard_core::upstream::oauth::NEEDS_REAUTHENTICATION,
        ]
        .contains(&name);
    let personal = oauth_personal || personal_names(s).iter().any(|n| n == name);
    match (principal, personal) {
        (Some(p), true) if !p.trim().is_empty() => Ok(CredentialKey::personal(server, p, name)),
        (Some(_), true) => bail!("--principal must not be empty"),
        (None, false) => Ok(CredentialKey::shared(server, name)),
        (None, true) => {
            bail!("{name} is personal for server {server}: give --principal (each principal sets their own)")
        }
        (Some(_), false) => bail!(
            "{name} is not declared personal for server {server} (add it to servers.{server}.personal, or drop --principal for a shared credential)"
        ),
    }
}

fn read_value(value_env: Option<&str>) -> anyhow::Result<SecretString> {
    let mut text = Zeroizing::new(String::new());
    if let Some(var) = value_env {
        *text = std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?;
    } else {
        if std::io::stdin().is_terminal() {
            eprintln!("Enter the value, then press Enter and Ctrl-D:");
        }
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the value from stdin")?;
        let trimmed = text.trim_end_matches(['\n', '\r']).len();
        text.truncate(trimmed);
    }
    if text.is_empty() {
        bail!("the value is empty");
    }
    let mut owned = String::with_capacity(text.len());
    owned.push_str(&text);
    Ok(SecretString::from(owned))
}

fn display(key: &CredentialKey) -> String {
    match (&key.principal, key.mode) {
        (Some(p), CredentialMode::Personal) => format!("{:<20} {:<24} personal  {p}", key.server, key.name),
        _ => format!("{:<20} {:<24} shared", key.server, key.name),
    }
}

/// One line per server with personal credentials: what `principal` has for it.
pub(crate) fn principal_report(
    config: &GatewayConfig,
    store: &SealedFileStore,
    only: Option<&str>,
    principal: &str,
) -> anyhow::Result<Vec<String>> {
    use mcp_guard_core::upstream::oauth::{NEEDS_REAUTHENTICATION, TOKENS};
    let mut out = Vec::new();
    for (id, server) in &config.servers {
        if only.is_some_and(|s| s != id) {
            continue;
        }
        let oauth = matches!(server, ServerConfig::Http(h) if h.oauth.as_ref().is_some_and(|o| o.mode == OAuthModeConfig::Personal));
        if oauth {
            let get = |name: &str| store.get_sync(&CredentialKey::personal(id.as_str(), principal, name));
            let state = if let Some(m) = get(NEEDS_REAUTHENTICATION)? {
                #[expect(clippy::disallowed_methods, reason = "the marker holds no secret")]
                let v: serde_json::Value =
                    serde_json::from_str(secrecy::ExposeSecret::expose_secret(&m)).unwrap_or_default();
                format!(
                    "needs re-authentication since {} ({})",
                    mcp_guard_core::time::format_rfc3339(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_secs(v["since"].as_u64().unwrap_or(0))
                    ),
                    v["reason"].as_str().unwrap_or_default()
                )
            } else if get(TOKENS)?.is_some() {
                "connected (OAuth)".to_owned()
            } else {
                "missing: sign in through the gateway (GET /auth/upstreams gives the link)".to_owned()
            };
            out.push(format!("{id:<20} {principal:<16} {state}"));
            continue;
        }
        for name in personal_names(server) {
            let key = CredentialKey::personal(id.as_str(), principal, name.as_str());
            let state = if store.get_sync(&key)?.is_some() {
                "set"
            } else {
                "missing"
            };
            out.push(format!("{id:<20} {principal:<16} {name:<24} {state}"));
        }
    }
    Ok(out)
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command reports to its user"
)]
pub(crate) fn run(command: CredentialsCommand) -> anyhow::Result<()> {
    match command {
        CredentialsCommand::Set {
            config,
            server,
            name,
            principal,
            value_env,
        } => {
            let loaded = mcp_guard_tower::server::load_config(&config)?;
            let key = key_for(&loaded.config, &server, &name, principal.as_deref())?;
            let value = read_value(value_env.as_deref())?;
            let store = sealed(&loaded);
            store.set(&key, &value)?;
            outln!("stored {} in {}", key, store.path().display());
        }
        CredentialsCommand::List {
            config,
            server,
            principal: Some(principal),
        } => {
            let loaded = mcp_guard_tower::server::load_config(&config)?;
            let store = sealed(&loaded);
            for line in principal_report(&loaded.config, &store, server.as_deref(), &principal)? {
                outln!("{line}");
            }
        }
        CredentialsCommand::List { config, server, .. } => {
            let loaded = mcp_guard_tower::server::load_config(&config)?;
            let store = sealed(&loaded);
            for e in store.list()? {
                if server.as_deref().is_none_or(|s| *e.key.server == *s) {
                    outln!(
                        "{}  set {}",
                        display(&e.key),
                        mcp_guard_core::time::format_rfc3339(e.updated)
                    );
                }
            }
        }
        CredentialsCommand::Remove {
            config,
            server,
            name,
            principal,
        } => {
            let loaded = mcp_guard_tower::server::load_config(&config)?;
            let key = key_for(&loaded.config, &server, &name, principal.as_deref())?;
            let store = sealed(&loaded);
            if !store.remove(&key)? {
                bail!("no credential stored for {key}");
            }
            outln!("removed {key}; the next call that needs it reports it missing");
        }
        CredentialsCommand::RotateKey { config, new_key_env } => {
            let loaded = mcp_guard_tower::server::load_config(&config)?;
            let store = sealed(&loaded);
            let key_env = loaded.config.credentials.key_env_or_default();
            let in_env = std::env::var_os(key_env).is_some();
            match (&new_key_env, in_env) {
                (None, true) => bail!(
                    "the key comes from environment variable {key_env}: give the new key with --new-key-env VAR"
                ),
                (Some(_), false) => bail!(
                    "the key is in a key file: run rotate-key without --new-key-env to generate a new one"
                ),
                _ => {}
            }
            let n = if let Some(var) = new_key_env {
                let text = Zeroizing::new(
                    std::env::var(&var).with_context(|| format!("environment variable {var} is not set"))?,
                );
                let key = StoreKey::from_base64(&text, &format!("environment variable {var}"))?;
                let n = store.rotate_to(&key)?;
                eprintln!(
                    "now set {} to the new key (the value of {var}) wherever the gateway runs",
                    loaded.config.credentials.key_env_or_default()
                );
                n
            } else {
                store.rotate_key_file()?
            };
            outln!("re-sealed {n} credential(s) under the new key");
        }
    }
    Ok(())
}
