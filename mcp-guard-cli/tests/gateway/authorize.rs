//! The built-in authorization server over real HTTP: registration, sign-in with a
//! one-time link, consent with a duration, personal tokens, the code exchange with
//! PKCE, refresh rotation, revocation, and every refusal the specifications name.
#![allow(
    clippy::too_many_lines,
    clippy::many_single_char_names,
    reason = "each test is one scenario against one gateway, step by step"
)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::{
    BIN, Era, GatewayProc, fixture, free_port, http_client, names, text_of, within_promise,
};

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92bIOpxTd5P8YE2xGk0Gd6rrHxsNw1";

pub(crate) fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

fn config(port: u16, personal: bool) -> String {
    let mut c = format!(
        "[gateway]\npublic_url = \"http://127.0.0.1:{port}\"\n\n\
[auth.server]\ndurations = [\"1d\", \"4s\"]\n\n\
[[auth.server.users]]\nid = \"alice\"\nroles = [\"eng\"]\n\n\
[[auth.server.users]]\nid = \"mallory\"\nroles = [\"eng\"]\n\n\
[[grants]]\nroles = [\"eng\"]\nnames = [\"*\"]\n\n"
    );
    c.push_str(&fixture("alpha", &[]));
    if personal {
        c.push_str(&fixture("desk", &[]).replace(
            "transport = \"stdio\"\n",
            "transport = \"stdio\"\npersonal = [\"DESK_TOKEN\"]\nenv = { DESK_TOKEN = \"${DESK_TOKEN}\" }\n",
        ));
        c.push_str("[endpoints.main.servers.desk]\ntools = [\"*\"]\n");
    }
    c.push_str(
        "[endpoints.main]\ndescription = \"Main tools\"\n[endpoints.main.servers.alpha]\ntools = [\"*\"]\n",
    );
    c.push_str("[endpoints.other.servers.alpha]\ntools = [\"*\"]\n");
    c
}

/// A browser stand-in: no redirects followed, cookies kept by name.
pub(crate) struct Browser {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) cookies: HashMap<String, String>,
}

impl Browser {
    pub(crate) fn new(base: &str) -> Self {
        mcp_guard_core::upstream::ensure_crypto_provider();
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookies: HashMap::new(),
        }
    }

    fn absorb(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (kv, _) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            if val.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), val.to_owned());
            }
        }
    }

    pub(crate) fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(crate) async fn get(&mut self, path: &str) -> (StatusCode, String, String) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let r = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    pub(crate) async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    /// (status, Location, body)
    pub(crate) async fn finish(&mut self, r: reqwest::Response) -> (StatusCode, String, String) {
        self.absorb(&r);
        let status = r.status();
        let location = r
            .headers()
            .get("location")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        (status, location, r.text().await.unwrap())
    }
}

pub(crate) fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        + marker.len();
    body[start..start + body[start..].find('"').unwrap()].to_owned()
}

fn query(location: &str) -> HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

