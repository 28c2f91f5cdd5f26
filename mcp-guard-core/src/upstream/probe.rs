//! The gateway's own `server/discover` probe, which decides the era of a connection
//! before rmcp's handshake runs.
//!
//! rmcp's `Auto` lifecycle gives the probe a fixed 10 s and then sends `initialize` on
//! the same connection. A stdio server that takes longer to start (`npx -y` fetching a
//! package) reads both requests at once, answers the probe with `-32601`, and rmcp
//! takes that answer for the answer to `initialize` ("uncorrelated error response").
//! Here the probe waits as long as the connection attempt may take (the caller bounds
//! it with the server's start timeout), so the answer to the probe is always read as
//! the answer to the probe.

use rmcp::RoleClient;
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, DiscoverRequest, DiscoverRequestParams, ErrorCode,
    InitializeRequestParams, JsonRpcMessage, NumberOrString, ProtocolVersion, RequestMetaObject,
    ServerResult,
};
use rmcp::service::ClientInitializeError;
use rmcp::transport::Transport;

/// The protocol era of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Era {
    /// `initialize` and a session (revisions up to 2025-11-25).
    Legacy,
    /// 2026-07-28: `server/discover` and self-contained requests.
    Modern,
}

/// The probe's request id: a string no rmcp request id can equal (rmcp numbers its
/// own requests from 0).
const PROBE_ID: &str = "mcp-guard-discover";

/// Sends `server/discover` offering 2026-07-28 and reads until the server answers it.
///
/// A result that lists 2026-07-28 means [`Era::Modern`]. Any other answer (an error
/// such as `-32601`, a result without 2026-07-28) means [`Era::Legacy`], except the
/// errors only a 2026-07-28 server sends (a missing client capability, a header
/// mismatch), which fail the connection as rmcp's own probe does. Requests and
/// notifications the server sends before it answers are not answered.
///
/// # Errors
/// The transport failed, or the server closed the connection before answering.
pub(crate) async fn discover<T>(
    client: &InitializeRequestParams,
    transport: &mut T,
) -> Result<Era, ClientInitializeError>
where
    T: Transport<RoleClient> + 'static,
{
    let meta = RequestMetaObject::with_client_context(
        ProtocolVersion::V_2026_07_28,
        client.client_info.clone(),
        client.capabilities.clone(),
    );
    let mut request = DiscoverRequest::new(DiscoverRequestParams {});
    request.extensions.insert(meta);
    let id = NumberOrString::String(PROBE_ID.into());
    transport
        .send(ClientJsonRpcMessage::request(
            ClientRequest::DiscoverRequest(request),
            id.clone(),
        ))
        .await
        .map_err(|e| ClientInitializeError::transport::<T>(e, "send the server/discover probe"))?;
    loop {
        let Some(message) = transport.receive().await else {
            return Err(ClientInitializeError::ConnectionClosed(
                "before answering server/discover".to_owned(),
            ));
        };
        match message {
            JsonRpcMessage::Response(r) if r.id == id => {
                return Ok(match r.result {
                    ServerResult::DiscoverResult(d)
                        if d.supported_versions.contains(&ProtocolVersion::V_2026_07_28) =>
                    {
                        Era::Modern
                    }
                    _ => Era::Legacy,
                });
            }
            JsonRpcMessage::Error(e) if e.id.as_ref().is_none_or(|i| *i == id) => {
                let code = e.error.code;
                if code == ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY || code == ErrorCode::HEADER_MISMATCH
                {
                    return Err(ClientInitializeError::JsonRpcError(e.error));
                }
                tracing::debug!(
                    code = code.0,
                    "server/discover refused; connecting with initialize"
                );
                return Ok(Era::Legacy);
            }
            other => {
                tracing::debug!(message = ?message_kind(&other), "ignored before the server/discover answer");
            }
        }
    }
}

fn message_kind(m: &rmcp::service::RxJsonRpcMessage<RoleClient>) -> &'static str {
    match m {
        JsonRpcMessage::Request(_) => "request",
        JsonRpcMessage::Notification(_) => "notification",
        JsonRpcMessage::Response(_) => "response to another id",
        JsonRpcMessage::Error(_) => "error for another id",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

    /// Runs the probe against a scripted server: it reads the probe, then writes
    /// `lines` (with `{id}` replaced by the probe's id) and closes.
    async fn probe_against(lines: &[&str]) -> (Result<Era, ClientInitializeError>, serde_json::Value) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (read, write) = tokio::io::split(client_io);
        let mut transport = rmcp::transport::async_rw::AsyncRwTransport::new_client(read, write);
        let lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        let server = tokio::spawn(async move {
            let (read, mut write) = tokio::io::split(server_io);
            let mut reader = tokio::io::BufReader::new(read).lines();
            let request = reader.next_line().await.unwrap().unwrap();
            let request: serde_json::Value = serde_json::from_str(&request).unwrap();
            // A server still starting answers late.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let id = request["id"].to_string();
            for l in lines {
                write.write_all(l.replace("{id}", &id).as_bytes()).await.unwrap();
                write.write_all(b"\n").await.unwrap();
            }
            write.shutdown().await.unwrap();
            request
        });
        let info = InitializeRequestParams::default();
        let era = discover(&info, &mut transport).await;
        (era, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_late_method_not_found_means_initialize() {
        let (era, request) = probe_against(&[
            r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"starting"}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":{id},"error":{"code":-32601,"message":"Method not found"}}"#,
        ])
        .await;
        assert_eq!(era.unwrap(), Era::Legacy);
        assert_eq!(request["method"], "server/discover");
        assert_eq!(request["id"], PROBE_ID);
        assert_eq!(
            request["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
    }

    #[tokio::test]
    async fn a_discover_result_with_2026_07_28_means_modern() {
        let (era, _) = probe_against(&[
            r#"{"jsonrpc":"2.0","id":{id},"result":{"resultType":"complete","supportedVersions":["2025-11-25","2026-07-28"],"capabilities":{},"ttlMs":0,"cacheScope":"private"}}"#,
        ])
        .await;
        assert_eq!(era.unwrap(), Era::Modern);
    }

    #[tokio::test]
    async fn a_discover_result_without_2026_07_28_means_initialize() {
        let (era, _) = probe_against(&[
            r#"{"jsonrpc":"2.0","id":{id},"result":{"resultType":"complete","supportedVersions":["2025-11-25"],"capabilities":{},"ttlMs":0,"cacheScope":"private"}}"#,
        ])
        .await;
        assert_eq!(era.unwrap(), Era::Legacy);
    }

    #[tokio::test]
    async fn a_modern_rejection_fails_and_a_silent_close_says_so() {
        let (era, _) = probe_against(&[
            r#"{"jsonrpc":"2.0","id":{id},"error":{"code":-32021,"message":"needs sampling"}}"#,
        ])
        .await;
        assert!(matches!(era, Err(ClientInitializeError::JsonRpcError(e)) if e.code.0 == -32021));
        let (era, _) = probe_against(&[]).await;
        let err = era.unwrap_err().to_string();
        assert!(err.contains("before answering server/discover"), "{err}");
    }
}
