//! The audit trail: sinks from `[audit]`, and `mcp-guard audit verify|query`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use clap::{Subcommand, ValueEnum};
use mcp_guard_core::audit::{AuditQuery, VerifyReport, query_database, verify_database, verify_paths};

/// Exit code of `audit verify` when the only finding is a torn last line.
pub(crate) const EXIT_TORN_TAIL: u8 = 3;
/// Exit code of `audit` commands that cannot read their input.
pub(crate) const EXIT_UNREADABLE: u8 = 2;
/// Exit code of `audit verify` when a record was tampered with (or is malformed).
pub(crate) const EXIT_TAMPERED: u8 = 1;

/// `mcp-guard audit ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Checks hash chains: JSON Lines files or directories (one chain, in order) and
    /// SQLite databases. Exit 0: intact; 3: intact except a torn last line (a crash
    /// cut a write short); 1: tampered or malformed; 2: cannot be read. Calls started
    /// without an outcome record are listed (INCOMPLETE) without changing the exit code.
    Verify {
        /// Files, directories (their audit-*.jsonl files) or SQLite databases.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also check each record's MAC with the key in this file.
        #[arg(long, conflicts_with = "mac_key_env")]
        mac_key_file: Option<PathBuf>,
        /// Also check each record's MAC with the key in this environment variable.
        #[arg(long)]
        mac_key_env: Option<String>,
    },
    /// Finds records in the SQLite audit database.
    Query {
        /// The database.
        #[arg(long)]
        db: PathBuf,
        /// Principal id.
        #[arg(long)]
        principal: Option<String>,
        /// Endpoint name.
        #[arg(long)]
        endpoint: Option<String>,
        /// Configured server id.
        #[arg(long)]
        server: Option<String>,
        /// The upstream's tool name.
        #[arg(long)]
        tool: Option<String>,
        /// Outcome as recorded, e.g. ok, denied, timeout (the records' outcome field).
        #[arg(long)]
        outcome: Option<String>,
        /// Gateway session.
        #[arg(long)]
        session: Option<String>,
        /// Started at or after: RFC 3339 UTC (2026-11-21T09:30:00Z), a date, or an age (15m, 2h, 7d).
        #[arg(long, value_parser = parse_when)]
        since: Option<SystemTime>,
        /// Started before (same forms as --since).
        #[arg(long, value_parser = parse_when)]
        until: Option<SystemTime>,
        /// Only calls started without an outcome record (the gateway stopped during
        /// the call, could not write its outcome, or the call is still running).
        #[arg(long, conflicts_with = "outcome")]
        incomplete: bool,
        /// Every record: also the start records of calls whose outcome record exists
        /// (by default each call is one row, its outcome record).
        #[arg(long)]
        all_records: bool,
        /// The newest N records (printed oldest first).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Output format of `audit query`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
    Jsonl,
}

pub(crate) fn parse_when(s: &str) -> Result<SystemTime, String> {
    if let Some(t) = mcp_guard_core::time::parse_rfc3339(s) {
        return Ok(t);
    }
    let bad = || format!("{s:?} is not RFC 3339 UTC, a date, or an age like 15m, 2h, 7d");
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let secs = match unit {
        's' => n,
        'm' => n * 60,
        'h' => n * 3600,
        'd' => n * 86_400,
        _ => return Err(bad()),
    };
    SystemTime::now()
        .checked_sub(Duration::from_secs(secs))
        .ok_or_else(bad)
}

pub(crate) fn is_sqlite(path: &Path) -> bool {
    let mut magic = [0u8; 16];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && &magic == b"SQLite format 3\0"
}

fn print_report(what: &str, r: &VerifyReport) {
    for p in &r.problems {
        outln!("TAMPERED {p}");
    }
    if let Some(t) = &r.torn_tail {
        outln!("TORN     {t}");
    }
    for c in &r.incomplete {
        println!("INCOMPLETE {c}");
    }
    for n in &r.notes {
        outln!("note     {n}");
    }
    let range = r
        .seq_range
        .map_or_else(String::new, |(a, b)| format!(", seq {a}..={b}"));
    let verdict = if !r.problems.is_empty() {
        format!("{} problem(s)", r.problems.len())
    } else if r.torn_tail.is_some() {
        "intact except a torn last line".to_owned()
    } else {
        "intact".to_owned()
    };
    let incomplete = match r.incomplete.len() {
        0 => String::new(),
        n => format!("; {n} call(s) started without an outcome record"),
    };
    outln!(
        "{what}: {} record(s) in {} file(s){range}; head {}: {verdict}{incomplete}",
        r.records,
        r.files,
        r.head.as_deref().unwrap_or("-")
    );
}

