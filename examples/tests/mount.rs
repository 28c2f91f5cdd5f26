//! The library builder against the binary, and the gateway mounted in a host app.
//!
//! Both programs are started from the same configuration file (each in a directory of
//! its own): `mcp-guard serve`, and the `mount` example, which builds the gateway with
//! `ServerBuilder` inside an axum app that has its own routes, middleware and fallback.
//! One scenario runs against both with a real MCP client over HTTP; the lists, the
//! answers, the refusals and the audit records must be the same.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdef";
const CAROL: &str = "carol-token-0123456789abcdef";
/// A credential the gateway holds for the upstream: it must never come back.
const HELD: &str = "held-credential-5f0c1e9a7b3d";

/// `mcp-guard`, built next to this package's binaries by `cargo test --workspace`.
fn gateway_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_mount")).with_file_name("mcp-guard");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p mcp-guard-cli`; `cargo test --workspace` does)",
        bin.display()
    );
    bin
}

fn config() -> String {
    let bin = gateway_bin();
    format!(
        r#"
[[auth.tokens]]
principal = {{ id = "alice", roles = ["eng"] }}
token = "${{EQ_ALICE}}"

[[auth.tokens]]
principal = {{ id = "carol", roles = ["eng"] }}
token = "${{EQ_CAROL}}"

[[auth.tokens]]
principal = {{ id = "bob", roles = ["sales"] }}
token = "${{EQ_BOB}}"

[audit]
sinks = ["jsonl"]

[servers.fx]
transport = "stdio"
command = "{bin}"
args = ["fixture", "--name", "fx"]
env = {{ HELD_KEY = "${{EQ_HELD}}" }}

[endpoints.team]
redaction = {{ requests = false, responses = true, rules = {{ detect = ["email"] }} }}
[endpoints.team.servers.fx]
tools = ["echo", "getenv", "add"]

[[grants]]
name = "eng-echo"
roles = ["eng"]
names = ["echo", "getenv"]
"#,
        bin = bin.display()
    )
}

struct Running {
    child: tokio::process::Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Running {
    /// Starts `program args... --config DIR/gateway.toml --listen 127.0.0.1:0` and
    /// waits until it listens and its servers have started.
    async fn start(program: &Path, args: &[&str], banner: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config()).unwrap();
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .env("EQ_ALICE", ALICE)
            .env("EQ_BOB", BOB)
            .env("EQ_CAROL", CAROL)
            .env("EQ_HELD", HELD)
            .env("MCP_GUARD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let base = tokio::time::timeout(Duration::from_mins(1), async {
            let mut base = None;
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix(banner) {
                    base = Some(rest.trim().to_owned());
                }
                if line.starts_with("upstreams started") {
                    return base.expect("listening before started");
                }
            }
            panic!("{} exited before its servers started", program.display());
        })
        .await
        .expect("not started within a minute");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, base, dir }
    }

    /// Stops it with SIGTERM (drain, flush) and returns its audit records.
    async fn stop(mut self) -> Vec<Value> {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status}");
        let mut records = Vec::new();
        for entry in std::fs::read_dir(self.dir.path().join("audit")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            records.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
        }
        records
    }
}

type Client = RunningService<rmcp::RoleClient, ()>;

async fn client(url: &str, token: &str) -> Client {
    mcp_guard_core::upstream::ensure_crypto_provider();
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token.to_owned()),
    );
    ().serve(transport).await.unwrap()
}

fn call(name: &str, args: &Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_owned()).with_arguments(args.as_object().cloned().unwrap())
}

fn text(r: &rmcp::model::CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("|")
}

async fn pid(c: &Client) -> String {
    let r = c
        .call_tool(call("fx__getenv", &json!({"name": "@pid"})))
        .await
        .unwrap();
    text(&r)
}

/// What a client saw, in order, with nothing that differs between runs (process ids
/// are compared as "same" or "different").
async fn scenario(url: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let alice = client(url, ALICE).await;
    let mut names: Vec<String> = alice
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    seen.push(format!("alice lists {names:?}"));
    let echoed = alice
        .call_tool(call(
            "fx__echo",
            &json!({"text": "write to ann.lee@corp-mail.io"}),
        ))
        .await
        .unwrap();
    seen.push(format!("alice echo: {}", text(&echoed)));
    let held = alice
        .call_tool(call("fx__getenv", &json!({"name": "HELD_KEY"})))
        .await
        .unwrap();
    let held = text(&held);
    assert!(!held.contains(HELD), "a held credential came back: {held}");
    seen.push(format!("alice getenv HELD_KEY: {held}"));
    let refused = alice.call_tool(call("fx__add", &json!({"a": 1, "b": 2}))).await;
    seen.push(format!("alice add: {}", refused.map(|r| text(&r)).unwrap_err()));

    // Per-session isolation: another principal's session gets a process of its own;
    // a second MCP session with the same credential is the same gateway session.
    let again = client(url, ALICE).await;
    let carol = client(url, CAROL).await;
    let (p1, p2, p3) = (pid(&alice).await, pid(&again).await, pid(&carol).await);
    seen.push(format!("alice twice, one process: {}", p1 == p2));
    seen.push(format!("alice and carol, one process: {}", p1 == p3));

    let bob = client(url, BOB).await;
    let bob_names: Vec<String> = bob
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    seen.push(format!("bob lists {bob_names:?}"));
    let refused = bob.call_tool(call("fx__echo", &json!({"text": "hi"}))).await;
    seen.push(format!("bob echo: {}", refused.map(|r| text(&r)).unwrap_err()));
    for c in [alice, again, carol, bob] {
        let _ = c.cancel().await;
    }
    seen
}

