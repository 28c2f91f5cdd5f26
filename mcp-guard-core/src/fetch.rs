//! Fetching URLs that someone other than the operator named, without letting them
//! point the gateway at its own network (server-side request forgery).
//!
//! Some URLs the gateway fetches come from a third party: a client's `client_id` that
//! is a Client ID Metadata Document URL, an upstream's `WWW-Authenticate`
//! `resource_metadata`, the authorization servers its protected-resource metadata
//! names, the endpoints an authorization server's metadata names, and every redirect.
//! A [`GuardedClient`] fetches those:
//!
//! * every name is resolved by the client's own resolver, every resolved address is
//!   checked ([`classify`]), and the connection goes to the addresses that were checked
//!   (reqwest connects to what the resolver returned: there is no second lookup);
//! * a host written as an IP literal (which reqwest never resolves) is checked before
//!   the request and on every redirect hop;
//! * a name with *any* refused address is refused as a whole (a mixed answer is the
//!   shape of a DNS-rebinding attempt);
//! * proxies from the environment are not used, since a proxy would resolve the name
//!   itself, out of the guard's sight.
//!
//! Refused: loopback, private (RFC 1918), shared address space (CGNAT, RFC 6598),
//! link-local and cloud instance metadata, unique-local and site-local IPv6,
//! unspecified, multicast, broadcast, documentation, benchmarking and reserved
//! ranges, IPv4-mapped and IPv4-compatible IPv6 (a public server has no reason to
//! publish one), Teredo, and IPv6 outside global unicast (`2000::/3`). NAT64
//! (`64:ff9b::/96`) and 6to4 (`2002::/16`) addresses are judged by the IPv4 address
//! they embed.
//!
//! What stays reachable: origins the operator named ([`FetchPolicy::trust_origin`]:
//! e.g. an upstream's configured URL), fetched by a separate client whose redirects
//! may not leave the trusted origins; and, with
//! [`FetchPolicy::dangerously_allow_private`], loopback, private, CGNAT and
//! unique-local addresses (never link-local, cloud metadata or the odd ranges).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use ipnet::{Ipv4Net, Ipv6Net};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is not fetched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressKind {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// Shared address space (carrier-grade NAT), `100.64.0.0/10`.
    SharedCgnat,
    /// Link-local, `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// A cloud provider's instance metadata service (`169.254.169.254`,
    /// `169.254.170.2`, `fd00:ec2::254`).
    CloudMetadata,
    /// Unique-local IPv6, `fc00::/7`.
    UniqueLocal,
    /// Deprecated site-local IPv6, `fec0::/10`.
    SiteLocal,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// Multicast.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Documentation ranges (`192.0.2/24`, `198.51.100/24`, `203.0.113/24`,
    /// `2001:db8::/32`).
    Documentation,
    /// Benchmarking, `198.18/15`.
    Benchmarking,
    /// An IPv4-mapped IPv6 address, `::ffff:0:0/96`.
    Ipv4Mapped,
    /// An IPv4-compatible IPv6 address, `::/96` (deprecated).
    Ipv4Compatible,
    /// Teredo, `2001::/32`.
    Teredo,
    /// Local-use NAT64, `64:ff9b:1::/48`.
    LocalNat64,
    /// Any other special-purpose or unallocated range.
    Reserved,
}

impl AddressKind {
    /// The kind in words, for errors ("a loopback address").
    pub fn describe(self) -> &'static str {
        match self {
            Self::Loopback => "a loopback address",
            Self::Private => "a private-network address",
            Self::SharedCgnat => "a shared (carrier-grade NAT) address",
            Self::LinkLocal => "a link-local address",
            Self::CloudMetadata => "a cloud instance metadata address",
            Self::UniqueLocal => "a unique-local IPv6 address",
            Self::SiteLocal => "a site-local IPv6 address",
            Self::Unspecified => "an unspecified address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Documentation => "a documentation address",
            Self::Benchmarking => "a benchmarking address",
            Self::Ipv4Mapped => "an IPv4-mapped IPv6 address",
            Self::Ipv4Compatible => "an IPv4-compatible IPv6 address",
            Self::Teredo => "a Teredo address",
            Self::LocalNat64 => "a local-use NAT64 address",
            Self::Reserved => "a reserved address",
        }
    }

    /// Whether [`FetchPolicy::dangerously_allow_private`] lets this kind through:
    /// loopback, private, shared (CGNAT) and unique-local.
    pub fn is_internal_network(self) -> bool {
        matches!(
            self,
            Self::Loopback | Self::Private | Self::SharedCgnat | Self::UniqueLocal
        )
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]), len)
}

