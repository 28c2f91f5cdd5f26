//! Attacks through upstream OAuth: an upstream (or whoever controls its metadata) that
//! points the gateway's discovery at internal services, and one that switches its
//! authorization server to collect refresh tokens and client secrets. Everything runs
//! on 127.0.0.1: the provider of `crate::oauth`, a listener standing in for an internal
//! service, and a hostile authorization server that records what it receives.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::oauth::{CC_SECRET, Gw, browser, sign_in, whoami, world};
use crate::support::*;

/// A listener on 127.0.0.1 standing in for an internal service: it counts connections.
async fn internal_service() -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (port, hits)
}

/// An authorization server that records every request (method, path, Authorization
/// header, body) and hands out tokens to anyone.
struct Hostile {
    base: String,
    seen: Mutex<Vec<String>>,
}

impl Hostile {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn hostile_authorization_server() -> Arc<Hostile> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let h = Arc::new(Hostile {
        base: base.clone(),
        seen: Mutex::default(),
    });
    let recorder = h.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let h = recorder.clone();
            async move {
                let auth = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                h.seen.lock().unwrap().push(format!(
                    "{method} {} auth={auth} body={}",
                    uri.path(),
                    String::from_utf8_lossy(&body)
                ));
                match uri.path() {
                    "/.well-known/oauth-authorization-server" => axum::Json(json!({
                        "issuer": h.base,
                        "authorization_endpoint": format!("{}/authorize", h.base),
                        "token_endpoint": format!("{}/token", h.base),
                        "registration_endpoint": format!("{}/register", h.base),
                        "response_types_supported": ["code"],
                        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
                        "code_challenge_methods_supported": ["S256"],
                        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
                    }))
                    .into_response(),
                    "/token" => axum::Json(json!({
                        "access_token": "at-from-the-hostile-server",
                        "refresh_token": "rt-from-the-hostile-server",
                        "token_type": "Bearer",
                        "expires_in": 3600,
                    }))
                    .into_response(),
                    _ => StatusCode::NOT_FOUND.into_response(),
                }
            }
        },
    );
    tokio::spawn(async move { axum::serve(l, app).await });
    h
}

/// An upstream whose `WWW-Authenticate` challenge, or whose protected-resource
/// metadata, names an internal address: discovery refuses it with a precise error and
/// never connects; the same gateway then signs the user in once the upstream behaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_oauth_discovery_ssrf_to_internal_addresses_is_refused() {
    let (port, hits) = internal_service().await;
    let w = world().await;
    let gw = Gw::start(&w, "personal", "").await;
    let link = crate::oauth::start_url_of(&gw.report(TOKEN).await);
    let hostile_challenges = [
        format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource"),
        format!("http://localhost:{port}/.well-known/oauth-protected-resource"),
        format!("http://[::ffff:127.0.0.1]:{port}/.well-known/oauth-protected-resource"),
        format!("http://2130706433:{port}/.well-known/oauth-protected-resource"),
    ];
    for url in &hostile_challenges {
        *w.challenge.lock().unwrap() = Some(format!("Bearer resource_metadata=\"{url}\""));
        let r = browser().get(&link).send().await.unwrap();
        let status = r.status();
        let page = r.text().await.unwrap();
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "{url}: the gateway connected to the internal service ({status}: {page})"
        );
        // Either the guard refused the pointer (and says so), or rmcp dropped a pointer
        // it rejects itself and discovery found the server's own metadata instead.
        match status {
            StatusCode::BAD_GATEWAY => assert!(
                page.contains("refused to fetch from") && page.contains("loopback"),
                "{url}: {page}"
            ),
            StatusCode::OK => assert!(page.contains(&format!("<dd>{}</dd>", w.base())), "{url}: {page}"),
            other => panic!("{url}: {other}: {page}"),
        }
    }
    *w.challenge.lock().unwrap() = None;
    // The metadata names an authorization server on an internal address.
    for server in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}/tenant"),
    ] {
        *w.authorization_servers.lock().unwrap() = Some(vec![server.clone()]);
        let r = browser().get(&link).send().await.unwrap();
        let status = r.status();
        let page = r.text().await.unwrap();
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "{server}: the gateway connected to the internal service ({status}: {page})"
        );
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{server}: {page}");
        assert!(
            page.contains("refused to fetch from") && page.contains("a loopback address"),
            "{server}: {page}"
        );
    }
    // Nothing was lost: once the upstream names its own server again, alice signs in
    // with the same link and her calls work.
    *w.authorization_servers.lock().unwrap() = None;
    *w.user.lock().unwrap() = "alice-at-provider".into();
    assert_eq!(sign_in(&link).await.status(), 200);
    let alice = gw.client(TOKEN).await;
    assert!(eventually(10, async || whoami(&alice).await.is_ok()).await);
    assert_eq!(whoami(&alice).await.unwrap(), "alice-at-provider");
    let _ = alice.cancel().await;
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

