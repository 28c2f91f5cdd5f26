//! Upstream OAuth: a real authorization server and an OAuth-protected MCP server on
//! 127.0.0.1 (the provider auto-approves: it stands in for the user at the provider),
//! the gateway's sign-in pages over real HTTP, tokens per principal, refresh, and
//! canaries that never leak.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::*;

/// Every token and secret the provider issues carries this, so the canary check finds
/// any of them anywhere.
const CANARY: &str = "oauthcanary";
pub(crate) const CC_SECRET: &str = "cc-secret-oauthcanary-5e1f";

/// The provider and the protected MCP server.
#[derive(Default)]
pub(crate) struct World {
    base: Mutex<String>,
    /// code → (user, PKCE challenge, resource)
    codes: Mutex<HashMap<String, (String, String, String)>>,
    /// access token → (user, expiry)
    access: Mutex<HashMap<String, (String, Instant)>>,
    /// refresh token → user
    refresh: Mutex<HashMap<String, String>>,
    /// Who the auto-approving authorization endpoint signs in as.
    pub(crate) user: Mutex<String>,
    access_ttl: AtomicU64,
    reject_refresh: AtomicBool,
    n: AtomicU64,
    /// Grant types the token endpoint served.
    grants: Mutex<Vec<String>>,
    /// The `resource` of every authorization and token request.
    resources: Mutex<Vec<String>>,
    /// When set, the authorization servers the protected-resource metadata names (an
    /// upstream that changes its mind, or points somewhere hostile).
    pub(crate) authorization_servers: Mutex<Option<Vec<String>>>,
    /// When set, the `WWW-Authenticate` challenge of an unauthenticated request.
    pub(crate) challenge: Mutex<Option<String>>,
}

impl World {
    pub(crate) fn base(&self) -> String {
        self.base.lock().unwrap().clone()
    }

    fn mint(&self, user: &str) -> (String, String) {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let at = format!("at-{CANARY}-{user}-{n}");
        let rt = format!("rt-{CANARY}-{user}-{n}");
        let ttl = Duration::from_secs(self.access_ttl.load(Ordering::SeqCst));
        self.access
            .lock()
            .unwrap()
            .insert(at.clone(), (user.to_owned(), Instant::now() + ttl));
        self.refresh.lock().unwrap().insert(rt.clone(), user.to_owned());
        (at, rt)
    }

    fn user_of(&self, headers: &HeaderMap) -> Option<String> {
        let token = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        let map = self.access.lock().unwrap();
        let (user, exp) = map.get(token)?;
        (Instant::now() < *exp).then(|| user.clone())
    }

    /// The server forgets `user`'s access tokens (as if revoked).
    pub(crate) fn revoke_access(&self, user: &str) {
        self.access.lock().unwrap().retain(|_, (u, _)| u != user);
    }
}

fn token_response(at: &str, rt: Option<&str>, ttl: u64) -> Response {
    let mut v = json!({"access_token": at, "token_type": "Bearer", "expires_in": ttl});
    if let Some(rt) = rt {
        v["refresh_token"] = rt.into();
    }
    axum::Json(v).into_response()
}

fn oauth_error(code: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": code}))).into_response()
}

async fn token(
    State(w): State<Arc<World>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let grant = f.get("grant_type").cloned().unwrap_or_default();
    w.grants.lock().unwrap().push(grant.clone());
    w.resources
        .lock()
        .unwrap()
        .push(f.get("resource").cloned().unwrap_or_default());
    let ttl = w.access_ttl.load(Ordering::SeqCst);
    match grant.as_str() {
        "authorization_code" => {
            let Some((user, challenge, resource)) =
                f.get("code").and_then(|c| w.codes.lock().unwrap().remove(c))
            else {
                return oauth_error("invalid_grant");
            };
            let verifier = f.get("code_verifier").cloned().unwrap_or_default();
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()));
            if computed != challenge || f.get("resource") != Some(&resource) {
                return oauth_error("invalid_grant");
            }
            let (at, rt) = w.mint(&user);
            token_response(&at, Some(&rt), ttl)
        }
        "refresh_token" => {
            if w.reject_refresh.load(Ordering::SeqCst) {
                return oauth_error("invalid_grant");
            }
            let Some(user) = f
                .get("refresh_token")
                .and_then(|r| w.refresh.lock().unwrap().remove(r))
            else {
                return oauth_error("invalid_grant");
            };
            let (at, rt) = w.mint(&user);
            token_response(&at, Some(&rt), ttl)
        }
        "client_credentials" => {
            let basic = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let posted = f
                .get("client_secret")
                .map(|s| format!("{}:{s}", f.get("client_id").cloned().unwrap_or_default()));
            if basic.or(posted).as_deref() != Some(&format!("svc-client:{CC_SECRET}")) {
                return oauth_error("invalid_client");
            }
            let (at, _) = w.mint("service");
            token_response(&at, None, ttl)
        }
        _ => oauth_error("unsupported_grant_type"),
    }
}

