use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

#[test]
fn address_table() {
    use AddressKind as K;
    let cases: &[(&str, Option<AddressKind>)] = &[
        ("93.184.216.34", None),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("2a00:1450:4001:81c::200e", None),
        ("127.0.0.1", Some(K::Loopback)),
        ("127.255.0.9", Some(K::Loopback)),
        ("::1", Some(K::Loopback)),
        ("10.1.2.3", Some(K::Private)),
        ("172.16.0.1", Some(K::Private)),
        ("172.31.255.255", Some(K::Private)),
        ("172.32.0.1", None),
        ("192.168.0.1", Some(K::Private)),
        ("100.64.0.1", Some(K::SharedCgnat)),
        ("100.127.255.254", Some(K::SharedCgnat)),
        ("100.128.0.1", None),
        ("169.254.1.1", Some(K::LinkLocal)),
        ("169.254.169.254", Some(K::CloudMetadata)),
        ("169.254.170.2", Some(K::CloudMetadata)),
        ("100.100.100.200", Some(K::CloudMetadata)),
        ("fd00:ec2::254", Some(K::CloudMetadata)),
        ("fd12:3456::1", Some(K::UniqueLocal)),
        ("fc00::1", Some(K::UniqueLocal)),
        ("fe80::1", Some(K::LinkLocal)),
        ("fec0::1", Some(K::SiteLocal)),
        ("0.0.0.0", Some(K::Unspecified)),
        ("0.1.2.3", Some(K::Unspecified)),
        ("::", Some(K::Unspecified)),
        ("224.0.0.1", Some(K::Multicast)),
        ("ff02::1", Some(K::Multicast)),
        ("255.255.255.255", Some(K::Broadcast)),
        ("240.0.0.1", Some(K::Reserved)),
        ("192.0.0.8", Some(K::Reserved)),
        ("192.0.2.1", Some(K::Documentation)),
        ("2001:db8::1", Some(K::Documentation)),
        ("198.18.0.1", Some(K::Benchmarking)),
        // IPv4 inside IPv6.
        ("::ffff:127.0.0.1", Some(K::Ipv4Mapped)),
        ("::ffff:7f00:1", Some(K::Ipv4Mapped)),
        ("::ffff:8.8.8.8", Some(K::Ipv4Mapped)),
        ("::127.0.0.1", Some(K::Ipv4Compatible)),
        ("::a9fe:a9fe", Some(K::Ipv4Compatible)),
        ("64:ff9b::7f00:1", Some(K::Loopback)),
        ("64:ff9b::a9fe:a9fe", Some(K::CloudMetadata)),
        ("64:ff9b::a00:1", Some(K::Private)),
        ("64:ff9b::808:808", None),
        ("64:ff9b:1::a00:1", Some(K::LocalNat64)),
        ("2002:7f00:1::", Some(K::Loopback)),
        ("2002:a9fe:a9fe::1", Some(K::CloudMetadata)),
        ("2002:c0a8:101::1", Some(K::Private)),
        ("2002:808:808::1", None),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some(K::Teredo)),
        ("2001:2::1", Some(K::Reserved)),
        ("100::1", Some(K::Reserved)),
        ("4000::1", Some(K::Reserved)),
    ];
    for (ip, want) in cases {
        assert_eq!(classify(ip.parse().unwrap()), *want, "{ip}");
    }
}

#[test]
fn the_dangerous_opt_out_opens_only_internal_networks() {
    let open = FetchPolicy::new().dangerously_allow_private(true);
    for ip in ["127.0.0.1", "::1", "10.0.0.1", "100.64.0.1", "fd12::1"] {
        assert!(open.check_address("h", ip.parse().unwrap()).is_ok(), "{ip}");
    }
    for ip in [
        "169.254.169.254",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "2001::1",
    ] {
        assert!(open.check_address("h", ip.parse().unwrap()).is_err(), "{ip}");
    }
}