pub(crate) fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify {
            paths,
            mac_key_file,
            mac_key_env,
        } => {
            let key = mcp_guard_tower::server::mac_key(mac_key_file.as_deref(), mac_key_env.as_deref())?;
            let (dbs, files): (Vec<PathBuf>, Vec<PathBuf>) = paths.into_iter().partition(|p| is_sqlite(p));
            let mut reports = Vec::new();
            for db in &dbs {
                let r = verify_database(db, key.as_ref())?;
                print_report(&db.display().to_string(), &r);
                reports.push(r);
            }
            if !files.is_empty() {
                for f in &files {
                    if !f.exists() {
                        bail!("{}: no such file or directory", f.display());
                    }
                }
                let r = verify_paths(&files, key.as_ref())?;
                print_report("JSON Lines", &r);
                reports.push(r);
            }
            Ok(if reports.iter().any(|r| !r.problems.is_empty()) {
                ExitCode::from(EXIT_TAMPERED)
            } else if reports.iter().any(|r| r.torn_tail.is_some()) {
                ExitCode::from(EXIT_TORN_TAIL)
            } else {
                ExitCode::SUCCESS
            })
        }
        AuditCommand::Query {
            db,
            principal,
            endpoint,
            server,
            tool,
            outcome,
            session,
            since,
            until,
            incomplete,
            all_records,
            limit,
            format,
        } => {
            let mut q = AuditQuery::default();
            q.principal = principal;
            q.endpoint = endpoint;
            q.server = server;
            q.tool = tool;
            q.outcome = outcome;
            q.session = session;
            q.since = since;
            q.until = until;
            q.incomplete = incomplete;
            q.all_records = all_records;
            q.limit = Some(limit);
            let rows = query_database(&db, &q)?;
            let with_seq = |r: &mcp_guard_core::audit::QueryRow| {
                let mut v = r.event.clone();
                if let Some(m) = v.as_object_mut() {
                    m.insert("seq".to_owned(), r.seq.into());
                    if r.incomplete {
                        m.insert("incomplete".to_owned(), true.into());
                    }
                }
                v
            };
            match format {
                Format::Json => {
                    let all: Vec<_> = rows.iter().map(with_seq).collect();
                    outln!("{}", serde_json::to_string_pretty(&all)?);
                }
                Format::Jsonl => {
                    for r in &rows {
                        outln!("{}", serde_json::to_string(&with_seq(r))?);
                    }
                }
                Format::Table => print_table(&rows),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_table(rows: &[mcp_guard_core::audit::QueryRow]) {
    let s = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let mut table = vec![[
        "SEQ".to_owned(),
        "STARTED".to_owned(),
        "PRINCIPAL".to_owned(),
        "ENDPOINT".to_owned(),
        "METHOD".to_owned(),
        "TARGET".to_owned(),
        "OUTCOME".to_owned(),
        "RULE".to_owned(),
        "LATENCY_US".to_owned(),
    ]];
    for r in rows {
        let e = &r.event;
        let get = |k: &str| e.get(k).and_then(serde_json::Value::as_str);
        let method = get("method").or_else(|| get("type"));
        let target = match (&r.server, &r.tool) {
            (Some(sv), Some(t)) => format!("{sv}/{t}"),
            _ => "-".to_owned(),
        };
        table.push([
            r.seq.to_string(),
            s(get("started_at")),
            s(r.principal.as_deref()),
            s(r.endpoint.as_deref()),
            s(method),
            target,
            if r.incomplete {
                "INCOMPLETE".to_owned()
            } else {
                s(r.outcome.as_deref().or_else(|| get("phase")))
            },
            s(get("rule")),
            e.get("latency_us")
                .map_or_else(|| "-".to_owned(), ToString::to_string),
        ]);
    }
    let mut widths = [0usize; 9];
    for row in &table {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    for row in &table {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        outln!("{}", line.join("  ").trim_end());
    }
}
