//! Gateway sessions as an attacker and an operator see them: one session per
//! delegation chain, states that tell the truth, the CLI in a pipe, legacy DELETE as
//! the SDKs expect it, per-session directories, the stdio front door's session.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

use crate::access::{PUBLIC, claims, cli, fixtures, http, post_init, sign};
use crate::support::*;

const ALICE_VALUE: &str = "alice-personal-3c1f7a";
const BOB_VALUE: &str = "bob-personal-8d24e9";
const BOT_VALUE: &str = "bot-own-personal-55ab10";

/// JWT auth, and the fixture as a per-session server with a personal credential and
/// the session's name in its environment.
fn delegation_config() -> String {
    let mut c = format!(
        "[gateway]\npublic_url = \"{PUBLIC}\"\n\n[auth.jwt]\nissuer = \"https://idp.test\"\njwks_file = \"{}\"\nroles_claim = \"roles\"\n\n",
        fixtures().join("jwks.json").display()
    );
    c.push_str("[[grants]]\nroles = [\"eng\"]\nnames = [\"*\"]\n\n");
    c.push_str(&fixture("alpha", &[]));
    c = c.replacen(
        "args = [\"fixture\", \"--name\", \"alpha\"]\n",
        "args = [\"fixture\", \"--name\", \"alpha\"]\n\
         env = { PERSONAL_T = \"${PERSONAL_T}\", WHICH_SESSION = \"${MCP_GUARD_SESSION}\" }\n\
         personal = [\"PERSONAL_T\"]\n",
        1,
    );
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"getenv\"]\n");
    c
}

/// A JWT for `sub`, issued to the agent `actor` (RFC 8693 `act`).
fn delegated(sub: &str, actor: &str) -> String {
    let mut c = claims();
    c["sub"] = json!(sub);
    c["act"] = json!({"sub": actor});
    sign(&c)
}

fn set_personal(config: &std::path::Path, principal: &str, value: &str) {
    let mut child = std::process::Command::new(BIN)
        .args([
            "credentials",
            "set",
            "--server",
            "alpha",
            "--name",
            "PERSONAL_T",
            "--principal",
            principal,
            "--config",
        ])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{value}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

async fn getenv(client: &Client, name: &str) -> Result<String, rmcp::ServiceError> {
    client
        .call_tool(CallToolRequestParams::new("alpha__getenv").with_arguments(args(&json!({"name": name}))))
        .await
        .map(|r| text_of(&r))
}

fn environ(pid: u32) -> HashMap<String, String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// POSTs `tools/list` with `token` into the legacy session `mcp_session`.
async fn list_in(c: &reqwest::Client, url: &str, token: &str, mcp_session: &str) -> StatusCode {
    c.post(url)
        .bearer_auth(token)
        .header("mcp-session-id", mcp_session)
        .header("mcp-protocol-version", "2025-11-25")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}))
        .send()
        .await
        .unwrap()
        .status()
}

/// Opens a legacy session with `token`: its `Mcp-Session-Id`.
async fn legacy_session(c: &reqwest::Client, url: &str, token: &str) -> String {
    let r = post_init(c, url, Some(token)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let id = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = r.text().await;
    let r = c
        .post(url)
        .bearer_auth(token)
        .header("mcp-session-id", &id)
        .header("mcp-protocol-version", "2025-11-25")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    id
}

fn listed_sessions(config: &std::path::Path, all: bool) -> Vec<Value> {
    let mut a = vec!["sessions", "list", "--json"];
    if all {
        a.push("--all");
    }
    let (ok, out, err) = cli(config, &a);
    assert!(ok, "{err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Two users delegated to one agent (RFC 8693 `act`): the agent's token for bob must
/// not reach alice's session, process, files or credentials.
#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one attack, step by step")]
async fn one_agent_acting_for_two_users_cannot_cross_between_their_sessions() {
    let gw = GatewayProc::start_with_lock(&delegation_config(), |path| {
        set_personal(path, "alice", ALICE_VALUE);
        set_personal(path, "bob", BOB_VALUE);
        set_personal(path, "ci-bot", BOT_VALUE);
    })
    .await;
    let config = gw.config();
    let url = gw.url("main");
    let c = http();
    let for_alice = delegated("alice", "ci-bot");
    let for_bob = delegated("bob", "ci-bot");

    // The agent's token for bob presents alice's legacy session id: not found.
    let alice_legacy = legacy_session(&c, &url, &for_alice).await;
    let bob_legacy = legacy_session(&c, &url, &for_bob).await;
    assert_eq!(list_in(&c, &url, &for_alice, &alice_legacy).await, StatusCode::OK);
    assert_eq!(
        list_in(&c, &url, &for_bob, &alice_legacy).await,
        StatusCode::NOT_FOUND,
        "bob's delegation reached alice's legacy session"
    );
    assert_eq!(
        list_in(&c, &url, &for_alice, &bob_legacy).await,
        StatusCode::NOT_FOUND,
        "alice's delegation reached bob's legacy session"
    );

    // Two gateway sessions, each naming whom the agent acts for.
    let sessions = listed_sessions(&config, false);
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let mut subjects: Vec<&str> = sessions
        .iter()
        .map(|s| {
            assert_eq!(s["principal"], "ci-bot", "{s}");
            s["on_behalf_of"].as_str().unwrap_or("(none)")
        })
        .collect();
    subjects.sort_unstable();
    assert_eq!(subjects, ["alice", "bob"]);

    // Two processes, two `${MCP_GUARD_SESSION}`s, each user's own personal credential.
    let alice = http_client(&url, &for_alice, Era::Legacy).await;
    let bob = http_client(&url, &for_bob, Era::Modern).await;
    let a_pid: u32 = getenv(&alice, "@pid").await.unwrap().parse().unwrap();
    let b_pid: u32 = getenv(&bob, "@pid").await.unwrap().parse().unwrap();
    assert_ne!(a_pid, b_pid, "two users share one process through their agent");
    let (a_env, b_env) = (environ(a_pid), environ(b_pid));
    assert_ne!(a_env["WHICH_SESSION"], b_env["WHICH_SESSION"]);
    assert_eq!(
        a_env.get("PERSONAL_T").map(String::as_str),
        Some(ALICE_VALUE),
        "the agent acting for alice carries alice's personal credential"
    );
    assert_eq!(b_env.get("PERSONAL_T").map(String::as_str), Some(BOB_VALUE));

    // Revoking the agent's session for alice leaves its session for bob working.
    let alice_session = sessions.iter().find(|s| s["on_behalf_of"] == "alice").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, _, err) = cli(&config, &["sessions", "revoke", &alice_session]);
    assert!(ok, "{err}");
    assert!(
        eventually(5, async || {
            post_init(&c, &url, Some(&for_alice)).await.status() == StatusCode::UNAUTHORIZED
        })
        .await,
        "the revoked delegation is still accepted"
    );
    assert!(
        eventually(5, async || !alive(a_pid)).await,
        "alice's process still runs"
    );
    assert_eq!(getenv(&bob, "@pid").await.unwrap(), b_pid.to_string());
    assert_eq!(
        list_in(&c, &url, &for_bob, &bob_legacy).await,
        StatusCode::OK,
        "bob's legacy session survives"
    );
    let _ = alice.cancel().await;
    let _ = bob.cancel().await;
    gw.stop().await;
}
