//! The policy decisions of recorded calls, replayed under a new configuration, and
//! those that would change: what `mcp-guard check --against-audit` prints and the
//! console's Config page shows before a change is applied.
//!
//! A record's decision is what the gateway did: outcome `denied` with a target is a
//! refusal by policy (its `rule` names the grant, or `default deny`); any outcome past
//! the policy (ok, tool error, rate limited, timeout, upstream failures...) is an
//! allowed call. The new decision is the new grants' verdict for the same principal,
//! endpoint, target and recorded (redacted) arguments, and whether the new endpoint
//! selection still exposes the target.
//!
//! Who the principal is: a principal the new configuration defines (`auth.tokens`,
//! `auth.stdio_principal`, `auth.server.users`, `auth.dangerously_allow_anonymous`)
//! gets the roles and attributes written there, so a role taken away in the new file
//! shows; any other principal (a JWT, an issued token) gets the roles and attributes
//! its record carries. A record that carries none (written before roles were
//! recorded) of a principal the configuration does not define is counted as an
//! "unknown principal", never guessed.
//!

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use mcp_guard_core::audit::{AuditQuery, query_database};
use mcp_guard_core::config::{AuditSinkKind, GatewayConfig, PrincipalConfig};
use mcp_guard_core::{
    Action, CallContext, Decision, Operation, Principal, PrincipalKind, Target, TargetKind,
};
use serde_json::{Value, json};

use mcp_guard_core::policy::Pattern;

/// A recorded decision, or the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    allowed: bool,
    /// The deciding rule: a grant, `default deny`, or the selection setting.
    rule: String,
    /// Why, when the rule alone does not say it.
    reason: Option<String>,
}

impl Verdict {
    fn word(&self) -> &'static str {
        if self.allowed { "allowed" } else { "refused" }
    }
}

/// One recorded call, ready to replay.
struct Call {
    seq: u64,
    when: String,
    who: Who,
    recorded_roles: RecordedRoles,
    endpoint: String,
    target: Target,
    requested_name: String,
    arguments: Option<serde_json::Map<String, Value>>,
    before: Verdict,
}

/// Why a record is not replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    /// A list request.
    List,
    /// A session created, expired or revoked.
    Session,
    /// Refused before authentication.
    Unauthenticated,
    /// The name was unknown on the endpoint when recorded (no target): the record
    /// cannot say whether the upstream offered it.
    UnknownName,
    /// Ended before policy decided (shutting down, a gateway error without a rule).
    NotDecided,
    /// Configuration reloads, tool definition changes, audit rotation.
    Other,
    /// A record whose fields are not what the gateway writes.
    Malformed,
}

impl Skip {
    fn key(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Session => "session",
            Self::Unauthenticated => "unauthenticated",
            Self::UnknownName => "unknown_name",
            Self::NotDecided => "not_decided",
            Self::Other => "other",
            Self::Malformed => "malformed",
        }
    }

    const ALL: [Self; 7] = [
        Self::List,
        Self::Session,
        Self::Unauthenticated,
        Self::UnknownName,
        Self::NotDecided,
        Self::Other,
        Self::Malformed,
    ];
}

/// Outcomes written after the policy allowed the call.
const PAST_POLICY: [&str; 7] = [
    "ok",
    "tool_error",
    "rate_limited",
    "timeout",
    "upstream_terminated",
    "upstream_error",
    "cancelled",
];

fn kind_of(s: &str) -> Option<TargetKind> {
    Some(match s {
        "tool" => TargetKind::Tool,
        "prompt" => TargetKind::Prompt,
        "resource" => TargetKind::Resource,
        "resource_template" => TargetKind::ResourceTemplate,
        _ => return None,
    })
}

fn principal_kind(s: &str) -> Option<PrincipalKind> {
    match s {
        "user" => Some(PrincipalKind::User),
        "agent" => Some(PrincipalKind::Agent),
        _ => None,
    }
}

