//! Reading a server's catalogue, bounded and checked, and keeping it fresh.
//!
//! A catalogue is read page by page with a timeout per request and a bound on the
//! number of pages; a list result that does not parse, a tool name given twice or a
//! list without end is refused as a whole ([`UpstreamError::Catalogue`]), never
//! partly used. After each read the next one is due at the smaller of the server's
//! `ttlMs` (when every list gave a positive one) and the configured re-list interval.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rmcp::model::{
    ClientRequest, ListPromptsRequest, ListResourceTemplatesRequest, ListResourcesRequest, ListToolsRequest,
    PaginatedRequestParams, ServerResult,
};
use rmcp::service::{Peer, PeerRequestOptions, RoleClient, ServiceError};
use serde::de::DeserializeOwned;

use super::{Catalog, UpstreamError};

/// Default interval of the periodic re-list (`gateway.catalogue_refresh_secs`): five
/// minutes.
pub const DEFAULT_CATALOGUE_REFRESH: Duration = Duration::from_mins(5);

/// Shortest wait between two scheduled re-reads, whatever `ttlMs` a server gives.
pub const MIN_CATALOGUE_REFRESH: Duration = Duration::from_secs(1);

/// Most pages one list may have; a server that names a next page beyond it is refused.
pub const MAX_LIST_PAGES: usize = 100;

/// One list page as the gateway uses it.
struct Page<T> {
    items: Vec<T>,
    next: Option<String>,
    ttl_ms: Option<u64>,
}

/// What every list result type gives the reader.
trait ListResult: DeserializeOwned {
    type Item;
    const METHOD: &'static str;
    fn request(params: PaginatedRequestParams) -> ClientRequest;
    /// The page, or why the result is not one.
    fn take(result: ServerResult) -> Result<Page<Self::Item>, String>;
    fn into_page(self) -> Page<Self::Item>;
}

macro_rules! list_result {
    ($result:ident, $request:ident, $item:ty, $field:ident, $method:literal) => {
        impl ListResult for rmcp::model::$result {
            type Item = $item;
            const METHOD: &'static str = $method;
            fn request(params: PaginatedRequestParams) -> ClientRequest {
                ClientRequest::$request($request::with_param(params))
            }
            fn take(result: ServerResult) -> Result<Page<$item>, String> {
                match result {
                    ServerResult::$result(r) => Ok(r.into_page()),
                    other => Err(why_not::<Self>(&other)),
                }
            }
            fn into_page(self) -> Page<$item> {
                Page {
                    items: self.$field,
                    next: self.next_cursor,
                    ttl_ms: self.ttl_ms,
                }
            }
        }
    };
}

list_result!(
    ListToolsResult,
    ListToolsRequest,
    rmcp::model::Tool,
    tools,
    "tools/list"
);
list_result!(
    ListPromptsResult,
    ListPromptsRequest,
    rmcp::model::Prompt,
    prompts,
    "prompts/list"
);
list_result!(
    ListResourcesResult,
    ListResourcesRequest,
    rmcp::model::Resource,
    resources,
    "resources/list"
);
list_result!(
    ListResourceTemplatesResult,
    ListResourceTemplatesRequest,
    rmcp::model::ResourceTemplate,
    resource_templates,
    "resources/templates/list"
);

/// Why `other` is not an `R`: the parse error of the expected type.
fn why_not<R: DeserializeOwned>(other: &ServerResult) -> String {
    serde_json::to_value(other)
        .ok()
        .and_then(|v| serde_json::from_value::<R>(v).err())
        .map_or_else(|| "not a list result".to_owned(), |e| e.to_string())
}

/// Reads one whole list, page by page.
async fn read_list<R: ListResult>(
    peer: &Peer<RoleClient>,
    timeout: Duration,
    ttl: &mut Ttl,
) -> Result<Vec<R::Item>, ListFailure> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut seen = HashSet::new();
    for _ in 0..MAX_LIST_PAGES {
        let params = PaginatedRequestParams::default().with_cursor(cursor.clone());
        let mut options = PeerRequestOptions::no_options();
        options.timeout = Some(timeout);
        let answer = match peer.send_request_with_option(R::request(params), options).await {
            Ok(handle) => handle.await_response().await,
            Err(e) => Err(e),
        };
        let result = match answer {
            Ok(r) => r,
            Err(ServiceError::Timeout { .. }) => {
                return Err(ListFailure::Refused(format!(
                    "{}: no answer within {}",
                    R::METHOD,
                    seconds(timeout)
                )));
            }
            Err(ServiceError::McpError(e)) => return Err(ListFailure::Rpc(R::METHOD, e)),
            Err(e) => return Err(ListFailure::Transport(e)),
        };
        let page = R::take(result)
            .map_err(|why| ListFailure::Refused(format!("{}: the result is malformed ({why})", R::METHOD)))?;
        ttl.add(page.ttl_ms);
        items.extend(page.items);
        match page.next {
            None => return Ok(items),
            Some(next) => {
                if !seen.insert(next.clone()) {
                    return Err(ListFailure::Refused(format!(
                        "{}: the pages loop (cursor {next:?} came twice)",
                        R::METHOD
                    )));
                }
                cursor = Some(next);
            }
        }
    }
    Err(ListFailure::Refused(format!(
        "{}: still more pages after {MAX_LIST_PAGES} pages",
        R::METHOD
    )))
}

