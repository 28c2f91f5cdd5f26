//! Applying a new configuration to a running gateway.
//!
//! What a reload changes applies to the next request: grants, rate limits and
//! redaction rules are a new set of layers swapped in behind one handle (requests
//! already in the stack finish with the layers they entered); servers and endpoint
//! selections are changed in the federation (new servers start before they join,
//! removed ones stop once the calls in flight to them end); static tokens are a new
//! table behind the authenticator. Settings the front door was built with (the
//! listener, the public URL, the authorization server, the audit sinks, the stores)
//! keep their running value and are reported as needing a restart.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcp_guard_core::config::{GatewayConfig, ServerConfig};
use mcp_guard_core::redact::KnownSecrets;
use mcp_guard_core::{AuditEvent, AuditSink, Redactor, Upstream};
use sha2::{Digest as _, Sha256};

use super::auth::ConfiguredTokens;
use super::stack::Guards;
use super::{LoadedConfig, ServerError, auth, credentials, stack, upstreams};
use crate::Gateway;

/// What a reload applied, and what it kept until a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadReport {
    /// SHA-256 of the configuration file, hex (empty for a configuration built in code).
    pub digest: String,
    /// What changed, one entry per part (`grants: 2 changed`, `endpoints.team: tools +1
    /// -0`, `servers: +memory -files`); empty when nothing did.
    pub changes: Vec<String>,
    /// Settings that differ from the running ones but only apply on a restart; the
    /// running value is kept (`gateway.listen`, `audit`, `endpoints.ops (new
    /// endpoint)`).
    pub needs_restart: Vec<String>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.changes.is_empty() {
            f.write_str("no change")?;
        } else {
            f.write_str(&self.changes.join("; "))?;
        }
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; needs a restart (running value kept): {}",
                self.needs_restart.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Applies new configurations to a running HTTP gateway; cheap to clone, so a signal
/// handler or a file watcher can hold one while the gateway serves. Reloads run one at
/// a time.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

impl Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

/// The last reload and how it ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LastReload {
    /// When it ended.
    pub at: std::time::SystemTime,
    /// SHA-256 of the file it read, hex (empty when it could not be read, or for a
    /// configuration built in code).
    pub digest: String,
    /// What it applied, or why it was refused (as `mcp-guard check` says it).
    pub outcome: Result<ReloadReport, String>,
}

struct Inner {
    /// The configuration in force (what the next reload is compared with); its lock
    /// makes reloads run one at a time.
    running: tokio::sync::Mutex<GatewayConfig>,
    /// SHA-256 of the file the configuration in force was read from, and the last
    /// reload's outcome.
    applied: std::sync::Mutex<(String, Option<LastReload>)>,
    base: PathBuf,
    known: Arc<KnownSecrets>,
    sink: Arc<dyn AuditSink>,
    stderr_redactor: Arc<dyn Redactor>,
    gateway: Gateway,
    guards: Arc<Guards>,
    /// `None` with `dangerously_allow_anonymous` and over stdio (there are no tokens
    /// to replace).
    tokens: Option<ConfiguredTokens>,
    /// Over stdio: the principal catalogue connections serve, and the session id
    /// `${MCP_GUARD_SESSION}` names there (new servers are built as the first were).
    stdio: Option<(Arc<str>, Arc<str>)>,
}

/// What a reload builds before it changes anything.
struct Candidate {
    guards: stack::Prepared,
    tokens: Option<crate::StaticTokens>,
    servers: Vec<(Arc<dyn Upstream>, bool)>,
    endpoints: Vec<crate::EndpointSpec>,
}

