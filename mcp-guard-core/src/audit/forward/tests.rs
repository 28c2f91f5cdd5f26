use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::audit::{EventKind, JsonLinesAuditSink, JsonLinesOptions, SqliteAuditSink, SqliteOptions};
use crate::{AuditEvent, AuditSink};

/// A receiver in memory: keeps what it acknowledged; fails the next `fail` sends.
#[derive(Clone, Default)]
struct Memory {
    got: Arc<Mutex<Vec<ForwardRecord>>>,
    fail: Arc<AtomicUsize>,
    sends: Arc<AtomicUsize>,
}

#[async_trait]
impl Transport for Memory {
    fn destination(&self) -> String {
        "memory".to_owned()
    }
    async fn send(&mut self, records: &[ForwardRecord]) -> Result<Sent, ForwardError> {
        self.sends.fetch_add(1, Ordering::SeqCst);
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ForwardError::Refused {
                destination: "memory".to_owned(),
                status: 503,
                body: "down".to_owned(),
            });
        }
        self.got.lock().unwrap().extend_from_slice(records);
        Ok(Sent::Acknowledged)
    }
    async fn check(&mut self) -> Result<String, ForwardError> {
        Ok("ok".to_owned())
    }
}

impl Memory {
    fn seqs(&self) -> Vec<u64> {
        self.got.lock().unwrap().iter().map(|r| r.seq).collect()
    }
}

fn event(i: usize) -> AuditEvent {
    AuditEvent::new(EventKind::ConfigReloaded {
        digest: format!("{i}"),
        changes: String::new(),
    })
}

fn fast() -> ForwardOptions {
    ForwardOptions {
        batch: 64,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        poll: Duration::from_millis(50),
        ..ForwardOptions::default()
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn every_durable_record_reaches_the_receiver_once_in_order_with_its_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(JsonLinesAuditSink::open(dir.path(), JsonLinesOptions::default()).unwrap());
    for i in 0..150 {
        if i % 3 == 0 {
            sink.record_deferred(&event(i)).await.unwrap();
        } else {
            sink.record(&event(i)).await.unwrap();
        }
    }
    sink.flush().await.unwrap();
    let rx = Memory::default();
    let h = Forwarder::new(
        "t",
        Box::new(rx.clone()),
        TrailSource::Jsonl(dir.path().to_owned()),
        sink.durable_head(),
    )
    .options(fast())
    .spawn();
    until("150 records", || rx.seqs().len() >= 150).await;
    // More while it runs, concurrently.
    let writes = (150..300).map(|i| {
        let s = sink.clone();
        async move { s.record(&event(i)).await.unwrap() }
    });
    futures::future::join_all(writes).await;
    until("300 records", || rx.seqs().len() >= 300).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.seqs(), (1..=300).collect::<Vec<u64>>());
    let file = std::fs::read_to_string(dir.path().join("audit-00000000000000000001.jsonl")).unwrap();
    let stored: Vec<&str> = file.lines().collect();
    let got = rx.got.lock().unwrap().clone();
    for (r, line) in got.iter().zip(&stored) {
        assert_eq!(r.line, *line, "a record travels exactly as stored");
        assert!(r.hash_ok);
    }
    let st = h.status();
    assert_eq!((st.delivered_seq, st.backlog, st.skipped), (300, 0, 0), "{st:?}");
    h.stop(Duration::from_secs(2)).await;
    assert_eq!(h.status().state, ForwardState::Stopped);
}