/// IPv4 ranges, most specific first (IANA IPv4 special-purpose address registry).
const V4: &[(Ipv4Net, AddressKind)] = &[
    (v4(169, 254, 169, 254, 32), AddressKind::CloudMetadata),
    (v4(169, 254, 170, 2, 32), AddressKind::CloudMetadata),
    (v4(100, 100, 100, 200, 32), AddressKind::CloudMetadata),
    (v4(255, 255, 255, 255, 32), AddressKind::Broadcast),
    (v4(0, 0, 0, 0, 8), AddressKind::Unspecified),
    (v4(10, 0, 0, 0, 8), AddressKind::Private),
    (v4(100, 64, 0, 0, 10), AddressKind::SharedCgnat),
    (v4(127, 0, 0, 0, 8), AddressKind::Loopback),
    (v4(169, 254, 0, 0, 16), AddressKind::LinkLocal),
    (v4(172, 16, 0, 0, 12), AddressKind::Private),
    (v4(192, 0, 0, 0, 24), AddressKind::Reserved),
    (v4(192, 0, 2, 0, 24), AddressKind::Documentation),
    (v4(192, 88, 99, 0, 24), AddressKind::Reserved),
    (v4(192, 168, 0, 0, 16), AddressKind::Private),
    (v4(198, 18, 0, 0, 15), AddressKind::Benchmarking),
    (v4(198, 51, 100, 0, 24), AddressKind::Documentation),
    (v4(203, 0, 113, 0, 24), AddressKind::Documentation),
    (v4(224, 0, 0, 0, 4), AddressKind::Multicast),
    (v4(240, 0, 0, 0, 4), AddressKind::Reserved),
];

/// IPv6 ranges that are refused outright, most specific first (IANA IPv6
/// special-purpose address registry). NAT64 and 6to4 are handled before this table.
const V6: &[(Ipv6Net, AddressKind)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), AddressKind::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), AddressKind::Loopback),
    (v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), AddressKind::Ipv4Mapped),
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 96), AddressKind::Ipv4Compatible),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), AddressKind::LocalNat64),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), AddressKind::Teredo),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        AddressKind::Documentation,
    ),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), AddressKind::Reserved),
    (
        v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        AddressKind::CloudMetadata,
    ),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), AddressKind::UniqueLocal),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), AddressKind::LinkLocal),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), AddressKind::SiteLocal),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), AddressKind::Multicast),
];

const NAT64: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const SIX_TO_FOUR: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);
const GLOBAL_UNICAST: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

/// What kind of non-public address `ip` is, or `None` for a public one.
///
/// IPv4-mapped and IPv4-compatible IPv6 addresses are refused as such, whatever they
/// embed; NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) are judged by the IPv4 address
/// they carry, since DNS64 legitimately answers with NAT64 addresses on IPv6-only
/// networks.
pub fn classify(ip: IpAddr) -> Option<AddressKind> {
    match ip {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => {
            let s = a.segments();
            if NAT64.contains(&a) {
                return classify_v4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
            }
            if SIX_TO_FOUR.contains(&a) {
                return classify_v4(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
            }
            if let Some((_, kind)) = V6.iter().find(|(net, _)| net.contains(&a)) {
                return Some(*kind);
            }
            (!GLOBAL_UNICAST.contains(&a)).then_some(AddressKind::Reserved)
        }
    }
}

fn classify_v4(a: Ipv4Addr) -> Option<AddressKind> {
    V4.iter().find(|(net, _)| net.contains(&a)).map(|(_, k)| *k)
}

/// Why a URL was not fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The URL's scheme is not allowed (only `https`, or `http` too where allowed).
    Scheme(String),
    /// The host is, or resolves to, an address of a refused kind.
    Address {
        /// The address.
        address: IpAddr,
        /// Its kind.
        kind: AddressKind,
    },
    /// The URL has no host.
    NoHost,
    /// A redirect from a trusted origin leads to another origin.
    RedirectLeavesTrustedOrigin,
}

