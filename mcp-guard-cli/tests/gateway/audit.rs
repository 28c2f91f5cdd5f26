//! The durable audit trail: the real binary writing SQLite and JSON Lines, killed
//! with SIGKILL under load; `audit verify` against every kind of tampering;
//! `audit query`; a canary secret that must never reach a record.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_guard_core::audit::{
    AuditQuery, EventKind, JsonLinesAuditSink, JsonLinesOptions, MacKey, query_database,
};
use mcp_guard_core::{AuditEvent, AuditSink};
use rand::Rng as _;
use rmcp::model::CallToolRequestParams;
use sha2::Digest as _;

use crate::support::*;

fn config(data: &Path) -> String {
    let mut c = String::from(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"echo\", \"whoami\"]\n\n");
    let audit = format!(
        "[audit]\nsinks = [\"sqlite\", \"jsonl\"]\nsqlite_path = \"{}\"\njsonl_dir = \"{}\"\nrotate_bytes = 65536\n",
        data.join("audit.db").display(),
        data.join("jsonl").display()
    );
    c.push_str(&audit);
    c
}

/// Runs `mcp-guard audit ARGS`; returns the exit code and stdout.
fn audit_cmd(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn verify(paths: &[&Path]) -> (i32, String) {
    let mut args = vec!["verify".to_owned()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    audit_cmd(&refs)
}

/// The `text` argument of every recorded echo call.
fn texts_in_jsonl(dir: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue; // a torn tail, reported by verify
            };
            if let Some(t) = v.pointer("/event/arguments/text").and_then(|t| t.as_str()) {
                out.insert(t.to_owned());
            }
        }
    }
    out
}

fn texts_in_db(db: &Path) -> HashSet<String> {
    let mut q = AuditQuery::default();
    q.tool = Some("echo".to_owned());
    query_database(db, &q)
        .unwrap()
        .iter()
        .filter_map(|r| r.event.pointer("/arguments/text")?.as_str().map(str::to_owned))
        .collect()
}

async fn echo(client: &Client, text: &str) -> Result<String, rmcp::ServiceError> {
    client
        .call_tool(
            CallToolRequestParams::new("alpha__echo")
                .with_arguments(args(&serde_json::json!({"text": text}))),
        )
        .await
        .map(|r| text_of(&r))
}

