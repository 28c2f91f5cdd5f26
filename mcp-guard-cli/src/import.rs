//! `mcp-guard import`: turn another tool's server list into a gateway config.
//!
//! Five formats are read: Claude Desktop's `claude_desktop_config.json`, Cursor's and
//! VS Code's `mcp.json`, a single custom-server JSON block, and the official MCP
//! Registry's `server.json`. Each is parsed into one model ([`Imported`]) and written
//! by one writer, so every format follows the same rules:
//!
//! - **Secrets are never copied.** Every environment value and header value becomes a
//!   `${NAME}` placeholder unless the source marks it as not secret and gives it (the
//!   Registry's `isSecret: false` with a value). Placeholders the source already uses
//!   (`${input:id}`, `${env:NAME}`, `${NAME}`, the Registry's `{name}` variables) keep
//!   their names. The command lists the variables to set.
//! - **Arguments cannot carry secrets**: the gateway fills placeholders only in
//!   `env` and `headers`. A server whose arguments need a secret, or a value the gateway
//!   cannot know (`${workspaceFolder}`), is written commented out with the reason, so
//!   nothing is dropped silently and nothing half-working is switched on.
//! - **Nothing is exposed**: every server joins the `default` endpoint with an empty
//!   tool list (default deny); grants are left as a commented example.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::Value;

/// Where to import from.
#[derive(Subcommand, Debug)]
pub(crate) enum Source {
    /// A Claude Desktop `claude_desktop_config.json` (its `mcpServers` block).
    ClaudeDesktop(Files),
    /// A Cursor `mcp.json` (`mcpServers`, `${env:NAME}` placeholders).
    Cursor(Files),
    /// A VS Code `mcp.json` (`servers` and `inputs`), or a `settings.json` with an `mcp` block.
    Vscode(Files),
    /// One custom-server JSON block: `name`, `description`, `transport` (stdio, sse or
    /// http), `command`/`args` or `url`, `env`, `headers` with `${NAME}` placeholders.
    Server(Files),
    /// The official MCP Registry's `server.json`: `packages` become stdio commands,
    /// `remotes` HTTP servers.
    Registry(Files),
}

/// The input file and where the config goes.
#[derive(Args, Debug)]
pub(crate) struct Files {
    /// The JSON file.
    file: PathBuf,
    /// Write the config here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// One server as the writer sees it, whatever format it came from.
#[derive(Debug)]
struct Imported {
    /// The name the source gave it.
    name: String,
    description: Option<String>,
    transport: Transport,
    /// Why it cannot be switched on as imported (it is written commented out).
    problem: Option<String>,
    /// Remarks written above the entry (e.g. an `envFile` that was not read).
    notes: Vec<String>,
    /// Switched off in the source file.
    disabled: bool,
}

#[derive(Debug)]
enum Transport {
    Stdio {
        command: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<String>,
    },
    Http {
        sse: bool,
        url: String,
        headers: Vec<(String, String)>,
    },
}

/// How a source writes placeholders inside values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    /// No placeholder syntax: every value is literal.
    Claude,
    /// `${env:NAME}`, plus editor variables such as `${workspaceFolder}`.
    Cursor,
    /// `${input:id}`, `${env:NAME}`, plus editor variables.
    Vscode,
    /// `${NAME}`.
    Plain,
}

/// What a placeholder in the source stands for.
enum Reference {
    /// A value the gateway can be given: `${NAME}`.
    Var(String),
    /// A value only the source tool knows (an editor variable).
    Unknown(String),
}

fn upper_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn var_name(server: &str, key: &str) -> String {
    format!("{}_{}", upper_name(server), upper_name(key))
}

