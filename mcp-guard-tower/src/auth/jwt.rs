use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, errors::ErrorKind};
use mcp_guard_core::Principal;
use mcp_guard_core::access::ClientCredential;
use serde_json::Value;

use super::{AuthError, Authenticate, Authenticated, bearer};

/// Where the identity provider's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksSource {
    /// A JWKS file, re-read when a token names a key it does not hold.
    File(PathBuf),
    /// A JWKS URL (`https://`, or `http://` on loopback), fetched at start and again
    /// when a token names an unknown key (at most every 30 s).
    Url(String),
}

/// How JWTs are checked and turned into principals.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JwtSettings {
    /// The required `iss`.
    pub issuer: String,
    /// The gateway's public base URL; a token's `aud` must be the endpoint's resource
    /// URI, `<resource_base>/mcp/<endpoint>` (RFC 8707).
    pub resource_base: String,
    /// Further accepted audiences (exact strings), e.g. a client id your provider
    /// insists on. Empty by default.
    pub extra_audiences: Vec<String>,
    /// Accepted signature algorithms; asymmetric only (`RS256`, `PS256`, `ES256`,
    /// `EdDSA`...). Default `RS256`, `ES256`.
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 30 s.
    pub leeway: Duration,
    /// The claim holding the principal id. Default `sub`.
    pub principal_claim: String,
    /// The claim holding roles (an array, or a space-separated string).
    pub roles_claim: Option<String>,
    /// A claim whose value `agent` marks the caller as an agent (robot identity). A
    /// token with an RFC 8693 `act` claim is always an agent (`act.sub`) acting for
    /// the subject.
    pub kind_claim: Option<String>,
    /// Claims copied into principal attributes (string values only).
    pub attribute_claims: Vec<String>,
    /// Scopes every token must carry (`scope` string or `scp` array); else 403.
    pub required_scopes: Vec<String>,
}

impl JwtSettings {
    /// Settings for `issuer`, with audiences under `resource_base`.
    pub fn new(issuer: impl Into<String>, resource_base: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            resource_base: resource_base.into().trim_end_matches('/').to_owned(),
            extra_audiences: Vec::new(),
            algorithms: vec!["RS256".into(), "ES256".into()],
            leeway: Duration::from_secs(30),
            principal_claim: "sub".into(),
            roles_claim: Some("roles".into()),
            kind_claim: None,
            attribute_claims: Vec::new(),
            required_scopes: Vec::new(),
        }
    }
}

/// Why a [`JwtBearer`] could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSetupError {
    /// An algorithm is unknown or symmetric.
    #[error("algorithm {0:?} is not accepted (use RS256/384/512, PS256/384/512, ES256/384 or EdDSA)")]
    Algorithm(String),
    /// The key set could not be read.
    #[error("cannot load the JWKS from {source_name}")]
    Jwks {
        /// The file or URL.
        source_name: String,
        /// What failed.
        #[source]
        source: mcp_guard_core::BoxError,
    },
    /// The key set holds no usable signing key.
    #[error("the JWKS from {0} holds no usable signing key")]
    NoKeys(String),
}

struct Key {
    kid: Option<String>,
    alg: Option<KeyAlgorithm>,
    family: AlgorithmFamily,
    decoding: DecodingKey,
}

/// Validates JWT bearer tokens against an identity provider's JWKS.
///
/// # Security
/// Keys come only from the configured JWKS: a token's own `jwk`, `jku` or `x5u`
/// headers are ignored. Symmetric (`HS*`) and `none` algorithms are never accepted,
/// and a key is only used with an algorithm of its own family, so an RSA public key
/// cannot be replayed as an HMAC secret.
pub struct JwtBearer {
    settings: JwtSettings,
    algorithms: Vec<Algorithm>,
    source: JwksSource,
    keys: RwLock<Arc<[Arc<Key>]>>,
    last_load: Mutex<Instant>,
    client: reqwest::Client,
}

impl std::fmt::Debug for JwtBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtBearer")
            .field("issuer", &self.settings.issuer)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(30);
