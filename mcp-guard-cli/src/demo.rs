//! `mcp-guard demo`: a complete gateway on an embedded default, no outside service.
//!
//! Three bundled upstreams (this binary, spawned as stdio children), one endpoint,
//! token authentication with a fresh random token, the built-in authorization server
//! (sign in with a printed one-time link), and one real call through the gateway to
//! show it works.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use mcp_guard_tower::HttpEdge;
use rand::RngCore as _;
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

fn demo_config(exe: &str, addr: std::net::SocketAddr) -> String {
    let exe = toml::Value::String(exe.to_owned()).to_string();
    let mut s = format!(
        "[gateway]\nlisten = \"{addr}\"\npublic_url = \"http://{addr}\"\n\n[auth]\nstore = \"access.db\"\n[[auth.tokens]]\nprincipal = {{ id = \"demo-user\", roles = [\"demo\"] }}\ntoken = \"${{MCP_GUARD_DEMO_TOKEN}}\"\n\n\
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
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    let token = raw.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    let dir = std::env::temp_dir().join(format!("mcp-guard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} (try --port)"))?;
    let addr = listener.local_addr()?;
    let path = dir.join("gateway.toml");
    std::fs::write(&path, demo_config(&exe.to_string_lossy(), addr))?;
    let loaded = crate::load::load(&path)?;
    let cfg = loaded.config;
    let principal = crate::load::principal(&cfg.auth.tokens[0].principal);
    let store = mcp_guard_core::access::AccessStore::open(dir.join("access.db"))?;
    let sessions = mcp_guard_core::access::Sessions::with_store(store.clone())?;
    let auth = mcp_guard_tower::auth::AnyOf::new()
        .or(Arc::new(
            mcp_guard_tower::StaticTokens::new().with_token(&SecretString::from(token.clone()), principal),
        ))
        .or(Arc::new(mcp_guard_tower::auth::GrantTokens::new(store.clone())));
    let stores = crate::credentials::stores(&cfg, &path, None)?;
    let built = crate::load::build(
        &cfg,
        &stores,
        crate::audit_sink(),
        crate::redactor(),
        None,
        crate::load::Startup::Wait,
    )
    .await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(
        sessions
            .clone()
            .maintain(std::time::Duration::from_millis(250), shutdown.clone()),
    );
    let authorization =
        crate::connect::authorization_server(&cfg, &path, &store, &sessions, &built.gateway, &stores, None)?
            .context("the demo configures the built-in authorization server")?;
    let app = authorization.router().merge(
        HttpEdge::new(built.gateway.clone(), built.service, Arc::new(auth))
            .options(crate::http_options(&cfg))
            .sessions(sessions)
            .shutdown_token(shutdown.clone())
            .router(),
    );
    let link = store.issue_login_link("demo-user", std::time::Duration::from_hours(1))?;
    #[expect(
        clippy::disallowed_methods,
        reason = "the demo prints its sign-in link for its user"
    )]
    let link = format!(
        "http://{addr}/login?code={}",
        secrecy::ExposeSecret::expose_secret(&link)
    );
    let server = tokio::spawn(mcp_guard_tower::http::serve(listener, app, shutdown.clone()));
    let url = format!("http://{addr}/mcp/demo");
    outln!("mcp-guard demo gateway running");
    outln!("  config:   {}", path.display());
    outln!("  endpoint: {url}");
    outln!("  header:   Authorization: Bearer {token}");
    outln!(
        "  try:      npx @modelcontextprotocol/inspector --cli {url} --transport http --header \"Authorization: Bearer {token}\" --method tools/list"
    );
    outln!("  OAuth:    add {url} to an MCP client (Claude, the Inspector); when it opens the");
    outln!("            sign-in page, paste this one-time link (valid 1 hour): {link}");

    show(&url, token).await?;
    if !once {
        outln!("\nserving until Ctrl-C");
        tokio::spawn(crate::shutdown_signal(shutdown.clone()));
        shutdown.cancelled().await;
    }
    shutdown.cancel();
    let _ = server.await;
    built.gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
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
