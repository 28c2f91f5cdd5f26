//! `mcp-guard check --against-audit`: a trail recorded by the real gateway (SQLite and
//! JSON Lines), replayed under changed configurations; hostile trails and arguments.

use std::path::Path;

use rmcp::model::CallToolRequestParams;

use crate::support::*;

const GRANTS: &str = "[[grants]]\nname = \"other-echo\"\nroles = [\"other\"]\nnames = [\"echo\"]\n\n";

fn audit_section(data: &Path) -> String {
    format!(
        "[audit]\nsinks = [\"sqlite\", \"jsonl\"]\nsqlite_path = \"{}\"\njsonl_dir = \"{}\"\n",
        data.join("audit.db").display(),
        data.join("jsonl").display()
    )
}

/// The recorded configuration: alice (role eng: everything), bob (role other: echo
/// only), carol (an issued token with role eng); alpha's echo and whoami on `main`.
fn recorded(data: &Path) -> String {
    let mut c = String::from(AUTH);
    c.push_str(GRANTS);
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"echo\", \"whoami\"]\n\n");
    c.push_str(&audit_section(data));
    c
}

async fn call(client: &Client, tool: &str) -> bool {
    client
        .call_tool(
            CallToolRequestParams::new(format!("alpha__{tool}"))
                .with_arguments(args(&serde_json::json!({"text": "hi"}))),
        )
        .await
        .is_ok()
}

/// Runs `mcp-guard check ARGS`: exit code, stdout, stderr.
fn check(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("check")
        .args(args)
        .env("GW_TEST_TOKEN", TOKEN)
        .env("GW_TEST_OTHER_TOKEN", OTHER_TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `check --config <config> --against-audit --audit <trail> --json`, parsed.
fn replay_json(config: &Path, trail: &Path) -> (i32, serde_json::Value) {
    let (code, out, err) = check(&[
        "--config",
        &config.display().to_string(),
        "--against-audit",
        "--audit",
        &trail.display().to_string(),
        "--json",
    ]);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v)
}

/// The changes as `(principal, tool, before, after, rule before, rule after)`.
fn changes(v: &serde_json::Value) -> Vec<(String, String, String, String, String, String)> {
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("-").to_owned();
    let mut out: Vec<_> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                s(&c["principal"]["id"]),
                s(&c["tool"]),
                s(&c["before"]["decision"]),
                s(&c["after"]["decision"]),
                s(&c["before"]["rule"]),
                s(&c["after"]["rule"]),
            )
        })
        .collect();
    out.sort();
    out
}

