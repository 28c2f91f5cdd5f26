use async_trait::async_trait;

use super::{AuditError, AuditEvent, AuditSink};

/// Emits each event as one `tracing` event at INFO under target `mcp_guard::audit`,
/// with the record as JSON. Not durable: pair it with a durable sink.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct TracingAuditSink;

#[async_trait]
impl AuditSink for TracingAuditSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let json = serde_json::to_string(event).map_err(|e| AuditError::Unavailable(Box::new(e)))?;
        tracing::info!(target: "mcp_guard::audit", record = %json);
        Ok(())
    }
}
