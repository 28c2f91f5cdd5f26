//! The credential store the gateway resolves `${NAME}` from, and `mcp-guard credentials`.

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use mcp_guard_core::config::{GatewayConfig, ServerConfig};
use mcp_guard_core::credential::{Declared, FirstOf, KeySource, Scrubbing, SealedFileStore, StoreKey};
use mcp_guard_core::{CredentialKey, CredentialMode, CredentialStore, EnvCredentialStore};
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

/// The sealed store a config names (paths relative to the config file).
pub(crate) fn sealed(config: &GatewayConfig, config_path: &Path) -> SealedFileStore {
    let base = config_path.parent().unwrap_or(Path::new(""));
    let c = &config.credentials;
    let key_env = c.key_env_or_default();
    let key = if std::env::var_os(key_env).is_some() {
        KeySource::Env(key_env.to_owned())
    } else {
        KeySource::File(base.join(c.key_file_or_default()))
    };
    SealedFileStore::new(base.join(c.store_or_default()), key)
}

fn personal_names(server: &ServerConfig) -> &[String] {
    match server {
        ServerConfig::Stdio(s) => &s.personal,
        ServerConfig::Http(h) | ServerConfig::Sse(h) => &h.personal,
        _ => &[],
    }
}

/// The stores upstream connectors resolve from.
#[derive(Clone)]
pub(crate) struct Stores {
    /// For connections that serve calls: personal names only as the caller's own.
    pub(crate) calls: Arc<dyn CredentialStore>,
    /// For catalogue connections that only list: personal names filled with "".
    pub(crate) listing: Arc<dyn CredentialStore>,
    /// When set (the stdio front door), catalogue connections serve this principal's
    /// calls and resolve its personal credentials.
    pub(crate) catalogue_principal: Option<Arc<str>>,
}

/// The sealed file first, then the environment (shared names only); names a server
/// declares personal only as the caller's own; every value handed out feeds the
/// scrubber. Completes an interrupted key rotation and fails now if the store exists
/// but the key does not open it.
pub(crate) fn stores(
    config: &GatewayConfig,
    config_path: &Path,
    catalogue_principal: Option<&str>,
) -> anyhow::Result<Stores> {
    let sealed = sealed(config, config_path);
    sealed.recover_rotation()?;
    sealed.list()?;
    let chain: Arc<dyn CredentialStore> = Arc::new(FirstOf::new(vec![
        Arc::new(sealed),
        Arc::new(EnvCredentialStore::new()),
    ]));
    let declare = |mut d: Declared<Arc<dyn CredentialStore>>| {
        for (id, server) in &config.servers {
            d = d.personal(id.as_str(), personal_names(server).iter().map(String::as_str));
        }
        d
    };
    let calls = declare(Declared::new(chain.clone()));
    let listing = declare(Declared::new(chain)).blank_personal_for_listing();
    Ok(Stores {
        calls: Arc::new(Scrubbing::new(calls, crate::known_secrets())),
        listing: Arc::new(Scrubbing::new(listing, crate::known_secrets())),
        catalogue_principal: catalogue_principal.map(Into::into),
    })
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
    let personal = personal_names(s).iter().any(|n| n == name);
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
            let loaded = crate::load::load(&config)?;
            let key = key_for(&loaded.config, &server, &name, principal.as_deref())?;
            let value = read_value(value_env.as_deref())?;
            let store = sealed(&loaded.config, &config);
            store.set(&key, &value)?;
            println!("stored {} in {}", key, store.path().display());
        }
        CredentialsCommand::List { config, server } => {
            let loaded = crate::load::load(&config)?;
            let store = sealed(&loaded.config, &config);
            for e in store.list()? {
                if server.as_deref().is_none_or(|s| *e.key.server == *s) {
                    println!(
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
            let loaded = crate::load::load(&config)?;
            let key = key_for(&loaded.config, &server, &name, principal.as_deref())?;
            let store = sealed(&loaded.config, &config);
            if !store.remove(&key)? {
                bail!("no credential stored for {key}");
            }
            println!("removed {key}; the next call that needs it reports it missing");
        }
        CredentialsCommand::RotateKey { config, new_key_env } => {
            let loaded = crate::load::load(&config)?;
            let store = sealed(&loaded.config, &config);
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
            println!("re-sealed {n} credential(s) under the new key");
        }
    }
    Ok(())
}