/// Reads one `${...}` body in a dialect.
fn reference(dialect: Dialect, body: &str) -> Reference {
    match dialect {
        Dialect::Claude => Reference::Unknown(format!("${{{body}}}")),
        Dialect::Plain => Reference::Var(upper_name(body)),
        Dialect::Cursor | Dialect::Vscode => {
            if let Some(name) = body.strip_prefix("env:") {
                Reference::Var(upper_name(name))
            } else if dialect == Dialect::Vscode
                && let Some(id) = body.strip_prefix("input:")
            {
                Reference::Var(upper_name(id))
            } else {
                Reference::Unknown(format!("${{{body}}}"))
            }
        }
    }
}

/// Splits a value into literal text and `${...}` references.
fn pieces(dialect: Dialect, value: &str) -> Vec<Result<String, Reference>> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else { break };
        if start > 0 {
            out.push(Ok(rest[..start].to_owned()));
        }
        out.push(Err(reference(dialect, &rest[start + 2..start + len])));
        rest = &rest[start + len + 1..];
    }
    if !rest.is_empty() {
        out.push(Ok(rest.to_owned()));
    }
    out
}

/// Rewrites an `env` or header value: references become `${NAME}` and the literal text
/// around them stays (`Bearer ${TOKEN}`); a value with no reference at all is taken for
/// a secret and replaced whole by `${<SERVER>_<KEY>}`.
fn rewrite_secret(dialect: Dialect, server: &str, key: &str, value: &str) -> Result<String, String> {
    let parts = if dialect == Dialect::Claude {
        vec![Ok(value.to_owned())]
    } else {
        pieces(dialect, value)
    };
    if parts.iter().all(Result::is_ok) {
        return Ok(format!("${{{}}}", var_name(server, key)));
    }
    let mut template = String::new();
    for p in parts {
        match p {
            Ok(text) => template.push_str(&text),
            Err(Reference::Var(v)) => {
                let _ = write!(template, "${{{v}}}");
            }
            Err(Reference::Unknown(what)) => {
                return Err(format!(
                    "{key} uses {what}, which only the original tool can fill in"
                ));
            }
        }
    }
    Ok(template)
}

/// Checks that an argument needs nothing the gateway cannot put in an argument.
fn literal_arg(dialect: Dialect, arg: &str) -> Result<String, String> {
    if dialect == Dialect::Claude {
        return Ok(arg.to_owned());
    }
    let mut out = String::new();
    for p in pieces(dialect, arg) {
        match p {
            Ok(text) => out.push_str(&text),
            Err(Reference::Var(v)) => {
                return Err(format!(
                    "argument {arg:?} needs ${{{v}}}, but the gateway fills placeholders only in env and headers; \
                     pass it to the server through an environment variable instead"
                ));
            }
            Err(Reference::Unknown(what)) => {
                return Err(format!(
                    "argument {arg:?} uses {what}, which only the original tool can fill in; give the value itself"
                ));
            }
        }
    }
    Ok(out)
}

/// The `mcpServers` / `servers` entry shared by Claude Desktop, Cursor and VS Code.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientServer {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    env_file: Option<String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    disabled: bool,
}

/// The rewritten value, or (for the commented-out entry) the original with the first
/// problem recorded.
fn keep(problem: &mut Option<String>, original: &str, r: Result<String, String>) -> String {
    r.unwrap_or_else(|e| {
        problem.get_or_insert(e);
        original.to_owned()
    })
}