/// A fetch the guard refused, naming the host and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused to fetch from {host}: {}", self.reason())]
#[non_exhaustive]
pub struct FetchRefused {
    /// The host as the URL wrote it.
    pub host: String,
    /// Why.
    pub refusal: Refusal,
}

impl FetchRefused {
    fn reason(&self) -> String {
        match &self.refusal {
            Refusal::Scheme(s) => format!("the scheme {s:?} is not allowed"),
            Refusal::Address { kind, .. } if self.is_literal() => format!("it is {}", kind.describe()),
            Refusal::Address { address, kind } => {
                format!("it resolves to {address}, {}", kind.describe())
            }
            Refusal::NoHost => "the URL has no host".to_owned(),
            Refusal::RedirectLeavesTrustedOrigin => {
                "a redirect from a configured origin may not lead to another origin".to_owned()
            }
        }
    }

    fn is_literal(&self) -> bool {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
    }

    /// The refusal without the resolved address, for answers to an unauthenticated
    /// caller (the address would tell them what the gateway's resolver knows).
    pub fn public_message(&self) -> String {
        match &self.refusal {
            Refusal::Address { kind, .. } => format!(
                "refused to fetch from {}: it is, or resolves to, {}",
                self.host,
                kind.describe()
            ),
            _ => self.to_string(),
        }
    }

    /// The first [`FetchRefused`] in `error`'s chain of sources (reqwest and rmcp wrap
    /// the resolver's error).
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut e = Some(error);
        while let Some(cur) = e {
            if let Some(r) = cur.downcast_ref::<Self>() {
                return Some(r);
            }
            e = cur.source();
        }
        None
    }
}

/// Which URLs a [`GuardedClient`] may fetch.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    trusted: Vec<url::Origin>,
    allow_internal: bool,
    allow_http: bool,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl FetchPolicy {
    /// Public addresses only, `http` and `https`, no trusted origin.
    pub fn new() -> Self {
        Self {
            trusted: Vec::new(),
            allow_internal: false,
            allow_http: true,
        }
    }

    /// Fetches from `url`'s origin (scheme, host, port) are not filtered: the operator
    /// named it (e.g. an upstream's configured URL). Redirects from a trusted origin
    /// may only lead to trusted origins.
    #[must_use]
    pub fn trust_origin(mut self, url: &Url) -> Self {
        let o = url.origin();
        if o.is_tuple() && !self.trusted.contains(&o) {
            self.trusted.push(o);
        }
        self
    }

    /// DANGEROUS: also fetch from loopback, private, shared (CGNAT) and unique-local
    /// addresses. For tests on loopback and deployments whose third-party URLs are
    /// internal by design; link-local, cloud metadata and the other ranges stay
    /// refused.
    #[must_use]
    pub fn dangerously_allow_private(mut self, yes: bool) -> Self {
        self.allow_internal = yes;
        self
    }

    /// Whether plain `http` is allowed for untrusted URLs (default yes).
    #[must_use]
    pub fn allow_http(mut self, yes: bool) -> Self {
        self.allow_http = yes;
        self
    }

    /// Whether `url`'s origin is one the operator named.
    pub fn is_trusted(&self, url: &Url) -> bool {
        let o = url.origin();
        o.is_tuple() && self.trusted.contains(&o)
    }

    /// Whether the policy lets the loopback/private kinds through.
    pub fn allows_private(&self) -> bool {
        self.allow_internal
    }

    /// Checks what can be checked without resolving: the scheme, and an IP-literal
    /// host. Names are checked by the client's resolver.
    ///
    /// # Errors
    /// The URL is refused.
    pub fn check_url(&self, url: &Url) -> Result<(), FetchRefused> {
        if self.is_trusted(url) {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let refuse = |refusal| FetchRefused {
            host: host.clone(),
            refusal,
        };
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(refuse(Refusal::Scheme(other.to_owned()))),
        }
        let ip = match url.host() {
            None => return Err(refuse(Refusal::NoHost)),
            Some(url::Host::Domain(_)) => return Ok(()),
            Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
            Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
        };
        self.check_address(&host, ip)
    }

    /// Checks one address `host` is, or resolves to.
    ///
    /// # Errors
    /// The address is of a refused kind.
    pub fn check_address(&self, host: &str, address: IpAddr) -> Result<(), FetchRefused> {
        match classify(address) {
            None => Ok(()),
            Some(kind) if self.allow_internal && kind.is_internal_network() => Ok(()),
            Some(kind) => Err(FetchRefused {
                host: host.to_owned(),
                refusal: Refusal::Address { address, kind },
            }),
        }
    }
}