/// Who a record names: `(id, kind, on_behalf_of)`.
type Who = (String, PrincipalKind, Option<String>);
/// Roles and attributes as recorded.
type RecordedRoles = Option<(Vec<String>, BTreeMap<String, String>)>;

/// The principal a record names, with its recorded roles and attributes if any.
fn recorded_principal(principal: &Value) -> Result<(Who, RecordedRoles), Skip> {
    let id = principal
        .get("id")
        .and_then(Value::as_str)
        .ok_or(Skip::Malformed)?;
    let kind = principal
        .get("kind")
        .and_then(Value::as_str)
        .and_then(principal_kind)
        .ok_or(Skip::Malformed)?;
    let on_behalf_of = match principal.get("on_behalf_of") {
        None => None,
        Some(user) => Some(user.as_str().ok_or(Skip::Malformed)?.to_owned()),
    };
    let Some(roles) = principal.get("roles") else {
        return Ok(((id.to_owned(), kind, on_behalf_of), None));
    };
    let roles = roles
        .as_array()
        .ok_or(Skip::Malformed)?
        .iter()
        .map(|role| role.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or(Skip::Malformed)?;
    let attributes = match principal.get("attributes") {
        None => BTreeMap::new(),
        Some(map) => map
            .as_object()
            .ok_or(Skip::Malformed)?
            .iter()
            .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect::<Option<_>>()
            .ok_or(Skip::Malformed)?,
    };
    Ok(((id.to_owned(), kind, on_behalf_of), Some((roles, attributes))))
}

/// The decision a request record shows, from its outcome and rule.
fn recorded_verdict(event: &Value, outcome: &str, rule: Option<&str>) -> Result<Verdict, Skip> {
    // A quarantined tool is refused after the policy allowed it.
    let quarantined = event
        .get("result")
        .and_then(Value::as_str)
        .is_some_and(|r| r.contains("awaits approval"));
    if outcome == "denied" && !quarantined {
        return Ok(Verdict {
            allowed: false,
            rule: rule.unwrap_or("default deny").to_owned(),
            reason: None,
        });
    }
    if outcome == "denied" || PAST_POLICY.contains(&outcome) || (outcome == "gateway_error" && rule.is_some())
    {
        return Ok(Verdict {
            allowed: true,
            rule: rule.unwrap_or("-").to_owned(),
            reason: None,
        });
    }
    Err(if outcome == "gateway_error" {
        Skip::NotDecided
    } else {
        Skip::Malformed
    })
}

/// Reads one record's event into a call to replay, or says why it is skipped.
fn classify(seq: u64, event: &Value) -> Result<Call, Skip> {
    let field = |k: &str| event.get(k).and_then(Value::as_str);
    let when = field("started_at").ok_or(Skip::Malformed)?;
    mcp_guard_core::time::parse_rfc3339(when).ok_or(Skip::Malformed)?;
    match field("type") {
        Some("request") => {}
        Some("session_created" | "session_expired" | "session_revoked") => return Err(Skip::Session),
        Some("authentication_failed") => return Err(Skip::Unauthenticated),
        Some(_) => return Err(Skip::Other),
        None => return Err(Skip::Malformed),
    }
    match field("action") {
        Some("call") => {}
        Some("list") => return Err(Skip::List),
        _ => return Err(Skip::Malformed),
    }
    let outcome = field("outcome").ok_or(Skip::Malformed)?;
    if outcome == "unauthenticated" {
        return Err(Skip::Unauthenticated);
    }
    let (who, recorded_roles) = recorded_principal(event.get("principal").ok_or(Skip::Malformed)?)?;
    let endpoint = field("endpoint").ok_or(Skip::Malformed)?;
    let Some(target) = event.get("target") else {
        return Err(if outcome == "denied" {
            Skip::UnknownName
        } else {
            Skip::NotDecided
        });
    };
    let server = target
        .get("server")
        .and_then(Value::as_str)
        .ok_or(Skip::Malformed)?;
    let name = target
        .get("name")
        .and_then(Value::as_str)
        .ok_or(Skip::Malformed)?;
    let kind = target
        .get("kind")
        .and_then(Value::as_str)
        .and_then(kind_of)
        .ok_or(Skip::Malformed)?;
    let before = recorded_verdict(event, outcome, field("rule"))?;
    let arguments = match event.get("arguments") {
        Some(Value::Object(m)) => Some(m.clone()),
        _ => None,
    };
    Ok(Call {
        seq,
        when: when.to_owned(),
        who,
        recorded_roles,
        endpoint: endpoint.to_owned(),
        target: Target::new(server, name, kind),
        requested_name: field("requested_name").unwrap_or(name).to_owned(),
        arguments,
        before,
    })
}

/// The principals the configuration defines, with the setting that defines each.
fn configured_principals(config: &GatewayConfig) -> Vec<(&'static str, &PrincipalConfig)> {
    let mut out: Vec<(&'static str, &PrincipalConfig)> = config
        .auth
        .tokens
        .iter()
        .map(|t| ("auth.tokens", &t.principal))
        .collect();
    if let Some(p) = &config.auth.stdio_principal {
        out.push(("auth.stdio_principal", p));
    }
    if let Some(p) = &config.auth.dangerously_allow_anonymous {
        out.push(("auth.dangerously_allow_anonymous", p));
    }
    if let Some(server) = &config.auth.server {
        out.extend(server.users.iter().map(|u| ("auth.server.users", u)));
    }
    out
}

/// Who a recorded principal is under the new configuration: the principal and where
/// its roles come from, or why it cannot be told.
fn resolve(
    defined: &[(&'static str, &PrincipalConfig)],
    call: &Call,
    config_name: &str,
) -> Result<(Principal, String), String> {
    let (id, kind, on_behalf_of) = &call.who;
    let matching: Vec<_> = defined
        .iter()
        .filter(|(_, p)| p.id == *id && p.kind == *kind)
        .collect();
    if let Some((setting, first)) = matching.first() {
        if matching
            .iter()
            .any(|(_, p)| p.roles != first.roles || p.attributes != first.attributes)
        {
            return Err(format!(
                "unknown principal ({} entries in {config_name} with different roles or attributes)",
                matching.len()
            ));
        }
        let mut p = super::principal(first);
        if let Some(u) = on_behalf_of {
            p = p.acting_for(u.clone());
        }
        return Ok((p, format!("roles from {setting} in {config_name}")));
    }
    let Some((roles, attributes)) = &call.recorded_roles else {
        return Err("unknown principal".to_owned());
    };
    let mut p = Principal::new(id.clone(), *kind).with_roles(roles.iter().cloned());
    if let Some(u) = on_behalf_of {
        p = p.acting_for(u.clone());
    }
    for (k, v) in attributes {
        p = p.with_attribute(k.clone(), v.clone());
    }
    Ok((
        p,
        "roles as recorded (not defined in the configuration)".to_owned(),
    ))
}

fn rule_of(d: &Decision) -> String {
    d.rule()
        .map_or_else(|| "default deny".to_owned(), ToOwned::to_owned)
}

/// The new decision for a recorded call, or `None` when its principal is unknown.
fn decide(
    config: &GatewayConfig,
    policy: &mcp_guard_core::GrantPolicy,
    principal: Option<Principal>,
    call: &Call,
) -> Option<Verdict> {
    let t = &call.target;
    let exp = exposure(config, &call.endpoint, &t.server, t.kind, &t.name);
    let decision = principal.map(|p| {
        let ctx = CallContext::new(Arc::new(p), call.endpoint.as_str());
        let op = Operation::new(Action::Call, Some(t.clone()), call.requested_name.as_str())
            .with_arguments(call.arguments.clone());
        policy.decide(&op, &ctx)
    });
    if !exp.exposed {
        let grants = match &decision {
            Some(d) if d.is_allow() => format!(" (the grants would allow it by {:?})", rule_of(d)),
            _ => String::new(),
        };
        return Some(Verdict {
            allowed: false,
            rule: exp.setting,
            reason: Some(format!(
                "not exposed: {}{grants}",
                exp.why.strip_prefix("no: ").unwrap_or(&exp.why)
            )),
        });
    }
    let d = decision?;
    // The dry run has no session history: flow rules judge as for a fresh session.
    Some(Verdict {
        allowed: d.is_allow(),
        rule: rule_of(&d),
        reason: matches!(d, Decision::NeedsApproval(_))
            .then(|| "only after a person's approval (approval = \"required\")".to_owned()),
    })
}

/// The trail the new configuration's `[audit]` names: its SQLite database if it has
/// one, else its JSON Lines directory.
fn default_trail(config: &GatewayConfig, base: &Path) -> anyhow::Result<PathBuf> {
    let a = &config.audit;
    if a.sinks.contains(&AuditSinkKind::Sqlite) {
        return Ok(base.join(
            a.sqlite_path
                .as_deref()
                .unwrap_or(Path::new("mcp-guard-audit.db")),
        ));
    }
    if a.sinks.contains(&AuditSinkKind::Jsonl) {
        return Ok(base.join(a.jsonl_dir.as_deref().unwrap_or(Path::new("audit"))));
    }
    bail!(
        "the configuration's [audit] names no durable sink (sqlite or jsonl): give the trail with --audit PATH"
    )
}

/// Records as `(seq, event)`.
type Records = Vec<(u64, Value)>;

/// Every record of a trail as `(seq, event)`, and notes on what was left out.
fn read_trail(path: &Path, since: Option<SystemTime>) -> anyhow::Result<(Records, Vec<String>)> {
    if !path.exists() {
        bail!("{}: no such file or directory (the audit trail)", path.display());
    }
    if is_sqlite(path) {
        let mut q = AuditQuery::default();
        q.since = since;
        let rows = query_database(path, &q)
            .with_context(|| format!("{}: not a readable audit database", path.display()))?;
        return Ok((rows.into_iter().map(|r| (r.seq, r.event)).collect(), Vec::new()));
    }
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("{}: cannot list", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("audit-")?.strip_suffix(".jsonl"))
                    .is_some_and(|seq| seq.parse::<u64>().is_ok())
            })
            .collect();
        // The names carry the first seq, zero-padded: name order is chain order.
        files.sort();
        if files.is_empty() {
            bail!("{}: no audit-*.jsonl files in this directory", path.display());
        }
        files
    } else {
        vec![path.to_owned()]
    };
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let count = files.len();
    for (i, file) in files.iter().enumerate() {
        let mut bytes = Vec::new();
        std::fs::File::open(file)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .with_context(|| format!("{}: cannot read", file.display()))?;
        let ends_complete = bytes.last().is_none_or(|&b| b == b'\n');
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let n = lines.len();
        for (j, line) in lines.into_iter().enumerate() {
            if line.is_empty() {
                continue;
            }
            let line_no = j + 1;
            let torn = j + 1 == n && !ends_complete;
            let parsed = std::str::from_utf8(line)
                .map_err(|_| "not UTF-8".to_owned())
                .and_then(|t| serde_json::from_str::<Value>(t).map_err(|e| e.to_string()));
            let record = match parsed {
                Ok(v) => v,
                Err(_) if torn && i + 1 == count => {
                    notes.push(format!(
                        "{}: line {line_no}: torn last line ({} bytes without a newline, a write cut short) skipped",
                        file.display(),
                        line.len()
                    ));
                    continue;
                }
                Err(e) => bail!(
                    "{}: line {line_no}: not an audit record ({e}); `mcp-guard audit verify` names every damaged record",
                    file.display()
                ),
            };
            let (Some(seq), Some(event)) = (record.get("seq").and_then(Value::as_u64), record.get("event"))
            else {
                bail!(
                    "{}: line {line_no}: not an audit record (no seq or event)",
                    file.display()
                );
            };
            // Records before the window are left out, as the SQLite query does; one
            // whose time cannot be read is kept and counted as malformed.
            if !before_since(since, event) {
                out.push((seq, event.clone()));
            }
        }
    }
    Ok((out, notes))
}

fn before_since(since: Option<SystemTime>, event: &Value) -> bool {
    let started = event
        .get("started_at")
        .and_then(Value::as_str)
        .and_then(mcp_guard_core::time::parse_rfc3339);
    matches!((since, started), (Some(since), Some(t)) if t < since)
}

/// Tally of one run.
#[derive(Default)]
struct Summary {
    records: usize,
    replayed: usize,
    allowed_to_refused: usize,
    refused_to_allowed: usize,
    unknown_principal: usize,
    skipped: BTreeMap<Skip, usize>,
}

/// Whether an endpoint's selection exposes a target, and the setting that decides.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Exposure {
    /// Exposed (if the upstream offers it).
    pub exposed: bool,
    /// The configuration entry that decides (`endpoints.main.servers.github.tools`).
    pub setting: String,
    /// Why, in words.
    pub why: String,
}

