//! A small driver for profiling `PatternRedactor::redact_json` under `perf` or
//! `valgrind --tool=callgrind`, where criterion's adaptive loops get in the way.
//!
//! ```text
//! redact_profile <digits|prose|clean|latency> <bytes> <iterations> [dump-path]
//! REDACT_KNOWN=3 redact_profile …   # with three registered secrets, as in the gateway
//! REDACT_BARE=1 redact_profile …    # a walk that reads every key and string byte and
//!                                   # redacts nothing: the floor the memory layout sets
//! REDACT_BATCH=1 redact_profile …   # batches of clones (about 64 KiB of input), timed a
//!                                   # batch at a time, as the criterion bench does
//! REDACT_DECILES=1 redact_profile … # also print the deciles, p95 and p99 in ns
//! ```
//!
//! Prints the median (p50) and 99th-percentile time of one `redact_json` on a fresh
//! clone of the input (the clone is not timed), the throughput in serialised JSON
//! bytes per second at the median and at the best time, and the throughput from the
//! mean time, which is what criterion's estimate follows (a few slow batches, when the
//! machine is interrupted, pull it below the median).
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::time::Instant;

use mcp_guard_core::Redactor;
use mcp_guard_core::redact::{PatternRedactor, corpus};
use serde_json::Value;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).map_or("digits", String::as_str);
    let size: usize = args.get(2).map_or(Ok(1 << 20), |s| s.parse())?;
    let iters: usize = args.get(3).map_or(Ok(20), |s| s.parse())?;
    let text = match case {
        "digits" => corpus::digit_heavy_json(11, size, true),
        "prose" => corpus::prose_json(12, size, true),
        "latency" => corpus::digit_heavy_json(21, size, true),
        _ => corpus::prose_json(13, size, false),
    };
    if let Some(path) = args.get(4) {
        std::fs::write(path, &text)?;
    }
    let value: Value = serde_json::from_str(&text)?;
    let redactor = PatternRedactor::builder().build();
    // As in the gateway, which registers the credentials it holds: `REDACT_KNOWN=3`
    // registers three made-up 32-character secrets.
    let known: usize = std::env::var("REDACT_KNOWN").map_or(Ok(0), |s| s.parse())?;
    for i in 0..known {
        redactor.add_known_secret(&secrecy::SecretString::from(format!(
            "cred-{i:02}-q8Xv2LmN5tRz7WkPd4Hs9Yb"
        )));
    }
    let bare = std::env::var_os("REDACT_BARE").is_some();
    let mut times = Vec::with_capacity(iters);
    let batched = std::env::var_os("REDACT_BATCH").is_some();
    if batched {
        // As the criterion bench runs it: clones of about 64 KiB of input made in one
        // batch, then each moved through the redactor into an output vector, the batch
        // timed as a whole.
        let batch = ((64 << 10) / text.len()).max(1);
        for _ in 0..iters.div_ceil(batch) {
            let vs: Vec<Value> = (0..batch).map(|_| value.clone()).collect();
            let mut outs = Vec::with_capacity(batch);
            let t = Instant::now();
            outs.extend(vs.into_iter().map(|mut v| {
                redactor.redact_json(&mut v);
                v
            }));
            times.push(t.elapsed().as_secs_f64() / batch as f64);
            drop(std::hint::black_box(outs));
        }
    } else {
        for _ in 0..iters {
            // Cloned just before it is timed, so the value is in cache as it is in the
            // gateway, which redacts what it has just parsed.
            let mut v = value.clone();
            let t = Instant::now();
            if bare {
                std::hint::black_box(bare_walk(std::hint::black_box(&mut v)));
            } else {
                redactor.redact_json(std::hint::black_box(&mut v));
            }
            times.push(t.elapsed().as_secs_f64());
            drop(v);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    println!(
        "{case} {} bytes: median {:.2} µs, {:.0} MB/s (best {:.0} MB/s), p99 {:.2} µs, mean {:.0} MB/s",
        text.len(),
        median * 1e6,
        text.len() as f64 / median / 1e6,
        text.len() as f64 / times[0] / 1e6,
        p99 * 1e6,
        text.len() as f64 * times.len() as f64 / times.iter().sum::<f64>() / 1e6,
    );
    if std::env::var_os("REDACT_DECILES").is_some() {
        for q in [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99] {
            print!(
                "{q}:{:.0} ",
                times[(times.len() * q / 100).min(times.len() - 1)] * 1e9
            );
        }
        println!();
    }
    Ok(())
}

/// Reads every key and string byte of `v` (counting `@`s) and every number, and changes
/// nothing.
fn bare_walk(v: &mut Value) -> usize {
    let ats = |s: &str| s.bytes().filter(|&b| b == b'@').count();
    match v {
        Value::String(s) => ats(s),
        Value::Number(n) => usize::from(n.as_u64().is_some_and(|u| u > 1 << 60)),
        Value::Array(items) => items.iter_mut().map(bare_walk).sum(),
        Value::Object(map) => map.iter_mut().map(|(k, v)| ats(k) + bare_walk(v)).sum(),
        Value::Null | Value::Bool(_) => 0,
    }
}
