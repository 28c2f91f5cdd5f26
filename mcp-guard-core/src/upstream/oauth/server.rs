//! The gateway as the client of one server's authorization server: discovery,
//! sign-in, client credentials, and the bindings of secrets and tokens to an issuer.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use rmcp::transport::auth::{
    AuthorizationManager, AuthorizationMetadata, AuthorizationRequest, AuthorizationSession,
    ClientCredentialsConfig, OAuthClientConfig,
};
use secrecy::{ExposeSecret, SecretString};

use crate::credential::{CredentialError, CredentialKey, CredentialMode, CredentialStore, CredentialWriter};
use crate::fetch::{FetchPolicy, GuardedClient, SystemResolver};
use crate::redact::KnownSecrets;
use crate::upstream::UpstreamError;
use crate::upstream::connect::http_client;
use crate::upstream::placeholder::{Template, resolve_template};

use super::store::{AUTHORITY_FIELD, RegisteredClient, TokenStore, mark_reauth};
use super::{
    AuthLinks, ISSUER_BINDING, NEEDS_REAUTHENTICATION, OAuthError, OAuthMode, OAuthServer, OAuthSpec,
    PersonalState, REGISTERED_CLIENT, SignInHook, TOKENS, authority, now_secs, step,
};

/// Where a sign-in gets its client id.
enum ClientChoice {
    Registered(String, Option<String>),
    MetadataDocument(String),
}

impl OAuthServer {
    /// Server `server` at `url`, with tokens in `store` and the client id and secret
    /// placeholders resolved from `secrets`.
    pub fn new(
        server: impl Into<Arc<str>>,
        url: impl Into<String>,
        spec: OAuthSpec,
        store: Arc<dyn CredentialWriter>,
        secrets: Arc<dyn CredentialStore>,
    ) -> Self {
        Self {
            server: server.into(),
            url: url.into(),
            spec,
            store,
            secrets,
            known: None,
            redirect_uri: RwLock::new(None),
            links: RwLock::new(None),
            guards: Mutex::default(),
            hooks: Mutex::default(),
            lookup: None,
            http: std::sync::OnceLock::new(),
        }
    }

    /// Resolves the hosts of URLs the server and its authorization server name with
    /// `lookup` instead of the system resolver (tests point names at addresses the
    /// guard must refuse). Every address it returns is still checked.
    #[must_use]
    pub fn resolver(mut self, lookup: Arc<dyn reqwest::dns::Resolve>) -> Self {
        self.lookup = Some(lookup);
        self.http = std::sync::OnceLock::new();
        self
    }

