//! `mcp-guard serve`: the gateway on a listener (or stdio) until a signal stops it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use mcp_guard_tower::server::{ServerBuilder, load_config};
use tokio_util::sync::CancellationToken;

use crate::{known_secrets, reload};

pub(crate) async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        () = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}

/// `serve`: the gateway the configuration describes, built by the library
/// ([`mcp_guard_tower::server`]); this function only adds the listener, the signals and
/// what is printed on stderr.
pub(crate) async fn serve(
    config: PathBuf,
    stdio: bool,
    endpoint: Option<String>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let loaded = load_config(&config)?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let addr: SocketAddr = match listen {
        Some(a) => a,
        None => loaded.config.gateway.listen.parse()?,
    };
    let pid_file = reload::pid_path(&mcp_guard_tower::server::access_store_path(
        &loaded.config,
        loaded.base_dir(),
    ));
    let digest = loaded.digest.clone();
    let builder = ServerBuilder::from_loaded(loaded).known_secrets(known_secrets());
    let signal = CancellationToken::new();
    tokio::spawn(shutdown_signal(signal.clone()));
    let on_started = |r: &mcp_guard_tower::server::StartupReport| eprintln!("{r}");
    if stdio {
        let gateway = builder.build_stdio(endpoint.as_deref()).await?;
        reload::watch(gateway.reloader(), config, digest, signal.clone());
        return Ok(gateway.serve(signal.cancelled_owned(), on_started).await?);
    }
    let gateway = builder.build().await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let _pid = reload::PidFile::write(pid_file)?;
    reload::watch(gateway.reloader(), config, digest, signal.clone());
    eprintln!("mcp-guard listening on http://{local}");
    for name in gateway.gateway().endpoint_names() {
        eprintln!("  endpoint {name}: http://{local}/mcp/{name}");
    }
    Ok(gateway
        .serve(listener, signal.cancelled_owned(), on_started)
        .await?)
}
