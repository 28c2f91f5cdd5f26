//! What every trait sees of a call: who makes it, through which endpoint, at what.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Whether a principal is a person or a robot identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PrincipalKind {
    /// A person.
    User,
    /// A robot identity (an agent, a CI job); its calls are recorded as agent calls.
    Agent,
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::Agent => "agent",
        })
    }
}

/// An authenticated caller: a user or an agent, with roles.
///
/// Built by the front door (the HTTP edge from a token, the stdio front door from its
/// configuration); never taken from anything the client says about itself.
///
/// # Example
/// ```
/// use mcp_guard_core::{Principal, PrincipalKind};
/// let bot = Principal::agent("release-bot")
///     .with_roles(["deployer"])
///     .acting_for("alice");
/// assert_eq!(bot.kind(), PrincipalKind::Agent);
/// assert_eq!(bot.on_behalf_of(), Some("alice"));
/// assert!(bot.has_role("deployer"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Principal {
    id: String,
    kind: PrincipalKind,
    roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_behalf_of: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    attributes: BTreeMap<String, String>,
}

impl Principal {
    /// A user with no roles.
    pub fn user(id: impl Into<String>) -> Self {
        Self::new(id, PrincipalKind::User)
    }

    /// An agent (robot identity) with no roles.
    pub fn agent(id: impl Into<String>) -> Self {
        Self::new(id, PrincipalKind::Agent)
    }

    /// A principal of the given kind with no roles.
    pub fn new(id: impl Into<String>, kind: PrincipalKind) -> Self {
        Self {
            id: id.into(),
            kind,
            roles: Vec::new(),
            on_behalf_of: None,
            attributes: BTreeMap::new(),
        }
    }

    /// Adds roles.
    #[must_use]
    pub fn with_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles.extend(roles.into_iter().map(Into::into));
        self
    }

    /// Records that this principal acts for a user (an agent's delegation chain).
    #[must_use]
    pub fn acting_for(mut self, user: impl Into<String>) -> Self {
        self.on_behalf_of = Some(user.into());
        self
    }

    /// Adds an attribute (team, department...) that policy conditions may read.
    #[must_use]
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// The stable identifier.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// User or agent.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// The roles, in the order they were granted.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The user an agent acts for, if any.
    pub fn on_behalf_of(&self) -> Option<&str> {
        self.on_behalf_of.as_deref()
    }

    /// Whose authority the calls carry: the user an agent acts for, else the principal
    /// itself (RFC 8693's subject). Personal upstream credentials are this party's: an
    /// agent acting for alice uses alice's, never its own or another user's.
    ///
    /// ```
    /// use mcp_guard_core::Principal;
    /// assert_eq!(Principal::agent("ci-bot").acting_for("alice").subject(), "alice");
    /// assert_eq!(Principal::user("bob").subject(), "bob");
    /// ```
    pub fn subject(&self) -> &str {
        self.on_behalf_of.as_deref().unwrap_or(&self.id)
    }

    /// The whole delegation chain, (principal, user it acts for): what every session,
    /// per-session process, limit and rate is keyed on, so an agent acting for two users
    /// is two callers.
    pub fn chain(&self) -> (&str, Option<&str>) {
        (&self.id, self.on_behalf_of.as_deref())
    }

    /// The attributes.
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }
}

/// What kind of thing a call targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TargetKind {
    /// A tool (`tools/call`, an entry of `tools/list`).
    Tool,
    /// A prompt.
    Prompt,
    /// A concrete resource URI.
    Resource,
    /// A resource template.
    ResourceTemplate,
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tool => "tool",
            Self::Prompt => "prompt",
            Self::Resource => "resource",
            Self::ResourceTemplate => "resource template",
        })
    }
}

/// The provenance of a federated name: which configured server, and the upstream's own name.
///
/// Resolved once, before any layer runs; no layer re-parses a namespaced name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Target {
    /// The configured server id (never the upstream's self-reported name).
    pub server: Arc<str>,
    /// The upstream's own name for the tool or prompt, or the upstream's URI for a resource.
    pub name: Arc<str>,
    /// Tool, prompt, resource...
    pub kind: TargetKind,
}

impl Target {
    /// A target.
    pub fn new(server: impl Into<Arc<str>>, name: impl Into<Arc<str>>, kind: TargetKind) -> Self {
        Self {
            server: server.into(),
            name: name.into(),
            kind,
        }
    }
}

/// What the caller asks to do, as policy and audit see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Invoke a tool, get a prompt, read a resource, complete an argument.
    Call,
    /// See the item in a list.
    List,
}

/// One operation as the [`Policy`](crate::Policy) sees it: an action on a resolved target.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Operation {
    /// Call or list.
    pub action: Action,
    /// The resolved target; `None` when the name resolved to nothing (an unknown tool).
    pub target: Option<Target>,
    /// The name the client used (namespaced), as sent.
    pub requested_name: Arc<str>,
    /// Tool arguments, when the operation carries them.
    pub arguments: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Operation {
    /// An operation.
    pub fn new(action: Action, target: Option<Target>, requested_name: impl Into<Arc<str>>) -> Self {
        Self {
            action,
            target,
            requested_name: requested_name.into(),
            arguments: None,
        }
    }

    /// Attaches arguments.
    #[must_use]
    pub fn with_arguments(mut self, arguments: Option<serde_json::Map<String, serde_json::Value>>) -> Self {
        self.arguments = arguments;
        self
    }
}

/// Identifier of a gateway session (see the crate docs on sessions).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
#[allow(clippy::exhaustive_structs, reason = "a transparent id newtype")]
pub struct SessionId(pub Arc<str>);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Name and version a client reports about itself (informational, never trusted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClientInfo {
    /// Reported name.
    pub name: String,
    /// Reported version.
    pub version: String,
}

impl ClientInfo {
    /// Client info.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
        }
    }
}

/// Everything about a call that is not the call itself: who, where, which session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CallContext {
    /// The authenticated caller.
    pub principal: Arc<Principal>,
    /// The endpoint the call came through.
    pub endpoint: Arc<str>,
    /// The gateway session, when the front door has one.
    pub session: Option<SessionId>,
    /// The gateway session itself (what belongs to it ends with it).
    pub gateway_session: Option<Arc<crate::access::Session>>,
    /// The MCP protocol revision of the downstream request.
    pub protocol_version: Option<String>,
    /// The downstream JSON-RPC request id, as text.
    pub request_id: Option<String>,
    /// What the client says it is.
    pub client: Option<ClientInfo>,
    /// W3C trace id, when the request carried one.
    pub trace_id: Option<String>,
    /// What the session's calls have done so far, for flow rules: the gateway
    /// session's taint (the stdio front door's one session included).
    pub taint: Option<Arc<crate::flow::Taint>>,
}

impl CallContext {
    /// A context for `principal` on `endpoint`.
    pub fn new(principal: Arc<Principal>, endpoint: impl Into<Arc<str>>) -> Self {
        Self {
            principal,
            endpoint: endpoint.into(),
            session: None,
            gateway_session: None,
            protocol_version: None,
            request_id: None,
            client: None,
            trace_id: None,
            taint: None,
        }
    }
}
