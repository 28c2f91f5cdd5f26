//! The built-in authorization server's records, in the access store: registered
//! clients, consents, grants, access and refresh tokens, and one-time sign-in links.
//!
//! A **grant** is what a user approves on the consent page: one client, one endpoint,
//! for a chosen duration. Its credential id is `grant:<id>`, so the gateway session it
//! opens is revoked by `mcp-guard sessions revoke`, and a revoked session ends the
//! grant (its refresh token stops working too). Access tokens (`mcpo_…`) live at most
//! as long as the grant; refresh tokens (`mcpr_…`) are single-use and rotate, and a
//! reused refresh token revokes the whole grant (it was stolen, or the client is
//! confused). Only SHA-256 digests of token secrets are stored.

use std::time::{Duration, SystemTime};

use rusqlite::{OptionalExtension, params};
use secrecy::SecretString;
use serde::Serialize;

use super::store::{from_ms, ms};
use super::{AccessStore, ClientCredential, StoreError, tokens};
use crate::call::Principal;

/// Prefix of access tokens issued by the built-in authorization server.
pub const ACCESS_PREFIX: &str = "mcpo_";
/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "mcpr_";
/// Prefix of one-time sign-in links.
pub const LINK_PREFIX: &str = "mcpl_";

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS oauth_clients (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    source TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS oauth_consents (
    principal TEXT NOT NULL,
    client_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    approved_ms INTEGER NOT NULL,
    PRIMARY KEY (principal, client_id, endpoint)
);
CREATE TABLE IF NOT EXISTS oauth_grants (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS oauth_tokens (
    id TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    digest BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER,
    revoked_ms INTEGER
);
CREATE INDEX IF NOT EXISTS oauth_tokens_grant ON oauth_tokens(grant_id);
CREATE TABLE IF NOT EXISTS login_links (
    id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    principal TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER
);
";

/// A registered OAuth client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OAuthClient {
    /// `client_id`: random for a dynamically registered client, the document's URL
    /// for a Client ID Metadata Document.
    pub id: String,
    /// Its display name (`client_name`), shown on the consent page.
    pub name: String,
    /// The redirect URIs it registered, matched exactly.
    pub redirect_uris: Vec<String>,
    /// `"dcr"` (RFC 7591) or `"cimd"` (a metadata document).
    pub source: String,
}

impl OAuthClient {
    /// A client record.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        redirect_uris: Vec<String>,
        source: &str,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            redirect_uris,
            source: source.to_owned(),
        }
    }
}

/// A grant: a user's approval of one client on one endpoint, until `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Grant {
    /// Public id (12 hex digits).
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The user.
    pub principal: Principal,
    /// The one endpoint the grant is for (its resource URI).
    pub endpoint: String,
    /// Granted scope (space-separated, may be empty).
    pub scope: String,
    /// Approved at.
    #[serde(skip)]
    pub created: SystemTime,
    /// The end of the chosen duration: no token of this grant outlives it.
    #[serde(skip)]
    pub expires: SystemTime,
}

impl Grant {
    /// The credential a request with one of this grant's tokens presents: its gateway
    /// session lasts as long as the grant.
    pub fn credential(&self) -> ClientCredential {
        ClientCredential::new(format!("grant:{}", self.id))
            .issued_at(Some(self.created))
            .expires_at(Some(self.expires))
    }
}

/// A fresh access/refresh token pair.
#[derive(Debug)]
#[non_exhaustive]
pub struct IssuedTokens {
    /// The access token (`mcpo_…`).
    pub access_token: SecretString,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The refresh token (`mcpr_…`), or `None` when the grant ends before an access
    /// token would need refreshing.
    pub refresh_token: Option<SecretString>,
    /// The grant they belong to.
    pub grant: Grant,
}

