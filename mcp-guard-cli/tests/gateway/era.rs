#![allow(
    deprecated,
    reason = "sampling is deprecated in rmcp but still how legacy servers ask the client's model"
)]
//! The upstream's protocol era is a choice (`servers.ID.protocol`): with `legacy`, an
//! upstream that asks the client things with requests of its own (elicitation, sampling,
//! the way servers written before 2026-07-28 do) reaches the client that caused the
//! call, in either era of client.

use std::time::Duration;

use rmcp::ClientHandler;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequestParams, ElicitResult, ErrorData, Implementation,
};
use rmcp::service::{RequestContext, RoleClient, RunningService, serve_client_with_lifecycle};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

use crate::support::*;

/// A client that can be asked: it answers elicitation with a name and sampling with a
/// fixed sentence, and counts what it was asked.
#[derive(Clone, Default)]
struct Answering {
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ClientHandler for Answering {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        caps.elicitation = Some(rmcp::model::ElicitationCapability::default());
        caps.sampling = Some(rmcp::model::SamplingCapability::default());
        ClientConfig::new(caps, Implementation::new("era-tests", "0"))
    }

    async fn create_elicitation(
        &self,
        _: ElicitRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.asked.lock().unwrap().push("elicitation".into());
        Ok(serde_json::from_value(json!({"action": "accept", "content": {"name": "Ada"}})).unwrap())
    }

    async fn create_message(
        &self,
        _: CreateMessageRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        self.asked.lock().unwrap().push("sampling".into());
        Ok(serde_json::from_value(json!({
            "role": "assistant",
            "content": {"type": "text", "text": "hello from the model"},
            "model": "test-model"
        }))
        .unwrap())
    }
}

async fn answering_client(url: &str, era: Era) -> (RunningService<RoleClient, Answering>, Answering) {
    mcp_guard_core::upstream::ensure_crypto_provider();
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url);
    cfg.auth_header = Some(TOKEN.to_owned());
    let handler = Answering::default();
    let lifecycle = match era {
        Era::Legacy => rmcp::service::ClientLifecycleMode::Initialize,
        Era::Modern => rmcp::service::ClientLifecycleMode::Discover {
            preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
        },
    };
    let client = tokio::time::timeout(
        Duration::from_secs(20),
        serve_client_with_lifecycle(
            handler.clone(),
            StreamableHttpClientTransport::from_config(cfg),
            lifecycle,
        ),
    )
    .await
    .expect("connect timed out")
    .expect("connect failed");
    (client, handler)
}

fn questions_fixture(name: &str, protocol: Option<&str>, extra_args: &str) -> String {
    format!(
        "[servers.{name}]\ntransport = \"stdio\"\ncommand = \"{BIN}\"\n\
         args = [\"fixture\", \"--name\", \"{name}\", \"--questions\"{extra_args}]\n{}\n",
        protocol
            .map(|p| format!("protocol = \"{p}\"\n"))
            .unwrap_or_default()
    )
}

fn config() -> String {
    let mut c = String::from(AUTH);
    c.push_str(&questions_fixture("auto", None, ""));
    c.push_str(&questions_fixture("old", Some("legacy"), ""));
    c.push_str(&questions_fixture(
        "strict",
        Some("2026-07-28"),
        ", \"--legacy-only\"",
    ));
    c.push_str(
        "[endpoints.main.servers.auto]\ntools = [\"ask_*\"]\n[endpoints.main.servers.old]\ntools = [\"ask_*\"]\n\
         [endpoints.main.servers.strict]\ntools = [\"*\"]\n",
    );
    c
}