fn from_client_server(dialect: Dialect, name: &str, s: ClientServer) -> anyhow::Result<Imported> {
    let id = server_id(name);
    let mut problem = None;
    let mut notes = Vec::new();
    if let Some(f) = &s.env_file {
        notes.push(format!(
            "envFile {f:?} was not read: set its variables with `mcp-guard credentials set` or in the gateway's environment"
        ));
    }
    let kind = s.kind.as_deref().map(str::to_ascii_lowercase);
    let transport = match (&s.command, &s.url) {
        (Some(cmd), _) if kind.as_deref().is_none_or(|k| k == "stdio") => {
            let command = keep(&mut problem, cmd, literal_arg(dialect, cmd));
            let args = s
                .args
                .iter()
                .map(|a| keep(&mut problem, a, literal_arg(dialect, a)))
                .collect();
            let cwd = s
                .cwd
                .as_deref()
                .map(|c| keep(&mut problem, c, literal_arg(dialect, c)));
            let mut env = Vec::new();
            for (k, v) in &s.env {
                match rewrite_secret(dialect, &id, k, v) {
                    Ok(r) => env.push((k.clone(), r)),
                    Err(e) => {
                        problem.get_or_insert(e);
                    }
                }
            }
            Transport::Stdio {
                command,
                args,
                env,
                cwd,
            }
        }
        (_, Some(url)) => {
            let sse = match kind.as_deref() {
                Some("sse") => true,
                Some("http" | "streamable-http" | "streamablehttp") => false,
                Some(other) => bail!("{name}: unknown type {other:?} (expected stdio, http or sse)"),
                None => url.trim_end_matches('/').ends_with("/sse"),
            };
            let url = keep(&mut problem, url, literal_arg(dialect, url));
            let mut headers = Vec::new();
            for (k, v) in &s.headers {
                match rewrite_secret(dialect, &id, k, v) {
                    Ok(r) => headers.push((k.clone(), r)),
                    Err(e) => {
                        problem.get_or_insert(e);
                    }
                }
            }
            Transport::Http { sse, url, headers }
        }
        (Some(_), None) => bail!("{name}: type {:?} needs a url", s.kind.unwrap_or_default()),
        (None, None) => bail!("{name}: has neither a command nor a url"),
    };
    Ok(Imported {
        name: name.to_owned(),
        description: s.description,
        transport,
        problem,
        notes,
        disabled: s.disabled,
    })
}

/// Parses JSON as the editors write it: comments and trailing commas allowed.
fn parse(json: &str) -> anyhow::Result<Value> {
    jsonc_parser::parse_to_serde_value::<Value>(json, &jsonc_parser::ParseOptions::default())
        .map_err(|e| anyhow::anyhow!("not JSON: {e}"))
}

fn client_file(json: &str, dialect: Dialect) -> anyhow::Result<Vec<Imported>> {
    let doc = parse(json)?;
    let servers = match dialect {
        Dialect::Vscode => doc
            .get("servers")
            .or_else(|| doc.get("mcp").and_then(|m| m.get("servers")))
            .context("not a VS Code mcp.json (expected an object with servers, or mcp.servers)")?,
        _ => doc.get("mcpServers").context(match dialect {
            Dialect::Cursor => "not a Cursor mcp.json (expected an object with mcpServers)",
            _ => "not a Claude Desktop config (expected an object with mcpServers)",
        })?,
    };
    let servers: BTreeMap<String, ClientServer> = serde_json::from_value(servers.clone())
        .context("a server entry is not an object of the expected shape")?;
    if servers.is_empty() {
        bail!("the file lists no servers");
    }
    servers
        .into_iter()
        .map(|(name, s)| from_client_server(dialect, &name, s))
        .collect()
}

/// A single custom-server block, as catalogues and gateways hand them out.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomServer {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    transport: Option<String>,
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
}

fn custom_server(json: &str) -> anyhow::Result<Vec<Imported>> {
    let c: CustomServer = serde_json::from_value(parse(json)?)
        .context("not a custom-server block (expected an object with name, transport and command or url)")?;
    if c.name.trim().is_empty() {
        bail!("name: must not be empty");
    }
    let s = ClientServer {
        command: c.command,
        args: c.args,
        env: c.env,
        env_file: None,
        cwd: None,
        url: c.url,
        headers: c.headers,
        kind: c.transport,
        description: c.description,
        disabled: false,
    };
    Ok(vec![from_client_server(Dialect::Plain, &c.name, s)?])
}

/// The official MCP Registry's `server.json` (schema 2025-09-29 and later: camelCase).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryServer {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    packages: Vec<RegistryPackage>,
    #[serde(default)]
    remotes: Vec<RegistryRemote>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryPackage {
    registry_type: String,
    identifier: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    runtime_hint: Option<String>,
    #[serde(default)]
    transport: Option<RegistryTransport>,
    #[serde(default)]
    runtime_arguments: Vec<RegistryArgument>,
    #[serde(default)]
    package_arguments: Vec<RegistryArgument>,
    #[serde(default)]
    environment_variables: Vec<RegistryInput>,
}

