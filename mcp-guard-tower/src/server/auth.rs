//! Client authentication (`[auth]`), the HTTP edge's options, the limits before
//! authentication, and the sign-in routes of personal upstream OAuth.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use mcp_guard_core::access::AccessStore;
use mcp_guard_core::config::GatewayConfig;
use mcp_guard_core::redact::KnownSecrets;
use secrecy::SecretString;

use super::credentials::Stores;
use crate::auth::{
    AnyOf, ApiTokens, AuthError, Authenticate, Authenticated, JwksSource, JwtBearer, JwtSettings,
    StaticTokens,
};
use crate::http::HttpOptions;
use crate::http::dangerous::Anonymous;
use crate::preauth::UnauthenticatedLimits;
use crate::upstream_auth::UpstreamAuth;

/// `[[auth.tokens]]`, replaced as a whole by a reload: a request is checked against
/// the tokens configured when it arrives.
#[derive(Clone, Default)]
pub(crate) struct ConfiguredTokens(Arc<RwLock<Arc<StaticTokens>>>);

impl ConfiguredTokens {
    pub(crate) fn set(&self, tokens: StaticTokens) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tokens);
    }
}

#[async_trait::async_trait]
impl Authenticate for ConfiguredTokens {
    async fn authenticate(&self, parts: &http::request::Parts) -> Result<Authenticated, AuthError> {
        let tokens = self.0.read().unwrap_or_else(PoisonError::into_inner).clone();
        tokens.authenticate(parts).await
    }
}

/// `[[auth.tokens]]`, each read from the environment (it joins the known secrets).
pub(crate) fn static_tokens(config: &GatewayConfig, known: &KnownSecrets) -> anyhow::Result<StaticTokens> {
    let mut tokens = StaticTokens::new();
    for (i, t) in config.auth.tokens.iter().enumerate() {
        let secret = env_secret(&format!("auth.tokens[{i}]"), &t.token, known)?;
        #[expect(
            clippy::disallowed_methods,
            reason = "only the length of the configured token is checked"
        )]
        if secrecy::ExposeSecret::expose_secret(&secret).len() < 16 {
            bail!("auth.tokens[{i}]: the token must be at least 16 characters");
        }
        tokens = tokens.with_token(&secret, super::upstreams::principal(&t.principal));
    }
    Ok(tokens)
}

/// Client authentication from `[auth]`: configured tokens (`tokens`, which a reload
/// replaces), gateway-issued tokens from the access store, and JWTs when `[auth.jwt]`
/// is set, tried in that order. In cluster mode gateway tokens come from the shared
/// database, and every request is refused while the replica's state is not fresh.
pub(crate) async fn authenticator(
    config: &GatewayConfig,
    base: &Path,
    store: &AccessStore,
    cluster: Option<&mcp_guard_core::cluster::postgres::PgCluster>,
    tokens: &ConfiguredTokens,
    resource_base: &str,
) -> anyhow::Result<Arc<dyn Authenticate>> {
    let auth = &config.auth;
    if let Some(p) = &auth.dangerously_allow_anonymous {
        tracing::warn!(principal = %p.id, "auth.dangerously_allow_anonymous is set: HTTP clients are NOT authenticated");
        return Ok(super::cluster::gate(
            cluster,
            Arc::new(Anonymous(super::upstreams::principal(p))),
        ));
    }
    let mut chain = AnyOf::new();
    chain = chain.or(Arc::new(tokens.clone()));
    chain = chain.or(Arc::new(match super::cluster::tokens(cluster) {
        Some(shared) => ApiTokens::shared(shared),
        None => ApiTokens::new(store.clone()),
    }));
    if auth.server.is_some() {
        chain = chain.or(Arc::new(crate::auth::GrantTokens::new(store.clone())));
    }
    if let Some(j) = &auth.jwt {
        let mut s = JwtSettings::new(j.issuer.clone(), resource_base);
        s.extra_audiences.clone_from(&j.audiences);
        if !j.algorithms.is_empty() {
            s.algorithms.clone_from(&j.algorithms);
        }
        if let Some(l) = j.leeway_secs {
            s.leeway = Duration::from_secs(l);
        }
        if let Some(c) = &j.principal_claim {
            s.principal_claim.clone_from(c);
        }
        if j.roles_claim.is_some() {
            s.roles_claim.clone_from(&j.roles_claim);
        }
        s.kind_claim.clone_from(&j.kind_claim);
        s.attribute_claims.clone_from(&j.attribute_claims);
        s.required_scopes.clone_from(&j.required_scopes);
        let source = match (&j.jwks_file, &j.jwks_url) {
            (Some(f), _) => JwksSource::File(base.join(f)),
            (None, Some(u)) => JwksSource::Url(u.clone()),
            (None, None) => bail!("auth.jwt: set jwks_file or jwks_url"),
        };
        let jwt = JwtBearer::new(s, source).await.context("auth.jwt")?;
        chain = chain.or(Arc::new(jwt));
    }
    Ok(super::cluster::gate(cluster, Arc::new(chain)))
}

