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
                "text": "ada@acme.co paid with 4111 1111 1111 1111, SSN 123-45-6789, order 1234-5678"
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

/// Every character the hostile-text checker of tool definitions calls invisible (it
/// strips them from results): zero-width and other invisible characters, Unicode tags,
/// bidirectional controls.
fn invisible_characters() -> Vec<char> {
    (0x80..=0x10_FFFF_u32)
        .filter_map(char::from_u32)
        .filter(|c| mcp_guard_core::pin::strip_invisible(&c.to_string()).is_empty())
        .collect()
}

/// A held credential with an invisible character inside it, sent as a tool argument:
/// the audit record must not keep it, whichever character hides it. (The response
/// path strips invisible characters before redacting; the audit layer redacts the
/// arguments as they came.)
#[tokio::test]
async fn a_held_secret_split_by_an_invisible_character_never_reaches_the_audit_record() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("jsonl");
    let c = format!(
        "{}\n[audit]\nsinks = [\"jsonl\"]\njsonl_dir = \"{}\"\n",
        config(),
        dir.display()
    );
    let gw = GatewayProc::start_with_env(&c, &[("ALPHA_TOKEN", CANARY)]).await;
    let client = http_client(&gw.url("plain"), TOKEN, Era::Modern).await;
    // The upstream gets its credential (and the gateway registers it) when it starts.
    let r = client
        .call_tool(
            CallToolRequestParams::new("alpha__getenv")
                .with_arguments(args(&serde_json::json!({"name": "UPSTREAM_TOKEN"}))),
        )
        .await
        .unwrap();
    assert_eq!(text_of(&r), "[REDACTED_SECRET]");
    let invisible = invisible_characters();
    assert!(invisible.len() > 150, "{} characters", invisible.len());
    let mut sent = Vec::new();
    for (i, ch) in invisible.iter().enumerate() {
        let at = 1 + i % (CANARY.len() - 1);
        let hidden = format!("token {}{ch}{} end", &CANARY[..at], &CANARY[at..]);
        let r = client
            .call_tool(
                CallToolRequestParams::new("alpha__echo")
                    .with_arguments(args(&serde_json::json!({ "text": hidden }))),
            )
            .await
            .unwrap();
        assert_eq!(
            text_of(&r),
            "token [REDACTED_SECRET] end",
            "U+{:04X}",
            u32::from(*ch)
        );
        sent.push(*ch);
    }
    let _ = client.cancel().await;
    gw.stop().await;
    let mut recorded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let Some(arg) = v.pointer("/event/arguments/text").and_then(|t| t.as_str()) else {
                continue;
            };
            // A call's start record carries its arguments too; count each call once.
            if v.pointer("/event/phase").and_then(|p| p.as_str()) != Some("started") {
                recorded += 1;
            }
            let visible = mcp_guard_core::pin::strip_invisible(arg);
            assert!(
                !visible.contains(CANARY),
                "the audit record keeps the credential: {:?}",
                arg.chars()
                    .map(|c| if c.is_ascii() {
                        c.to_string()
                    } else {
                        format!("<U+{:04X}>", u32::from(c))
                    })
                    .collect::<String>()
            );
            assert_eq!(arg, "token [REDACTED_SECRET] end");
        }
    }
    assert_eq!(recorded, sent.len(), "one record per call");
}
