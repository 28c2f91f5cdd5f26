//! Log output on stderr, scrubbed of every secret the gateway holds.

use std::sync::Arc;

use mcp_guard_core::Redactor;
use tracing_subscriber::EnvFilter;

pub(crate) fn init_tracing(stdio: bool) {
    // rmcp logs payloads at INFO/DEBUG; keep it at WARN unless asked otherwise.
    let filter =
        EnvFilter::try_from_env("MCP_GUARD_LOG").unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ScrubbedStderr);
    if stdio {
        builder.with_ansi(false).init();
    } else {
        builder.init();
    }
}

/// Log output: each event is formatted into a buffer, cleaned of every credential the
/// gateway has handed out and of secret patterns, then written to stderr in one piece.
/// rmcp traces whole upstream messages at `trace`, so without this a credential an
/// upstream echoes would reach the log before the response redactor sees it.
struct ScrubbedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedEvent;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedEvent(Vec::with_capacity(256))
    }
}

struct ScrubbedEvent(Vec<u8>);

impl std::io::Write for ScrubbedEvent {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedEvent {
    fn drop(&mut self) {
        static LOG_REDACTOR: std::sync::OnceLock<Arc<dyn Redactor>> = std::sync::OnceLock::new();
        let redactor = LOG_REDACTOR.get_or_init(|| {
            let mut secrets_only = mcp_guard_core::redact::RedactionConfig::default();
            secrets_only.detect.clear();
            Arc::new(secrets_only.build(Some(known_secrets())))
        });
        let text = String::from_utf8_lossy(&self.0);
        let clean = redactor.redact_str(&text);
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), clean.as_bytes());
    }
}

/// The redactor audit records pass through.
/// Every secret the gateway holds (upstream credentials as they are handed out, client
/// tokens): scrubbed from anything an upstream sends back, from logs and from audit.
pub(crate) fn known_secrets() -> Arc<mcp_guard_core::redact::KnownSecrets> {
    static KNOWN: std::sync::OnceLock<Arc<mcp_guard_core::redact::KnownSecrets>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(Arc::default).clone()
}
