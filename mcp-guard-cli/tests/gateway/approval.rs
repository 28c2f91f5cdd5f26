//! Human approval (issue 26) against the real binary: calls that a grant or a flow rule
//! marks `approval = "required"` ask the calling client (a server request to a legacy
//! client, an input-required round for a 2026-07-28 client) or wait for a decision on
//! the gateway's approval page; answers that do not count are refused and audited, and
//! a flood of pending approvals is bounded.
#![allow(
    clippy::too_many_lines,
    reason = "each test is one scenario against one gateway, step by step"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::ClientHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig, ElicitRequestParams,
    ElicitResult, ElicitationAction, ErrorData, Implementation,
};
use rmcp::service::{RequestContext, RoleClient, RunningService, serve_client_with_lifecycle};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::flow::{call, config, of_type, records};
use crate::support::*;

/// How the test client answers the gateway's approval question.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Once,
    Session,
    Decline,
    /// Takes this long, then approves (too late).
    Slow(Duration),
}

#[derive(Clone)]
struct Person {
    answer: Arc<Mutex<Answer>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Person {
    fn new(a: Answer) -> Self {
        Self {
            answer: Arc::new(Mutex::new(a)),
            asked: Arc::default(),
        }
    }

    fn set(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    fn asked(&self) -> usize {
        self.asked.lock().unwrap().len()
    }
}

impl ClientHandler for Person {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        caps.elicitation = Some(rmcp::model::ElicitationCapability::default());
        ClientConfig::new(caps, Implementation::new("flow-tests", "0"))
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        if let ElicitRequestParams::FormElicitationParams { message, .. } = &request {
            self.asked.lock().unwrap().push(message.clone());
        }
        let answer = *self.answer.lock().unwrap();
        let accept =
            |scope: &str| ElicitResult::new(ElicitationAction::Accept).with_content(json!({"scope": scope}));
        Ok(match answer {
            Answer::Once => accept("once"),
            Answer::Session => accept("session"),
            Answer::Decline => ElicitResult::new(ElicitationAction::Decline),
            Answer::Slow(d) => {
                tokio::time::sleep(d).await;
                accept("once")
            }
        })
    }
}

async fn person(
    url: &str,
    token: &str,
    era: Era,
    answer: Answer,
) -> (RunningService<RoleClient, Person>, Person) {
    mcp_guard_core::upstream::ensure_crypto_provider();
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url);
    cfg.auth_header = Some(token.to_owned());
    let handler = Person::new(answer);
    let lifecycle = match era {
        Era::Legacy => rmcp::service::ClientLifecycleMode::Initialize,
        Era::Modern => rmcp::service::ClientLifecycleMode::Discover {
            preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
        },
    };
    let client = tokio::time::timeout(
        Duration::from_secs(20),
        serve_client_with_lifecycle(
            handler.clone(),
            StreamableHttpClientTransport::from_config(cfg),
            lifecycle,
        ),
    )
    .await
    .expect("connect timed out")
    .expect("connect failed");
    (client, handler)
}

/// Every mail needs approval; after untrusted input and private data nothing goes out;
/// branch deletions need approval by grant.
fn approval_rules(timeout_secs: u64, per_session: usize) -> String {
    format!(
        "[[flow_rules]]\nname = \"no-exfiltration\"\nafter = [\"untrusted-input\", \"private-data\"]\ncalls = [\"egress\"]\n\n\
         [[flow_rules]]\nname = \"egress-needs-approval\"\ncalls = [\"egress\"]\napproval = \"required\"\n\n\
         [[grants]]\nname = \"deletes-need-approval\"\nroles = [\"eng\"]\nservers = [\"repo\"]\nnames = [\"delete_*\"]\napproval = \"required\"\n\n\
         [approval]\ntimeout_secs = {timeout_secs}\nmax_pending_per_session = {per_session}\n"
    )
}