/// Whether `endpoint`'s selection exposes `name` (of `kind`) of `server`, and why (or
/// why not).
pub fn exposure(
    config: &GatewayConfig,
    endpoint: &str,
    server: &str,
    kind: TargetKind,
    name: &str,
) -> Exposure {
    let no = |setting: String, why: String| Exposure {
        exposed: false,
        setting,
        why,
    };
    let Some(ep) = config.endpoints.get(endpoint) else {
        return no(
            "endpoints".to_owned(),
            format!("there is no endpoint {endpoint:?} in the configuration"),
        );
    };
    let Some(sel) = ep.servers.get(server) else {
        return no(
            format!("endpoints.{endpoint}.servers"),
            format!("endpoint {endpoint} does not federate {server}"),
        );
    };
    if config.servers.get(server).is_some_and(|s| !s.enabled()) {
        return no(
            format!("servers.{server}.enabled"),
            format!("server {server} is disabled (servers.{server}.enabled)"),
        );
    }
    if !sel.enabled {
        let setting = format!("endpoints.{endpoint}.servers.{server}.enabled");
        return no(
            setting.clone(),
            format!("server {server} is disabled on this endpoint ({setting})"),
        );
    }
    let (field, globs) = match kind {
        TargetKind::Prompt => ("prompts", &sel.prompts),
        TargetKind::Resource | TargetKind::ResourceTemplate => ("resources", &sel.resources),
        _ => ("tools", &sel.tools),
    };
    if field == "tools" && sel.disabled_tools.iter().any(|t| t == name) {
        let setting = format!("endpoints.{endpoint}.servers.{server}.disabled_tools");
        return no(
            setting.clone(),
            format!("no: {name:?} is switched off on this endpoint ({setting})"),
        );
    }
    let entry = format!("endpoints.{endpoint}.servers.{server}.{field}");
    match globs
        .iter()
        .find(|g| Pattern::new(g).is_ok_and(|p| p.is_match(name)))
    {
        Some(g) => Exposure {
            exposed: true,
            why: format!("yes, by {g:?} in {entry} (if the upstream offers it)"),
            setting: entry,
        },
        None => no(
            entry.clone(),
            format!(
                "no: nothing in {entry} matches {name:?}, so the endpoint answers as for an unknown name"
            ),
        ),
    }
}

