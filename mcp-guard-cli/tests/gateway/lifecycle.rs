use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest, SubscriptionFilter};
use rmcp::service::PeerRequestOptions;

use crate::support::*;

fn config(cancel_file: &std::path::Path) -> String {
    let mut c = String::from(AUTH);
    // Shared: these tests change the server's state (add_tool) and kill it, and watch
    // every client see the result. Per-session processes are tested in isolation.rs.
    c.push_str(&shared(&fixture("alpha", &[])));
    let _ = write!(
        c,
        "[servers.alpha.env]\nFIXTURE_CANCEL_FILE = \"{}\"\n\n",
        cancel_file.display()
    );
    c.push_str(&fixture("beta", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"*\"]\n[endpoints.main.servers.beta]\ntools = [\"echo\"]\n");
    c
}

#[tokio::test]
async fn list_changed_reaches_legacy_and_modern_clients() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(&config(&dir.path().join("c"))).await;
    let legacy = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    let modern = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    let mut sub = modern
        .listen(SubscriptionFilter::builder().tools_list_changed().build())
        .await
        .expect("subscriptions/listen is accepted");
    let added = legacy
        .call_tool(
            CallToolRequestParams::new("alpha__add_tool")
                .with_arguments(args(&serde_json::json!({"name": "fresh"}))),
        )
        .await
        .unwrap();
    assert_eq!(text_of(&added), "added fresh");
    let note = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("modern client notified in time");
    assert!(matches!(note, Ok(Some(_))), "{note:?}");
    assert!(
        eventually(10, async || legacy.service().seen("tools_changed")).await,
        "legacy client notified"
    );
    assert!(names(&legacy).await.contains(&"alpha__fresh".to_owned()));
    assert!(names(&modern).await.contains(&"alpha__fresh".to_owned()));
    let _ = legacy.cancel().await;
    let _ = modern.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn progress_is_forwarded_and_cancellation_reaches_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let cancel_file = dir.path().join("cancelled");
    let gw = GatewayProc::start(&config(&cancel_file)).await;
    for era in [Era::Legacy, Era::Modern] {
        let client = http_client(&gw.url("main"), TOKEN, era).await;
        let done = client
            .call_tool(
                CallToolRequestParams::new("alpha__slow")
                    .with_arguments(args(&serde_json::json!({"steps": 3, "delay_ms": 30}))),
            )
            .await
            .unwrap();
        assert_eq!(text_of(&done), "done after 3 steps");
        assert!(
            eventually(5, async || client.service().count("progress") >= 3).await,
            "{era:?}: progress forwarded"
        );

        let _ = std::fs::remove_file(&cancel_file);
        let params = CallToolRequestParams::new("alpha__slow")
            .with_arguments(args(&serde_json::json!({"steps": 100, "delay_ms": 50})));
        let handle = client
            .send_request_with_option(
                ClientRequest::CallToolRequest(CallToolRequest::new(params)),
                PeerRequestOptions::no_options(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        handle.cancel(Some("test".into())).await.unwrap();
        assert!(
            eventually(5, async || cancel_file.exists()).await,
            "{era:?}: the upstream saw the cancellation"
        );
        let _ = client.cancel().await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_dying_mid_call_gives_an_error_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(&config(&dir.path().join("c"))).await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    for _ in 0..3 {
        let t = Instant::now();
        let err = client
            .call_tool(CallToolRequestParams::new("alpha__crash"))
            .await
            .unwrap_err()
            .to_string();
        within_promise("a crashed call answered", t.elapsed(), Duration::from_secs(2));
        assert!(err.contains("server alpha terminated"), "{err}");
        // The other server is unaffected.
        let echo = client
            .call_tool(
                CallToolRequestParams::new("beta__echo")
                    .with_arguments(args(&serde_json::json!({"text": "ok"}))),
            )
            .await
            .unwrap();
        assert_eq!(text_of(&echo), "ok");
        // The next call to alpha restarts it.
        let ok = eventually(3, async || {
            client
                .call_tool(CallToolRequestParams::new("alpha__whoami"))
                .await
                .is_ok_and(|r| text_of(&r) == "alpha")
        })
        .await;
        assert!(ok, "alpha answered again within 3 s");
    }
    let _ = client.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn stdio_upstreams_get_only_an_allow_listed_environment() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start_with_env(
        &config(&dir.path().join("c")),
        &[("GATEWAY_SECRET_CANARY", "do-not-leak")],
    )
    .await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    let env = client
        .call_tool(CallToolRequestParams::new("alpha__env_names"))
        .await
        .unwrap();
    let mut names: Vec<String> = text_of(&env).split(',').map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["FIXTURE_CANCEL_FILE", "HOME", "PATH"]);
    let _ = client.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn readiness_shows_each_servers_state_and_status_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir.path().join("c"));
    c.push_str(
        &fixture("gamma", &[]).replace("transport = \"stdio\"", "transport = \"stdio\"\nenabled = false"),
    );
    let gw = GatewayProc::start(&c).await;
    mcp_guard_core::upstream::ensure_crypto_provider();
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/readyz", gw.base)).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    let state = |b: &serde_json::Value, id: &str| {
        b["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["state"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(state(&body, "alpha"), "connected");
    assert_eq!(state(&body, "gamma"), "disabled");
    let out = std::process::Command::new(BIN)
        .args(["status", "--url", &gw.base])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("alpha") && text.contains("connected"),
        "{text}"
    );
    // A server that dies shows as failed, and readiness drops until it is back.
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    let _ = client.call_tool(CallToolRequestParams::new("alpha__crash")).await;
    let dropped = eventually(5, async || {
        let r = http.get(format!("{}/readyz", gw.base)).send().await.unwrap();
        let unavailable = r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE;
        let body: serde_json::Value = r.json().await.unwrap();
        unavailable && state(&body, "alpha") == "failed"
    })
    .await;
    assert!(dropped, "readiness reports the dead server");
    let _ = client.cancel().await;
    gw.stop().await;
}
