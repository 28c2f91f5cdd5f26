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

/// The `audit-*.jsonl` files of a trail directory, in chain order (the directory
/// also holds the writers' lock file).
fn trail_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
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
    trail_files(dir).pop().unwrap()
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
        let kill_at = (killed < kills).then(|| 1 + random_below(per_life));
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
                let newest = trail_files(&dir).pop().unwrap();
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

// ---------------------------------------------------------------------------------
// A call whose start record cannot be made durable never reaches the upstream

/// alice (eng) on endpoint `main` with `alpha`'s echo and slow tools; the fixture
/// appends every call it executes to `calls.log`; `audit` is the `[audit]` table.
fn call_log_config(data: &Path, audit: &str) -> String {
    use std::fmt::Write as _;
    let mut c = String::from("[auth]\nstdio_principal = { id = \"alice\", roles = [\"eng\"] }\n\n");
    c.push_str(AUTH);
    c.push_str(&fixture("alpha", &[]));
    let _ = write!(
        c,
        "[servers.alpha.env]\nFIXTURE_CALL_LOG = \"{}\"\n\n",
        data.join("calls.log").display()
    );
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"echo\", \"slow\"]\n\n");
    c.push_str(audit);
    c
}

/// The calls the upstream executed, as its call log shows them.
fn executions(data: &Path) -> Vec<String> {
    std::fs::read_to_string(data.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Appends records to the trail in `dir` until its newest file holds `bytes`.
async fn prefill(dir: &Path, bytes: u64) {
    let sink = JsonLinesAuditSink::open(dir, JsonLinesOptions::default()).unwrap();
    let file = || trail_files(dir).pop().unwrap();
    while std::fs::metadata(file()).unwrap().len() < bytes {
        let mut e = AuditEvent::new(EventKind::ConfigReloaded {
            digest: String::new(),
            changes: String::new(),
        });
        e.request_id = Some("prefill".to_owned());
        sink.record(&e).await.unwrap();
    }
    sink.close();
}

#[tokio::test]
async fn a_start_record_that_cannot_be_written_refuses_the_call_before_the_upstream_runs_it() {
    // The trail's file is 200 bytes short of a file size limit (RLIMIT_FSIZE, with
    // SIGXFSZ ignored so that the write fails with EFBIG rather than killing the
    // gateway): the call's start record cannot be appended, as on a full disk.
    const LIMIT_KIB: u64 = 256;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("audit");
    prefill(&dir, LIMIT_KIB * 1024 - 200).await;
    let cfg = call_log_config(
        data.path(),
        &format!(
            "[audit]\nsinks = [\"jsonl\"]\njsonl_dir = \"{}\"\n",
            dir.display()
        ),
    );
    let script = format!("trap '' XFSZ; ulimit -f {LIMIT_KIB}; exec \"$0\" \"$@\"");
    let gw = GatewayProc::start_wrapped(&cfg, &["bash", "-c", &script]).await;
    let alice = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    let err = echo(&alice, "must-not-run").await.unwrap_err().to_string();
    assert!(
        executions(data.path()).is_empty(),
        "the upstream executed the call: {:?}",
        executions(data.path())
    );
    assert!(
        err.contains("audit record could not be written") && err.contains("reached no upstream"),
        "{err}"
    );
    // The failed append was undone: the trail still verifies, and the gateway serves.
    let (code, out) = verify(&[&dir]);
    assert_eq!(code, 0, "{out}");
    let err = echo(&alice, "again").await.unwrap_err().to_string();
    assert!(err.contains("reached no upstream"), "{err}");
    assert!(executions(data.path()).is_empty());
    let _ = alice.cancel().await;
    gw.stop().await;
}

/// A tmpfs mounted for one test, unmounted when dropped. `None` where mounting is not
/// allowed (not root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_owned()))
    }

    /// Writes a file until the disk is full; returns it.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_the_call_before_the_upstream_runs_it_and_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let mnt = data.path().join("disk");
    let Some(disk) = Tmpfs::mount(&mnt, "4m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let db = mnt.join("audit.db");
    let dir = mnt.join("jsonl");
    let cfg = call_log_config(
        data.path(),
        &format!(
            "[audit]\nsinks = [\"sqlite\", \"jsonl\"]\nsqlite_path = \"{}\"\njsonl_dir = \"{}\"\n",
            db.display(),
            dir.display()
        ),
    );
    let gw = GatewayProc::start(&cfg).await;
    let alice = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    assert_eq!(echo(&alice, "before").await.unwrap(), "before");
    // Let the outcome record reach the disk before it fills.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let filler = disk.fill();
    let err = echo(&alice, "on-a-full-disk").await.unwrap_err().to_string();
    assert_eq!(
        executions(data.path()),
        ["tools/call echo"],
        "only the call before"
    );
    assert!(err.contains("reached no upstream"), "{err}");
    std::fs::remove_file(filler).unwrap();
    assert_eq!(echo(&alice, "after").await.unwrap(), "after");
    assert_eq!(executions(data.path()).len(), 2);
    let _ = alice.cancel().await;
    gw.stop().await;
    let (code, out) = verify(&[&db, &dir]);
    assert_eq!(code, 0, "{out}");
    for text in ["before", "after"] {
        assert!(texts_in_db(&db).contains(text), "{text} in the database");
        assert!(texts_in_jsonl(&dir).contains(text), "{text} in the files");
    }
}

#[tokio::test]
async fn kill_9_during_a_slow_call_leaves_its_start_record_marked_incomplete() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("audit.db");
    let dir = data.path().join("jsonl");
    let cfg = call_log_config(
        data.path(),
        &format!(
            "[audit]\nsinks = [\"sqlite\", \"jsonl\"]\nsqlite_path = \"{}\"\njsonl_dir = \"{}\"\n",
            db.display(),
            dir.display()
        ),
    );
    let gw = GatewayProc::start(&cfg).await;
    let alice = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    assert_eq!(echo(&alice, "finished-first").await.unwrap(), "finished-first");
    let peer = alice.peer().clone();
    let slow = tokio::spawn(async move {
        peer.call_tool(
            CallToolRequestParams::new("alpha__slow")
                .with_arguments(args(&serde_json::json!({"steps": 200, "delay_ms": 100}))),
        )
        .await
    });
    assert!(
        eventually(20, async || executions(data.path())
            .iter()
            .any(|c| c == "tools/call slow"))
        .await,
        "the upstream started the slow call"
    );
    gw.kill9().await;
    assert!(slow.await.unwrap().is_err(), "the gateway died mid-call");

    let check = || {
        let (code, out) = verify(&[&db, &dir]);
        assert!(code == 0 || code == 3, "{out}");
        assert!(!out.contains("TAMPERED"), "{out}");
        let incomplete: Vec<&str> = out.lines().filter(|l| l.starts_with("INCOMPLETE")).collect();
        assert_eq!(
            incomplete.len(),
            2,
            "one in the database, one in the files: {out}"
        );
        for line in incomplete {
            assert!(
                line.contains("tools/call alpha/slow by alice on endpoint main"),
                "{line}"
            );
        }
        let db_s = db.display().to_string();
        let (code, out) = audit_cmd(&["query", "--db", &db_s, "--incomplete", "--format", "jsonl"]);
        assert_eq!(code, 0, "{out}");
        let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows.len(), 1, "{out}");
        assert_eq!(rows[0]["incomplete"], true);
        assert_eq!(rows[0]["phase"], "started");
        assert_eq!(rows[0]["arguments"]["steps"], 200);
        assert_eq!(rows[0]["target"]["name"], "slow");
        // The table marks it; the finished call is one row with its outcome.
        let (_, table) = audit_cmd(&["query", "--db", &db_s, "--principal", "alice"]);
        let slow_rows: Vec<&str> = table.lines().filter(|l| l.contains("alpha/slow")).collect();
        assert_eq!(slow_rows.len(), 1, "{table}");
        assert!(slow_rows[0].contains("INCOMPLETE"), "{table}");
        let echo_rows: Vec<&str> = table.lines().filter(|l| l.contains("alpha/echo")).collect();
        assert_eq!(echo_rows.len(), 1, "{table}");
        assert!(echo_rows[0].contains(" ok "), "{table}");
    };
    check();
    // A restart continues the trail; the cut-off call stays visible.
    GatewayProc::start(&cfg).await.stop().await;
    check();
}