impl Reloader {
    #[expect(clippy::too_many_arguments, reason = "assembled once, by the builder")]
    pub(crate) fn new(
        running: GatewayConfig,
        digest: String,
        base: PathBuf,
        known: Arc<KnownSecrets>,
        sink: Arc<dyn AuditSink>,
        stderr_redactor: Arc<dyn Redactor>,
        gateway: Gateway,
        guards: Arc<Guards>,
        tokens: Option<ConfiguredTokens>,
        stdio: Option<(Arc<str>, Arc<str>)>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                running: tokio::sync::Mutex::new(running),
                applied: std::sync::Mutex::new((digest, None)),
                base,
                known,
                sink,
                stderr_redactor,
                gateway,
                guards,
                tokens,
                stdio,
            }),
        }
    }

    /// Reads `path` as [`load_config`](super::load_config) does and applies it as
    /// [`Self::reload`] does. A file that cannot be read, parsed or validated is
    /// refused with the message `mcp-guard check` prints; the refusal is logged and
    /// audited (`config_refused`, with the file's digest) and the running
    /// configuration stays.
    ///
    /// # Errors
    /// The file is refused, or [`Self::reload`] refuses it.
    pub async fn reload_file(&self, path: &Path) -> Result<ReloadReport, ServerError> {
        match super::load_config(path) {
            Ok(loaded) => self.reload(loaded).await,
            Err(e) => {
                let digest = std::fs::read(path)
                    .map(|b| mcp_guard_core::hex::encode(&Sha256::digest(&b)))
                    .unwrap_or_default();
                self.refused(&digest, &e).await;
                Err(e)
            }
        }
    }

    /// Applies `new` to the next request: grants, endpoint selections (a server
    /// switched on or off in an endpoint), servers added, removed or changed (a changed
    /// server is replaced by a new one, started before it joins; a removed one stops
    /// once the calls in flight to it end), per-endpoint redaction, rate limits (their
    /// budgets start afresh when `[rate_limits]` changed) and `[[auth.tokens]]`. Open
    /// sessions and calls in flight are not dropped; clients whose lists changed are
    /// sent `list_changed`. Settings that need a restart keep their running value and
    /// are named in the report. The outcome is logged and audited (`config_reloaded`
    /// with the digest and what changed, or `config_refused`).
    ///
    /// # Errors
    /// Something in `new` does not build (a grant, a pattern, a missing `${VAR}`, an
    /// endpoint naming an unknown server); nothing is changed then.
    pub async fn reload(&self, new: LoadedConfig) -> Result<ReloadReport, ServerError> {
        let digest = new.digest.clone();
        let path = new.path.clone();
        let mut running = self.inner.running.lock().await;
        let mut next = new.config;
        let needs_restart = keep_running(&running, &mut next);
        if let Err(e) = self.check_labels(&running, &next).await {
            let e = ServerError(e.context(format!("{}: not applied", path.display())));
            self.refused(&digest, &e).await;
            return Err(e);
        }
        let candidate = match self.prepare(&running, &next) {
            Ok(c) => c,
            Err(e) => {
                let e = ServerError(e.context(format!("{}: not applied", path.display())));
                self.refused(&digest, &e).await;
                return Err(e);
            }
        };
        let retire_after = retire_after(&running);
        let reconfigured = match self
            .inner
            .gateway
            .reconfigure(candidate.servers, candidate.endpoints, retire_after)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let e =
                    ServerError(anyhow::Error::new(e).context(format!("{}: not applied", path.display())));
                self.refused(&digest, &e).await;
                return Err(e);
            }
        };
        self.inner.guards.install(candidate.guards);
        if let (Some(slot), Some(t)) = (&self.inner.tokens, candidate.tokens) {
            slot.set(t);
        }
        let report = ReloadReport {
            digest,
            changes: changes(&running, &next, &reconfigured),
            needs_restart,
        };
        *running = next;
        self.ended(&report.digest, Ok(report.clone()), true);
        drop(running);
        tracing::info!(digest = %report.digest, %report, "configuration reloaded");
        for r in &report.needs_restart {
            tracing::warn!(setting = %r, "changed setting needs a restart; the running value is kept");
        }
        let event = AuditEvent::new(mcp_guard_core::audit::EventKind::ConfigReloaded {
            digest: report.digest.clone(),
            changes: report.to_string(),
        });
        if let Err(e) = self.inner.sink.record(&event).await {
            tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "could not record the reload");
        }
        Ok(report)
    }

    /// Builds everything `next` needs before anything changes, so a failure leaves
    /// the gateway as it was.
    fn prepare(&self, running: &GatewayConfig, next: &GatewayConfig) -> anyhow::Result<Candidate> {
        let inner = &*self.inner;
        let guards = inner.guards.prepare(next)?;
        let tokens = match &inner.tokens {
            Some(_) => Some(auth::static_tokens(next, &inner.known)?),
            None => None,
        };
        // Servers whose definition is unchanged keep their upstream (connection,
        // processes); the others are built anew.
        let current: BTreeMap<Arc<str>, Arc<dyn Upstream>> = inner
            .gateway
            .servers()
            .into_iter()
            .map(|(id, u, _)| (id, u))
            .collect();
        let mut fresh_only = next.clone();
        fresh_only.servers.retain(|id, s| {
            !(current.contains_key(id.as_str()) && running.servers.get(id).is_some_and(|r| same(r, s)))
        });
        let principal = inner.stdio.as_ref().map(|(p, _)| p.as_ref());
        let mut stores = credentials::stores(next, &inner.base, principal, &inner.known)?;
        stores.catalogue_session = inner.stdio.as_ref().map(|(_, s)| s.clone());
        let mut fresh: BTreeMap<String, (Arc<dyn Upstream>, bool)> =
            upstreams::upstreams(&fresh_only, &stores, &inner.stderr_redactor)?
                .into_iter()
                .map(|(u, enabled)| (u.id().to_owned(), (u, enabled)))
                .collect();
        let mut servers = Vec::new();
        for (id, s) in &next.servers {
            if let Some(u) = fresh.remove(id) {
                servers.push(u);
            } else {
                let u = current
                    .get(id.as_str())
                    .ok_or_else(|| anyhow::anyhow!("servers.{id}: not running"))?;
                servers.push((u.clone(), s.enabled()));
            }
        }
        let endpoints = stack::endpoint_specs(next)?;
        Ok(Candidate {
            guards,
            tokens,
            servers,
            endpoints,
        })
    }

    /// Checks `next`'s label tool globs against the servers that keep running as they
    /// are (a new or changed server has not started yet: its tools are not judged).
    async fn check_labels(&self, running: &GatewayConfig, next: &GatewayConfig) -> anyhow::Result<()> {
        if next.labels.iter().all(|l| l.tools.is_empty()) {
            return Ok(());
        }
        let mut served = super::flow::served_tools(&self.inner.gateway).await;
        served.retain(|(id, _)| next.servers.contains_key(id));
        for (id, tools) in &mut served {
            if !running
                .servers
                .get(id)
                .zip(next.servers.get(id))
                .is_some_and(|(r, n)| same(r, n))
            {
                *tools = None;
            }
        }
        let absent: Vec<String> = next
            .servers
            .keys()
            .filter(|id| !served.iter().any(|(s, _)| s == *id))
            .cloned()
            .collect();
        served.extend(absent.into_iter().map(|id| (id, None)));
        let warnings = mcp_guard_core::config::check_label_tools(&next.labels, &served)
            .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
        for w in warnings {
            tracing::warn!(entry = %w.entry, "{}", w.message);
        }
        Ok(())
    }

    /// The configuration in force (the file as last applied, with the settings that
    /// need a restart at their running values).
    pub async fn running(&self) -> GatewayConfig {
        self.inner.running.lock().await.clone()
    }

    /// SHA-256 of the file the configuration in force was read from, hex (empty for a
    /// configuration built in code). A file watcher compares it with the file's to
    /// skip a reload of what is already applied.
    pub fn applied_digest(&self) -> String {
        self.applied().0.clone()
    }

    /// The last reload's outcome, if there was one since the gateway started.
    pub fn last(&self) -> Option<LastReload> {
        self.applied().1.clone()
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, (String, Option<LastReload>)> {
        self.inner
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn ended(&self, digest: &str, outcome: Result<ReloadReport, String>, applied: bool) {
        let mut a = self.applied();
        if applied {
            digest.clone_into(&mut a.0);
        }
        a.1 = Some(LastReload {
            at: std::time::SystemTime::now(),
            digest: digest.to_owned(),
            outcome,
        });
    }

    async fn refused(&self, digest: &str, e: &ServerError) {
        tracing::error!(digest, error = %e, "configuration refused; the running configuration stays");
        self.ended(digest, Err(e.to_string()), false);
        // A parse error quotes the file; whatever secret a careless file holds inline
        // does not reach the trail.
        let reason = e.to_string();
        let event = AuditEvent::new(mcp_guard_core::audit::EventKind::ConfigRefused {
            digest: digest.to_owned(),
            reason: self.inner.stderr_redactor.redact_str(&reason).into_owned(),
        });
        if let Err(e) = self.inner.sink.record(&event).await {
            tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "could not record the refused reload");
        }
    }
}