async fn authorize(State(w): State<Arc<World>>, Query(q): Query<HashMap<String, String>>) -> Response {
    assert_eq!(q.get("code_challenge_method").map(String::as_str), Some("S256"));
    let resource = q.get("resource").cloned().unwrap_or_default();
    w.resources.lock().unwrap().push(resource.clone());
    let code = format!("code-{}", w.n.fetch_add(1, Ordering::SeqCst));
    let user = w.user.lock().unwrap().clone();
    w.codes.lock().unwrap().insert(
        code.clone(),
        (
            user,
            q.get("code_challenge").cloned().unwrap_or_default(),
            resource,
        ),
    );
    let mut to = reqwest::Url::parse(&q["redirect_uri"]).unwrap();
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"])
        .append_pair("iss", &w.base());
    (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response()
}

#[derive(Clone)]
struct WhoAmI(Arc<World>);

impl rmcp::ServerHandler for WhoAmI {
    fn get_info(&self) -> rmcp::model::InitializeResult {
        rmcp::model::InitializeResult::new(rmcp::model::ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _: Option<rmcp::model::PaginatedRequestParams>,
        _: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, rmcp::ErrorData> {
        let schema = Arc::new(json!({"type": "object"}).as_object().unwrap().clone());
        Ok(rmcp::model::ListToolsResult::with_all_items(vec![
            rmcp::model::Tool::new("whoami", "Names the provider account of the token.", schema),
        ]))
    }

    async fn call_tool(
        &self,
        _: CallToolRequestParams,
        ctx: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let user = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| self.0.user_of(&p.headers))
            .unwrap_or_default();
        Ok(rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text(user)]).into())
    }
}

/// Starts the provider and the protected MCP server (`<base>/mcp`).
pub(crate) async fn world() -> Arc<World> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let w = Arc::new(World::default());
    w.access_ttl.store(3600, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    w.base.lock().unwrap().clone_from(&base);
    let prm_world = w.clone();
    let prm = move || {
        let servers = prm_world
            .authorization_servers
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| vec![prm_world.base()]);
        json!({
            "resource": format!("{}/mcp", prm_world.base()),
            "authorization_servers": servers,
            "scopes_supported": ["files"],
        })
    };
    let asm = json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "registration_endpoint": format!("{base}/register"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post"],
        "scopes_supported": ["files"],
        "authorization_response_iss_parameter_supported": true,
    });
    let mcp = StreamableHttpService::new(
        {
            let w = w.clone();
            move || Ok(WhoAmI(w.clone()))
        },
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let guard_world = w.clone();
    let challenge = format!("Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\"");
    let protected = axum::Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let ok = guard_world.user_of(req.headers()).is_some();
                let challenge = guard_world
                    .challenge
                    .lock()
                    .unwrap()
                    .clone()
                    .unwrap_or_else(|| challenge.clone());
                async move {
                    if ok {
                        next.run(req).await
                    } else {
                        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)]).into_response()
                    }
                }
            },
        ));
    let app = axum::Router::new()
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            axum::routing::get(move || std::future::ready(axum::Json(prm()))),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            axum::routing::get(move || std::future::ready(axum::Json(asm.clone()))),
        )
        .route(
            "/register",
            axum::routing::post(
                |State(w): State<Arc<World>>, axum::Json(body): axum::Json<Value>| async move {
                    let n = w.n.fetch_add(1, Ordering::SeqCst);
                    (
                        StatusCode::CREATED,
                        axum::Json(
                            json!({"client_id": format!("dcr-{n}"), "redirect_uris": body["redirect_uris"]}),
                        ),
                    )
                },
            ),
        )
        .route("/authorize", axum::routing::get(authorize))
        .route("/token", axum::routing::post(token))
        .with_state(w.clone())
        .merge(protected);
    tokio::spawn(async move { axum::serve(listener, app).await });
    w
}