    /// The client for every OAuth request: the server's own origin and the configured
    /// trusted origins are fetched as they are; every other URL (named by the server's
    /// challenge, its metadata, the authorization server's metadata, a redirect) only
    /// on public addresses, unless the dangerous opt-out is set.
    fn guarded(&self) -> Result<GuardedClient, String> {
        self.http
            .get_or_init(|| {
                let url = reqwest::Url::parse(&self.url).map_err(|e| format!("the server URL: {e}"))?;
                let mut policy = FetchPolicy::new()
                    .trust_origin(&url)
                    .dangerously_allow_private(self.spec.dangerously_allow_private_addresses);
                for o in &self.spec.trusted_origins {
                    let o = reqwest::Url::parse(o).map_err(|e| format!("trusted origin {o:?}: {e}"))?;
                    policy = policy.trust_origin(&o);
                }
                let lookup = self.lookup.clone().unwrap_or_else(|| Arc::new(SystemResolver));
                GuardedClient::with_resolver(policy, Duration::from_secs(30), lookup)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    /// Runs `hook` (with the principal) after each completed sign-in: e.g. to reconnect a
    /// listing connection that was waiting for a first signed-in principal.
    pub fn on_sign_in(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(hook));
    }

    /// Tokens read or obtained join `known`, so the redactor scrubs them everywhere.
    #[must_use]
    pub fn known_secrets(mut self, known: Arc<KnownSecrets>) -> Self {
        self.known = Some(known);
        self
    }

    /// The server id.
    pub fn id(&self) -> &str {
        &self.server
    }

    /// The server's MCP URL (the OAuth `resource`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How the gateway is configured as a client.
    pub fn spec(&self) -> &OAuthSpec {
        &self.spec
    }

    /// Sets the redirect URI sign-ins use (the gateway's callback for this server).
    pub fn set_redirect_uri(&self, uri: impl Into<String>) {
        *self.redirect_uri.write().unwrap_or_else(PoisonError::into_inner) = Some(uri.into());
    }

    /// The redirect URI, once set.
    pub fn redirect_uri(&self) -> Option<String> {
        self.redirect_uri
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets what builds sign-in links for errors.
    pub fn set_links(&self, links: Arc<dyn AuthLinks>) {
        *self.links.write().unwrap_or_else(PoisonError::into_inner) = Some(links);
    }

    /// A link that starts `principal`'s sign-in, if the gateway serves sign-ins.
    pub fn authorize_url(&self, principal: &str) -> Option<String> {
        let links = self.links.read().unwrap_or_else(PoisonError::into_inner).clone();
        links.and_then(|l| l.start_url(principal, &self.server))
    }

    fn key(&self, principal: Option<&str>, name: &str) -> CredentialKey {
        match principal {
            Some(p) => CredentialKey::personal(self.server.clone(), p, name),
            None => CredentialKey::shared(self.server.clone(), name),
        }
    }

    fn token_store(&self, principal: Option<&str>, authority: Option<String>) -> TokenStore {
        let guard = self
            .guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(principal.map(Arc::from))
            .or_default()
            .clone();
        TokenStore {
            store: self.store.clone(),
            tokens: self.key(principal, TOKENS),
            reauth: self.key(principal, NEEDS_REAUTHENTICATION),
            known: self.known.clone(),
            guard,
            authority,
        }
    }

    /// What `principal` (`None`: the shared entry) has for this server.
    ///
    /// # Errors
    /// The credential store failed.
    pub async fn state(&self, principal: Option<&str>) -> Result<PersonalState, CredentialError> {
        if let Some(m) = self
            .store
            .get(&self.key(principal, NEEDS_REAUTHENTICATION))
            .await?
        {
            #[expect(clippy::disallowed_methods, reason = "the marker holds no secret")]
            let v: serde_json::Value = serde_json::from_str(m.secret.expose_secret()).unwrap_or_default();
            return Ok(PersonalState::NeedsReauthentication {
                since: UNIX_EPOCH + Duration::from_secs(v["since"].as_u64().unwrap_or(0)),
                reason: v["reason"].as_str().unwrap_or("sign in again").to_owned(),
            });
        }
        let Some(c) = self.store.get(&self.key(principal, TOKENS)).await? else {
            return Ok(PersonalState::Missing);
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "reading the expiry of the stored token set"
        )]
        let v: serde_json::Value = serde_json::from_str(c.secret.expose_secret()).unwrap_or_default();
        if v["token_response"].is_null() {
            return Ok(PersonalState::Missing);
        }
        let expires_at = match (
            v["token_received_at"].as_u64(),
            v["token_response"]["expires_in"].as_u64(),
        ) {
            (Some(at), Some(secs)) => Some(UNIX_EPOCH + Duration::from_secs(at.saturating_add(secs))),
            _ => None,
        };
        Ok(PersonalState::Connected { expires_at })
    }

    /// Principals with working tokens for this server, in the store's order.
    ///
    /// # Errors
    /// The credential store failed.
    pub async fn principals(&self) -> Result<Vec<Arc<str>>, CredentialError> {
        let mut out = Vec::new();
        for k in self.store.keys(&self.server).await? {
            if k.mode == CredentialMode::Personal
                && *k.name == *TOKENS
                && let Some(p) = k.principal
                && matches!(self.state(Some(&p)).await?, PersonalState::Connected { .. })
            {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Records that `principal`'s grant stopped working (persisted until they sign in).
    ///
    /// # Errors
    /// The credential store failed.
    pub async fn mark_needs_reauthentication(
        &self,
        principal: Option<&str>,
        reason: &str,
    ) -> Result<(), CredentialError> {
        let key = self.key(principal, NEEDS_REAUTHENTICATION);
        if self.store.get(&key).await?.is_some() {
            return Ok(());
        }
        mark_reauth(&*self.store, &key, reason).await
    }

    /// The error a call of `principal` gets when their state is not connected.
    pub fn required_error(&self, principal: &str, state: PersonalState) -> Option<UpstreamError> {
        match state {
            PersonalState::Connected { .. } => None,
            PersonalState::Missing => Some(UpstreamError::MissingPersonalCredentials {
                server: self.server.to_string(),
                principal: principal.to_owned(),
                personal: Vec::new(),
                shared: Vec::new(),
                authorize_url: self.authorize_url(principal),
            }),
            PersonalState::NeedsReauthentication { reason, .. } => {
                Some(UpstreamError::NeedsReauthentication {
                    server: self.server.to_string(),
                    principal: principal.to_owned(),
                    reason,
                    authorize_url: self.authorize_url(principal),
                })
            }
        }
    }

    /// The `WWW-Authenticate` challenge of an unauthenticated request, if the server
    /// answers one with 401.
    async fn challenge(&self) -> Option<String> {
        let client = http_client(false).ok()?;
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": rmcp::model::ProtocolVersion::LATEST_WITH_INITIALIZE.as_str(),
                "capabilities": {},
                "clientInfo": {"name": "mcp-guard", "version": env!("CARGO_PKG_VERSION")},
            },
        });
        let resp = client
            .post(&self.url)
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .ok()?;
        if resp.status() != http::StatusCode::UNAUTHORIZED {
            return None;
        }
        resp.headers()
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// A manager for `principal`'s tokens with the authorization server discovered
    /// through the fetch guard; its token and registration endpoints checked too, and
    /// the issuer against a pinned one.
    async fn discovered(
        &self,
        principal: Option<&str>,
        challenge: Option<&str>,
    ) -> Result<(AuthorizationManager, AuthorizationMetadata), OAuthError> {
        let http = self.guarded().map_err(OAuthError::Config)?;
        let mut m =
            AuthorizationManager::new_with_oauth_http_client(self.url.as_str(), Arc::new(http.clone()))
                .await
                .map_err(step("setting up the OAuth client"))?;
        let probed = if challenge.is_none() {
            self.challenge().await
        } else {
            None
        };
        let challenge = challenge.or(probed.as_deref());
        let res = m
            .resolve_metadata_from_challenge(challenge)
            .await
            .map_err(step("discovering the authorization server"))?;
        let metadata = res.metadata;
        for (what, endpoint) in [
            ("the token endpoint", Some(&metadata.token_endpoint)),
            (
                "the registration endpoint",
                metadata.registration_endpoint.as_ref(),
            ),
        ] {
            let Some(endpoint) = endpoint else { continue };
            let url = reqwest::Url::parse(endpoint)
                .map_err(|e| OAuthError::Config(format!("{what} {endpoint:?} is not a URL: {e}")))?;
            http.check(&url).await.map_err(|source| OAuthError::Refused {
                step: if what == "the token endpoint" {
                    "checking the token endpoint"
                } else {
                    "checking the registration endpoint"
                },
                source,
            })?;
        }
        if let Some(pinned) = &self.spec.issuer
            && metadata.issuer.as_deref() != Some(pinned.as_str())
        {
            return Err(OAuthError::NotThePinnedIssuer {
                server: self.server.to_string(),
                pinned: pinned.clone(),
                now: authority(&metadata),
            });
        }
        m.set_credential_store(self.token_store(principal, Some(authority(&metadata))));
        m.set_metadata(metadata.clone());
        Ok((m, metadata))
    }

    /// Refuses to send the configured client secret to an authorization server other
    /// than the one it is bound to: the pinned issuer, or the one recorded at its first
    /// use (recorded now if there is none).
    async fn check_secret_binding(&self, metadata: &AuthorizationMetadata) -> Result<(), OAuthError> {
        let now = authority(metadata);
        if self.spec.issuer.is_some() {
            // `discovered` already refused any other issuer.
            return Ok(());
        }
        let key = self.key(None, ISSUER_BINDING);
        if let Some(c) = self.store.get(&key).await? {
            #[expect(clippy::disallowed_methods, reason = "the binding holds no secret")]
            let v: serde_json::Value = serde_json::from_str(c.secret.expose_secret()).unwrap_or_default();
            let bound = v["issuer"].as_str().unwrap_or_default();
            if bound == now {
                return Ok(());
            }
            let e = OAuthError::SecretBoundToAnotherIssuer {
                server: self.server.to_string(),
                bound: bound.to_owned(),
                now,
            };
            tracing::warn!(server = %self.server, "{e}");
            return Err(e);
        }
        let value = serde_json::json!({ "issuer": now, "since": now_secs() }).to_string();
        self.store.put(&key, &SecretString::from(value)).await?;
        tracing::info!(server = %self.server, issuer = %now, "the client secret is bound to this authorization server");
        Ok(())
    }

    /// Refuses stored tokens that came from another authorization server than
    /// `metadata`'s, marking `principal` as needing to sign in again (with the reason).
    async fn check_token_binding(
        &self,
        principal: Option<&str>,
        metadata: &AuthorizationMetadata,
    ) -> Result<(), OAuthError> {
        let Some(c) = self.store.get(&self.key(principal, TOKENS)).await? else {
            return Ok(());
        };
        #[expect(clippy::disallowed_methods, reason = "reading where the token set came from")]
        let v: serde_json::Value = serde_json::from_str(c.secret.expose_secret()).unwrap_or_default();
        if v["token_response"].is_null() {
            return Ok(());
        }
        // Token sets saved before the gateway recorded the authority carry rmcp's issuer.
        let bound = v[AUTHORITY_FIELD]
            .as_str()
            .or_else(|| v["issuer"].as_str())
            .unwrap_or("an unrecorded authorization server");
        let now = authority(metadata);
        if bound == now {
            return Ok(());
        }
        let e = OAuthError::TokensFromAnotherIssuer {
            bound: bound.to_owned(),
            now,
        };
        tracing::warn!(server = %self.server, principal, "stored tokens not used: {e}");
        self.mark_needs_reauthentication(principal, &e.to_string())
            .await?;
        Err(e)
    }

    async fn resolve(&self, t: Option<&Template>) -> Result<Option<SecretString>, OAuthError> {
        let Some(t) = t else { return Ok(None) };
        Ok(Some(
            resolve_template(t, &self.server, None, &*self.secrets).await?,
        ))
    }

    /// Discovers the authorization server for a sign-in of `principal` (what the consent
    /// page shows comes from here).
    ///
    /// # Errors
    /// Discovery failed.
    pub async fn discover(&self, principal: &str) -> Result<Discovery, OAuthError> {
        self.discover_with_challenge(principal, None).await
    }

    /// Like [`Self::discover`], seeded with a `WWW-Authenticate` challenge already seen.
    ///
    /// # Errors
    /// Discovery failed.
    pub async fn discover_with_challenge(
        &self,
        principal: &str,
        challenge: Option<&str>,
    ) -> Result<Discovery, OAuthError> {
        let (manager, metadata) = self.discovered(Some(principal), challenge).await?;
        let scopes = if self.spec.scopes.is_empty() {
            manager.select_scopes(None, &[])
        } else {
            self.spec.scopes.clone()
        };
        Ok(Discovery {
            manager,
            metadata,
            principal: principal.into(),
            scopes,
        })
    }

    async fn client_choice(
        &self,
        manager: &mut AuthorizationManager,
        metadata: &AuthorizationMetadata,
        redirect_uri: &str,
        scopes: &[String],
    ) -> Result<ClientChoice, OAuthError> {
        if let Some(id) = self.resolve(self.spec.client_id.as_ref()).await? {
            let secret = self.resolve(self.spec.client_secret.as_ref()).await?;
            if secret.is_some() {
                self.check_secret_binding(metadata).await?;
            }
            #[expect(
                clippy::disallowed_methods,
                reason = "rmcp takes the client id and secret as strings"
            )]
            return Ok(ClientChoice::Registered(
                id.expose_secret().to_owned(),
                secret.map(|s| s.expose_secret().to_owned()),
            ));
        }
        let cimd = metadata
            .additional_fields
            .get("client_id_metadata_document_supported")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        if let Some(url) = &self.spec.client_metadata_url
            && cimd
        {
            return Ok(ClientChoice::MetadataDocument(url.clone()));
        }
        let cache = self.key(None, REGISTERED_CLIENT);
        if let Some(c) = self.store.get(&cache).await? {
            #[expect(clippy::disallowed_methods, reason = "reading the registered client")]
            let parsed: Option<RegisteredClient> = serde_json::from_str(c.secret.expose_secret()).ok();
            if let Some(r) = parsed
                && r.redirect_uri == redirect_uri
                && r.issuer == metadata.issuer
            {
                return Ok(ClientChoice::Registered(r.client_id, r.client_secret));
            }
        }
        let refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let reg = manager
            .register_client(&self.spec.client_name, redirect_uri, &refs)
            .await
            .map_err(step("registering the gateway with the authorization server"))?;
        let record = RegisteredClient {
            client_id: reg.client_id.clone(),
            client_secret: reg.client_secret.clone(),
            redirect_uri: redirect_uri.to_owned(),
            issuer: metadata.issuer.clone(),
        };
        let text = serde_json::to_string(&record).map_err(|e| OAuthError::Config(e.to_string()))?;
        self.store.put(&cache, &SecretString::from(text)).await?;
        Ok(ClientChoice::Registered(reg.client_id, reg.client_secret))
    }

    /// Starts a sign-in: picks the client (pre-registered, metadata document, or
    /// registered now), creates the PKCE verifier and the `state`, and builds the
    /// authorization URL (with `resource`). Call only after the user approved.
    ///
    /// # Errors
    /// No redirect URI set, registration or URL construction failed.
    pub async fn begin(&self, discovery: Discovery) -> Result<PendingAuthorization, OAuthError> {
        let redirect_uri = self.redirect_uri().ok_or_else(|| {
            OAuthError::Config("sign-ins need gateway.public_url (the redirect URI is built from it)".into())
        })?;
        self.begin_with_redirect(discovery, &redirect_uri).await
    }

    /// Like [`Self::begin`] with an explicit redirect URI (a headless client's).
    ///
    /// # Errors
    /// As [`Self::begin`].
    pub async fn begin_with_redirect(
        &self,
        discovery: Discovery,
        redirect_uri: &str,
    ) -> Result<PendingAuthorization, OAuthError> {
        let Discovery {
            mut manager,
            metadata,
            principal,
            scopes,
        } = discovery;
        let mut request =
            AuthorizationRequest::new(redirect_uri).with_client_name(self.spec.client_name.clone());
        if !self.spec.scopes.is_empty() {
            request = request.with_scopes(scopes);
        }
        match self
            .client_choice(&mut manager, &metadata, redirect_uri, &self.spec.scopes)
            .await?
        {
            ClientChoice::Registered(id, secret) => {
                request = request.with_preregistered_client(id);
                if let Some(s) = secret {
                    request = request.with_client_secret(s);
                }
            }
            ClientChoice::MetadataDocument(url) => request = request.with_client_metadata_url(url),
        }
        let session = AuthorizationSession::new(manager, request)
            .await
            .map_err(|(_, e)| step("starting the authorization")(e))?;
        let url = session.get_authorization_url().to_owned();
        let state = reqwest::Url::parse(&url)
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "state")
                    .map(|(_, v)| v.into_owned())
            })
            .ok_or_else(|| OAuthError::Config("the authorization URL carries no state".into()))?;
        Ok(PendingAuthorization {
            session,
            state,
            server: self.server.clone(),
            principal,
            hooks: self.hooks.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        })
    }

    pub(super) async fn client_credentials_config(&self) -> Result<ClientCredentialsConfig, OAuthError> {
        let (Some(id), Some(secret)) = (
            self.resolve(self.spec.client_id.as_ref()).await?,
            self.resolve(self.spec.client_secret.as_ref()).await?,
        ) else {
            return Err(OAuthError::Config(format!(
                "server {}: shared OAuth (client credentials) needs client_id and client_secret",
                self.server
            )));
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "rmcp takes the client id and secret as strings"
        )]
        Ok(ClientCredentialsConfig::ClientSecret {
            client_id: id.expose_secret().to_owned(),
            client_secret: secret.expose_secret().to_owned(),
            scopes: self.spec.scopes.clone(),
            resource: Some(self.url.clone()),
        })
    }

    /// Obtains a shared token with the client-credentials grant and stores it.
    ///
    /// # Errors
    /// No client id or secret, discovery or the token request failed.
    pub async fn client_credentials(&self) -> Result<(), OAuthError> {
        let cc = self.client_credentials_config().await?;
        let (mut m, metadata) = self.discovered(None, None).await?;
        self.check_secret_binding(&metadata).await?;
        m.validate_client_credentials_metadata(&cc).map_err(step(
            "checking the authorization server supports client credentials",
        ))?;
        m.configure_client_credentials(&cc)
            .map_err(step("configuring client credentials"))?;
        m.exchange_client_credentials(&cc)
            .await
            .map_err(step("requesting a token with client credentials"))?;
        Ok(())
    }

    /// A manager ready for a connection of `principal` (`None`: shared): metadata
    /// discovered, the client that obtained the stored tokens configured (so refresh
    /// works).
    pub(super) async fn connection_manager(
        &self,
        principal: Option<&str>,
    ) -> Result<AuthorizationManager, OAuthError> {
        let (mut m, metadata) = self.discovered(principal, None).await?;
        if self.spec.mode == OAuthMode::Shared {
            self.check_secret_binding(&metadata).await?;
            self.check_token_binding(principal, &metadata).await?;
            let cc = self.client_credentials_config().await?;
            m.configure_client_credentials(&cc)
                .map_err(step("configuring client credentials"))?;
            return Ok(m);
        }
        let store = self.token_store(principal, None);
        let stored = rmcp::transport::auth::CredentialStore::load(&store)
            .await
            .map_err(step("reading the stored tokens"))?;
        let Some(stored) = stored else { return Ok(m) };
        self.check_token_binding(principal, &metadata).await?;
        let redirect = self.redirect_uri().unwrap_or_else(|| self.url.clone());
        let secret = self.refresh_secret(&stored.client_id, &metadata).await?;
        let mut config = OAuthClientConfig::new(stored.client_id.clone(), redirect);
        if let Some(s) = secret {
            config = config.with_client_secret(s);
        }
        m.configure_client(config)
            .map_err(step("configuring the OAuth client"))?;
        Ok(m)
    }

    /// The secret of the client that obtained stored tokens, if the gateway knows it.
    async fn refresh_secret(
        &self,
        client_id: &str,
        metadata: &AuthorizationMetadata,
    ) -> Result<Option<String>, OAuthError> {
        if let Some(id) = self.resolve(self.spec.client_id.as_ref()).await? {
            #[expect(clippy::disallowed_methods, reason = "comparing client ids")]
            if id.expose_secret() == client_id {
                let secret = self.resolve(self.spec.client_secret.as_ref()).await?;
                if secret.is_some() {
                    self.check_secret_binding(metadata).await?;
                }
                #[expect(
                    clippy::disallowed_methods,
                    reason = "rmcp takes the client secret as a string"
                )]
                return Ok(secret.map(|s| s.expose_secret().to_owned()));
            }
        }
        if let Some(c) = self.store.get(&self.key(None, REGISTERED_CLIENT)).await? {
            #[expect(clippy::disallowed_methods, reason = "reading the registered client")]
            let parsed: Option<RegisteredClient> = serde_json::from_str(c.secret.expose_secret()).ok();
            if let Some(r) = parsed
                && r.client_id == client_id
                && r.issuer == metadata.issuer
            {
                return Ok(r.client_secret);
            }
        }
        Ok(None)
    }
}

