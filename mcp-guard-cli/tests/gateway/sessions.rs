//! Gateway sessions as an attacker and an operator see them: one session per
//! delegation chain, states that tell the truth, the CLI in a pipe, legacy DELETE as
//! the SDKs expect it, per-session directories, the stdio front door's session.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
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

    // The same holds for a gateway-issued agent token (`--agent --on-behalf-of`).
    let out = std::process::Command::new(BIN)
        .args([
            "tokens",
            "issue",
            "--principal",
            "ci-bot",
            "--agent",
            "--on-behalf-of",
            "bob",
            "--role",
            "eng",
            "--duration",
            "1h",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bot_token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let by_token = http_client(&url, &bot_token, Era::Modern).await;
    let t_pid: u32 = getenv(&by_token, "@pid").await.unwrap().parse().unwrap();
    assert_ne!(t_pid, b_pid, "another credential, another session");
    assert_eq!(
        environ(t_pid).get("PERSONAL_T").map(String::as_str),
        Some(BOB_VALUE),
        "an issued agent token acting for bob carries bob's personal credential"
    );
    let _ = by_token.cancel().await;

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

fn tokens_config() -> String {
    let mut c = String::from("[[grants]]\nroles = [\"eng\"]\nnames = [\"*\"]\n\n");
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"echo\", \"getenv\"]\n");
    c
}

fn state_of(sessions: &[Value], principal: &str) -> String {
    sessions
        .iter()
        .find(|s| s["principal"] == principal)
        .unwrap_or_else(|| panic!("no session of {principal}: {sessions:?}"))["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An operator reads `sessions list` after revoking a token, after an expiry, after a
/// gateway stopped and after one was killed: each session says what happened to it.
#[tokio::test]
async fn sessions_list_does_not_call_revoked_expired_or_dead_sessions_active() {
    let gw = GatewayProc::start(&tokens_config()).await;
    let config = gw.config();
    let url = gw.url("main");
    let c = http();
    let mut said = String::new();
    for (principal, duration) in [("by-token", "1h"), ("short", "2s"), ("stopped", "1h")] {
        let token = issue_token(&config, principal, duration);
        assert_eq!(post_init(&c, &url, Some(&token)).await.status(), StatusCode::OK);
        if principal == "by-token" {
            // `tokens revoke` ends the token's session, in the list too.
            let (ok, out, err) = cli(&config, &["tokens", "revoke", &token[5..17]]);
            assert!(ok, "{err}");
            said = out;
        }
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let listed = listed_sessions(&config, true);
    assert_eq!(state_of(&listed, "by-token"), "revoked");
    assert_eq!(state_of(&listed, "short"), "expired");
    assert_eq!(state_of(&listed, "stopped"), "active");
    assert!(said.contains("its 1 open session"), "{said}");
    // Only active ones without --all; the rest are counted on stderr.
    let (ok, table, err) = cli(&config, &["sessions", "list"]);
    assert!(ok, "{err}");
    assert!(
        table.contains("stopped") && !table.contains("by-token"),
        "{table}"
    );
    assert!(
        err.contains("2 revoked, expired or ended sessions not shown"),
        "{err}"
    );

    // A gateway that stops ends its sessions.
    let dir = gw.stop_keeping_dir().await;
    let listed = listed_sessions(&config, true);
    assert_eq!(state_of(&listed, "stopped"), "ended", "{listed:?}");
    let ended = listed.iter().find(|s| s["principal"] == "stopped").unwrap();
    assert!(ended["ended"].is_string(), "{ended}");
    assert_eq!(state_of(&listed, "by-token"), "revoked", "a revocation stays one");

    // A gateway killed without a word: its sessions have ended all the same.
    let second = GatewayProc::start_in(dir).await;
    let token = issue_token(&config, "killed", "1h");
    assert_eq!(
        post_init(&c, &second.url("main"), Some(&token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(state_of(&listed_sessions(&config, false), "killed"), "active");
    let _dir = second.kill9_keeping_dir().await;
    assert_eq!(state_of(&listed_sessions(&config, true), "killed"), "ended");
}

/// `mcp-guard … | head -1`: the reader goes away after one line; the command ends
/// quietly instead of panicking on the broken pipe.
#[tokio::test]
async fn the_cli_in_a_pipe_that_closes_early_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, tokens_config()).unwrap();
    issue_token(&config, "carol", "1h");
    // Far more output than a pipe holds (64 KiB), so the writer meets the closed end.
    let db = rusqlite::Connection::open(dir.path().join("mcp-guard-access.db")).unwrap();
    let tx = db.unchecked_transaction().unwrap();
    for i in 0..2000 {
        tx.execute(
            "INSERT INTO sessions (id, principal, kind, credential, endpoint, created_ms, last_seen_ms) \
             VALUES (?1, 'carol', 'user', 'token:0123456789ab', 'main', 1, 1)",
            [format!("s_{i:032}")],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO tokens (id, digest, principal, created_ms) VALUES (?1, x'00', '{\"id\":\"carol\",\"kind\":\"user\",\"roles\":[]}', 1)",
            [format!("{i:012x}")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(db);
    for command in ["sessions list --all", "sessions list --all --json", "tokens list"] {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "\"$0\" {command} --config \"$1\" | head -1 >/dev/null; echo \"status=${{PIPESTATUS[0]}}\" >&2"
            ))
            .arg(BIN)
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{command}: {err}");
        assert!(
            err.lines().any(|l| l == "status=0"),
            "{command} should exit 0 on a closed pipe: {err}"
        );
    }
}

/// A client ends its legacy session with DELETE: 200 as the MCP SDKs' own servers
/// answer (rmcp's 202 makes the Python client warn "Session termination failed: 202"),
/// then the id is gone; nobody else can end it, and an unknown id is not found.
#[tokio::test]
async fn deleting_a_legacy_session_answers_as_the_sdks_expect() {
    let gw = GatewayProc::start(&tokens_config()).await;
    let config = gw.config();
    let url = gw.url("main");
    let c = http();
    let (carol, erin) = (
        issue_token(&config, "carol", "1h"),
        issue_token(&config, "erin", "1h"),
    );
    let id = legacy_session(&c, &url, &carol).await;
    let delete = |token: &str, id: &str| {
        c.delete(&url)
            .bearer_auth(token)
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
    };
    assert_eq!(
        delete(&erin, &id).await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "another principal cannot end it"
    );
    assert_eq!(list_in(&c, &url, &carol, &id).await, StatusCode::OK);
    let r = delete(&carol, &id).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "");
    assert_eq!(list_in(&c, &url, &carol, &id).await, StatusCode::NOT_FOUND);
    assert_eq!(delete(&carol, &id).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(
        delete(&carol, "no-such-session").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // The gateway session goes on: a new legacy session opens.
    let again = legacy_session(&c, &url, &carol).await;
    assert_eq!(list_in(&c, &url, &carol, &again).await, StatusCode::OK);
    gw.stop().await;
}

/// `${MCP_GUARD_SESSION}` as a directory: each session's own, created 0700 before its
/// process starts, and removed (with what the process wrote) when the session ends.
#[tokio::test]
async fn session_directories_are_private_and_go_with_their_session() {
    let data = tempfile::tempdir().unwrap();
    let mut c = tokens_config();
    c = c.replacen(
        "args = [\"fixture\", \"--name\", \"alpha\"]\n",
        &format!(
            "args = [\"fixture\", \"--name\", \"alpha\"]\n\
             env = {{ DATA_DIR = \"{0}/sessions/${{MCP_GUARD_SESSION}}/\", \
             DATA_FILE = \"{0}/sessions/${{MCP_GUARD_SESSION}}/notes.jsonl\", \
             LOG_FILE = \"{0}/logs-${{MCP_GUARD_SESSION}}.txt\" }}\n",
            data.path().display()
        ),
        1,
    );
    let gw = GatewayProc::start(&c).await;
    let config = gw.config();
    let url = gw.url("main");
    let catalogue_dir = data.path().join("sessions/catalogue");
    assert!(
        catalogue_dir.is_dir(),
        "the catalogue process has its directory too"
    );
    let (carol, erin) = (
        issue_token(&config, "carol", "1h"),
        issue_token(&config, "erin", "1h"),
    );
    let carol_client = http_client(&url, &carol, Era::Legacy).await;
    let erin_client = http_client(&url, &erin, Era::Modern).await;
    let carol_dir = std::path::PathBuf::from(getenv(&carol_client, "DATA_DIR").await.unwrap());
    let erin_dir = std::path::PathBuf::from(getenv(&erin_client, "DATA_DIR").await.unwrap());
    assert_ne!(carol_dir, erin_dir);
    for dir in [&carol_dir, &erin_dir] {
        let meta = std::fs::symlink_metadata(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{}", dir.display());
    }
    assert_eq!(
        getenv(&carol_client, "DATA_FILE").await.unwrap(),
        carol_dir.join("notes.jsonl").display().to_string()
    );
    // What the session's process left there goes with the session.
    std::fs::write(carol_dir.join("notes.jsonl"), "{}\n").unwrap();
    let carol_pid: u32 = getenv(&carol_client, "@pid").await.unwrap().parse().unwrap();

    let id = listed_sessions(&config, false)
        .iter()
        .find(|s| s["principal"] == "carol")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, _, err) = cli(&config, &["sessions", "revoke", &id]);
    assert!(ok, "{err}");
    assert!(
        eventually(10, async || !carol_dir.exists()).await,
        "carol's session directory outlived her session"
    );
    assert!(
        !alive(carol_pid),
        "the directory went only after the process stopped"
    );
    assert!(erin_dir.exists(), "erin's is untouched");
    // A file named after the session is the operator's: left alone.
    assert!(!data.path().join("sessions").join(&id).exists());

    let _ = carol_client.cancel().await;
    let _ = erin_client.cancel().await;
    gw.stop().await;
    assert!(
        !erin_dir.exists(),
        "a stopping gateway ends every session, directories too"
    );
    assert!(
        !catalogue_dir.exists(),
        "and the catalogue's, once its process stopped"
    );
    assert!(
        data.path().join("sessions").exists(),
        "the parent is the operator's"
    );
}

/// `serve --stdio` is one client in one gateway session: every process it starts,
/// its audit records and `sessions list` name the same session id.
#[tokio::test]
async fn the_stdio_front_door_names_its_one_session_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let mut c = String::from(
        "[auth]\nstdio_principal = { id = \"alice\", roles = [\"eng\"] }\n\n[[grants]]\nroles = [\"eng\"]\nnames = [\"*\"]\n\n",
    );
    // alpha has no personal names (its catalogue process serves the stdio client); beta
    // has one (the client gets its own process): both must see one session name.
    c.push_str(&fixture("alpha", &[]).replacen(
        "args = [\"fixture\", \"--name\", \"alpha\"]\n",
        "args = [\"fixture\", \"--name\", \"alpha\"]\nenv = { WHICH_SESSION = \"${MCP_GUARD_SESSION}\" }\n",
        1,
    ));
    c.push_str(&fixture("beta", &[]).replacen(
        "args = [\"fixture\", \"--name\", \"beta\"]\n",
        "args = [\"fixture\", \"--name\", \"beta\"]\n\
         env = { WHICH_SESSION = \"${MCP_GUARD_SESSION}\", PERSONAL_T = \"${PERSONAL_T}\" }\npersonal = [\"PERSONAL_T\"]\n",
        1,
    ));
    let _ = write!(
        c,
        "[audit]\nsinks = [\"jsonl\"]\njsonl_dir = \"{}\"\n\n",
        dir.path().join("audit").display()
    );
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"getenv\"]\n\n[endpoints.main.servers.beta]\ntools = [\"getenv\"]\n");
    std::fs::write(&path, c).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "credentials",
            "set",
            "--server",
            "beta",
            "--name",
            "PERSONAL_T",
            "--principal",
            "alice",
            "--value-env",
            "V",
            "--config",
        ])
        .arg(&path)
        .env("V", ALICE_VALUE)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let client = stdio_client(&path, "main", Era::Legacy).await;
    let (via_alpha, via_beta) = (
        which_session(&client, "alpha__getenv").await.unwrap(),
        which_session(&client, "beta__getenv").await.unwrap(),
    );
    assert!(via_alpha.starts_with("s_"), "{via_alpha}");
    assert_eq!(via_alpha, via_beta, "one client, one session name");
    let listed = listed_sessions(&path, false);
    let mine = listed
        .iter()
        .find(|s| s["id"] == via_alpha.as_str())
        .unwrap_or_else(|| panic!("the stdio session is not listed: {listed:?}"));
    assert_eq!(mine["principal"], "alice");
    assert_eq!(mine["endpoint"], "main");
    let _ = client.cancel().await;

    // Its audit records name it; once the process is gone, the list says it ended.
    let mut named = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("audit")).unwrap() {
        for line in std::fs::read_to_string(entry.unwrap().path()).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if let Some(s) = v["event"].get("session").and_then(Value::as_str) {
                named.push(s.to_owned());
            }
        }
    }
    assert!(named.len() >= 2, "{named:?}");
    assert!(named.iter().all(|s| *s == via_alpha), "{named:?}");
    assert!(
        eventually(10, async || state_of_id(
            &listed_sessions(&path, true),
            &via_alpha
        ) == "ended")
        .await,
        "the stdio session outlived its process"
    );

    // `sessions revoke` reaches a stdio gateway too: it stops serving that client.
    let second = stdio_client(&path, "main", Era::Modern).await;
    let id = which_session(&second, "alpha__getenv").await.unwrap();
    assert_ne!(id, via_alpha, "each stdio process is its own session");
    let (ok, _, err) = cli(&path, &["sessions", "revoke", &id]);
    assert!(ok, "{err}");
    assert!(
        eventually(10, async || which_session(&second, "alpha__getenv")
            .await
            .is_err())
        .await,
        "a revoked stdio session is still served"
    );
    assert_eq!(state_of_id(&listed_sessions(&path, true), &id), "revoked");
    let _ = second.cancel().await;
}

async fn which_session(client: &Client, tool: &str) -> Result<String, rmcp::ServiceError> {
    client
        .call_tool(
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(args(&json!({"name": "WHICH_SESSION"}))),
        )
        .await
        .map(|r| text_of(&r))
}

fn state_of_id(sessions: &[Value], id: &str) -> String {
    sessions
        .iter()
        .find(|s| s["id"] == id)
        .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Alice's traffic through a shared agent uses up her rate budget and her process
/// allowance, never bob's: limits key on the whole delegation chain.
#[tokio::test]
async fn one_users_traffic_through_a_shared_agent_cannot_spend_anothers_rate_limit() {
    let mut config = delegation_config().replacen(
        "personal = [\"PERSONAL_T\"]\n",
        "personal = [\"PERSONAL_T\"]\nmax_processes_per_principal = 1\n",
        1,
    );
    config.push_str("\n[rate_limits]\nper_principal = { per_minute = 1, burst = 2 }\n");
    let gw = GatewayProc::start_with_lock(&config, |path| {
        set_personal(path, "alice", ALICE_VALUE);
        set_personal(path, "bob", BOB_VALUE);
    })
    .await;
    let url = gw.url("main");
    let alice = http_client(&url, &delegated("alice", "ci-bot"), Era::Modern).await;
    let bob = http_client(&url, &delegated("bob", "ci-bot"), Era::Modern).await;
    let a_pid = getenv(&alice, "@pid").await.unwrap();
    getenv(&alice, "@pid").await.unwrap();
    let refused = getenv(&alice, "@pid").await.unwrap_err().to_string();
    assert!(refused.contains("rate limit"), "{refused}");
    let b_pid = getenv(&bob, "@pid")
        .await
        .expect("bob's budget and process are his own");
    assert_ne!(a_pid, b_pid);
    getenv(&bob, "@pid").await.expect("bob's budget is his own");
    let _ = alice.cancel().await;
    let _ = bob.cancel().await;
    gw.stop().await;
}