/// Why a token or link was refused by the authorization server's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantRefused {
    /// Unknown, malformed or wrong secret.
    #[error("unknown or invalid token")]
    Invalid,
    /// The token, its grant or its gateway session was revoked.
    #[error("the grant was revoked")]
    Revoked,
    /// Expired.
    #[error("the token has expired")]
    Expired,
    /// A refresh token or sign-in link presented a second time.
    #[error("the token was already used")]
    Reused,
    /// Presented by another client than the one it was issued to.
    #[error("the token was issued to another client")]
    WrongClient,
    /// A refresh asked for another resource than the grant's endpoint.
    #[error("the resource is not the grant's endpoint")]
    WrongTarget,
    /// A refresh asked for a scope the grant does not hold.
    #[error("the scope exceeds what was granted")]
    ScopeExceeded,
}

/// What a refresh request asks for besides the token. [`AccessStore::refresh_grant`]
/// checks it against the grant before the token is used up, so a malformed request
/// costs the client nothing (RFC 6749 §6: the request is validated, then the token
/// rotated).
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct RefreshCheck<'a> {
    /// The endpoint the request's `resource` names, when it names one: it must be the
    /// grant's.
    pub endpoint: Option<&'a str>,
    /// The scope asked for, when given: every one of its scopes must be granted.
    pub scope: Option<&'a str>,
}

impl<'a> RefreshCheck<'a> {
    /// Nothing to check beyond the token and the client.
    pub fn new() -> Self {
        Self::default()
    }

