//! `[auth]`: client authentication (API tokens, JWTs, the built-in authorization
//! server).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;
use crate::call::PrincipalKind;
use crate::upstream::Template;

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

impl AuthSection {
    /// Checks tokens, `[auth.jwt]` and `[auth.server]` (whose issuer is
    /// `gateway.public_url`).
    pub(super) fn validate(&self, public_url: Option<&str>, errors: &mut Vec<ConfigError>) {
        for (i, t) in self.tokens.iter().enumerate() {
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
        if let Some(j) = &self.jwt {
            j.validate(errors);
        }
        if let Some(a) = &self.server {
            a.validate(public_url, errors);
        }
    }
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