#[tokio::test]
async fn records_reach_sqlite_and_jsonl_and_query_finds_them() {
    let data = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(&config(data.path())).await;
    let alice = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    for i in 0..5 {
        assert_eq!(
            echo(&alice, &format!("hello-{i}")).await.unwrap(),
            format!("hello-{i}")
        );
    }
    let bob = http_client(&gw.url("main"), OTHER_TOKEN, Era::Modern).await;
    assert!(echo(&bob, "refused").await.is_err());
    // A failed authentication is an audit event too (without the presented token).
    mcp_guard_core::upstream::ensure_crypto_provider();
    let r = reqwest::Client::new()
        .post(gw.url("main"))
        .bearer_auth("not-a-valid-token-0123456789")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let _ = alice.cancel().await;
    let _ = bob.cancel().await;
    gw.stop().await;
    let db_path = data.path().join("audit.db").display().to_string();
    let (code, out) = audit_cmd(&[
        "query",
        "--db",
        &db_path,
        "--outcome",
        "unauthenticated",
        "--format",
        "jsonl",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("authentication_failed") && out.contains("invalid credential"),
        "{out}"
    );
    assert!(!out.contains("not-a-valid-token"), "{out}");

    let db = data.path().join("audit.db");
    let dir = data.path().join("jsonl");
    let (code, out) = verify(&[&db, &dir]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact"), "{out}");

    let db_s = db.display().to_string();
    let (code, out) = audit_cmd(&[
        "query",
        "--db",
        &db_s,
        "--tool",
        "echo",
        "--principal",
        "alice",
        "--format",
        "jsonl",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 5, "{out}");
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["outcome"], "ok");
        assert!(v["seq"].as_u64().is_some());
    }
    let (code, out) = audit_cmd(&["query", "--db", &db_s, "--outcome", "denied", "--since", "1h"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("SEQ"), "{out}");
    assert!(
        out.contains("bob") && out.contains("denied") && !out.contains("alice"),
        "{out}"
    );
    let (code, out) = audit_cmd(&[
        "query",
        "--db",
        &db_s,
        "--endpoint",
        "main",
        "--limit",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .unwrap()
            .len(),
        2
    );
    let (code, out) = audit_cmd(&["query", "--db", &db_s, "--until", "2000-01-01"]);
    assert_eq!((code, out.lines().count()), (0, 1), "only the header: {out}");
    let (code, out) = audit_cmd(&["query", "--db", "/nonexistent/audit.db"]);
    assert_eq!(code, 2, "{out}");
}

// ---------------------------------------------------------------------------------
// Tampering

const KEY: &[u8] = b"test audit mac key, 32 bytes ok!";

async fn ten_records(dir: &Path) -> PathBuf {
    let mut o = JsonLinesOptions::default();
    o.mac_key = Some(MacKey::new(KEY.to_vec()).unwrap());
    let sink = JsonLinesAuditSink::open(dir, o).unwrap();
    for i in 1..=10 {
        let mut e = AuditEvent::new(EventKind::ConfigReloaded {
            digest: String::new(),
            changes: String::new(),
        });
        e.request_id = Some(format!("req-{i}"));
        sink.record(&e).await.unwrap();
    }
    sink.close();
    std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path()
}

fn lines_of(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(file: &Path, lines: &[String]) {
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
}

/// Verifies `file` with and without the key; returns (exit code, output with the key).
fn verify_file(file: &Path, key_file: &Path) -> (i32, String) {
    let (plain, _) = verify(&[file]);
    let (code, out) = audit_cmd(&[
        "verify",
        "--mac-key-file",
        &key_file.display().to_string(),
        &file.display().to_string(),
    ]);
    if code == 1 {
        assert_eq!(plain, 1, "detected without the key too, except forgeries: {out}");
    }
    (code, out)
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario per kind of tampering, in order"
)]
async fn each_kind_of_tampering_is_detected_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trail");
    let original = ten_records(&dir).await;
    let name = original.file_name().unwrap().to_str().unwrap().to_owned();
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let pristine = lines_of(&original);
    assert_eq!(pristine.len(), 10);
    let (code, out) = verify_file(&original, &key_file);
    assert_eq!(code, 0, "{out}");

    let case = |label: &str, edit: &dyn Fn(&mut Vec<String>)| {
        let f = tmp.path().join(format!("{label}-{name}"));
        let mut l = pristine.clone();
        edit(&mut l);
        write_lines(&f, &l);
        // Keep the canonical file name so the name/seq check applies too.
        let d = tmp.path().join(label);
        std::fs::create_dir_all(&d).unwrap();
        let g = d.join(&name);
        std::fs::rename(&f, &g).unwrap();
        g
    };

    // 1. A field modified in place.
    let f = case("modified", &|l| l[4] = l[4].replace("req-5", "req-X"));
    let (code, out) = verify_file(&f, &key_file);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{name}:5: seq 5: hash mismatch")), "{out}");
    assert_eq!(
        out.matches("TAMPERED").count(),
        2,
        "hash and MAC of that record only: {out}"
    );

    // 2. A record deleted.
    let f = case("deleted", &|l| {
        l.remove(4);
    });
    let (code, out) = verify_file(&f, &key_file);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{name}:5: seq 6: seq 6 follows seq 4")),
        "{out}"
    );
    assert!(out.contains("prev does not match"), "{out}");

    // 3. A forged record inserted, with a correct hash (the forger knows the format)
    //    but no key: the MAC names it, and the chain names the record after it.
    let forge = |l: &mut Vec<String>| {
        let prev_hash = serde_json::from_str::<serde_json::Value>(&l[4]).unwrap()["hash"]
            .as_str()
            .unwrap()
            .to_owned();
        let body = format!(
            "{{\"seq\":6,\"prev\":\"{prev_hash}\",\"event\":{{\"id\":\"x\",\"type\":\"config_reloaded\"}}"
        );
        let hash: String = sha2::Sha256::digest(body.as_bytes())
            .iter()
            .fold(String::new(), |mut s, b| {
                use std::fmt::Write as _;
                let _ = write!(s, "{b:02x}");
                s
            });
        l.insert(5, format!("{body},\"hash\":\"{hash}\"}}"));
    };
    let f = case("inserted", &forge);
    let (code, out) = verify_file(&f, &key_file);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{name}:6: seq 6: MAC missing")), "{out}");
    assert!(
        out.contains(&format!("{name}:7: seq 6: seq 6 follows seq 6")),
        "{out}"
    );

    // 4. Two records swapped.
    let f = case("swapped", &|l| l.swap(3, 4));
    let (code, out) = verify_file(&f, &key_file);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{name}:4: seq 5: seq 5 follows seq 3")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{name}:5: seq 4: seq 4 follows seq 5")),
        "{out}"
    );

    // 5. Truncated in the middle of the last line: a torn tail, reported, not fatal.
    let torn_dir = tmp.path().join("torn");
    std::fs::create_dir_all(&torn_dir).unwrap();
    let torn = torn_dir.join(&name);
    let mut bytes = std::fs::read(&original).unwrap();
    bytes.truncate(bytes.len() - 40);
    std::fs::write(&torn, &bytes).unwrap();
    let (code, out) = verify_file(&torn, &key_file);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!("TORN     {}:10: torn last line", torn.display())),
        "{out}"
    );
    assert!(!out.contains("TAMPERED"), "{out}");

    // 6. Cut in the middle of a line that is not the last: tampering, not a crash.
    let f = case("cut", &|l| {
        let half = l[4].len() / 2;
        l[4].truncate(half);
    });
    let (code, out) = verify_file(&f, &key_file);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{name}:5: malformed record")), "{out}");

    // 7. A wrong key is a failure of every record.
    let wrong = tmp.path().join("wrong-key");
    std::fs::write(&wrong, b"another key entirely, 32 bytes..").unwrap();
    let (code, out) = audit_cmd(&[
        "verify",
        "--mac-key-file",
        &wrong.display().to_string(),
        &original.display().to_string(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.matches("MAC missing or wrong").count(), 10, "{out}");
}

#[tokio::test]
async fn tampering_with_the_database_is_detected_and_named() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("audit.db");
    {
        let sink = mcp_guard_core::audit::SqliteAuditSink::open(
            &db,
            mcp_guard_core::audit::SqliteOptions::default(),
        )
        .unwrap();
        for i in 1..=10 {
            let mut e = AuditEvent::new(EventKind::ConfigReloaded {
                digest: String::new(),
                changes: String::new(),
            });
            e.request_id = Some(format!("req-{i}"));
            sink.record(&e).await.unwrap();
        }
        sink.close();
    }
    let (code, out) = verify(&[&db]);
    assert_eq!(code, 0, "{out}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE audit_records SET record = replace(record, 'req-3', 'req-X') WHERE seq = 3",
        [],
    )
    .unwrap();
    conn.execute("UPDATE audit_records SET request_id = 'hidden' WHERE seq = 5", [])
        .unwrap();
    conn.execute("DELETE FROM audit_records WHERE seq = 8", [])
        .unwrap();
    drop(conn);
    let (code, out) = verify(&[&db]);
    assert_eq!(code, 1, "{out}");
    let d = db.display();
    assert!(out.contains(&format!("{d}: seq 3: hash mismatch")), "{out}");
    assert!(
        out.contains(&format!("{d}: seq 5: column request_id differs")),
        "{out}"
    );
    assert!(out.contains(&format!("{d}: seq 9: seq 9 follows seq 7")), "{out}");
}