/// The authorization server found for a sign-in, before the user approved it.
pub struct Discovery {
    manager: AuthorizationManager,
    metadata: AuthorizationMetadata,
    principal: Arc<str>,
    scopes: Vec<String>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.metadata.issuer)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// The authorization server's issuer, if it published one.
    pub fn issuer(&self) -> Option<&str> {
        self.metadata.issuer.as_deref()
    }

    /// Where the user will be sent.
    pub fn authorization_endpoint(&self) -> &str {
        &self.metadata.authorization_endpoint
    }

    /// The scopes that will be requested (empty: the server decides).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
}

/// A sign-in sent to the authorization server, waiting for its callback.
pub struct PendingAuthorization {
    session: AuthorizationSession,
    state: String,
    server: Arc<str>,
    principal: Arc<str>,
    hooks: Vec<SignInHook>,
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("server", &self.server)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl PendingAuthorization {
    /// Where to send the user (carries PKCE S256, `state` and `resource`).
    pub fn authorization_url(&self) -> &str {
        self.session.get_authorization_url()
    }

    /// The `state` the callback must carry.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// Whose sign-in.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Exchanges the authorization `code` (checking the RFC 9207 `iss` when given or
    /// required) and stores the tokens as the principal's, replacing earlier ones and
    /// clearing "needs re-authentication".
    ///
    /// # Errors
    /// The exchange failed.
    pub async fn complete(self, code: &str, iss: Option<&str>) -> Result<(), OAuthError> {
        self.session
            .handle_callback_with_issuer(code, &self.state, iss)
            .await
            .map_err(step("exchanging the authorization code"))?;
        for hook in &self.hooks {
            hook(&self.principal);
        }
        Ok(())
    }
}
