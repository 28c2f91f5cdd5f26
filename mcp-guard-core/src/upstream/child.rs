//! The stdio upstream's transport: a child process in its own process group, its
//! stdout read through a [`LineGuard`] that bounds every message and refuses lines that
//! are not JSON-RPC, and a stop sequence that leaves no process behind.
//!
//! rmcp's own `TokioChildProcess` drops an oversized line silently (the request then
//! waits for its timeout) and ignores non-JSON lines; neither tells the caller. Here
//! both are a [`Fault`]: the connection ends at once, the requests in flight fail with
//! an error that says why, and the next call starts a fresh process.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use process_wrap::tokio::ChildWrapper;
use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::AsyncRwTransport;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout};

/// Why a connection was ended by the gateway rather than by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// One message (one line) was longer than the cap.
    TooLarge { limit: usize },
    /// A line on stdout did not start like a JSON-RPC message.
    Garbage,
}

/// Set once by the transport, read by whoever maps the requests that failed.
pub(crate) type FaultSlot = Arc<OnceLock<Fault>>;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Stdio upstream processes of this process that are running or not yet reaped.
pub fn live_processes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Counts one child in [`live_processes`] until dropped (after it was reaped).
struct Live;

impl Live {
    fn new() -> Self {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads a child's stdout for rmcp, checking each line as it streams by, without
/// buffering it: a line longer than `limit` bytes, or whose first non-blank byte is
/// not `{`, sets the fault and ends the stream (EOF) before the offending bytes are
/// passed on.
pub(crate) struct LineGuard<R> {
    inner: R,
    limit: usize,
    /// Bytes of the current line so far.
    line_len: usize,
    /// Still before the first significant byte of the current line.
    at_start: bool,
    fault: FaultSlot,
    ended: bool,
}

impl<R> LineGuard<R> {
    pub(crate) fn new(inner: R, limit: usize, fault: FaultSlot) -> Self {
        Self {
            inner,
            limit,
            line_len: 0,
            at_start: true,
            fault,
            ended: false,
        }
    }

    /// Checks `bytes` (just read); returns how many may be passed on, setting the fault
    /// if not all.
    fn check(&mut self, bytes: &[u8]) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            let rest = &bytes[i..];
            let (segment, newline) = match memchr::memchr(b'\n', rest) {
                Some(n) => (&rest[..n], true),
                None => (rest, false),
            };
            if self.at_start {
                // Blank bytes and a UTF-8 byte order mark may precede the message.
                if let Some(p) = segment
                    .iter()
                    .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | 0xEF | 0xBB | 0xBF))
                {
                    if segment[p] != b'{' {
                        let _ = self.fault.set(Fault::Garbage);
                        return i - self.line_len.min(i);
                    }
                    self.at_start = false;
                }
            }
            self.line_len += segment.len() + usize::from(newline);
            if self.line_len > self.limit {
                let _ = self.fault.set(Fault::TooLarge { limit: self.limit });
                return i;
            }
            i += segment.len() + usize::from(newline);
            if newline {
                self.line_len = 0;
                self.at_start = true;
            }
        }
        bytes.len()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LineGuard<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = buf.filled().len() - before;
                let ok = this.check(&buf.filled()[before..]);
                if ok < new {
                    this.ended = true;
                    buf.set_filled(before + ok);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// How a [`ChildTransport`] stops its process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StopTimes {
    /// After stdin is closed, how long the server may take to exit by itself.
    pub(crate) stdin_grace: Duration,
    /// After SIGTERM, how long before SIGKILL.
    pub(crate) term_grace: Duration,
}

impl Default for StopTimes {
    fn default() -> Self {
        Self {
            stdin_grace: Duration::from_secs(2),
            term_grace: Duration::from_secs(2),
        }
    }
}

/// A spawned child and its place in [`live_processes`].
struct Proc {
    child: Box<dyn ChildWrapper>,
    _live: Live,
}

impl Proc {
    /// SIGKILL to the whole group, then reap.
    async fn kill(mut self) {
        let _ = self.child.signal(libc::SIGKILL);
        let _ = self.child.wait().await;
    }
}

/// rmcp transport over a stdio child (see the module docs).
pub(crate) struct ChildTransport {
    proc: Option<Proc>,
    io: AsyncRwTransport<RoleClient, LineGuard<ChildStdout>, ChildStdin>,
    fault: FaultSlot,
    stop: StopTimes,
}

