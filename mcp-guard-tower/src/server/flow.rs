//! `[[labels]]` and `[[flow_rules]]` in the built gateway: they join the grant policy
//! (so a reload rebuilds them with the grants), and the label tool globs are checked
//! against what the servers serve once they have started.

use std::sync::Arc;
use std::time::Duration;

use mcp_guard_core::config::{ApprovalMode, ConfigError, GatewayConfig, LabelConfig, check_label_tools};
use mcp_guard_core::flow::Labels;
use mcp_guard_core::policy::{FlowRule, GrantPolicyBuilder, ToolLabel};
use mcp_guard_core::{AuditSink, Redactor, UpstreamState};

use crate::Gateway;
use crate::approval::{ApprovalSettings, Approvals};

/// Adds `[[labels]]` and `[[flow_rules]]` to the grant policy; an unnamed rule is
/// named after its entry (`flow_rules[1]`).
pub(crate) fn rules(config: &GatewayConfig, mut b: GrantPolicyBuilder) -> anyhow::Result<GrantPolicyBuilder> {
    for l in &config.labels {
        b = b.label(
            ToolLabel::new(Labels::of(l.labels.iter().copied()))
                .servers(l.servers.iter().cloned())
                .tools(l.tools.iter().cloned()),
        );
    }
    for (i, r) in config.flow_rules.iter().enumerate() {
        let mut rule = FlowRule::new()
            .named(r.name.clone().unwrap_or_else(|| format!("flow_rules[{i}]")))
            .endpoints(r.endpoints.iter().cloned())
            .after(Labels::of(r.after.iter().copied()))
            .calls(Labels::of(r.calls.iter().copied()));
        if r.approval == Some(ApprovalMode::Required) {
            rule = rule.approval_required();
        }
        for (j, w) in r.when.iter().enumerate() {
            let c = w
                .condition()
                .map_err(|(suffix, m)| anyhow::anyhow!("flow_rules[{i}].when[{j}]{suffix}: {m}"))?;
            rule = rule.when(c);
        }
        b = b.flow_rule(rule);
    }
    Ok(b)
}

/// The approvals of the stack: `[approval]` settings, records in the audit trail
/// (arguments redacted with the audit's redactor, for the records and for what the
/// person is shown).
pub(crate) fn approvals(
    config: &GatewayConfig,
    sink: Arc<dyn AuditSink>,
    redactor: Arc<dyn Redactor>,
) -> Approvals {
    let a = &config.approval;
    let settings = ApprovalSettings {
        timeout: Duration::from_secs(a.timeout_secs),
        max_pending: a.max_pending,
        max_pending_per_session: a.max_pending_per_session,
        approver_roles: a.approver_roles.clone(),
    };
    Approvals::audited(settings, sink, redactor)
}

/// The tools each server of `gateway` serves now (`None`: disabled or not connected).
pub(crate) async fn served_tools(gateway: &Gateway) -> Vec<(String, Option<Vec<String>>)> {
    let mut out = Vec::new();
    for (id, upstream, enabled) in gateway.servers() {
        let tools = if enabled && upstream.status().state == UpstreamState::Connected {
            upstream
                .catalog()
                .await
                .ok()
                .map(|c| c.tools.iter().map(|t| t.name.to_string()).collect())
        } else {
            None
        };
        out.push((id.to_string(), tools));
    }
    out
}

/// Checks the label tool globs of `labels` against what `gateway`'s servers serve;
/// globs that could not be judged are logged.
///
/// # Errors
/// A glob matches no tool of the servers it names (each named by its entry).
pub(crate) async fn check_labels(labels: &[LabelConfig], gateway: &Gateway) -> anyhow::Result<()> {
    if labels.iter().all(|l| l.tools.is_empty()) {
        return Ok(());
    }
    let served = served_tools(gateway).await;
    let warnings =
        check_label_tools(labels, &served).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    for ConfigError { entry, message, .. } in warnings {
        tracing::warn!(%entry, "{message}");
    }
    Ok(())
}