const MAX_JWKS_BYTES: usize = 1024 * 1024;

impl JwtBearer {
    /// Loads the key set and checks the settings.
    ///
    /// # Errors
    /// [`JwtSetupError`] for a refused algorithm or an unreadable or empty key set.
    pub async fn new(settings: JwtSettings, source: JwksSource) -> Result<Self, JwtSetupError> {
        let mut algorithms = Vec::new();
        for a in &settings.algorithms {
            let alg: Algorithm = a.parse().map_err(|_| JwtSetupError::Algorithm(a.clone()))?;
            if alg.family() == AlgorithmFamily::Hmac {
                return Err(JwtSetupError::Algorithm(a.clone()));
            }
            algorithms.push(alg);
        }
        mcp_guard_core::upstream::ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JwtSetupError::Jwks {
                source_name: "http client".into(),
                source: Box::new(e),
            })?;
        let keys = load(&source, &client).await?;
        Ok(Self {
            settings,
            algorithms,
            source,
            keys: RwLock::new(keys),
            last_load: Mutex::new(Instant::now()),
            client,
        })
    }

    fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner).clone();
        match kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned(),
            None if keys.len() == 1 => keys.first().cloned(),
            None => None,
        }
    }

    async fn reload(&self) {
        {
            let mut last = self.last_load.lock().unwrap_or_else(PoisonError::into_inner);
            if last.elapsed() < RELOAD_AT_MOST_EVERY {
                return;
            }
            *last = Instant::now();
        }
        match load(&self.source, &self.client).await {
            Ok(keys) => *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys,
            Err(e) => {
                tracing::warn!(error = %mcp_guard_core::upstream::error_chain(&e), "could not reload the JWKS");
            }
        }
    }

    fn audiences(&self, path: &str) -> Vec<String> {
        let mut v = self.settings.extra_audiences.clone();
        if let Some(endpoint) = path.strip_prefix("/mcp/").and_then(|r| r.split('/').next()) {
            v.push(format!("{}/mcp/{endpoint}", self.settings.resource_base));
        }
        v
    }

    fn principal(&self, claims: &Value) -> Result<Principal, AuthError> {
        let id = claims
            .get(&self.settings.principal_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Invalid(format!("no {:?} claim", self.settings.principal_claim)))?;
        let act = claims
            .get("act")
            .and_then(|a| a.get("sub"))
            .and_then(Value::as_str);
        let is_agent = self
            .settings
            .kind_claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .and_then(Value::as_str)
            == Some("agent");
        let mut p = match act {
            Some(actor) => Principal::agent(actor).acting_for(id),
            None if is_agent => Principal::agent(id),
            None => Principal::user(id),
        };
        if let Some(c) = &self.settings.roles_claim {
            p = p.with_roles(strings(claims.get(c)));
        }
        for c in &self.settings.attribute_claims {
            if let Some(v) = claims.get(c).and_then(Value::as_str) {
                p = p.with_attribute(c.clone(), v);
            }
        }
        Ok(p)
    }
}