#[derive(Deserialize)]
struct RegistryTransport {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryArgument {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_hint: Option<String>,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    is_required: bool,
    #[serde(default)]
    variables: BTreeMap<String, RegistryInput>,
}

/// An environment variable, a header, or a variable inside a value.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RegistryInput {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    is_secret: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryRemote {
    #[serde(rename = "type")]
    kind: String,
    url: String,
    #[serde(default)]
    headers: Vec<RegistryInput>,
    #[serde(default)]
    variables: BTreeMap<String, RegistryInput>,
}

/// Fills a Registry value's `{variable}`s: a secret or a value without a default
/// becomes `${NAME}` (where the gateway can fill it), others take their default.
/// Returns the text and whether any placeholder was needed.
fn fill_registry_vars(value: &str, vars: &BTreeMap<String, RegistryInput>) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut needed = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else { break };
        let name = &rest[start + 1..start + len];
        out.push_str(&rest[..start]);
        let given = vars
            .get(name)
            .filter(|v| !v.is_secret)
            .and_then(|v| v.value.clone().or(v.default.clone()));
        if let Some(v) = given {
            out.push_str(&v);
        } else {
            let n = upper_name(name);
            let _ = write!(out, "${{{n}}}");
            needed.push(n);
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    (out, needed)
}

fn registry_command(p: &RegistryPackage) -> Result<(String, Vec<String>), String> {
    let versioned = |sep: &str| match &p.version {
        Some(v) => format!("{}{sep}{v}", p.identifier),
        None => p.identifier.clone(),
    };
    let hint = p.runtime_hint.as_deref();
    Ok(match p.registry_type.as_str() {
        "npm" => (
            hint.unwrap_or("npx").to_owned(),
            vec!["-y".to_owned(), versioned("@")],
        ),
        "pypi" => (hint.unwrap_or("uvx").to_owned(), vec![versioned("==")]),
        "oci" => {
            let image = if p.identifier.contains(':') || p.version.is_none() {
                p.identifier.clone()
            } else {
                versioned(":")
            };
            (hint.unwrap_or("docker").to_owned(), vec![image])
        }
        "nuget" => (
            hint.unwrap_or("dnx").to_owned(),
            vec![versioned("@"), "--yes".to_owned()],
        ),
        other => {
            return Err(format!(
                "packages of type {other:?} cannot be started as a command"
            ));
        }
    })
}

/// Turns Registry arguments into literal arguments; secrets found in them move into
/// `env` when the argument is docker's `-e NAME=value` (docker then reads the variable
/// from its own environment), and are refused otherwise.
fn registry_args(list: &[RegistryArgument], env: &mut Vec<(String, String)>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for a in list {
        let raw = a.value.clone().or(a.default.clone());
        if a.kind == "named" {
            let name = a.name.clone().unwrap_or_default();
            if a.format.as_deref() == Some("boolean") {
                if raw.as_deref() != Some("false") {
                    out.push(name);
                }
                continue;
            }
            let Some(raw) = raw else {
                if a.is_required {
                    return Err(format!("argument {name} needs a value the file does not give"));
                }
                continue;
            };
            let (text, needed) = fill_registry_vars(&raw, &a.variables);
            if needed.is_empty() {
                out.push(name);
                out.push(text);
            } else if (name == "-e" || name == "--env")
                && let Some((var, _)) = raw.split_once('=')
            {
                // `-e NAME={token}`: docker reads NAME from its own environment, which
                // the gateway fills; a value that is just the variable is named after NAME.
                let value = text.split_once('=').map_or(text.clone(), |(_, v)| v.to_owned());
                let value = if needed.len() == 1 && value == format!("${{{}}}", needed[0]) {
                    format!("${{{}}}", upper_name(var))
                } else {
                    value
                };
                out.push(name);
                out.push(var.to_owned());
                env.push((var.to_owned(), value));
            } else {
                return Err(format!(
                    "argument {name} needs {}; the gateway fills placeholders only in env and headers",
                    needed.join(", ")
                ));
            }
        } else {
            let Some(raw) = raw else {
                if a.is_required {
                    let hint = a.value_hint.as_deref().unwrap_or("a value");
                    return Err(format!(
                        "a positional argument ({hint}) needs a value the file does not give"
                    ));
                }
                continue;
            };
            let (text, needed) = fill_registry_vars(&raw, &a.variables);
            if !needed.is_empty() {
                return Err(format!(
                    "argument {raw:?} needs {}; the gateway fills placeholders only in env and headers",
                    needed.join(", ")
                ));
            }
            out.push(text);
        }
    }
    Ok(out)
}