/// An audit record without what differs between two runs (ids, times, sessions, the
/// chain's hashes), as a string to compare and sort.
fn stable(record: &Value) -> String {
    const VOLATILE: &[&str] = &[
        "id",
        "seq",
        "started_at",
        "ended_at",
        "at",
        "session",
        "request_id",
        "latency_us",
        "prev",
        "hash",
        "mac",
        "client",
        "call",
    ];
    // JSON Lines records carry the event beside the chain's fields.
    let mut r = record.get("event").unwrap_or(record).clone();
    let about_pid = record.to_string().contains("@pid");
    if let Some(o) = r.as_object_mut() {
        for k in VOLATILE {
            o.remove(*k);
        }
        // Process ids in the recorded result of `getenv @pid`.
        if o.get("requested_name").and_then(Value::as_str) == Some("fx__getenv") && about_pid {
            o.remove("result");
        }
    }
    r.to_string()
}

#[tokio::test]
async fn the_library_builder_and_the_binary_run_the_same_gateway() {
    let binary = Running::start(&gateway_bin(), &["serve"], "mcp-guard listening on ").await;
    let mounted = Running::start(Path::new(env!("CARGO_BIN_EXE_mount")), &[], "mount listening on ").await;

    let from_binary = scenario(&format!("{}/mcp/team", binary.base)).await;
    let from_library = scenario(&format!("{}/tools/mcp/team", mounted.base)).await;
    assert_eq!(from_binary, from_library);
    // The scenario itself says what the gateway does: only granted tools listed,
    // personal data and the held credential out of answers, the rest refused, one
    // process per session.
    let expected_list = "alice lists [\"fx__echo\", \"fx__getenv\"]";
    assert_eq!(from_binary[0], expected_list);
    assert!(!from_binary[1].contains("ann.lee@"), "{}", from_binary[1]);
    assert!(
        from_binary.contains(&"alice and carol, one process: false".to_owned()),
        "{from_binary:?}"
    );
    assert!(
        from_binary.contains(&"bob lists []".to_owned()),
        "{from_binary:?}"
    );

    let mut a: Vec<String> = binary.stop().await.iter().map(stable).collect();
    let mut b: Vec<String> = mounted.stop().await.iter().map(stable).collect();
    assert!(a.len() >= 6, "{a:#?}");
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(
        a.iter().all(|r| !r.contains(HELD) && !r.contains("ann.lee@")),
        "{a:#?}"
    );
}

#[tokio::test]
async fn the_gateway_mounts_in_a_host_app_with_its_own_routes_and_fallback() {
    let mounted = Running::start(Path::new(env!("CARGO_BIN_EXE_mount")), &[], "mount listening on ").await;
    mcp_guard_core::upstream::ensure_crypto_provider();
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", mounted.base)).send();

    // The host's routes, its fallback, its middleware on everything.
    let home = get("/").await.unwrap();
    assert_eq!(home.headers()["x-served-by"], "host-app");
    assert_eq!(home.text().await.unwrap(), "the host app\n");
    let missing = get("/no/such/page").await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.text().await.unwrap(), "the host app has no such page\n");
    // The gateway's own paths under the prefix; the root /mcp is the host's.
    let unauthenticated = get("/tools/mcp/team").await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(unauthenticated.headers()["x-served-by"], "host-app");
    let challenge = unauthenticated.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("/.well-known/oauth-protected-resource/tools/mcp/team"),
        "{challenge}"
    );
    let metadata = get("/.well-known/oauth-protected-resource/tools/mcp/team")
        .await
        .unwrap();
    assert_eq!(metadata.status(), 200);
    assert_eq!(get("/mcp/team").await.unwrap().status(), 404);
    assert_eq!(get("/healthz").await.unwrap().status(), 200);

    // A real MCP client through the mounted endpoint.
    let alice = client(&format!("{}/tools/mcp/team", mounted.base), ALICE).await;
    let r = alice
        .call_tool(call("fx__echo", &json!({"text": "hello"})))
        .await
        .unwrap();
    assert_eq!(r.content[0].as_text().unwrap().text, "hello");
    let _ = alice.cancel().await;
    mounted.stop().await;
}