/// The credential id of a JWT: `jwt:<issuer>#<subject>`, followed by `#act:<actor>`
/// for a delegated token (RFC 8693 `act`). Sessions, per-session processes, legacy
/// session bindings and revocations are keyed on it, so it names the whole delegation
/// chain: an agent acting for alice and the same agent acting for bob hold two
/// credentials. `%` and `#` inside the parts are percent-encoded, so no subject can
/// spell another chain's id.
fn credential_id(issuer: &str, principal: &Principal) -> String {
    fn part(s: &str) -> std::borrow::Cow<'_, str> {
        if s.contains(['%', '#']) {
            s.replace('%', "%25").replace('#', "%23").into()
        } else {
            s.into()
        }
    }
    match principal.on_behalf_of() {
        Some(subject) => format!(
            "jwt:{}#{}#act:{}",
            part(issuer),
            part(subject),
            part(principal.id())
        ),
        None => format!("jwt:{}#{}", part(issuer), part(principal.id())),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn time_claim(claims: &Value, name: &str) -> Option<SystemTime> {
    claims
        .get(name)
        .and_then(Value::as_u64)
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

async fn load(source: &JwksSource, client: &reqwest::Client) -> Result<Arc<[Arc<Key>]>, JwtSetupError> {
    let (name, bytes) = match source {
        JwksSource::File(p) => (
            p.display().to_string(),
            tokio::fs::read(p).await.map_err(|e| JwtSetupError::Jwks {
                source_name: p.display().to_string(),
                source: Box::new(e),
            })?,
        ),
        JwksSource::Url(u) => {
            let fail = |e: mcp_guard_core::BoxError| JwtSetupError::Jwks {
                source_name: u.clone(),
                source: e,
            };
            let resp = client
                .get(u)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| fail(Box::new(e.without_url())))?;
            let body = resp.bytes().await.map_err(|e| fail(Box::new(e.without_url())))?;
            if body.len() > MAX_JWKS_BYTES {
                return Err(fail("larger than 1 MiB".into()));
            }
            (u.clone(), body.to_vec())
        }
    };
    let set: JwkSet = serde_json::from_slice(&bytes).map_err(|e| JwtSetupError::Jwks {
        source_name: name.clone(),
        source: Box::new(e),
    })?;
    let keys: Vec<Arc<Key>> = set
        .keys
        .iter()
        .filter(|k| {
            !matches!(k.algorithm, AlgorithmParameters::OctetKey(_))
                && !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption))
        })
        .filter_map(|k| {
            let key = DecodingKey::from_jwk(k).ok()?;
            Some(Arc::new(Key {
                kid: k.common.key_id.clone(),
                alg: k.common.key_algorithm,
                family: key.family(),
                decoding: key,
            }))
        })
        .collect();
    if keys.is_empty() {
        return Err(JwtSetupError::NoKeys(name));
    }
    Ok(keys.into())
}

fn describe(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet (nbf)".into()),
        ErrorKind::InvalidAudience => AuthError::Invalid("audience is not this endpoint".into()),
        ErrorKind::InvalidIssuer => AuthError::Invalid("unexpected issuer".into()),
        ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
        ErrorKind::MissingRequiredClaim(c) => AuthError::Invalid(format!("no {c:?} claim")),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            AuthError::Invalid("algorithm not accepted".into())
        }
        other => AuthError::Invalid(format!("rejected JWT ({other:?})")),
    }
}