#[tokio::test]
async fn with_protocol_legacy_an_upstreams_questions_reach_the_client_of_either_era() {
    let gw = GatewayProc::start(&config()).await;
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", gw.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let server = |id: &str| {
        ready["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap()
    };
    // The era each server is spoken to, as configured.
    assert_eq!(server("auto")["protocol"], "2026-07-28", "{ready}");
    assert_eq!(server("old")["protocol"], "2025-11-25", "{ready}");
    // A server that does not offer the era it is pinned to is not used, and says why.
    assert_eq!(server("strict")["state"], "failed", "{ready}");
    assert!(
        server("strict")["detail"]
            .as_str()
            .is_some_and(|d| d.contains("it does not offer 2026-07-28, which its protocol setting requires")),
        "{ready}"
    );

    for era in [Era::Legacy, Era::Modern] {
        let (client, handler) = answering_client(&gw.url("main"), era).await;
        assert_eq!(
            as_strs(&client_names(&client).await),
            [
                "auto__ask_model",
                "auto__ask_name",
                "old__ask_model",
                "old__ask_name"
            ],
            "{era:?}"
        );
        let r = client
            .call_tool(CallToolRequestParams::new("old__ask_name"))
            .await
            .unwrap_or_else(|e| panic!("{era:?}: {e}"));
        assert_eq!(text_of(&r), "accept: Ada", "{era:?}");
        let r = client
            .call_tool(CallToolRequestParams::new("old__ask_model"))
            .await
            .unwrap_or_else(|e| panic!("{era:?}: {e}"));
        assert_eq!(text_of(&r), "the model said: hello from the model", "{era:?}");
        assert_eq!(
            *handler.asked.lock().unwrap(),
            ["elicitation", "sampling"],
            "{era:?}: the client itself was asked, once each"
        );
        // On 2026-07-28 (what `auto` picks for this server) a server may not ask with
        // requests of its own: the reason `legacy` exists.
        let r = client
            .call_tool(CallToolRequestParams::new("auto__ask_name"))
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(true), "{era:?}: {}", text_of(&r));
        assert!(
            text_of(&r).contains("elicitation failed"),
            "{era:?}: {}",
            text_of(&r)
        );
        let _ = client.cancel().await;
    }
    gw.stop().await;
}

/// The names a client lists, sorted.
async fn client_names(client: &RunningService<RoleClient, Answering>) -> Vec<String> {
    let mut v: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    v.sort();
    v
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A 2026-07-28 client's retry resumes a parked call only for the same principal,
/// name and arguments; a made-up handle is refused with a precise error.
#[tokio::test]
async fn a_parked_call_resumes_only_for_its_own_caller() {
    let mut c = String::from(AUTH);
    c.push_str("[[grants]]\nname = \"other-all\"\nroles = [\"other\"]\nnames = [\"*\"]\n\n");
    c.push_str(&shared(&questions_fixture("old", Some("legacy"), "")));
    c.push_str("[endpoints.main.servers.old]\ntools = [\"*\"]\n");
    let gw = GatewayProc::start(&c).await;
    let (alice, _) = answering_client(&gw.url("main"), Era::Modern).await;
    let bob = http_client(&gw.url("main"), OTHER_TOKEN, Era::Modern).await;
    let call = CallToolRequestParams::new("old__ask_name").with_arguments(args(&json!({"why": "test"})));
    let first = alice.peer().call_tool_once(call.clone()).await.unwrap();
    let rmcp::model::CallToolResponse::InputRequired(ir) = first else {
        panic!("the upstream's question is put to the client: {first:?}")
    };
    let handle = ir.request_state.clone().expect("a handle");
    let (key, question) = ir.input_requests.as_ref().unwrap().iter().next().unwrap();
    assert!(
        matches!(question, rmcp::model::InputRequest::Elicitation(_)),
        "{question:?}"
    );
    let answers: rmcp::model::InputResponses = [(
        key.clone(),
        json!({"action": "accept", "content": {"name": "Grace"}}),
    )]
    .into();
    let retry = |params: CallToolRequestParams, state: &str| {
        let mut p = params;
        p.request_state = Some(state.to_owned());
        p.input_responses = Some(answers.clone());
        p
    };
    // Someone else with the handle, the same caller with other arguments, a made-up handle.
    let err = bob
        .peer()
        .call_tool_once(retry(call.clone(), &handle))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("requestState belongs to another call"), "{err}");
    let other_args =
        CallToolRequestParams::new("old__ask_name").with_arguments(args(&json!({"why": "else"})));
    let err = alice
        .peer()
        .call_tool_once(retry(other_args, &handle))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("requestState belongs to another call"), "{err}");
    let err = alice
        .peer()
        .call_tool_once(retry(
            call.clone(),
            "mcp-guard-parked:00000000000000000000000000000000",
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("requestState names no call waiting for input"),
        "{err}"
    );
    // The caller's own retry completes the call; the handle is then spent.
    let done = alice
        .peer()
        .call_tool_once(retry(call.clone(), &handle))
        .await
        .unwrap();
    let rmcp::model::CallToolResponse::Complete(r) = done else {
        panic!("{done:?}")
    };
    assert_eq!(text_of(&r), "accept: Grace");
    let err = alice
        .peer()
        .call_tool_once(retry(call, &handle))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("requestState names no call waiting for input"),
        "{err}"
    );
    let _ = alice.cancel().await;
    let _ = bob.cancel().await;
    gw.stop().await;
}