fn registry_env(vars: &[RegistryInput], env: &mut Vec<(String, String)>) {
    for v in vars {
        let Some(name) = v.name.clone() else { continue };
        let given = if v.is_secret {
            None
        } else {
            v.value.clone().or(v.default.clone())
        };
        let value = given.unwrap_or_else(|| format!("${{{}}}", upper_name(&name)));
        env.push((name, value));
    }
}

fn registry(json: &str) -> anyhow::Result<Vec<Imported>> {
    let s: RegistryServer = serde_json::from_value(parse(json)?).context(
        "not an MCP Registry server.json (expected name, and packages or remotes, with camelCase keys)",
    )?;
    if s.packages.is_empty() && s.remotes.is_empty() {
        bail!("{}: has neither packages nor remotes", s.name);
    }
    // `io.github.user/weather` -> `weather`
    let short = s.name.rsplit('/').next().unwrap_or(&s.name).to_owned();
    let mut out = Vec::new();
    for (i, p) in s.packages.iter().enumerate() {
        let name = if i == 0 {
            short.clone()
        } else {
            format!("{short}-{}", p.registry_type)
        };
        out.push(registry_package(&s, name, p));
    }
    for (i, r) in s.remotes.iter().enumerate() {
        let name = if i == 0 {
            format!("{short}-remote")
        } else {
            format!("{short}-remote-{}", i + 1)
        };
        out.push(registry_remote(&s, name, r)?);
    }
    Ok(out)
}

/// A Registry package as a stdio command: `<runtime> <runtime arguments> <package>
/// <package arguments>`, with its environment variables.
fn registry_package(s: &RegistryServer, name: String, p: &RegistryPackage) -> Imported {
    let mut notes = vec![format!("from package {} ({})", p.identifier, p.registry_type)];
    if let Some(v) = &s.version {
        notes.push(format!("server version {v}"));
    }
    let mut problem = None;
    let kind = p.transport.as_ref().map_or("stdio", |t| t.kind.as_str());
    if kind != "stdio" {
        problem = Some(format!(
            "the package serves {kind} itself; start it yourself and add its URL as an http server"
        ));
    }
    let (command, mut args) = registry_command(p).unwrap_or_else(|e| {
        problem.get_or_insert(e);
        (p.registry_type.clone(), vec![p.identifier.clone()])
    });
    let mut env = Vec::new();
    let runtime = registry_args(&p.runtime_arguments, &mut env);
    let package = registry_args(&p.package_arguments, &mut env);
    match (runtime, package) {
        (Ok(mut r), Ok(pk)) => {
            if p.registry_type == "oci" && command == "docker" {
                // docker <runtime arguments> <image> <package arguments>; the image is
                // often repeated in the runtime arguments (`run -i --rm ... image`).
                let image = args.pop().unwrap_or_default();
                if r.is_empty() {
                    r = vec!["run".to_owned(), "-i".to_owned(), "--rm".to_owned()];
                }
                let base = image.split(':').next().unwrap_or(&image).to_owned();
                if r.last().is_some_and(|last| last == &base || last == &image) {
                    r.pop();
                }
                r.push(image);
                args = r;
            } else {
                r.append(&mut args);
                args = r;
            }
            args.extend(pk);
        }
        (Err(e), _) | (_, Err(e)) => {
            problem.get_or_insert(e);
        }
    }
    registry_env(&p.environment_variables, &mut env);
    Imported {
        name,
        description: s.description.clone(),
        transport: Transport::Stdio {
            command,
            args,
            env,
            cwd: None,
        },
        problem,
        notes,
        disabled: false,
    }
}