impl ChildTransport {
    /// Wraps a child spawned with piped stdin and stdout (in its own process group).
    pub(crate) fn new(
        mut child: Box<dyn ChildWrapper>,
        limit: usize,
        fault: FaultSlot,
        stop: StopTimes,
    ) -> io::Result<Self> {
        let stdin = child
            .stdin()
            .take()
            .ok_or_else(|| io::Error::other("child stdin not piped"))?;
        let stdout = child
            .stdout()
            .take()
            .ok_or_else(|| io::Error::other("child stdout not piped"))?;
        let proc = Proc {
            child,
            _live: Live::new(),
        };
        // rmcp's own line cap stays above ours, so ours is the one that fires.
        let io = AsyncRwTransport::new_client(LineGuard::new(stdout, limit, fault.clone()), stdin)
            .with_max_line_length(limit.saturating_add(1));
        Ok(Self {
            proc: Some(proc),
            io,
            fault,
            stop,
        })
    }

    /// Stops the child: stdin closed, then SIGTERM, then SIGKILL, each to the whole
    /// process group, and reaps it. After a fault (or once it has exited) it goes
    /// straight to SIGKILL so the requests waiting on this connection fail at once.
    async fn shutdown(&mut self) -> io::Result<()> {
        let Some(mut proc) = self.proc.take() else {
            return Ok(());
        };
        let _ = self.io.close().await;
        let exited = matches!(proc.child.try_wait(), Ok(Some(_)));
        if self.fault.get().is_none()
            && !exited
            && tokio::time::timeout(self.stop.stdin_grace, proc.child.wait())
                .await
                .is_err()
        {
            let _ = proc.child.signal(libc::SIGTERM);
            if tokio::time::timeout(self.stop.term_grace, proc.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(pid = ?proc.child.id(), "stdio upstream ignored SIGTERM; killing its process group");
            }
        }
        // Also catches what the server left behind in its group after it exited.
        proc.kill().await;
        Ok(())
    }
}

impl Drop for ChildTransport {
    fn drop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            let _ = proc.child.signal(libc::SIGKILL);
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(proc.kill());
                }
                Err(_) => {
                    let _ = proc.child.try_wait();
                }
            }
        }
    }
}

impl Transport<RoleClient> for ChildTransport {
    type Error = io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), io::Error>> + Send + 'static {
        self.io.send(item)
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleClient>>> + Send {
        self.io.receive()
    }

    fn close(&mut self) -> impl Future<Output = Result<(), io::Error>> + Send {
        self.shutdown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(limit: usize) -> LineGuard<tokio::io::Empty> {
        LineGuard::new(tokio::io::empty(), limit, FaultSlot::default())
    }

    #[test]
    fn passes_messages_and_blank_lines() {
        let mut g = guard(64);
        let input = b"{\"a\":1}\n\r\n  {\"b\":2}\n\xEF\xBB\xBF{}\n";
        assert_eq!(g.check(input), input.len());
        assert!(g.fault.get().is_none());
    }

    #[test]
    fn a_line_split_over_reads_is_measured_whole() {
        let mut g = guard(10);
        assert_eq!(g.check(b"{\"a\":"), 5);
        assert_eq!(g.check(b"12"), 2);
        // 5 + 2 + 4 bytes > 10: the fault cuts before this read.
        assert_eq!(g.check(b"345}\n"), 0);
        assert_eq!(g.fault.get(), Some(&Fault::TooLarge { limit: 10 }));
    }

    #[test]
    fn garbage_stops_at_its_line() {
        let mut g = guard(1024);
        let input = b"{\"ok\":1}\nStarting server on port 3000\n{\"x\":2}\n";
        assert_eq!(g.check(input), 9);
        assert_eq!(g.fault.get(), Some(&Fault::Garbage));
    }

    #[test]
    fn garbage_after_leading_blanks_in_an_earlier_read() {
        let mut g = guard(1024);
        assert_eq!(g.check(b"{}\n  "), 5);
        assert_eq!(g.check(b"oops\n"), 0);
        assert_eq!(g.fault.get(), Some(&Fault::Garbage));
    }

    #[tokio::test]
    async fn reader_ends_at_the_fault() {
        use tokio::io::AsyncReadExt as _;
        let data: &[u8] = b"{\"a\":1}\nnot json\n{\"b\":2}\n";
        let fault = FaultSlot::default();
        let mut g = LineGuard::new(data, 1024, fault.clone());
        let mut out = Vec::new();
        g.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"{\"a\":1}\n");
        assert_eq!(fault.get(), Some(&Fault::Garbage));
    }
}
