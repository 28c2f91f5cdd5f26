//! `mcp-guard oauth-client URL` (hidden): the gateway's own upstream OAuth client,
//! driven headlessly, for the MCP conformance suite's client authorization scenarios.
//!
//! It goes through the same code the gateway runs (`mcp_guard_core::upstream::oauth`):
//! discovery from the server's 401, registration (pre-registered, client ID metadata
//! document or dynamic), an authorization URL with PKCE S256, `state` and `resource`;
//! then, since the scenario's authorization endpoint approves at once, it reads the
//! redirect to the callback instead of opening a browser, checks `state`, exchanges the
//! code, connects with the tokens and lists and calls the tools.
//!
//! The suite passes the scenario in `MCP_CONFORMANCE_SCENARIO` and a pre-registered
//! client in `MCP_CONFORMANCE_CONTEXT` (`client_id`, `client_secret`); the
//! `auth/client-credentials-*` scenarios use the shared (client-credentials) mode.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use mcp_guard_core::upstream::oauth::{OAuthConnector, OAuthMode, OAuthServer, OAuthSpec};
use mcp_guard_core::upstream::{Forward, HttpSpec, Template, Upstream as _, UpstreamOptions};
use mcp_guard_core::{CredentialKey, MemoryCredentialStore, RmcpUpstream};
use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
use secrecy::SecretString;

/// The client ID metadata document URL the suite's CIMD scenario expects.
const CLIENT_METADATA_URL: &str = "https://conformance-test.local/client-metadata.json";
/// Where the provider sends the browser back (never loaded: the code is read from the
/// redirect).
const REDIRECT_URI: &str = "http://127.0.0.1:8976/callback";
const SERVER: &str = "upstream";
const PRINCIPAL: &str = "conformance";

fn spec(
    scenario: &str,
    context: &serde_json::Value,
    store: &MemoryCredentialStore,
) -> anyhow::Result<OAuthSpec> {
    let shared = scenario.starts_with("auth/client-credentials");
    let mut spec = OAuthSpec::new(if shared {
        OAuthMode::Shared
    } else {
        OAuthMode::Personal
    });
    if let Some(id) = context["client_id"].as_str() {
        store.set(
            CredentialKey::shared(SERVER, "CLIENT_ID"),
            SecretString::from(id.to_owned()),
        );
        spec.client_id = Some(Template::parse("${CLIENT_ID}").map_err(anyhow::Error::msg)?);
    }
    if let Some(secret) = context["client_secret"].as_str() {
        store.set(
            CredentialKey::shared(SERVER, "CLIENT_SECRET"),
            SecretString::from(secret.to_owned()),
        );
        spec.client_secret = Some(Template::parse("${CLIENT_SECRET}").map_err(anyhow::Error::msg)?);
    }
    spec.client_metadata_url = Some(CLIENT_METADATA_URL.to_owned());
    // The conformance suite runs its authorization servers on loopback ports of its
    // own: a test harness, never a gateway.
    spec.dangerously_allow_private_addresses = true;
    "mcp-guard conformance client".clone_into(&mut spec.client_name);
    Ok(spec)
}

/// Signs in as the principal: the personal (authorization-code) flow, headless.
async fn sign_in(oauth: &OAuthServer) -> anyhow::Result<()> {
    let discovery = oauth.discover(PRINCIPAL).await?;
    let pending = oauth.begin(discovery).await?;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let answer = browser.get(pending.authorization_url()).send().await?;
    let location = answer
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .with_context(|| {
            format!(
                "the authorization endpoint answered {} without a redirect",
                answer.status()
            )
        })?;
    let callback = reqwest::Url::parse(location).context("the redirect is not a URL")?;
    let param = |name: &str| {
        callback
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(e) = param("error") {
        bail!("the authorization server refused: {e}");
    }
    if param("state").as_deref() != Some(pending.state()) {
        bail!("the callback's state does not match the one sent");
    }
    let code = param("code").context("the callback carries no code")?;
    pending.complete(&code, param("iss").as_deref()).await?;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "a command reports to its user")]
pub(crate) async fn run(url: String) -> anyhow::Result<()> {
    let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
    let context: serde_json::Value = std::env::var("MCP_CONFORMANCE_CONTEXT")
        .ok()
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or_default();
    let store = MemoryCredentialStore::new();
    let spec = spec(&scenario, &context, &store)?;
    let personal = spec.mode == OAuthMode::Personal;
    let store = Arc::new(store);
    let oauth = Arc::new(OAuthServer::new(
        SERVER,
        url.clone(),
        spec,
        store.clone(),
        store.clone(),
    ));
    oauth.set_redirect_uri(REDIRECT_URI);
    if personal {
        sign_in(&oauth).await?;
    }
    let mut connector = OAuthConnector::new(oauth.clone(), HttpSpec::new(url), store);
    if personal {
        connector = connector.for_principal(PRINCIPAL);
    }
    let upstream = RmcpUpstream::new(SERVER, connector, UpstreamOptions::default());
    let catalog = upstream
        .catalog()
        .await
        .map_err(|e| anyhow::anyhow!("connecting failed: {}", mcp_guard_core::upstream::error_chain(&e)))?;
    outln!("connected: {} tools", catalog.tools.len());
    for tool in &catalog.tools {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(CallToolRequestParams::new(
            tool.name.clone(),
        )));
        match upstream.request(request, Forward::default()).await {
            Ok(_) => outln!("called {}", tool.name),
            Err(e) => {
                upstream.shutdown().await;
                bail!(
                    "calling {} failed: {}",
                    tool.name,
                    mcp_guard_core::upstream::error_chain(&e)
                );
            }
        }
    }
    upstream.shutdown().await;
    Ok(())
}