// ---------------------------------------------------------------------------------
// Several writers on one trail

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "two processes, one scenario")]
async fn two_gateway_processes_on_one_trail_keep_one_chain_and_restart() {
    let data = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[auth]\nstdio_principal = {{ id = \"alice\", roles = [\"eng\"] }}\n\n{}",
        config(data.path())
    );
    let db = data.path().join("audit.db");
    let dir = data.path().join("jsonl");
    let http = GatewayProc::start(&cfg).await;
    let stdio = stdio_client(&http.config(), "main", Era::Modern).await;
    let started = Instant::now();
    let mut http_clients = Vec::new();
    for _ in 0..4 {
        http_clients.push(http_client(&http.url("main"), TOKEN, Era::Modern).await);
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let client = if w % 2 == 0 {
            http_clients[w / 2].peer().clone()
        } else {
            stdio.peer().clone()
        };
        let who = if w % 2 == 0 { "http" } else { "stdio" };
        workers.push(tokio::spawn(async move {
            let mut texts = Vec::new();
            for i in 0..250 {
                let text = format!("{who}-{w}-{i:03}");
                let r = client
                    .call_tool(
                        CallToolRequestParams::new("alpha__echo")
                            .with_arguments(args(&serde_json::json!({"text": text}))),
                    )
                    .await
                    .unwrap();
                assert_eq!(text_of(&r), text);
                texts.push(text);
            }
            texts
        }));
    }
    let mut answered = HashSet::new();
    for w in workers {
        answered.extend(w.await.unwrap());
    }
    let took = started.elapsed();
    assert_eq!(answered.len(), 2000);
    let _ = stdio.cancel().await;
    for c in http_clients {
        let _ = c.cancel().await;
    }
    http.stop().await;
    let (code, out) = verify(&[&db, &dir]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("INCOMPLETE"), "{out}");
    let files = trail_files(&dir).len();
    assert!(files > 2, "the writers rotated files between them: {files}");
    for (what, texts) in [("database", texts_in_db(&db)), ("files", texts_in_jsonl(&dir))] {
        let missing: Vec<_> = answered.iter().filter(|t| !texts.contains(*t)).collect();
        assert!(missing.is_empty(), "answered but not in the {what}: {missing:?}");
    }
    // The gateway starts again on the shared trail, and the chain still verifies.
    let again = GatewayProc::start(&cfg).await;
    let alice = http_client(&again.url("main"), TOKEN, Era::Modern).await;
    assert_eq!(echo(&alice, "after-restart").await.unwrap(), "after-restart");
    let _ = alice.cancel().await;
    again.stop().await;
    let (code, out) = verify(&[&db, &dir]);
    assert_eq!(code, 0, "{out}");
    println!(
        "two writers: 2,000 calls from two processes in {:.1} s; {files} files",
        took.as_secs_f64()
    );
}

#[tokio::test]
async fn a_failed_append_never_cuts_another_writers_records() {
    let data = tempfile::tempdir().unwrap();
    let mnt = data.path().join("disk");
    let Some(disk) = Tmpfs::mount(&mnt, "1m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let dir = mnt.join("trail");
    let a = JsonLinesAuditSink::open(&dir, JsonLinesOptions::default()).unwrap();
    let b = JsonLinesAuditSink::open(&dir, JsonLinesOptions::default()).unwrap();
    let event = |id: &str| {
        let mut e = AuditEvent::new(EventKind::ConfigReloaded {
            digest: String::new(),
            changes: String::new(),
        });
        e.request_id = Some(id.to_owned());
        e
    };
    a.record(&event("a-1")).await.unwrap();
    for i in 1..=5 {
        b.record(&event(&format!("b-{i}"))).await.unwrap();
    }
    let filler = disk.fill();
    // Larger than what is left of the file's last page.
    let mut big = event("a-2");
    big.request_id = Some("a-2 ".repeat(4096));
    let err = a.record(&big).await.unwrap_err();
    assert!(
        mcp_guard_core::upstream::error_chain(&err).contains("No space left"),
        "{err:?}"
    );
    std::fs::remove_file(filler).unwrap();
    b.record(&event("b-6")).await.unwrap();
    a.record(&event("a-3")).await.unwrap();
    a.close();
    b.close();
    let ids: Vec<String> = trail_files(&dir)
        .iter()
        .flat_map(|p| lines_of(p))
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(&l).unwrap()["event"]["request_id"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(ids, ["a-1", "b-1", "b-2", "b-3", "b-4", "b-5", "b-6", "a-3"]);
    let (code, out) = verify(&[&dir]);
    assert_eq!(code, 0, "{out}");
}

// ---------------------------------------------------------------------------------
// The audit layer over a sink that fails on command (in process)

/// A memory sink whose waited-for records, or deferred ones, fail while told to.
#[derive(Clone, Default)]
struct Failing {
    events: mcp_guard_core::MemoryAuditSink,
    fail_record: Arc<std::sync::atomic::AtomicBool>,
    fail_deferred: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl AuditSink for Failing {
    async fn record(&self, event: &AuditEvent) -> Result<(), mcp_guard_core::AuditError> {
        if self.fail_record.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("disk full (simulated)").into());
        }
        self.events.record(event).await
    }
    async fn record_deferred(&self, event: &AuditEvent) -> Result<(), mcp_guard_core::AuditError> {
        if self.fail_deferred.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("disk full (simulated)").into());
        }
        self.events.record(event).await
    }
}