    /// The request names `endpoint` as its resource.
    #[must_use]
    pub fn endpoint(mut self, endpoint: &'a str) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// The request asks for `scope`.
    #[must_use]
    pub fn scope(mut self, scope: &'a str) -> Self {
        self.scope = Some(scope);
        self
    }

    fn verify(&self, grant: &Grant) -> Result<(), GrantRefused> {
        if self.endpoint.is_some_and(|e| e != grant.endpoint) {
            return Err(GrantRefused::WrongTarget);
        }
        if let Some(scope) = self.scope
            && scope
                .split_ascii_whitespace()
                .any(|s| !grant.scope.split_ascii_whitespace().any(|g| g == s))
        {
            return Err(GrantRefused::ScopeExceeded);
        }
        Ok(())
    }
}

type GrantRow = (String, String, String, String, String, i64, i64, Option<i64>);
type TokenCols = (String, Vec<u8>, i64, Option<i64>, Option<i64>);

impl AccessStore {
    /// Registers (or replaces) a client.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn register_client(&self, client: &OAuthClient) -> Result<(), StoreError> {
        let uris = serde_json::to_string(&client.redirect_uris).unwrap_or_default();
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO oauth_clients (id, name, redirect_uris, source, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![client.id, client.name, uris, client.source, ms(SystemTime::now())],
            )
        })
        .map(drop)
    }

    /// How many clients are registered.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn count_clients(&self) -> Result<usize, StoreError> {
        let n: i64 = self.with(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM oauth_clients")?
                .query_row([], |r| r.get(0))
        })?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Forgets clients registered before `before` that never obtained a grant (a
    /// registration nobody completed a sign-in with). Returns how many.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn forget_unused_clients(&self, before: SystemTime) -> Result<usize, StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM oauth_clients WHERE created_ms < ?1 \
                 AND NOT EXISTS (SELECT 1 FROM oauth_grants g WHERE g.client_id = oauth_clients.id)",
                [ms(before)],
            )
        })
    }

    /// A registered client.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn client(&self, id: &str) -> Result<Option<OAuthClient>, StoreError> {
        let row: Option<(String, String, String)> = self.with(|c| {
            c.prepare_cached("SELECT name, redirect_uris, source FROM oauth_clients WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })?;
        Ok(row.map(|(name, uris, source)| OAuthClient {
            id: id.to_owned(),
            name,
            redirect_uris: serde_json::from_str(&uris).unwrap_or_default(),
            source,
        }))
    }

    /// Records that `principal` approved `client_id` on `endpoint` with `redirect_uri`.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn record_consent(
        &self,
        principal: &str,
        client_id: &str,
        endpoint: &str,
        redirect_uri: &str,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO oauth_consents (principal, client_id, endpoint, redirect_uri, approved_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![principal, client_id, endpoint, redirect_uri, ms(SystemTime::now())],
            )
        })
        .map(drop)
    }

    /// The redirect URI `principal` approved for `client_id` on `endpoint`, if any.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn consent(
        &self,
        principal: &str,
        client_id: &str,
        endpoint: &str,
    ) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT redirect_uri FROM oauth_consents WHERE principal = ?1 AND client_id = ?2 AND endpoint = ?3",
            )?
            .query_row(params![principal, client_id, endpoint], |r| r.get(0))
            .optional()
        })
    }

    /// Opens a grant for `principal` and `client_id` on `endpoint`, lasting `duration`.
    ///
    /// # Errors
    /// When the store cannot be written or the random source fails.
    pub fn create_grant(
        &self,
        principal: &Principal,
        client_id: &str,
        endpoint: &str,
        scope: &str,
        duration: Duration,
    ) -> Result<Grant, StoreError> {
        let id = crate::hex::random(6).map_err(|_| StoreError::Random)?;
        let now = SystemTime::now();
        let grant = Grant {
            id,
            client_id: client_id.to_owned(),
            principal: principal.clone(),
            endpoint: endpoint.to_owned(),
            scope: scope.to_owned(),
            created: now,
            expires: now + duration,
        };
        let p = serde_json::to_string(principal).unwrap_or_default();
        self.with(|c| {
            c.execute(
                "INSERT INTO oauth_grants (id, client_id, principal, endpoint, scope, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![grant.id, grant.client_id, p, grant.endpoint, grant.scope, ms(now), ms(grant.expires)],
            )
        })?;
        Ok(grant)
    }

    fn grant_row(&self, id: &str) -> Result<Option<(Grant, Option<i64>)>, StoreError> {
        let row: Option<GrantRow> = self.with(|c| {
            c.prepare_cached(
                "SELECT id, client_id, principal, endpoint, scope, created_ms, expires_ms, revoked_ms FROM oauth_grants WHERE id = ?1",
            )?
            .query_row([id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
            })
            .optional()
        })?;
        let Some((id, client_id, p, endpoint, scope, created, expires, revoked)) = row else {
            return Ok(None);
        };
        let principal = serde_json::from_str(&p).map_err(|_| StoreError::Corrupt {
            path: self.path().to_path_buf(),
            id: id.clone(),
        })?;
        Ok(Some((
            Grant {
                id,
                client_id,
                principal,
                endpoint,
                scope,
                created: from_ms(created),
                expires: from_ms(expires),
            },
            revoked,
        )))
    }

    /// A live (unrevoked) grant by id.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        match self.grant_row(id)? {
            Some((g, revoked)) if !self.grant_revoked(&g.id, revoked)? => Ok(Some(g)),
            _ => Ok(None),
        }
    }

    /// The grant a (genuine) refresh token belongs to, used or not.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn grant_of_refresh(&self, token: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .find_token(token, REFRESH_PREFIX, "refresh")?
            .ok()
            .map(|r| r.grant.id))
    }

    /// Whether the grant, or a gateway session opened with it, was revoked.
    fn grant_revoked(&self, grant: &str, revoked: Option<i64>) -> Result<bool, StoreError> {
        if revoked.is_some() {
            return Ok(true);
        }
        let credential = format!("grant:{grant}");
        let by_session: Option<i64> = self.with(|c| {
            c.prepare_cached(
                "SELECT 1 FROM sessions WHERE credential = ?1 AND revoked_ms IS NOT NULL LIMIT 1",
            )?
            .query_row([credential], |r| r.get(0))
            .optional()
        })?;
        if by_session.is_some() {
            self.revoke_grant(grant)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Issues an access token (lifetime `access_ttl`, never past the grant's end) and,
    /// when the grant outlives it, a refresh token.
    ///
    /// # Errors
    /// When the store cannot be written or the random source fails.
    pub fn issue_grant_tokens(
        &self,
        grant: &Grant,
        access_ttl: Duration,
    ) -> Result<IssuedTokens, StoreError> {
        let now = SystemTime::now();
        let access_expires = (now + access_ttl).min(grant.expires);
        let access = self.insert_token(&grant.id, "access", ACCESS_PREFIX, access_expires)?;
        let refresh = if access_expires < grant.expires {
            Some(self.insert_token(&grant.id, "refresh", REFRESH_PREFIX, grant.expires)?)
        } else {
            None
        };
        Ok(IssuedTokens {
            access_token: access,
            expires_in: access_expires.duration_since(now).unwrap_or_default().as_secs(),
            refresh_token: refresh,
            grant: grant.clone(),
        })
    }

    fn insert_token(
        &self,
        grant: &str,
        kind: &str,
        prefix: &str,
        expires: SystemTime,
    ) -> Result<SecretString, StoreError> {
        let minted = tokens::mint_prefixed(prefix).map_err(|_| StoreError::Random)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO oauth_tokens (id, grant_id, kind, digest, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![minted.id, grant, kind, minted.digest.as_slice(), ms(SystemTime::now()), ms(expires)],
            )
        })?;
        Ok(minted.token)
    }

    /// Looks up a presented token of `kind`: its row id, grant, and state.
    fn find_token(
        &self,
        token: &str,
        prefix: &str,
        kind: &str,
    ) -> Result<Result<TokenRow, GrantRefused>, StoreError> {
        let Some((id, secret)) = tokens::split_prefixed(prefix, token) else {
            return Ok(Err(GrantRefused::Invalid));
        };
        let row: Option<TokenCols> = self.with(|c| {
            c.prepare_cached(
                "SELECT grant_id, digest, expires_ms, used_ms, revoked_ms FROM oauth_tokens WHERE id = ?1 AND kind = ?2",
            )?
            .query_row(params![id, kind], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .optional()
        })?;
        let presented = tokens::digest(secret);
        let Some((grant_id, digest, expires, used, revoked)) = row else {
            let _ = tokens::digests_equal(&presented, &[0; 32]);
            return Ok(Err(GrantRefused::Invalid));
        };
        let stored = <[u8; 32]>::try_from(digest.as_slice()).unwrap_or([0; 32]);
        if !tokens::digests_equal(&stored, &presented) {
            return Ok(Err(GrantRefused::Invalid));
        }
        let Some((grant, grant_revoked)) = self.grant_row(&grant_id)? else {
            return Ok(Err(GrantRefused::Invalid));
        };
        Ok(Ok(TokenRow {
            id: id.to_owned(),
            grant,
            grant_revoked,
            expires: from_ms(expires),
            used: used.is_some(),
            revoked: revoked.is_some(),
        }))
    }

    /// Checks an access token: the grant it belongs to.
    ///
    /// # Errors
    /// `Ok(Err(_))` when refused; `Err` when the store failed.
    pub fn verify_access_token(&self, token: &str) -> Result<Result<Grant, GrantRefused>, StoreError> {
        let row = match self.find_token(token, ACCESS_PREFIX, "access")? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        // The grant's own revocation only: a revoked gateway session is refused by the
        // serving process's `Sessions` (kept in step with this store), so the per-request
        // path skips the journal lookup that refresh does.
        if row.revoked || row.grant_revoked.is_some() {
            return Ok(Err(GrantRefused::Revoked));
        }
        if row.expires <= SystemTime::now() {
            return Ok(Err(GrantRefused::Expired));
        }
        Ok(Ok(row.grant))
    }

    /// Redeems a refresh token for a new pair (rotation). A refresh token presented
    /// twice revokes its grant. The request (`client_id`, `check`) is validated
    /// before the token is used up: a refused request leaves the token as it was.
    ///
    /// # Errors
    /// `Ok(Err(_))` when refused; `Err` when the store failed.
    pub fn refresh_grant(
        &self,
        token: &str,
        client_id: &str,
        check: RefreshCheck<'_>,
        access_ttl: Duration,
    ) -> Result<Result<IssuedTokens, GrantRefused>, StoreError> {
        let row = match self.find_token(token, REFRESH_PREFIX, "refresh")? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        if row.grant.client_id != client_id {
            return Ok(Err(GrantRefused::WrongClient));
        }
        if row.used {
            tracing::warn!(grant = %row.grant.id, "a refresh token was presented twice; revoking its grant");
            self.revoke_grant(&row.grant.id)?;
            return Ok(Err(GrantRefused::Reused));
        }
        if row.revoked || self.grant_revoked(&row.grant.id, row.grant_revoked)? {
            return Ok(Err(GrantRefused::Revoked));
        }
        if row.expires <= SystemTime::now() || row.grant.expires <= SystemTime::now() {
            return Ok(Err(GrantRefused::Expired));
        }
        if let Err(e) = check.verify(&row.grant) {
            return Ok(Err(e));
        }
        let claimed = self.with(|c| {
            c.execute(
                "UPDATE oauth_tokens SET used_ms = ?2 WHERE id = ?1 AND used_ms IS NULL",
                params![row.id, ms(SystemTime::now())],
            )
        })?;
        if claimed == 0 {
            // Raced with another redemption of the same token.
            self.revoke_grant(&row.grant.id)?;
            return Ok(Err(GrantRefused::Reused));
        }
        self.issue_grant_tokens(&row.grant, access_ttl).map(Ok)
    }

    /// RFC 7009: revokes a token presented by `client_id`. A refresh token takes its
    /// grant (and every access token of it) along; an access token only itself.
    /// Unknown tokens are not an error (the endpoint answers 200 either way).
    ///
    /// # Errors
    /// When the store failed.
    pub fn revoke_presented(
        &self,
        token: &str,
        client_id: &str,
    ) -> Result<Result<(), GrantRefused>, StoreError> {
        let (prefix, kind) = if token.starts_with(REFRESH_PREFIX) {
            (REFRESH_PREFIX, "refresh")
        } else {
            (ACCESS_PREFIX, "access")
        };
        let row = match self.find_token(token, prefix, kind)? {
            Ok(r) => r,
            Err(GrantRefused::Invalid) => return Ok(Ok(())),
            Err(e) => return Ok(Err(e)),
        };
        if row.grant.client_id != client_id {
            return Ok(Err(GrantRefused::WrongClient));
        }
        if kind == "refresh" {
            self.revoke_grant(&row.grant.id)?;
        } else {
            self.with(|c| {
                c.execute(
                    "UPDATE oauth_tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                    params![row.id, ms(SystemTime::now())],
                )
            })?;
        }
        Ok(Ok(()))
    }

    /// Revokes a grant: its tokens stop working and its gateway sessions close.
    /// Returns whether a live grant had that id.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn revoke_grant(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE oauth_grants SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, ms(SystemTime::now())],
            )
        })?;
        Ok(n > 0)
    }

    /// Every grant, newest first, with its revocation time.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn list_grants(&self) -> Result<Vec<(Grant, Option<SystemTime>)>, StoreError> {
        let ids: Vec<String> = self.with(|c| {
            c.prepare("SELECT id FROM oauth_grants ORDER BY created_ms DESC, id")?
                .query_map([], |r| r.get(0))?
                .collect()
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((g, revoked)) = self.grant_row(&id)? {
                out.push((g, revoked.map(from_ms)));
            }
        }
        Ok(out)
    }

    /// Issues a one-time sign-in link token for user `principal`, valid for `ttl`.
    ///
    /// # Errors
    /// When the store cannot be written or the random source fails.
    pub fn issue_login_link(&self, principal: &str, ttl: Duration) -> Result<SecretString, StoreError> {
        let minted = tokens::mint_prefixed(LINK_PREFIX).map_err(|_| StoreError::Random)?;
        let now = SystemTime::now();
        self.with(|c| {
            c.execute(
                "INSERT INTO login_links (id, digest, principal, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![minted.id, minted.digest.as_slice(), principal, ms(now), ms(now + ttl)],
            )
        })?;
        Ok(minted.token)
    }

    /// Redeems a sign-in link: the user it was issued for. Single use.
    ///
    /// # Errors
    /// `Ok(Err(_))` when refused; `Err` when the store failed.
    pub fn redeem_login_link(&self, token: &str) -> Result<Result<String, GrantRefused>, StoreError> {
        let Some((id, secret)) = tokens::split_prefixed(LINK_PREFIX, token) else {
            return Ok(Err(GrantRefused::Invalid));
        };
        let row: Option<(Vec<u8>, String, i64, Option<i64>)> = self.with(|c| {
            c.prepare_cached("SELECT digest, principal, expires_ms, used_ms FROM login_links WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()
        })?;
        let presented = tokens::digest(secret);
        let Some((digest, principal, expires, used)) = row else {
            let _ = tokens::digests_equal(&presented, &[0; 32]);
            return Ok(Err(GrantRefused::Invalid));
        };
        let stored = <[u8; 32]>::try_from(digest.as_slice()).unwrap_or([0; 32]);
        if !tokens::digests_equal(&stored, &presented) {
            return Ok(Err(GrantRefused::Invalid));
        }
        if used.is_some() {
            return Ok(Err(GrantRefused::Reused));
        }
        if from_ms(expires) <= SystemTime::now() {
            return Ok(Err(GrantRefused::Expired));
        }
        let claimed = self.with(|c| {
            c.execute(
                "UPDATE login_links SET used_ms = ?2 WHERE id = ?1 AND used_ms IS NULL",
                params![id, ms(SystemTime::now())],
            )
        })?;
        if claimed == 0 {
            return Ok(Err(GrantRefused::Reused));
        }
        Ok(Ok(principal))
    }
}