/// A Registry remote as an HTTP (or legacy SSE) server with its headers.
fn registry_remote(s: &RegistryServer, name: String, r: &RegistryRemote) -> anyhow::Result<Imported> {
    let sse = match r.kind.as_str() {
        "sse" => true,
        "streamable-http" | "http" => false,
        other => bail!("{}: remote of unknown type {other:?}", s.name),
    };
    let (url, needed) = fill_registry_vars(&r.url, &r.variables);
    let problem = (!needed.is_empty()).then(|| {
        format!(
            "the URL needs {} and has no default; the gateway takes no placeholders in URLs",
            needed.join(", ")
        )
    });
    let id = server_id(&name);
    let mut headers = Vec::new();
    for h in &r.headers {
        let Some(hn) = h.name.clone() else { continue };
        let value = match &h.value {
            Some(v) if !h.is_secret || v.contains('{') => fill_registry_vars(v, &BTreeMap::new()).0,
            _ => format!("${{{}}}", var_name(&id, &hn)),
        };
        headers.push((hn, value));
    }
    Ok(Imported {
        name,
        description: s.description.clone(),
        transport: Transport::Http { sse, url, headers },
        problem,
        notes: vec![format!("from remote {} ({})", r.url, r.kind)],
        disabled: false,
    })
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

/// The variables a template needs, in order.
fn needed_vars(template: &str, into: &mut Vec<String>) {
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else { break };
        let v = rest[start + 2..start + len].to_owned();
        if !into.contains(&v) {
            into.push(v);
        }
        rest = &rest[start + len + 1..];
    }
}

/// What an import produced.
#[derive(Debug)]
pub(crate) struct Conversion {
    /// The gateway config.
    pub(crate) toml: String,
    /// The placeholders to give values to.
    pub(crate) vars: Vec<String>,
    /// Servers written commented out: name and reason.
    pub(crate) skipped: Vec<(String, String)>,
}