/// What replaying a trail under a configuration found.
#[non_exhaustive]
pub struct ReplayReport {
    /// The trail read.
    pub trail: PathBuf,
    /// Only records started at or after this were read.
    pub since: Option<SystemTime>,
    /// What was left out of the trail and why (a torn last line).
    pub notes: Vec<String>,
    /// Per principal, where its roles came from (or why it is unknown).
    principals: BTreeMap<String, BTreeSet<String>>,
    changes: Vec<(Call, Verdict)>,
    sum: Summary,
}

impl std::fmt::Debug for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayReport")
            .field("trail", &self.trail)
            .field("changed", &self.changes.len())
            .finish_non_exhaustive()
    }
}

impl ReplayReport {
    /// How many recorded decisions would change.
    pub fn changed(&self) -> usize {
        self.changes.len()
    }

    /// The report as JSON (what `check --against-audit --json` prints); `config`
    /// names the configuration replayed under.
    pub fn to_json(&self, config: &str) -> Value {
        let sum = &self.sum;
        let changes: Vec<Value> = self
            .changes
            .iter()
            .map(|(c, after)| {
                json!({
                    "seq": c.seq,
                    "when": c.when,
                    "principal": {"id": c.who.0, "kind": c.who.1.to_string(), "on_behalf_of": c.who.2},
                    "endpoint": c.endpoint,
                    "server": &*c.target.server,
                    "tool": &*c.target.name,
                    "kind": c.target.kind.to_string(),
                    "requested_name": c.requested_name,
                    "before": {"decision": c.before.word(), "rule": c.before.rule},
                    "after": {"decision": after.word(), "rule": after.rule, "reason": after.reason},
                })
            })
            .collect();
        let skipped: serde_json::Map<String, Value> = Skip::ALL
            .iter()
            .map(|s| {
                (
                    s.key().to_owned(),
                    sum.skipped.get(s).copied().unwrap_or(0).into(),
                )
            })
            .collect();
        let principals: serde_json::Map<String, Value> = self
            .principals
            .iter()
            .map(|(id, sources)| {
                (
                    id.clone(),
                    sources.iter().cloned().collect::<Vec<_>>().join("; ").into(),
                )
            })
            .collect();
        json!({
            "config": config,
            "trail": self.trail.display().to_string(),
            "since": self.since.map(mcp_guard_core::time::format_rfc3339),
            "changes": changes,
            "principals": principals,
            "notes": self.notes,
            "summary": {
                "records": sum.records,
                "replayed": sum.replayed,
                "unchanged": sum.replayed - self.changes.len(),
                "changed": self.changes.len(),
                "allowed_to_refused": sum.allowed_to_refused,
                "refused_to_allowed": sum.refused_to_allowed,
                "unknown_principal": sum.unknown_principal,
                "skipped": skipped,
            },
        })
    }

