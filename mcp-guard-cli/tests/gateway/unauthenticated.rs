//! Traffic that never authenticates: a flood of bad requests against the real binary
//! must cost little durable work and bounded memory, and authenticated clients must
//! be served throughout; pending authorization requests and dynamic registrations are
//! capped with a clear error.
#![allow(
    clippy::too_many_lines,
    reason = "each test is one scenario against one gateway, step by step"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::StatusCode;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn config(port: u16, data: &Path) -> String {
    let mut c = format!(
        "[gateway]\npublic_url = \"http://127.0.0.1:{port}\"\n\n[auth.server]\n\n\
[[auth.server.users]]\nid = \"carol\"\nroles = [\"eng\"]\n\n"
    );
    c.push_str(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"echo\"]\n\n");
    let _ = write!(
        c,
        "[audit]\nsinks = [\"sqlite\", \"jsonl\"]\nsqlite_path = \"{}\"\njsonl_dir = \"{}\"\n",
        data.join("audit.db").display(),
        data.join("jsonl").display()
    );
    c
}

/// The resident set of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Every JSON Lines audit record under `dir`.
fn records(dir: &Path) -> Vec<(usize, Value)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                out.push((line.len() + 1, v));
            }
        }
    }
    out
}

async fn register(http: &reqwest::Client, base: &str) -> reqwest::Response {
    http.post(format!("{base}/oauth/register"))
        .json(&json!({"redirect_uris": [REDIRECT], "client_name": "flood"}))
        .send()
        .await
        .unwrap()
}

