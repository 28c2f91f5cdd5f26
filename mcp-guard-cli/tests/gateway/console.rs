//! The operator console over real HTTP, attacked the ways a careless or hostile
//! browser would: forged form posts (no CSRF token, a wrong one, another origin), two
//! operators changing the same setting at once, a change that would leave the file
//! invalid, markup in descriptions, an auditor trying every change, a user without a
//! console role. And the change itself: a tool switched off is gone from the next
//! `tools/list` of a connected client, which is told `list_changed`.
#![allow(
    clippy::too_many_lines,
    reason = "each test is one scenario against one gateway, step by step"
)]

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;

use crate::authorize::{Browser, hidden, login_link};
use crate::support::{AUTH, BIN, Era, GatewayProc, TOKEN, eventually, free_port, http_client, names};

fn config(port: u16, variant_file: &Path, extra: &str) -> String {
    format!(
        "[gateway]\npublic_url = \"http://127.0.0.1:{port}\"\n\n\
[auth.server]\ndurations = [\"1d\"]\n\n\
[[auth.server.users]]\nid = \"root\"\nroles = [\"admin\"]\n\n\
[[auth.server.users]]\nid = \"rita\"\nroles = [\"admin\"]\n\n\
[[auth.server.users]]\nid = \"ann\"\nroles = [\"auditor\"]\n\n\
[[auth.server.users]]\nid = \"eve\"\nroles = [\"eng\"]\n\n\
[console]\nenabled = true\n\n{AUTH}{extra}\
# the servers\n\
[servers.alpha]\ntransport = \"stdio\"\ndescription = \"<script>alert('server')</script> Alpha\"\n\
command = \"{BIN}\"\nargs = [\"fixture\", \"--name\", \"alpha\", \"--variant-file\", \"{}\"]\n\n\
[endpoints.main]\ndescription = \"Main <b>tools</b>\"\n\
[endpoints.main.servers.alpha]\n# every tool, for now\ntools = [\"*\"]\n",
        variant_file.display()
    )
}

async fn start(variant: &str, extra: &str) -> (GatewayProc, tempfile::TempDir) {
    let scratch = tempfile::tempdir().unwrap();
    let variant_file = scratch.path().join("variant");
    std::fs::write(&variant_file, variant).unwrap();
    let port = free_port();
    let gw =
        GatewayProc::start_listening(&config(port, &variant_file, extra), &format!("127.0.0.1:{port}")).await;
    (gw, scratch)
}

/// A browser signed in as `user`, through the console's redirect to the sign-in page.
async fn signed_in(gw: &GatewayProc, user: &str) -> Browser {
    let mut b = Browser::new(&gw.base);
    let (status, to, _) = b.get("/console/endpoints").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(to, "/oauth/signin?next=%2Fconsole%2Fendpoints");
    let (status, _, page) = b.get(&to).await;
    assert_eq!(status, StatusCode::OK);
    let (csrf, next) = (hidden(&page, "csrf"), hidden(&page, "next"));
    let code = login_link(gw, user);
    let (status, to, _) = b
        .post(
            "/oauth/signin",
            &[("csrf", &csrf), ("next", &next), ("code", &code)],
        )
        .await;
    assert_eq!(
        (status, to.as_str()),
        (StatusCode::SEE_OTHER, "/console/endpoints")
    );
    b
}

/// The `console_action` records so far: (principal, action, outcome, detail).
fn console_records(gw: &GatewayProc) -> Vec<(String, String, String, String)> {
    let mut q = mcp_guard_core::audit::AuditQuery::default();
    q.kind = Some("console_action".into());
    mcp_guard_core::audit::query_database(&gw.dir.path().join("mcp-guard-audit.db"), &q)
        .unwrap()
        .into_iter()
        .map(|r| {
            let s = |k: &str| r.event[k].as_str().unwrap_or_default().to_owned();
            (
                r.principal.clone().unwrap_or_default(),
                s("action"),
                r.outcome.clone().unwrap_or_default(),
                s("detail"),
            )
        })
        .collect()
}

fn toggle_form<'a>(page: &'a str, csrf: &'a str, tool: &'a str, on: &'a str) -> Vec<(&'a str, String)> {
    vec![
        ("csrf", csrf.to_owned()),
        ("endpoint", "main".into()),
        ("server", "alpha".into()),
        ("tool", tool.to_owned()),
        ("on", on.to_owned()),
        ("digest", hidden(page, "digest")),
    ]
}

async fn post(b: &mut Browser, path: &str, form: &[(&str, String)]) -> (StatusCode, String, String) {
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    b.post(path, &form).await
}

