//! Personal data and secrets removed on the wire; credentials never come back.

use rmcp::model::CallToolRequestParams;

use crate::support::*;

const CANARY: &str = "cnry-7f3a9c1e5b2d4f60a8e9";

fn config() -> String {
    let mut c = String::from(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[servers.alpha.env]\nUPSTREAM_TOKEN = \"${ALPHA_TOKEN}\"\n\n");
    c.push_str(
        "[endpoints.plain.servers.alpha]\ntools = [\"echo\", \"getenv\"]\n\n\
         [endpoints.pii.redaction]\nrequests = true\nresponses = true\n\
         [endpoints.pii.redaction.rules]\ndetect = [\"email\", \"credit-card\", \"ssn\"]\n\
         [endpoints.pii.servers.alpha]\ntools = [\"echo\"]\n",
    );
    c
}

#[tokio::test]
async fn credentials_echoed_by_an_upstream_never_reach_the_client() {
    let gw = GatewayProc::start_with_env(&config(), &[("ALPHA_TOKEN", CANARY)]).await;
    let client = http_client(&gw.url("plain"), TOKEN, Era::Modern).await;
    let r = client
        .call_tool(
            CallToolRequestParams::new("alpha__getenv")
                .with_arguments(args(&serde_json::json!({"name": "UPSTREAM_TOKEN"}))),
        )
        .await
        .unwrap();
    let text = text_of(&r);
    assert!(!text.contains(CANARY), "{text}");
    assert_eq!(text, "[REDACTED_SECRET]");
    // The client's own token is never passed through either.
    let r = client
        .call_tool(
            CallToolRequestParams::new("alpha__getenv")
                .with_arguments(args(&serde_json::json!({"name": "GW_TEST_TOKEN"}))),
        )
        .await
        .unwrap();
    assert_eq!(
        text_of(&r),
        "",
        "the client's token is not in the upstream's environment"
    );
    // Without redaction configured, personal data passes (the endpoint did not ask).
    let r = client
        .call_tool(
            CallToolRequestParams::new("alpha__echo")
                .with_arguments(args(&serde_json::json!({"text": "mail ada@example.com"}))),
        )
        .await
        .unwrap();
    assert_eq!(text_of(&r), "mail ada@example.com");
    let _ = client.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn an_endpoint_can_redact_requests_and_responses() {
    let gw = GatewayProc::start_with_env(&config(), &[("ALPHA_TOKEN", CANARY)]).await;
    let client = http_client(&gw.url("pii"), TOKEN, Era::Legacy).await;
    let r = client
        .call_tool(
            CallToolRequestParams::new("alpha__echo").with_arguments(args(&serde_json::json!({
                "text": "ada@example.com paid with 4111 1111 1111 1111, SSN 123-45-6789, order 1234-5678"
            }))),
        )
        .await
        .unwrap();
    assert_eq!(
        text_of(&r),
        "[REDACTED_EMAIL] paid with [REDACTED_CREDIT_CARD], SSN [REDACTED_SSN], order 1234-5678"
    );
    let _ = client.cancel().await;
    gw.stop().await;
}