/// A secret configured as `${NAME}` placeholders, read from the environment (errors
/// name `entry` and the missing variable); it joins the scrubber's known secrets.
pub(crate) fn env_secret(entry: &str, template: &str, known: &KnownSecrets) -> anyhow::Result<SecretString> {
    let tpl = mcp_guard_core::upstream::Template::parse(template).map_err(anyhow::Error::msg)?;
    let value = tpl
        .names()
        .map(|n| std::env::var(n).with_context(|| format!("{entry}: environment variable {n} is not set")))
        .collect::<anyhow::Result<Vec<_>>>()?
        .concat();
    let secret = SecretString::from(value);
    known.add(&secret);
    Ok(secret)
}

pub(crate) fn http_options(config: &GatewayConfig) -> HttpOptions {
    let mut o = HttpOptions::default();
    o.allowed_hosts.clone_from(&config.gateway.allowed_hosts);
    o.allowed_origins.clone_from(&config.gateway.allowed_origins);
    o.max_body_bytes = config.gateway.max_body_bytes;
    o.page_size = config.gateway.page_size;
    o.resource_base.clone_from(&config.gateway.public_url);
    if let Some(j) = &config.auth.jwt {
        o.authorization_servers = if j.authorization_servers.is_empty() {
            vec![j.issuer.clone()]
        } else {
            j.authorization_servers.clone()
        };
        o.scopes_supported.clone_from(&j.required_scopes);
    }
    if let (Some(a), Some(issuer)) = (&config.auth.server, &config.gateway.public_url) {
        o.authorization_servers
            .insert(0, issuer.trim_end_matches('/').to_owned());
        o.scopes_supported.extend(a.scopes.iter().cloned());
    }
    o
}

/// `[unauthenticated_limits]` over the defaults.
pub(crate) fn unauthenticated_limits(config: &GatewayConfig) -> UnauthenticatedLimits {
    let c = &config.unauthenticated_limits;
    let mut l = UnauthenticatedLimits::default();
    for (value, limit) in [
        (c.per_minute, &mut l.per_minute),
        (c.burst, &mut l.burst),
        (c.registrations_per_hour, &mut l.registrations_per_hour),
        (c.registration_burst, &mut l.registration_burst),
    ] {
        if let Some(v) = value {
            *limit = v;
        }
    }
    if let Some(s) = c.audit_interval_secs {
        l.audit_interval = Duration::from_secs(s);
    }
    if let Some(n) = c.max_sources {
        l.max_sources = n;
    }
    l
}

/// The sign-in routes for servers principals sign in to with OAuth (none: `None`).
pub(crate) fn upstream_auth(cfg: &GatewayConfig, stores: &Stores) -> anyhow::Result<Option<UpstreamAuth>> {
    let personal: Vec<_> = stores
        .oauth
        .values()
        .filter(|o| o.spec().mode == mcp_guard_core::upstream::oauth::OAuthMode::Personal)
        .cloned()
        .collect();
    if personal.is_empty() {
        return Ok(None);
    }
    let public_url = cfg
        .gateway
        .public_url
        .as_deref()
        .context("personal OAuth servers need gateway.public_url")?;
    Ok(Some(UpstreamAuth::new(personal, public_url)?))
}
