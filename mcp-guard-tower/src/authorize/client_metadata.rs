//! Fetching a Client ID Metadata Document: the URL is the client's `client_id`, named
//! by whoever sent `GET /oauth/authorize`, before anyone signed in, so the fetch goes
//! through [`mcp_guard_core::fetch`]'s guard (every resolved address checked, the
//! checked addresses connected to, IP literals checked, no redirects, no proxy).

use std::sync::Arc;
use std::time::Duration;

use mcp_guard_core::fetch::{FetchError, FetchPolicy, GuardedClient, SystemResolver};
use reqwest::dns::Resolve;

/// The largest document accepted.
const MAX_DOCUMENT: usize = 16 * 1024;
/// How long one fetch may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The client that fetches documents: https on public addresses only, unless
/// `dangerously_allow_private` (then plain http, loopback, private, CGNAT and
/// unique-local addresses too; never link-local or cloud metadata).
pub(super) fn client(
    dangerously_allow_private: bool,
    lookup: Option<Arc<dyn Resolve>>,
) -> Option<GuardedClient> {
    let policy = FetchPolicy::new()
        .allow_http(dangerously_allow_private)
        .dangerously_allow_private(dangerously_allow_private);
    let lookup = lookup.unwrap_or_else(|| Arc::new(SystemResolver::default()));
    match GuardedClient::with_resolver(policy, TIMEOUT, lookup) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the client metadata HTTP client");
            None
        }
    }
}

/// Fetches the document at `client_id` and checks that it states that very URL as its
/// `client_id`. Errors are fit for the caller (no resolved address in them).
pub(super) async fn fetch(
    client: Option<&GuardedClient>,
    client_id: &str,
) -> Result<serde_json::Value, String> {
    const RULE: &str = "a client metadata document must be an https URL with a path on a public host";
    let client = client.ok_or("client metadata documents cannot be fetched here")?;
    let url = url::Url::parse(client_id).map_err(|_| "client_id is not a valid URL")?;
    if url.path() == "/" || url.path().is_empty() {
        return Err(format!("{RULE} (this one has no path)"));
    }
    let (status, body) = match client.get_limited(&url, "application/json", MAX_DOCUMENT).await {
        Ok(r) => r,
        Err(FetchError::Refused(r)) => {
            tracing::warn!(client_id, "client metadata document refused: {r}");
            return Err(format!("{RULE} ({})", r.public_message()));
        }
        Err(FetchError::TooLarge(_)) => {
            return Err("the client metadata document is larger than 16 KiB".into());
        }
        Err(e) => {
            tracing::info!(client_id, error = %e, "client metadata document not fetched");
            return Err("the client metadata document could not be fetched".into());
        }
    };
    if !status.is_success() {
        return Err(format!("the client metadata document answered {status}"));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| "the client metadata document is not JSON")?;
    if doc.get("client_id").and_then(|v| v.as_str()) != Some(client_id) {
        return Err("the client metadata document's client_id is not its own URL".into());
    }
    Ok(doc)
}

#[cfg(test)]
mod tests;