/// Answers each name from a fixed table; unknown names fail.
struct Table(HashMap<&'static str, Vec<IpAddr>>);

impl Resolve for Table {
    fn resolve(&self, name: Name) -> Resolving {
        let found = self.0.get(name.as_str()).cloned();
        Box::pin(async move {
            let ips = found.ok_or("no such name")?;
            Ok(Box::new(
                ips.into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            ) as Addrs)
        })
    }
}

fn table(entries: &[(&'static str, &[&str])]) -> Arc<Table> {
    Arc::new(Table(
        entries
            .iter()
            .map(|(n, ips)| (*n, ips.iter().map(|ip| ip.parse().unwrap()).collect()))
            .collect(),
    ))
}

/// A TCP listener on 127.0.0.1 that counts connections (and answers none).
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
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

/// Serves `/` answering with a redirect to `to`, or "ok" when `to` is empty.
async fn redirector(to: String) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move || {
        let to = to.clone();
        async move {
            if to.is_empty() {
                axum::response::IntoResponse::into_response("ok")
            } else {
                axum::response::IntoResponse::into_response((
                    http::StatusCode::FOUND,
                    [(http::header::LOCATION, to)],
                ))
            }
        }
    });
    tokio::spawn(async move { axum::serve(l, app).await });
    port
}

fn refused_kind(r: Result<(reqwest::StatusCode, Vec<u8>), FetchError>) -> AddressKind {
    match r {
        Err(FetchError::Refused(FetchRefused {
            refusal: Refusal::Address { kind, .. },
            ..
        })) => kind,
        other => panic!("not refused by address: {other:?}"),
    }
}

/// Every way of writing a loopback address in a URL, and names that resolve to one,
/// are refused before any connection reaches the listener they point at.
#[tokio::test]
async fn loopback_in_any_spelling_is_refused_without_a_connection() {
    use AddressKind as K;
    let (port, hits) = counting_listener().await;
    let lookup = table(&[
        ("rebind.attacker.test", &["127.0.0.1"]),
        ("mixed.attacker.test", &["93.184.216.34", "127.0.0.1"]),
        ("mapped.attacker.test", &["::ffff:127.0.0.1"]),
        ("localhost", &["127.0.0.1", "::1"]),
    ]);
    let guard = GuardedClient::with_resolver(FetchPolicy::new(), Duration::from_secs(5), lookup).unwrap();
    let cases: &[(&str, AddressKind)] = &[
        ("127.0.0.1", K::Loopback),
        ("127.1", K::Loopback),
        ("2130706433", K::Loopback),
        ("0x7f000001", K::Loopback),
        ("0177.0.0.1", K::Loopback),
        ("127.0.0.1.", K::Loopback),
        ("0.0.0.0", K::Unspecified),
        ("[::ffff:127.0.0.1]", K::Ipv4Mapped),
        ("[::ffff:7f00:1]", K::Ipv4Mapped),
        ("[::127.0.0.1]", K::Ipv4Compatible),
        ("[64:ff9b::7f00:1]", K::Loopback),
        ("[2002:7f00:1::]", K::Loopback),
        ("[::1]", K::Loopback),
        ("localhost", K::Loopback),
        ("rebind.attacker.test", K::Loopback),
        ("mixed.attacker.test", K::Loopback),
        ("mapped.attacker.test", K::Ipv4Mapped),
    ];
    for (host, want) in cases {
        for scheme in ["http", "https"] {
            let url = Url::parse(&format!("{scheme}://{host}:{port}/client.json")).unwrap();
            let got = refused_kind(guard.get_limited(&url, "application/json", 1024).await);
            assert_eq!(got, *want, "{url}");
        }
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused fetch reached the listener"
    );
}

#[tokio::test]
async fn every_redirect_hop_is_checked() {
    let (port, hits) = counting_listener().await;
    // An allowed first hop (private addresses opted in) that redirects to a form the
    // opt-out never allows.
    let first = redirector(format!("http://[::ffff:127.0.0.1]:{port}/")).await;
    let open = FetchPolicy::new().dangerously_allow_private(true);
    let guard = GuardedClient::with_resolver(open, Duration::from_secs(5), table(&[])).unwrap();
    let url = Url::parse(&format!("http://127.0.0.1:{first}/")).unwrap();
    let r = guard
        .client_for(&url, true)
        .unwrap()
        .get(url.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        FetchRefused::find(&r).map(|f| f.refusal.clone()),
        Some(Refusal::Address {
            address: "::ffff:127.0.0.1".parse().unwrap(),
            kind: AddressKind::Ipv4Mapped
        })
    );

    // A trusted origin serves, but its redirects may not leave the trusted origins.
    let trusted = redirector(format!("http://127.0.0.1:{port}/")).await;
    let trusted_url = Url::parse(&format!("http://127.0.0.1:{trusted}/")).unwrap();
    let ok = redirector(String::new()).await;
    let ok_url = Url::parse(&format!("http://127.0.0.1:{ok}/")).unwrap();
    let policy = FetchPolicy::new()
        .trust_origin(&trusted_url)
        .trust_origin(&ok_url);
    let guard = GuardedClient::with_resolver(policy, Duration::from_secs(5), table(&[])).unwrap();
    let (status, body) = guard.get_limited(&ok_url, "*/*", 100).await.unwrap();
    assert_eq!((status.as_u16(), body.as_slice()), (200, &b"ok"[..]));
    let r = guard
        .client_for(&trusted_url, true)
        .unwrap()
        .get(trusted_url.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        FetchRefused::find(&r).map(|f| f.refusal.clone()),
        Some(Refusal::RedirectLeavesTrustedOrigin)
    );
    // Another port on the trusted host is not trusted.
    let other = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    assert!(guard.client_for(&other, false).is_err());
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused hop reached the listener"
    );
}

#[test]
fn refusals_name_the_host_and_the_kind() {
    let p = FetchPolicy::new();
    let e = p
        .check_url(&Url::parse("https://[::ffff:7f00:1]:9/x").unwrap())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "refused to fetch from [::ffff:7f00:1]: it is an IPv4-mapped IPv6 address"
    );
    let e = p
        .check_address("internal.example", "10.0.0.7".parse().unwrap())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "refused to fetch from internal.example: it resolves to 10.0.0.7, a private-network address"
    );
    assert_eq!(
        e.public_message(),
        "refused to fetch from internal.example: it is, or resolves to, a private-network address"
    );
    let e = p
        .check_url(&Url::parse("file:///etc/passwd").unwrap())
        .unwrap_err();
    assert_eq!(e.refusal, Refusal::Scheme("file".into()));
    let e = FetchPolicy::new()
        .allow_http(false)
        .check_url(&Url::parse("http://example.com/").unwrap())
        .unwrap_err();
    assert_eq!(e.refusal, Refusal::Scheme("http".into()));
}