struct TokenRow {
    id: String,
    grant: Grant,
    grant_revoked: Option<i64>,
    expires: SystemTime,
    used: bool,
    revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expose(s: &SecretString) -> String {
        #[expect(clippy::disallowed_methods, reason = "test presents the token it issued")]
        secrecy::ExposeSecret::expose_secret(s).to_owned()
    }

    fn store() -> (tempfile::TempDir, AccessStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = AccessStore::open(dir.path().join("access.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn access_tokens_never_outlive_the_grant_and_refresh_rotates() {
        let (_d, s) = store();
        let alice = Principal::user("alice").with_roles(["dev"]);
        let g = s
            .create_grant(&alice, "c1", "main", "", Duration::from_hours(1))
            .unwrap();
        let t = s.issue_grant_tokens(&g, Duration::from_hours(2)).unwrap();
        assert!(t.expires_in <= 3600, "capped at the grant: {}", t.expires_in);
        assert!(
            t.refresh_token.is_none(),
            "no refresh when the access token lasts the grant"
        );
        let t = s.issue_grant_tokens(&g, Duration::from_mins(1)).unwrap();
        let at = expose(&t.access_token);
        let got = s.verify_access_token(&at).unwrap().unwrap();
        assert_eq!(got.principal, alice);
        assert_eq!(got.credential().id.as_ref(), format!("grant:{}", g.id));
        let rt = expose(t.refresh_token.as_ref().unwrap());
        assert_eq!(
            s.refresh_grant(&rt, "other", RefreshCheck::new(), Duration::from_mins(1))
                .unwrap()
                .unwrap_err(),
            GrantRefused::WrongClient
        );
        let next = s
            .refresh_grant(&rt, "c1", RefreshCheck::new(), Duration::from_mins(1))
            .unwrap()
            .unwrap();
        assert_eq!(next.grant.id, g.id);
        // Reuse of the old refresh token revokes the grant, new tokens included.
        assert_eq!(
            s.refresh_grant(&rt, "c1", RefreshCheck::new(), Duration::from_mins(1))
                .unwrap()
                .unwrap_err(),
            GrantRefused::Reused
        );
        assert_eq!(
            s.verify_access_token(&expose(&next.access_token))
                .unwrap()
                .unwrap_err(),
            GrantRefused::Revoked
        );
    }

    #[test]
    fn a_refused_refresh_request_leaves_the_token_usable() {
        let (_d, s) = store();
        let g = s
            .create_grant(
                &Principal::user("carol"),
                "c1",
                "main",
                "read",
                Duration::from_hours(1),
            )
            .unwrap();
        let t = s.issue_grant_tokens(&g, Duration::from_mins(1)).unwrap();
        let rt = expose(t.refresh_token.as_ref().unwrap());
        let ttl = Duration::from_mins(1);
        for (check, refused) in [
            (RefreshCheck::new().endpoint("other"), GrantRefused::WrongTarget),
            (
                RefreshCheck::new().scope("read write"),
                GrantRefused::ScopeExceeded,
            ),
            (RefreshCheck::new(), GrantRefused::WrongClient),
        ] {
            let client = if refused == GrantRefused::WrongClient {
                "c2"
            } else {
                "c1"
            };
            assert_eq!(
                s.refresh_grant(&rt, client, check, ttl).unwrap().unwrap_err(),
                refused
            );
        }
        let next = s
            .refresh_grant(&rt, "c1", RefreshCheck::new().endpoint("main").scope("read"), ttl)
            .unwrap()
            .unwrap();
        assert!(
            s.verify_access_token(&expose(&next.access_token))
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn clients_without_a_grant_are_forgotten() {
        let (_d, s) = store();
        for id in ["used", "unused"] {
            s.register_client(&OAuthClient::new(
                id,
                id,
                vec!["https://c.example/cb".into()],
                "dcr",
            ))
            .unwrap();
        }
        s.create_grant(
            &Principal::user("dan"),
            "used",
            "main",
            "",
            Duration::from_hours(1),
        )
        .unwrap();
        assert_eq!(s.count_clients().unwrap(), 2);
        assert_eq!(
            s.forget_unused_clients(SystemTime::UNIX_EPOCH).unwrap(),
            0,
            "none is old enough"
        );
        let later = SystemTime::now() + Duration::from_secs(1);
        assert_eq!(s.forget_unused_clients(later).unwrap(), 1);
        assert!(s.client("used").unwrap().is_some());
        assert!(s.client("unused").unwrap().is_none());
    }

    #[test]
    fn revocation_endpoint_semantics() {
        let (_d, s) = store();
        let g = s
            .create_grant(&Principal::user("bob"), "c1", "main", "", Duration::from_hours(1))
            .unwrap();
        let t = s.issue_grant_tokens(&g, Duration::from_mins(1)).unwrap();
        let (at, rt) = (expose(&t.access_token), expose(t.refresh_token.as_ref().unwrap()));
        assert_eq!(
            s.revoke_presented(&at, "c2").unwrap(),
            Err(GrantRefused::WrongClient)
        );
        s.revoke_presented(&at, "c1").unwrap().unwrap();
        assert_eq!(
            s.verify_access_token(&at).unwrap().unwrap_err(),
            GrantRefused::Revoked
        );
        s.revoke_presented(&rt, "c1").unwrap().unwrap();
        assert_eq!(
            s.refresh_grant(&rt, "c1", RefreshCheck::new(), Duration::from_mins(1))
                .unwrap()
                .unwrap_err(),
            GrantRefused::Revoked
        );
        s.revoke_presented("mcpo_nothing", "c1").unwrap().unwrap();
    }

    #[test]
    fn login_links_are_single_use() {
        let (_d, s) = store();
        let link = expose(&s.issue_login_link("alice", Duration::from_mins(10)).unwrap());
        assert_eq!(s.redeem_login_link(&link).unwrap().unwrap(), "alice");
        assert_eq!(
            s.redeem_login_link(&link).unwrap().unwrap_err(),
            GrantRefused::Reused
        );
        assert_eq!(
            s.redeem_login_link("mcpl_x").unwrap().unwrap_err(),
            GrantRefused::Invalid
        );
        let old = expose(&s.issue_login_link("alice", Duration::from_millis(1)).unwrap());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            s.redeem_login_link(&old).unwrap().unwrap_err(),
            GrantRefused::Expired
        );
    }
}
