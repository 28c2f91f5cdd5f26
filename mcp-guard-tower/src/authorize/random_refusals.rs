//! What the authorization server answers when the operating system's random source
//! fails while it makes a one-time value: a precise refusal (an OAuth error, an error
//! page), never a panic, and nothing one-time used up, so the same step succeeds once the
//! source works again. The source is made to fail with
//! [`mcp_guard_core::random::fail_on_this_thread`]: the test runs on a current-thread
//! runtime, where every handler and the local identity provider run too.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use http::{HeaderMap, Request, StatusCode, header};
use mcp_guard_core::Principal;
use mcp_guard_core::access::AccessStore;
use mcp_guard_core::random::fail_on_this_thread;
use tower::ServiceExt as _;

use super::{AuthServerSettings, AuthorizationServer, EndpointCatalog, OidcSettings};

struct OneEndpoint;

#[async_trait]
impl EndpointCatalog for OneEndpoint {
    fn endpoints(&self) -> Vec<String> {
        vec!["main".into()]
    }
    fn describe(&self, endpoint: &str) -> Option<Option<String>> {
        (endpoint == "main").then_some(None)
    }
    async fn tools(&self, _: &Principal, _: &str) -> Vec<String> {
        vec!["echo".into()]
    }
}

/// A browser: the router, and the cookies it was given.
struct Browser {
    app: axum::Router,
    cookies: BTreeMap<String, String>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Browser {
    async fn send(&mut self, method: &str, uri: &str, form: Option<&[(&str, &str)]>) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(header::COOKIE, jar.join("; "));
        }
        let body = match form {
            Some(pairs) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(pairs)
                        .finish(),
                )
            }
            None => Body::empty(),
        };
        let r = self.app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        for c in r.headers().get_all(header::SET_COOKIE) {
            let pair = c.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn json(&mut self, uri: &str, body: &serde_json::Value) -> Answer {
        let req = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let r = self.app.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// The value of the hidden form field `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

/// The refusal every step gives while the source fails: a 500 that names the cause.
fn assert_refused(a: &Answer, step: &str) {
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{step}: {}", a.body);
    assert!(
        a.body.contains("random source failed"),
        "{step} names the cause: {}",
        a.body
    );
    assert!(
        a.headers.get_all(header::SET_COOKIE).iter().next().is_none(),
        "{step} sets no cookie"
    );
}

/// An identity provider on 127.0.0.1 that only publishes its discovery document.
async fn identity_provider() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let doc = serde_json::json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
    });
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || async move { axum::Json(doc) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one walk through every step that makes a one-time value, in order"
)]
async fn a_failing_random_source_is_refused_precisely_and_uses_nothing_up() {
    let issuer = "http://127.0.0.1:9";
    let dir = tempfile::tempdir().unwrap();
    let store = AccessStore::open(dir.path().join("access.db")).unwrap();
    let link = store
        .issue_login_link("alice", std::time::Duration::from_mins(10))
        .unwrap();
    #[expect(clippy::disallowed_methods, reason = "the test signs in with the link")]
    let link = secrecy::ExposeSecret::expose_secret(&link).to_owned();
    let server = AuthorizationServer::new(
        AuthServerSettings::new(issuer),
        store.clone(),
        [Principal::user("alice")],
        Arc::new(OneEndpoint),
    )
    .oidc(OidcSettings::new(identity_provider().await, "gateway"));
    let mut b = Browser {
        app: server.router(),
        cookies: BTreeMap::new(),
    };

    // Dynamic registration: an OAuth error, no client stored.
    let registration = serde_json::json!({
        "redirect_uris": ["http://127.0.0.1:9/cb"],
        "client_name": "probe",
    });
    {
        let _fail = fail_on_this_thread();
        let a = b.json("/oauth/register", &registration).await;
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", a.body);
        let e: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(e["error"], "server_error");
        assert!(
            e["error_description"]
                .as_str()
                .unwrap()
                .contains("random source failed"),
            "{e}"
        );
    }
    let a = b.json("/oauth/register", &registration).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let client: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let client_id = client["client_id"].as_str().unwrap().to_owned();

    // The sign-in form and a sign-in link's confirmation form.
    let confirm = format!(
        "/login?code={}",
        url::form_urlencoded::byte_serialize(link.as_bytes()).collect::<String>()
    );
    {
        let _fail = fail_on_this_thread();
        assert_refused(&b.send("GET", "/oauth/signin", None).await, "sign-in form");
        assert_refused(&b.send("GET", &confirm, None).await, "sign-in link");
    }
    let form = b.send("GET", &confirm, None).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let pre = hidden(&form.body, "csrf");

    // Signing in with the link: refused before the link is redeemed, so it still works.
    let submit = [("code", link.as_str()), ("csrf", pre.as_str())];
    {
        let _fail = fail_on_this_thread();
        assert_refused(
            &b.send("POST", "/oauth/signin", Some(&submit)).await,
            "browser session",
        );
    }
    let a = b.send("POST", "/oauth/signin", Some(&submit)).await;
    assert_eq!(a.status, StatusCode::OK, "the link was not used up: {}", a.body);
    assert!(a.body.contains("Signed in as alice"), "{}", a.body);

    // An authorization request: not kept while the source fails.
    let authorize = format!(
        "/oauth/authorize?response_type=code&client_id={client_id}&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb\
&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256\
&resource=http%3A%2F%2F127.0.0.1%3A9%2Fmcp%2Fmain&state=s1"
    );
    {
        let _fail = fail_on_this_thread();
        assert_refused(&b.send("GET", &authorize, None).await, "authorization request");
    }
    let a = b.send("GET", &authorize, None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let consent = a.headers[header::LOCATION].to_str().unwrap().to_owned();
    let page = b.send("GET", &consent, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let request = hidden(&page.body, "request");
    let csrf = hidden(&page.body, "csrf");

    // The authorization code: no grant made, and the request still waits for the answer.
    let allow = [
        ("request", request.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "allow"),
        ("duration", "1h"),
    ];
    {
        let _fail = fail_on_this_thread();
        assert_refused(
            &b.send("POST", "/oauth/consent", Some(&allow)).await,
            "authorization code",
        );
    }
    assert!(store.list_grants().unwrap().is_empty(), "no grant without a code");
    let a = b.send("POST", "/oauth/consent", Some(&allow)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let back = a.headers[header::LOCATION].to_str().unwrap();
    assert!(back.starts_with("http://127.0.0.1:9/cb?code="), "{back}");
    assert_eq!(store.list_grants().unwrap().len(), 1);

    // Sign-in at the identity provider: not started while the source fails.
    {
        let _fail = fail_on_this_thread();
        assert_refused(
            &b.send("GET", "/oauth/signin/oidc", None).await,
            "OpenID Connect sign-in",
        );
    }
    let a = b.send("GET", "/oauth/signin/oidc", None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let to = a.headers[header::LOCATION].to_str().unwrap();
    assert!(to.contains("/authorize?") && to.contains("state="), "{to}");
}
