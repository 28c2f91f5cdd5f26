//! The credential stores `${NAME}` placeholders resolve from: the sealed file, then the
//! environment, personal names only as the caller's own, every value handed out
//! scrubbed; and the servers the gateway signs in to with OAuth.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use mcp_guard_core::config::{GatewayConfig, OAuthConfig, OAuthModeConfig, ServerConfig};
use mcp_guard_core::credential::{Declared, FirstOf, KeySource, Scrubbing, SealedFileStore};
use mcp_guard_core::redact::KnownSecrets;
use mcp_guard_core::upstream::Template;
use mcp_guard_core::upstream::oauth::{OAuthMode, OAuthServer, OAuthSpec};
use mcp_guard_core::{CredentialStore, EnvCredentialStore};

/// The sealed credential store `[credentials]` names; relative paths from `base`.
pub fn sealed_store(config: &GatewayConfig, base: &Path) -> SealedFileStore {
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
    /// Every credential handed out joins this registry (scrubbed from responses, audit
    /// records and logs).
    pub(crate) known: Arc<KnownSecrets>,
    /// For connections that serve calls: personal names only as the caller's own.
    pub(crate) calls: Arc<dyn CredentialStore>,
    /// For catalogue connections that only list: personal names filled with "".
    pub(crate) listing: Arc<dyn CredentialStore>,
    /// When set (the stdio front door), catalogue connections serve this principal's
    /// calls and resolve its personal credentials.
    pub(crate) catalogue_principal: Option<Arc<str>>,
    /// What `${MCP_GUARD_SESSION}` names in processes that serve no HTTP gateway
    /// session: the stdio front door's session id; `catalogue` when unset.
    pub(crate) catalogue_session: Option<Arc<str>>,
    /// Servers the gateway signs in to with OAuth (tokens in the sealed store).
    pub(crate) oauth: BTreeMap<String, Arc<OAuthServer>>,
}

/// The OAuth settings of `servers.ID.oauth`, as core takes them.
fn oauth_spec(o: &OAuthConfig) -> anyhow::Result<OAuthSpec> {
    let mut spec = OAuthSpec::new(match o.mode {
        OAuthModeConfig::Shared => OAuthMode::Shared,
        _ => OAuthMode::Personal,
    });
    let t = |v: &Option<String>| -> anyhow::Result<Option<Template>> {
        v.as_deref()
            .map(|v| Template::parse(v).map_err(anyhow::Error::msg))
            .transpose()
    };
    spec.client_id = t(&o.client_id)?;
    spec.client_secret = t(&o.client_secret)?;
    spec.scopes.clone_from(&o.scopes);
    spec.client_metadata_url.clone_from(&o.client_metadata_url);
    if let Some(n) = &o.client_name {
        spec.client_name.clone_from(n);
    }
    spec.issuer.clone_from(&o.issuer);
    spec.trusted_origins.clone_from(&o.trusted_origins);
    spec.dangerously_allow_private_addresses = o.dangerously_allow_private_addresses;
    Ok(spec)
}

/// The sealed file first, then the environment (shared names only); names a server
/// declares personal only as the caller's own; every value handed out feeds the
/// scrubber. Completes an interrupted key rotation and fails now if the store exists
/// but the key does not open it.
pub(crate) fn stores(
    config: &GatewayConfig,
    base: &Path,
    catalogue_principal: Option<&str>,
    known: &Arc<KnownSecrets>,
) -> anyhow::Result<Stores> {
    let sealed = Arc::new(sealed_store(config, base));
    sealed.recover_rotation()?;
    sealed.list()?;
    let chain: Arc<dyn CredentialStore> = Arc::new(FirstOf::new(vec![
        sealed.clone(),
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
    let calls: Arc<dyn CredentialStore> = Arc::new(Scrubbing::new(calls, known.clone()));
    let mut oauth = BTreeMap::new();
    for (id, server) in &config.servers {
        if let ServerConfig::Http(h) = server
            && let Some(o) = &h.oauth
        {
            let spec = oauth_spec(o).with_context(|| format!("servers.{id}.oauth"))?;
            if spec.dangerously_allow_private_addresses {
                tracing::warn!(
                    "servers.{id}.oauth.dangerously_allow_private_addresses is set: the server's metadata may point the gateway at private addresses"
                );
            }
            let s = OAuthServer::new(id.as_str(), h.url.clone(), spec, sealed.clone(), calls.clone())
                .known_secrets(known.clone());
            oauth.insert(id.clone(), Arc::new(s));
        }
    }
    Ok(Stores {
        known: known.clone(),
        calls,
        listing: Arc::new(Scrubbing::new(listing, known.clone())),
        catalogue_principal: catalogue_principal.map(Into::into),
        catalogue_session: None,
        oauth,
    })
}
