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

#[tokio::test]
async fn two_sinks_on_one_directory_keep_one_chain() {
    // Two writers (as two processes would be) interleaving batches, with rotations.
    let dir = tempfile::tempdir().unwrap();
    let opts = JsonLinesOptions {
        rotate_bytes: 4096,
        max_batch: 4,
        ..JsonLinesOptions::default()
    };
    let a = Arc::new(JsonLinesAuditSink::open(dir.path(), opts.clone()).unwrap());
    let b = Arc::new(JsonLinesAuditSink::open(dir.path(), opts.clone()).unwrap());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                if i % 3 == 0 {
                    s.record_deferred(&event(i)).await
                } else {
                    s.record(&event(i)).await
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    Arc::into_inner(a).unwrap().close();
    Arc::into_inner(b).unwrap().close();
    let report = verify_paths(&[dir.path().to_owned()], None).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert!(report.files > 2, "rotated: {} files", report.files);
    let ids: std::collections::HashSet<String> = lines(dir.path())
        .iter()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["request_id"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(ids.len(), 200, "every record, once");
    // Either writer reopens the trail.
    JsonLinesAuditSink::open(dir.path(), opts).unwrap().close();
}

/// A backend that remembers what it was asked to do.
#[derive(Clone, Default)]
struct Recording(Arc<std::sync::Mutex<Vec<String>>>);

impl writer::Backend for Recording {
    fn commit(&mut self, batch: &[writer::Job], sync: bool) -> Result<(), writer::BatchError> {
        self.0
            .lock()
            .unwrap()
            .push(format!("commit {} sync={sync}", batch.len()));
        Ok(())
    }
    fn sync(&mut self) -> Result<(), writer::BatchError> {
        self.0.lock().unwrap().push("sync".to_owned());
        Ok(())
    }
    fn last_seq(&self) -> u64 {
        0
    }
}

#[tokio::test]
async fn deferred_records_share_the_next_sync_or_are_written_then_synced_when_idle() {
    let log = Recording::default();
    let w = writer::GroupCommit::spawn(
        "test-writer",
        log.clone(),
        16,
        16,
        std::time::Duration::from_millis(200),
    )
    .unwrap();
    let ops = || log.0.lock().unwrap().clone();
    let job = |i| writer::Job::of(&event(i)).unwrap();
    w.submit(job(1)).await.unwrap();
    assert_eq!(ops(), ["commit 1 sync=true"]);
    // A deferred record followed by one that syncs: usually one write and one sync for
    // both (a loaded machine may let the deferred one's millisecond pass first).
    w.submit_deferred(job(2)).await.unwrap();
    w.submit(job(3)).await.unwrap();
    let tail = ops()[1..].to_vec();
    assert!(
        tail == ["commit 2 sync=true"] || tail == ["commit 1 sync=false", "commit 1 sync=true"],
        "{tail:?}"
    );
    // Left alone, a deferred record is written without a sync, then synced after the
    // idle delay.
    let before = ops().len();
    w.submit_deferred(job(4)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(ops()[before..], ["commit 1 sync=false", "sync"]);
    // A flush commits and syncs what is pending; closing does too.
    let before = ops().len();
    w.submit_deferred(job(5)).await.unwrap();
    w.flush().await.unwrap();
    let tail = ops()[before..].to_vec();
    assert!(
        tail == ["commit 1 sync=true"] || tail == ["commit 1 sync=false", "sync"],
        "{tail:?}"
    );
    let before = ops().len();
    w.submit_deferred(job(6)).await.unwrap();
    w.close();
    assert_eq!(ops()[before..], ["commit 1 sync=true"]);
}

fn call(id: &str, phase: Phase) -> AuditEvent {
    let mut e = event(0);
    e.id = id.to_owned();
    e.phase = Some(phase);
    if phase == Phase::Started {
        e.outcome = None;
    }
    e
}

#[tokio::test]
async fn calls_started_without_an_outcome_are_listed_as_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let sink = JsonLinesAuditSink::open(dir.path(), JsonLinesOptions::default()).unwrap();
    for e in [
        call("done", Phase::Started),
        call("cut-off", Phase::Started),
        call("done", Phase::Finished),
        event(7),
    ] {
        sink.record(&e).await.unwrap();
    }
    sink.close();
    let report = verify_paths(&[dir.path().to_owned()], None).unwrap();
    assert!(report.is_intact());
    assert_eq!(report.incomplete.len(), 1, "{:?}", report.incomplete);
    let f = &report.incomplete[0];
    assert_eq!((f.seq, f.line), (Some(2), Some(2)));
    assert!(
        f.what
            .contains("call cut-off (tools/call files/read_file by alice on endpoint eng"),
        "{}",
        f.what
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_database_lists_incomplete_calls_and_shows_each_call_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let sink = SqliteAuditSink::open(&db, SqliteOptions::default()).unwrap();
    sink.record(&call("done", Phase::Started)).await.unwrap();
    sink.record(&call("cut-off", Phase::Started)).await.unwrap();
    sink.record_deferred(&call("done", Phase::Finished))
        .await
        .unwrap();
    sink.record(&event(7)).await.unwrap();
    sink.close();
    let report = verify_database(&db, None).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    let seqs: Vec<_> = report.incomplete.iter().map(|f| f.seq).collect();
    assert_eq!(seqs, [Some(2)]);
    let rows = query_database(&db, &AuditQuery::default()).unwrap();
    let seen: Vec<_> = rows.iter().map(|r| (r.seq, r.incomplete)).collect();
    assert_eq!(
        seen,
        [(2, true), (3, false), (4, false)],
        "the finished call's start is folded"
    );
    let q = AuditQuery {
        incomplete: true,
        ..AuditQuery::default()
    };
    let rows = query_database(&db, &q).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event["id"], "cut-off");
    let q = AuditQuery {
        all_records: true,
        ..AuditQuery::default()
    };
    assert_eq!(query_database(&db, &q).unwrap().len(), 4);
}

#[tokio::test]
async fn a_forked_trail_stops_open_with_what_it_saw() {
    // What two writers without a shared lock left (older versions): a second record
    // with seq 4, continuing from seq 3, after seq 5.
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let sink = JsonLinesAuditSink::open(one.path(), JsonLinesOptions::default()).unwrap();
    for i in 0..5 {
        sink.record(&event(i)).await.unwrap();
    }
    sink.close();
    let file = verify::files_in(one.path()).unwrap().pop().unwrap();
    let first = lines(one.path());
    std::fs::write(
        two.path().join(file.file_name().unwrap()),
        first[..3].join("\n") + "\n",
    )
    .unwrap();
    let sink = JsonLinesAuditSink::open(two.path(), JsonLinesOptions::default()).unwrap();
    sink.record(&event(9)).await.unwrap();
    sink.close();
    let forked = lines(two.path()).pop().unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(format!("{forked}\n").as_bytes())
        .unwrap();
    let err = JsonLinesAuditSink::open(one.path(), JsonLinesOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("record 6: seq 4 follows seq 5 (expected 6): the chain goes back here")
            && err.contains("a second process appending without the trail's lock"),
        "{err}"
    );
    assert!(!err.to_lowercase().contains("tamper"), "{err}");
}
