//! Writes the shared text corpus for the Presidio comparison, or times
//! `PatternRedactor::redact_str` over it.
//!
//! ```text
//! redact_corpus gen <path> <bytes>   # one JSON-encoded string per line
//! redact_corpus run <path>           # prints `rust_mb_per_s <n>` and findings
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::cast_precision_loss)]

use std::time::Instant;

use mcp_guard_core::Redactor;
use mcp_guard_core::redact::{PatternRedactor, corpus};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") => {
            let path = args.get(2).ok_or("path")?;
            let bytes: usize = args.get(3).ok_or("bytes")?.parse()?;
            let mut rng = corpus::Rng::new(42);
            let mut out = String::new();
            while out.len() < bytes {
                // Lines of prose, numbers and PII: the text content of tool results.
                let line = match rng.below(3) {
                    0 => corpus::prose_json(rng.next_u64(), 600, true),
                    1 => corpus::digit_heavy_json(rng.next_u64(), 600, true),
                    _ => corpus::prose_json(rng.next_u64(), 600, false),
                };
                let v: serde_json::Value = serde_json::from_str(&line)?;
                collect_strings(&v, &mut out);
            }
            std::fs::write(path, out)?;
        }
        Some("run") => {
            let path = args.get(2).ok_or("path")?;
            let text = std::fs::read_to_string(path)?;
            let lines: Vec<String> = text
                .lines()
                .map(serde_json::from_str::<String>)
                .collect::<Result<_, _>>()?;
            let total: usize = lines.iter().map(String::len).sum();
            let r = PatternRedactor::builder().build();
            let mut best = f64::MAX;
            let mut changed = 0;
            for _ in 0..5 {
                let t = Instant::now();
                changed = lines
                    .iter()
                    .filter(|l| matches!(r.redact_str(l), std::borrow::Cow::Owned(_)))
                    .count();
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!("rust_bytes {total}");
            println!("rust_lines_changed {changed}");
            println!("rust_mb_per_s {:.1}", total as f64 / best / 1e6);
        }
        _ => eprintln!("usage: redact_corpus gen <path> <bytes> | run <path>"),
    }
    Ok(())
}

fn collect_strings(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::String(s) if s.len() > 20 => {
            out.push_str(&serde_json::to_string(s).unwrap_or_default());
            out.push('\n');
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}