/// Resolves names with the operating system's resolver (`getaddrinfo`).
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A resolver that refuses a name unless every address it resolves to is allowed.
struct Checking {
    lookup: Arc<dyn Resolve>,
    policy: Arc<FetchPolicy>,
}

impl Resolve for Checking {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.lookup.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = lookup.resolve(name).await?.collect();
            for a in &addrs {
                if let Err(refused) = policy.check_address(&host, a.ip()) {
                    tracing::warn!(host, address = %a.ip(), "refused a fetch: {refused}");
                    return Err(Box::new(refused) as crate::BoxError);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Like the client's own, with no lookup of its own: hands the name to `lookup`.
struct Plain(Arc<dyn Resolve>);

impl Resolve for Plain {
    fn resolve(&self, name: Name) -> Resolving {
        self.0.resolve(name)
    }
}

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// HTTP clients that fetch only what a [`FetchPolicy`] allows. Cheap to clone.
#[derive(Clone)]
pub struct GuardedClient {
    policy: Arc<FetchPolicy>,
    /// Untrusted URLs: checked resolver; no redirects / checked redirects.
    guarded: reqwest::Client,
    guarded_follow: reqwest::Client,
    /// Trusted origins: unfiltered resolver; no redirects / redirects within them.
    trusted: reqwest::Client,
    trusted_follow: reqwest::Client,
    lookup: Arc<dyn Resolve>,
    max_body: usize,
}

impl fmt::Debug for GuardedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl GuardedClient {
    /// Clients for `policy` with the system resolver, each request limited to
    /// `timeout`.
    ///
    /// # Errors
    /// A client could not be built (TLS setup).
    pub fn new(policy: FetchPolicy, timeout: Duration) -> Result<Self, reqwest::Error> {
        Self::with_resolver(policy, timeout, Arc::new(SystemResolver::default()))
    }

    /// Like [`Self::new`], resolving names with `lookup` (tests inject their own).
    ///
    /// # Errors
    /// A client could not be built (TLS setup).
    pub fn with_resolver(
        policy: FetchPolicy,
        timeout: Duration,
        lookup: Arc<dyn Resolve>,
    ) -> Result<Self, reqwest::Error> {
        crate::upstream::ensure_crypto_provider();
        let policy = Arc::new(policy);
        let build = |resolver: Arc<dyn Resolve>, redirect: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .redirect(redirect)
                .dns_resolver(resolver)
                .build()
        };
        let checking: Arc<dyn Resolve> = Arc::new(Checking {
            lookup: lookup.clone(),
            policy: policy.clone(),
        });
        let plain: Arc<dyn Resolve> = Arc::new(Plain(lookup.clone()));
        let p = policy.clone();
        let checked_hops = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match p.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => {
                    tracing::warn!("refused a redirect: {refused}");
                    attempt.error(refused)
                }
            }
        });
        let p = policy.clone();
        let trusted_hops = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            if p.is_trusted(attempt.url()) {
                return attempt.follow();
            }
            let refused = FetchRefused {
                host: attempt.url().host_str().unwrap_or_default().to_owned(),
                refusal: Refusal::RedirectLeavesTrustedOrigin,
            };
            tracing::warn!("refused a redirect: {refused}");
            attempt.error(refused)
        });
        Ok(Self {
            guarded: build(checking.clone(), reqwest::redirect::Policy::none())?,
            guarded_follow: build(checking, checked_hops)?,
            trusted: build(plain.clone(), reqwest::redirect::Policy::none())?,
            trusted_follow: build(plain, trusted_hops)?,
            policy,
            lookup,
            max_body: 1024 * 1024,
        })
    }

    /// The policy.
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// The client to fetch `url` with (checked first), following redirects (each hop
    /// checked) or not.
    ///
    /// # Errors
    /// The URL is refused.
    pub fn client_for(&self, url: &Url, follow_redirects: bool) -> Result<&reqwest::Client, FetchRefused> {
        self.policy.check_url(url)?;
        Ok(match (self.policy.is_trusted(url), follow_redirects) {
            (true, false) => &self.trusted,
            (true, true) => &self.trusted_follow,
            (false, false) => &self.guarded,
            (false, true) => &self.guarded_follow,
        })
    }

    /// Checks `url` ahead of a request made elsewhere (e.g. by rmcp): the scheme, an
    /// IP-literal host, or every address the name resolves to now. The request itself
    /// is checked again when it is made; this only gives an early, precise error.
    ///
    /// # Errors
    /// The URL is refused.
    pub async fn check(&self, url: &Url) -> Result<(), FetchRefused> {
        self.policy.check_url(url)?;
        if self.policy.is_trusted(url) {
            return Ok(());
        }
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        let Ok(name) = host.parse::<Name>() else {
            return Ok(());
        };
        let checking = Checking {
            lookup: self.lookup.clone(),
            policy: self.policy.clone(),
        };
        match checking.resolve(name).await {
            Err(e) => match FetchRefused::find(e.as_ref()) {
                Some(r) => Err(r.clone()),
                // A name that does not resolve fails when the request is made.
                None => Ok(()),
            },
            Ok(_) => Ok(()),
        }
    }

    /// GETs `url` without following redirects and reads at most `max` bytes of the
    /// body (a longer body is an error, not truncated).
    ///
    /// # Errors
    /// Refused, the request failed, or the body is longer than `max`.
    pub async fn get_limited(
        &self,
        url: &Url,
        accept: &str,
        max: usize,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), FetchError> {
        let resp = self
            .client_for(url, false)?
            .get(url.clone())
            .header(http::header::ACCEPT, accept)
            .send()
            .await
            .map_err(FetchError::from_reqwest)?;
        let status = resp.status();
        let body = read_limited(resp, max).await?;
        Ok((status, body))
    }
}