fn authorize_url(base: &str, client: &str, state: &str) -> String {
    let mut u = url::Url::parse(&format!("{base}/oauth/authorize")).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", state)
        .append_pair(
            "code_challenge",
            &crate::authorize::challenge("dBjftJeZ4CVP-mJ92bIOpxTd5P8YE2xGk0Gd6rrHxsNw1"),
        )
        .append_pair("code_challenge_method", "S256")
        .append_pair("resource", &format!("{base}/mcp/main"));
    u.to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list"
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// How much the gateway's resident memory may grow while it refuses the flood. On the
/// code before this bound, 2,000 of the flood's authorization requests with 30 KB of
/// `state` alone held about 60 MiB.
const RSS_GROWTH_BOUND_MIB: u64 = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_unauthenticated_requests_costs_little_and_authenticated_clients_are_served() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayProc::start_listening(&config(port, data.path()), &format!("127.0.0.1:{port}")).await;
    let pid = gw.pid().unwrap();
    let base = gw.base.clone();
    mcp_guard_core::upstream::ensure_crypto_provider();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    // An authenticated client, warmed up, and its latency before the flood.
    let alice = Arc::new(http_client(&gw.url("main"), TOKEN, Era::Modern).await);
    let echo = async |c: &Client, i: usize| -> Result<Duration, String> {
        let started = Instant::now();
        let r = c
            .call_tool(
                CallToolRequestParams::new("alpha__echo")
                    .with_arguments(args(&json!({"text": format!("ping-{i}")}))),
            )
            .await
            .map_err(|e| e.to_string())?;
        if text_of(&r) == format!("ping-{i}") {
            Ok(started.elapsed())
        } else {
            Err(format!("unexpected answer {r:?}"))
        }
    };
    let mut before = Vec::new();
    for i in 0..30 {
        before.push(echo(&alice, i).await.unwrap());
    }
    let client = register(&http, &base).await.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(pid);
    let audit_before = records(&data.path().join("jsonl")).len();

    // Alice keeps calling while the flood runs.
    let flooding = Arc::new(AtomicBool::new(true));
    let served = tokio::spawn({
        let (alice, flooding) = (alice.clone(), flooding.clone());
        async move {
            let mut lat = Vec::new();
            let mut errors = Vec::new();
            let mut i = 1_000;
            while flooding.load(Ordering::Relaxed) {
                match echo(&alice, i).await {
                    Ok(d) => lat.push(d),
                    Err(e) => errors.push(e),
                }
                i += 1;
            }
            (lat, errors)
        }
    });

    // 10,000 bad requests, 64 at a time: wrong and missing tokens at the MCP endpoint,
    // authorization requests with 30 KB of state, registrations, garbage token requests.
    let big_state = "s".repeat(30 * 1024);
    let authorize = authorize_url(&base, &client, &big_state);
    let started = Instant::now();
    let answers: Vec<(usize, StatusCode)> = futures::stream::iter(0..10_000usize)
        .map(|i| {
            let (http, base, authorize) = (http.clone(), base.clone(), authorize.clone());
            async move {
                let kind = i % 5;
                let r = match kind {
                    0 => {
                        http.post(format!("{base}/mcp/main"))
                            .bearer_auth(format!("forged-token-{i:08}"))
                            .header("content-type", "application/json")
                            .header("accept", "application/json, text/event-stream")
                            .body("{}")
                            .send()
                            .await
                    }
                    1 => {
                        http.post(format!("{base}/mcp/main"))
                            .header("content-type", "application/json")
                            .body("{}")
                            .send()
                            .await
                    }
                    2 => http.get(&authorize).send().await,
                    3 => {
                        http.post(format!("{base}/oauth/register"))
                            .json(&json!({"redirect_uris": [REDIRECT], "client_name": format!("flood {i}")}))
                            .send()
                            .await
                    }
                    _ => {
                        http.post(format!("{base}/oauth/token"))
                            .form(&[
                                ("grant_type", "refresh_token"),
                                ("refresh_token", "mcpr_garbage"),
                                ("client_id", "x"),
                            ])
                            .send()
                            .await
                    }
                };
                (kind, r.map_or(StatusCode::IM_A_TEAPOT, |r| r.status()))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let flood_time = started.elapsed();
    let rss_after = rss_kib(pid);
    flooding.store(false, Ordering::Relaxed);
    let (mut during, errors) = served.await.unwrap();

    let mut by_kind: BTreeMap<(usize, u16), usize> = BTreeMap::new();
    for (kind, status) in &answers {
        *by_kind.entry((*kind, status.as_u16())).or_default() += 1;
    }
    let refused_at_mcp: usize = answers
        .iter()
        .filter(|(k, s)| *k <= 1 && matches!(s.as_u16(), 401 | 429))
        .count();
    before.sort();
    during.sort();
    eprintln!(
        "flood: 10000 requests in {flood_time:?}; answers (kind, status) -> count: {by_kind:?}\n\
         RSS before {rss_before} KiB, after {rss_after} KiB (growth {} KiB, bound {RSS_GROWTH_BOUND_MIB} MiB)\n\
         alice before: {} calls, p50 {:?}, p99 {:?}, max {:?}\n\
         alice during: {} calls, p50 {:?}, p99 {:?}, max {:?}; {} errors",
        rss_after.saturating_sub(rss_before),
        before.len(),
        percentile(&before, 0.5),
        percentile(&before, 0.99),
        before.last().copied().unwrap_or_default(),
        during.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.last().copied().unwrap_or_default(),
        errors.len(),
    );
    assert!(
        errors.is_empty(),
        "alice was refused during the flood: {errors:?}"
    );
    assert!(!during.is_empty(), "alice made no call during the flood");
    assert!(
        during.last().copied().unwrap_or_default() < Duration::from_secs(10),
        "an authenticated call waited more than 10 s"
    );
    assert_eq!(
        refused_at_mcp, 4_000,
        "every bad MCP request is refused: {by_kind:?}"
    );
    assert!(
        rss_after.saturating_sub(rss_before) <= RSS_GROWTH_BOUND_MIB * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Alice is still served after the flood.
    echo(&alice, 99_999).await.unwrap();
    let alice = Arc::try_unwrap(alice).ok().unwrap();
    let _ = alice.cancel().await;

    // The refused authentications are in the audit trail as a few aggregated records
    // (one per source and interval) whose counts add up to every refusal: nothing lost.
    gw.stop().await;
    let all = records(&data.path().join("jsonl"));
    let refusals: Vec<&(usize, Value)> = all[audit_before..]
        .iter()
        .filter(|(_, v)| v.pointer("/event/type").and_then(Value::as_str) == Some("authentication_failed"))
        .collect();
    let bytes: usize = refusals.iter().map(|(n, _)| n).sum();
    let counted: u64 = refusals
        .iter()
        .map(|(_, v)| v.pointer("/event/count").and_then(Value::as_u64).unwrap_or(1))
        .sum();
    eprintln!(
        "audit: {} refused-authentication record(s), {bytes} bytes, counting {counted} refusals; first: {}",
        refusals.len(),
        refusals
            .first()
            .map_or(String::new(), |(_, v)| v["event"].to_string())
    );
    assert_eq!(counted, 4_000, "the aggregated counts add up to every refusal");
    assert!(
        bytes <= 8 * 1024,
        "the flood's refusals took {bytes} bytes of audit in {} records",
        refusals.len()
    );
    let first = &refusals[0].1["event"];
    assert_eq!(first["source"], "127.0.0.1", "{first}");
    assert_eq!(first["outcome"], "unauthenticated", "{first}");
    assert!(
        first["ended_at"].as_str() >= first["started_at"].as_str(),
        "{first}"
    );
    // `audit query` finds them by outcome, with their source and count.
    let out = std::process::Command::new(BIN)
        .args(["audit", "query", "--db"])
        .arg(data.path().join("audit.db"))
        .args(["--outcome", "unauthenticated", "--format", "jsonl"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"source\":\"127.0.0.1\"") && text.contains("\"count\":"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_authorization_requests_and_registrations_are_capped_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayProc::start_listening(&config(port, data.path()), &format!("127.0.0.1:{port}")).await;
    let base = gw.base.clone();
    mcp_guard_core::upstream::ensure_crypto_provider();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = register(&http, &base).await.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // An oversized state is refused on the gateway's own page, never stored.
    let r = http
        .get(authorize_url(&base, &client, &"s".repeat(1025)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none());
    let page = r.text().await.unwrap();
    assert!(page.contains("state is longer than 1024 bytes"), "{page}");

    // One address may hold 50 authorization requests in progress; the next is refused.
    let mut statuses = Vec::new();
    for i in 0..60 {
        let r = http
            .get(authorize_url(&base, &client, &format!("st-{i}")))
            .send()
            .await
            .unwrap();
        let status = r.status();
        statuses.push(status);
        if status != StatusCode::SEE_OTHER {
            let retry = r.headers().get("retry-after").cloned();
            let page = r.text().await.unwrap();
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{page}");
            assert!(retry.is_some(), "a Retry-After header");
            assert!(page.contains("Too many authorization requests"), "{page}");
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::SEE_OTHER).count(),
        50,
        "{statuses:?}"
    );

    // Dynamic registration: 20 at once from one address, then a precise refusal.
    let mut created = 1; // the client above
    let mut refused = None;
    for _ in 0..30 {
        let r = register(&http, &base).await;
        if r.status() == StatusCode::CREATED {
            created += 1;
        } else {
            let status = r.status();
            let retry = r.headers().get("retry-after").cloned();
            refused = Some((status, retry, r.json::<Value>().await.unwrap()));
            break;
        }
    }
    assert_eq!(created, 20);
    let (status, retry, body) = refused.expect("a registration was refused");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(retry.is_some());
    assert_eq!(body["error"], "too_many_requests", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("registrations"),
        "{body}"
    );

    // None of it costs the authenticated: a client with a token is served.
    let c = http_client(&gw.url("main"), TOKEN, Era::Modern).await;
    assert!(names(&c).await.contains(&"alpha__echo".to_owned()));
    c.cancel().await.unwrap();

    // The caps in all, set low: 3 clients, 5 requests in progress.
    let port = free_port();
    let small = config(port, data.path()).replace(
        "[auth.server]\n",
        "[auth.server]\nmax_clients = 3\nmax_pending_authorizations = 5\n",
    );
    let gw = GatewayProc::start_listening(&small, &format!("127.0.0.1:{port}")).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let r = register(&http, &gw.base).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        clients.push(
            r.json::<Value>().await.unwrap()["client_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let r = register(&http, &gw.base).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("limit of 3 registered clients"),
        "{body}"
    );
    for i in 0..5 {
        let r = http
            .get(authorize_url(&gw.base, &clients[0], &format!("s{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
    }
    let r = http
        .get(authorize_url(&gw.base, &clients[1], "s6"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap().contains("in progress on this gateway"));
}
