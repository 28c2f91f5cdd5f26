//! What a gateway session has done so far, for flow rules: tool [`Label`]s and a
//! session's [`Taint`].
//!
//! Allow-lists judge each call alone; the attacks that hurt agents are sequences. An
//! agent reads content someone else controls (an issue, a web page, an email) that
//! carries instructions, reads private data, and sends it out: the "lethal trifecta".
//! The gateway sees every call of a session in order, so it can refuse the last step.
//!
//! - Tools carry labels from configuration (never from the upstream's own annotations,
//!   which the upstream controls): [`Label::UntrustedInput`], [`Label::PrivateData`],
//!   [`Label::Egress`], [`Label::Destructive`]. A result that the hostile-text checks
//!   flag as a suspected injection counts as untrusted input whatever its tool's
//!   labels.
//! - Each gateway session keeps a [`Taint`]: the set of labels its calls have carried,
//!   and for each label the first call that set it (for `explain` and the audit
//!   trail). A decision reads the set with one atomic load; the history a set stands
//!   for can be arbitrarily long.
//! - Flow rules ([`FlowRule`](crate::policy::FlowRule)) refuse, or send to a person for
//!   approval, calls with some labels once the session's taint holds others.
//!
//! The taint lives in the session, ends with it, survives a reconnect (the session is
//! keyed by credential and endpoint) and, through a [`TaintJournal`], a restart of the
//! gateway for the same credential, endpoint and delegation chain. An operator clears
//! it with `mcp-guard sessions clear-taint`.
//!
//! ```
//! use mcp_guard_core::flow::{Label, Labels, Taint, TaintMark, TaintReason};
//! let taint = Taint::new();
//! assert!(taint.labels().is_empty());
//! let mark = TaintMark::new(Label::UntrustedInput, TaintReason::Labelled, "issues__read_issue");
//! assert!(taint.record(mark));
//! assert!(taint.labels().contains(Label::UntrustedInput));
//! assert_eq!(taint.first(Label::UntrustedInput).unwrap().name, "issues__read_issue");
//! assert_eq!("untrusted-input,egress".parse::<Labels>().unwrap().len(), 2);
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::BoxError;

/// What a tool can do, as far as flow rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Label {
    /// Returns content that others control (an issue, a web page, an email), which may
    /// carry instructions aimed at the model.
    UntrustedInput,
    /// Returns private data (a private repository, a mailbox, a database).
    PrivateData,
    /// Can send data out of the organisation (post, mail, fetch a URL it is given).
    Egress,
    /// Changes or deletes things that are hard to get back.
    Destructive,
}

impl Label {
    /// Every label, in bit order.
    pub const ALL: [Self; 4] = [
        Self::UntrustedInput,
        Self::PrivateData,
        Self::Egress,
        Self::Destructive,
    ];

    const fn bit(self) -> u8 {
        match self {
            Self::UntrustedInput => 1,
            Self::PrivateData => 2,
            Self::Egress => 4,
            Self::Destructive => 8,
        }
    }

    /// The name used in configuration and records (`untrusted-input`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UntrustedInput => "untrusted-input",
            Self::PrivateData => "private-data",
            Self::Egress => "egress",
            Self::Destructive => "destructive",
        }
    }

    /// How a person reads it in an error or on the approval page.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::UntrustedInput => "read content that others control",
            Self::PrivateData => "read private data",
            Self::Egress => "send data out",
            Self::Destructive => "change or delete things",
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("unknown label {0:?} (use untrusted-input, private-data, egress or destructive)")]
pub struct UnknownLabel(pub String);

impl FromStr for Label {
    type Err = UnknownLabel;
    fn from_str(s: &str) -> Result<Self, UnknownLabel> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == s.trim())
            .ok_or_else(|| UnknownLabel(s.to_owned()))
    }
}

/// A set of [`Label`]s (a bit set: copying and testing are free).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
#[allow(clippy::exhaustive_structs, reason = "a bit set; the bits are private")]
pub struct Labels(u8);

impl Labels {
    /// No label.
    pub const EMPTY: Self = Self(0);

    /// The set of `labels`.
    pub fn of(labels: impl IntoIterator<Item = Label>) -> Self {
        labels.into_iter().fold(Self::EMPTY, Self::with)
    }

    /// This set and `label`.
    #[must_use]
    pub const fn with(self, label: Label) -> Self {
        Self(self.0 | label.bit())
    }

    /// Both sets.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The labels in both sets.
    #[must_use]
    pub const fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Whether `label` is in the set.
    pub const fn contains(self, label: Label) -> bool {
        self.0 & label.bit() != 0
    }

