//! The built-in OAuth authorization server as the gateway runs it: its settings from
//! `[auth.server]`, the catalogue its consent page shows, and the personal credentials
//! a user completes before the client gets its code.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use mcp_guard_core::access::{AccessStore, Sessions, parse_duration};
use mcp_guard_core::config::{GatewayConfig, ServerConfig};
use mcp_guard_core::credential::{CredentialKey, CredentialStore, SealedFileStore};
use mcp_guard_core::policy::GrantPolicy;
use mcp_guard_core::redact::KnownSecrets;
use mcp_guard_core::upstream::oauth::PersonalState as OAuthState;
use mcp_guard_core::{Action, CallContext, Operation, Principal};
use secrecy::SecretString;

use super::credentials::Stores;
use crate::authorize::{
    AuthServerSettings, AuthorizationServer, EndpointCatalog, OidcSettings, PersonalCredentials,
    PersonalServer, PersonalState,
};
use crate::federation::Gateway;
use crate::upstream_auth::UpstreamAuth;

/// Where the gateway runs: its configuration, the directory its relative paths start
/// from and the path its MCP endpoints are mounted under.
pub(crate) struct Site<'a> {
    pub(crate) cfg: &'a GatewayConfig,
    pub(crate) base: &'a Path,
    pub(crate) resource_prefix: &'a str,
}

/// The built-in authorization server of the site's configuration, when `[auth.server]`
/// is set.
pub(crate) fn authorization_server(
    site: &Site<'_>,
    store: &AccessStore,
    sessions: &Sessions,
    gateway: &Gateway,
    stores: &Stores,
    upstream: Option<&UpstreamAuth>,
) -> anyhow::Result<Option<AuthorizationServer>> {
    let Site {
        cfg,
        base,
        resource_prefix,
    } = *site;
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
    resource_prefix.clone_into(&mut settings.resource_prefix);
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
        policy: super::stack::policy(cfg)?,
        descriptions: cfg
            .endpoints
            .iter()
            .map(|(k, e)| (k.clone(), e.description.clone()))
            .collect(),
    });
    let personal = Arc::new(Personal {
        servers: personal_servers(cfg),
        stores: stores.clone(),
        sealed: super::credentials::sealed_store(cfg, base),
        oauth: upstream.cloned(),
    });
    let mut server = AuthorizationServer::new(
        settings,
        store.clone(),
        a.users.iter().map(super::upstreams::principal),
        catalog,
    )
    .personal_credentials(personal)
    .sessions(sessions.clone());
    if let Some(o) = &a.oidc {
        server = server.oidc(oidc_settings(o, &stores.known)?);
    }
    Ok(Some(server))
}

fn oidc_settings(
    o: &mcp_guard_core::config::OidcConfig,
    known: &KnownSecrets,
) -> anyhow::Result<OidcSettings> {
    let mut s = OidcSettings::new(o.issuer.clone(), o.client_id.clone());
    if let Some(secret) = &o.client_secret {
        let value = super::auth::env_secret("auth.server.oidc.client_secret", secret, known)?;
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
    stores: Stores,
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
        self.stores.known.add(&value);
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
