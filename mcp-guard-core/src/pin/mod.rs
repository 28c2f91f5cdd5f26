//! Tool poisoning and rug-pull defences: pinned tool definitions and hostile-text checks.
//!
//! A **pin** is the SHA-256 of a tool definition's canonical JSON (keys sorted, no
//! insignificant whitespace, in the spirit of RFC 8785) with the volatile `_meta`
//! removed: name, title, description, input and output schemas, annotations, icons,
//! everything else. A server's `instructions` text is pinned too. Pins live in a
//! [`LockFile`] beside the configuration, written when an operator approves.
//!
//! A [`ToolGate`] decides, each time a catalogue is read, whether a tool is admitted:
//! a tool whose pin is not in the lock file (new, changed, renamed) is quarantined
//! (absent from lists, calls refused as awaiting approval) with a readable diff; tools
//! whose text looks hostile ([`scan`]) are quarantined or flagged as configured.

mod canonical;
mod gate;
mod hostile;
mod lock;

pub use canonical::{canonical_json, sha256_hex};
pub use gate::{Admission, GateMode, PinGate, ToolGate};
pub use hostile::{Finding, FindingKind, HostileTextPolicy, scan, strip_invisible};
pub use lock::{LockError, LockFile, LockedServer, LockedTool, diff_definitions, tool_definition, tool_pin};