/// Reads a response body, failing once it passes `max` bytes.
async fn read_limited(resp: reqwest::Response, max: usize) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(FetchError::from_reqwest)?;
        if chunk.len() > max.saturating_sub(body.len()) {
            return Err(FetchError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why a guarded fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The guard refused the URL, an address it resolved to, or a redirect.
    #[error(transparent)]
    Refused(#[from] FetchRefused),
    /// The request failed (connection, TLS, timeout).
    #[error("the request failed: {0}")]
    Http(#[source] reqwest::Error),
    /// The body is longer than allowed.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
}

impl FetchError {
    /// A reqwest error, or the refusal it carries.
    fn from_reqwest(e: reqwest::Error) -> Self {
        match FetchRefused::find(&e) {
            Some(r) => Self::Refused(r.clone()),
            None => Self::Http(e.without_url()),
        }
    }
}

impl rmcp::transport::auth::OAuthHttpClient for GuardedClient {
    fn execute(
        &self,
        request: rmcp::transport::auth::OAuthHttpRequest,
    ) -> rmcp::transport::auth::OAuthHttpClientFuture<'_> {
        use rmcp::transport::auth::OAuthHttpRedirectPolicy;
        Box::pin(async move {
            let follow = request.redirect_policy == OAuthHttpRedirectPolicy::Follow;
            let timeout = request.timeout;
            let mut request = reqwest::Request::try_from(request.request)?;
            if let Some(t) = timeout {
                *request.timeout_mut() = Some(t);
            }
            let client = self.client_for(request.url(), follow)?;
            let response = client.execute(request).await.map_err(|e| -> crate::BoxError {
                match FetchRefused::find(&e) {
                    Some(r) => Box::new(r.clone()),
                    None => Box::new(e),
                }
            })?;
            let mut builder = http::Response::builder()
                .status(response.status())
                .version(response.version());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = read_limited(response, self.max_body).await?;
            Ok(builder.body(body)?)
        })
    }
}

#[cfg(test)]
mod tests;