/// An upstream that counts the calls it executes.
#[derive(Clone)]
struct Counting(Arc<AtomicUsize>);
impl rmcp::ServerHandler for Counting {
    fn get_info(&self) -> rmcp::model::InitializeResult {
        Echo.get_info()
    }
    async fn list_tools(
        &self,
        p: Option<rmcp::model::PaginatedRequestParams>,
        c: rmcp::service::RequestContext<rmcp::service::RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, rmcp::ErrorData> {
        Echo.list_tools(p, c).await
    }
    async fn call_tool(
        &self,
        p: CallToolRequestParams,
        c: rmcp::service::RequestContext<rmcp::service::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Echo.call_tool(p, c).await
    }
}

#[tokio::test]
async fn a_failing_sink_refuses_before_the_upstream_and_fail_open_lets_the_call_through() {
    use mcp_guard_core::upstream::{InProcessConnector, UpstreamOptions};
    use mcp_guard_tower::{
        AuditLayer, EndpointSpec, EnforcePolicyLayer, Gateway, GuardHandler, Router, Selection,
    };
    use rmcp::ServiceExt as _;

    let executed = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let executed = executed.clone();
        mcp_guard_core::RmcpUpstream::new(
            "up",
            InProcessConnector::new("up", move || Counting(executed.clone())),
            UpstreamOptions::default(),
        )
    };
    let gateway = Gateway::builder()
        .server(Arc::new(upstream))
        .endpoint(EndpointSpec::new("team").server("up", Selection::none().tools(["echo"]).unwrap()))
        .build()
        .await
        .unwrap();
    let policy = || {
        mcp_guard_core::GrantPolicy::builder()
            .grant(mcp_guard_core::Grant::allow().named("all").roles(["member"]))
            .build()
            .unwrap()
    };
    let client_for = async |layer: AuditLayer| {
        let stack = tower::ServiceBuilder::new()
            .layer(layer)
            .layer(EnforcePolicyLayer::new(policy()))
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
        ().serve(client_io).await.unwrap()
    };
    let call = CallToolRequestParams::new("up__echo").with_arguments(args(&serde_json::json!({"x": 1})));
    let phases = |sink: &Failing| -> Vec<(Option<String>, Option<String>)> {
        sink.events
            .events()
            .iter()
            .map(|e| {
                let v = serde_json::to_value(e).unwrap();
                (
                    v["phase"].as_str().map(str::to_owned),
                    v["outcome"].as_str().map(str::to_owned),
                )
            })
            .collect()
    };
    let some = |p: &str, o: Option<&str>| (Some(p.to_owned()), o.map(str::to_owned));

