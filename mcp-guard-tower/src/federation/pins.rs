//! The tool gate of one endpoint at run time: definitions checked against the pins,
//! each verdict recorded once.

use std::sync::PoisonError;
use std::time::Duration;

use mcp_guard_core::pin::Admission;
use mcp_guard_core::{AuditSink, Target, TargetKind};

use super::{PinChecks, Snapshot};

/// A definition's pin and the verdict last recorded for it.
pub(super) type PinVerdict = (String, Recorded);

/// Definitions per tool whose verdict is remembered (a server that changes a tool
/// endlessly cannot grow the gateway's memory; an older definition seen again is
/// recorded again).
const RECORDED_PER_TOOL: usize = 8;

/// A verdict recorded for one definition: its reason and diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Recorded {
    Quarantined(String),
    Warned(String),
}

/// A refused call waits for this long since the serving instance's catalogue was read
/// before it is read again (so a client retrying a held tool cannot make the gateway
/// list the server on every call).
pub(super) const REREAD_BEFORE_REFUSING: Duration = Duration::from_secs(1);

impl PinChecks {
    /// Runs every tool of the snapshot's catalogues past the gate; quarantined ones
    /// leave the lists (their names still resolve, so a call can say it awaits
    /// approval), admitted ones are remembered with their pin.
    pub(super) async fn apply(&self, snap: &mut Snapshot) {
        let mut verdicts = Vec::new();
        let mut notes = Vec::new();
        for (server, catalog) in &snap.catalogs {
            let others = snap.other_tool_names(server);
            if let Some(note) = self.gate.check_instructions(
                server,
                catalog
                    .server_info
                    .as_ref()
                    .and_then(|i| i.instructions.as_deref()),
            ) {
                notes.push((server.clone(), note));
            }
            for tool in &catalog.tools {
                let exposed = snap.exposed_name(server, &tool.name);
                if !snap.tool_index.contains_key(&exposed) {
                    continue;
                }
                let pin = catalog.tool_pin(&tool.name).unwrap_or_default().to_owned();
                let admission = self.gate.admit(server, tool, &others);
                verdicts.push((server.clone(), exposed, tool.name.to_string(), pin, admission));
            }
        }
        for (server, exposed, name, pin, admission) in verdicts {
            self.record(&server, &name, &pin, &admission).await;
            if let Admission::Quarantine { reason, .. } = admission {
                snap.tools.retain(|t| t.name != exposed);
                snap.quarantined.insert(exposed, reason);
            } else {
                snap.admitted.insert(exposed, pin);
            }
        }
        for (server, note) in notes {
            let admission = Admission::Warn {
                reason: note,
                diff: None,
            };
            self.record(&server, "(instructions)", "", &admission).await;
        }
    }

