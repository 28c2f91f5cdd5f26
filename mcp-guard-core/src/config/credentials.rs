//! `[credentials]`: the encrypted credential store placeholders resolve from.

use serde::Deserialize;

use super::ConfigError;

/// `[credentials]`: the encrypted credential store `${NAME}` placeholders resolve from
/// (before the environment). Relative paths are relative to the config file's directory.
///
/// ```toml
/// [credentials]
/// store = "mcp-guard-credentials.json"      # default
/// key_file = "mcp-guard-credentials.key"    # default; created 0600 on the first `credentials set`
/// key_env = "MCP_GUARD_CREDENTIALS_KEY"     # default; when set, its base64 key wins over key_file
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CredentialsSection {
    /// The store file (default `mcp-guard-credentials.json`).
    pub store: Option<String>,
    /// The key file (default `mcp-guard-credentials.key`).
    pub key_file: Option<String>,
    /// The environment variable that may hold the key as base64 (default
    /// `MCP_GUARD_CREDENTIALS_KEY`).
    pub key_env: Option<String>,
}

impl CredentialsSection {
    /// The store file name as configured or the default.
    pub fn store_or_default(&self) -> &str {
        self.store.as_deref().unwrap_or("mcp-guard-credentials.json")
    }

    /// The key file name as configured or the default.
    pub fn key_file_or_default(&self) -> &str {
        self.key_file.as_deref().unwrap_or("mcp-guard-credentials.key")
    }

    /// The key variable as configured or the default.
    pub fn key_env_or_default(&self) -> &str {
        self.key_env.as_deref().unwrap_or("MCP_GUARD_CREDENTIALS_KEY")
    }

    pub(super) fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut err = |entry: String, message: String| {
            errors.push(ConfigError { entry, message });
        };
        for (field, value) in [("store", &self.store), ("key_file", &self.key_file)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                err(format!("credentials.{field}"), "must not be empty".into());
            }
        }
        if self.store_or_default() == self.key_file_or_default() {
            err(
                "credentials.key_file".into(),
                "must differ from credentials.store".into(),
            );
        }
        if !is_env_name(self.key_env_or_default()) {
            err(
                "credentials.key_env".into(),
                format!(
                    "{:?} is not an environment variable name ([A-Za-z0-9_])",
                    self.key_env_or_default()
                ),
            );
        }
    }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
