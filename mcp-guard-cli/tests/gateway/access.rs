//! Client access: JWTs from an identity provider, gateway-issued tokens with a
//! duration, sessions that can be listed and revoked, RFC 9728 metadata.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

pub const ISSUER: &str = "https://idp.test";
pub const PUBLIC: &str = "http://gw.test";

pub fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/fixtures")
}

fn jwt_config(required_scopes: &[&str]) -> String {
    let mut c = format!(
        "[gateway]\npublic_url = \"{PUBLIC}\"\n\n[auth.jwt]\nissuer = \"{ISSUER}\"\njwks_file = \"{}\"\nroles_claim = \"roles\"\nrequired_scopes = {required_scopes:?}\n\n",
        fixtures().join("jwks.json").display()
    );
    c.push_str("[[grants]]\nroles = [\"eng\"]\nnames = [\"*\"]\n\n");
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"echo\"]\n");
    c
}

fn tokens_config() -> String {
    let mut c = String::from("[[grants]]\nroles = [\"eng\"]\nnames = [\"*\"]\n\n");
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"echo\"]\n");
    c
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixtures().join("jwt-test-rsa.pem")).unwrap()).unwrap()
}

pub fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": "alice",
        "aud": format!("{PUBLIC}/mcp/main"),
        "iat": now(),
        "exp": now() + 600,
        "roles": ["eng"],
        "scope": "mcp:tools",
    })
}

pub fn sign(claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("test-key-1".into());
    jsonwebtoken::encode(&h, claims, &rsa_key()).unwrap()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

pub fn http() -> reqwest::Client {
    mcp_guard_core::upstream::ensure_crypto_provider();
    reqwest::Client::new()
}

pub fn init() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}})
}

pub async fn post_init(c: &reqwest::Client, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = c
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&init());
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

fn assert_invalid_token(r: &reqwest::Response, case: &str, gw: &GatewayProc) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{case}");
    let h = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(h.starts_with("Bearer error=\"invalid_token\""), "{case}: {h}");
    let _ = gw;
    assert!(
        h.contains(&format!(
            "resource_metadata=\"{PUBLIC}/.well-known/oauth-protected-resource/mcp/main\""
        )),
        "{case}: {h}"
    );
}