    /// The report as text (what `check --against-audit` prints); `config` names the
    /// configuration replayed under.
    pub fn to_text(&self, config: &str) -> String {
        use std::fmt::Write as _;
        let sum = &self.sum;
        let mut out = String::new();
        let since_text = self.since.map(mcp_guard_core::time::format_rfc3339);
        let _ = writeln!(
            out,
            "replaying {} under {config}{}",
            self.trail.display(),
            since_text.map_or_else(String::new, |t| format!(" (records since {t})"))
        );
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        for (c, after) in &self.changes {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{} -> {}  {}  seq {}",
                c.before.word(),
                after.word(),
                c.when,
                c.seq
            );
            let (id, kind, obo) = &c.who;
            let obo = obo
                .as_ref()
                .map_or_else(String::new, |u| format!(", on behalf of {u}"));
            let _ = writeln!(out, "  who:      {id} ({kind}{obo})");
            let _ = writeln!(out, "  endpoint: {}", c.endpoint);
            let _ = writeln!(
                out,
                "  {:<9} {}/{} (requested as {})",
                format!("{}:", c.target.kind),
                c.target.server,
                c.target.name,
                c.requested_name
            );
            let _ = writeln!(out, "  before:   {} by {}", c.before.word(), c.before.rule);
            let _ = writeln!(out, "  after:    {} by {}", after.word(), after.rule);
            if let Some(r) = &after.reason {
                let _ = writeln!(out, "            {r}");
            }
        }
        if !self.changes.is_empty() || !self.principals.is_empty() {
            let _ = writeln!(out);
        }
        for (id, sources) in &self.principals {
            let _ = writeln!(
                out,
                "principal {id}: {}",
                sources.iter().cloned().collect::<Vec<_>>().join("; ")
            );
        }
        let skipped = Skip::ALL
            .iter()
            .filter_map(|s| {
                sum.skipped
                    .get(s)
                    .map(|n| format!("{n} {}", s.key().replace('_', " ")))
            })
            .collect::<Vec<_>>();
        let skipped_total: usize = sum.skipped.values().sum();
        let n_changed = self.changes.len();
        let _ = writeln!(
            out,
            "{} record(s): {} replayed, {} unchanged, {n_changed} changed ({} allowed -> refused, {} refused -> allowed); {} unknown principal; {skipped_total} skipped{}",
            sum.records,
            sum.replayed,
            sum.replayed - n_changed,
            sum.allowed_to_refused,
            sum.refused_to_allowed,
            sum.unknown_principal,
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", skipped.join(", "))
            }
        );
        out
    }
}

