//! Durable sinks: chain, recovery, rotation, retention, group commit.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use super::*;

fn event(i: usize) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Request {
        method: "tools/call".to_owned(),
        action: Action::Call,
    });
    e.request_id = Some(format!("req-{i}"));
    e.endpoint = Some("eng".to_owned());
    e.principal = Some(AuditPrincipal::new("alice", PrincipalKind::User));
    e.target = Some(Target::new("files", "read_file", crate::TargetKind::Tool));
    e.outcome = Some(Outcome::Ok);
    e
}

fn lines(dir: &Path) -> Vec<String> {
    verify::files_in(dir)
        .unwrap()
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn concurrent_records_are_all_chained_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(JsonLinesAuditSink::open(dir.path(), JsonLinesOptions::default()).unwrap());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = sink.clone();
            tokio::spawn(async move { s.record(&event(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let report = verify_paths(&[dir.path().to_owned()], None).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 200);
    assert_eq!(report.seq_range, Some((1, 200)));
}

#[tokio::test]
async fn a_torn_tail_is_cut_recorded_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let key = MacKey::new(b"a key of twenty bytes".to_vec()).unwrap();
    let opts = JsonLinesOptions {
        mac_key: Some(key.clone()),
        ..JsonLinesOptions::default()
    };
    {
        let sink = JsonLinesAuditSink::open(dir.path(), opts.clone()).unwrap();
        for i in 0..3 {
            sink.record(&event(i)).await.unwrap();
        }
        sink.close();
    }
    let file = verify::files_in(dir.path()).unwrap().pop().unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(b"{\"seq\":4,\"prev\":\"ab")
        .unwrap();
    let report = verify_paths(&[dir.path().to_owned()], Some(&key)).unwrap();
    assert!(report.is_intact());
    let torn = report.torn_tail.expect("torn tail reported");
    assert_eq!(torn.line, Some(4));

    let sink = JsonLinesAuditSink::open(dir.path(), opts.clone()).unwrap();
    sink.record(&event(9)).await.unwrap();
    sink.close();
    let report = verify_paths(&[dir.path().to_owned()], Some(&key)).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert!(report.torn_tail.is_none());
    assert_eq!(report.records, 5, "3 + the recovery record + 1");
    let all = lines(dir.path());
    assert!(
        all[3].contains("\"action\":\"recovered\"") && all[3].contains("19 bytes"),
        "{}",
        all[3]
    );
}

#[tokio::test]
async fn damage_before_the_tail_stops_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let sink = JsonLinesAuditSink::open(dir.path(), JsonLinesOptions::default()).unwrap();
        for i in 0..3 {
            sink.record(&event(i)).await.unwrap();
        }
        sink.close();
    }
    let file = verify::files_in(dir.path()).unwrap().pop().unwrap();
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replacen("req-1", "req-X", 1);
    std::fs::write(&file, text).unwrap();
    let err = JsonLinesAuditSink::open(dir.path(), JsonLinesOptions::default()).unwrap_err();
    match &err {
        AuditError::Corrupt { line, reason, .. } => {
            assert_eq!(*line, 2);
            assert!(reason.contains("hash mismatch"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn rotation_carries_the_chain_and_retention_keeps_n_files() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JsonLinesOptions {
        rotate_bytes: 2000,
        keep_files: 3,
        max_batch: 1,
        ..JsonLinesOptions::default()
    };
    {
        let sink = JsonLinesAuditSink::open(dir.path(), opts.clone()).unwrap();
        for i in 0..40 {
            sink.record(&event(i)).await.unwrap();
        }
        sink.close();
    }
    let files = verify::files_in(dir.path()).unwrap();
    assert_eq!(files.len(), 3, "{files:?}");
    let report = verify_paths(&[dir.path().to_owned()], None).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert!(
        report.notes.iter().any(|n| n.contains("removed by retention")),
        "{:?}",
        report.notes
    );
    let all = lines(dir.path());
    assert!(all[0].contains("\"action\":\"rotated\""), "{}", all[0]);
    assert!(all.iter().any(|l| l.contains("removing audit-")));
    // Reopening continues the newest file's chain.
    let sink = JsonLinesAuditSink::open(dir.path(), opts).unwrap();
    sink.record(&event(99)).await.unwrap();
    sink.close();
    assert!(verify_paths(&[dir.path().to_owned()], None).unwrap().is_intact());
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_records_chain_query_and_detect_column_edits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let sink = Arc::new(SqliteAuditSink::open(&db, SqliteOptions::default()).unwrap());
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = sink.clone();
            tokio::spawn(async move {
                let mut e = event(i);
                if i % 5 == 0 {
                    e.outcome = Some(Outcome::Denied);
                }
                s.record(&e).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut q = AuditQuery {
        outcome: Some("denied".to_owned()),
        ..AuditQuery::default()
    };
    assert_eq!(query_database(&db, &q).unwrap().len(), 10);
    q.limit = Some(3);
    let rows = query_database(&db, &q).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows[0].seq < rows[2].seq, "oldest first");
    let report = verify_database(&db, None).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 50);
    drop(sink);
    // Reopen: the chain continues.
    let sink = SqliteAuditSink::open(&db, SqliteOptions::default()).unwrap();
    sink.record(&event(77)).await.unwrap();
    sink.close();
    assert_eq!(verify_database(&db, None).unwrap().records, 51);
    // Hiding a row from queries by editing its column is detected.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE audit_records SET principal = 'mallory' WHERE seq = 7", [])
        .unwrap();
    conn.execute("DELETE FROM audit_records WHERE seq = 20", [])
        .unwrap();
    drop(conn);
    let report = verify_database(&db, None).unwrap();
    let seqs: Vec<_> = report.problems.iter().map(|p| p.seq).collect();
    assert!(
        seqs.contains(&Some(7)) && seqs.contains(&Some(21)),
        "{:?}",
        report.problems
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn two_writers_on_one_database_keep_one_chain() {
    use crate::audit::EventKind;
    use crate::audit::{SqliteAuditSink, SqliteOptions, verify_database};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = SqliteAuditSink::open(&path, SqliteOptions::default()).unwrap();
    let b = SqliteAuditSink::open(&path, SqliteOptions::default()).unwrap();
    for i in 0..20 {
        let sink = if i % 2 == 0 { &a } else { &b };
        sink.record(&AuditEvent::new(EventKind::ConfigReloaded {
            digest: String::new(),
            changes: String::new(),
        }))
        .await
        .unwrap();
    }
    let report = verify_database(&path, None).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