/// Writes the gateway config.
fn write(format: &str, servers: Vec<Imported>) -> Conversion {
    let mut out = format!(
        "# Imported by `mcp-guard import {format}`. Review before use.\n# No tool is exposed until listed under [endpoints.default.servers.*] (default deny).\n\n"
    );
    out.push_str("[gateway]\nlisten = \"127.0.0.1:8787\"\n\n# Clients authenticate with a token read from the environment:\n# [[auth.tokens]]\n# principal = { id = \"me\", roles = [\"user\"] }\n# token = \"${MCP_GUARD_TOKEN}\"\n\n");
    let mut vars = Vec::new();
    let mut skipped = Vec::new();
    let mut ids = BTreeSet::new();
    for s in servers {
        let mut id = server_id(&s.name);
        let mut n = 2;
        while ids.contains(&id) {
            id = format!("{}-{n}", server_id(&s.name));
            n += 1;
        }
        let mut entry = String::new();
        let _ = writeln!(entry, "[servers.{id}]");
        if let Some(d) = &s.description {
            let _ = writeln!(entry, "description = {}", quote(d));
        }
        if s.disabled {
            entry.push_str("enabled = false  # disabled in the source file\n");
        }
        let mut needs = Vec::new();
        match &s.transport {
            Transport::Stdio {
                command,
                args,
                env,
                cwd,
            } => {
                entry.push_str("transport = \"stdio\"\n");
                let _ = writeln!(entry, "command = {}", quote(command));
                let args: Vec<String> = args.iter().map(|a| quote(a)).collect();
                let _ = writeln!(entry, "args = [{}]", args.join(", "));
                if let Some(c) = cwd {
                    let _ = writeln!(entry, "cwd = {}", quote(c));
                }
                if !env.is_empty() {
                    let _ = writeln!(entry, "[servers.{id}.env]");
                    for (k, v) in env {
                        let _ = writeln!(entry, "{} = {}", quote(k), quote(v));
                        needed_vars(v, &mut needs);
                    }
                }
            }
            Transport::Http { sse, url, headers } => {
                let _ = writeln!(entry, "transport = \"{}\"", if *sse { "sse" } else { "http" });
                let _ = writeln!(entry, "url = {}", quote(url));
                if !headers.is_empty() {
                    let _ = writeln!(entry, "[servers.{id}.headers]");
                    for (k, v) in headers {
                        let _ = writeln!(entry, "{} = {}", quote(k), quote(v));
                        needed_vars(v, &mut needs);
                    }
                }
            }
        }
        let _ = writeln!(out, "# from {}", quote(&s.name));
        for n in &s.notes {
            let _ = writeln!(out, "# note: {n}");
        }
        if let Some(p) = &s.problem {
            let _ = writeln!(out, "# NOT IMPORTED: {p}");
            for line in entry.lines() {
                let _ = writeln!(out, "# {line}");
            }
            skipped.push((s.name.clone(), p.clone()));
        } else {
            out.push_str(&entry);
            for v in needs {
                if !vars.contains(&v) {
                    vars.push(v);
                }
            }
            ids.insert(id);
        }
        out.push('\n');
    }
    out.push_str("[endpoints.default]\ndescription = \"Imported servers\"\n\n");
    for id in &ids {
        let _ = writeln!(
            out,
            "[endpoints.default.servers.{id}]\ntools = []  # list tool names or globs to expose, e.g. [\"read_*\"]\n"
        );
    }
    out.push_str(
        "# Who may call what (default deny):\n# [[grants]]\n# principals = [\"me\"]\n# names = [\"*\"]\n",
    );
    Conversion {
        toml: out,
        vars,
        skipped,
    }
}

/// Converts a file of the given format (a subcommand's name) into a config.
pub(crate) fn convert(format: &str, json: &str) -> anyhow::Result<Conversion> {
    let servers = match format {
        "claude-desktop" => client_file(json, Dialect::Claude)?,
        "cursor" => client_file(json, Dialect::Cursor)?,
        "vscode" => client_file(json, Dialect::Vscode)?,
        "server" => custom_server(json)?,
        "registry" => registry(json)?,
        other => bail!("unknown format {other}"),
    };
    Ok(write(format, servers))
}

