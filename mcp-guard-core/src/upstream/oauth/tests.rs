use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::*;
use crate::MemoryCredentialStore;
use crate::fetch::{AddressKind, Refusal};

/// Names the test's hostile zone points at loopback.
struct Zone(Vec<(&'static str, IpAddr)>);

impl Resolve for Zone {
    fn resolve(&self, name: Name) -> Resolving {
        let ips: Vec<SocketAddr> = self
            .0
            .iter()
            .filter(|(n, _)| *n == name.as_str())
            .map(|(_, ip)| SocketAddr::new(*ip, 0))
            .collect();
        Box::pin(async move { Ok(Box::new(ips.into_iter()) as Addrs) })
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

/// An upstream whose `/pointer` answers 401 with a `resource_metadata` on a hostile
/// name, and whose `/metadata` publishes protected-resource metadata naming an
/// authorization server on another hostile name. Both names resolve to 127.0.0.1.
async fn hostile_upstream(internal: u16) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let pointer = format!("Bearer resource_metadata=\"http://prm.attacker.test:{internal}/prm\"");
    let prm = serde_json::json!({
        "resource": format!("{base}/metadata"),
        "authorization_servers": [format!("http://as.attacker.test:{internal}")],
    });
    let unauthorized = |challenge: String| {
        axum::routing::any(move || {
            let challenge = challenge.clone();
            async move {
                (
                    http::StatusCode::UNAUTHORIZED,
                    [(http::header::WWW_AUTHENTICATE, challenge)],
                )
            }
        })
    };
    let app = axum::Router::new()
        .route("/pointer", unauthorized(pointer))
        .route("/metadata", unauthorized("Bearer".to_owned()))
        .route(
            "/.well-known/oauth-protected-resource/metadata",
            axum::routing::get(move || std::future::ready(axum::Json(prm.clone()))),
        );
    tokio::spawn(async move { axum::serve(l, app).await });
    base
}

fn server(url: String) -> OAuthServer {
    let store = Arc::new(MemoryCredentialStore::new());
    OAuthServer::new(
        "s",
        url,
        OAuthSpec::new(OAuthMode::Personal),
        store.clone(),
        store,
    )
    .resolver(Arc::new(Zone(vec![
        ("prm.attacker.test", "127.0.0.1".parse().unwrap()),
        ("as.attacker.test", "::ffff:127.0.0.1".parse().unwrap()),
    ])))
}

/// Upstream OAuth discovery follows URLs the upstream names; names that resolve to
/// loopback (through a resolver the test controls) are refused with the host and the
/// kind of address, and no connection reaches the listener they point at.
#[tokio::test]
async fn upstream_discovery_ssrf_through_a_name_is_refused_before_connecting() {
    let (port, hits) = internal_service().await;
    let base = hostile_upstream(port).await;
    for (path, host, kind) in [
        ("/pointer", "prm.attacker.test", AddressKind::Loopback),
        ("/metadata", "as.attacker.test", AddressKind::Ipv4Mapped),
    ] {
        let e = server(format!("{base}{path}"))
            .discover("alice")
            .await
            .unwrap_err();
        match &e {
            OAuthError::Refused { source, .. } => {
                assert_eq!(source.host, host, "{e}");
                assert!(
                    matches!(source.refusal, Refusal::Address { kind: k, .. } if k == kind),
                    "{e}"
                );
            }
            other => panic!("{path}: not refused by the guard: {other}"),
        }
        assert!(
            e.to_string().contains(&format!("refused to fetch from {host}")),
            "{e}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused fetch reached the listener"
    );
}