// ---------------------------------------------------------------------------------
// SIGKILL under load

/// Runs `calls` echo calls from 4 concurrent workers against the real gateway and
/// SIGKILLs it `kills` times at random points (after a random number of answered
/// calls, with others in flight), restarting it each time. Every call whose answer
/// the client received must be in both the database and the files, and the chains
/// must verify after every kill (a torn last line allowed: exit 3).
#[allow(
    clippy::print_stdout,
    clippy::too_many_lines,
    reason = "one load-and-kill loop; prints the figures of the run"
)]
async fn kill_under_load(kills: usize, calls: usize) {
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let cfg = config(data.path());
    let db = data.path().join("audit.db");
    let dir = data.path().join("jsonl");
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut failed = 0usize;
    let mut torn_seen = 0usize;
    let mut torn_made = 0usize;
    let mut killed = 0usize;
    let per_life = (calls / (kills + 1)).max(2);
    while next.load(Ordering::SeqCst) < calls {
        let gw = GatewayProc::start(&cfg).await;
        let kill_at = (killed < kills).then(|| rand::rng().random_range(1..=per_life));
        let answered = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let client = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
            let (next, acked, answered) = (next.clone(), acked.clone(), answered.clone());
            workers.push(tokio::spawn(async move {
                let mut failures = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= calls {
                        break;
                    }
                    let text = format!("call-{i:05}");
                    if let Ok(Ok(got)) =
                        tokio::time::timeout(Duration::from_secs(10), echo(&client, &text)).await
                    {
                        assert_eq!(got, text);
                        acked.lock().unwrap().insert(text);
                        answered.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failures += 1;
                        break; // the gateway is gone: this worker's life ends
                    }
                }
                failures
            }));
        }
        if let Some(k) = kill_at {
            while answered.load(Ordering::SeqCst) < k && next.load(Ordering::SeqCst) < calls {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            gw.kill9().await;
            killed += 1;
            for w in workers {
                failed += w.await.unwrap();
            }
            if killed.is_multiple_of(10) {
                // A kill mid-write can leave part of a line; SIGKILL rarely manages it
                // (a write to the page cache completes), so leave one by hand as the
                // crash would, and require verify to report it and restart to recover.
                let newest = std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .max()
                    .unwrap();
                let mut f = std::fs::OpenOptions::new().append(true).open(&newest).unwrap();
                std::io::Write::write_all(&mut f, b"{\"seq\":999999,\"prev\":\"00ab").unwrap();
                torn_made += 1;
            }
            let (code, out) = verify(&[&db, &dir]);
            assert!(code == 0 || code == 3, "after kill {killed}: {out}");
            if code == 3 {
                assert!(out.contains("TORN") && !out.contains("TAMPERED"), "{out}");
                torn_seen += 1;
            }
        } else {
            for w in workers {
                failed += w.await.unwrap();
            }
            gw.stop().await;
        }
    }
    // One more start: whatever the last kill left is recovered.
    GatewayProc::start(&cfg).await.stop().await;
    let acked = acked.lock().unwrap().clone();
    let in_db = texts_in_db(&db);
    let in_files = texts_in_jsonl(&dir);
    let missing_db: Vec<_> = acked.iter().filter(|t| !in_db.contains(*t)).collect();
    let missing_files: Vec<_> = acked.iter().filter(|t| !in_files.contains(*t)).collect();
    assert!(
        missing_db.is_empty(),
        "answered but not in the database: {missing_db:?}"
    );
    assert!(
        missing_files.is_empty(),
        "answered but not in the files: {missing_files:?}"
    );
    let (code, out) = verify(&[&db, &dir]);
    assert_eq!(code, 0, "{out}");
    let recovered = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .matches("\"action\":\"recovered\"")
                .count()
        })
        .sum::<usize>();
    println!(
        "kill test: {killed} SIGKILLs, {calls} calls issued, {} answered and all recorded (db {} / files {} echo records), \
         {failed} cut off by a kill, torn tails left by hand {torn_made}, seen by verify {torn_seen}, recoveries recorded {recovered}, {:.1} s",
        acked.len(),
        in_db.len(),
        in_files.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(acked.len() >= calls / 2, "most calls were answered");
    assert_eq!(killed, kills);
    assert!(
        torn_seen >= torn_made && recovered >= torn_made,
        "every torn tail reported and recovered"
    );
}