/// Equal as configured (the configuration types compare through their `Debug` form:
/// they hold only plain values and secret references).
fn same<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// How long a removed server may finish the calls in flight to it: the longest
/// request timeout, plus the shutdown grace.
fn retire_after(config: &GatewayConfig) -> Duration {
    let longest = config
        .servers
        .values()
        .filter_map(ServerConfig::timeout_secs)
        .chain([config.gateway.request_timeout_secs])
        .max()
        .unwrap_or_default();
    Duration::from_secs(longest.saturating_add(config.gateway.shutdown_grace_secs))
}

fn has_oauth(s: &ServerConfig) -> bool {
    matches!(s, ServerConfig::Http(h) if h.oauth.is_some())
}

/// Puts the running value of every setting that needs a restart into `next`, and
/// names those that differed.
fn keep_running(running: &GatewayConfig, next: &mut GatewayConfig) -> Vec<String> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $name:expr) => {
            if !same(&running.$($field).+, &next.$($field).+) {
                kept.push($name.to_owned());
                next.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!(gateway.listen, "gateway.listen");
    keep!(gateway.public_url, "gateway.public_url");
    keep!(gateway, "gateway (other settings)");
    keep!(auth.server, "auth.server");
    keep!(auth.jwt, "auth.jwt");
    keep!(auth.store, "auth.store");
    keep!(auth.stdio_principal, "auth.stdio_principal");
    keep!(
        auth.dangerously_allow_anonymous,
        "auth.dangerously_allow_anonymous"
    );
    keep!(audit, "audit");
    keep!(telemetry, "telemetry");
    keep!(credentials, "credentials");
    keep!(pinning, "pinning");
    keep!(unauthenticated_limits, "unauthenticated_limits");
    keep!(approval, "approval");
    // Endpoints are routes of the front door: added, removed or renamed prefixes wait.
    let names: Vec<String> = running
        .endpoints
        .keys()
        .chain(next.endpoints.keys())
        .cloned()
        .collect();
    for name in names {
        match (running.endpoints.get(&name), next.endpoints.get_mut(&name)) {
            (Some(r), Some(n)) => {
                if r.namespace != n.namespace || r.description != n.description {
                    kept.push(format!("endpoints.{name}.namespace/description"));
                    n.namespace = r.namespace;
                    n.description.clone_from(&r.description);
                }
            }
            (Some(r), None) => {
                kept.push(format!("endpoints.{name} (removed endpoint)"));
                next.endpoints.insert(name.clone(), r.clone());
            }
            (None, Some(_)) => {
                kept.push(format!("endpoints.{name} (new endpoint)"));
                next.endpoints.remove(&name);
            }
            (None, None) => {}
        }
    }
    kept.dedup();
    // Servers the gateway signs in to with OAuth have sign-in routes fixed at start.
    let ids: Vec<String> = running
        .servers
        .keys()
        .chain(next.servers.keys())
        .cloned()
        .collect();
    for id in ids {
        let (r, n) = (running.servers.get(&id), next.servers.get(&id));
        let oauth = r.is_some_and(has_oauth) || n.is_some_and(has_oauth);
        let differ = match (r, n) {
            (Some(r), Some(n)) => !same(r, n),
            (None, None) => false,
            _ => true,
        };
        if oauth && differ {
            kept.push(format!("servers.{id} (OAuth sign-in)"));
            match r {
                Some(r) => {
                    next.servers.insert(id.clone(), r.clone());
                }
                None => {
                    next.servers.remove(&id);
                }
            }
        }
    }
    kept.dedup();
    kept
}

/// What changed from `running` to `next`, one entry per part.
fn changes(running: &GatewayConfig, next: &GatewayConfig, done: &crate::Reconfigured) -> Vec<String> {
    let mut out = Vec::new();
    let (r, n) = (&running.grants, &next.grants);
    let changed = r.iter().zip(n).filter(|(a, b)| !same(*a, *b)).count();
    let mut parts = Vec::new();
    if changed > 0 {
        parts.push(format!("{changed} changed"));
    }
    if n.len() > r.len() {
        parts.push(format!("{} added", n.len() - r.len()));
    }
    if r.len() > n.len() {
        parts.push(format!("{} removed", r.len() - n.len()));
    }
    if !parts.is_empty() {
        out.push(format!("grants: {}", parts.join(", ")));
    }
    for (name, ep) in &next.endpoints {
        let before = running.endpoints.get(name);
        let tools = done.tools.iter().find(|(e, _, _)| e == name);
        if let Some((_, added, removed)) = tools {
            out.push(format!("endpoints.{name}: tools +{added} -{removed}"));
        } else if before.is_some_and(|b| !same(&b.servers, &ep.servers)) {
            out.push(format!("endpoints.{name}: selection changed"));
        }
        if before.is_some_and(|b| !same(&b.redaction, &ep.redaction)) {
            out.push(format!("endpoints.{name}.redaction changed"));
        }
    }
    let mut servers: Vec<String> = done.added.iter().map(|s| format!("+{s}")).collect();
    servers.extend(done.removed.iter().map(|s| format!("-{s}")));
    if !servers.is_empty() {
        out.push(format!("servers: {}", servers.join(" ")));
    }
    if !same(&running.rate_limits, &next.rate_limits) {
        out.push("rate_limits changed".to_owned());
    }
    if !same(&running.labels, &next.labels) {
        out.push("labels changed".to_owned());
    }
    if !same(&running.flow_rules, &next.flow_rules) {
        out.push("flow_rules changed".to_owned());
    }
    let fmt = |t: &mcp_guard_core::config::TokenConfig| format!("{t:?}");
    let before: Vec<String> = running.auth.tokens.iter().map(fmt).collect();
    let after: Vec<String> = next.auth.tokens.iter().map(fmt).collect();
    let added = after.iter().filter(|t| !before.contains(t)).count();
    let removed = before.iter().filter(|t| !after.contains(t)).count();
    if added + removed > 0 {
        out.push(format!("auth.tokens: +{added} -{removed}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> GatewayConfig {
        toml::from_str(text).unwrap()
    }

    const SERVERS: &str = "[servers.files]\ntransport = \"stdio\"\ncommand = \"files\"\n\n\
        [servers.echo]\ntransport = \"stdio\"\ncommand = \"echo\"\n\n";

    #[test]
    fn settings_that_need_a_restart_keep_their_running_value_and_are_named() {
        let running = config(&format!(
            "[gateway]\nlisten = \"127.0.0.1:8787\"\n\n{SERVERS}[endpoints.team.servers.files]\ntools = [\"*\"]\n"
        ));
        let mut next = config(&format!(
            "[gateway]\nlisten = \"0.0.0.0:9000\"\n\n[audit]\nsinks = [\"jsonl\"]\n\n{SERVERS}\
             [endpoints.team.servers.files]\ntools = [\"read\"]\n\n[endpoints.ops.servers.echo]\ntools = [\"*\"]\n"
        ));
        let kept = keep_running(&running, &mut next);
        assert_eq!(kept, ["gateway.listen", "audit", "endpoints.ops (new endpoint)"]);
        assert_eq!(next.gateway.listen, "127.0.0.1:8787");
        assert!(same(&next.audit, &running.audit));
        assert!(!next.endpoints.contains_key("ops"));
        // What can change is left as the new file has it.
        assert_eq!(next.endpoints["team"].servers["files"].tools, ["read"]);
        // Nothing differs any more: a second look names nothing.
        assert!(keep_running(&running, &mut next).is_empty());
    }

    #[test]
    fn audit_forwarders_and_telemetry_wait_for_a_restart() {
        let running = config(SERVERS);
        let mut next = config(&format!(
            "{SERVERS}[audit.forward.siem]\nkind = \"syslog\"\nurl = \"tcp://127.0.0.1:514\"\n\n\
             [telemetry]\nenabled = true\n"
        ));
        assert_eq!(keep_running(&running, &mut next), ["audit", "telemetry"]);
        assert!(next.audit.forward.is_empty() && !next.telemetry.enabled);
    }

    #[test]
    fn oauth_servers_wait_for_a_restart() {
        let oauth = "[servers.gh]\ntransport = \"http\"\nurl = \"https://example.com/mcp\"\n\
            [servers.gh.oauth]\nmode = \"shared\"\n\n";
        let running = config(SERVERS);
        let mut next = config(&format!("{SERVERS}{oauth}"));
        assert_eq!(keep_running(&running, &mut next), ["servers.gh (OAuth sign-in)"]);
        assert!(!next.servers.contains_key("gh"));
    }

    #[test]
    fn changes_are_summarised_per_part() {
        let running = config(&format!(
            "[[grants]]\nroles = [\"a\"]\nnames = [\"*\"]\n\n[[grants]]\nroles = [\"b\"]\nnames = [\"*\"]\n\n\
             [[auth.tokens]]\nprincipal = {{ id = \"alice\" }}\ntoken = \"${{A}}\"\n\n{SERVERS}"
        ));
        let next = config(&format!(
            "[[grants]]\nroles = [\"a\"]\nnames = [\"x\"]\n\n[[grants]]\nroles = [\"b\"]\nnames = [\"y\"]\n\n\
             [[grants]]\nroles = [\"c\"]\nnames = [\"*\"]\n\n[rate_limits.per_principal]\nper_minute = 10\n\n\
             [[auth.tokens]]\nprincipal = {{ id = \"bob\" }}\ntoken = \"${{B}}\"\n\n{SERVERS}"
        ));
        let done = crate::Reconfigured {
            added: vec!["memory".into()],
            removed: vec!["files".into()],
            tools: vec![("team".into(), 1, 0)],
        };
        let mut with_team = next.clone();
        with_team
            .endpoints
            .insert("team".into(), mcp_guard_core::config::EndpointConfig::default());
        assert_eq!(
            changes(&running, &with_team, &done),
            [
                "grants: 2 changed, 1 added",
                "endpoints.team: tools +1 -0",
                "servers: +memory -files",
                "rate_limits changed",
                "auth.tokens: +1 -1",
            ]
        );
        assert!(changes(&running, &running, &crate::Reconfigured::default()).is_empty());
    }
}