#[async_trait]
impl Authenticate for JwtBearer {
    async fn authenticate(&self, parts: &http::request::Parts) -> Result<Authenticated, AuthError> {
        let token = bearer(parts).ok_or(AuthError::Missing)?;
        if token.split('.').count() != 3 {
            return Err(AuthError::Unrecognised);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed JWT header or unsupported alg".into()))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} not accepted",
                header.alg
            )));
        }
        let key = if let Some(k) = self.find(header.kid.as_deref()) {
            k
        } else {
            self.reload().await;
            self.find(header.kid.as_deref())
                .ok_or_else(|| AuthError::Invalid("unknown signing key".into()))?
        };
        if key.family != header.alg.family() || key.alg.is_some_and(|a| a != KeyAlgorithm::from(header.alg)) {
            return Err(AuthError::Invalid(
                "key does not match the token's algorithm".into(),
            ));
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.settings.issuer]);
        v.set_audience(&self.audiences(parts.uri.path()));
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = self.settings.leeway.as_secs();
        let data = jsonwebtoken::decode::<Value>(token, &key.decoding, &v).map_err(|e| describe(e.kind()))?;
        let claims = data.claims;
        if !self.settings.required_scopes.is_empty() {
            let mut held: BTreeSet<String> = strings(claims.get("scope")).into_iter().collect();
            held.extend(strings(claims.get("scp")));
            if self.settings.required_scopes.iter().any(|s| !held.contains(s)) {
                return Err(AuthError::InsufficientScope {
                    required: self.settings.required_scopes.join(" "),
                });
            }
        }
        let principal = self.principal(&claims)?;
        let credential = ClientCredential::new(credential_id(&self.settings.issuer, &principal))
            .issued_at(time_claim(&claims, "iat"))
            .expires_at(time_claim(&claims, "exp"));
        Ok(Authenticated::new(principal, credential))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../mcp-guard-cli/tests/gateway/fixtures"
    );

    #[test]
    fn credential_ids_name_the_chain_and_cannot_be_spelled_by_a_subject() {
        let direct = Principal::user("alice");
        let delegated = Principal::agent("ci-bot").acting_for("alice");
        // A subject that contains the separator cannot pose as a delegation.
        let forged = Principal::user("alice#act:ci-bot");
        let ids: Vec<String> = [&direct, &delegated, &forged]
            .iter()
            .map(|p| credential_id("https://idp.test", p))
            .collect();
        assert_eq!(
            ids,
            [
                "jwt:https://idp.test#alice",
                "jwt:https://idp.test#alice#act:ci-bot",
                "jwt:https://idp.test#alice%23act:ci-bot"
            ]
        );
        assert_ne!(
            credential_id("i", &Principal::agent("b%23").acting_for("a")),
            credential_id("i", &Principal::agent("b#").acting_for("a"))
        );
    }

    fn parts(token: &str, path: &str) -> http::request::Parts {
        http::Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[tokio::test]
    async fn keys_from_a_jwks_url_and_claims_to_a_principal() {
        let jwks = std::fs::read_to_string(format!("{FIXTURES}/jwks.json")).unwrap();
        let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { jwks }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut settings = JwtSettings::new("https://idp.test", "https://gw.test/");
        settings.attribute_claims = vec!["team".into()];
        let auth = JwtBearer::new(settings, JwksSource::Url(format!("http://{addr}/jwks")))
            .await
            .unwrap();
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(
            &std::fs::read(format!("{FIXTURES}/jwt-test-rsa.pem")).unwrap(),
        )
        .unwrap();
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some("test-key-1".into());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = serde_json::json!({
            "iss": "https://idp.test", "sub": "alice", "aud": "https://gw.test/mcp/eng",
            "iat": now, "exp": now + 60, "roles": "eng ops", "team": "core",
            "act": {"sub": "ci-bot"},
        });
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let ok = auth.authenticate(&parts(&token, "/mcp/eng")).await.unwrap();
        assert_eq!(ok.principal.id(), "ci-bot");
        assert_eq!(ok.principal.kind(), mcp_guard_core::PrincipalKind::Agent);
        assert_eq!(ok.principal.on_behalf_of(), Some("alice"));
        assert_eq!(ok.principal.roles(), ["eng", "ops"]);
        assert_eq!(
            ok.principal.attributes().get("team").map(String::as_str),
            Some("core")
        );
        assert_eq!(&*ok.credential.id, "jwt:https://idp.test#alice#act:ci-bot");
        // The same agent for another user holds another credential.
        let mut for_bob = claims.clone();
        for_bob["sub"] = "bob".into();
        let bob = auth
            .authenticate(&parts(
                &jsonwebtoken::encode(&header, &for_bob, &key).unwrap(),
                "/mcp/eng",
            ))
            .await
            .unwrap();
        assert_eq!(&*bob.credential.id, "jwt:https://idp.test#bob#act:ci-bot");
        // The audience is per endpoint.
        let err = auth.authenticate(&parts(&token, "/mcp/ops")).await.unwrap_err();
        assert!(matches!(err, AuthError::Invalid(_)), "{err:?}");
        // Symmetric algorithms cannot even be configured.
        let mut bad = JwtSettings::new("i", "r");
        bad.algorithms = vec!["HS256".into()];
        assert!(matches!(
            JwtBearer::new(bad, JwksSource::Url(format!("http://{addr}/jwks"))).await,
            Err(JwtSetupError::Algorithm(_))
        ));
    }
}