    // Fail closed: the start record fails, the upstream never sees the call, the
    // client is told why, and the refusal is recorded once the sink takes records.
    let sink = Failing::default();
    sink.fail_record.store(true, Ordering::SeqCst);
    let client = client_for(AuditLayer::new(Arc::new(sink.clone()), Arc::new(ScrubCanary))).await;
    let err = client.call_tool(call.clone()).await.unwrap_err().to_string();
    assert!(err.contains("reached no upstream"), "{err}");
    assert_eq!(executed.load(Ordering::SeqCst), 0);
    assert_eq!(phases(&sink), [some("finished", Some("audit_failed"))]);
    // The outcome record lost: the call still succeeds (the upstream ran it) and
    // stays visible as started.
    sink.fail_record.store(false, Ordering::SeqCst);
    sink.fail_deferred.store(true, Ordering::SeqCst);
    client.call_tool(call.clone()).await.unwrap();
    assert_eq!(executed.load(Ordering::SeqCst), 1);
    assert_eq!(phases(&sink)[1..], [some("started", None)]);
    // Both written: start, then outcome.
    sink.fail_deferred.store(false, Ordering::SeqCst);
    client.call_tool(call.clone()).await.unwrap();
    assert_eq!(
        phases(&sink)[2..],
        [some("started", None), some("finished", Some("ok"))]
    );
    let _ = client.cancel().await;

    // Fail open: the call goes through unrecorded; one record is attempted after it.
    let sink = Failing::default();
    sink.fail_record.store(true, Ordering::SeqCst);
    let layer = AuditLayer::new(Arc::new(sink.clone()), Arc::new(ScrubCanary))
        .dangerous()
        .fail_open();
    let client = client_for(layer).await;
    client.call_tool(call.clone()).await.unwrap();
    assert_eq!(executed.load(Ordering::SeqCst), 3);
    assert!(phases(&sink).is_empty());
    let _ = client.cancel().await;
    gateway.shutdown().await;
}

/// A random number in `0..n` (n > 0), from the operating system.
fn random_below(n: usize) -> usize {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).unwrap();
    usize::try_from(u64::from_le_bytes(b) % n as u64).unwrap()
}