    /// Whether every label of `other` is in this set.
    pub const fn contains_all(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the two sets share a label.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many labels the set holds.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The labels, in [`Label::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Label> {
        Label::ALL.into_iter().filter(move |l| self.contains(*l))
    }
}

/// For `#[serde(skip_serializing_if)]`, which passes a reference.
#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
pub(crate) fn no_labels(l: &Labels) -> bool {
    l.is_empty()
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Labels {
    /// `untrusted-input,egress`; `none` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, l) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(l.as_str())?;
        }
        Ok(())
    }
}

impl FromStr for Labels {
    type Err = UnknownLabel;
    /// Comma-separated names; `none` or empty is the empty set.
    fn from_str(s: &str) -> Result<Self, UnknownLabel> {
        let s = s.trim();
        if s.is_empty() || s == "none" {
            return Ok(Self::EMPTY);
        }
        s.split(',')
            .map(str::parse)
            .collect::<Result<Vec<Label>, _>>()
            .map(Self::of)
    }
}

impl FromIterator<Label> for Labels {
    fn from_iter<I: IntoIterator<Item = Label>>(iter: I) -> Self {
        Self::of(iter)
    }
}

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Label>::deserialize(d).map(Self::of)
    }
}

/// Why a call tainted its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TaintReason {
    /// The tool carries the label in configuration.
    Labelled,
    /// The hostile-text checks flagged the result as a suspected injection
    /// (untrusted input whatever the tool's labels).
    SuspectedInjection,
}

impl fmt::Display for TaintReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Labelled => "labelled",
            Self::SuspectedInjection => "suspected injection in its result",
        })
    }
}

/// The call that first set one label of a session's taint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaintMark {
    /// The label it set.
    pub label: Label,
    /// Why.
    pub reason: TaintReason,
    /// The name the client called (namespaced).
    pub name: String,
    /// The configured server id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The upstream's own tool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The audit record of that call (its event id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// The client's JSON-RPC id of that call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The session the call was made in (another than the holder's when the taint
    /// was carried over from before a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// When.
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
}

impl TaintMark {
    /// A mark of `label` set now by a call of `name`.
    pub fn new(label: Label, reason: TaintReason, name: impl Into<String>) -> Self {
        Self {
            label,
            reason,
            name: name.into(),
            server: None,
            tool: None,
            call: None,
            request_id: None,
            session: None,
            at: SystemTime::now(),
        }
    }
}

impl fmt::Display for TaintMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} since {} by {} ({})",
            self.label,
            crate::time::format_rfc3339(self.at),
            self.name,
            self.reason
        )?;
        if let Some(c) = &self.call {
            write!(f, ", audit record {c}")?;
        }
        if let Some(r) = &self.request_id {
            write!(f, ", request {r}")?;
        }
        if let Some(s) = &self.session {
            write!(f, ", in session {s}")?;
        }
        Ok(())
    }
}

mod rfc3339 {
    use std::time::SystemTime;

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::time::format_rfc3339(*t))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        crate::time::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time"))
    }
}

/// Where a session's taint is kept beyond the process (the access store; a cluster
/// store later), so a restarted gateway, or another replica, carries it on.
///
/// Written only when a label is first set or cleared, never on a decision's path.
/// Calls block (SQLite); the gateway makes them off its async workers.
pub trait TaintJournal: Send + Sync + fmt::Debug {
    /// Records that `session` carries `mark` (the first mark of its label).
    ///
    /// # Errors
    /// When the store cannot be written.
    fn save_mark(&self, session: &str, mark: &TaintMark) -> Result<(), BoxError>;
}

/// A gateway session's taint: the labels its calls have carried, with the call that
/// first set each. Shared by the session and its requests.
///
/// Reading the set ([`Taint::labels`]) is one atomic load, so a decision never waits
/// for a lock or a database. Recording takes a short lock, only when a labelled call
/// returns.
#[derive(Debug, Default)]
pub struct Taint {
    labels: AtomicU8,
    marks: Mutex<Vec<TaintMark>>,
    journal: OnceLock<(Arc<dyn TaintJournal>, Arc<str>)>,
}

impl Taint {
    /// An empty taint, kept in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Journals later marks of session `session` to `journal` (set once).
    pub fn journal_to(&self, journal: Arc<dyn TaintJournal>, session: impl Into<Arc<str>>) {
        let _ = self.journal.set((journal, session.into()));
    }

    /// The labels set so far.
    pub fn labels(&self) -> Labels {
        Labels(self.labels.load(Ordering::Acquire))
    }

    /// The call that first set `label`, if any did.
    pub fn first(&self, label: Label) -> Option<TaintMark> {
        self.lock().iter().find(|m| m.label == label).cloned()
    }

