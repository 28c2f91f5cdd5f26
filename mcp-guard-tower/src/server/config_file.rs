//! Reading a configuration file: TOML parsed into a [`GatewayConfig`] and validated,
//! with errors that name the file, the line and the entry.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use mcp_guard_core::config::GatewayConfig;
use sha2::{Digest as _, Sha256};

use super::ServerError;

/// A configuration file, parsed and validated.
#[derive(Debug)]
#[non_exhaustive]
pub struct LoadedConfig {
    /// The configuration.
    pub config: GatewayConfig,
    /// Warnings, each `file:line: warning: entry: message`.
    pub warnings: Vec<String>,
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex (what reload audit records name).
    pub digest: String,
}

impl LoadedConfig {
    /// The directory relative paths of the configuration are resolved from.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new(""))
    }
}

/// The 1-based line where `entry` (a dotted path such as `servers.github.url`, or
/// `labels[2].tools` for the third `[[labels]]` table) is defined, found by looking for
/// its table header or key.
fn line_of(text: &str, entry: &str) -> Option<usize> {
    // `labels[2]` is the key `labels` and the third table of that array.
    let path: Vec<(&str, Option<usize>)> = entry
        .split('.')
        .map(|s| match s.split_once('[') {
            Some((k, rest)) => (k, rest.split(']').next().and_then(|n| n.parse().ok())),
            None => (s, None),
        })
        .collect();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    // Longest prefix first: `[servers.github]` for `servers.github.url`, then the key.
    for n in (1..=path.len()).rev() {
        let prefix = path[..n].iter().map(|(k, _)| *k).collect::<Vec<_>>().join(".");
        let is_header = |l: &&str| l.starts_with('[') && l.trim_matches(['[', ']']).trim() == prefix;
        let header = match path[n - 1].1 {
            // The n-th table of an array of tables.
            Some(i) => lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.starts_with("[[") && is_header(l))
                .nth(i)
                .map(|(at, _)| at),
            None => lines.iter().position(is_header),
        };
        let Some(at) = header else { continue };
        // Prefer the key line inside the table when the entry goes deeper.
        if let Some((key, _)) = path.get(n) {
            for (j, t) in lines.iter().enumerate().skip(at + 1) {
                if t.starts_with('[') {
                    break;
                }
                if t.split('=')
                    .next()
                    .is_some_and(|k| k.trim().trim_matches('"') == *key)
                {
                    return Some(j + 1);
                }
            }
        }
        return Some(at + 1);
    }
    None
}

/// Reads, parses and validates a configuration file. Every error names the file, the
/// line and the entry (`gateway.toml:12: servers.github.url: ... must be an http://
/// or https:// URL`), as `mcp-guard check` prints it.
///
/// # Errors
/// The file cannot be read, is not TOML of the configuration's shape, or does not
/// validate.
pub fn load_config(path: &Path) -> Result<LoadedConfig, ServerError> {
    load(path).map_err(ServerError)
}

/// Parses and validates `text` as the configuration file at `path` would be (the
/// console checks a proposed file this way before writing it). Errors and the digest
/// are as [`load_config`] gives them for a file holding `text`.
///
/// # Errors
/// `text` is not TOML of the configuration's shape, or does not validate.
pub fn load_config_text(path: &Path, text: &str) -> Result<LoadedConfig, ServerError> {
    parse(path, text, hex_digest(text.as_bytes())).map_err(ServerError)
}

fn hex_digest(bytes: &[u8]) -> String {
    mcp_guard_core::hex::encode(&Sha256::digest(bytes))
}

fn load(path: &Path) -> anyhow::Result<LoadedConfig> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let digest = hex_digest(&bytes);
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    parse(path, &text, digest)
}

fn parse(path: &Path, text: &str, digest: String) -> anyhow::Result<LoadedConfig> {
    let config: GatewayConfig = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .map(|l| format!("{l}:"))
                .unwrap_or_default();
            bail!("{}:{line} {}", path.display(), e.message());
        }
    };
    let locate = |entry: &str| match line_of(text, entry) {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    };
    match config.validate() {
        Ok(w) => Ok(LoadedConfig {
            warnings: w
                .0
                .iter()
                .map(|e| format!("{}: warning: {e}", locate(&e.entry)))
                .collect(),
            config,
            path: path.to_owned(),
            digest,
        }),
        Err(errors) => {
            let lines: Vec<String> = errors
                .0
                .iter()
                .map(|e| format!("{}: {e}", locate(&e.entry)))
                .collect();
            bail!("invalid configuration:\n{}", lines.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::line_of;

    #[test]
    fn finds_tables_and_keys() {
        let text = "[gateway]\nlisten = \"x\"\n\n[servers.github]\ntransport = \"http\"\nurl = \"ftp://x\"\n\n[endpoints.eng.servers.github]\ntools = [\"[a\"]\n";
        assert_eq!(line_of(text, "servers.github.url"), Some(6));
        assert_eq!(line_of(text, "servers.github"), Some(4));
        assert_eq!(line_of(text, "endpoints.eng.servers.github.tools"), Some(9));
        assert_eq!(line_of(text, "gateway.listen"), Some(2));
        assert_eq!(line_of(text, "nothing.here"), None);
    }

    #[test]
    fn finds_the_table_of_an_array_by_its_index() {
        let text = "[[labels]]\nservers = [\"a\"]\n\n[[grants]]\nnames = [\"*\"]\n\n[[labels]]\nlabels = [\"egress\"]\nservers = [\"b\"]\n\n\
                    [[grants]]\nroles = [\"x\"]\nwhen = []\n";
        assert_eq!(line_of(text, "labels[0].servers"), Some(2));
        assert_eq!(line_of(text, "labels[1].servers"), Some(9));
        assert_eq!(line_of(text, "labels[1]"), Some(7));
        assert_eq!(line_of(text, "grants[1].when[0].arg"), Some(13));
        // An index past the last table falls back to the file.
        assert_eq!(line_of(text, "labels[5].servers"), None);
    }
}
