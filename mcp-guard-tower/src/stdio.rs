//! The stdio front door with precise errors for bad input.
//!
//! rmcp drops a line that is not JSON without a word and accepts lines up to 16 MiB.
//! [`guarded_stdio`] sits between the process's stdin/stdout and rmcp: a line that is
//! not JSON gets `-32700 Parse error`, a line over the size limit gets `-32600` (and is
//! skipped without being held in memory), and everything else passes through
//! unchanged. Answers and rmcp's own output are written whole lines at a time, so they
//! never interleave.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Default largest accepted line, in bytes.
pub const DEFAULT_MAX_LINE: usize = 4 * 1024 * 1024;

fn error_line(code: i32, message: &str) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}
    }))
    .unwrap_or_default();
    v.push(b'\n');
    v
}

/// Wraps `input`/`output` (normally stdin/stdout); returns the pair to give rmcp.
pub fn guarded<R, W>(
    input: R,
    output: W,
    max_line: usize,
) -> (tokio::io::DuplexStream, tokio::io::DuplexStream)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (to_rmcp, rmcp_reads) = tokio::io::duplex(64 * 1024);
    let (rmcp_writes, from_rmcp) = tokio::io::duplex(64 * 1024);
    let (errors_tx, errors_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(read_side(input, to_rmcp, errors_tx, max_line));
    tokio::spawn(write_side(from_rmcp, errors_rx, output));
    (rmcp_reads, rmcp_writes)
}

/// [`guarded`] over the process's stdin and stdout, with [`DEFAULT_MAX_LINE`].
pub fn guarded_stdio() -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
    guarded(tokio::io::stdin(), tokio::io::stdout(), DEFAULT_MAX_LINE)
}

async fn read_side<R: AsyncRead + Unpin>(
    input: R,
    mut to_rmcp: tokio::io::DuplexStream,
    errors: mpsc::UnboundedSender<Vec<u8>>,
    max_line: usize,
) {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Read at most max_line + 1 bytes of this line.
        let limit = u64::try_from(max_line).unwrap_or(u64::MAX).saturating_add(1);
        let Ok(n) = (&mut reader).take(limit).read_until(b'\n', &mut line).await else {
            return;
        };
        if n == 0 {
            return;
        }
        if !line.ends_with(b"\n") && line.len() > max_line {
            // Oversized: skip the rest of the line without keeping it.
            loop {
                let buf = match reader.fill_buf().await {
                    Ok(b) if !b.is_empty() => b,
                    _ => return,
                };
                if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    reader.consume(i + 1);
                    break;
                }
                let len = buf.len();
                reader.consume(len);
            }
            let _ = errors.send(error_line(
                -32600,
                &format!("message larger than {max_line} bytes"),
            ));
            continue;
        }
        let body = line.trim_ascii();
        if body.is_empty() {
            continue;
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            let _ = errors.send(error_line(-32700, "Parse error"));
            continue;
        }
        if to_rmcp.write_all(body).await.is_err() || to_rmcp.write_all(b"\n").await.is_err() {
            return;
        }
    }
}

async fn write_side<W: AsyncWrite + Unpin>(
    from_rmcp: tokio::io::DuplexStream,
    mut errors: mpsc::UnboundedReceiver<Vec<u8>>,
    mut output: W,
) {
    let mut lines = BufReader::new(from_rmcp);
    let mut line = Vec::new();
    let mut errors_open = true;
    loop {
        tokio::select! {
            n = lines.read_until(b'\n', &mut line) => {
                match n {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                            return;
                        }
                        line.clear();
                    }
                }
            }
            e = errors.recv(), if errors_open => match e {
                Some(bytes) => {
                    if output.write_all(&bytes).await.is_err() || output.flush().await.is_err() {
                        return;
                    }
                }
                None => errors_open = false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_garbage_and_oversized_lines_and_passes_the_rest() {
        let (mut client_in, gw_in) = tokio::io::duplex(1 << 20);
        let (gw_out, client_out) = tokio::io::duplex(1 << 20);
        let (mut rmcp_reads, mut rmcp_writes) = guarded(gw_in, gw_out, 64);
        client_in.write_all(b"{not json\n").await.unwrap();
        client_in.write_all(&[b'x'; 200]).await.unwrap();
        client_in
            .write_all(b"\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n")
            .await
            .unwrap();
        let mut got = vec![0u8; 40];
        rmcp_reads.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}");
        rmcp_writes
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(client_out).lines();
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(lines.next_line().await.unwrap().unwrap());
        }
        assert!(seen.iter().any(|l| l.contains("-32700")), "{seen:?}");
        assert!(
            seen.iter()
                .any(|l| l.contains("-32600") && l.contains("larger than 64 bytes")),
            "{seen:?}"
        );
        assert!(seen.iter().any(|l| l.contains("\"result\":{}")), "{seen:?}");
    }
}
