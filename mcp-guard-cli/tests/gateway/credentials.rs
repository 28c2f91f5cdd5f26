//! Upstream credentials: the sealed store, shared and personal values reaching the
//! right process for the right principal, removal, the client's own token never
//! forwarded, and canaries that never leak.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

use crate::support::*;

const SHARED: &str = "shared-canary-7f3a9c21d4";
const ALICE: &str = "alice-canary-5b8e0d44e1";
const CAROL: &str = "carol-canary-91c2e6f7a8";
const CAROL2: &str = "carol-canary2-0d6b3e55c9";
const A_VALUE: &str = "a-upstream-secret-4411aa";
const B_VALUE: &str = "b-upstream-secret-9922bb";
const COOKIE: &str = "session=client-cookie-secret-7733";

/// Runs the CLI; `stdin` feeds the value of `credentials set`.
fn cli(
    config: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn set(config: &std::path::Path, server: &str, name: &str, principal: Option<&str>, value: &str) {
    let mut args = vec!["credentials", "set", "--server", server, "--name", name];
    if let Some(p) = principal {
        args.extend(["--principal", p]);
    }
    ok(&cli(config, &args, Some(&format!("{value}\n")), &[]));
}

/// `mcp-guard serve` with its stderr (trace-level logs) in a file of `dir`.
struct Logged {
    child: tokio::process::Child,
    base: String,
    log: std::path::PathBuf,
}

async fn serve_logged(dir: &std::path::Path, env: &[(&str, &str)]) -> Logged {
    let log = dir.join("gateway.log");
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(dir.join("gateway.toml"))
        .args(["--listen", "127.0.0.1:0"])
        .env("GW_TEST_TOKEN", TOKEN)
        .env("GW_TEST_OTHER_TOKEN", OTHER_TOKEN)
        .env("MCP_GUARD_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let mut base = None;
    // Listening, and (the servers start in the background) every server's first start done.
    for _ in 0..600 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text
            .lines()
            .find_map(|l| l.strip_prefix("mcp-guard listening on "))
            && text.lines().any(|l| l.starts_with("upstreams started"))
        {
            base = Some(l.trim().to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Logged {
        child,
        base: base.expect("gateway and its upstreams did not start in 60 s"),
        log,
    }
}

async fn call(client: &Client, tool: &str, name: &str) -> Result<String, rmcp::ServiceError> {
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args(&json!({"name": name}))))
        .await
        .map(|r| text_of(&r))
}

fn environ(pid: u32) -> HashMap<String, String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn error_data(e: &rmcp::ServiceError) -> serde_json::Value {
    match e {
        rmcp::ServiceError::McpError(d) => json!({"message": d.message, "data": d.data}),
        other => panic!("expected a JSON-RPC error, got {other}"),
    }
}

/// Every file under `dir` (audit database and journal, logs, store, key, config).
fn all_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn stdio_config() -> String {
    let mut c = String::from(AUTH);
    c.push_str(&fixture("alpha", &[]));
    c = c.replacen(
        "args = [\"fixture\", \"--name\", \"alpha\"]\n",
        "args = [\"fixture\", \"--name\", \"alpha\"]\nenv = { SHARED_T = \"${SHARED_T}\", PERSONAL_T = \"${PERSONAL_T}\" }\npersonal = [\"PERSONAL_T\"]\n",
        1,
    );
    c.push_str("[endpoints.main.servers.alpha]\ntools = [\"getenv\"]\n");
    c
}

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn shared_and_personal_credentials_reach_the_right_user_and_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, stdio_config()).unwrap();
    set(&path, "alpha", "SHARED_T", None, SHARED);
    set(&path, "alpha", "PERSONAL_T", Some("alice"), ALICE);
    // --value-env: the value never appears on a command line.
    ok(&cli(
        &path,
        &[
            "credentials",
            "set",
            "--server",
            "alpha",
            "--name",
            "PERSONAL_T",
            "--principal",
            "carol",
            "--value-env",
            "CAROL_VALUE",
        ],
        None,
        &[("CAROL_VALUE", CAROL)],
    ));
    let listed = ok(&cli(&path, &["credentials", "list"], None, &[]));
    assert!(
        listed.contains("PERSONAL_T") && listed.contains("carol") && listed.contains("SHARED_T"),
        "{listed}"
    );
    for c in [SHARED, ALICE, CAROL] {
        assert!(!listed.contains(c), "list never prints values");
    }
    let store = std::fs::read(dir.path().join("mcp-guard-credentials.json")).unwrap();
    for c in [SHARED, ALICE, CAROL, "canary"] {
        assert!(!contains(&store, c), "the store file holds {c} in the clear");
    }

    let carol_token = issue_token(&path, "carol", "1h");
    let dave_token = issue_token(&path, "dave", "1h");
    let gw = serve_logged(dir.path(), &[]).await;
    let url = format!("{}/mcp/main", gw.base);
    let alice = http_client(&url, TOKEN, Era::Modern).await;
    let carol = http_client(&url, &carol_token, Era::Legacy).await;
    let dave = http_client(&url, &dave_token, Era::Modern).await;

    // Each principal's own process has the shared value and their own personal one.
    let a_pid: u32 = call(&alice, "alpha__getenv", "@pid")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let c_pid: u32 = call(&carol, "alpha__getenv", "@pid")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(a_pid, c_pid);
    let (a_env, c_env) = (environ(a_pid), environ(c_pid));
    assert_eq!(a_env.get("PERSONAL_T").map(String::as_str), Some(ALICE));
    assert_eq!(c_env.get("PERSONAL_T").map(String::as_str), Some(CAROL));
    assert_eq!(a_env.get("SHARED_T").map(String::as_str), Some(SHARED));
    assert_eq!(c_env.get("SHARED_T").map(String::as_str), Some(SHARED));

    // The fixture echoes the values back: every handed-out value is scrubbed.
    for (client, value) in [(&alice, ALICE), (&carol, CAROL)] {
        let personal = call(client, "alpha__getenv", "PERSONAL_T").await.unwrap();
        let shared = call(client, "alpha__getenv", "SHARED_T").await.unwrap();
        assert!(!personal.is_empty() && !personal.contains(value), "{personal}");
        assert!(!shared.is_empty() && !shared.contains(SHARED), "{shared}");
        assert!(!personal.contains("canary") && !shared.contains("canary"));
    }

    // A principal without a personal credential gets the structured error and how to set it.
    let err = call(&dave, "alpha__getenv", "PERSONAL_T").await.unwrap_err();
    let d = error_data(&err);
    let entry = &d["data"]["missingCredentials"][0];
    assert_eq!(entry["server"], "alpha", "{d}");
    assert_eq!(entry["names"], json!(["PERSONAL_T"]), "{d}");
    assert_eq!(
        entry["set"][0], "mcp-guard credentials set --server alpha --name PERSONAL_T --principal dave",
        "{d}"
    );
    assert!(d["message"].as_str().unwrap().contains("--principal dave"), "{d}");
    assert!(!d.to_string().contains("canary"));

    // Removing carol's credential: her next call (same session) reports it missing and
    // her process, which still had it, is stopped. Alice is unaffected.
    ok(&cli(
        &path,
        &[
            "credentials",
            "remove",
            "--server",
            "alpha",
            "--name",
            "PERSONAL_T",
            "--principal",
            "carol",
        ],
        None,
        &[],
    ));
    let err = call(&carol, "alpha__getenv", "@pid").await.unwrap_err();
    let d = error_data(&err);
    assert_eq!(
        d["data"]["missingCredentials"][0]["names"],
        json!(["PERSONAL_T"]),
        "{d}"
    );
    assert_eq!(d["data"]["missingCredentials"][0]["principal"], "carol", "{d}");
    assert!(
        eventually(10, async || !std::path::Path::new(&format!("/proc/{c_pid}"))
            .exists())
        .await,
        "carol's process with the removed credential is stopped"
    );
    assert_eq!(
        call(&alice, "alpha__getenv", "@pid").await.unwrap(),
        a_pid.to_string()
    );

    // Setting a new value: the next call runs in a new process with it.
    set(&path, "alpha", "PERSONAL_T", Some("carol"), CAROL2);
    let c2: u32 = call(&carol, "alpha__getenv", "@pid")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(c2, c_pid);
    assert_eq!(environ(c2).get("PERSONAL_T").map(String::as_str), Some(CAROL2));
    let echoed = call(&carol, "alpha__getenv", "PERSONAL_T").await.unwrap();
    assert!(!echoed.contains(CAROL2), "{echoed}");

    let _ = alice.cancel().await;
    let _ = carol.cancel().await;
    let _ = dave.cancel().await;
    let mut child = gw.child;
    if let Some(pid) = child.id() {
        signal(pid, "TERM");
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;

    // Canary: no value in the trace-level log, the audit trail or any other file.
    let log = std::fs::read_to_string(&gw.log).unwrap();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log ran at trace level"
    );
    for c in [SHARED, ALICE, CAROL, CAROL2] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(c)).collect();
        assert!(lines.is_empty(), "{c} appears in the log:\n{}", lines.join("\n"));
    }
    for (file, bytes) in all_bytes(dir.path()) {
        for c in [SHARED, ALICE, CAROL, CAROL2] {
            assert!(!contains(&bytes, c), "{c} appears in {file}");
        }
    }
}