/// 50 SIGKILLs during 1,000 calls (about 20 s on 2 cores).
#[tokio::test]
async fn answered_calls_survive_50_sigkills_in_1000_calls() {
    kill_under_load(50, 1000).await;
}

// ---------------------------------------------------------------------------------
// Canary: a secret planted in arguments and results never reaches a durable record

const CANARY: &str = "canary-7f3e9a1c-d00d-4b1e-9e55-5ec2e7c0ffee";

/// Scrubs the canary (stands in for the configured redactor).
struct ScrubCanary;
impl mcp_guard_core::Redactor for ScrubCanary {
    fn redact_str<'a>(&self, s: &'a str) -> std::borrow::Cow<'a, str> {
        if s.contains(CANARY) {
            s.replace(CANARY, "[REDACTED]").into()
        } else {
            s.into()
        }
    }
}

#[derive(Clone)]
struct Echo;
impl rmcp::ServerHandler for Echo {
    fn get_info(&self) -> rmcp::model::InitializeResult {
        rmcp::model::InitializeResult::new(rmcp::model::ServerCapabilities::builder().enable_tools().build())
    }
    async fn list_tools(
        &self,
        _: Option<rmcp::model::PaginatedRequestParams>,
        _: rmcp::service::RequestContext<rmcp::service::RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, rmcp::ErrorData> {
        let schema = Arc::new(serde_json::Map::new());
        Ok(rmcp::model::ListToolsResult::with_all_items(vec![
            rmcp::model::Tool::new("echo", "Echoes.", schema),
        ]))
    }
    async fn call_tool(
        &self,
        p: CallToolRequestParams,
        _: rmcp::service::RequestContext<rmcp::service::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let text = serde_json::to_string(&p.arguments).unwrap_or_default();
        Ok(rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text(text)]).into())
    }
}