    /// The first mark of every label set, in [`Label::ALL`] order.
    pub fn marks(&self) -> Vec<TaintMark> {
        let mut v = self.lock().clone();
        v.sort_by_key(|m| m.label);
        v
    }

    /// The first marks of the labels in `labels`.
    pub fn marks_of(&self, labels: Labels) -> Vec<TaintMark> {
        let mut v: Vec<TaintMark> = self
            .lock()
            .iter()
            .filter(|m| labels.contains(m.label))
            .cloned()
            .collect();
        v.sort_by_key(|m| m.label);
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<TaintMark>> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `mark`; returns whether its label is new to the session (only the first
    /// call to set a label is kept).
    pub fn record(&self, mark: TaintMark) -> bool {
        let mut marks = self.lock();
        if marks.iter().any(|m| m.label == mark.label) {
            return false;
        }
        let bit = mark.label.bit();
        marks.push(mark);
        // Published after the mark, so whoever sees the bit finds the mark.
        self.labels.fetch_or(bit, Ordering::Release);
        true
    }

    /// Journals `mark` (call after [`Taint::record`] returned `true`), blocking. A no-op
    /// without a journal.
    ///
    /// # Errors
    /// When the journal cannot be written.
    pub fn persist(&self, mark: &TaintMark) -> Result<(), BoxError> {
        match self.journal.get() {
            Some((journal, session)) => journal.save_mark(session, mark),
            None => Ok(()),
        }
    }

    /// Whether marks are journalled.
    pub fn is_journalled(&self) -> bool {
        self.journal.get().is_some()
    }

    /// Removes the marks set at or before `before` (every mark when `None`); returns
    /// the labels removed.
    pub fn clear(&self, before: Option<SystemTime>) -> Labels {
        let mut marks = self.lock();
        let mut removed = Labels::EMPTY;
        marks.retain(|m| {
            let gone = before.is_none_or(|t| m.at <= t);
            if gone {
                removed = removed.with(m.label);
            }
            !gone
        });
        let kept = Labels::of(marks.iter().map(|m| m.label));
        self.labels.store(kept.0, Ordering::Release);
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_print_and_compare() {
        let l: Labels = "egress, untrusted-input".parse().unwrap();
        assert_eq!(l.to_string(), "untrusted-input,egress");
        assert!(l.contains(Label::Egress) && !l.contains(Label::PrivateData));
        assert!(l.contains_all(Labels::of([Label::Egress])));
        assert!(!l.contains_all(Labels::of([Label::Egress, Label::PrivateData])));
        assert!(l.intersects(Labels::of([Label::PrivateData, Label::Egress])));
        assert_eq!(Labels::EMPTY.to_string(), "none");
        assert!("none".parse::<Labels>().unwrap().is_empty());
        let e = "egress,exfil".parse::<Labels>().unwrap_err();
        assert!(e.to_string().contains("exfil"), "{e}");
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"["untrusted-input","egress"]"#
        );
        let back: Labels = serde_json::from_str(r#"["egress","untrusted-input"]"#).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn the_first_call_of_a_label_is_kept_and_clearing_honours_time() {
        let t = Taint::new();
        let mut first = TaintMark::new(Label::UntrustedInput, TaintReason::Labelled, "a__read");
        first.at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10);
        assert!(t.record(first));
        assert!(!t.record(TaintMark::new(
            Label::UntrustedInput,
            TaintReason::Labelled,
            "a__other"
        )));
        assert!(t.record(TaintMark::new(
            Label::PrivateData,
            TaintReason::Labelled,
            "b__secret"
        )));
        assert_eq!(t.first(Label::UntrustedInput).unwrap().name, "a__read");
        assert_eq!(t.labels().len(), 2);
        // A clear from before the second mark leaves it.
        let cleared = t.clear(Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(11)));
        assert_eq!(cleared, Labels::of([Label::UntrustedInput]));
        assert_eq!(t.labels(), Labels::of([Label::PrivateData]));
        assert_eq!(t.clear(None), Labels::of([Label::PrivateData]));
        assert!(t.labels().is_empty() && t.marks().is_empty());
    }

    #[test]
    fn marks_round_trip_through_json() {
        let mut m = TaintMark::new(Label::Egress, TaintReason::SuspectedInjection, "x__y");
        m.call = Some("abc-1".into());
        m.server = Some("x".into());
        let text = serde_json::to_string(&m).unwrap();
        let back: TaintMark = serde_json::from_str(&text).unwrap();
        assert_eq!(back.name, m.name);
        assert_eq!(back.reason, TaintReason::SuspectedInjection);
        let micros = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_micros();
        assert_eq!(micros(back.at), micros(m.at));
    }
}
