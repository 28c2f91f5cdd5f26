use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use mcp_guard_core::Principal;
use mcp_guard_core::access::AccessStore;

use super::super::{AuthServerSettings, AuthorizationServer, EndpointCatalog};
use super::*;

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

/// Answers each name from a fixed table, the way a hostile DNS zone would.
struct Table(Vec<(&'static str, IpAddr)>);

impl Resolve for Table {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let ips: Vec<SocketAddr> = self
            .0
            .iter()
            .filter(|(n, _)| *n == name.as_str())
            .map(|(_, ip)| SocketAddr::new(*ip, 0))
            .collect();
        Box::pin(async move { Ok(Box::new(ips.into_iter()) as reqwest::dns::Addrs) })
    }
}

/// A listener on 127.0.0.1 standing in for an internal service: it counts connections.
async fn internal_service() -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (port, hits)
}

/// `GET /oauth/authorize?client_id=<url>` makes the gateway fetch the URL before anyone
/// signs in. Every spelling of loopback, and a name that resolves to it, is refused
/// with a precise error and no connection reaches the service it points at; a
/// registered client is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_metadata_ssrf_to_loopback_is_refused_before_connecting() {
    let (port, hits) = internal_service().await;
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = AuthorizationServer::new(
        AuthServerSettings::new(&base),
        AccessStore::open(dir.path().join("a.db")).unwrap(),
        [],
        Arc::new(OneEndpoint),
    )
    .client_metadata_resolver(Arc::new(Table(vec![
        ("cimd.attacker.test", "127.0.0.1".parse().unwrap()),
        ("mapped.attacker.test", "::ffff:127.0.0.1".parse().unwrap()),
    ])));
    let app = server.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let authorize = |client_id: &str| {
        let mut u = reqwest::Url::parse(&format!("{base}/oauth/authorize")).unwrap();
        u.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", "http://127.0.0.1:9/cb")
            .append_pair("response_type", "code")
            .append_pair("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", &format!("{base}/mcp/main"));
        http.get(u).send()
    };
    let cases = [
        ("[::ffff:127.0.0.1]", "an IPv4-mapped IPv6 address"),
        ("[::ffff:7f00:1]", "an IPv4-mapped IPv6 address"),
        ("[::127.0.0.1]", "an IPv4-compatible IPv6 address"),
        ("[64:ff9b::7f00:1]", "a loopback address"),
        ("[2002:7f00:1::]", "a loopback address"),
        ("127.1", "a loopback address"),
        ("2130706433", "a loopback address"),
        ("0x7f000001", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),
        ("[::1]", "a loopback address"),
        ("cimd.attacker.test", "a loopback address"),
        ("mapped.attacker.test", "an IPv4-mapped IPv6 address"),
    ];
    for (host, kind) in cases {
        let client_id = format!("https://{host}:{port}/client.json");
        let r = authorize(&client_id).await.unwrap();
        let status = r.status();
        let page = r.text().await.unwrap();
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "{client_id}: the gateway connected to the internal service ({status}: {page})"
        );
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{client_id}: {page}");
        assert!(
            page.contains("refused to fetch from") && page.contains(kind),
            "{client_id}: {page}"
        );
        assert!(
            !page.contains("127.0.0.1,"),
            "the resolved address leaked: {page}"
        );
    }

    // Others are served as before: a registered client gets to the sign-in.
    let reg: serde_json::Value = http
        .post(format!("{base}/oauth/register"))
        .json(&serde_json::json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "client_name": "ok"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = authorize(reg["client_id"].as_str().unwrap()).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER, "{:?}", r.text().await);
}
