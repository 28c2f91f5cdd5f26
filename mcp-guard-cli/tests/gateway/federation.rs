use rmcp::model::{
    CallToolRequestParams, GetPromptRequestParams, ReadResourceRequestParams, ResourceContents,
};

use crate::support::*;

pub fn three_servers() -> String {
    let mut c = String::from("[auth]\nstdio_principal = { id = \"alice\", roles = [\"eng\"] }\n\n");
    c.push_str(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str(&fixture("beta", &[]));
    c.push_str(&fixture("gamma", &[]));
    c.push_str(
        "[endpoints.main]\ndescription = \"three servers\"\n\
         [endpoints.main.servers.alpha]\ntools = [\"*\"]\nprompts = [\"*\"]\nresources = [\"*\"]\n\
         [endpoints.main.servers.beta]\ntools = [\"echo\", \"add\"]\n\
         [endpoints.main.servers.gamma]\ntools = [\"whoami\"]\n\n\
         [endpoints.off]\n\
         [endpoints.off.servers.alpha]\nenabled = false\ntools = [\"*\"]\n\
         [endpoints.off.servers.beta]\ntools = []\n\n\
         [endpoints.plain]\nnamespace = false\n\
         [endpoints.plain.servers.alpha]\ntools = [\"echo\"]\nresources = [\"*\"]\n",
    );
    c
}

const ALPHA: [&str; 9] = [
    "echo",
    "add",
    "whoami",
    "env_names",
    "slow",
    "crash",
    "add_tool",
    "announce",
    "getenv",
];

fn expected_main() -> Vec<String> {
    let mut v: Vec<String> = ALPHA.iter().map(|t| format!("alpha__{t}")).collect();
    v.extend(["beta__echo", "beta__add", "gamma__whoami"].map(String::from));
    v
}

async fn exercise(client: &Client) {
    assert_eq!(
        names(client).await,
        expected_main(),
        "federated list, deterministic order"
    );
    let sum = client
        .call_tool(
            CallToolRequestParams::new("alpha__add")
                .with_arguments(args(&serde_json::json!({"a": 2, "b": 3}))),
        )
        .await
        .unwrap();
    assert_eq!(text_of(&sum), "5");
    let who = client
        .call_tool(CallToolRequestParams::new("gamma__whoami"))
        .await
        .unwrap();
    assert_eq!(
        text_of(&who),
        "gamma",
        "the call reached the server its name says"
    );
    let echo = client
        .call_tool(
            CallToolRequestParams::new("beta__echo").with_arguments(args(&serde_json::json!({"text": "hi"}))),
        )
        .await
        .unwrap();
    assert_eq!(text_of(&echo), "hi");
    // Default deny: beta's whoami exists upstream but is not enabled on this endpoint.
    let err = client
        .call_tool(CallToolRequestParams::new("beta__whoami"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Unknown tool: beta__whoami"), "{err}");
    // Prompts and resources are namespaced too.
    let prompts = client.list_all_prompts().await.unwrap();
    assert_eq!(
        prompts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["alpha__greeting"]
    );
    let p = client
        .get_prompt(GetPromptRequestParams::new("alpha__greeting"))
        .await
        .unwrap();
    assert_eq!(p.messages.len(), 1);
    let resources = client.list_all_resources().await.unwrap();
    assert_eq!(
        resources.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(),
        ["alpha+fixture://alpha/readme"]
    );
    let read = client
        .read_resource(ReadResourceRequestParams::new("alpha+fixture://alpha/readme"))
        .await
        .unwrap();
    match &read.contents[0] {
        ResourceContents::TextResourceContents { uri, text, .. } => {
            assert_eq!(
                uri, "alpha+fixture://alpha/readme",
                "URIs in results are rewritten back"
            );
            assert_eq!(text, "This is alpha.");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn federates_three_upstreams_over_http_in_both_eras() {
    let gw = GatewayProc::start(&three_servers()).await;
    for era in [Era::Legacy, Era::Modern] {
        let client = http_client(&gw.url("main"), TOKEN, era).await;
        let info = client.peer_info().unwrap();
        assert_eq!(info.server_info.as_ref().unwrap().name, "mcp-guard", "{era:?}");
        match era {
            Era::Legacy => assert_eq!(info.protocol_version.as_str(), "2025-11-25"),
            Era::Modern => assert_eq!(info.protocol_version.as_str(), "2026-07-28"),
        }
        exercise(&client).await;
        let _ = client.cancel().await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn federates_over_stdio_in_both_eras() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, three_servers()).unwrap();
    for era in [Era::Legacy, Era::Modern] {
        let client = stdio_client(&path, "main", era).await;
        exercise(&client).await;
        let _ = client.cancel().await;
    }
}

#[tokio::test]
async fn disabled_server_and_empty_selection_expose_nothing() {
    let gw = GatewayProc::start(&three_servers()).await;
    let client = http_client(&gw.url("off"), TOKEN, Era::Legacy).await;
    assert!(names(&client).await.is_empty());
    for name in ["alpha__echo", "beta__echo"] {
        let err = client
            .call_tool(CallToolRequestParams::new(name))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("Unknown tool: {name}")), "{err}");
    }
    let _ = client.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_principal_without_a_grant_sees_nothing_and_calls_answer_unknown() {
    let gw = GatewayProc::start(&three_servers()).await;
    let bob = http_client(&gw.url("main"), OTHER_TOKEN, Era::Modern).await;
    assert!(
        names(&bob).await.is_empty(),
        "listing and calling share one rule set"
    );
    let err = bob
        .call_tool(CallToolRequestParams::new("alpha__echo"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Unknown tool: alpha__echo"),
        "a refusal reads exactly like an unknown tool: {err}"
    );
    let _ = bob.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_name_collision_stops_the_gateway_from_starting() {
    // "a" + "__" + "_x" and "a_" + "__" + "x" are both "a___x".
    let mut c = String::from(AUTH);
    c.push_str(&fixture("a", &["_x"]));
    c.push_str(&fixture("a_", &["x"]));
    c.push_str("[endpoints.e.servers.a]\ntools = [\"*\"]\n[endpoints.e.servers.a_]\ntools = [\"*\"]\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, c).unwrap();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .env("GW_TEST_TOKEN", TOKEN)
            .env("GW_TEST_OTHER_TOKEN", OTHER_TOKEN)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("endpoint e: name \"a___x\" is produced by both a/_x and a_/x"),
        "{stderr}"
    );
    // The front door answers before the servers have started (it listens at once), but
    // the collision their first start reveals still stops the gateway.
    assert!(!stderr.contains("upstreams started"), "{stderr}");
}

#[tokio::test]
async fn a_single_server_endpoint_can_pass_names_through_unchanged() {
    let gw = GatewayProc::start(&three_servers()).await;
    let client = http_client(&gw.url("plain"), TOKEN, Era::Modern).await;
    assert_eq!(names(&client).await, ["echo"]);
    let r = client
        .call_tool(
            CallToolRequestParams::new("echo").with_arguments(args(&serde_json::json!({"text": "plain"}))),
        )
        .await
        .unwrap();
    assert_eq!(text_of(&r), "plain");
    let read = client
        .read_resource(ReadResourceRequestParams::new("fixture://alpha/readme"))
        .await
        .unwrap();
    assert!(
        matches!(&read.contents[0], ResourceContents::TextResourceContents { uri, .. } if uri == "fixture://alpha/readme")
    );
    let err = client
        .call_tool(CallToolRequestParams::new("alpha__echo"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Unknown tool: alpha__echo"), "{err}");
    let _ = client.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn lists_are_paginated_with_the_gateways_own_cursor() {
    let config = format!("[gateway]\npage_size = 3\n\n{}", three_servers());
    let gw = GatewayProc::start(&config).await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    let first = client.list_tools(None).await.unwrap();
    assert_eq!(first.tools.len(), 3);
    let cursor = first.next_cursor.clone().expect("more pages");
    assert!(!cursor.contains("alpha"), "the cursor is opaque");
    assert_eq!(
        names(&client).await,
        expected_main(),
        "all pages together give the whole list"
    );
    let bad = rmcp::model::PaginatedRequestParams::default().with_cursor(Some("bm90LWEtY3Vyc29y".into()));
    let err = client.list_tools(Some(bad)).await.unwrap_err().to_string();
    assert!(err.contains("invalid cursor"), "{err}");
    let _ = client.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn clients_of_either_era_see_upstreams_of_either_era() {
    let mut c = String::from(AUTH);
    c.push_str(&fixture("old", &[]).replace("\"old\"]", "\"old\", \"--legacy-only\"]"));
    c.push_str(&fixture("new", &[]));
    c.push_str("[endpoints.mixed.servers.old]\ntools = [\"echo\"]\n[endpoints.mixed.servers.new]\ntools = [\"echo\"]\n");
    let gw = GatewayProc::start(&c).await;
    for era in [Era::Legacy, Era::Modern] {
        let client = http_client(&gw.url("mixed"), TOKEN, era).await;
        assert_eq!(names(&client).await, ["new__echo", "old__echo"], "{era:?}");
        for name in ["new__echo", "old__echo"] {
            let r = client
                .call_tool(
                    CallToolRequestParams::new(name).with_arguments(args(&serde_json::json!({"text": name}))),
                )
                .await
                .unwrap();
            assert_eq!(text_of(&r), name, "{era:?}");
        }
        let _ = client.cancel().await;
    }
    gw.stop().await;
}