#[tokio::test]
async fn a_record_written_but_not_yet_synced_is_not_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let o = SqliteOptions {
        idle_sync: Duration::from_hours(1),
        ..SqliteOptions::default()
    };
    let sink = SqliteAuditSink::open(&db, o).unwrap();
    sink.record(&event(0)).await.unwrap();
    let rx = Memory::default();
    // Polling for other processes' records is slow here: it would sync the deferred
    // record (and then forward it, durable).
    let mut o = fast();
    o.poll = Duration::from_secs(30);
    let h = Forwarder::new(
        "t",
        Box::new(rx.clone()),
        TrailSource::Sqlite(db.clone()),
        sink.durable_head(),
    )
    .options(o)
    .spawn();
    until("the synced record", || rx.seqs() == [1]).await;
    // Written to the WAL without a sync: readable, not durable.
    sink.record_deferred(&event(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.seqs(), [1], "only durable records leave the gateway");
    sink.flush().await.unwrap();
    until("the record once synced", || rx.seqs() == [1, 2]).await;
    h.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_receiver_that_refuses_gets_everything_once_it_recovers_and_the_cursor_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let sink = SqliteAuditSink::open(&db, SqliteOptions::default()).unwrap();
    for i in 0..100 {
        sink.record(&event(i)).await.unwrap();
    }
    let rx = Memory::default();
    rx.fail.store(5, Ordering::SeqCst);
    let h = Forwarder::new(
        "siem",
        Box::new(rx.clone()),
        TrailSource::Sqlite(db.clone()),
        sink.durable_head(),
    )
    .options(fast())
    .spawn();
    until("every record after the failures", || rx.seqs().len() >= 100).await;
    let st = h.status();
    assert_eq!(st.failures, 5, "{st:?}");
    assert!(st.last_error.as_deref().unwrap().contains("503"), "{st:?}");
    h.stop(Duration::from_secs(2)).await;
    assert_eq!(rx.seqs(), (1..=100).collect::<Vec<u64>>());

    // A new forwarder of the same name continues after the cursor: nothing twice.
    for i in 100..120 {
        sink.record(&event(i)).await.unwrap();
    }
    let rx2 = Memory::default();
    let h = Forwarder::new(
        "siem",
        Box::new(rx2.clone()),
        TrailSource::Sqlite(db.clone()),
        sink.durable_head(),
    )
    .options(fast())
    .spawn();
    until("the 20 new records", || rx2.seqs().len() >= 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx2.seqs(), (101..=120).collect::<Vec<u64>>());
    h.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_second_forwarder_of_the_same_name_stands_by_and_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let sink = JsonLinesAuditSink::open(dir.path(), JsonLinesOptions::default()).unwrap();
    sink.record(&event(0)).await.unwrap();
    let trail = TrailSource::Jsonl(dir.path().to_owned());
    let (a, b) = (Memory::default(), Memory::default());
    let ha = Forwarder::new("x", Box::new(a.clone()), trail.clone(), sink.durable_head())
        .options(fast())
        .spawn();
    until("the first forwarder", || a.seqs() == [1]).await;
    let hb = Forwarder::new("x", Box::new(b.clone()), trail, sink.durable_head())
        .options(fast())
        .spawn();
    until("standby", || hb.status().state == ForwardState::Standby).await;
    sink.record(&event(1)).await.unwrap();
    until("the first forwarder's second record", || a.seqs() == [1, 2]).await;
    assert!(b.seqs().is_empty());
    ha.stop(Duration::from_secs(2)).await;
    sink.record(&event(2)).await.unwrap();
    until("the second takes over after the cursor", || b.seqs() == [3]).await;
    hb.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn retention_that_runs_ahead_of_a_down_receiver_is_counted_never_silent() {
    let dir = tempfile::tempdir().unwrap();
    let o = JsonLinesOptions {
        rotate_bytes: 4096,
        keep_files: 2,
        ..JsonLinesOptions::default()
    };
    let sink = JsonLinesAuditSink::open(dir.path(), o).unwrap();
    let rx = Memory::default();
    rx.fail.store(usize::MAX, Ordering::SeqCst);
    let h = Forwarder::new(
        "r",
        Box::new(rx.clone()),
        TrailSource::Jsonl(dir.path().to_owned()),
        sink.durable_head(),
    )
    .options(fast())
    .spawn();
    for i in 0..200 {
        sink.record(&event(i)).await.unwrap();
    }
    until("failures", || h.status().failures > 0).await;
    let durable = sink.durable_head().current();
    rx.fail.store(0, Ordering::SeqCst);
    until("caught up", || h.status().delivered_seq >= durable).await;
    let st = h.status();
    let got = rx.seqs();
    assert!(st.skipped > 0, "{st:?}");
    assert_eq!(
        got.len() as u64 + st.skipped,
        durable,
        "every record is delivered or counted as skipped"
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    h.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_replaced_trail_is_forwarded_from_its_beginning() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    {
        let sink = SqliteAuditSink::open(&db, SqliteOptions::default()).unwrap();
        for i in 0..10 {
            sink.record(&event(i)).await.unwrap();
        }
        let rx = Memory::default();
        let h = Forwarder::new(
            "f",
            Box::new(rx.clone()),
            TrailSource::Sqlite(db.clone()),
            sink.durable_head(),
        )
        .options(fast())
        .spawn();
        until("10", || rx.seqs().len() == 10).await;
        h.stop(Duration::from_secs(2)).await;
        sink.close();
    }
    // Moved aside: a new chain starts at seq 1 with other hashes.
    std::fs::rename(&db, dir.path().join("old.db")).unwrap();
    let _ = std::fs::remove_file(dir.path().join("a.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("a.db-shm"));
    let sink = SqliteAuditSink::open(&db, SqliteOptions::default()).unwrap();
    for i in 0..12 {
        sink.record(&event(i)).await.unwrap();
    }
    let rx = Memory::default();
    let h = Forwarder::new(
        "f",
        Box::new(rx.clone()),
        TrailSource::Sqlite(db.clone()),
        sink.durable_head(),
    )
    .options(fast())
    .spawn();
    until("the new chain", || rx.seqs().len() == 12).await;
    assert_eq!(rx.seqs(), (1..=12).collect::<Vec<u64>>());
    h.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn start_at_end_skips_history_on_first_start_only() {
    let dir = tempfile::tempdir().unwrap();
    let sink = JsonLinesAuditSink::open(dir.path(), JsonLinesOptions::default()).unwrap();
    for i in 0..5 {
        sink.record(&event(i)).await.unwrap();
    }
    let rx = Memory::default();
    let mut o = fast();
    o.start_at = crate::config::StartAt::End;
    let h = Forwarder::new(
        "e",
        Box::new(rx.clone()),
        TrailSource::Jsonl(dir.path().to_owned()),
        sink.durable_head(),
    )
    .options(o)
    .spawn();
    until("caught up", || h.status().state == ForwardState::CaughtUp).await;
    sink.record(&event(5)).await.unwrap();
    until("the new record", || rx.seqs() == [6]).await;
    h.stop(Duration::from_secs(2)).await;
}

#[test]
fn records_carry_their_severity_and_type() {
    let line = r#"{"seq":1,"prev":"00","event":{"type":"request","outcome":"denied","started_at":"2026-01-01T00:00:00.000000Z"}"#;
    let r = ForwardRecord {
        seq: 1,
        prev: String::new(),
        hash: String::new(),
        hash_ok: true,
        line: line.to_owned(),
        event: serde_json::json!({"type": "request", "outcome": "denied", "started_at": "2026-01-01T00:00:00.000000Z"}),
    };
    assert_eq!(r.event_type(), "request");
    assert_eq!(r.severity(), Severity::Notice);
    assert!(r.system_time().is_some());
}

#[test]
fn a_webhook_signature_is_hmac_sha256_of_the_body() {
    // RFC 4231 test case 2.
    let key = secrecy::SecretString::from("Jefe".to_owned());
    assert_eq!(
        WebhookTransport::sign(&key, b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}