#[tokio::test]
async fn wrong_key_fails_clearly_and_changes_nothing_and_rotation_reseals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, stdio_config()).unwrap();
    set(&path, "alpha", "SHARED_T", None, SHARED);
    let store = dir.path().join("mcp-guard-credentials.json");
    let key = dir.path().join("mcp-guard-credentials.key");
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    let before = std::fs::read(&store).unwrap();
    let mtime = std::fs::metadata(&store).unwrap().modified().unwrap();

    let wrong = [(
        "MCP_GUARD_CREDENTIALS_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )];
    for args in [
        &["credentials", "set", "--server", "alpha", "--name", "SHARED_T"][..],
        &["credentials", "remove", "--server", "alpha", "--name", "SHARED_T"][..],
        &["credentials", "list"][..],
        &["serve", "--listen", "127.0.0.1:0"][..],
    ] {
        let env = [
            wrong[0],
            ("GW_TEST_TOKEN", TOKEN),
            ("GW_TEST_OTHER_TOKEN", OTHER_TOKEN),
        ];
        let out = cli(&path, args, Some("other-value-123456\n"), &env);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("does not open credential store"), "{args:?}: {err}");
        assert!(err.contains("mcp-guard-credentials.json"), "{err}");
    }
    assert_eq!(
        std::fs::read(&store).unwrap(),
        before,
        "a wrong key overwrites nothing"
    );
    assert_eq!(std::fs::metadata(&store).unwrap().modified().unwrap(), mtime);

    // A key file others can read is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = cli(&path, &["credentials", "list"], None, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Rotation: a new key, every record re-sealed; the old key no longer opens it.
    let old_key = std::fs::read_to_string(&key).unwrap();
    let out = ok(&cli(&path, &["credentials", "rotate-key"], None, &[]));
    assert!(out.contains("re-sealed 1"), "{out}");
    assert_ne!(std::fs::read_to_string(&key).unwrap(), old_key);
    assert_ne!(std::fs::read(&store).unwrap(), before);
    assert!(ok(&cli(&path, &["credentials", "list"], None, &[])).contains("SHARED_T"));
    let out = cli(
        &path,
        &["credentials", "list"],
        None,
        &[("MCP_GUARD_CREDENTIALS_KEY", old_key.trim())],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not open"));
    assert!(!contains(&std::fs::read(&store).unwrap(), SHARED));

    // The value comes from stdin or --value-env, never argv; names are checked.
    let out = cli(
        &path,
        &["credentials", "set", "--server", "nope", "--name", "X"],
        Some("v\n"),
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no server named"));
    let out = cli(
        &path,
        &["credentials", "set", "--server", "alpha", "--name", "PERSONAL_T"],
        Some("v\n"),
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--principal"));
}

/// A streamable HTTP MCP server on 127.0.0.1 that records every request's headers.
async fn capture_upstream() -> (String, Arc<Mutex<Vec<axum::http::HeaderMap>>>) {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let seen: Arc<Mutex<Vec<axum::http::HeaderMap>>> = Arc::default();
    let service = StreamableHttpService::new(
        || Ok(Pong),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let record = seen.clone();
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                record.lock().unwrap().push(req.headers().clone());
                next.run(req)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/mcp"), seen)
}

#[derive(Clone)]
struct Pong;

impl rmcp::ServerHandler for Pong {
    fn get_info(&self) -> rmcp::model::InitializeResult {
        rmcp::model::InitializeResult::new(rmcp::model::ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _: Option<rmcp::model::PaginatedRequestParams>,
        _: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, rmcp::ErrorData> {
        let schema = Arc::new(json!({"type": "object"}).as_object().unwrap().clone());
        Ok(rmcp::model::ListToolsResult::with_all_items(vec![
            rmcp::model::Tool::new("ping", "Answers pong.", schema),
        ]))
    }

    async fn call_tool(
        &self,
        _: CallToolRequestParams,
        _: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        Ok(rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text("pong")]).into())
    }
}

#[tokio::test]
async fn client_tokens_are_never_forwarded_and_credentials_stay_with_their_server() {
    let (a_url, a_seen) = capture_upstream().await;
    let (b_url, b_seen) = capture_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let config = format!(
        "{AUTH}[servers.a]\ntransport = \"http\"\nurl = \"{a_url}\"\nheaders = {{ Authorization = \"Bearer ${{API_T}}\" }}\n\n\
         [servers.b]\ntransport = \"http\"\nurl = \"{b_url}\"\nheaders = {{ X-Api-Key = \"${{API_T}}\" }}\n\n\
         [endpoints.main.servers.a]\ntools = [\"ping\"]\n[endpoints.main.servers.b]\ntools = [\"ping\"]\n"
    );
    std::fs::write(&path, config).unwrap();
    set(&path, "a", "API_T", None, A_VALUE);
    set(&path, "b", "API_T", None, B_VALUE);
    let gw = serve_logged(dir.path(), &[]).await;

    let mut cfg = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp/main", gw.base));
    cfg.auth_header = Some(TOKEN.to_owned());
    cfg.custom_headers.insert(
        reqwest::header::COOKIE,
        reqwest::header::HeaderValue::from_static(COOKIE),
    );
    mcp_guard_core::upstream::ensure_crypto_provider();
    let client: Client = rmcp::service::serve_client_with_lifecycle(
        Recorder::default(),
        StreamableHttpClientTransport::from_config(cfg),
        rmcp::service::ClientLifecycleMode::Initialize,
    )
    .await
    .unwrap();
    for tool in ["a__ping", "b__ping"] {
        let r = client
            .call_tool(CallToolRequestParams::new(tool).with_arguments(args(&json!({}))))
            .await
            .unwrap();
        assert_eq!(text_of(&r), "pong");
    }
    let _ = client.cancel().await;

    let a = a_seen.lock().unwrap().clone();
    let b = b_seen.lock().unwrap().clone();
    assert!(!a.is_empty() && !b.is_empty());
    for (server, seen) in [("a", &a), ("b", &b)] {
        for h in seen {
            let all = format!("{h:?}");
            assert!(!all.contains(TOKEN), "{server} saw the client's token: {all}");
            assert!(
                !all.contains("client-cookie-secret"),
                "{server} saw the client's cookie"
            );
            assert!(
                h.get(reqwest::header::COOKIE).is_none(),
                "{server} got a Cookie header"
            );
        }
    }
    assert!(a.iter().all(|h| {
        h.get("authorization")
            .is_some_and(|v| v == &format!("Bearer {A_VALUE}"))
    }));
    assert!(
        a.iter().all(|h| !format!("{h:?}").contains(B_VALUE)),
        "b's credential went to a"
    );
    assert!(b.iter().all(|h| h.get("x-api-key").is_some_and(|v| v == B_VALUE)));
    assert!(
        b.iter().all(|h| !format!("{h:?}").contains(A_VALUE)),
        "a's credential went to b"
    );
    assert!(
        b.iter().all(|h| h.get("authorization").is_none()),
        "b got an Authorization header"
    );
    drop(gw);
}

#[test]
fn personal_names_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let cases = [
        (
            stdio_config().replace("personal = [\"PERSONAL_T\"]", "personal = [\"NOT_USED\"]"),
            "servers.alpha.personal[0]",
            "is not a ${NAME} placeholder",
        ),
        (
            stdio_config().replace("personal = [", "isolation = \"shared\"\npersonal = ["),
            "servers.alpha.personal",
            "isolation = \"session\"",
        ),
        (
            "[servers.h]\ntransport = \"http\"\nurl = \"http://127.0.0.1:1/mcp\"\nheaders = { Authorization = \"Bearer ${T}\" }\npersonal = [\"U\"]\n"
                .to_owned(),
            "servers.h.personal[0]",
            "is not a ${NAME} placeholder",
        ),
        (
            "[credentials]\nstore = \"same\"\nkey_file = \"same\"\n".to_owned(),
            "credentials.key_file",
            "must differ",
        ),
    ];
    for (config, entry, message) in cases {
        std::fs::write(&path, &config).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{config}");
        assert!(err.contains(entry) && err.contains(message), "{entry}: {err}");
    }
}

#[tokio::test]
async fn stdio_front_door_gets_the_stdio_principals_personal_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let config = format!(
        "{}[auth]\nstdio_principal = {{ id = \"alice\", roles = [\"eng\"] }}\n",
        stdio_config()
    );
    std::fs::write(&path, config).unwrap();
    set(&path, "alpha", "SHARED_T", None, SHARED);
    set(&path, "alpha", "PERSONAL_T", Some("carol"), CAROL);
    // Alice has not set hers: the call says so (carol's value is never used).
    let client = stdio_client(&path, "main", Era::Legacy).await;
    let err = call(&client, "alpha__getenv", "@pid").await.unwrap_err();
    let d = error_data(&err);
    assert!(d.to_string().contains("PERSONAL_T"), "{d}");
    let _ = client.cancel().await;

    set(&path, "alpha", "PERSONAL_T", Some("alice"), ALICE);
    let client = stdio_client(&path, "main", Era::Modern).await;
    let pid: u32 = call(&client, "alpha__getenv", "@pid")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let env = environ(pid);
    assert_eq!(env.get("PERSONAL_T").map(String::as_str), Some(ALICE));
    assert_eq!(env.get("SHARED_T").map(String::as_str), Some(SHARED));
    let echoed = call(&client, "alpha__getenv", "PERSONAL_T").await.unwrap();
    assert!(!echoed.contains(ALICE), "{echoed}");
    let _ = client.cancel().await;
}

#[test]
fn a_key_in_the_environment_is_used_and_no_key_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, stdio_config()).unwrap();
    let key = [(
        "MCP_GUARD_CREDENTIALS_KEY",
        "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=",
    )];
    ok(&cli(
        &path,
        &["credentials", "set", "--server", "alpha", "--name", "SHARED_T"],
        Some(SHARED),
        &key,
    ));
    assert!(!dir.path().join("mcp-guard-credentials.key").exists());
    assert!(
        ok(&cli(
            &path,
            &["credentials", "list", "--server", "alpha"],
            None,
            &key
        ))
        .contains("SHARED_T")
    );
    // Without the variable there is no key at all: a clear error, not an empty store.
    let out = cli(&path, &["credentials", "list"], None, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("there is no key"), "{err}");
    // A malformed key names its variable and never echoes it.
    let out = cli(
        &path,
        &["credentials", "list"],
        None,
        &[("MCP_GUARD_CREDENTIALS_KEY", "c2hvcnQ=")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MCP_GUARD_CREDENTIALS_KEY") && err.contains("need 32") && !err.contains("c2hvcnQ="),
        "{err}"
    );
}

async fn ping(c: &Client) -> Result<rmcp::model::CallToolResult, rmcp::ServiceError> {
    c.call_tool(CallToolRequestParams::new("a__ping").with_arguments(args(&json!({}))))
        .await
}

#[tokio::test]
async fn personal_http_headers_carry_each_principals_own_value() {
    let (url, seen) = capture_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let config = format!(
        "{AUTH}[[grants]]\nroles = [\"other\"]\nnames = [\"*\"]\n\n\
         [servers.a]\ntransport = \"http\"\nurl = \"{url}\"\n\
         headers = {{ Authorization = \"Bearer ${{API_T}}\", X-Team = \"${{TEAM}}\" }}\npersonal = [\"API_T\"]\n\n\
         [endpoints.main.servers.a]\ntools = [\"ping\"]\n"
    );
    std::fs::write(&path, config).unwrap();
    set(&path, "a", "API_T", Some("alice"), ALICE);
    set(&path, "a", "TEAM", None, SHARED);
    let gw = serve_logged(dir.path(), &[]).await;
    let url = format!("{}/mcp/main", gw.base);
    let alice = http_client(&url, TOKEN, Era::Legacy).await;
    let bob = http_client(&url, OTHER_TOKEN, Era::Legacy).await;
    seen.lock().unwrap().clear();
    assert_eq!(text_of(&ping(&alice).await.unwrap()), "pong");
    let alice_saw = std::mem::take(&mut *seen.lock().unwrap());
    // Bob has no value of his own: refused with the command to set it, nothing sent.
    let e = ping(&bob).await.unwrap_err();
    let data = error_data(&e);
    assert_eq!(
        data["data"]["missingCredentials"][0]["principal"], "bob",
        "{data}"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|h| h.get("authorization").is_none()),
        "bob's call reached the upstream with a token"
    );
    // Alice's connection carries her value; the listing connection carries none (never
    // an empty or someone else's); the shared header goes on both.
    assert!(alice_saw.iter().any(|h| h.get("authorization").is_some()));
    for h in &alice_saw {
        if let Some(v) = h.get("authorization") {
            assert_eq!(v, &format!("Bearer {ALICE}"));
        }
        assert_eq!(h["x-team"], SHARED);
    }
    let _ = alice.cancel().await;
    let _ = bob.cancel().await;
    drop(gw);
}
