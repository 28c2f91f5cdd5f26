//! What a gateway is built from: the endpoints and what each exposes of its servers.

use std::sync::Arc;

use mcp_guard_core::policy::Pattern;
use mcp_guard_core::{PolicyError, TargetKind};

use super::{EndpointSpec, Selection};

fn patterns<I: IntoIterator<Item = S>, S: AsRef<str>>(globs: I) -> Result<Vec<Pattern>, PolicyError> {
    globs.into_iter().map(|g| Pattern::new(g.as_ref())).collect()
}

impl Selection {
    /// Exposes nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds tool globs (`read_*`, or `*` for all, always explicit).
    ///
    /// # Errors
    /// A glob that does not compile.
    pub fn tools<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, globs: I) -> Result<Self, PolicyError> {
        self.tools.extend(patterns(globs)?);
        Ok(self)
    }

    /// Adds prompt globs.
    ///
    /// # Errors
    /// A glob that does not compile.
    pub fn prompts<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        globs: I,
    ) -> Result<Self, PolicyError> {
        self.prompts.extend(patterns(globs)?);
        Ok(self)
    }

    /// Adds resource URI globs (matched against resource URIs and template URIs).
    ///
    /// # Errors
    /// A glob that does not compile.
    pub fn resources<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        globs: I,
    ) -> Result<Self, PolicyError> {
        self.resources.extend(patterns(globs)?);
        Ok(self)
    }

    /// Switches the server off on this endpoint.
    #[must_use]
    pub fn disabled(mut self) -> Self {
        self.disabled = true;
        self
    }

    /// Switches these tools off (exact upstream names), whatever the globs match.
    #[must_use]
    pub fn without_tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.tools_off.extend(names.into_iter().map(Into::into));
        self
    }

    pub(super) fn allows(&self, kind: TargetKind, name: &str) -> bool {
        let list = match kind {
            TargetKind::Tool => &self.tools,
            TargetKind::Prompt => &self.prompts,
            _ => &self.resources,
        };
        !self.disabled
            && list.iter().any(|p| p.is_match(name))
            && !(kind == TargetKind::Tool && self.tools_off.iter().any(|t| t == name))
    }
}

impl EndpointSpec {
    /// An endpoint with no servers.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            description: None,
            servers: Vec::new(),
            namespaced: true,
        }
    }

    /// Exposes the one server's names unchanged (no `server__` prefix, no `server+` on
    /// URIs). Only for an endpoint with exactly one server;
    /// [`GatewayBuilder::build`](super::GatewayBuilder::build) refuses it otherwise.
    pub fn without_namespace(mut self) -> Self {
        self.namespaced = false;
        self
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Adds a server with what it exposes here.
    pub fn server(mut self, id: impl Into<Arc<str>>, selection: Selection) -> Self {
        self.servers.push((id.into(), selection));
        self
    }
}
