//! Throughput of `PatternRedactor` over tool-call JSON, and latency on a 10 KB response.
//!
//! Cases, each at 1 KiB, 64 KiB and 1 MiB (bytes = serialised JSON size):
//! - `digits`: a `tools/call` result that is a table of numbers, ids, timestamps, with
//!   some PII;
//! - `prose`: text content with occasional emails and phone numbers;
//! - `clean`: the same prose without any PII.
//!
//! `walk` times `redact_json` on an already parsed value (the gateway holds one);
//! `parse+walk+write` adds `serde_json` parsing and serialising around it.
//!
//! The values are cloned in batches small enough to stay in the core's cache (about
//! 64 KiB of input per batch), as a message the gateway has just parsed is. With
//! criterion's `SmallInput`/`LargeInput` batches, a batch of 1 KiB values could hold
//! thousands of clones (megabytes), so each walk started on a value evicted to L3 and
//! the small cases measured the cache, not the redactor.
//! `redact_profile latency 10000` prints the median and 99th percentile of single calls.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mcp_guard_core::Redactor;
use mcp_guard_core::redact::{PatternRedactor, corpus};
use serde_json::Value;

const SIZES: [(usize, &str); 3] = [(1 << 10, "1KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB")];

/// Clones per batch for inputs of `bytes`: about 64 KiB of input, at least one.
fn hot_batch(bytes: usize) -> BatchSize {
    BatchSize::NumIterations(((64 << 10) / bytes).max(1) as u64)
}

fn input(case: &str, size: usize) -> String {
    match case {
        "digits" => corpus::digit_heavy_json(11, size, true),
        "prose" => corpus::prose_json(12, size, true),
        _ => corpus::prose_json(13, size, false),
    }
}

fn throughput(c: &mut Criterion) {
    let redactor = PatternRedactor::builder().build();
    let mut g = c.benchmark_group("redact_json");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for case in ["digits", "prose", "clean"] {
        for (size, name) in SIZES {
            let text = input(case, size);
            let value: Value = serde_json::from_str(&text).expect("corpus is JSON");
            g.throughput(Throughput::Bytes(text.len() as u64));
            g.bench_with_input(BenchmarkId::new(format!("walk/{case}"), name), &value, |b, v| {
                b.iter_batched(
                    || v.clone(),
                    |mut v| {
                        redactor.redact_json(&mut v);
                        v
                    },
                    hot_batch(text.len()),
                );
            });
            if size == 64 << 10 {
                g.bench_with_input(
                    BenchmarkId::new(format!("parse+walk+write/{case}"), name),
                    &text,
                    |b, t| {
                        b.iter(|| {
                            let mut v: Value = serde_json::from_str(t).expect("json");
                            redactor.redact_json(&mut v);
                            serde_json::to_vec(&v).expect("write")
                        });
                    },
                );
            }
        }
    }
    g.finish();

    // Plain text (no JSON), for comparison with the per-string cost.
    let mut g = c.benchmark_group("redact_str");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for case in ["digits", "prose", "clean"] {
        let text = input(case, 1 << 20);
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::new(case, "1MiB"), &text, |b, t| {
            b.iter(|| redactor.redact_str(black_box(t)).len());
        });
    }
    g.finish();
}

fn latency(c: &mut Criterion) {
    let redactor = PatternRedactor::builder().build();
    let text = corpus::digit_heavy_json(21, 10_000, true);
    let value: Value = serde_json::from_str(&text).expect("json");
    let mut g = c.benchmark_group("latency_10KB_tools_call");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("walk", |b| {
        b.iter_batched(
            || value.clone(),
            |mut v| {
                redactor.redact_json(&mut v);
                v
            },
            hot_batch(text.len()),
        );
    });
    g.finish();
}

criterion_group!(benches, throughput, latency);
criterion_main!(benches);
