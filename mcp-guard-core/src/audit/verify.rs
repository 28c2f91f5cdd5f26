//! Checking a stored audit trail: [`verify_paths`] for JSON Lines files and
//! directories (and `verify_database` for the SQLite sink).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::AuditError;
use super::chain::{Checker, GENESIS, MacKey};

/// One thing wrong with a stored trail, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The file (or database) holding the record.
    pub file: PathBuf,
    /// 1-based line in a JSON Lines file; `None` for a database row.
    pub line: Option<usize>,
    /// The record's `seq`, when it could be read.
    pub seq: Option<u64>,
    /// What failed.
    pub what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        match self.seq {
            Some(s) => write!(f, ": seq {s}: {}", self.what),
            None => write!(f, ": {}", self.what),
        }
    }
}

/// What [`verify_paths`] found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Files (or databases) read.
    pub files: usize,
    /// Records read.
    pub records: u64,
    /// First and last `seq` seen.
    pub seq_range: Option<(u64, u64)>,
    /// The last record's hash (the head of the chain): note it somewhere else to
    /// detect later truncation of the tail.
    pub head: Option<String>,
    /// Modified, deleted, inserted or reordered records, and malformed lines.
    pub problems: Vec<Finding>,
    /// A last line cut short by a crash (not proof of tampering).
    pub torn_tail: Option<Finding>,
    /// Calls with a start record and no outcome record, in chain order: the gateway
    /// stopped during the call (crash, kill) or could not write its outcome (full
    /// disk), or the call is still running. Not a problem of the chain.
    pub incomplete: Vec<Finding>,
    /// Facts worth knowing that are not failures.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// No problems (a torn tail may still be present).
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    pub(crate) fn problem(&mut self, file: &Path, line: Option<usize>, seq: Option<u64>, what: String) {
        self.problems.push(Finding {
            file: file.to_owned(),
            line,
            seq,
            what,
        });
    }

    pub(crate) fn saw(&mut self, seq: u64, hash: &str) {
        self.records += 1;
        self.seq_range = Some(match self.seq_range {
            Some((first, _)) => (first, seq),
            None => (seq, seq),
        });
        self.head = Some(hash.to_owned());
    }
}

/// Pairs the start and outcome records of calls while a chain is read in order.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    started: HashMap<String, Finding>,
}

fn text_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

impl Calls {
    /// Notes one record's event.
    pub(crate) fn saw(&mut self, event: &serde_json::Value, file: &Path, line: Option<usize>, seq: u64) {
        let Some(id) = text_at(event, &["id"]) else {
            return;
        };
        match text_at(event, &["phase"]) {
            Some("started") => {
                let or_dash = |path: &[&str]| text_at(event, path).unwrap_or("-");
                let what = format!(
                    "call {id} ({} {}/{} by {} on endpoint {}, started {}) has no outcome record: \
                     the gateway stopped during the call or could not write its outcome, or the call is still running",
                    or_dash(&["method"]),
                    or_dash(&["target", "server"]),
                    or_dash(&["target", "name"]),
                    or_dash(&["principal", "id"]),
                    or_dash(&["endpoint"]),
                    or_dash(&["started_at"]),
                );
                self.started.insert(
                    id.to_owned(),
                    Finding {
                        file: file.to_owned(),
                        line,
                        seq: Some(seq),
                        what,
                    },
                );
            }
            Some("finished") => {
                self.started.remove(id);
            }
            _ => {}
        }
    }

    /// Moves the calls still without an outcome into `report`, in chain order.
    pub(crate) fn finish(self, report: &mut VerifyReport) {
        let mut open: Vec<Finding> = self.started.into_values().collect();
        open.sort_by_key(|f| f.seq);
        report.incomplete = open;
    }
}

/// The file name a rotated JSON Lines file gets: its first `seq`, zero-padded, so that
/// name order is chain order.
pub(crate) fn file_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

/// The first `seq` a file name announces.
pub(crate) fn seq_of_name(name: &str) -> Option<u64> {
    name.strip_prefix("audit-")?.strip_suffix(".jsonl")?.parse().ok()
}

