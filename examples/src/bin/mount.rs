//! The whole gateway inside an axum app you already have: your routes, your middleware
//! and your fallback stay; the gateway, built from a configuration file exactly as
//! `mcp-guard serve` builds it, answers at `/tools/mcp/{endpoint}`.
//!
//! Run: `cargo run -p mcp-guard-examples --bin mount -- --config gateway.toml --listen 127.0.0.1:8080`
//!
//! Prints `mount listening on http://ADDR` once it listens and `upstreams started: ...`
//! once every server's first start has ended (both on stderr); stops on Ctrl-C or
//! SIGTERM, draining calls in flight and flushing the audit trail.
#![allow(clippy::print_stderr, reason = "an example says where it listens")]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use axum::http::HeaderValue;
use axum::response::Response;
use mcp_guard_tower::server::{ServerBuilder, load_config};

/// Where the gateway's MCP endpoints live inside the host app.
const PREFIX: &str = "/tools";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, listen) = arguments()?;
    mcp_guard_core::upstream::ensure_crypto_provider();

    // The gateway: the same builder the binary uses, mounted under /tools.
    let loaded = load_config(&config)?;
    let gateway = ServerBuilder::from_loaded(loaded)
        .path_prefix(PREFIX)
        .build()
        .await?;

    // The host app: its own routes, a middleware over everything, its own fallback.
    // The gateway's router has no fallback of its own, so merging cannot panic.
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "the host app\n" }))
        .route(
            "/api/status",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
        )
        .merge(gateway.router())
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                "the host app has no such page\n",
            )
        })
        .layer(axum::middleware::map_response(|mut r: Response| async move {
            r.headers_mut()
                .insert("x-served-by", HeaderValue::from_static("host-app"));
            r
        }));

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    eprintln!("mount listening on http://{}", listener.local_addr()?);
    let stop = gateway.shutdown_token();
    let server = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });

    tokio::select! {
        report = gateway.started() => eprintln!("{}", report?),
        () = stop_signal() => return Ok(gateway.shutdown().await?),
    }
    stop_signal().await;
    // Drains calls in flight, closes sessions (which ends the listener above), stops
    // the upstreams and flushes the audit trail.
    gateway.shutdown().await?;
    let _ = server.await;
    Ok(())
}

/// `--config PATH --listen ADDR`.
fn arguments() -> anyhow::Result<(PathBuf, SocketAddr)> {
    let mut config = None;
    let mut listen: SocketAddr = "127.0.0.1:8080".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--listen" => {
                let v = args.next().context("--listen needs an address")?;
                listen = v.parse().with_context(|| format!("--listen {v}"))?;
            }
            other => bail!("unknown argument {other:?}; usage: mount --config PATH [--listen ADDR]"),
        }
    }
    Ok((
        config.context("usage: mount --config PATH [--listen ADDR]")?,
        listen,
    ))
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
