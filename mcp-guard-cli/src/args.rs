//! The command line: every subcommand and its arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{access, audit, connect, credentials, explain, import};

/// A security gateway for the Model Context Protocol.
#[derive(Parser, Debug)]
#[command(name = "mcp-guard", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ToolsAction {
    /// Pins the current definitions of the tools in scope into the lock file.
    Approve {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// Only the servers of this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only this server.
        #[arg(long)]
        server: Option<String>,
        /// Only this tool (upstream name).
        #[arg(long)]
        tool: Option<String>,
    },
    /// Shows what waits for approval (new, changed, removed, hostile); exit 1 if anything does.
    Diff {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// Only the servers of this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only this server.
        #[arg(long)]
        server: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Runs the gateway: HTTP at /mcp/{endpoint}, or one endpoint over stdio.
    Serve {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
        /// Serve one endpoint on stdin/stdout instead of HTTP.
        #[arg(long, requires = "endpoint")]
        stdio: bool,
        /// The endpoint to serve over stdio.
        #[arg(long)]
        endpoint: Option<String>,
        /// Listen address (overrides gateway.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Asks the running gateway to apply its configuration file again (it also does on
    /// SIGHUP and when the file changes); the file is checked first.
    Reload {
        /// The configuration file the gateway runs.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
    },
    /// Validates a configuration file; with --connect also connects each server; with
    /// --against-audit replays recorded calls under it and prints the decisions that
    /// would change (exit 1 when any does, 2 when the trail cannot be read).
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Connect to every enabled server and list its tools, and to every audit
        /// receiver (`[audit.forward.*]`, sending no record).
        #[arg(long, conflicts_with = "against_audit")]
        connect: bool,
        /// Replay the policy decisions of the recorded calls under this configuration
        /// and print those whose outcome would change (allowed -> refused, refused ->
        /// allowed), with the deciding rule before and after.
        #[arg(long)]
        against_audit: bool,
        /// With --against-audit: only calls started at or after this: RFC 3339 UTC, a
        /// date, or an age (15m, 2h, 7d).
        #[arg(long, requires = "against_audit", value_parser = audit::parse_when)]
        since: Option<std::time::SystemTime>,
        /// With --against-audit: the trail (a SQLite database, a JSON Lines file or
        /// directory); default: the one the configuration's [audit] names.
        #[arg(long, requires = "against_audit")]
        audit: Option<PathBuf>,
        /// With --against-audit: print JSON.
        #[arg(long, requires = "against_audit")]
        json: bool,
    },
    /// Shows a running gateway's per-server status (from its /readyz).
    Status {
        /// The gateway's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8787")]
        url: String,
        /// Also show this principal's personal credentials per server (connected,
        /// missing, needs re-authentication); needs --config.
        #[arg(long, requires = "config")]
        principal: Option<String>,
        /// The configuration file (locates the credential store).
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Prints an endpoint's catalogue with what is enabled; approves or diffs pinned
    /// tool definitions.
    #[command(args_conflicts_with_subcommands = true)]
    Tools {
        #[command(subcommand)]
        action: Option<ToolsAction>,
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: Option<PathBuf>,
        /// The endpoint.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Creates or upgrades the cluster's PostgreSQL schema (`[cluster]`); replicas also
    /// do it at start. A schema from a newer mcp-guard is refused, never downgraded.
    Migrate {
        /// The configuration file.
        #[arg(long, short, env = "MCP_GUARD_CONFIG")]
        config: PathBuf,
    },
    /// Issues, lists and revokes gateway API tokens.
    Tokens {
        #[command(subcommand)]
        command: access::TokensCommand,
    },
    /// Stores, lists and removes upstream credentials (encrypted at rest); rotates the key.
    Credentials {
        #[command(subcommand)]
        command: credentials::CredentialsCommand,
    },
    /// Users of the built-in authorization server: one-time sign-in links.
    Users {
        #[command(subcommand)]
        command: connect::UsersCommand,
    },
    /// Prints the client-side configuration (Claude Desktop, Claude Code, Cursor,
    /// VS Code, JSON) for an endpoint.
    ConnectConfig(connect::ConnectConfigArgs),
    /// Lists and revokes gateway sessions.
    Sessions {
        #[command(subcommand)]
        command: access::SessionsCommand,
    },
    /// Checks and searches the audit trail.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Prints what the grants decide for a principal, endpoint and tool, and the rule
    /// that decided (exit 0 allow, 1 deny, 2 error); contacts no upstream.
    Explain(explain::ExplainArgs),
    /// Converts another program's MCP server list into an mcp-guard configuration.
    Import {
        #[command(subcommand)]
        source: import::Source,
    },
    /// Runs a complete demo gateway with bundled upstreams and makes one call.
    Demo {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8787)]
        port: u16,
        /// Exit after the demonstration call instead of serving.
        #[arg(long)]
        once: bool,
    },
    /// The gateway's upstream OAuth client, headless, against one OAuth-protected MCP
    /// server (for the conformance suite's client authorization scenarios).
    #[command(hide = true)]
    OauthClient {
        /// The server's MCP URL.
        url: String,
    },
    /// A bundled MCP server on stdio (the demo's upstreams and the test fixture).
    #[command(hide = true)]
    Fixture {
        /// Its name.
        #[arg(long, default_value = "fixture")]
        name: String,
        /// Extra echo tools.
        #[arg(long = "extra-tool")]
        extra_tools: Vec<String>,
        /// Speak only the revisions before 2026-07-28 (answer `server/discover` with -32601).
        #[arg(long)]
        legacy_only: bool,
        /// A file naming the definition variant to offer (read at every listing).
        #[arg(long)]
        variant_file: Option<PathBuf>,
        /// After this many tool calls, each further call first writes a line that is
        /// not JSON-RPC to stdout (protocol garbage), then answers after 30 s.
        #[arg(long)]
        garbage_after: Option<u64>,
        /// Also offer `ask_name` and `ask_model`, which ask the client (elicitation,
        /// sampling) with requests of their own, the legacy way.
        #[arg(long)]
        questions: bool,
        /// Serve streamable HTTP at `http://ADDR/mcp` (a loopback address) instead of stdio.
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
    },
}