enum ListFailure {
    /// The list is unusable (malformed, endless, too slow): a [`UpstreamError::Catalogue`].
    Refused(String),
    /// The server answered the request (this method) with a JSON-RPC error.
    Rpc(&'static str, rmcp::ErrorData),
    /// The connection failed.
    Transport(ServiceError),
}

/// The smallest positive `ttlMs` seen; any absent or zero one makes the whole
/// catalogue "no freshness promised".
#[derive(Default)]
struct Ttl {
    min: Option<u64>,
    unpromised: bool,
}

impl Ttl {
    fn add(&mut self, ttl_ms: Option<u64>) {
        match ttl_ms {
            Some(t) if t > 0 => self.min = Some(self.min.map_or(t, |m| m.min(t))),
            _ => self.unpromised = true,
        }
    }

    fn fresh_for(&self) -> Option<Duration> {
        (!self.unpromised)
            .then_some(self.min)
            .flatten()
            .map(Duration::from_millis)
    }
}

fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Reads the catalogue of `server` over `peer`: tools (always; a server that
/// advertises nothing is asked too), prompts and resources when advertised. Each
/// request waits at most `timeout`.
///
/// # Errors
/// [`UpstreamError::Catalogue`] for a list that cannot be used (one the server answered
/// with a JSON-RPC error included); the transport's error mapped by `map` when the
/// request itself failed.
pub(crate) async fn read_catalog(
    server: &str,
    peer: &Peer<RoleClient>,
    timeout: Duration,
    map: impl Fn(ServiceError) -> UpstreamError,
) -> Result<Catalog, UpstreamError> {
    let info = peer.peer_info().map(|i| (*i).clone());
    let caps = info.as_ref().map(|i| i.capabilities.clone()).unwrap_or_default();
    let mut catalog = Catalog {
        server_info: info,
        ..Catalog::default()
    };
    let mut ttl = Ttl::default();
    let refused = |reason: String| UpstreamError::Catalogue {
        server: server.to_owned(),
        reason,
    };
    let fail = |f: ListFailure| match f {
        ListFailure::Refused(r) => refused(r),
        // A server that cannot list what it offers offers nothing usable.
        ListFailure::Rpc(method, e) => {
            refused(format!("{method} answered error {}: {}", e.code.0, e.message))
        }
        ListFailure::Transport(e) => map(e),
    };
    // A server that advertises nothing is asked for tools too; if it refuses, it has none.
    let advertised = caps.tools.is_some();
    if advertised || (caps.prompts.is_none() && caps.resources.is_none()) {
        catalog.tools = match read_list::<rmcp::model::ListToolsResult>(peer, timeout, &mut ttl).await {
            Ok(t) => t,
            Err(ListFailure::Rpc(..)) if !advertised => Vec::new(),
            Err(f) => return Err(fail(f)),
        };
        let mut names = HashSet::new();
        if let Some(dup) = catalog.tools.iter().find(|t| !names.insert(t.name.as_ref())) {
            return Err(refused(format!("tools/list names tool {:?} twice", dup.name)));
        }
    }
    if caps.prompts.is_some() {
        catalog.prompts = read_list::<rmcp::model::ListPromptsResult>(peer, timeout, &mut ttl)
            .await
            .map_err(fail)?;
    }
    if caps.resources.is_some() {
        catalog.resources = read_list::<rmcp::model::ListResourcesResult>(peer, timeout, &mut ttl)
            .await
            .map_err(fail)?;
        // Templates are optional: a server that does not know the method has none.
        catalog.resource_templates =
            match read_list::<rmcp::model::ListResourceTemplatesResult>(peer, timeout, &mut ttl).await {
                Ok(t) => t,
                Err(ListFailure::Rpc(..)) => Vec::new(),
                Err(f) => return Err(fail(f)),
            };
    }
    catalog.read_at = Some(Instant::now());
    catalog.fresh_for = ttl.fresh_for();
    Ok(catalog)
}

/// When the catalogue read at `read_at` is next due: after `fresh_for` (the server's
/// `ttlMs`, at least [`MIN_CATALOGUE_REFRESH`]) or `interval`, whichever is sooner.
pub(crate) fn next_read(catalog: &Catalog, interval: Duration) -> Option<Instant> {
    let period = catalog
        .fresh_for
        .map_or(interval, |t| t.max(MIN_CATALOGUE_REFRESH).min(interval));
    catalog.read_at.map(|at| at + period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_is_the_smallest_positive_ttl_and_nothing_when_one_is_missing() {
        let mut t = Ttl::default();
        t.add(Some(5000));
        t.add(Some(2000));
        assert_eq!(t.fresh_for(), Some(Duration::from_secs(2)));
        t.add(Some(0));
        assert_eq!(t.fresh_for(), None, "ttlMs 0 promises nothing");
        let mut t = Ttl::default();
        t.add(None);
        t.add(Some(1000));
        assert_eq!(t.fresh_for(), None, "an absent ttlMs promises nothing");
    }

    #[test]
    fn the_next_read_is_bounded_by_the_interval_and_a_floor() {
        let now = Instant::now();
        let mut c = Catalog {
            read_at: Some(now),
            ..Catalog::default()
        };
        let interval = Duration::from_mins(5);
        assert_eq!(next_read(&c, interval), Some(now + interval));
        c.fresh_for = Some(Duration::from_secs(30));
        assert_eq!(next_read(&c, interval), Some(now + Duration::from_secs(30)));
        c.fresh_for = Some(Duration::from_hours(1));
        assert_eq!(next_read(&c, interval), Some(now + interval));
        c.fresh_for = Some(Duration::from_millis(1));
        assert_eq!(next_read(&c, interval), Some(now + MIN_CATALOGUE_REFRESH));
    }
}