fn reason(e: &ErrorData) -> String {
    e.data
        .as_ref()
        .and_then(|d| d["reason"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn approval_by_elicitation_in_both_eras() {
    let data = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(&config(data.path(), &approval_rules(120, 5))).await;
    for (era, channel) in [(Era::Legacy, "elicitation"), (Era::Modern, "input-required")] {
        let token = issue_token(&gw.config(), &format!("user-{channel}"), "1h");
        let (c, p) = person(&gw.url("main"), &token, era, Answer::Once).await;
        assert_eq!(
            call(&c, "mail__send_mail", "one").await.unwrap(),
            "one",
            "{era:?}"
        );
        assert_eq!(p.asked(), 1);
        let question = p.asked.lock().unwrap()[0].clone();
        assert!(
            question.contains("mail__send_mail")
                && question.contains("send data out")
                && question.contains("\"one\""),
            "{question}"
        );
        // Once means once.
        assert_eq!(call(&c, "mail__send_mail", "two").await.unwrap(), "two");
        assert_eq!(p.asked(), 2);
        p.set(Answer::Decline);
        let e = call(&c, "mail__send_mail", "three").await.unwrap_err();
        assert_eq!(
            (e.code.0, reason(&e).as_str()),
            (-32030, "declined"),
            "{era:?} {e:?}"
        );
        // For the rest of the session: asked once more, then not again.
        p.set(Answer::Session);
        assert_eq!(call(&c, "mail__send_mail", "four").await.unwrap(), "four");
        p.set(Answer::Decline);
        assert_eq!(call(&c, "mail__send_mail", "five").await.unwrap(), "five");
        assert_eq!(p.asked(), 4);
        // A grant that asks.
        p.set(Answer::Once);
        assert_eq!(call(&c, "repo__delete_branch", "old").await.unwrap(), "old");
        assert_eq!(p.asked(), 5);
        // A refusing flow rule wins over an approving one: nobody is asked.
        call(&c, "issues__read_issue", "x").await.unwrap();
        call(&c, "repo__read_secret", "y").await.unwrap();
        assert_eq!(call(&c, "mail__send_mail", "z").await.unwrap_err().code.0, -32031);
        assert_eq!(p.asked(), 5);
        let _ = c.cancel().await;

        let recs = records(data.path());
        let mine = |kind: &str| -> Vec<Value> {
            of_type(&recs, kind)
                .into_iter()
                .filter(|r| r["principal"]["id"] == format!("user-{channel}"))
                .cloned()
                .collect()
        };
        let requested = mine("approval_requested");
        assert_eq!(requested.len(), 5, "{requested:?}");
        assert!(requested.iter().all(|r| r["channel"] == channel), "{requested:?}");
        assert_eq!(requested[0]["requested_name"], "mail__send_mail");
        assert_eq!(
            requested[0]["arguments"]["text"], "one",
            "arguments recorded (redacted)"
        );
        let answers: Vec<String> = mine("approval_answered")
            .iter()
            .map(|r| r["answer"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            answers,
            [
                "approved-once",
                "approved-once",
                "declined",
                "approved-for-session",
                "approved-once"
            ],
            "{era:?}"
        );
        let answered = mine("approval_answered");
        assert!(
            answered
                .iter()
                .all(|r| r["approver"] == format!("user-{channel}")),
            "{answered:?}"
        );
        // The approved call's own record names the approval.
        let sent = mine("request")
            .into_iter()
            .find(|r| r["requested_name"] == "mail__send_mail" && r["outcome"] == "ok")
            .unwrap();
        assert_eq!(sent["flow"]["approval"], requested[0]["approval"], "{sent}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn no_answer_in_time_refuses_the_call_in_both_eras() {
    let data = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(&config(data.path(), &approval_rules(2, 5))).await;
    for era in [Era::Legacy, Era::Modern] {
        let (c, p) = person(&gw.url("main"), TOKEN, era, Answer::Slow(Duration::from_secs(5))).await;
        let e = call(&c, "mail__send_mail", "late").await.unwrap_err();
        assert_eq!(e.code.0, -32030, "{era:?} {e:?}");
        assert_eq!(reason(&e), "timed-out", "{era:?} {e:?}");
        assert_eq!(p.asked(), 1);
        let _ = c.cancel().await;
    }
    let recs = records(data.path());
    let timed_out = of_type(&recs, "approval_answered")
        .into_iter()
        .filter(|r| r["answer"] == "timed-out")
        .count();
    assert_eq!(timed_out, 2, "{recs:?}");
    // The 2026-07-28 client's late answer is refused and audited too.
    assert!(
        of_type(&recs, "approval_refused")
            .iter()
            .any(|r| r["reason"].as_str().unwrap().contains("expired")),
        "{recs:?}"
    );
    gw.stop().await;
}

/// One raw round of a 2026-07-28 client: the call, with an answer and a
/// `requestState` of its choosing.
async fn once<S: rmcp::service::Service<RoleClient>>(
    c: &RunningService<RoleClient, S>,
    text: &str,
    state: Option<&str>,
    accept: bool,
) -> Result<CallToolResponse, ErrorData> {
    let mut p = CallToolRequestParams::new("mail__send_mail").with_arguments(args(&json!({"text": text})));
    if let Some(s) = state {
        p.request_state = Some(s.to_owned());
        let answer = if accept {
            json!({"action": "accept", "content": {"scope": "once"}})
        } else {
            json!({"action": "decline"})
        };
        p.input_responses = Some([("approval".to_owned(), answer)].into_iter().collect());
    }
    match c.call_tool_once(p).await {
        Ok(r) => Ok(r),
        Err(rmcp::ServiceError::McpError(e)) => Err(e),
        Err(e) => panic!("transport error: {e}"),
    }
}

fn state_of(r: CallToolResponse) -> String {
    match r {
        CallToolResponse::InputRequired(ir) => ir.request_state.unwrap(),
        other => panic!("expected a question, got {other:?}"),
    }
}

#[tokio::test]
async fn answers_for_another_call_by_another_user_twice_or_late_are_refused_and_audited() {
    let data = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(&config(data.path(), &approval_rules(5, 3))).await;
    let (alice, _) = person(&gw.url("main"), TOKEN, Era::Modern, Answer::Once).await;
    let carol_token = issue_token(&gw.config(), "carol", "1h");
    let (carol, _) = person(&gw.url("main"), &carol_token, Era::Modern, Answer::Once).await;
    let h = state_of(once(&alice, "q", None, false).await.unwrap());
    assert!(h.starts_with("mcp-guard-approval:"), "{h}");
    // The answer presented with other arguments: refused; the approval keeps waiting.
    let e = once(&alice, "other", Some(&h), true).await.unwrap_err();
    assert_eq!(reason(&e), "invalid-answer", "{e:?}");
    assert!(e.message.contains("another call"), "{}", e.message);
    // By another principal: refused.
    let e = once(&carol, "q", Some(&h), true).await.unwrap_err();
    assert!(e.message.contains("another principal"), "{}", e.message);
    // The right answer: the call runs.
    match once(&alice, "q", Some(&h), true).await.unwrap() {
        CallToolResponse::Complete(r) => assert_eq!(text_of(&r), "send_mail: q"),
        other => panic!("{other:?}"),
    }
    // The same answer again: single use.
    let e = once(&alice, "q", Some(&h), true).await.unwrap_err();
    assert!(e.message.contains("already answered"), "{}", e.message);
    // A handle nobody issued.
    let e = once(
        &alice,
        "q",
        Some("mcp-guard-approval:a_00000000000000000000000000000000"),
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&e), "invalid-answer");
    // Too late.
    let late = state_of(once(&alice, "late", None, false).await.unwrap());
    tokio::time::sleep(Duration::from_secs(7)).await;
    let e = once(&alice, "late", Some(&late), true).await.unwrap_err();
    assert_eq!(reason(&e), "timed-out", "{e:?}");

    // A flood: at most 3 approvals wait per session.
    for i in 0..3 {
        state_of(once(&alice, &format!("flood-{i}"), None, false).await.unwrap());
    }
    let e = once(&alice, "flood-3", None, false).await.unwrap_err();
    assert_eq!(reason(&e), "too-many-pending", "{e:?}");
    assert!(e.message.contains("3 approvals"), "{}", e.message);
    // Another session is not held up by alice's.
    state_of(once(&carol, "mine", None, false).await.unwrap());

    let recs = records(data.path());
    let refused: Vec<String> = of_type(&recs, "approval_refused")
        .iter()
        .map(|r| {
            format!(
                "{} by {}",
                r["reason"].as_str().unwrap(),
                r["by"].as_str().unwrap_or("?")
            )
        })
        .collect();
    for expected in [
        "another call (tool or arguments differ) by alice",
        "another principal by carol",
        "already answered (approved-once) by alice",
        "names no approval waiting here by alice",
        "expired before this answer came by alice",
        "3 approvals already wait in this session by alice",
    ] {
        assert!(
            refused.iter().any(|r| r.contains(expected)),
            "{expected:?} not in {refused:#?}"
        );
    }
    let _ = alice.cancel().await;
    let _ = carol.cancel().await;
    gw.stop().await;
}

// ---- the approval page ------------------------------------------------------------------

/// The flow fixtures behind the built-in sign-in: alice and bob are users who sign in
/// in a browser (and call with their static tokens), `sec` holds the approver role.
fn web_config(data: &std::path::Path, port: u16) -> String {
    format!(
        "[gateway]\npublic_url = \"http://127.0.0.1:{port}\"\n\n\
         [auth.server]\n[[auth.server.users]]\nid = \"alice\"\nroles = [\"eng\"]\n\n\
         [[auth.server.users]]\nid = \"bob\"\nroles = [\"eng\"]\n\n\
         [[auth.server.users]]\nid = \"sec\"\nroles = [\"security\"]\n\n{}",
        config(
            data,
            "[[flow_rules]]\nname = \"egress-needs-approval\"\ncalls = [\"egress\"]\napproval = \"required\"\n\n\
             [approval]\ntimeout_secs = 60\napprover_roles = [\"security\"]\n",
        )
    )
}

/// Signs `user` in from the sign-in page that `next` was sent to.
async fn sign_in_for(b: &mut crate::authorize::Browser, gw: &GatewayProc, next: &str, user: &str) {
    let (status, location, _) = b.get(next).await;
    assert_eq!(status, reqwest::StatusCode::SEE_OTHER, "not signed in yet");
    assert!(location.starts_with("/oauth/signin?next="), "{location}");
    let (status, _, page) = b.get(&location).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let csrf = crate::authorize::hidden(&page, "csrf");
    let back = crate::authorize::hidden(&page, "next");
    assert_eq!(back, next);
    let code = crate::authorize::login_link(gw, user);
    let (status, location, _) = b
        .post(
            "/oauth/signin",
            &[("csrf", &csrf), ("next", &back), ("code", &code)],
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::SEE_OTHER);
    assert_eq!(location, next);
}

fn approval_url(e: &ErrorData) -> String {
    e.data
        .as_ref()
        .and_then(|d| d["approvalUrl"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_client_that_cannot_elicit_gets_a_link_and_the_call_waits_for_the_decision_on_the_page() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = GatewayProc::start_listening(&web_config(data.path(), port), &format!("127.0.0.1:{port}")).await;
    let base = format!("http://127.0.0.1:{port}");
    // The test client declares no elicitation: it cannot be asked.
    let alice = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    let e = call(&alice, "mail__send_mail", "report").await.unwrap_err();
    assert_eq!((e.code.0, reason(&e).as_str()), (-32030, "pending"), "{e:?}");
    let url = approval_url(&e);
    assert!(url.starts_with(&format!("{base}/approvals/a_")), "{url}");
    assert!(
        e.message.contains(&url),
        "the link is in the message too: {}",
        e.message
    );
    let path = url.strip_prefix(&base).unwrap().to_owned();

    // Bob is signed in, but it is not his call and he holds no approver role.
    let mut bob = crate::authorize::Browser::new(&base);
    sign_in_for(&mut bob, &gw, &path, "bob").await;
    let (status, _, page) = bob.get(&path).await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{page}");
    assert!(!page.contains("report"), "bob sees nothing of the call: {page}");

    // Alice sees the call: tool, arguments (redacted), why.
    let mut b = crate::authorize::Browser::new(&base);
    sign_in_for(&mut b, &gw, &path, "alice").await;
    let (status, _, page) = b.get(&path).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    for shown in [
        "mail__send_mail",
        "report",
        "send data out",
        "egress-needs-approval",
    ] {
        assert!(page.contains(shown), "the page lacks {shown}: {page}");
    }
    let csrf = crate::authorize::hidden(&page, "csrf");
    // A form token from another page (or none) does not count.
    let (status, _, _) = b.post(&path, &[("csrf", "a_00"), ("decision", "once")]).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    // The same call made again waits for the decision.
    let waiting = tokio::spawn({
        let peer = alice.peer().clone();
        async move {
            peer.call_tool(
                CallToolRequestParams::new("mail__send_mail")
                    .with_arguments(args(&json!({"text": "report"}))),
            )
            .await
            .map(|r| text_of(&r))
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the repeated call waits for the decision");
    let (status, _, page) = b.post(&path, &[("csrf", &csrf), ("decision", "once")]).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    assert!(page.contains("Approved"), "{page}");
    let done = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiting call goes on once approved")
        .unwrap();
    assert_eq!(done.unwrap(), "send_mail: report");
    // Decided once, used once: the page says so, and a second answer is refused.
    let (status, _, _) = b.post(&path, &[("csrf", &csrf), ("decision", "decline")]).await;
    assert_eq!(
        status,
        reqwest::StatusCode::BAD_REQUEST,
        "the form token was single use"
    );
    let (status, _, _) = b.get(&path).await;
    assert_eq!(status, reqwest::StatusCode::GONE);
    // The next call needs a new approval; the approver role declines it.
    let e = call(&alice, "mail__send_mail", "second").await.unwrap_err();
    let second = approval_url(&e).strip_prefix(&base).unwrap().to_owned();
    assert_ne!(second, path);
    let mut sec = crate::authorize::Browser::new(&base);
    sign_in_for(&mut sec, &gw, &second, "sec").await;
    let (status, _, page) = sec.get(&second).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    let csrf = crate::authorize::hidden(&page, "csrf");
    let (status, _, _) = sec
        .post(&second, &[("csrf", &csrf), ("decision", "decline")])
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let e = call(&alice, "mail__send_mail", "second").await.unwrap_err();
    assert_eq!((e.code.0, reason(&e).as_str()), (-32030, "declined"), "{e:?}");
    // An id nobody issued, and one that is not an id.
    let (status, _, _) = b.get("/approvals/a_00000000000000000000000000000000").await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    let (status, _, _) = b.get("/approvals/..%2F..%2Fetc").await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    let _ = alice.cancel().await;

    let recs = records(data.path());
    let answered: Vec<(String, String)> = of_type(&recs, "approval_answered")
        .iter()
        .map(|r| {
            (
                r["answer"].as_str().unwrap_or_default().to_owned(),
                r["approver"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        answered,
        [
            ("approved-once".to_owned(), "alice".to_owned()),
            ("declined".to_owned(), "sec".to_owned())
        ],
        "{recs:?}"
    );
    assert!(
        of_type(&recs, "approval_requested")
            .iter()
            .all(|r| r["channel"] == "web"),
        "{recs:?}"
    );
    let refused: Vec<&str> = of_type(&recs, "approval_refused")
        .iter()
        .filter_map(|r| r["by"].as_str())
        .collect();
    assert!(refused.contains(&"bob"), "bob's look is audited: {refused:?}");
    gw.stop().await;
}

#[test]
fn explain_says_when_a_call_waits_for_a_persons_approval() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("gateway.toml");
    std::fs::write(&path, config(data.path(), &approval_rules(120, 5))).unwrap();
    let explain = |tool: &str| {
        crate::flow::cli(
            &path,
            &[
                "explain",
                "--principal",
                "alice",
                "--role",
                "eng",
                "--endpoint",
                "main",
                "--tool",
                tool,
            ],
        )
    };
    let (code, out) = explain("mail__send_mail");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("decision: allow after a person's approval"), "{out}");
    assert!(out.contains("flow rule \"egress-needs-approval\""), "{out}");
    let (code, out) = explain("repo__delete_branch");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("grant \"deletes-need-approval\""), "{out}");
    let (code, out) = explain("repo__read_secret");
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn a_flood_of_pending_approvals_across_sessions_is_bounded_for_the_whole_gateway() {
    let data = tempfile::tempdir().unwrap();
    // At most 3 per session, 4 in all.
    let rules = format!("{}max_pending = 4\n", approval_rules(30, 3));
    let gw = GatewayProc::start(&config(data.path(), &rules)).await;
    let (alice, _) = person(&gw.url("main"), TOKEN, Era::Modern, Answer::Once).await;
    let carol_token = issue_token(&gw.config(), "carol", "1h");
    let (carol, _) = person(&gw.url("main"), &carol_token, Era::Modern, Answer::Once).await;
    for i in 0..3 {
        state_of(once(&alice, &format!("a-{i}"), None, false).await.unwrap());
    }
    // Carol's first approval fits the gateway's bound; her second does not.
    let first = state_of(once(&carol, "c-0", None, false).await.unwrap());
    let e = once(&carol, "c-1", None, false).await.unwrap_err();
    assert_eq!(
        (e.code.0, reason(&e).as_str()),
        (-32030, "too-many-pending"),
        "{e:?}"
    );
    assert!(e.message.contains("4 approvals"), "{}", e.message);
    // Answering one frees a place: the gateway keeps serving.
    match once(&carol, "c-0", Some(&first), true).await.unwrap() {
        CallToolResponse::Complete(r) => assert_eq!(text_of(&r), "send_mail: c-0"),
        other => panic!("{other:?}"),
    }
    state_of(once(&carol, "c-2", None, false).await.unwrap());
    let refused: Vec<String> = of_type(&records(data.path()), "approval_refused")
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        refused
            .iter()
            .any(|r| r.contains("4 approvals already wait in this gateway")),
        "{refused:#?}"
    );
    let _ = alice.cancel().await;
    let _ = carol.cancel().await;
    gw.stop().await;
}

#[tokio::test]
async fn the_console_lists_waiting_calls_and_only_an_approver_decides_them_there() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    // root runs the console but holds no approver role; sec audits and approves.
    let cfg = format!(
        "[gateway]\npublic_url = \"http://127.0.0.1:{port}\"\n\n\
         [console]\nenabled = true\n\n\
         [auth.server]\n[[auth.server.users]]\nid = \"alice\"\nroles = [\"eng\"]\n\n\
         [[auth.server.users]]\nid = \"root\"\nroles = [\"admin\"]\n\n\
         [[auth.server.users]]\nid = \"sec\"\nroles = [\"auditor\", \"security\"]\n\n{}",
        config(
            data.path(),
            "[[flow_rules]]\nname = \"egress-needs-approval\"\ncalls = [\"egress\"]\napproval = \"required\"\n\n\
             [approval]\ntimeout_secs = 60\napprover_roles = [\"security\"]\n",
        )
    );
    let gw = GatewayProc::start_listening(&cfg, &format!("127.0.0.1:{port}")).await;
    let base = format!("http://127.0.0.1:{port}");
    let alice = http_client(&gw.url("main"), TOKEN, Era::Legacy).await;
    let e = call(&alice, "mail__send_mail", "quarterly <b>figures</b>")
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "pending", "{e:?}");
    let id = approval_url(&e).rsplit('/').next().unwrap().to_owned();

    // root sees the call, with who, what and why, but no buttons.
    let mut root = crate::authorize::Browser::new(&base);
    sign_in_for(&mut root, &gw, "/console/approvals", "root").await;
    let (status, _, page) = root.get("/console/approvals").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    let section = &page[page.find("id=\"calls\"").expect("the calls section")..];
    for shown in [
        "mail__send_mail",
        "alice",
        "egress-needs-approval",
        "send data out",
        "quarterly &lt;b&gt;figures&lt;/b&gt;",
    ] {
        assert!(section.contains(shown), "the list lacks {shown}: {section}");
    }
    assert!(!section.contains("quarterly <b>"), "arguments are escaped");
    assert!(
        !section.contains(&format!("approve-call-{id}")),
        "root may not decide: {section}"
    );
    // A post of root's own making (with the sign-in's form token from another page) is
    // refused and audited.
    let (_, _, servers) = root.get("/console/servers").await;
    let csrf = crate::authorize::hidden(&servers, "csrf");
    let (status, _, body) = root
        .post(
            "/console/approvals/calls",
            &[("csrf", &csrf), ("approval", &id), ("decision", "once")],
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{body}");
    assert!(body.contains("may not decide"), "{body}");

    // sec decides, from the console.
    let mut sec = crate::authorize::Browser::new(&base);
    sign_in_for(&mut sec, &gw, "/console/approvals", "sec").await;
    let (_, _, page) = sec.get("/console/approvals").await;
    assert!(page.contains(&format!("approve-call-{id}")), "{page}");
    let csrf = crate::authorize::hidden(&page, "csrf");
    // Without the form's CSRF token: refused.
    let (status, _, _) = sec
        .post(
            "/console/approvals/calls",
            &[("csrf", "forged"), ("approval", &id), ("decision", "once")],
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
    let (status, to, _) = sec
        .post(
            "/console/approvals/calls",
            &[("csrf", &csrf), ("approval", &id), ("decision", "once")],
        )
        .await;
    assert_eq!(
        (status, to.as_str()),
        (reqwest::StatusCode::SEE_OTHER, "/console/approvals")
    );
    // A second decision: refused.
    let (status, _, body) = sec
        .post(
            "/console/approvals/calls",
            &[("csrf", &csrf), ("approval", &id), ("decision", "decline")],
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{body}");
    assert!(body.contains("already answered"), "{body}");
    // The call made again goes through.
    assert_eq!(
        call(&alice, "mail__send_mail", "quarterly <b>figures</b>")
            .await
            .unwrap(),
        "quarterly <b>figures</b>"
    );
    let (_, _, page) = sec.get("/console/approvals").await;
    assert!(page.contains("no-calls"), "nothing waits any more: {page}");
    let _ = alice.cancel().await;

    let recs = records(data.path());
    let answered: Vec<(&str, &str)> = of_type(&recs, "approval_answered")
        .iter()
        .map(|r| {
            (
                r["answer"].as_str().unwrap(),
                r["approver"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(answered, [("approved-once", "sec")], "{recs:?}");
    let refused: Vec<String> = of_type(&recs, "approval_refused")
        .iter()
        .map(|r| {
            format!(
                "{} by {}",
                r["reason"].as_str().unwrap(),
                r["by"].as_str().unwrap_or("?")
            )
        })
        .collect();
    for expected in ["may not decide this approval by root", "already answered"] {
        assert!(
            refused.iter().any(|r| r.contains(expected)),
            "{expected:?} not in {refused:#?}"
        );
    }
    let console: Vec<String> = of_type(&recs, "console_action")
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["principal"]["id"].as_str().unwrap_or("?"),
                r["action"].as_str().unwrap_or("?"),
                r["detail"].as_str().unwrap_or("?")
            )
        })
        .collect();
    for (who, how) in [("root", ": refused"), ("sec", ": done")] {
        assert!(
            console
                .iter()
                .any(|r| r.starts_with(&format!("{who} decide_call once call approval ")) && r.contains(how)),
            "{who}{how} not in {console:#?}"
        );
    }
    gw.stop().await;
}