/// `mcp-guard serve` on a free port with `public_url` set, trace logs in a file.
pub(crate) struct Gw {
    child: tokio::process::Child,
    pub(crate) base: String,
    pub(crate) dir: tempfile::TempDir,
}

impl Gw {
    pub(crate) async fn start(world: &World, mode: &str, extra: &str) -> Self {
        Self::start_prepared(world, mode, extra, |_| {}).await
    }

    /// Like [`Self::start`], running `prepare` on the config file first.
    pub(crate) async fn start_prepared(
        world: &World,
        mode: &str,
        extra: &str,
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let base = format!("http://127.0.0.1:{port}");
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "{AUTH}[[grants]]\nname = \"other-all\"\nroles = [\"other\"]\nnames = [\"*\"]\n\n\
             [gateway]\npublic_url = \"{base}\"\n\n\
             [servers.files]\ntransport = \"http\"\nurl = \"{}/mcp\"\n\n\
             [servers.files.oauth]\nmode = \"{mode}\"\n{extra}\n\
             [endpoints.main.servers.files]\ntools = [\"whoami\"]\n",
            world.base()
        );
        std::fs::write(dir.path().join("gateway.toml"), config).unwrap();
        prepare(&dir.path().join("gateway.toml"));
        Self::spawn(dir, base, &[]).await
    }

    async fn spawn(dir: tempfile::TempDir, base: String, env: &[(&str, &str)]) -> Self {
        let log = dir.path().join("gateway.log");
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(dir.path().join("gateway.toml"))
            .args(["--listen", base.trim_start_matches("http://")])
            .env("GW_TEST_TOKEN", TOKEN)
            .env("GW_TEST_OTHER_TOKEN", OTHER_TOKEN)
            .env("MCP_GUARD_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        // Listening, and (the servers start in the background) every server's first start done.
        for _ in 0..600 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("mcp-guard listening on ") && text.contains("upstreams started") {
                return Self { child, base, dir };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "gateway did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub(crate) async fn restart(mut self) -> Self {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
        Self::spawn(self.dir, self.base, &[]).await
    }

    pub(crate) fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("gateway.toml")
    }

    pub(crate) async fn client(&self, token: &str) -> Client {
        http_client(&format!("{}/mcp/main", self.base), token, Era::Legacy).await
    }

    /// The caller's own sign-in report (`GET /auth/upstreams`).
    pub(crate) async fn report(&self, token: &str) -> Value {
        browser()
            .get(format!("{}/auth/upstreams", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

pub(crate) fn browser() -> reqwest::Client {
    mcp_guard_core::upstream::ensure_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap();
    html[start..start + end].to_owned()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()[header::LOCATION].to_str().unwrap().to_owned()
}

/// The browser side of a sign-in: opens the ticket link, approves the consent page,
/// follows the provider, lands on the callback. Returns the callback's response.
pub(crate) async fn sign_in(start_url: &str) -> reqwest::Response {
    let b = browser();
    let page = b.get(start_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let html = page.text().await.unwrap();
    let form_url = start_url.split('?').next().unwrap();
    let approve = b
        .post(form_url)
        .form(&[
            ("ticket", hidden(&html, "ticket")),
            ("csrf", hidden(&html, "csrf")),
            ("decision", "approve".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(approve.status(), 303, "{}", approve.text().await.unwrap());
    let cookie = approve.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let at_provider = b.get(location(&approve)).send().await.unwrap();
    assert_eq!(at_provider.status(), 302);
    b.get(location(&at_provider))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn whoami(client: &Client) -> Result<String, rmcp::ServiceError> {
    client
        .call_tool(CallToolRequestParams::new("files__whoami").with_arguments(args(&json!({}))))
        .await
        .map(|r| text_of(&r))
}

pub(crate) fn error_of(e: &rmcp::ServiceError) -> (String, Value) {
    match e {
        rmcp::ServiceError::McpError(d) => (d.message.to_string(), d.data.clone().unwrap_or_default()),
        other => panic!("expected a JSON-RPC error, got {other}"),
    }
}

pub(crate) fn start_url_of(report: &Value) -> String {
    report["servers"][0]["startUrl"].as_str().unwrap().to_owned()
}

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn personal_oauth_signs_each_principal_in_and_keeps_tokens_apart() {
    let w = world().await;
    let gw = Gw::start(&w, "personal", "").await;

    // Nobody has signed in: alice's report names the server as missing, with a link.
    let report = gw.report(TOKEN).await;
    assert_eq!(report["principal"], "alice");
    assert_eq!(report["servers"][0]["state"], "missing", "{report}");
    let alice_link = start_url_of(&report);
    assert!(alice_link.starts_with(&format!("{}/auth/files/start?ticket=", gw.base)));
    // Without the gateway credential there is no report.
    let anon = browser()
        .get(format!("{}/auth/upstreams", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);

    // The consent page names the upstream, its authorization server, the scopes and the
    // redirect URI; nothing is created at the provider before approval.
    let page = browser()
        .get(&alice_link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for shown in [
        "files".to_owned(),
        w.base(),
        format!("{}/authorize", w.base()),
        format!("{}/auth/files/callback", gw.base),
        "files".to_owned(),
    ] {
        assert!(page.contains(&shown), "consent page lacks {shown}: {page}");
    }
    assert!(w.codes.lock().unwrap().is_empty());

    // A missing or wrong CSRF token is refused and spends nothing.
    let form_url = format!("{}/auth/files/start", gw.base);
    for csrf in ["", "00ff"] {
        let r = browser()
            .post(&form_url)
            .form(&[
                ("ticket", hidden(&page, "ticket")),
                ("csrf", csrf.to_owned()),
                ("decision", "approve".to_owned()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "csrf {csrf:?}");
    }

    // Alice signs in as her provider account.
    *w.user.lock().unwrap() = "alice-at-provider".into();
    let done = sign_in(&alice_link).await;
    assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());
    // The ticket is spent.
    let again = browser().get(&alice_link).send().await.unwrap();
    assert_eq!(again.status(), 400);
    // PKCE S256 and the resource went to the provider, on both requests.
    assert!(
        w.resources
            .lock()
            .unwrap()
            .iter()
            .all(|r| *r == format!("{}/mcp", w.base()))
    );

    let alice = gw.client(TOKEN).await;
    assert!(
        eventually(10, async || whoami(&alice).await.is_ok()).await,
        "alice's call never reached the upstream: {:?}\n{}",
        whoami(&alice).await,
        std::fs::read_to_string(gw.dir.path().join("gateway.log"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("files"))
            .take(60)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(whoami(&alice).await.unwrap(), "alice-at-provider");

    // Bob has not signed in: his call is refused with his own link, never alice's token.
    let bob = gw.client(OTHER_TOKEN).await;
    let e = whoami(&bob).await.unwrap_err();
    let (message, data) = error_of(&e);
    assert!(message.contains("sign in"), "{message}");
    let bob_link = data["authorizationRequired"]["authorizeUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(data["authorizationRequired"]["principal"], "bob");
    assert!(bob_link.starts_with(&format!("{}/auth/files/start?ticket=", gw.base)));
    // A ticket is bound to its server: bob's link does not open another server's flow.
    let wrong_server = bob_link.replace("/auth/files/", "/auth/other/");
    assert_eq!(browser().get(&wrong_server).send().await.unwrap().status(), 400);

    // Bob signs in with his own account; each principal reaches the upstream as themselves.
    *w.user.lock().unwrap() = "bob-at-provider".into();
    assert_eq!(sign_in(&bob_link).await.status(), 200);
    assert_eq!(whoami(&bob).await.unwrap(), "bob-at-provider");
    assert_eq!(whoami(&alice).await.unwrap(), "alice-at-provider");

    // The state handed to the provider is single-use: replaying a callback is refused.
    *w.user.lock().unwrap() = "mallory-at-provider".into();
    let link = gw.report(TOKEN).await; // alice is connected: no link in the report
    assert_eq!(link["servers"][0]["state"], "connected");
    assert!(link["servers"][0]["startUrl"].is_null());

    // Access token expired: refreshed before use.
    w.access_ttl.store(1, Ordering::SeqCst);
    w.revoke_access("alice-at-provider");
    // Revoked on the server (401): refreshed once, the call succeeds.
    assert_eq!(whoami(&alice).await.unwrap(), "alice-at-provider");
    let refreshes = w
        .grants
        .lock()
        .unwrap()
        .iter()
        .filter(|g| *g == "refresh_token")
        .count();
    assert!(refreshes >= 1, "no refresh after a 401");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(whoami(&alice).await.unwrap(), "alice-at-provider");
    let after = w
        .grants
        .lock()
        .unwrap()
        .iter()
        .filter(|g| *g == "refresh_token")
        .count();
    assert!(after > refreshes, "an expired token was not refreshed");

    // The provider rejects the refresh: alice needs to sign in again, persisted.
    w.reject_refresh.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = whoami(&alice).await.unwrap_err();
    let (message, data) = error_of(&e);
    assert!(message.contains("sign in again"), "{message}");
    assert_eq!(data["authorizationRequired"]["reauthenticate"], true);
    assert!(data["authorizationRequired"]["authorizeUrl"].is_string());
    let _ = alice.cancel().await;
    let _ = bob.cancel().await;
    let gw = gw.restart().await;
    let report = gw.report(TOKEN).await;
    assert_eq!(
        report["servers"][0]["state"], "needs_reauthentication",
        "{report}"
    );
    let out = std::process::Command::new(BIN)
        .args(["credentials", "list", "--principal", "alice", "--config"])
        .arg(gw.config())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("files") && listed.contains("needs re-authentication"),
        "{listed}"
    );

    // Signing in again replaces the grant.
    w.reject_refresh.store(false, Ordering::SeqCst);
    w.access_ttl.store(3600, Ordering::SeqCst);
    *w.user.lock().unwrap() = "alice-at-provider".into();
    assert_eq!(sign_in(&start_url_of(&report)).await.status(), 200);
    let alice = gw.client(TOKEN).await;
    assert!(eventually(10, async || whoami(&alice).await.is_ok()).await);
    assert_eq!(gw.report(TOKEN).await["servers"][0]["state"], "connected");
    let _ = alice.cancel().await;

    assert_no_canary(gw).await;
}

/// No token the provider issued appears in any file the gateway wrote (trace logs,
/// audit), nor in the sealed store in clear.
async fn assert_no_canary(mut gw: Gw) {
    let _ = gw.child.kill().await;
    let _ = gw.child.wait().await;
    for entry in walk(gw.dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in [CANARY, CC_SECRET] {
            assert!(!text.contains(secret), "{secret} found in {}", entry.display());
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn sign_in_state_is_single_use_and_bound_to_the_browser() {
    let w = world().await;
    let gw = Gw::start(&w, "personal", "").await;
    *w.user.lock().unwrap() = "alice-at-provider".into();
    let link = start_url_of(&gw.report(TOKEN).await);
    let b = browser();
    let html = b.get(&link).send().await.unwrap().text().await.unwrap();
    let approve = b
        .post(format!("{}/auth/files/start", gw.base))
        .form(&[
            ("ticket", hidden(&html, "ticket")),
            ("csrf", hidden(&html, "csrf")),
            ("decision", "approve".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(approve.status(), 303);
    let cookie = approve.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let callback = location(&b.get(location(&approve)).send().await.unwrap());

    // Another browser (no cookie) cannot complete it, and that spends the state.
    let stolen = b.get(&callback).send().await.unwrap();
    assert_eq!(stolen.status(), 400);
    let replay = b
        .get(&callback)
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400, "a spent state was accepted");
    // An unknown state is refused.
    let forged = b
        .get(format!("{}/auth/files/callback?code=x&state=forged", gw.base))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert_eq!(gw.report(TOKEN).await["servers"][0]["state"], "missing");

    // A ticket signed for alice cannot be altered to name bob.
    let link = start_url_of(&gw.report(TOKEN).await);
    let ticket = link.split("ticket=").nth(1).unwrap();
    let (body, sig) = ticket.split_once('.').unwrap();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = String::from_utf8(engine.decode(body).unwrap())
        .unwrap()
        .replace("\"alice\"", "\"bob\"");
    let forged = format!(
        "{}/auth/files/start?ticket={}.{sig}",
        gw.base,
        engine.encode(payload)
    );
    assert_eq!(browser().get(&forged).send().await.unwrap().status(), 400);
    // The untouched ticket still works, and signs alice (not bob) in.
    assert_eq!(sign_in(&link).await.status(), 200);
    assert_eq!(gw.report(TOKEN).await["servers"][0]["state"], "connected");
    assert_eq!(gw.report(OTHER_TOKEN).await["servers"][0]["state"], "missing");
    assert_no_canary(gw).await;
}

#[tokio::test]
async fn shared_oauth_uses_client_credentials_and_renews_them() {
    let w = world().await;
    // The client secret comes from the credential store.
    let gw = Gw::start_prepared(
        &w,
        "shared",
        "client_id = \"svc-client\"\nclient_secret = \"${SVC_SECRET}\"\n",
        |config| {
            let out = std::process::Command::new(BIN)
                .args([
                    "credentials",
                    "set",
                    "--server",
                    "files",
                    "--name",
                    "SVC_SECRET",
                    "--value-env",
                    "S",
                    "--config",
                ])
                .arg(config)
                .env("S", CC_SECRET)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        },
    )
    .await;
    let alice = gw.client(TOKEN).await;
    assert!(
        eventually(10, async || whoami(&alice).await.is_ok_and(|u| u == "service")).await,
        "the shared token never worked"
    );
    let bob = gw.client(OTHER_TOKEN).await;
    assert_eq!(whoami(&bob).await.unwrap(), "service");
    // Revoked at the server: a new client-credentials token, the call succeeds.
    let before = w.grants.lock().unwrap().len();
    w.revoke_access("service");
    assert_eq!(whoami(&alice).await.unwrap(), "service");
    assert!(
        w.grants.lock().unwrap()[before..]
            .iter()
            .any(|g| g == "client_credentials")
    );
    assert!(w.grants.lock().unwrap().iter().all(|g| g == "client_credentials"));
    let _ = alice.cancel().await;
    let _ = bob.cancel().await;
    assert_no_canary(gw).await;
}

#[test]
fn oauth_settings_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let server = "[servers.h]\ntransport = \"http\"\nurl = \"http://127.0.0.1:1/mcp\"\n";
    let cases = [
        (
            format!("{server}[servers.h.oauth]\nmode = \"personal\"\n"),
            "servers.h.oauth.mode",
            "gateway.public_url",
        ),
        (
            format!("{server}[servers.h.oauth]\nmode = \"shared\"\nclient_id = \"x\"\n"),
            "servers.h.oauth.mode",
            "client_id and client_secret",
        ),
        (
            format!(
                "{server}[servers.h.oauth]\nmode = \"shared\"\nclient_id = \"x\"\nclient_secret = \"inline\"\n"
            ),
            "servers.h.oauth.client_secret",
            "placeholder",
        ),
        (
            format!(
                "[gateway]\npublic_url = \"http://127.0.0.1:2\"\n{server}headers = {{ Authorization = \"Bearer ${{T}}\" }}\n[servers.h.oauth]\nmode = \"personal\"\n"
            ),
            "servers.h.oauth",
            "Authorization header",
        ),
        (
            format!(
                "[gateway]\npublic_url = \"http://127.0.0.1:2\"\n{server}headers = {{ X-T = \"${{T}}\" }}\npersonal = [\"T\"]\n[servers.h.oauth]\nmode = \"personal\"\n"
            ),
            "servers.h.personal",
            "cannot be combined",
        ),
    ];
    for (config, entry, message) in cases {
        std::fs::write(&path, &config).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{config}");
        assert!(err.contains(entry) && err.contains(message), "{entry}: {err}");
    }
}
