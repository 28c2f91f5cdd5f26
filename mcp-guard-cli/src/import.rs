//! `mcp-guard import`: turn another client's server list into a gateway config.
//!
//! Secrets are never copied: every environment value and header value becomes a
//! `${NAME}` placeholder, and the command lists the variables to set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde::Deserialize;

/// Where to import from.
#[derive(Subcommand, Debug)]
pub(crate) enum Source {
    /// A Claude Desktop `claude_desktop_config.json` (its `mcpServers` block).
    ClaudeDesktop {
        /// The JSON file.
        file: PathBuf,
        /// Write the config here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaudeConfig {
    #[serde(default)]
    mcp_servers: BTreeMap<String, ClaudeServer>,
}

#[derive(Deserialize)]
struct ClaudeServer {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn server_id(name: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while id.contains("--") {
        id = id.replace("--", "-");
    }
    let id = id.trim_matches('-').to_owned();
    if id.is_empty() { "server".to_owned() } else { id }
}

fn var_name(server: &str, key: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!("{}_{}", clean(server), clean(key))
}

pub(crate) fn convert(json: &str) -> anyhow::Result<(String, Vec<String>)> {
    let parsed: ClaudeConfig = serde_json::from_str(json)
        .context("not a Claude Desktop config (expected an object with mcpServers)")?;
    if parsed.mcp_servers.is_empty() {
        bail!("the file has no mcpServers entries");
    }
    let mut out = String::from(
        "# Imported by `mcp-guard import claude-desktop`. Review before use.\n# No tool is exposed until listed under [endpoints.default.servers.*] (default deny).\n\n",
    );
    out.push_str("[gateway]\nlisten = \"127.0.0.1:8787\"\n\n# Clients authenticate with a token read from the environment:\n# [[auth.tokens]]\n# principal = { id = \"me\", roles = [\"user\"] }\n# token = \"${MCP_GUARD_TOKEN}\"\n\n");
    let mut vars = Vec::new();
    let mut ids = BTreeMap::new();
    for (name, s) in &parsed.mcp_servers {
        let mut id = server_id(name);
        let mut n = 2;
        while ids.contains_key(&id) {
            id = format!("{}-{n}", server_id(name));
            n += 1;
        }
        ids.insert(id.clone(), name.clone());
        let _ = writeln!(out, "# from {}", quote(name));
        let _ = writeln!(out, "[servers.{id}]");
        match (&s.command, &s.url) {
            (Some(cmd), _) => {
                out.push_str("transport = \"stdio\"\n");
                let _ = writeln!(out, "command = {}", quote(cmd));
                let args: Vec<String> = s.args.iter().map(|a| quote(a)).collect();
                let _ = writeln!(out, "args = [{}]", args.join(", "));
                if !s.env.is_empty() {
                    let _ = writeln!(out, "[servers.{id}.env]");
                    for k in s.env.keys() {
                        let v = var_name(&id, k);
                        let _ = writeln!(out, "{} = {}", quote(k), quote(&format!("${{{v}}}")));
                        vars.push(v);
                    }
                }
            }
            (None, Some(url)) => {
                let transport =
                    if s.kind.as_deref() == Some("sse") || url.trim_end_matches('/').ends_with("/sse") {
                        "sse"
                    } else {
                        "http"
                    };
                let _ = writeln!(out, "transport = \"{transport}\"");
                let _ = writeln!(out, "url = {}", quote(url));
                if !s.headers.is_empty() {
                    let _ = writeln!(out, "[servers.{id}.headers]");
                    for k in s.headers.keys() {
                        let v = var_name(&id, k);
                        let _ = writeln!(out, "{} = {}", quote(k), quote(&format!("${{{v}}}")));
                        vars.push(v);
                    }
                }
            }
            (None, None) => bail!("mcpServers.{name}: has neither a command nor a url"),
        }
        out.push('\n');
    }
    out.push_str("[endpoints.default]\ndescription = \"Imported servers\"\n\n");
    for id in ids.keys() {
        let _ = writeln!(
            out,
            "[endpoints.default.servers.{id}]\ntools = []  # list tool names or globs to expose, e.g. [\"read_*\"]\n"
        );
    }
    out.push_str(
        "# Who may call what (default deny):\n# [[grants]]\n# principals = [\"me\"]\n# names = [\"*\"]\n",
    );
    Ok((out, vars))
}

#[allow(clippy::print_stdout, clippy::print_stderr, reason = "command output")]
pub(crate) fn run(source: Source) -> anyhow::Result<()> {
    match source {
        Source::ClaudeDesktop { file, output } => {
            let json =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let (toml, vars) = convert(&json).with_context(|| file.display().to_string())?;
            // Prove the output is a config we accept before handing it over.
            let parsed: mcp_guard_core::config::GatewayConfig =
                toml::from_str(&toml).context("internal: generated config does not parse")?;
            parsed
                .validate()
                .map_err(|e| anyhow::anyhow!("internal: generated config is invalid: {e}"))?;
            match output {
                Some(path) => std::fs::write(&path, &toml)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => out!("{toml}"),
            }
            if !vars.is_empty() {
                eprintln!(
                    "Set these environment variables for the gateway (values were not copied): {}",
                    vars.join(", ")
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_without_copying_secrets() {
        let json = r#"{"mcpServers": {
            "GitHub Server": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"], "env": {"GITHUB_TOKEN": "ghp_secretvalue"}},
            "remote": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer abc123"}},
            "old": {"type": "sse", "url": "https://example.com/sse"}
        }}"#;
        let (toml, vars) = convert(json).unwrap();
        assert!(
            !toml.contains("ghp_secretvalue") && !toml.contains("abc123"),
            "{toml}"
        );
        assert!(toml.contains("[servers.github-server]"));
        assert!(
            toml.contains("\"GITHUB_TOKEN\" = \"${GITHUB-SERVER_GITHUB_TOKEN}\"")
                || toml.contains("${GITHUB_SERVER_GITHUB_TOKEN}"),
            "{toml}"
        );
        assert!(toml.contains("transport = \"sse\""));
        assert_eq!(vars, ["GITHUB_SERVER_GITHUB_TOKEN", "REMOTE_AUTHORIZATION"]);
        let cfg: mcp_guard_core::config::GatewayConfig = toml::from_str(&toml).unwrap();
        cfg.validate().unwrap();
    }

    #[test]
    fn refuses_garbage() {
        assert!(convert("[]").is_err());
        assert!(
            convert("{\"mcpServers\": {}}")
                .unwrap_err()
                .to_string()
                .contains("no mcpServers")
        );
        assert!(
            convert("{\"mcpServers\": {\"x\": {}}}")
                .unwrap_err()
                .to_string()
                .contains("neither a command nor a url")
        );
    }
}
