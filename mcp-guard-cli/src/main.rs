//! `mcp-guard`: a federating MCP security gateway run from a config file.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program talks on stdout/stderr"
)]

/// `println!` for a command's output: when the reader has gone (`mcp-guard sessions
/// list | head -1`) the command ends quietly with status 0, as grep and ripgrep do,
/// instead of panicking on the broken pipe.
macro_rules! outln {
    () => {
        $crate::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for a command's output, like [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))
    };
}
mod access;
mod args;
mod audit;
mod check;
mod cluster;
mod connect;
mod credentials;
mod demo;
mod explain;
mod fixture;
mod import;
mod inspect;
mod logging;
mod oauth_client;
mod pins;
mod reload;
mod replay;
mod serve;

use anyhow::Context as _;
use clap::Parser;
use rmcp::ServiceExt;

use args::{Cli, Command, ToolsAction};
use check::{check, check_connect};
use inspect::{status, tools};
use logging::init_tracing;
pub(crate) use logging::known_secrets;
use serve::serve;
pub(crate) use serve::shutdown_signal;

/// Writes a command's output to stdout: a closed pipe ends the process quietly
/// (status 0), any other write error with a message (status 1).
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

#[allow(clippy::too_many_lines, reason = "one dispatch over every subcommand")]
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let stdio = matches!(
        cli.command,
        Command::Serve { stdio: true, .. } | Command::Fixture { .. }
    );
    init_tracing(stdio);
    mcp_guard_core::upstream::ensure_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                config,
                stdio,
                endpoint,
                listen,
            } => serve(config, stdio, endpoint, listen).await,
            Command::Reload { config } => reload::run(&config),
            Command::Check {
                config,
                against_audit: true,
                since,
                audit,
                json,
                ..
            } => {
                let args = replay::ReplayArgs {
                    config: &config,
                    audit: audit.as_deref(),
                    since,
                    json,
                };
                return Ok(replay::run(&args).map_or_else(
                    |e| {
                        eprintln!("error: {e:#}");
                        std::process::ExitCode::from(explain::EXIT_ERROR)
                    },
                    std::process::ExitCode::from,
                ));
            }
            Command::Check { config, connect, .. } => {
                check(&config)?;
                if connect {
                    check_connect(&config).await?;
                    cluster::check(&config).await
                } else {
                    Ok(())
                }
            }
            Command::Status {
                url,
                principal,
                config,
            } => status(&url, principal.as_deref(), config.as_deref()).await,
            Command::Tools {
                action: None,
                config,
                endpoint,
            } => {
                let config = config.context("--config is required")?;
                let endpoint = endpoint.context("--endpoint is required")?;
                tools(config, endpoint).await
            }
            Command::Tools {
                action:
                    Some(ToolsAction::Approve {
                        config,
                        endpoint,
                        server,
                        tool,
                    }),
                ..
            } => {
                let scope = pins::Scope {
                    endpoint: endpoint.as_deref(),
                    server: server.as_deref(),
                    tool: tool.as_deref(),
                };
                pins::approve(&config, &scope).await
            }
            Command::Tools {
                action:
                    Some(ToolsAction::Diff {
                        config,
                        endpoint,
                        server,
                    }),
                ..
            } => {
                let scope = pins::Scope {
                    endpoint: endpoint.as_deref(),
                    server: server.as_deref(),
                    tool: None,
                };
                if pins::diff(&config, &scope).await? > 0 {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Audit { command } => {
                return Ok(audit::run(command).unwrap_or_else(|e| {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::from(audit::EXIT_UNREADABLE)
                }));
            }
            Command::Tokens { command } => access::tokens(command).await,
            Command::Migrate { config } => cluster::migrate(&config).await,
            Command::Sessions { command } => access::sessions(command),
            Command::Users { command } => connect::users(command),
            Command::ConnectConfig(args) => connect::connect_config(&args),
            Command::Explain(args) => {
                return Ok(explain::run(&args).map_or_else(
                    |e| {
                        eprintln!("error: {e:#}");
                        std::process::ExitCode::from(explain::EXIT_ERROR)
                    },
                    std::process::ExitCode::from,
                ));
            }
            Command::Credentials { command } => credentials::run(command),
            Command::OauthClient { url } => oauth_client::run(url).await,
            Command::Import { source } => import::run(source),
            Command::Demo { port, once } => demo::run(port, once).await,
            Command::Fixture {
                name,
                extra_tools,
                legacy_only,
                variant_file,
                garbage_after,
                questions,
                http,
            } => {
                let fixture = fixture::Fixture::new(&name, extra_tools, legacy_only, variant_file)
                    .garbage_after(garbage_after)
                    .questions(questions);
                if let Some(addr) = http {
                    fixture::serve_http(fixture, addr).await
                } else {
                    let running = fixture.serve(rmcp::transport::stdio()).await?;
                    let _ = running.waiting().await;
                    Ok(())
                }
            }
        }
        .map(|()| std::process::ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