/// The audit files of `dir`, in chain order.
pub(crate) fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let seq = seq_of_name(name.to_str()?)?;
            Some((seq, e.path()))
        })
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Verifies JSON Lines audit files as one chain, in the order given; a directory
/// stands for its `audit-*.jsonl` files in name order.
///
/// Detects a modified record (hash or MAC mismatch), a deleted, inserted or
/// reordered one (`seq` and `prev` out of step), malformed lines, a file that
/// does not start where its name says, and a torn last line (reported apart:
/// [`VerifyReport::torn_tail`]). With `key`, every record must carry a valid MAC.
/// Calls started without an outcome record are listed in
/// [`VerifyReport::incomplete`].
///
/// Removing records at the very end (or whole files at the start) leaves a valid
/// shorter chain: compare [`VerifyReport::head`] with a value kept elsewhere to
/// catch that.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use mcp_guard_core::audit::{verify_paths, JsonLinesAuditSink, JsonLinesOptions};
/// use mcp_guard_core::{AuditEvent, AuditSink};
/// let dir = tempfile::tempdir()?;
/// let sink = JsonLinesAuditSink::open(dir.path(), JsonLinesOptions::default())?;
/// sink.record(&AuditEvent::new(mcp_guard_core::audit::EventKind::ConfigReloaded { digest: String::new(), changes: String::new() })).await?;
/// let report = verify_paths(&[dir.path().to_owned()], None)?;
/// assert!(report.is_intact() && report.torn_tail.is_none());
/// assert_eq!(report.records, 1);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`AuditError::Open`] when a path cannot be read.
pub fn verify_paths(paths: &[PathBuf], key: Option<&MacKey>) -> Result<VerifyReport, AuditError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.extend(files_in(p).map_err(|e| AuditError::open(p, e))?);
        } else {
            files.push(p.clone());
        }
    }
    let mut report = VerifyReport::default();
    let mut checker = Checker::new(key);
    let mut calls = Calls::default();
    let count = files.len();
    for (i, file) in files.iter().enumerate() {
        let bytes = std::fs::read(file).map_err(|e| AuditError::open(file, e))?;
        report.files += 1;
        verify_file(
            file,
            &bytes,
            i + 1 == count,
            &mut checker,
            &mut calls,
            &mut report,
        );
    }
    calls.finish(&mut report);
    if report.records == 0 && report.torn_tail.is_none() && report.problems.is_empty() {
        report.notes.push("no records".to_owned());
    }
    Ok(report)
}

fn verify_file(
    file: &Path,
    bytes: &[u8],
    last_file: bool,
    checker: &mut Checker<'_>,
    calls: &mut Calls,
    report: &mut VerifyReport,
) {
    let named = file.file_name().and_then(|n| n.to_str()).and_then(seq_of_name);
    let mut first_in_file = true;
    let mut rest = bytes;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (line, complete) = if let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let l = &rest[..i];
            rest = &rest[i + 1..];
            (l, true)
        } else {
            (std::mem::take(&mut rest), false)
        };
        if !complete {
            let f = Finding {
                file: file.to_owned(),
                line: Some(line_no),
                seq: None,
                what: format!(
                    "torn last line ({} bytes without a newline): a write cut short",
                    line.len()
                ),
            };
            if last_file {
                report.torn_tail = Some(f);
            } else {
                report.problems.push(Finding {
                    what: format!("{}, but later files continue the chain", f.what),
                    ..f
                });
            }
            break;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            report.problem(file, Some(line_no), None, "not UTF-8".to_owned());
            continue;
        };
        if text.is_empty() {
            report.problem(file, Some(line_no), None, "empty line".to_owned());
            continue;
        }
        let starts_chain = checker.last().is_none();
        let (parsed, problems) = checker.check(text);
        let seq = parsed.as_ref().map(|p| p.seq);
        for what in problems {
            report.problem(file, Some(line_no), seq, what);
        }
        if let Some(p) = parsed {
            if first_in_file
                && let Some(n) = named
                && n != p.seq
            {
                report.problem(
                    file,
                    Some(line_no),
                    Some(p.seq),
                    format!("the file name says the file starts at seq {n}"),
                );
            }
            if starts_chain && p.prev != GENESIS {
                report.notes.push(format!(
                    "the chain starts at seq {} in {}: earlier records are not among these files (removed by retention, or missing)",
                    p.seq,
                    file.display()
                ));
            }
            calls.saw(&p.event, file, Some(line_no), p.seq);
            report.saw(p.seq, &p.hash);
        }
        first_in_file = false;
    }
}