#[tokio::test]
async fn jwt_failures_answer_401_with_the_right_challenge() {
    let gw = GatewayProc::start(&jwt_config(&[])).await;
    let c = http();
    let url = gw.url("main");

    let good = sign(&claims());
    let r = post_init(&c, &url, Some(&good)).await;
    assert_eq!(r.status(), StatusCode::OK, "a valid token is accepted");

    let mut cases: Vec<(&str, String)> = Vec::new();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        sign(&c)
    };
    cases.push((
        "wrong aud",
        with(&|c| c["aud"] = json!("http://gw.test/mcp/other")),
    ));
    cases.push(("aud of the gateway root", with(&|c| c["aud"] = json!(PUBLIC))));
    cases.push((
        "no aud",
        with(&|c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
    ));
    cases.push(("expired", with(&|c| c["exp"] = json!(now() - 120))));
    cases.push(("nbf in the future", with(&|c| c["nbf"] = json!(now() + 600))));
    cases.push(("wrong iss", with(&|c| c["iss"] = json!("https://evil.test"))));
    cases.push((
        "no exp",
        with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
    ));
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": "test-key-1"})),
            b64(&claims())
        ),
    ));
    let public_pem = std::fs::read(fixtures().join("jwt-test-rsa.pub.pem")).unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("test-key-1".into());
    cases.push((
        "HS256 signed with the RSA public key",
        jsonwebtoken::encode(&hs, &claims(), &EncodingKey::from_secret(&public_pem)).unwrap(),
    ));
    let mut oct = Header::new(Algorithm::HS256);
    oct.kid = Some("hmac-key".into());
    cases.push((
        "HS256 with an oct key the JWKS publishes",
        jsonwebtoken::encode(
            &oct,
            &claims(),
            &EncodingKey::from_secret(b"an-hmac-secret-that-must-be-ignored"),
        )
        .unwrap(),
    ));
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = b64(
        &json!({"iss": ISSUER, "sub": "root", "aud": format!("{PUBLIC}/mcp/main"), "exp": now() + 600, "roles": ["eng"]}),
    );
    parts[1] = &forged;
    cases.push(("payload swapped under a valid signature", parts.join(".")));
    let mut unknown_kid = Header::new(Algorithm::RS256);
    unknown_kid.kid = Some("nope".into());
    cases.push((
        "unknown kid",
        jsonwebtoken::encode(&unknown_kid, &claims(), &rsa_key()).unwrap(),
    ));
    for (case, token) in &cases {
        let r = post_init(&c, &url, Some(token)).await;
        assert_invalid_token(&r, case, &gw);
    }

    // A token in the query string is refused before anything else, even a valid one
    // (and even alongside a valid header).
    for header in [None, Some(good.as_str())] {
        let r = c
            .post(format!("{url}?access_token={good}"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header(
                "authorization",
                header.map(|t| format!("Bearer {t}")).unwrap_or_default(),
            )
            .json(&init())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let h = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(h.starts_with("Bearer error=\"invalid_request\""), "{h}");
        assert!(h.contains("resource_metadata="), "{h}");
    }

    check_metadata(&c, &gw).await;

    // Still serving after every refusal.
    assert_eq!(post_init(&c, &url, Some(&good)).await.status(), StatusCode::OK);
}

async fn check_metadata(c: &reqwest::Client, gw: &GatewayProc) {
    // RFC 9728 metadata for the endpoint.
    let m: Value = c
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
    assert_eq!(m["resource"], format!("{PUBLIC}/mcp/main"));
    assert_eq!(m["authorization_servers"], json!([ISSUER]));
    assert_eq!(m["bearer_methods_supported"], json!(["header"]));
    let r = c
        .get(format!(
            "{}/.well-known/oauth-protected-resource/mcp/nope",
            gw.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn missing_scope_is_403_insufficient_scope() {
    let gw = GatewayProc::start(&jwt_config(&["mcp:admin"])).await;
    let r = post_init(&http(), &gw.url("main"), Some(&sign(&claims()))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let h = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(h.starts_with("Bearer error=\"insufficient_scope\""), "{h}");
    assert!(h.contains("scope=\"mcp:admin\""), "{h}");
    let mut c = claims();
    c["scope"] = json!("mcp:tools mcp:admin");
    assert_eq!(
        post_init(&http(), &gw.url("main"), Some(&sign(&c)))
            .await
            .status(),
        StatusCode::OK
    );
}

pub fn cli(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until `f` answers 401, returning how long that took.
async fn until_refused(c: &reqwest::Client, url: &str, token: &str) -> Duration {
    let start = Instant::now();
    loop {
        let r = post_init(c, url, Some(token)).await;
        if r.status() == StatusCode::UNAUTHORIZED {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still accepted after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn issued_tokens_expire_and_revoke_within_a_second() {
    let gw = GatewayProc::start(&tokens_config()).await;
    let config = gw.dir.path().join("gateway.toml");
    let c = http();
    let url = gw.url("main");

    // A token works through a real MCP client, and its session is listed.
    let token = issue_token(&config, "carol", "1h");
    let client = http_client(&url, &token, Era::Modern).await;
    assert_eq!(names(&client).await, ["alpha__echo"]);
    let (ok, listed, err) = cli(&config, &["sessions", "list", "--json"]);
    assert!(ok, "{err}");
    let s: Value = serde_json::from_str(listed.lines().next().expect("one session")).unwrap();
    assert_eq!(s["principal"], "carol");
    assert_eq!(s["endpoint"], "main");
    assert_eq!(s["state"], "active");
    let (_, list, _) = cli(&config, &["tokens", "list"]);
    assert!(list.contains("carol") && !list.contains(&token[18..]), "{list}");

    // Revoking the token: refused from the next request, within 1 s.
    let id = &token[5..17];
    let (ok, _, err) = cli(&config, &["tokens", "revoke", id]);
    assert!(ok, "{err}");
    let took = until_refused(&c, &url, &token).await;
    within_promise("revocation", took, Duration::from_secs(1));
    let r = post_init(&c, &url, Some(&token)).await;
    assert_invalid_token_plain(&r);
    let (ok, _, _) = cli(&config, &["tokens", "revoke", id]);
    assert!(!ok, "revoking twice is an error");

    // A short access duration ends by itself.
    let short = issue_token(&config, "dave", "2s");
    assert_eq!(post_init(&c, &url, Some(&short)).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = post_init(&c, &url, Some(&short)).await;
    assert_invalid_token_plain(&r);

    // Bad input to the commands.
    let (ok, _, err) = cli(
        &config,
        &["tokens", "issue", "--principal", "x", "--duration", "30"],
    );
    assert!(!ok && err.contains("unit"), "{err}");
}

fn assert_invalid_token_plain(r: &reqwest::Response) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let h = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(h.starts_with("Bearer error=\"invalid_token\""), "{h}");
}

#[tokio::test]
async fn revoking_a_session_refuses_the_next_request_and_closes_its_stream() {
    let gw = GatewayProc::start(&tokens_config()).await;
    let config = gw.dir.path().join("gateway.toml");
    let c = http();
    let url = gw.url("main");
    let token = issue_token(&config, "erin", "1d");

    // A legacy session with its GET stream open.
    let r = post_init(&c, &url, Some(&token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mcp_session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = r.text().await;
    let r = c
        .post(&url)
        .bearer_auth(&token)
        .header("mcp-session-id", &mcp_session)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let mut stream = c
        .get(&url)
        .bearer_auth(&token)
        .header("mcp-session-id", &mcp_session)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);

    let (_, listed, _) = cli(&config, &["sessions", "list", "--json"]);
    let s: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    let id = s["id"].as_str().unwrap().to_owned();
    let start = Instant::now();
    let (ok, _, err) = cli(&config, &["sessions", "revoke", &id]);
    assert!(ok, "{err}");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return start.elapsed(),
            }
        }
    })
    .await
    .expect("the open stream closes");
    within_promise("the open stream closed", ended, Duration::from_secs(1));
    let took = until_refused(&c, &url, &token).await;
    within_promise("revocation", took, Duration::from_secs(1));
    let (_, all, _) = cli(&config, &["sessions", "list", "--all", "--json"]);
    assert!(all.contains("\"revoked\""), "{all}");

    // The same principal with a new grant gets a new session.
    let again = issue_token(&config, "erin", "1d");
    assert_eq!(post_init(&c, &url, Some(&again)).await.status(), StatusCode::OK);
    let (ok, _, _) = cli(&config, &["sessions", "revoke", "s_doesnotexist"]);
    assert!(!ok);
}