#[tokio::test]
async fn forged_posts_without_or_with_a_wrong_csrf_token_or_from_another_origin_change_nothing() {
    let (gw, _scratch) = start("base", "").await;
    let before = std::fs::read_to_string(gw.config()).unwrap();
    let mut b = signed_in(&gw, "root").await;
    let (_, _, page) = b.get("/console/endpoints").await;
    let csrf = hidden(&page, "csrf");

    // No token at all.
    let mut form = toggle_form(&page, &csrf, "echo", "false");
    form.remove(0);
    let (status, _, body) = post(&mut b, "/console/endpoints/toggle", &form).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("CSRF token is missing or wrong"), "{body}");
    // A token of another sign-in (another browser's page).
    let other = signed_in(&gw, "rita").await;
    let mut other = other;
    let (_, _, other_page) = other.get("/console/endpoints").await;
    let foreign = hidden(&other_page, "csrf");
    assert_ne!(foreign, csrf);
    let (status, _, _) = post(
        &mut b,
        "/console/endpoints/toggle",
        &toggle_form(&page, &foreign, "echo", "false"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The right token, sent by another site's page (the browser names its origin).
    let r = b
        .http
        .post(format!("{}/console/endpoints/toggle", gw.base))
        .header("cookie", b.cookie_header())
        .header("origin", "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .form(&toggle_form(&page, &csrf, "echo", "false"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // No sign-in cookie: nothing to act as.
    let anonymous = reqwest::Client::new()
        .post(format!("{}/console/sessions/revoke", gw.base))
        .form(&[("session", "x"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(
        std::fs::read_to_string(gw.config()).unwrap(),
        before,
        "the file is untouched"
    );
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    assert!(names(&client).await.contains(&"alpha__echo".to_owned()));
    let refused: Vec<_> = console_records(&gw)
        .into_iter()
        .filter(|(who, action, outcome, _)| who == "root" && action == "toggle_tool" && outcome == "denied")
        .collect();
    assert_eq!(refused.len(), 3, "each forged post is audited: {refused:?}");
    assert!(refused[0].3.contains("CSRF"), "{refused:?}");
    assert!(
        refused[2].3.contains("not sent from this gateway's own pages"),
        "{refused:?}"
    );

    // The genuine form works.
    let (status, to, _) = post(
        &mut b,
        "/console/endpoints/toggle",
        &toggle_form(&page, &csrf, "echo", "false"),
    )
    .await;
    assert_eq!(
        (status, to.as_str()),
        (StatusCode::SEE_OTHER, "/console/endpoints")
    );
    client.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn a_switched_off_tool_is_gone_from_the_next_list_and_clients_are_told() {
    let (gw, _scratch) = start("base", "").await;
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    assert!(names(&client).await.contains(&"alpha__echo".to_owned()));
    let mut b = signed_in(&gw, "root").await;
    let (_, _, page) = b.get("/console/endpoints").await;
    assert!(page.contains("id=\"tool-main-alpha-echo\">on<"), "{page}");
    let csrf = hidden(&page, "csrf");
    let (status, _, _) = post(
        &mut b,
        "/console/endpoints/toggle",
        &toggle_form(&page, &csrf, "echo", "false"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // The file keeps its comments and says why the tool is gone.
    let file = std::fs::read_to_string(gw.config()).unwrap();
    assert!(
        file.contains("# every tool, for now\ntools = [\"*\"]\ndisabled_tools = [\"echo\"]"),
        "{file}"
    );
    assert!(file.contains("# the servers"), "{file}");
    // The next list lacks it; the client was told.
    let listed = names(&client).await;
    assert!(!listed.contains(&"alpha__echo".to_owned()), "{listed:?}");
    assert!(listed.contains(&"alpha__add".to_owned()), "{listed:?}");
    assert!(
        eventually(5, async || client.service().seen("tools_changed")).await,
        "no list_changed"
    );
    let call = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("alpha__echo")
                .with_arguments(crate::support::args(&serde_json::json!({"text": "x"}))),
        )
        .await;
    assert!(
        call.is_err() || call.is_ok_and(|r| r.is_error == Some(true)),
        "a switched-off tool cannot be called"
    );
    // The page says so, and shows the message of the change.
    let (_, _, page) = b.get("/console/endpoints").await;
    assert!(page.contains("id=\"tool-main-alpha-echo\">off<"), "{page}");
    assert!(page.contains("Tool alpha/echo is off on endpoint main"), "{page}");
    // Audited, with who did it.
    let done: Vec<_> = console_records(&gw)
        .into_iter()
        .filter(|(_, action, outcome, _)| action == "toggle_tool" && outcome == "ok")
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].0, "root");
    // The gateway does not apply the file it wrote a second time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut q = mcp_guard_core::audit::AuditQuery::default();
    q.kind = Some("config_reloaded".into());
    let reloads =
        mcp_guard_core::audit::query_database(&gw.dir.path().join("mcp-guard-audit.db"), &q).unwrap();
    assert_eq!(reloads.len(), 1, "one reload for one change");
    client.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn two_operators_changing_the_same_setting_the_later_is_told_it_is_stale() {
    let (gw, _scratch) = start("base", "").await;
    let mut root = signed_in(&gw, "root").await;
    let mut rita = signed_in(&gw, "rita").await;
    let (_, _, root_page) = root.get("/console/endpoints").await;
    let (_, _, rita_page) = rita.get("/console/endpoints").await;
    let (root_csrf, rita_csrf) = (hidden(&root_page, "csrf"), hidden(&rita_page, "csrf"));
    // Both decide on the same page state; root is first.
    let (status, _, _) = post(
        &mut root,
        "/console/endpoints/toggle",
        &toggle_form(&root_page, &root_csrf, "echo", "false"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let after_root = std::fs::read_to_string(gw.config()).unwrap();
    // Rita wants echo on again: stale, whatever she meant.
    let (status, _, body) = post(
        &mut rita,
        "/console/endpoints/toggle",
        &toggle_form(&rita_page, &rita_csrf, "echo", "true"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("changed since this page was loaded"), "{body}");
    assert_eq!(
        std::fs::read_to_string(gw.config()).unwrap(),
        after_root,
        "nothing of rita's applied"
    );
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    assert!(!names(&client).await.contains(&"alpha__echo".to_owned()));
    let stale: Vec<_> = console_records(&gw)
        .into_iter()
        .filter(|(who, _, outcome, _)| who == "rita" && outcome == "denied")
        .collect();
    assert_eq!(stale.len(), 1, "{stale:?}");
    // With the page reloaded, her change goes through.
    let (_, _, fresh) = rita.get("/console/endpoints").await;
    let (status, _, _) = post(
        &mut rita,
        "/console/endpoints/toggle",
        &toggle_form(&fresh, &rita_csrf, "echo", "true"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(names(&client).await.contains(&"alpha__echo".to_owned()));
    client.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn a_toggle_that_would_leave_the_config_invalid_is_refused_with_the_checks_message() {
    let (gw, _scratch) = start("base", "").await;
    let before = std::fs::read_to_string(gw.config()).unwrap();
    let mut b = signed_in(&gw, "root").await;
    let (_, _, page) = b.get("/console/endpoints").await;
    let csrf = hidden(&page, "csrf");
    // Forged names: switched off, each would be a disabled tool that is not a tool
    // name (one of them also tries to break out of its TOML string).
    for (tool, on, message) in [
        ("a[", "false", "&quot;a[&quot; is not a tool name"),
        ("x\"]\n[evil]", "false", "is not a tool name"),
    ] {
        let (status, _, body) = post(
            &mut b,
            "/console/endpoints/toggle",
            &toggle_form(&page, &csrf, tool, on),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body.contains("would leave the configuration invalid"), "{body}");
        assert!(body.contains(message), "{body}");
        assert!(body.contains("gateway.toml:"), "names the file and line: {body}");
    }
    assert_eq!(
        std::fs::read_to_string(gw.config()).unwrap(),
        before,
        "nothing written"
    );
    let leftovers: Vec<_> = std::fs::read_dir(gw.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".console.tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    assert!(
        names(&client).await.contains(&"alpha__echo".to_owned()),
        "nothing applied"
    );
    // The next genuine change still works (the digest in the page is still right).
    let (status, _, _) = post(
        &mut b,
        "/console/endpoints/toggle",
        &toggle_form(&page, &csrf, "add", "false"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    client.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn script_in_descriptions_is_shown_escaped_and_no_script_runs_without_the_nonce() {
    // Pinning enforced with no lock file: every tool waits for approval, so the
    // Approvals page shows the hostile description in its diff too.
    let (gw, _scratch) = start("markup", "[pinning]\nmode = \"enforce\"\n\n").await;
    let b = signed_in(&gw, "root").await;
    for path in [
        "/console/servers",
        "/console/endpoints",
        "/console/approvals",
        "/console/config",
    ] {
        let r = b
            .http
            .get(format!("{}{path}", gw.base))
            .header("cookie", b.cookie_header())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .unwrap()
            .to_owned();
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let page = r.text().await.unwrap();
        assert_eq!(
            page.matches("<script").count(),
            1,
            "{path}: only the console's own script: {page}"
        );
        assert!(page.contains(&format!("<script nonce=\"{nonce}\">")), "{path}");
        assert!(!page.contains("<img"), "{path}: {page}");
        assert!(!page.contains("<b>"), "{path}: {page}");
        let want = match path {
            "/console/servers" => "&lt;script&gt;alert(&#39;server&#39;)&lt;/script&gt; Alpha",
            "/console/config" => "&lt;b&gt;tools&lt;/b&gt;",
            _ => "&lt;script&gt;document.title=",
        };
        assert!(
            page.contains(want) || page.contains(&want.replace("&#39;", "'")),
            "{path}: {page}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_auditor_sees_everything_and_each_change_is_refused_with_403_and_audited() {
    let (gw, _scratch) = start("base", "").await;
    let before = std::fs::read_to_string(gw.config()).unwrap();
    let client = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    assert!(!names(&client).await.is_empty());
    let mut ann = signed_in(&gw, "ann").await;
    for path in [
        "/console/servers",
        "/console/endpoints",
        "/console/approvals",
        "/console/sessions",
        "/console/audit",
        "/console/config",
    ] {
        let (status, _, page) = ann.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(page.contains("Read-only"), "{path}");
    }
    let (_, _, sessions) = ann.get("/console/sessions").await;
    let session = sessions
        .split("id=\"session-")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("alice's session is listed")
        .to_owned();
    let (_, _, page) = ann.get("/console/endpoints").await;
    let csrf = hidden(&page, "csrf");
    let digest = hidden(&page, "digest");
    let attempts: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "/console/endpoints/toggle",
            toggle_form(&page, &csrf, "echo", "false"),
        ),
        (
            "/console/endpoints/redaction",
            vec![
                ("csrf", csrf.clone()),
                ("endpoint", "main".into()),
                ("direction", "responses".into()),
                ("on", "true".into()),
                ("digest", digest.clone()),
            ],
        ),
        (
            "/console/sessions/revoke",
            vec![("csrf", csrf.clone()), ("session", session.clone())],
        ),
        (
            "/console/servers/test",
            vec![("csrf", csrf.clone()), ("server", "alpha".into())],
        ),
        (
            "/console/approvals/approve",
            vec![
                ("csrf", csrf.clone()),
                ("server", "alpha".into()),
                ("tool", "echo".into()),
                ("pin", "sha256:x".into()),
            ],
        ),
        (
            "/console/approvals/reject",
            vec![
                ("csrf", csrf.clone()),
                ("server", "alpha".into()),
                ("tool", "echo".into()),
                ("digest", digest.clone()),
            ],
        ),
        (
            "/console/config/apply",
            vec![
                ("csrf", csrf.clone()),
                ("text", "[gateway]\n".into()),
                ("digest", digest.clone()),
            ],
        ),
    ];
    for (path, form) in &attempts {
        let (status, _, body) = post(&mut ann, path, form).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(
            body.contains("the auditor role changes nothing"),
            "{path}: {body}"
        );
    }
    // A check changes nothing: the auditor may run it.
    let (status, _, body) = post(
        &mut ann,
        "/console/config/check",
        &[("csrf", csrf.clone()), ("text", before.clone())],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Valid."), "{body}");

    assert_eq!(std::fs::read_to_string(gw.config()).unwrap(), before);
    assert!(
        names(&client).await.contains(&"alpha__echo".to_owned()),
        "the session still works"
    );
    let refused: Vec<_> = console_records(&gw)
        .into_iter()
        .filter(|(who, _, outcome, _)| who == "ann" && outcome == "denied")
        .collect();
    assert_eq!(
        refused.len(),
        attempts.len(),
        "every refusal audited: {refused:?}"
    );
    client.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn a_user_without_a_console_role_gets_403_and_the_refusal_is_audited() {
    let (gw, _scratch) = start("base", "").await;
    let mut b = Browser::new(&gw.base);
    let (_, to, _) = b.get("/console/servers").await;
    let (_, _, page) = b.get(&to).await;
    let code = login_link(&gw, "eve");
    let (status, _, _) = b
        .post(
            "/oauth/signin",
            &[
                ("csrf", &hidden(&page, "csrf")),
                ("next", &hidden(&page, "next")),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    for path in ["/console/servers", "/console/audit", "/console/config"] {
        let (status, _, body) = b.get(path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(
            body.contains("holds neither the admin nor the auditor role"),
            "{body}"
        );
    }
    let refused = console_records(&gw);
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|(who, action, outcome, _)| who == "eve" && action == "open" && outcome == "denied")
    );
    gw.stop().await;
}
