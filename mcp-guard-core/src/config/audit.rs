//! `[audit]`: where every request's record goes.

use serde::Deserialize;

use super::ConfigError;

/// `[audit]`: where every request's record goes.
///
/// The defaults are embedded and fail closed: one SQLite database
/// (`mcp-guard-audit.db` beside the config file), every record durable before the
/// client gets its answer, and a call refused when its record cannot be written.
/// Relative paths are relative to the config file's directory.
///
/// ```toml
/// [audit]
/// sinks = ["sqlite", "jsonl", "tracing"]
/// sqlite_path = "/var/lib/mcp-guard/audit.db"
/// jsonl_dir = "/var/log/mcp-guard"
/// rotate_bytes = 67108864        # 64 MiB
/// rotate_secs = 86400            # 0: never by age
/// keep_files = 90                # 0: keep all
/// mac_key_file = "/etc/mcp-guard/audit.key"   # or mac_key_env = "AUDIT_MAC_KEY"
/// payload_cap_bytes = 65536
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct AuditSection {
    /// Sinks every record goes to (all must succeed). Default `["sqlite"]`.
    pub sinks: Vec<AuditSinkKind>,
    /// The SQLite database. Default `mcp-guard-audit.db` beside the config file.
    pub sqlite_path: Option<std::path::PathBuf>,
    /// The directory of JSON Lines files. Default `audit/` beside the config file.
    pub jsonl_dir: Option<std::path::PathBuf>,
    /// Start a new JSON Lines file after this many bytes.
    pub rotate_bytes: u64,
    /// Start a new JSON Lines file after this many seconds; `0`: never by age.
    pub rotate_secs: u64,
    /// Keep this many JSON Lines files, deleting the oldest; `0`: keep all.
    pub keep_files: usize,
    /// A file holding the key of the per-record HMAC (keep it outside the log).
    pub mac_key_file: Option<std::path::PathBuf>,
    /// An environment variable holding the key of the per-record HMAC.
    pub mac_key_env: Option<String>,
    /// Cap on the recorded (redacted) arguments and on the result, each, in bytes.
    pub payload_cap_bytes: usize,
    /// Record list requests too, not only calls.
    pub record_lists: bool,
    /// Records that may wait for a durable sink's writer before callers wait.
    pub queue: usize,
    /// DANGEROUS: when a record cannot be written, let the call through unrecorded.
    pub dangerously_fail_open: bool,
    /// Receivers every record is streamed to, by name (`[audit.forward.<name>]`).
    pub forward: std::collections::BTreeMap<String, super::ForwardConfig>,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            sinks: vec![AuditSinkKind::Sqlite],
            sqlite_path: None,
            jsonl_dir: None,
            rotate_bytes: 64 * 1024 * 1024,
            rotate_secs: 86_400,
            keep_files: 0,
            mac_key_file: None,
            mac_key_env: None,
            payload_cap_bytes: 64 * 1024,
            record_lists: true,
            queue: 4096,
            dangerously_fail_open: false,
            forward: std::collections::BTreeMap::new(),
        }
    }
}

/// One audit sink kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum AuditSinkKind {
    /// Hash-chained rows in an embedded SQLite database (durable, queryable).
    Sqlite,
    /// Hash-chained JSON Lines files (durable, rotated).
    Jsonl,
    /// One `tracing` event per record (not durable).
    Tracing,
}
impl AuditSection {
    pub(super) fn validate(&self, errors: &mut Vec<ConfigError>, warnings: &mut Vec<ConfigError>) {
        let mut err = |entry: &str, message: &str| {
            errors.push(ConfigError {
                entry: format!("audit.{entry}"),
                message: message.to_owned(),
            });
        };
        if self.sinks.is_empty() {
            err(
                "sinks",
                "name at least one sink: \"sqlite\", \"jsonl\" or \"tracing\"",
            );
        }
        let mut seen = std::collections::HashSet::new();
        if self.sinks.iter().any(|s| !seen.insert(*s)) {
            err("sinks", "a sink is named twice");
        }
        if self.mac_key_file.is_some() && self.mac_key_env.is_some() {
            err("mac_key_env", "give mac_key_file or mac_key_env, not both");
        }
        if self.rotate_bytes < 4096 {
            err("rotate_bytes", "must be at least 4096");
        }
        if self.payload_cap_bytes < 64 {
            err("payload_cap_bytes", "must be at least 64");
        }
        if self.queue == 0 {
            err("queue", "must be at least 1");
        }
        let durable = self
            .sinks
            .iter()
            .any(|s| matches!(s, AuditSinkKind::Sqlite | AuditSinkKind::Jsonl));
        if !self.sinks.is_empty() && !durable {
            warnings.push(ConfigError {
                entry: "audit.sinks".into(),
                message: "no durable sink: records only go to the log output".into(),
            });
        }
        super::validate_forwarders(&self.forward, &self.sinks, errors, warnings);
        if self.dangerously_fail_open {
            warnings.push(ConfigError {
                entry: "audit.dangerously_fail_open".into(),
                message: "calls go through even when their audit record cannot be written".into(),
            });
        }
    }
}
