//! An endpoint's federated catalogue at one moment: what is listed and how names
//! resolve.

use std::collections::HashMap;
use std::sync::Arc;

use mcp_guard_core::pin::Admission;
use mcp_guard_core::{Catalog, Target, TargetKind, Upstream};
use rmcp::model::{
    ClientRequest, Prompt, PromptsCapability, Reference, Resource, ResourceTemplate, ResourcesCapability,
    ServerCapabilities, Tool, ToolsCapability,
};

use super::pins::REREAD_BEFORE_REFUSING;
use super::{BuildError, CallCheck, Member, PinChecks, Snapshot};

pub(super) fn capabilities(prompts: bool, resources: bool, completions: bool) -> ServerCapabilities {
    let mut caps = ServerCapabilities::default();
    let mut tools = ToolsCapability::default();
    tools.list_changed = Some(true);
    caps.tools = Some(tools);
    if prompts {
        let mut p = PromptsCapability::default();
        p.list_changed = Some(true);
        caps.prompts = Some(p);
    }
    if resources {
        let mut r = ResourcesCapability::default();
        r.list_changed = Some(true);
        caps.resources = Some(r);
    }
    if completions {
        caps.completions = Some(serde_json::Map::new());
    }
    caps
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("endpoint", &self.endpoint)
            .field("version", &self.version)
            .field("tools", &self.tools.len())
            .field("prompts", &self.prompts.len())
            .field("resources", &self.resources.len())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    pub(super) fn empty(endpoint: Arc<str>, separator: String, namespaced: bool) -> Self {
        Self {
            endpoint,
            separator,
            namespaced,
            version: 0,
            tools: Vec::new(),
            tool_index: HashMap::new(),
            prompts: Vec::new(),
            prompt_index: HashMap::new(),
            resources: Vec::new(),
            templates: Vec::new(),
            upstreams: HashMap::new(),
            resource_selection: HashMap::new(),
            catalogs: HashMap::new(),
            capabilities: capabilities(false, false, false),
            problems: Vec::new(),
            collisions: Vec::new(),
            quarantined: HashMap::new(),
            admitted: HashMap::new(),
            pins: None,
        }
    }

    /// Why a tool is held back, if it is (exposed name).
    pub fn quarantine(&self, exposed: &str) -> Option<&str> {
        self.quarantined.get(exposed).map(String::as_str)
    }

    /// The tool names of every server but `server` (for the gate's cross-server checks).
    pub(super) fn other_tool_names(&self, server: &str) -> Vec<&str> {
        self.catalogs
            .iter()
            .filter(|(s, _)| s.as_ref() != server)
            .flat_map(|(_, c)| c.tools.iter().map(|t| t.name.as_ref()))
            .collect()
    }

    /// The gate's verdict on `target`'s definition in `catalog`, with its pin: the
    /// snapshot's own when it admitted that very definition, else the gate's now (the
    /// catalogue is another instance's, or newer, or the definition was held). `None`
    /// when `catalog` does not offer the tool; the flag says whether the gate was asked.
    fn judge(
        &self,
        pins: &PinChecks,
        exposed: &str,
        target: &Target,
        catalog: &Catalog,
    ) -> Option<(String, Admission, bool)> {
        let pin = catalog.tool_pin(&target.name)?.to_owned();
        if self.admitted.get(exposed) == Some(&pin) {
            return Some((pin, Admission::Admit, false));
        }
        let tool = catalog.tool(&target.name)?;
        let others = self.other_tool_names(&target.server);
        let admission = pins.gate.admit(&target.server, tool, &others);
        Some((pin, admission, true))
    }

    /// Checks a call of tool `exposed` (resolved to `target`) against the definition
    /// the instance that will serve it offers: a per-session process is judged on its
    /// own catalogue, and a definition newer than this snapshot on the gate's current
    /// rules. Before refusing, the gateway reads the serving catalogue again (unless it
    /// did within the last second), so a call is never refused on a stale read: an
    /// approval of what the server serves now takes effect even before the gateway's
    /// own re-read.
    ///
    /// # Errors
    /// [`GuardError::Quarantined`] for an unapproved or hostile definition;
    /// [`GuardError::Unknown`] when the serving instance does not offer the tool; the
    /// upstream's error when its catalogue cannot be read.
    pub(crate) async fn check_call(
        &self,
        exposed: &str,
        target: &Target,
        upstream: &Arc<dyn Upstream>,
        forward: &mcp_guard_core::upstream::Forward,
    ) -> Result<Option<CallCheck>, crate::GuardError> {
        let Some(pins) = &self.pins else {
            return Ok(None);
        };
        let mut catalog = upstream.serving_catalog(forward).await?;
        let mut verdict = self.judge(pins, exposed, target, &catalog);
        let refused = !matches!(verdict, Some((_, Admission::Admit | Admission::Warn { .. }, _)));
        if refused
            && catalog
                .read_at
                .is_none_or(|at| at.elapsed() >= REREAD_BEFORE_REFUSING)
        {
            catalog = upstream.reread_serving_catalog(forward).await?;
            verdict = self.judge(pins, exposed, target, &catalog);
        }
        let Some((pin, admission, asked)) = verdict else {
            return Err(crate::GuardError::Unknown {
                kind: TargetKind::Tool,
                name: exposed.to_owned(),
            });
        };
        if asked {
            pins.record(&target.server, &target.name, &pin, &admission).await;
        }
        match admission {
            Admission::Quarantine { reason, .. } => Err(crate::GuardError::Quarantined {
                name: exposed.to_owned(),
                reason,
                during_call: false,
            }),
            _ => Ok(Some(CallCheck { catalog, pin })),
        }
    }

    /// After the answer of a call admitted by [`Snapshot::check_call`]: if the serving
    /// instance's catalogue was read again meanwhile and now offers an unapproved
    /// definition of the tool, the answer is withheld (it came from a server that
    /// changed the tool under the call).
    ///
    /// # Errors
    /// [`GuardError::Quarantined`] (during the call) in that case.
    pub(crate) async fn confirm_call(
        &self,
        check: &CallCheck,
        exposed: &str,
        target: &Target,
        upstream: &Arc<dyn Upstream>,
        forward: &mcp_guard_core::upstream::Forward,
    ) -> Result<(), crate::GuardError> {
        let Some(pins) = &self.pins else { return Ok(()) };
        // If the instance cannot say (it went away after answering), the call stands
        // as admitted.
        let Ok(now) = upstream.serving_catalog(forward).await else {
            return Ok(());
        };
        if Arc::ptr_eq(&now, &check.catalog) || now.tool_pin(&target.name).is_none_or(|p| p == check.pin) {
            return Ok(());
        }
        let Some((pin, admission, asked)) = self.judge(pins, exposed, target, &now) else {
            return Ok(());
        };
        if asked {
            pins.record(&target.server, &target.name, &pin, &admission).await;
        }
        match admission {
            Admission::Quarantine { reason, .. } => Err(crate::GuardError::Quarantined {
                name: exposed.to_owned(),
                reason,
                during_call: true,
            }),
            _ => Ok(()),
        }
    }

    pub(super) fn exposed_name(&self, server: &str, name: &str) -> String {
        if self.namespaced {
            format!("{server}{}{name}", self.separator)
        } else {
            name.to_owned()
        }
    }

    pub(super) fn add_member(
        &mut self,
        m: &Member,
        catalog: &Catalog,
        listed: bool,
        owners: &mut HashMap<String, String>,
    ) {
        for tool in &catalog.tools {
            if !m.selection.allows(TargetKind::Tool, &tool.name) {
                continue;
            }
            let exposed = self.exposed_name(&m.id, &tool.name);
            if !valid_tool_name(&exposed) {
                self.problems.push(format!(
                    "{}: tool {:?} cannot be exposed as {exposed:?} (names are 1-128 of [A-Za-z0-9_.-])",
                    m.id, tool.name
                ));
                continue;
            }
            if !self.claim(owners, &exposed, &m.id, &tool.name) {
                continue;
            }
            self.tool_index.insert(
                exposed.clone(),
                Target::new(m.id.clone(), tool.name.as_ref(), TargetKind::Tool),
            );
            if listed {
                let mut t = tool.clone();
                t.name = exposed.into();
                self.tools.push(t);
            }
        }
        for prompt in &catalog.prompts {
            if !m.selection.allows(TargetKind::Prompt, &prompt.name) {
                continue;
            }
            let exposed = self.exposed_name(&m.id, &prompt.name);
            if !valid_tool_name(&exposed) {
                self.problems
                    .push(format!("{}: prompt {:?} cannot be exposed", m.id, prompt.name));
                continue;
            }
            if !self.claim(owners, &format!("prompt:{exposed}"), &m.id, &prompt.name) {
                continue;
            }
            self.prompt_index.insert(
                exposed.clone(),
                Target::new(m.id.clone(), prompt.name.as_str(), TargetKind::Prompt),
            );
            if listed {
                let mut p = prompt.clone();
                p.name = exposed;
                self.prompts.push(p);
            }
        }
        if listed {
            for r in catalog
                .resources
                .iter()
                .filter(|r| m.selection.allows(TargetKind::Resource, &r.uri))
            {
                let mut r = r.clone();
                r.uri = self.expose_resource_uri(&m.id, &r.uri);
                self.resources.push(r);
            }
            for t in catalog
                .resource_templates
                .iter()
                .filter(|t| m.selection.allows(TargetKind::ResourceTemplate, &t.uri_template))
            {
                let mut t = t.clone();
                t.uri_template = self.expose_resource_uri(&m.id, &t.uri_template);
                self.templates.push(t);
            }
        }
    }

    /// Records who produces `exposed`; on a collision both entries are withheld.
    fn claim(
        &mut self,
        owners: &mut HashMap<String, String>,
        exposed: &str,
        server: &str,
        name: &str,
    ) -> bool {
        let origin = format!("{server}/{name}");
        match owners.get(exposed) {
            None => {
                owners.insert(exposed.to_owned(), origin);
                true
            }
            Some(first) => {
                let display = exposed.trim_start_matches("prompt:").to_owned();
                self.collisions.push(BuildError::Collision {
                    endpoint: self.endpoint.to_string(),
                    name: display.clone(),
                    first: first.clone(),
                    second: origin,
                });
                self.tool_index.remove(&display);
                self.tools.retain(|t| t.name != display);
                self.prompt_index.remove(&display);
                self.prompts.retain(|p| p.name != display);
                false
            }
        }
    }

    /// The endpoint name.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Listed tools, with exposed names, in deterministic order (servers by id, then the
    /// server's own order).
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// Listed prompts.
    pub fn prompts(&self) -> &[Prompt] {
        &self.prompts
    }

    /// Listed resources (`server+uri`).
    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// Listed resource templates (`server+template`).
    pub fn resource_templates(&self) -> &[ResourceTemplate] {
        &self.templates
    }

    /// The union of the members' capabilities, as the gateway advertises them.
    pub fn capabilities(&self) -> &ServerCapabilities {
        &self.capabilities
    }

    /// Name collisions found while building (both entries are withheld).
    pub fn collisions(&self) -> &[BuildError] {
        &self.collisions
    }

    /// Problems found while building (servers unreachable, names not exposable).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The protocol version the upstream `server` speaks on the connection its
    /// catalogue was read from (`2025-11-25`, `2026-07-28`...).
    pub fn upstream_protocol(&self, server: &str) -> Option<&str> {
        self.catalogs
            .get(server)
            .and_then(|c| c.server_info.as_ref())
            .map(|i| i.protocol_version.as_str())
    }

    /// Whether the upstream `server` speaks the 2026-07-28 revision (per-request
    /// metadata) on its current connection.
    pub fn upstream_is_modern(&self, server: &str) -> bool {
        self.catalogs
            .get(server)
            .and_then(|c| c.server_info.as_ref())
            .is_some_and(|i| {
                i.protocol_version.as_str() >= rmcp::model::ProtocolVersion::V_2026_07_28.as_str()
            })
    }

    /// The upstream serving `server` on this endpoint.
    pub fn upstream(&self, server: &str) -> Option<&Arc<dyn Upstream>> {
        self.upstreams.get(server)
    }

    /// The tool a name resolves to.
    pub fn resolve_tool(&self, exposed: &str) -> Option<&Target> {
        self.tool_index.get(exposed)
    }

    /// The prompt a name resolves to.
    pub fn resolve_prompt(&self, exposed: &str) -> Option<&Target> {
        self.prompt_index.get(exposed)
    }

    /// The resource a `server+uri` resolves to (also URIs from templates, when the
    /// endpoint's resource globs allow them).
    pub fn resolve_resource(&self, exposed: &str) -> Option<Target> {
        let (server, uri) = if self.namespaced {
            exposed.split_once('+')?
        } else {
            (self.upstreams.keys().next()?.as_ref(), exposed)
        };
        let selection = self.resource_selection.get(server)?;
        selection
            .allows(TargetKind::Resource, uri)
            .then(|| Target::new(server, uri, TargetKind::Resource))
    }

    /// The exposed name of an upstream's resource URI.
    pub fn expose_resource_uri(&self, server: &str, uri: &str) -> String {
        if self.namespaced {
            format!("{server}+{uri}")
        } else {
            uri.to_owned()
        }
    }

    /// Resolves the name a request carries: (target, the name as requested).
    pub fn resolve_request(&self, request: &ClientRequest) -> (Option<Target>, Option<Arc<str>>) {
        let (target, name) = match request {
            ClientRequest::CallToolRequest(r) => {
                (self.resolve_tool(&r.params.name).cloned(), r.params.name.as_ref())
            }
            ClientRequest::GetPromptRequest(r) => (
                self.resolve_prompt(&r.params.name).cloned(),
                r.params.name.as_str(),
            ),
            ClientRequest::ReadResourceRequest(r) => {
                (self.resolve_resource(&r.params.uri), r.params.uri.as_str())
            }
            ClientRequest::SubscribeRequest(r) => {
                (self.resolve_resource(&r.params.uri), r.params.uri.as_str())
            }
            ClientRequest::UnsubscribeRequest(r) => {
                (self.resolve_resource(&r.params.uri), r.params.uri.as_str())
            }
            ClientRequest::CompleteRequest(r) => match &r.params.r#ref {
                Reference::Prompt(p) => (self.resolve_prompt(&p.name).cloned(), p.name.as_str()),
                // A completion names a template: policy sees the template kind, as the
                // template's list entry does.
                Reference::Resource(res) => (
                    self.resolve_resource(&res.uri)
                        .map(|t| Target::new(t.server, t.name, TargetKind::ResourceTemplate)),
                    res.uri.as_str(),
                ),
                _ => (None, ""),
            },
            _ => return (None, None),
        };
        (target, Some(Arc::from(name)))
    }
}

/// What kind of name a request carries.
pub(crate) fn request_kind(request: &ClientRequest) -> Option<TargetKind> {
    match request {
        ClientRequest::CallToolRequest(_) => Some(TargetKind::Tool),
        ClientRequest::GetPromptRequest(_) => Some(TargetKind::Prompt),
        ClientRequest::ReadResourceRequest(_)
        | ClientRequest::SubscribeRequest(_)
        | ClientRequest::UnsubscribeRequest(_) => Some(TargetKind::Resource),
        ClientRequest::CompleteRequest(r) => Some(match r.params.r#ref {
            Reference::Prompt(_) => TargetKind::Prompt,
            _ => TargetKind::ResourceTemplate,
        }),
        _ => None,
    }
}

/// Tool names are 1 to 128 characters of `[A-Za-z0-9_.-]`.
pub fn valid_tool_name(name: &str) -> bool {
    name.len() <= 128 && mcp_guard_core::config::is_name_safe(name)
}