#[tokio::test]
async fn a_planted_canary_never_reaches_the_durable_records() {
    use mcp_guard_core::upstream::{InProcessConnector, UpstreamOptions};
    use mcp_guard_tower::{
        AuditLayer, EndpointSpec, EnforcePolicyLayer, Gateway, GuardHandler, Router, Selection,
    };
    use rmcp::ServiceExt as _;

    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("audit.db");
    let dir = data.path().join("jsonl");
    let sqlite = Arc::new(
        mcp_guard_core::audit::SqliteAuditSink::open(&db, mcp_guard_core::audit::SqliteOptions::default())
            .unwrap(),
    );
    let files = Arc::new(JsonLinesAuditSink::open(&dir, JsonLinesOptions::default()).unwrap());
    let sink = Arc::new(mcp_guard_core::FanOut::new(vec![sqlite.clone(), files.clone()]));

    let upstream = mcp_guard_core::RmcpUpstream::new(
        "up",
        InProcessConnector::new("up", || Echo),
        UpstreamOptions::default(),
    );
    let gateway = Gateway::builder()
        .server(Arc::new(upstream))
        .endpoint(EndpointSpec::new("team").server("up", Selection::none().tools(["echo"]).unwrap()))
        .build()
        .await
        .unwrap();
    let policy = mcp_guard_core::GrantPolicy::builder()
        .grant(mcp_guard_core::Grant::allow().named("all").roles(["member"]))
        .build()
        .unwrap();
    let stack = tower::ServiceBuilder::new()
        .layer(AuditLayer::new(sink, Arc::new(ScrubCanary)))
        .layer(EnforcePolicyLayer::new(policy))
        .service(Router::new());
    let handler = GuardHandler::new(
        gateway.endpoint("team").unwrap(),
        tower::util::BoxCloneSyncService::new(stack),
    )
    .with_principal(Arc::new(
        mcp_guard_core::Principal::user("ada").with_roles(["member"]),
    ));
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Ok(running) = handler.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = ().serve(client_io).await.unwrap();
    let arguments = serde_json::json!({"token": CANARY, "nested": {"list": [format!("x {CANARY} y")]}});
    let result = client
        .call_tool(CallToolRequestParams::new("up__echo").with_arguments(args(&arguments)))
        .await
        .unwrap();
    assert!(
        text_of(&result).contains(CANARY),
        "the client gets the real answer"
    );
    let _ = client.cancel().await;
    gateway.shutdown().await;
    Arc::into_inner(sqlite).unwrap().close();
    Arc::into_inner(files).unwrap().close();

    // The records exist and hold the redacted payloads...
    let mut q = AuditQuery::default();
    q.tool = Some("echo".to_owned());
    let rows = query_database(&db, &q).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event["arguments"]["token"], "[REDACTED]");
    assert!(rows[0].event["result"].to_string().contains("[REDACTED]"));
    // ...and no byte of any file the sinks wrote holds the canary.
    let mut checked = 0;
    for entry in walk(data.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "canary found in {}",
            entry.display()
        );
        checked += 1;
    }
    assert!(checked >= 2, "the database and a JSON Lines file were checked");
    let (code, out) = verify(&[&db, &dir]);
    assert_eq!(code, 0, "{out}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