/// A change as [`changes`] lists it.
fn t(
    who: &str,
    tool: &str,
    before: &str,
    after: &str,
    rule_before: &str,
    rule_after: &str,
) -> (String, String, String, String, String, String) {
    (
        who.into(),
        tool.into(),
        before.into(),
        after.into(),
        rule_before.into(),
        rule_after.into(),
    )
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one recorded trail, every kind of change against it"
)]
async fn a_recorded_trail_replayed_under_changed_configs_names_every_changed_decision() {
    let data = tempfile::tempdir().unwrap();
    let mut carol_token = String::new();
    let gw = GatewayProc::start_with_lock(&recorded(data.path()), |path| {
        carol_token = issue_token(path, "carol", "1h");
    })
    .await;
    let alice = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    let bob = http_client(&gw.url("main"), OTHER_TOKEN, Era::Legacy).await;
    let carol = http_client(&gw.url("main"), &carol_token, Era::Modern).await;
    assert_eq!(
        names(&alice).await.len(),
        2,
        "a list, recorded and skipped by replays"
    );
    assert!(call(&alice, "echo").await);
    assert!(call(&alice, "whoami").await);
    assert!(call(&bob, "echo").await);
    assert!(!call(&bob, "whoami").await, "bob has no grant for whoami");
    assert!(call(&carol, "echo").await);
    // A name no endpoint exposes: refused as unknown, not a policy decision.
    assert!(!call(&alice, "nonexistent").await);
    let _ = alice.cancel().await;
    let _ = bob.cancel().await;
    let _ = carol.cancel().await;
    gw.stop().await;

    let dir = data.path();
    let db = dir.join("audit.db");
    let jsonl = dir.join("jsonl");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };

    for trail in [&db, &jsonl] {
        // (c) The same configuration: nothing changes, exit 0.
        let same = write("same.toml", &recorded(dir));
        let (code, v) = replay_json(&same, trail);
        assert_eq!(code, 0, "{v:#}");
        assert_eq!(changes(&v), vec![], "{v:#}");
        assert_eq!(v["summary"]["replayed"], 5, "{v:#}");
        assert_eq!(v["summary"]["unchanged"], 5, "{v:#}");
        assert_eq!(v["summary"]["changed"], 0, "{v:#}");
        assert_eq!(v["summary"]["skipped"]["unknown_name"], 1, "{v:#}");
        assert!(v["summary"]["skipped"]["list"].as_u64().unwrap() >= 1, "{v:#}");

        // (a) A grant removed: bob's echo allowed -> refused, exit 1.
        let removed = write("removed.toml", &recorded(dir).replace(GRANTS, ""));
        let (code, v) = replay_json(&removed, trail);
        assert_eq!(code, 1, "{v:#}");
        assert_eq!(
            changes(&v),
            vec![t(
                "bob",
                "echo",
                "allowed",
                "refused",
                "other-echo",
                "default deny"
            )],
            "{v:#}"
        );
        let c = &v["changes"][0];
        assert_eq!(c["endpoint"], "main");
        assert_eq!(c["server"], "alpha");
        assert_eq!(c["requested_name"], "alpha__echo");
        assert!(c["when"].as_str().unwrap().ends_with('Z'), "{c}");
        assert_eq!(v["summary"]["allowed_to_refused"], 1);
        assert_eq!(v["summary"]["unchanged"], 4);

        // (b) A new grant: bob's whoami refused -> allowed.
        let added = write(
            "added.toml",
            &recorded(dir).replace(
                GRANTS,
                &format!(
                    "{GRANTS}[[grants]]\nname = \"other-whoami\"\nroles = [\"other\"]\nnames = [\"whoami\"]\n\n"
                ),
            ),
        );
        let (code, v) = replay_json(&added, trail);
        assert_eq!(code, 1, "{v:#}");
        assert_eq!(
            changes(&v),
            vec![t(
                "bob",
                "whoami",
                "refused",
                "allowed",
                "default deny",
                "other-whoami"
            )],
            "{v:#}"
        );
        assert_eq!(v["summary"]["refused_to_allowed"], 1);

        // (d) whoami dropped from the endpoint's selection: alice's call is refused as
        // not exposed (bob's was refused already).
        let dropped = write(
            "dropped.toml",
            &recorded(dir).replace("tools = [\"echo\", \"whoami\"]", "tools = [\"echo\"]"),
        );
        let (code, v) = replay_json(&dropped, trail);
        assert_eq!(code, 1, "{v:#}");
        assert_eq!(
            changes(&v),
            vec![t(
                "alice",
                "whoami",
                "allowed",
                "refused",
                "eng-all",
                "endpoints.main.servers.alpha.tools"
            )],
            "{v:#}"
        );
        let reason = v["changes"][0]["after"]["reason"].as_str().unwrap();
        assert!(
            reason.contains("not exposed") && reason.contains("endpoints.main.servers.alpha.tools"),
            "{reason}"
        );

        // (f) alice's role changed in the new config: her calls are refused; carol,
        // whose roles come from the record (an issued token), is unchanged.
        let demoted = write(
            "demoted.toml",
            &recorded(dir).replace(
                "id = \"alice\", roles = [\"eng\"]",
                "id = \"alice\", roles = [\"ops\"]",
            ),
        );
        let (code, v) = replay_json(&demoted, trail);
        assert_eq!(code, 1, "{v:#}");
        assert_eq!(
            changes(&v),
            vec![
                t("alice", "echo", "allowed", "refused", "eng-all", "default deny"),
                t("alice", "whoami", "allowed", "refused", "eng-all", "default deny"),
            ],
            "{v:#}"
        );
        let carol_source = v["principals"]["carol"].as_str().unwrap();
        assert!(carol_source.contains("record"), "{v:#}");
        assert!(
            v["principals"]["alice"].as_str().unwrap().contains("auth.tokens"),
            "{v:#}"
        );
    }

    // The text form names who, endpoint, tool, when and both rules; the trail defaults
    // to the one the new config's [audit] names.
    let removed = dir.join("removed.toml");
    let (code, out, err) = check(&["--config", &removed.display().to_string(), "--against-audit"]);
    assert_eq!(code, 1, "{out}\n{err}");
    // Shown with --nocapture: the sample in docs/audit.md comes from here.
    eprintln!("{out}");
    assert!(out.contains("allowed -> refused"), "{out}");
    assert!(
        out.contains("bob") && out.contains("main") && out.contains("alpha/echo"),
        "{out}"
    );
    assert!(
        out.contains("other-echo") && out.contains("default deny"),
        "{out}"
    );
    assert!(out.contains("5 replayed") && out.contains("4 unchanged"), "{out}");
    assert!(out.contains(&db.display().to_string()), "{out}");

    // Both directions at once, and a tool dropped from the selection, in text.
    let mixed = dir.join("new.toml");
    std::fs::write(
        &mixed,
        recorded(dir)
            .replace(
                GRANTS,
                "[[grants]]\nname = \"other-whoami\"\nroles = [\"other\"]\nnames = [\"whoami\"]\n\n",
            )
            .replace("tools = [\"echo\", \"whoami\"]", "tools = [\"echo\", \"who*\"]")
            .replace(
                "id = \"alice\", roles = [\"eng\"]",
                "id = \"alice\", roles = [\"ops\"]",
            ),
    )
    .unwrap();
    let (code, out, err) = check(&["--config", &mixed.display().to_string(), "--against-audit"]);
    eprintln!("{out}");
    assert_eq!(code, 1, "{out}\n{err}");
    assert_eq!(out.matches("allowed -> refused").count(), 4, "{out}");
    assert_eq!(out.matches("refused -> allowed").count(), 2, "{out}");

    let dropped = dir.join("dropped.toml");
    let (code, out, err) = check(&["--config", &dropped.display().to_string(), "--against-audit"]);
    eprintln!("{out}");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("refused by endpoints.main.servers.alpha.tools")
            && out.contains("the grants would allow it by \"eng-all\""),
        "{out}"
    );

    // --since in the future: nothing replayed, nothing changes.
    let (code, out, err) = check(&[
        "--config",
        &removed.display().to_string(),
        "--against-audit",
        "--since",
        "2999-01-01",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("0 replayed"), "{out}");
    // --since 1h keeps them all.
    let (code, out, _) = check(&[
        "--config",
        &removed.display().to_string(),
        "--against-audit",
        "--since",
        "1h",
        "--audit",
        &jsonl.display().to_string(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("5 replayed"), "{out}");
}

fn line(seq: u64, event: &serde_json::Value) -> String {
    serde_json::json!({"seq": seq, "prev": "0", "event": event, "hash": "0"}).to_string()
}

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one attack after another on one config")]
async fn hostile_trails_and_arguments_get_precise_errors_and_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let config = data.join("gateway.toml");
    let mut c = String::from(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"echo\"]\n\n");
    c.push_str(&audit_section(data));
    std::fs::write(&config, c).unwrap();
    let cfg = config.display().to_string();

    // An audit file that does not exist.
    let (code, out, err) = check(&[
        "--config",
        &cfg,
        "--against-audit",
        "--audit",
        "/nonexistent/audit.db",
    ]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("/nonexistent/audit.db") && err.contains("no such"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // The default trail of a config that never ran.
    let (code, _, err) = check(&["--config", &cfg, "--against-audit"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("audit.db"), "{err}");

    // Garbage where a trail should be.
    let garbage = data.join("garbage.jsonl");
    std::fs::write(&garbage, b"\x00\xffnot json at all\n{\"seq\": \n").unwrap();
    let (code, out, err) = check(&[
        "--config",
        &cfg,
        "--against-audit",
        "--audit",
        &garbage.display().to_string(),
    ]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("garbage.jsonl") && err.contains("line 1"), "{err}");
    // A file that claims to be SQLite and is not.
    let fake_db = data.join("fake.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(0x5a, 4096));
    std::fs::write(&fake_db, bytes).unwrap();
    let (code, out, err) = check(&[
        "--config",
        &cfg,
        "--against-audit",
        "--audit",
        &fake_db.display().to_string(),
    ]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("fake.db"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // --since garbage.
    let (code, out, err) = check(&["--config", &cfg, "--against-audit", "--since", "yesterday-ish"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("yesterday-ish"), "{err}");
    // --since without --against-audit is a usage error.
    let (code, _, err) = check(&["--config", &cfg, "--since", "7d"]);
    assert_eq!(code, 2, "{err}");

    // A hand-written trail: a call through an endpoint the config does not have, a
    // principal it cannot resolve (an old record without roles), a record with
    // nonsense fields, a session event, and a torn last line.
    let trail = data.join("trail");
    std::fs::create_dir_all(&trail).unwrap();
    let call = |endpoint: &str, who: serde_json::Value| {
        serde_json::json!({
            "id": "x", "type": "request", "method": "tools/call", "action": "call",
            "started_at": "2026-11-21T09:30:00Z", "ended_at": "2026-11-21T09:30:00Z",
            "principal": who, "endpoint": endpoint,
            "target": {"server": "alpha", "name": "echo", "kind": "tool"},
            "requested_name": "alpha__echo", "rule": "eng-all", "outcome": "ok", "latency_us": 1
        })
    };
    let lines = [
        line(
            1,
            &call("ghost", serde_json::json!({"id": "alice", "kind": "user"})),
        ),
        line(
            2,
            &call("main", serde_json::json!({"id": "mallory", "kind": "user"})),
        ),
        line(
            3,
            &serde_json::json!({"type": "request", "action": "call", "outcome": 42, "target": "x"}),
        ),
        line(
            4,
            &serde_json::json!({"type": "session_created", "started_at": "2026-11-21T09:30:00Z"}),
        ),
        "{\"seq\":5,\"prev\":\"0\",\"ev".to_owned(),
    ];
    std::fs::write(trail.join("audit-00000000000000000001.jsonl"), lines.join("\n")).unwrap();
    let (code, v) = replay_json(&config, &trail);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["changes"].as_array().unwrap().len(), 1, "{v:#}");
    let c = &v["changes"][0];
    assert_eq!(c["endpoint"], "ghost");
    assert_eq!(c["after"]["decision"], "refused");
    assert!(
        c["after"]["reason"]
            .as_str()
            .unwrap()
            .contains("no endpoint \"ghost\""),
        "{c}"
    );
    assert_eq!(v["summary"]["unknown_principal"], 1, "{v:#}");
    assert_eq!(v["principals"]["mallory"], "unknown principal", "{v:#}");
    assert_eq!(v["summary"]["skipped"]["malformed"], 1, "{v:#}");
    assert_eq!(v["summary"]["skipped"]["session"], 1, "{v:#}");
    assert!(v["notes"].to_string().contains("torn last line"), "{v:#}");
}
