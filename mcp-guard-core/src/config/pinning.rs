//! `[pinning]`: tool definitions pinned in a lock file, hostile text checked.

use serde::Deserialize;

/// `[pinning]`: tool definitions pinned in a lock file, hostile text checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PinningSection {
    /// The lock file (relative to the config file); default `mcp-guard.lock` beside it.
    pub lock_file: Option<String>,
    /// `enforce`, `warn` or `off`; default: `enforce` when the lock file exists, else `off`.
    pub mode: Option<ModeConfig>,
    /// What hostile text in a tool definition does: `enforce` (quarantine, the
    /// default), `warn` or `off`.
    pub hostile_text: Option<ModeConfig>,
    /// Longest tool description accepted, in characters (default 4096).
    pub max_description_chars: Option<usize>,
}

/// A gate mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ModeConfig {
    /// Quarantine.
    Enforce,
    /// Admit and report.
    Warn,
    /// No checks.
    Off,
}