#[allow(clippy::print_stdout, clippy::print_stderr, reason = "command output")]
pub(crate) fn run(source: Source) -> anyhow::Result<()> {
    let (format, Files { file, output }) = match source {
        Source::ClaudeDesktop(f) => ("claude-desktop", f),
        Source::Cursor(f) => ("cursor", f),
        Source::Vscode(f) => ("vscode", f),
        Source::Server(f) => ("server", f),
        Source::Registry(f) => ("registry", f),
    };
    let json = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let Conversion { toml, vars, skipped } =
        convert(format, &json).with_context(|| file.display().to_string())?;
    // Prove the output is a config we accept before handing it over.
    let parsed: mcp_guard_core::config::GatewayConfig =
        toml::from_str(&toml).context("internal: generated config does not parse")?;
    parsed
        .validate()
        .map_err(|e| anyhow::anyhow!("internal: generated config is invalid: {e}"))?;
    match output {
        Some(path) => {
            std::fs::write(&path, &toml).with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => out!("{toml}"),
    }
    for (name, why) in &skipped {
        eprintln!("not imported (left commented out): {name}: {why}");
    }
    if !vars.is_empty() {
        eprintln!(
            "Set these with `mcp-guard credentials set` or in the gateway's environment (values were not copied): {}",
            vars.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml: &str) {
        let cfg: mcp_guard_core::config::GatewayConfig = toml::from_str(toml).unwrap();
        cfg.validate().unwrap();
    }

    #[test]
    fn converts_without_copying_secrets() {
        let json = r#"{"mcpServers": {
            "GitHub Server": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"], "env": {"GITHUB_TOKEN": "ghp_secretvalue"}},
            "remote": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer abc123"}},
            "old": {"type": "sse", "url": "https://example.com/sse"}
        }}"#;
        let Conversion { toml, vars, skipped } = convert("claude-desktop", json).unwrap();
        assert!(
            !toml.contains("ghp_secretvalue") && !toml.contains("abc123"),
            "{toml}"
        );
        assert!(toml.contains("[servers.github-server]"));
        assert!(
            toml.contains("\"GITHUB_TOKEN\" = \"${GITHUB_SERVER_GITHUB_TOKEN}\""),
            "{toml}"
        );
        assert!(toml.contains("transport = \"sse\""));
        assert_eq!(vars, ["GITHUB_SERVER_GITHUB_TOKEN", "REMOTE_AUTHORIZATION"]);
        assert!(skipped.is_empty());
        cfg(&toml);
    }

    #[test]
    fn keeps_the_sources_placeholders_and_the_text_around_them() {
        let json = r#"{"servers": {"api": {"type": "http", "url": "https://api.example.com/mcp",
            "headers": {"Authorization": "Bearer ${input:api-token}", "X-Org": "${env:ORG_ID}"}}},
            "inputs": [{"type": "promptString", "id": "api-token", "password": true}]}"#;
        let Conversion { toml, vars, .. } = convert("vscode", json).unwrap();
        assert!(
            toml.contains("\"Authorization\" = \"Bearer ${API_TOKEN}\""),
            "{toml}"
        );
        assert!(toml.contains("\"X-Org\" = \"${ORG_ID}\""), "{toml}");
        assert_eq!(vars, ["API_TOKEN", "ORG_ID"]);
        cfg(&toml);
    }

    #[test]
    fn a_secret_in_an_argument_is_not_imported_but_kept_as_a_comment() {
        let json = r#"{"mcpServers": {"db": {"command": "db-mcp", "args": ["--password", "${env:DB_PASSWORD}"]},
            "ok": {"command": "ok-mcp"}}}"#;
        let Conversion { toml, vars, skipped } = convert("cursor", json).unwrap();
        assert_eq!(skipped.len(), 1, "{toml}");
        assert!(
            skipped[0]
                .1
                .contains("fills placeholders only in env and headers"),
            "{skipped:?}"
        );
        assert!(toml.contains("# [servers.db]"), "{toml}");
        assert!(!toml.contains("[endpoints.default.servers.db]"), "{toml}");
        assert!(vars.is_empty());
        cfg(&toml);
    }

    #[test]
    fn refuses_garbage_with_a_precise_error() {
        let err = |f: &str, j: &str| format!("{:#}", convert(f, j).unwrap_err());
        assert!(err("claude-desktop", "[]").contains("expected an object with mcpServers"));
        assert!(err("claude-desktop", "{\"mcpServers\": {}}").contains("lists no servers"));
        assert!(
            err("cursor", "{\"mcpServers\": {\"x\": {}}}").contains("x: has neither a command nor a url")
        );
        assert!(err("vscode", "{\"mcpServers\": {}}").contains("expected an object with servers"));
        assert!(
            err(
                "vscode",
                "{\"servers\": {\"x\": {\"type\": \"ws\", \"url\": \"https://a\"}}}"
            )
            .contains("unknown type \"ws\"")
        );
        assert!(err("server", "{\"transport\": \"stdio\"}").contains("not a custom-server block"));
        assert!(err("registry", "{\"name\": \"io.x/y\"}").contains("neither packages nor remotes"));
        assert!(err("registry", "not json").contains("not JSON"));
        assert!(err("registry", "{\"packages\": []}").contains("not an MCP Registry server.json"));
    }
}