    /// Records `admission` of `server`'s `tool` with pin `pin` unless it was the last
    /// verdict recorded for that definition; a definition that was held and is now
    /// admitted is recorded as released.
    pub(super) async fn record(&self, server: &str, tool: &str, pin: &str, admission: &Admission) {
        let (kind, reason, diff) = {
            let mut all = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
            let recorded = all.entry((server.to_owned(), tool.to_owned())).or_default();
            let at = recorded.iter().position(|(p, _)| p == pin);
            match admission {
                Admission::Quarantine { reason, diff } | Admission::Warn { reason, diff } => {
                    let diff = diff.as_deref().unwrap_or_default();
                    let what = format!("{reason}\n{diff}");
                    let (now, kind) = if matches!(admission, Admission::Quarantine { .. }) {
                        (Recorded::Quarantined(what), "quarantined")
                    } else {
                        (Recorded::Warned(what), "warning")
                    };
                    if let Some(i) = at {
                        let (p, last) = recorded.remove(i);
                        let same = last == now;
                        recorded.push((p, now));
                        if same {
                            return;
                        }
                    } else {
                        if recorded.len() >= RECORDED_PER_TOOL {
                            recorded.remove(0);
                        }
                        recorded.push((pin.to_owned(), now));
                    }
                    (kind, reason.clone(), diff.to_owned())
                }
                _ => {
                    let Some(i) = at.filter(|i| matches!(recorded[*i].1, Recorded::Quarantined(_))) else {
                        return;
                    };
                    recorded.remove(i);
                    (
                        "released",
                        "its definition is approved".to_owned(),
                        format!("= {pin}\n"),
                    )
                }
            }
        };
        match kind {
            "quarantined" => {
                tracing::warn!(endpoint = %self.endpoint, server, tool, reason, "tool quarantined until approved");
            }
            "warning" => {
                tracing::warn!(endpoint = %self.endpoint, server, tool, reason, "tool admitted with a warning");
            }
            _ => {
                tracing::info!(endpoint = %self.endpoint, server, tool, "quarantined tool released: its definition is approved");
            }
        }
        if let Some(sink) = &self.audit {
            let mut event =
                mcp_guard_core::AuditEvent::new(mcp_guard_core::audit::EventKind::ToolDefinitionChanged {
                    diff: format!("{kind} {server}/{tool}: {reason}\n{diff}"),
                });
            event.endpoint = Some(self.endpoint.to_string());
            event.target = Some(Target::new(server, tool, TargetKind::Tool));
            if let Err(e) = sink.record(&event).await {
                tracing::error!(error = %mcp_guard_core::upstream::error_chain(&e), "could not record a tool definition event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use mcp_guard_core::audit::{EventKind, MemoryAuditSink};
    use mcp_guard_core::pin::{GateMode, LockFile, PinGate, ToolGate};
    use rmcp::model::Tool;

    use super::*;

    fn tool(description: &str) -> Tool {
        Tool::new("echo", description.to_owned(), Arc::new(serde_json::Map::new()))
    }

    fn recorded(sink: &MemoryAuditSink) -> Vec<String> {
        sink.events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::ToolDefinitionChanged { diff } => {
                    Some(diff.lines().next().unwrap_or_default().to_owned())
                }
                _ => None,
            })
            .collect()
    }

    /// Each verdict is recorded once per definition; a held definition that is admitted
    /// is recorded as released, and held again (after a release) is recorded again.
    #[tokio::test]
    async fn verdicts_are_recorded_once_per_definition_and_releases_too() {
        let mut lock = LockFile::default();
        lock.approve_tool("s", &tool("Echoes."));
        let gate = Arc::new(PinGate::new(lock.clone(), GateMode::Enforce, GateMode::Enforce));
        let sink = MemoryAuditSink::new();
        let checks = PinChecks {
            endpoint: "main".into(),
            gate: gate.clone(),
            audit: Some(Arc::new(sink.clone())),
            recorded: Mutex::default(),
        };
        let changed = tool("Echoes, and keeps a copy.");
        let pin = mcp_guard_core::pin::tool_pin(&changed);
        for _ in 0..3 {
            let verdict = gate.admit("s", &changed, &[]);
            assert!(matches!(verdict, Admission::Quarantine { .. }));
            checks.record("s", "echo", &pin, &verdict).await;
        }
        assert_eq!(
            recorded(&sink),
            ["quarantined s/echo: definition changed since it was approved"]
        );
        lock.approve_tool("s", &changed);
        gate.reload(lock.clone());
        let verdict = gate.admit("s", &changed, &[]);
        assert_eq!(verdict, Admission::Admit);
        checks.record("s", "echo", &pin, &verdict).await;
        checks.record("s", "echo", &pin, &verdict).await;
        lock.approve_tool("s", &tool("Echoes."));
        gate.reload(lock);
        let verdict = gate.admit("s", &changed, &[]);
        checks.record("s", "echo", &pin, &verdict).await;
        assert_eq!(
            recorded(&sink),
            [
                "quarantined s/echo: definition changed since it was approved",
                "released s/echo: its definition is approved",
                "quarantined s/echo: definition changed since it was approved",
            ]
        );
        // A server changing the tool endlessly: only the last few definitions are
        // remembered, and one seen again after that is recorded again.
        for i in 0..RECORDED_PER_TOOL {
            let t = tool(&format!("Echoes, version {i}."));
            checks
                .record(
                    "s",
                    "echo",
                    &mcp_guard_core::pin::tool_pin(&t),
                    &gate.admit("s", &t, &[]),
                )
                .await;
        }
        assert_eq!(
            checks.recorded.lock().unwrap()[&("s".into(), "echo".into())].len(),
            RECORDED_PER_TOOL
        );
        let before = recorded(&sink).len();
        checks
            .record("s", "echo", &pin, &gate.admit("s", &changed, &[]))
            .await;
        assert_eq!(recorded(&sink).len(), before + 1);
    }
}