/// The trail a configuration's `[audit]` names (its SQLite database if it has one,
/// else its JSON Lines directory), relative to `base`.
///
/// # Errors
/// No durable sink is configured.
pub fn default_audit_trail(config: &GatewayConfig, base: &Path) -> Result<PathBuf, super::ServerError> {
    default_trail(config, base).map_err(super::ServerError)
}

/// Replays the policy decision of every recorded call in `trail` (a SQLite audit
/// database, a JSON Lines file or directory) under `config`, started at or after
/// `since`; `config_name` names the configuration in the report's words ("roles from
/// auth.tokens in gateway.toml").
///
/// # Errors
/// The grants do not compile, or the trail cannot be read.
pub fn replay(
    config: &GatewayConfig,
    config_name: &str,
    trail: &Path,
    since: Option<SystemTime>,
) -> Result<ReplayReport, super::ServerError> {
    replay_inner(config, config_name, trail, since).map_err(super::ServerError)
}

fn replay_inner(
    config: &GatewayConfig,
    config_name: &str,
    trail: &Path,
    since: Option<SystemTime>,
) -> anyhow::Result<ReplayReport> {
    let policy = super::stack::policy(config)?;
    let (records, notes) = read_trail(trail, since)?;
    let defined = configured_principals(config);
    let mut sum = Summary::default();
    let mut changes = Vec::new();
    let mut principals: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (seq, event) in &records {
        sum.records += 1;
        let call = match classify(*seq, event) {
            Ok(c) => c,
            Err(skip) => {
                *sum.skipped.entry(skip).or_default() += 1;
                continue;
            }
        };
        let principal = match resolve(&defined, &call, config_name) {
            Ok((p, source)) => {
                principals.entry(call.who.0.clone()).or_default().insert(source);
                Some(p)
            }
            Err(why) => {
                principals.entry(call.who.0.clone()).or_default().insert(why);
                None
            }
        };
        let Some(after) = decide(config, &policy, principal, &call) else {
            sum.unknown_principal += 1;
            continue;
        };
        sum.replayed += 1;
        if after.allowed != call.before.allowed {
            if after.allowed {
                sum.refused_to_allowed += 1;
            } else {
                sum.allowed_to_refused += 1;
            }
            changes.push((call, after));
        }
    }
    Ok(ReplayReport {
        trail: trail.to_owned(),
        since,
        notes,
        principals,
        changes,
        sum,
    })
}

/// The text report of replaying the trail at `trail` under `config` (the console's
/// Config page).
pub(crate) fn replay_text(config: &GatewayConfig, _base: &Path, trail: &Path) -> anyhow::Result<String> {
    let r = replay_inner(config, "the proposed file", trail, None)?;
    Ok(r.to_text("the proposed file"))
}

/// Whether `path` is a SQLite database (by its header).
pub(crate) fn is_sqlite(path: &Path) -> bool {
    let mut magic = [0u8; 16];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && &magic == b"SQLite format 3\0"
}
