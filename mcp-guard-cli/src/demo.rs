//! `mcp-guard demo`: a complete gateway on an embedded default, no outside service.
//!
//! Three bundled upstreams (this binary, spawned as stdio children), one endpoint,
//! token authentication with a token issued for the demo user (as `tokens issue`
//! does), the built-in authorization server (sign in with a printed one-time link),
//! and one real call through the gateway to show it works. The gateway is the
//! library's ([`mcp_guard_tower::server`]), as `serve` runs it.

use std::fmt::Write as _;

use anyhow::Context as _;
use mcp_guard_core::Principal;
use mcp_guard_tower::server::{ServerBuilder, load_config};
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use tokio_util::sync::CancellationToken;

fn demo_config(exe: &str, addr: std::net::SocketAddr) -> String {
    let exe = toml::Value::String(exe.to_owned()).to_string();
    let mut s = format!(
        "[gateway]\nlisten = \"{addr}\"\npublic_url = \"http://{addr}\"\n\n[auth]\nstore = \"access.db\"\n\n[audit]\nsinks = [\"tracing\"]\n\n\
         [auth.server]\ndurations = [\"1h\", \"1d\", \"30d\"]\n[[auth.server.users]]\nid = \"demo-user\"\nroles = [\"demo\"]\n\n"
    );
    for name in ["notes", "calc", "clock"] {
        let _ = write!(
            s,
            "[servers.{name}]\ntransport = \"stdio\"\ncommand = {exe}\nargs = [\"fixture\", \"--name\", \"{name}\"]\n\n"
        );
    }
    s.push_str(
        "[endpoints.demo]\ndescription = \"Demo endpoint: three bundled servers, a few tools each\"\n\
         [endpoints.demo.servers.notes]\ntools = [\"echo\", \"whoami\"]\nprompts = [\"*\"]\nresources = [\"*\"]\n\
         [endpoints.demo.servers.calc]\ntools = [\"add\"]\n\
         [endpoints.demo.servers.clock]\ntools = [\"slow\"]\n\n\
         [[grants]]\nname = \"demo-role\"\nroles = [\"demo\"]\nnames = [\"*\"]\n",
    );
    s
}

#[allow(clippy::print_stdout, reason = "the demo talks to its user")]
pub(crate) async fn run(port: u16, once: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let dir = std::env::temp_dir().join(format!("mcp-guard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} (try --port)"))?;
    let addr = listener.local_addr()?;
    let path = dir.join("gateway.toml");
    std::fs::write(&path, demo_config(&exe.to_string_lossy(), addr))?;
    let loaded = load_config(&path)?;
    // The demo user's token, issued into the access store as `tokens issue` does.
    let store = mcp_guard_core::access::AccessStore::open(dir.join("access.db"))?;
    let user = Principal::user("demo-user").with_roles(["demo"]);
    let (_, token) = store.issue_token(&user, Some(std::time::Duration::from_hours(1)), Some("demo"))?;
    #[expect(clippy::disallowed_methods, reason = "the demo prints its token for its user")]
    let token = secrecy::ExposeSecret::expose_secret(&token).to_owned();
    let link = store.issue_login_link("demo-user", std::time::Duration::from_hours(1))?;
    #[expect(
        clippy::disallowed_methods,
        reason = "the demo prints its sign-in link for its user"
    )]
    let link = format!(
        "http://{addr}/login?code={}",
        secrecy::ExposeSecret::expose_secret(&link)
    );
    let gateway = ServerBuilder::from_loaded(loaded)
        .known_secrets(crate::known_secrets())
        .build()
        .await?;
    let report = gateway.started().await?;
    let stop = CancellationToken::new();
    let serving = tokio::spawn(gateway.serve(listener, stop.clone().cancelled_owned(), |_| {}));
    let url = format!("http://{addr}/mcp/demo");
    outln!("mcp-guard demo gateway running ({report})");
    outln!("  config:   {}", path.display());
    outln!("  endpoint: {url}");
    outln!("  header:   Authorization: Bearer {token}");
    outln!(
        "  try:      npx @modelcontextprotocol/inspector --cli {url} --transport http --header \"Authorization: Bearer {token}\" --method tools/list"
    );
    outln!("  OAuth:    add {url} to an MCP client (Claude, the Inspector); when it opens the");
    outln!("            sign-in page, paste this one-time link (valid 1 hour): {link}");

    let shown = show(&url, token).await;
    if shown.is_ok() && !once {
        outln!("\nserving until Ctrl-C");
        tokio::spawn(crate::shutdown_signal(stop.clone()));
        stop.cancelled().await;
    }
    stop.cancel();
    let served = serving.await.context("the demo gateway stopped unexpectedly")?;
    let _ = std::fs::remove_dir_all(&dir);
    shown?;
    Ok(served?)
}

/// One real call through the gateway: lists the tools and adds two numbers.
#[allow(clippy::print_stdout, reason = "the demo talks to its user")]
async fn show(url: &str, token: String) -> anyhow::Result<()> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    config.auth_header = Some(token);
    let client =
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .context("demo client could not connect")?;
    let tools = client.list_all_tools().await?;
    outln!(
        "\ntools through the gateway: {}",
        tools
            .iter()
            .map(|t| t.name.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let args = serde_json::json!({"a": 2, "b": 40}).as_object().cloned();
    let result = client
        .call_tool(CallToolRequestParams::new("calc__add").with_arguments(args.unwrap_or_default()))
        .await?;
    let answer = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default();
    outln!("calc__add(2, 40) = {answer}");
    let _ = client.cancel().await;
    Ok(())
}