pub(crate) fn login_link(gw: &GatewayProc, user: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args(["users", "login-link", user, "--config"])
        .arg(gw.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn register(b: &Browser) -> String {
    let r = b
        .http
        .post(format!("{}/oauth/register", b.base))
        .json(&json!({"redirect_uris": [REDIRECT], "client_name": "Test <Client>", "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    v["client_id"].as_str().unwrap().to_owned()
}

fn authorize_url(base: &str, client: &str, endpoint: &str, extra: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(&format!("{base}/oauth/authorize")).unwrap();
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("state", "st-1")
            .append_pair("code_challenge", &challenge(VERIFIER))
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", &format!("{base}/mcp/{endpoint}"));
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    u.to_string()
}

/// Signs `user` in through the form a consent URL shows first.
async fn sign_in(b: &mut Browser, gw: &GatewayProc, consent: &str, user: &str) {
    let (status, _, page) = b.get(consent).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Sign in"), "{page}");
    let csrf = hidden(&page, "csrf");
    let next = hidden(&page, "next");
    let link = login_link(gw, user);
    let (status, location, _) = b
        .post(
            "/oauth/signin",
            &[("csrf", &csrf), ("next", &next), ("code", &link)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, next);
}

/// From the authorize URL to the client's redirect with a code, choosing `duration`.
async fn consent(b: &mut Browser, gw: &GatewayProc, client: &str, duration: &str) -> HashMap<String, String> {
    let (status, consent, _) = b.get(&authorize_url(&gw.base, client, "main", &[])).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(consent.starts_with("/oauth/consent?request="), "{consent}");
    if b.cookies.keys().all(|k| !k.starts_with("mcp-guard-session")) {
        sign_in(b, gw, &consent, "alice").await;
    }
    let (status, _, page) = b.get(&consent).await;
    assert_eq!(status, StatusCode::OK);
    for shown in [
        "Test &lt;Client&gt;",
        REDIRECT,
        "/mcp/main",
        "Main tools",
        "alpha__echo",
        "Access duration",
    ] {
        assert!(page.contains(shown), "consent page lacks {shown}: {page}");
    }
    let (status, location, _) = b
        .post(
            "/oauth/consent",
            &[
                ("request", &hidden(&page, "request")),
                ("csrf", &hidden(&page, "csrf")),
                ("duration", duration),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.starts_with(REDIRECT), "{location}");
    query(&location)
}

async fn exchange(b: &Browser, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = b
        .http
        .post(format!("{}/oauth/token", b.base))
        .form(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    (r.status(), r.json().await.unwrap())
}

async fn code_for_tokens(b: &Browser, client: &str, code: &str) -> (StatusCode, Value) {
    let resource = format!("{}/mcp/main", b.base);
    exchange(
        b,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", client),
            ("code_verifier", VERIFIER),
            ("resource", &resource),
        ],
    )
    .await
}

async fn mcp_status(url: &str, token: &str) -> StatusCode {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(token)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}))
        .send()
        .await
        .unwrap();
    r.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_consent_and_a_token_that_works_only_where_and_while_granted() {
    let port = free_port();
    let gw = GatewayProc::start_listening(&config(port, false), &format!("127.0.0.1:{port}")).await;
    let mut b = Browser::new(&gw.base);

    // Discovery: the endpoint's metadata names this server; its metadata is RFC 8414.
    let prm: Value = b
        .http
        .get(format!(
            "{}/.well-known/oauth-protected-resource/mcp/main",
            gw.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["authorization_servers"][0], gw.base);
    let meta: Value = b
        .http
        .get(format!("{}/.well-known/oauth-authorization-server", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], gw.base);
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    // Browser-based clients may call the JSON endpoints from their own origin.
    let pre = b
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/oauth/token", gw.base))
        .header("origin", "http://localhost:6274")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");

    let client = register(&b).await;
    let q = consent(&mut b, &gw, &client, "1d").await;
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], gw.base);
    let (status, tokens) = code_for_tokens(&b, &client, &q["code"]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap();
    assert!(access.starts_with("mcpo_"));
    assert!(tokens["expires_in"].as_u64().unwrap() <= 3_600);

    // A real MCP client lists and calls with it, in both eras.
    for era in [Era::Legacy, Era::Modern] {
        let c = http_client(&gw.url("main"), access, era).await;
        assert!(names(&c).await.contains(&"alpha__echo".to_owned()));
        let r = c
            .call_tool(
                rmcp::model::CallToolRequestParams::new("alpha__echo")
                    .with_arguments(crate::support::args(&json!({"text": "hi"}))),
            )
            .await
            .unwrap();
        assert!(text_of(&r).contains("hi"));
        c.cancel().await.unwrap();
    }
    // Not on another endpoint (the resource it was granted for is /mcp/main).
    assert_eq!(
        mcp_status(&gw.url("other"), access).await,
        StatusCode::UNAUTHORIZED
    );

    // Refresh rotates; the old refresh token, presented again, revokes the grant.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, next) = exchange(
        &b,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &client),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let next_access = next["access_token"].as_str().unwrap();
    assert_eq!(mcp_status(&gw.url("main"), next_access).await, StatusCode::OK);
    let (status, err) = exchange(
        &b,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &client),
        ],
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(
        mcp_status(&gw.url("main"), next_access).await,
        StatusCode::UNAUTHORIZED
    );

    // The code is single use: presented again, refused, and what it granted is revoked.
    let q = consent(&mut b, &gw, &client, "1d").await;
    let (status, t) = code_for_tokens(&b, &client, &q["code"]).await;
    assert_eq!(status, StatusCode::OK);
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(mcp_status(&gw.url("main"), &access).await, StatusCode::OK);
    let (status, err) = code_for_tokens(&b, &client, &q["code"]).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(
        mcp_status(&gw.url("main"), &access).await,
        StatusCode::UNAUTHORIZED
    );

    // RFC 7009: revoking the refresh token ends the grant.
    let q = consent(&mut b, &gw, &client, "1d").await;
    let (_, t) = code_for_tokens(&b, &client, &q["code"]).await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    let r = b
        .http
        .post(format!("{}/oauth/revoke", gw.base))
        .form(&[
            ("token", t["refresh_token"].as_str().unwrap()),
            ("client_id", &client),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        mcp_status(&gw.url("main"), &access).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chosen_duration_ends_access_and_session_revocation_is_immediate() {
    let port = free_port();
    let gw = GatewayProc::start_listening(&config(port, false), &format!("127.0.0.1:{port}")).await;
    let mut b = Browser::new(&gw.base);
    let client = register(&b).await;

    // A 4-second grant: the access token is capped at it and stops working with it.
    let q = consent(&mut b, &gw, &client, "4s").await;
    let (_, t) = code_for_tokens(&b, &client, &q["code"]).await;
    assert!(t["expires_in"].as_u64().unwrap() <= 4, "{t}");
    assert!(t.get("refresh_token").is_none(), "no refresh past the grant: {t}");
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(mcp_status(&gw.url("main"), &access).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(4_300)).await;
    assert_eq!(
        mcp_status(&gw.url("main"), &access).await,
        StatusCode::UNAUTHORIZED
    );

    // `mcp-guard sessions revoke` in another process: refused within 1 s.
    let q = consent(&mut b, &gw, &client, "1d").await;
    let (_, t) = code_for_tokens(&b, &client, &q["code"]).await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(mcp_status(&gw.url("main"), &access).await, StatusCode::OK);
    let out = std::process::Command::new(BIN)
        .args(["sessions", "list", "--json", "--config"])
        .arg(gw.config())
        .output()
        .unwrap();
    let listed = String::from_utf8(out.stdout).unwrap();
    let session: Value = listed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|s| s["state"] == "active")
        .expect("an active session");
    assert!(
        session["credential"].as_str().unwrap().starts_with("grant:"),
        "{session}"
    );
    let start = Instant::now();
    let out = std::process::Command::new(BIN)
        .args(["sessions", "revoke", session["id"].as_str().unwrap(), "--config"])
        .arg(gw.config())
        .output()
        .unwrap();
    assert!(out.status.success());
    loop {
        if mcp_status(&gw.url("main"), &access).await == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still accepted after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    within_promise(
        "a revoked session refused",
        start.elapsed(),
        Duration::from_secs(1),
    );
    // Its refresh token is dead too.
    let (status, _) = exchange(
        &b,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
            ("client_id", &client),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_errors_the_specifications_name() {
    let port = free_port();
    let gw = GatewayProc::start_listening(&config(port, false), &format!("127.0.0.1:{port}")).await;
    let mut b = Browser::new(&gw.base);
    let client = register(&b).await;
    let base = gw.base.clone();

    // A wrong redirect_uri: an error page, never a redirect to it.
    let url = authorize_url(&base, &client, "main", &[]).replace("127.0.0.1%3A9", "127.0.0.1%3A10");
    let (status, location, page) = b.get(&url).await;
    assert_eq!((status, location.as_str()), (StatusCode::BAD_REQUEST, ""));
    assert!(page.contains("redirect_uri does not match"), "{page}");
    // An unknown client: the same.
    let (status, location, _) = b.get(&authorize_url(&base, "nobody", "main", &[])).await;
    assert_eq!((status, location.as_str()), (StatusCode::BAD_REQUEST, ""));

    // Errors after the redirect URI is trusted go back to the client.
    let cases: [(&str, Change, &str); 5] = [
        (
            "no PKCE",
            Box::new(|u: String| strip(&u, &["code_challenge", "code_challenge_method"])),
            "invalid_request",
        ),
        (
            "plain PKCE",
            Box::new(|u: String| u.replace("code_challenge_method=S256", "code_challenge_method=plain")),
            "invalid_request",
        ),
        (
            "no method (plain by default)",
            Box::new(|u: String| strip(&u, &["code_challenge_method"])),
            "invalid_request",
        ),
        (
            "unknown endpoint",
            Box::new(|u: String| u.replace("%2Fmcp%2Fmain", "%2Fmcp%2Fnope")),
            "invalid_target",
        ),
        (
            "token response type",
            Box::new(|u: String| u.replace("response_type=code", "response_type=token")),
            "unsupported_response_type",
        ),
    ];
    for (case, change, error) in cases {
        let (status, location, _) = b.get(&change(authorize_url(&base, &client, "main", &[]))).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{case}");
        let q = query(&location);
        assert_eq!(
            q.get("error").map(String::as_str),
            Some(error),
            "{case}: {location}"
        );
        assert_eq!(q["state"], "st-1", "{case}");
    }

    // A resource for another endpoint at the token endpoint.
    let q = consent(&mut b, &gw, &client, "1d").await;
    let other = format!("{base}/mcp/other");
    let (status, err) = exchange(
        &b,
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", REDIRECT),
            ("client_id", &client),
            ("code_verifier", VERIFIER),
            ("resource", &other),
        ],
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
    // A wrong verifier, a missing one, a changed redirect_uri.
    for (case, form_change, error) in [
        (
            "wrong verifier",
            ("code_verifier", "x".repeat(43)),
            "invalid_grant",
        ),
        (
            "redirect changed",
            ("redirect_uri", "http://127.0.0.1:10/callback".to_owned()),
            "invalid_grant",
        ),
    ] {
        let q = consent(&mut b, &gw, &client, "1d").await;
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", q["code"].clone()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("client_id", client.clone()),
            ("code_verifier", VERIFIER.to_owned()),
        ];
        for f in &mut form {
            if f.0 == form_change.0 {
                f.1.clone_from(&form_change.1);
            }
        }
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, err) = exchange(&b, &form).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(error)),
            "{case}: {err}"
        );
    }
    let q = consent(&mut b, &gw, &client, "1d").await;
    let (status, err) = exchange(
        &b,
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", REDIRECT),
            ("client_id", &client),
        ],
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{err}"
    );

    // The consent form without its CSRF token, or with another's: 403, nothing issued.
    let (_, consent_url, _) = b.get(&authorize_url(&base, &client, "main", &[])).await;
    let (_, _, page) = b.get(&consent_url).await;
    let request = hidden(&page, "request");
    for csrf in ["", "forged"] {
        let (status, location, body) = b
            .post(
                "/oauth/consent",
                &[
                    ("request", &request),
                    ("csrf", csrf),
                    ("duration", "1d"),
                    ("decision", "allow"),
                ],
            )
            .await;
        assert_eq!((status, location.as_str()), (StatusCode::FORBIDDEN, ""), "{body}");
        assert!(body.contains("CSRF"));
    }
    // Another signed-in user cannot take up alice's request.
    let mut m = Browser::new(&base);
    sign_in(&mut m, &gw, &consent_url, "mallory").await;
    let (status, _, _) = m.get(&consent_url).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A sign-in link is single use.
    let link = login_link(&gw, "alice");
    let mut c = Browser::new(&base);
    let (_, _, page) = c.get("/oauth/signin").await;
    let csrf = hidden(&page, "csrf");
    let (status, _, _) = c
        .post(
            "/oauth/signin",
            &[("csrf", &csrf), ("next", "/oauth/signin"), ("code", &link)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut d = Browser::new(&base);
    let (_, _, page) = d.get("/oauth/signin").await;
    let (_, _, page) = d
        .post(
            "/oauth/signin",
            &[
                ("csrf", &hidden(&page, "csrf")),
                ("next", "/oauth/signin"),
                ("code", &link),
            ],
        )
        .await;
    assert!(page.contains("not valid"), "{page}");

    // Every page forbids framing and caching.
    let r = b
        .http
        .get(format!("{base}{consent_url}"))
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["cache-control"], "no-store");

    // Registration refuses unsafe redirect URIs.
    for uri in [
        "http://evil.example/cb",
        "javascript:alert(1)",
        "https://x.example/cb#f",
    ] {
        let r = b
            .http
            .post(format!("{base}/oauth/register"))
            .json(&json!({"redirect_uris": [uri]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{uri}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "invalid_redirect_uri", "{uri}");
    }
}

type Change = Box<dyn Fn(String) -> String>;

fn strip(url: &str, params: &[&str]) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| !params.contains(&k.as_str()))
        .collect();
    u.query_pairs_mut().clear().extend_pairs(kept);
    u.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_tokens_are_completed_before_the_client_gets_its_code() {
    let port = free_port();
    let gw = GatewayProc::start_listening(&config(port, true), &format!("127.0.0.1:{port}")).await;
    let mut b = Browser::new(&gw.base);
    let client = register(&b).await;
    let (_, consent_url, _) = b.get(&authorize_url(&gw.base, &client, "main", &[])).await;
    sign_in(&mut b, &gw, &consent_url, "alice").await;
    let (_, _, page) = b.get(&consent_url).await;
    let (status, location, _) = b
        .post(
            "/oauth/consent",
            &[
                ("request", &hidden(&page, "request")),
                ("csrf", &hidden(&page, "csrf")),
                ("duration", "1d"),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.starts_with("/oauth/connect?request="), "{location}");
    let (_, _, page) = b.get(&location).await;
    assert!(
        page.contains("Needs a token") && page.contains(" disabled>"),
        "{page}"
    );
    // Continuing early is refused.
    let (status, _, body) = b
        .post(
            "/oauth/connect",
            &[
                ("request", &hidden(&page, "request")),
                ("csrf", &hidden(&page, "csrf")),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("still need"), "{body}");
    // The token form stores alice's personal value; the server turns done.
    let (status, back, _) = b
        .post(
            "/oauth/connect/token",
            &[
                ("request", &hidden(&page, "request")),
                ("csrf", &hidden(&page, "csrf")),
                ("server", "desk"),
                ("value:DESK_TOKEN", "alice-desk-secret-1"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, page) = b.get(&back).await;
    assert!(
        page.contains("state-done") && !page.contains(" disabled>"),
        "{page}"
    );
    let (status, location, _) = b
        .post(
            "/oauth/connect",
            &[
                ("request", &hidden(&page, "request")),
                ("csrf", &hidden(&page, "csrf")),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let q = query(&location);
    let (_, t) = code_for_tokens(&b, &client, &q["code"]).await;
    let access = t["access_token"].as_str().unwrap();
    // The personal value reached alice's own upstream process.
    let c = http_client(&gw.url("main"), access, Era::Modern).await;
    let r = c
        .call_tool(
            rmcp::model::CallToolRequestParams::new("desk__getenv")
                .with_arguments(crate::support::args(&json!({"name": "DESK_TOKEN"}))),
        )
        .await
        .unwrap();
    // The upstream echoes the value it received; the gateway's scrubber replaces the
    // exact credential value on the way back, so seeing the placeholder proves it
    // arrived (and never reaches the client).
    assert_eq!(text_of(&r), "[REDACTED_SECRET]");
    c.cancel().await.unwrap();
    // `mcp-guard status --principal` shows each server's state and hers.
    let out = std::process::Command::new(BIN)
        .args(["status", "--url", &gw.base, "--principal", "alice", "--config"])
        .arg(gw.config())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("personal credentials of alice")
            && text.contains("DESK_TOKEN")
            && text.contains(" set"),
        "{text}"
    );
    let out = std::process::Command::new(BIN)
        .args(["status", "--url", &gw.base, "--principal", "bob", "--config"])
        .arg(gw.config())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("missing"));
    // Her own page lists the client and the credential; she can replace the token and
    // revoke the client's access herself.
    let (status, _, page) = b.get("/oauth/account").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Test &lt;Client&gt;") && page.contains("state-done") && page.contains("Replace token"),
        "{page}"
    );
    let grant = page
        .split("id=\"revoke-")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let (status, _, page) = b
        .post(
            "/oauth/account/revoke",
            &[("csrf", &hidden(&page, "csrf")), ("grant", &grant)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Access revoked") && page.contains("No client holds access"),
        "{page}"
    );
    assert_eq!(
        mcp_status(&gw.url("main"), access).await,
        StatusCode::UNAUTHORIZED
    );
    // Someone else's grant id is not hers to revoke.
    let (status, _, _) = b
        .post(
            "/oauth/account/revoke",
            &[("csrf", &hidden(&page, "csrf")), ("grant", "000000000000")],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The value is sealed at rest, not in the clear.
    let store = std::fs::read(gw.dir.path().join("mcp-guard-credentials.json")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&store).contains("alice-desk-secret-1"));
}

/// A small OpenID Connect provider on 127.0.0.1 standing in for the company's
/// identity provider: it signs in "dana" without asking and signs ID tokens with the
/// test RSA key. `mode` breaks one thing on purpose.
async fn oidc_provider(mode: &'static str) -> String {
    use axum::extract::{Form, Query, State};
    use axum::routing::{get, post};
    type Seen = std::sync::Arc<std::sync::Mutex<HashMap<String, (String, String)>>>;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Seen::default();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/fixtures");
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("jwks.json")).unwrap()).unwrap();
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(fixtures.join("jwt-test-rsa.pem")).unwrap())
            .unwrap();
    let iss = issuer.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get({
                let i = issuer.clone();
                move || async move {
                    axum::Json(json!({"issuer": i, "authorization_endpoint": format!("{i}/authorize"),
                        "token_endpoint": format!("{i}/token"), "jwks_uri": format!("{i}/jwks")}))
                }
            }),
        )
        .route("/jwks", get(move || async move { axum::Json(jwks) }))
        .route(
            "/authorize",
            get(|State(seen): State<Seen>, Query(q): Query<HashMap<String, String>>| async move {
                assert_eq!(q["code_challenge_method"], "S256");
                seen.lock().unwrap().insert("code-1".into(), (q["nonce"].clone(), q["code_challenge"].clone()));
                let to = format!("{}?code=code-1&state={}", q["redirect_uri"], q["state"]);
                axum::response::Redirect::to(&to)
            }),
        )
        .route(
            "/token",
            post(move |State(seen): State<Seen>, headers: axum::http::HeaderMap, Form(f): Form<HashMap<String, String>>| {
                let (key, iss) = (key.clone(), iss.clone());
                async move {
                    let basic = base64::engine::general_purpose::STANDARD.encode("mcp-guard:oidc-client-secret-1");
                    assert_eq!(headers["authorization"], format!("Basic {basic}"));
                    let (nonce, challenge) = seen.lock().unwrap().remove(&f["code"]).expect("a code issued once");
                    assert_eq!(super::authorize::challenge(&f["code_verifier"]), challenge);
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                    let claims = json!({"iss": iss, "sub": "dana", "aud": if mode == "wrong-aud" { "someone-else" } else { "mcp-guard" },
                        "exp": now + 300, "iat": now, "nonce": if mode == "bad-nonce" { "forged" } else { nonce.as_str() },
                        "roles": ["eng"]});
                    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
                    h.kid = Some("test-key-1".into());
                    axum::Json(json!({"id_token": jsonwebtoken::encode(&h, &claims, &key).unwrap(), "access_token": "x", "token_type": "Bearer"}))
                }
            }),
        )
        .with_state(seen);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    issuer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_at_an_openid_connect_provider() {
    for mode in ["ok", "bad-nonce", "wrong-aud"] {
        let idp = oidc_provider(mode).await;
        let port = free_port();
        let mut c = config(port, false);
        c = c.replace(
            "[[auth.server.users]]\nid = \"alice\"\nroles = [\"eng\"]\n\n[[auth.server.users]]\nid = \"mallory\"\nroles = [\"eng\"]\n\n",
            &format!("[auth.server.oidc]\nissuer = \"{idp}\"\nclient_id = \"mcp-guard\"\nclient_secret = \"${{OIDC_SECRET}}\"\nroles_claim = \"roles\"\ndisplay_name = \"Test IdP\"\n\n"),
        );
        let gw = GatewayProc::start_listening_with_env(
            &c,
            &format!("127.0.0.1:{port}"),
            &[("OIDC_SECRET", "oidc-client-secret-1")],
        )
        .await;
        let mut b = Browser::new(&gw.base);
        let client = register(&b).await;
        let (_, consent_url, _) = b.get(&authorize_url(&gw.base, &client, "main", &[])).await;
        let (_, _, page) = b.get(&consent_url).await;
        assert!(page.contains("Sign in with Test IdP"), "{page}");
        let (status, to_idp, _) = b
            .get(&format!(
                "/oauth/signin/oidc?next={}",
                url::form_urlencoded::byte_serialize(consent_url.as_bytes()).collect::<String>()
            ))
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(
            to_idp.starts_with(&idp) && to_idp.contains("nonce=") && to_idp.contains("code_challenge="),
            "{to_idp}"
        );
        let r = b.http.get(&to_idp).send().await.unwrap();
        let back = r.headers()["location"].to_str().unwrap().to_owned();
        // The callback from another browser (no state cookie) is refused.
        let mut other = Browser::new(&gw.base);
        let (status, _, _) = other.get(&back).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{mode}");
        let (status, next, body) = b.get(&back).await;
        match mode {
            "ok" => {
                assert_eq!(
                    (status, next.as_str()),
                    (StatusCode::SEE_OTHER, consent_url.as_str()),
                    "{body}"
                );
                let (_, _, page) = b.get(&consent_url).await;
                assert!(
                    page.contains("Signed in as <strong>dana</strong>") && page.contains("alpha__echo"),
                    "{page}"
                );
                // The state was single use.
                let (status, _, _) = b.get(&back).await;
                assert_eq!(status, StatusCode::BAD_REQUEST);
            }
            "bad-nonce" => assert!(
                status == StatusCode::BAD_REQUEST && body.contains("nonce"),
                "{body}"
            ),
            _ => assert!(
                status == StatusCode::BAD_REQUEST && body.contains("ID token is not valid"),
                "{body}"
            ),
        }
    }
}

/// Serves a Client ID Metadata Document on 127.0.0.1; `claimed` is the `client_id`
/// it states (its own URL unless a test lies).
async fn metadata_document(claimed: Option<&str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/clients/e2e.json", listener.local_addr().unwrap());
    let doc = json!({
        "client_id": claimed.unwrap_or(&url),
        "client_name": "Metadata Document Client",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
    });
    let app = axum::Router::new().route(
        "/clients/e2e.json",
        axum::routing::get(move || async move { axum::Json(doc) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_identified_by_a_metadata_document() {
    let port = free_port();
    let c = config(port, false).replace(
        "[auth.server]\n",
        "[auth.server]\ndangerously_allow_private_client_metadata = true\n",
    );
    let gw = GatewayProc::start_listening(&c, &format!("127.0.0.1:{port}")).await;
    let mut b = Browser::new(&gw.base);
    let client = metadata_document(None).await;
    let (status, consent_url, body) = b.get(&authorize_url(&gw.base, &client, "main", &[])).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    sign_in(&mut b, &gw, &consent_url, "alice").await;
    let (_, _, page) = b.get(&consent_url).await;
    assert!(
        page.contains("Metadata Document Client") && page.contains(&client),
        "{page}"
    );
    let (_, location, _) = b
        .post(
            "/oauth/consent",
            &[
                ("request", &hidden(&page, "request")),
                ("csrf", &hidden(&page, "csrf")),
                ("duration", "1d"),
                ("decision", "allow"),
            ],
        )
        .await;
    let (status, tokens) = code_for_tokens(&b, &client, &query(&location)["code"]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");

    // A document that claims another client id is refused, with no redirect.
    let liar = metadata_document(Some("https://someone-else.example/client.json")).await;
    let (status, location, page) = b.get(&authorize_url(&gw.base, &liar, "main", &[])).await;
    assert_eq!((status, location.as_str()), (StatusCode::BAD_REQUEST, ""));
    assert!(page.contains("not its own URL"), "{page}");

    // Without the dangerous setting, a document on a private address is not fetched.
    let port = free_port();
    let strict = GatewayProc::start_listening(&config(port, false), &format!("127.0.0.1:{port}")).await;
    let mut b = Browser::new(&strict.base);
    let (status, location, page) = b.get(&authorize_url(&strict.base, &client, "main", &[])).await;
    assert_eq!((status, location.as_str()), (StatusCode::BAD_REQUEST, ""));
    assert!(page.contains("public host"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_sign_in_link_works_only_for_its_own_signed_in_user() {
    let w = crate::oauth::world().await;
    let gw = crate::oauth::Gw::start_prepared(&w, "personal", "", |path| {
        let mut c = std::fs::read_to_string(path).unwrap();
        c.push_str("\n[auth.server]\n[[auth.server.users]]\nid = \"alice\"\nroles = [\"eng\"]\n[[auth.server.users]]\nid = \"mallory\"\nroles = [\"eng\"]\n");
        std::fs::write(path, c).unwrap();
    })
    .await;
    // A link made for alice (her token asks for it).
    let link = crate::oauth::start_url_of(&gw.report(crate::support::TOKEN).await);
    let path = link.strip_prefix(&gw.base).unwrap().to_owned();
    // Not signed in: off to the sign-in page first, coming back to the link.
    let mut b = Browser::new(&gw.base);
    let (status, to, _) = b.get(&path).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        to.starts_with("/oauth/signin?next=%2Fauth%2Ffiles%2Fstart"),
        "{to}"
    );
    // Signed in as somebody else: refused.
    let link_for = |user: &str| {
        let out = std::process::Command::new(BIN)
            .args(["users", "login-link", user, "--config"])
            .arg(gw.config())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (_, _, page) = b.get(&to).await;
    let next = hidden(&page, "next");
    assert!(next.starts_with("/auth/files/start?ticket="), "{next}");
    let (status, _, _) = b
        .post(
            "/oauth/signin",
            &[
                ("csrf", &hidden(&page, "csrf")),
                ("next", &next),
                ("code", &link_for("mallory")),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, page) = b.get(&path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("another user"), "{page}");
    // Signed in as alice: her consent page.
    let mut a = Browser::new(&gw.base);
    let (_, _, page) = a.get(&to).await;
    let (status, back, _) = a
        .post(
            "/oauth/signin",
            &[
                ("csrf", &hidden(&page, "csrf")),
                ("next", &next),
                ("code", &link_for("alice")),
            ],
        )
        .await;
    assert_eq!((status, back.as_str()), (StatusCode::SEE_OTHER, next.as_str()));
    let (status, _, page) = a.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("alice") && page.contains("Approve"), "{page}");
}

/// `config` with sign-in at the OpenID Connect provider `idp` as well as one-time links.
fn config_with_oidc(port: u16, idp: &str, roles_claim: Option<&str>, keep_users: bool) -> String {
    let mut c = config(port, false);
    if !keep_users {
        c = c.replace(
            "[[auth.server.users]]\nid = \"alice\"\nroles = [\"eng\"]\n\n[[auth.server.users]]\nid = \"mallory\"\nroles = [\"eng\"]\n\n",
            "",
        );
    }
    let roles = roles_claim
        .map(|r| format!("roles_claim = \"{r}\"\n"))
        .unwrap_or_default();
    c.replace(
        "[auth.server]\ndurations = [\"1d\", \"4s\"]\n\n",
        &format!(
            "[auth.server]\ndurations = [\"1d\", \"4s\"]\n\n[auth.server.oidc]\nissuer = \"{idp}\"\nclient_id = \"mcp-guard\"\nclient_secret = \"${{OIDC_SECRET}}\"\n{roles}display_name = \"Test IdP\"\n\n"
        ),
    )
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Where a browser on `base` goes with `location` (WHATWG parsing, which strips tabs
/// and newlines and reads backslashes as slashes, like browsers).
fn resolved_origin(base: &str, location: &str) -> String {
    url::Url::parse(base).unwrap().join(location).map_or_else(
        |e| format!("(unparsable: {e})"),
        |u| u.origin().ascii_serialization(),
    )
}

/// `next` values an attacker uses to leave the gateway's origin after sign-in, or that
/// only look local: controls and whitespace (browsers strip tabs and newlines),
/// backslashes (read as slashes), scheme-relative and absolute URLs, dot segments that
/// collapse into `//`, and their percent-encoded forms.
const NEXT_BYPASSES: &[&str] = &[
    "/\t/evil.example/x",
    "/\n/evil.example/x",
    "/\r\n/evil.example/x",
    "\t//evil.example/x",
    " //evil.example/x",
    "/ /evil.example/x",
    "/\u{0b}/evil.example/x",
    "/\u{0c}/evil.example/x",
    "/\u{00}/evil.example/x",
    "/\u{7f}/evil.example/x",
    "/\u{a0}/evil.example/x",
    "/\u{2028}/evil.example/x",
    "/\u{3000}/evil.example/x",
    "//evil.example/x",
    "///evil.example/x",
    "/\\evil.example/x",
    "/\\/evil.example/x",
    "\\\\evil.example/x",
    "\\/evil.example/x",
    "/%09/evil.example/x",
    "/%0a/evil.example/x",
    "/%2f/evil.example/x",
    "/%2F%2Fevil.example/x",
    "/%5c/evil.example/x",
    "/%5C%5Cevil.example/x",
    "/%252f%252fevil.example/x",
    "/.//evil.example/x",
    "/./\\evil.example/x",
    "/..//evil.example/x",
    "/x/..//evil.example/x",
    "/%2e//evil.example/x",
    "https://evil.example/x",
    "http:evil.example/x",
    "javascript:alert(1)",
    "evil.example/x",
    "//evil.example@127.0.0.1/x",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_after_sign_in_is_refused_wherever_next_is_read() {
    let idp = oidc_provider("ok").await;
    let port = free_port();
    let gw = GatewayProc::start_listening_with_env(
        &config_with_oidc(port, &idp, Some("roles"), true),
        &format!("127.0.0.1:{port}"),
        &[("OIDC_SECRET", "oidc-client-secret-1")],
    )
    .await;
    let origin = resolved_origin(&gw.base, "/");
    let fallback = "/oauth/signin";
    let mut failures = Vec::new();
    for bad in NEXT_BYPASSES {
        let q = enc(bad);
        // 1. The sign-in page carries `next` into its forms.
        let mut b = Browser::new(&gw.base);
        let (_, _, page) = b.get(&format!("/oauth/signin?next={q}")).await;
        if hidden(&page, "next") != fallback {
            failures.push(format!("sign-in page kept next {bad:?}"));
        }
        // 2. A sign-in link opened in the browser.
        let (_, _, page) = b.get(&format!("/login?code=mcpl_x&next={q}")).await;
        if hidden(&page, "next") != fallback {
            failures.push(format!("login link page kept next {bad:?}"));
        }
        // 3. The sign-in form posted with a valid link: where it sends the browser.
        let (_, _, page) = b.get("/oauth/signin").await;
        let link = login_link(&gw, "alice");
        let (status, location, _) = b
            .post(
                "/oauth/signin",
                &[("csrf", &hidden(&page, "csrf")), ("next", bad), ("code", &link)],
            )
            .await;
        if status != StatusCode::OK || !location.is_empty() {
            failures.push(format!(
                "sign-in with next {bad:?} answered {status} Location {location:?} (resolves to {})",
                resolved_origin(&gw.base, &location)
            ));
        }
        // 4. OpenID Connect sign-in: `next` travels through the provider and back.
        let mut b = Browser::new(&gw.base);
        let (_, to_idp, _) = b.get(&format!("/oauth/signin/oidc?next={q}")).await;
        let r = b.http.get(&to_idp).send().await.unwrap();
        let back = r.headers()["location"].to_str().unwrap().to_owned();
        let (status, location, _) = b.get(&back).await;
        if status != StatusCode::OK || !location.is_empty() {
            failures.push(format!(
                "OIDC sign-in with next {bad:?} answered {status} Location {location:?} (resolves to {})",
                resolved_origin(&gw.base, &location)
            ));
        }
        // 5. The consent page builds `next` from its request id.
        let mut b = Browser::new(&gw.base);
        let (status, location, page) = b.get(&format!("/oauth/consent?request={q}")).await;
        let next = if page.contains("name=\"next\"") {
            hidden(&page, "next").replace("&amp;", "&")
        } else {
            String::new()
        };
        let stays = next.is_empty()
            || (resolved_origin(&gw.base, &next) == origin && next.starts_with("/oauth/consent?request="));
        if !location.is_empty() || !stays {
            failures.push(format!(
                "consent with request {bad:?} answered {status} Location {location:?}, next {next:?}"
            ));
        }
    }
    // A local path is still followed.
    let mut b = Browser::new(&gw.base);
    let (_, _, page) = b.get("/oauth/signin?next=%2Foauth%2Faccount%3Fx%3D1").await;
    assert_eq!(hidden(&page, "next"), "/oauth/account?x=1");
    let link = login_link(&gw, "alice");
    let (status, location, _) = b
        .post(
            "/oauth/signin",
            &[
                ("csrf", &hidden(&page, "csrf")),
                ("next", "/oauth/account?x=1"),
                ("code", &link),
            ],
        )
        .await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/oauth/account?x=1")
    );
    assert!(
        failures.is_empty(),
        "{} open redirects:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_through_authorization_errors_is_refused() {
    let port = free_port();
    let gw = GatewayProc::start_listening(&config(port, false), &format!("127.0.0.1:{port}")).await;
    let mut b = Browser::new(&gw.base);
    // Anyone may register a client whose redirect URI is a phishing page.
    let phish = "https://evil.example/phish";
    let r = b
        .http
        .post(format!("{}/oauth/register", gw.base))
        .json(&json!({"redirect_uris": [phish], "client_name": "Totally Legit"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let client = r.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let good = authorize_url(&gw.base, &client, "main", &[]).replace(&enc(REDIRECT), &enc(phish));
    let cases: [(&str, String, &str); 6] = [
        (
            "bad response type",
            good.replace("response_type=code", "response_type=x"),
            "response_type",
        ),
        (
            "no PKCE",
            strip(&good, &["code_challenge", "code_challenge_method"]),
            "code_challenge",
        ),
        (
            "plain PKCE",
            good.replace("code_challenge_method=S256", "code_challenge_method=plain"),
            "S256",
        ),
        (
            "unknown endpoint",
            good.replace("%2Fmcp%2Fmain", "%2Fmcp%2Fnope"),
            "resource",
        ),
        ("no resource", strip(&good, &["resource"]), "resource"),
        (
            "repeated parameter",
            format!("{good}&scope=a&scope=b"),
            "repeated",
        ),
    ];
    for (case, url, says) in cases {
        let (status, location, page) = b.get(&url).await;
        assert_eq!(
            (status, location.as_str()),
            (StatusCode::BAD_REQUEST, ""),
            "{case}: the user was sent to {location}"
        );
        assert!(page.contains(says), "{case}: {page}");
        assert!(!page.contains("http-equiv"), "{case}: no meta refresh either");
    }
    // A valid request from the same client goes to the gateway's own consent page.
    let (status, location, _) = b.get(&good).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.starts_with("/oauth/consent?request="), "{location}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_with_the_wrong_resource_does_not_burn_the_refresh_token() {
    let port = free_port();
    let gw = GatewayProc::start_listening(&config(port, false), &format!("127.0.0.1:{port}")).await;
    let mut b = Browser::new(&gw.base);
    let client = register(&b).await;
    let other_client = register(&b).await;
    let q = consent(&mut b, &gw, &client, "1d").await;
    let (status, tokens) = code_for_tokens(&b, &client, &q["code"]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let main = format!("{}/mcp/main", gw.base);
    let other = format!("{}/mcp/other", gw.base);
    let nowhere = format!("{}/mcp/nowhere", gw.base);
    let foreign = "https://evil.example/mcp/main".to_owned();
    let bad = [
        (
            "another endpoint",
            vec![("resource", other.as_str())],
            "invalid_target",
        ),
        (
            "no such endpoint",
            vec![("resource", nowhere.as_str())],
            "invalid_target",
        ),
        (
            "another server",
            vec![("resource", foreign.as_str())],
            "invalid_target",
        ),
        (
            "a scope never granted",
            vec![("resource", main.as_str()), ("scope", "admin")],
            "invalid_scope",
        ),
        (
            "another client",
            vec![("client_id", other_client.as_str())],
            "invalid_grant",
        ),
    ];
    for (case, extra, error) in bad {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ];
        if !extra.iter().any(|(k, _)| *k == "client_id") {
            form.push(("client_id", client.as_str()));
        }
        form.extend(extra);
        let (status, err) = exchange(&b, &form).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(error)),
            "{case}: {err}"
        );
    }
    // The refresh token is intact: the correct request succeeds, and the grant lives.
    let (status, next) = exchange(
        &b,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client),
            ("resource", &main),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert_eq!(
        mcp_status(&gw.url("main"), next["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    // And the rotated one works in turn.
    let (status, again) = exchange(
        &b,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", next["refresh_token"].as_str().unwrap()),
            ("client_id", &client),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
}

/// Signs in at the test provider from the consent page and approves: the client's
/// redirect (status, Location) and the consent page that was shown.
async fn oidc_consent(b: &mut Browser, gw: &GatewayProc, client: &str) -> (StatusCode, String, String) {
    let (_, consent_url, _) = b.get(&authorize_url(&gw.base, client, "main", &[])).await;
    let (_, to_idp, _) = b
        .get(&format!("/oauth/signin/oidc?next={}", enc(&consent_url)))
        .await;
    let r = b.http.get(&to_idp).send().await.unwrap();
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    let (status, next, body) = b.get(&back).await;
    assert_eq!(
        (status, next.as_str()),
        (StatusCode::SEE_OTHER, consent_url.as_str()),
        "{body}"
    );
    let (_, _, page) = b.get(&consent_url).await;
    assert!(page.contains("Signed in as <strong>dana</strong>"), "{page}");
    let (status, location, body) = b
        .post(
            "/oauth/consent",
            &[
                ("request", &hidden(&page, "request")),
                ("csrf", &hidden(&page, "csrf")),
                ("duration", "1d"),
                ("decision", "allow"),
            ],
        )
        .await;
    (status, if location.is_empty() { body } else { location }, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_sign_on_user_not_listed_locally_finishes_consent_with_the_roles_of_their_claims() {
    // dana is known only to the identity provider, whose ID token gives her role eng.
    let idp = oidc_provider("ok").await;
    let port = free_port();
    let gw = GatewayProc::start_listening_with_env(
        &config_with_oidc(port, &idp, Some("roles"), false),
        &format!("127.0.0.1:{port}"),
        &[("OIDC_SECRET", "oidc-client-secret-1")],
    )
    .await;
    let mut b = Browser::new(&gw.base);
    let client = register(&b).await;
    let (status, location, page) = oidc_consent(&mut b, &gw, &client).await;
    assert!(page.contains("alpha__echo"), "{page}");
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    assert!(location.starts_with(REDIRECT), "{location}");
    let (status, tokens) = code_for_tokens(&b, &client, &query(&location)["code"]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let c = http_client(
        &gw.url("main"),
        tokens["access_token"].as_str().unwrap(),
        Era::Modern,
    )
    .await;
    let r = c
        .call_tool(
            rmcp::model::CallToolRequestParams::new("alpha__echo")
                .with_arguments(crate::support::args(&json!({"text": "from dana"}))),
        )
        .await
        .unwrap();
    assert_eq!(text_of(&r), "from dana");
    c.cancel().await.unwrap();
    drop(gw);

    // Without a roles claim configured she gets no roles: a token, but nothing granted.
    let idp = oidc_provider("ok").await;
    let port = free_port();
    let gw = GatewayProc::start_listening_with_env(
        &config_with_oidc(port, &idp, None, false),
        &format!("127.0.0.1:{port}"),
        &[("OIDC_SECRET", "oidc-client-secret-1")],
    )
    .await;
    let mut b = Browser::new(&gw.base);
    let client = register(&b).await;
    let (status, location, page) = oidc_consent(&mut b, &gw, &client).await;
    assert!(
        page.contains("No tool of this endpoint is enabled for you"),
        "{page}"
    );
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    let (status, tokens) = code_for_tokens(&b, &client, &query(&location)["code"]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let c = http_client(
        &gw.url("main"),
        tokens["access_token"].as_str().unwrap(),
        Era::Modern,
    )
    .await;
    assert!(names(&c).await.is_empty());
    c.cancel().await.unwrap();
}