/// After alice signed in, the upstream names another authorization server (reachable:
/// the operator even trusts its origin) and her access token stops working. The
/// gateway must not send her refresh token there: she is told to sign in again, with
/// the reason, and the report shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_switching_its_authorization_server_gets_no_refresh_token() {
    let w = world().await;
    let hostile = hostile_authorization_server().await;
    let gw = Gw::start(
        &w,
        "personal",
        &format!("trusted_origins = [\"{}\"]\n", hostile.base),
    )
    .await;
    let link = crate::oauth::start_url_of(&gw.report(TOKEN).await);
    *w.user.lock().unwrap() = "alice-at-provider".into();
    assert_eq!(sign_in(&link).await.status(), 200);
    let alice = gw.client(TOKEN).await;
    assert!(eventually(10, async || whoami(&alice).await.is_ok()).await);
    let _ = alice.cancel().await;

    *w.authorization_servers.lock().unwrap() = Some(vec![hostile.base.clone()]);
    w.revoke_access("alice-at-provider");
    let gw = gw.restart().await;
    let alice = gw.client(TOKEN).await;
    // The call fails (the server cannot even list without a signed-in principal).
    assert!(whoami(&alice).await.is_err());
    let leaked: Vec<String> = hostile
        .seen()
        .into_iter()
        .filter(|r| r.contains("oauthcanary") || r.starts_with("POST"))
        .collect();
    assert!(leaked.is_empty(), "the hostile server received: {leaked:?}");
    let report = gw.report(TOKEN).await;
    assert_eq!(
        report["servers"][0]["state"], "needs_reauthentication",
        "{report}"
    );
    let reason = report["servers"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&hostile.base) && reason.contains(&w.base()),
        "the reason names neither server: {reason}"
    );
    // Signing in again is the way out: the consent page names the new server.
    let page = browser()
        .get(crate::oauth::start_url_of(&report))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&hostile.base), "{page}");
    let _ = alice.cancel().await;
    let leaked: Vec<String> = hostile
        .seen()
        .into_iter()
        .filter(|r| r.contains("oauthcanary") || r.starts_with("POST"))
        .collect();
    assert!(leaked.is_empty(), "the hostile server received: {leaked:?}");
}

/// With client credentials, the pre-registered client secret is bound to the
/// authorization server it was first used with: an upstream that names another one
/// does not receive it, and calls fail with an error that says what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_switching_its_authorization_server_gets_no_client_secret() {
    let w = world().await;
    let hostile = hostile_authorization_server().await;
    let gw = Gw::start_prepared(
        &w,
        "shared",
        &format!(
            "client_id = \"svc-client\"\nclient_secret = \"${{SVC_SECRET}}\"\ntrusted_origins = [\"{}\"]\n",
            hostile.base
        ),
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
    let _ = alice.cancel().await;

    *w.authorization_servers.lock().unwrap() = Some(vec![hostile.base.clone()]);
    w.revoke_access("service");
    let gw = gw.restart().await;
    let alice = gw.client(TOKEN).await;
    assert!(whoami(&alice).await.is_err());
    let secret = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("svc-client:{CC_SECRET}"),
    );
    let leaked: Vec<String> = hostile
        .seen()
        .into_iter()
        .filter(|r| r.contains(CC_SECRET) || r.contains(&secret) || r.starts_with("POST"))
        .collect();
    assert!(leaked.is_empty(), "the hostile server received: {leaked:?}");
    // The operator's log says what changed and how to accept it.
    let log = std::fs::read_to_string(gw.dir.path().join("gateway.log")).unwrap();
    let line = format!(
        "the authorization server changed from {} to {}; the client secret is sent only to",
        w.base(),
        hostile.base
    );
    assert!(log.contains(&line), "no {line:?} in the log");
    let _ = alice.cancel().await;
}
