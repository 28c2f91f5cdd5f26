//! [`PatternRedactor`]: the reference [`Redactor`].

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use super::Redactor;
use super::known::{KnownSecrets, KnownSet};
use super::scan::{self, Hints, Hit, Scanner, Start, Survey};
use super::unicode;

/// Passes over one string before it counts as crafted; see [`UNSTABLE`].
pub const MAX_PASSES: usize = 8;

/// Replaces a whole string whose redaction did not settle within [`MAX_PASSES`] passes
/// (each replacement exposing another finding: only crafted input does that).
pub const UNSTABLE: &str = "[REDACTED_UNSTABLE]";

/// What a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Kind {
    /// An email address.
    Email,
    /// A North American phone number (or any E.164 number, when enabled).
    Phone,
    /// A US Social Security number.
    Ssn,
    /// A payment card number.
    CreditCard,
    /// An IPv4 address.
    Ipv4,
    /// An IPv6 address.
    Ipv6,
    /// A credential recognised by its shape (API keys, tokens, private keys). Always on.
    Secret,
    /// A credential registered in [`KnownSecrets`]. Always on.
    KnownSecret,
}

impl Kind {
    /// The kinds that can be switched off, in a fixed order.
    pub const PII: [Kind; 6] = [
        Kind::Email,
        Kind::Phone,
        Kind::Ssn,
        Kind::CreditCard,
        Kind::Ipv4,
        Kind::Ipv6,
    ];

    /// The label used in replacements: `EMAIL`, `PHONE`, `SSN`, `CREDIT_CARD`, `IP`
    /// (both IP versions) or `SECRET`.
    pub const fn label(self) -> &'static str {
        match self {
            Kind::Email => "EMAIL",
            Kind::Phone => "PHONE",
            Kind::Ssn => "SSN",
            Kind::CreditCard => "CREDIT_CARD",
            Kind::Ipv4 | Kind::Ipv6 => "IP",
            Kind::Secret | Kind::KnownSecret => "SECRET",
        }
    }

    /// One kind for each distinct placeholder (IPv6 shares IPv4's, a registered secret
    /// any secret's).
    pub(crate) const WITH_OWN_PLACEHOLDER: [Kind; 6] = [
        Kind::Email,
        Kind::Phone,
        Kind::Ssn,
        Kind::CreditCard,
        Kind::Ipv4,
        Kind::Secret,
    ];

    /// The fixed placeholder, e.g. `[REDACTED_EMAIL]`.
    pub const fn placeholder(self) -> &'static str {
        match self {
            Kind::Email => "[REDACTED_EMAIL]",
            Kind::Phone => "[REDACTED_PHONE]",
            Kind::Ssn => "[REDACTED_SSN]",
            Kind::CreditCard => "[REDACTED_CREDIT_CARD]",
            Kind::Ipv4 | Kind::Ipv6 => "[REDACTED_IP]",
            Kind::Secret | Kind::KnownSecret => "[REDACTED_SECRET]",
        }
    }

    pub(crate) const fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// Which kind names a merged finding made of overlapping ones.
    pub(crate) const fn priority(self) -> u8 {
        match self {
            Kind::KnownSecret => 8,
            Kind::Secret => 7,
            Kind::CreditCard => 6,
            Kind::Ssn => 5,
            Kind::Phone => 4,
            Kind::Email => 3,
            Kind::Ipv6 => 2,
            Kind::Ipv4 => 1,
        }
    }

    fn pii_index(self) -> Option<usize> {
        Kind::PII.iter().position(|&k| k == self)
    }
}

/// How a finding is replaced. Secrets always get the fixed `[REDACTED_SECRET]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Style {
    /// A fixed placeholder such as `[REDACTED_EMAIL]`.
    #[default]
    Placeholder,
    /// A keyed hash of the value, stable for one [`SessionKey`]: `[EMAIL:3f9a1c2b]`. The
    /// same value gets the same tag within a session (so a model can still tell two people
    /// apart) and an unrelated tag in another session.
    Pseudonym,
    /// The last four digits of a card, phone or SSN: `[REDACTED_CREDIT_CARD:…1234]`.
    /// Other kinds fall back to the placeholder.
    Partial,
}

/// The per-session key of [`Style::Pseudonym`] (HMAC-SHA256).
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// A key from the operating system's random source ([`crate::random::fill`]).
    ///
    /// # Errors
    /// The random source failed. There is no fallback to a weaker key: a guessable key
    /// would let anyone who sees a pseudonym test candidate values against it.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        crate::random::fill(&mut key)?;
        Ok(Self(key))
    }

    /// A key from fixed bytes (tests, or a key derived from the gateway session id).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// One detected value: its kind and byte range in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    kind: Kind,
    range: Range<usize>,
}

impl Finding {
    /// What was found.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Where, in bytes.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }
}

/// Builds a [`PatternRedactor`]. Every PII kind is on by default, with placeholders.
#[derive(Debug, Clone)]
#[must_use]
pub struct PatternRedactorBuilder {
    enabled: u16,
    styles: [Style; 6],
    e164: bool,
    documentation_domains: bool,
    known: Option<Arc<KnownSecrets>>,
    key: Option<SessionKey>,
}

impl Default for PatternRedactorBuilder {
    fn default() -> Self {
        Self {
            enabled: Kind::PII.iter().fold(0, |acc, k| acc | k.bit()),
            styles: [Style::Placeholder; 6],
            e164: false,
            documentation_domains: false,
            known: None,
            key: None,
        }
    }
}

const ALWAYS_ON: u16 = Kind::Secret.bit() | Kind::KnownSecret.bit();

impl PatternRedactorBuilder {
    /// Detects exactly these PII kinds (secrets are always detected).
    pub fn only(mut self, kinds: &[Kind]) -> Self {
        self.enabled = kinds.iter().fold(0, |acc, k| acc | k.bit());
        self
    }

    /// Turns detection of `kind` on.
    pub fn enable(mut self, kind: Kind) -> Self {
        self.enabled |= kind.bit();
        self
    }

    /// Turns detection of `kind` off. Has no effect on [`Kind::Secret`] and
    /// [`Kind::KnownSecret`], which cannot be switched off.
    pub fn disable(mut self, kind: Kind) -> Self {
        self.enabled &= !kind.bit();
        self
    }

    /// The replacement style of every PII kind.
    pub fn style(mut self, style: Style) -> Self {
        self.styles = [style; 6];
        self
    }

    /// The replacement style of one PII kind. Ignored for secrets.
    pub fn style_for(mut self, kind: Kind, style: Style) -> Self {
        if let Some(i) = kind.pii_index() {
            self.styles[i] = style;
        }
        self
    }

    /// Also accept international numbers written from `+` and a country code as phone
    /// numbers: 8 to 15 digits, in groups split by single spaces, `-`, `.` or `/`, one
    /// group possibly in parentheses, a trunk `(0)` allowed after the country code
    /// (`+442079460958`, `+44 20 7946 0958`, `+49 (0) 30 1234567`). Off by default: only
    /// North American numbers are phone numbers then.
    pub fn e164(mut self, on: bool) -> Self {
        self.e164 = on;
        self
    }

    /// Also redact email addresses at the domains reserved for documentation and
    /// testing (RFC 2606 and 6761: `example.com`, `example.net`, `example.org` and
    /// names under them, and names under `.test`, `.example`, `.invalid` and
    /// `.localhost`). Off by default: such an address is a placeholder in an example,
    /// not anyone's address.
    pub fn documentation_domains(mut self, on: bool) -> Self {
        self.documentation_domains = on;
        self
    }

    /// The registry of known secrets to scrub (shared with the credential store). Without
    /// one, the redactor gets its own empty registry.
    pub fn known_secrets(mut self, known: Arc<KnownSecrets>) -> Self {
        self.known = Some(known);
        self
    }

    /// The pseudonym key. Without one, a random key is drawn at [`build`](Self::build);
    /// if the random source fails there, the redactor has no key and writes placeholders
    /// where it would write pseudonyms (it never uses a weaker key).
    pub fn session_key(mut self, key: SessionKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Compiles the redactor.
    pub fn build(self) -> PatternRedactor {
        PatternRedactor {
            scanner: Arc::new(Scanner::new(
                self.enabled | ALWAYS_ON,
                self.e164,
                self.documentation_domains,
            )),
            styles: self.styles,
            known: self.known.unwrap_or_default(),
            key: self.key.or_else(|| match SessionKey::random() {
                Ok(key) => Some(key),
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "the random source failed: no pseudonym key, pseudonyms are written as placeholders"
                    );
                    None
                }
            }),
        }
    }
}

/// The reference [`Redactor`]: hand-written detectors behind a byte-class prefilter, and
/// a multi-pattern scrubber for known secrets.
///
/// Cheap to clone (the compiled parts are shared). See the [module docs](super) for
/// what each detector accepts.
#[derive(Clone)]
pub struct PatternRedactor {
    scanner: Arc<Scanner>,
    styles: [Style; 6],
    pub(crate) known: Arc<KnownSecrets>,
    /// `None` only if the random source failed at build: pseudonyms become placeholders.
    key: Option<SessionKey>,
}

impl fmt::Debug for PatternRedactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on: Vec<Kind> = Kind::PII.into_iter().filter(|&k| self.scanner.on(k)).collect();
        f.debug_struct("PatternRedactor")
            .field("kinds", &on)
            .field("styles", &self.styles)
            .field("e164", &self.scanner.e164)
            .field("documentation_domains", &self.scanner.documentation_domains)
            .field("known_secrets", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl PatternRedactor {
    /// A builder with every PII kind on and placeholder replacements.
    pub fn builder() -> PatternRedactorBuilder {
        PatternRedactorBuilder::default()
    }

    /// Secrets only (private keys, provider API keys, bearer tokens, passwords in URLs)
    /// and no personal data: what the gateway scrubs from every response and audit
    /// record by default. Register the credentials you hold with
    /// [`Self::add_known_secret`] so they are scrubbed too.
    pub fn secrets_only() -> Self {
        Self::builder().only(&[]).build()
    }

    /// The same detectors and registry with another pseudonym key: one per gateway
    /// session, so pseudonyms are stable within a session and unrelated across sessions.
    #[must_use]
    pub fn with_session_key(&self, key: SessionKey) -> Self {
        Self {
            key: Some(key),
            ..self.clone()
        }
    }

    /// The registry of known secrets this redactor scrubs.
    pub fn known_secrets(&self) -> &Arc<KnownSecrets> {
        &self.known
    }

    /// Registers a secret to scrub; shorthand for `known_secrets().add(secret)`.
    pub fn add_known_secret(&self, secret: &SecretString) -> bool {
        self.known.add(secret)
    }

    /// Every value the redactor would replace in `input`, in order, overlapping findings
    /// merged.
    pub fn find(&self, input: &str) -> Vec<Finding> {
        self.find_under(None, input)
    }

    /// Every value the redactor would replace in `input` as the value of the JSON key
    /// `key` (which may name a phone number, an SSN, a card, a version or a
    /// credential), in order, overlapping findings merged.
    pub fn find_under(&self, key: Option<&str>, input: &str) -> Vec<Finding> {
        let hints = key.map(super::json::key_hints).unwrap_or_default();
        if hints.secret {
            return (!input.is_empty() && input != Kind::Secret.placeholder())
                .then_some(Finding {
                    kind: Kind::Secret,
                    range: 0..input.len(),
                })
                .into_iter()
                .collect();
        }
        let mut found = Vec::new();
        self.known
            .with_snapshot(|known| self.scan_folding(input.as_bytes(), hints, known, &mut found));
        scan::merge(&mut found);
        found
            .into_iter()
            .map(|h| Finding {
                kind: h.kind,
                range: h.start..h.end,
            })
            .collect()
    }

    /// The findings of one pass over `h` (unsorted), read as it is and, when it holds
    /// characters that [`unicode::fold`] changes, also folded (and mapped back).
    fn scan_folding(&self, h: &[u8], hints: Hints, known: &KnownSet, found: &mut Vec<Hit>) {
        self.scanner.scan(h, Start::WHOLE, hints, known, found);
        if unicode::folds(h) {
            let folded = unicode::Folded::new(h);
            let from = found.len();
            self.scanner.scan(&folded.text, Start::WHOLE, hints, known, found);
            for hit in &mut found[from..] {
                (hit.start, hit.end) = folded.original(hit.start, hit.end);
            }
        }
    }

    /// Redacts `h`, which holds characters that [`unicode::fold`] changes: every pass
    /// reads it as it is and folded, and replaces the original span of each finding
    /// (invisible characters inside it included). `None` when nothing was found. Such
    /// strings are rare; this path trades speed for simplicity.
    pub(crate) fn redact_folding(
        &self,
        h: &[u8],
        hints: Hints,
        known: &KnownSet,
        found: &mut Vec<Hit>,
    ) -> Option<Vec<u8>> {
        if hints.secret {
            return credential_value(h).map(|p| p.as_bytes().to_vec());
        }
        let mut out: Option<Vec<u8>> = None;
        for _ in 0..MAX_PASSES {
            let cur = out.as_deref().unwrap_or(h);
            found.clear();
            self.scan_folding(cur, hints, known, found);
            if found.is_empty() {
                return out;
            }
            scan::merge(found);
            let mut next = Vec::with_capacity(cur.len() + 16 * found.len());
            let mut last = 0;
            let mut text = String::new();
            for hit in found.iter() {
                next.extend_from_slice(&cur[last..hit.start]);
                text.clear();
                self.render(
                    hit.kind,
                    &unicode::fold_bytes(&cur[hit.start..hit.end]),
                    &mut text,
                );
                next.extend_from_slice(text.as_bytes());
                last = hit.end;
            }
            next.extend_from_slice(&cur[last..]);
            out = Some(next);
        }
        Some(UNSTABLE.as_bytes().to_vec())
    }

    /// [`Self::redact_folding`] of a string.
    pub(crate) fn redact_folding_str(
        &self,
        s: &str,
        hints: Hints,
        known: &KnownSet,
        found: &mut Vec<Hit>,
    ) -> Option<String> {
        // Findings start and end at character boundaries (mapped back from the folded
        // copy, or ASCII bytes), so the output is UTF-8; checked all the same.
        self.redact_folding(s.as_bytes(), hints, known, found).map(|b| {
            String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
    }

    /// Redacts bytes that need not be UTF-8 (a child's stderr, a raw body). Invalid
    /// sequences are kept as they are; every detector works on ASCII.
    pub fn redact_bytes<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        match self.known.with_snapshot(|known| {
            if unicode::folds(input) {
                self.redact_folding(input, Hints::default(), known, &mut Vec::new())
            } else {
                self.redact_with(input, Hints::default(), known, &mut Vec::new())
            }
        }) {
            Some(out) => Cow::Owned(out),
            None => Cow::Borrowed(input),
        }
    }

    /// The registry as it stands (for the property checks, which scan directly).
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn snapshot(&self) -> Arc<KnownSet> {
        self.known.snapshot()
    }

    pub(crate) fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    /// [`Scanner::survey`] with the registered secrets: `None` when nothing in `h` can
    /// be found (no trigger, no `earer `, no registered secret), else where the scan
    /// starts. A string that holds only a registered secret starts past its end: the
    /// registry's automaton runs on the whole string in [`Scanner::scan`] anyway.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn survey(&self, known: &KnownSet, h: &[u8]) -> Option<Start> {
        match (self.scanner.survey(h), &known.automaton) {
            (Some(start), _) => Some(start),
            (None, None) => None,
            (None, Some(ac)) => ac.is_match(h).then_some(past_end(h)),
        }
    }

    /// [`Scanner::survey_text`] with the registered secrets: [`Survey::Nothing`] when
    /// nothing in `h` can be found (no trigger, no `earer `, no character that folds,
    /// no registered secret). A string that holds only a registered secret is scanned
    /// from its end, as in [`Self::survey`].
    #[inline]
    pub(crate) fn survey_text(&self, known: &KnownSet, h: &[u8]) -> Survey {
        match (self.scanner.survey_text(h), &known.automaton) {
            (Survey::Nothing, Some(ac)) if ac.is_match(h) => Survey::Scan(past_end(h)),
            (survey, _) => survey,
        }
    }

    /// Redacts `h`; `None` when nothing was found.
    ///
    /// Some rejections depend on context (an address glued to a token is not an address),
    /// and a replacement changes the context. So the output is scanned again until
    /// nothing more is found: that makes redaction idempotent. Only strings that had
    /// findings pay for the extra pass. Real text settles after one or two passes; a
    /// string still changing after [`MAX_PASSES`] is crafted, and is replaced as a whole
    /// by [`UNSTABLE`] (fail closed, and still idempotent).
    pub(crate) fn redact_with(
        &self,
        h: &[u8],
        hints: Hints,
        known: &KnownSet,
        found: &mut Vec<Hit>,
    ) -> Option<Vec<u8>> {
        if hints.secret {
            return credential_value(h).map(|p| p.as_bytes().to_vec());
        }
        let mut out = self.replace_once(h, hints, known, found)?;
        for _ in 1..MAX_PASSES {
            match self.replace_once(&out, hints, known, found) {
                Some(next) => out = next,
                None => return Some(out),
            }
        }
        Some(UNSTABLE.as_bytes().to_vec())
    }

    fn replace_once(
        &self,
        h: &[u8],
        hints: Hints,
        known: &KnownSet,
        found: &mut Vec<Hit>,
    ) -> Option<Vec<u8>> {
        found.clear();
        self.scanner.scan(h, Start::WHOLE, hints, known, found);
        if found.is_empty() {
            return None;
        }
        scan::merge(found);
        let mut out = Vec::with_capacity(h.len() + 16 * found.len());
        self.splice_bytes(h, found, &mut out);
        Some(out)
    }

    /// Writes `h` with the (merged) findings `found` replaced to `out`.
    fn splice_bytes(&self, h: &[u8], found: &[Hit], out: &mut Vec<u8>) {
        let mut last = 0;
        let mut text = String::new();
        for hit in found {
            out.extend_from_slice(&h[last..hit.start]);
            text.clear();
            self.render(hit.kind, &h[hit.start..hit.end], &mut text);
            out.extend_from_slice(text.as_bytes());
            last = hit.end;
        }
        out.extend_from_slice(&h[last..]);
    }

    /// Redacts `s` into `out`; returns `false` (leaving `out` unspecified) when nothing
    /// was found. The text version of [`Self::redact_with`]: the output is assembled
    /// from pieces of `s` cut at character boundaries and from ASCII replacements, so
    /// it is valid UTF-8 by construction and is not validated again. `spare` is a
    /// second buffer for the passes after the first; both keep their capacity across
    /// calls. No trigger byte of `s` comes before `from` (see [`Scanner::survey`]).
    ///
    /// A pass after the first knows where its text can differ from the text before: not
    /// before the first finding replaced. So it looks for triggers from there (or from
    /// where the previous pass did, if earlier), and for `earer ` only if the previous
    /// pass saw one (a replacement cannot make one: placeholders hold no lower-case `r`).
    /// When nothing is left there for it to look at, it is skipped ([`Self::settled`]).
    #[allow(clippy::too_many_arguments, reason = "internal; the buffers are reused")]
    pub(crate) fn redact_into(
        &self,
        s: &str,
        start: Start,
        hints: Hints,
        known: &KnownSet,
        found: &mut Vec<Hit>,
        out: &mut String,
        spare: &mut String,
    ) -> bool {
        if hints.secret {
            let Some(p) = credential_value(s.as_bytes()) else {
                return false;
            };
            out.clear();
            out.push_str(p);
            return true;
        }
        let Some(next) = self.scan_once(s, start, hints, known, found) else {
            return false;
        };
        self.copy_and_settle(s, next, hints, known, found, out, spare);
        true
    }

    /// The output of the first pass over `s`, whose findings are `found`, written to
    /// `out`, and then the passes after it unless [`Self::settled`] says they would find
    /// nothing.
    #[allow(clippy::too_many_arguments, reason = "internal; the buffers are reused")]
    fn copy_and_settle(
        &self,
        s: &str,
        next: Start,
        hints: Hints,
        known: &KnownSet,
        found: &mut Vec<Hit>,
        out: &mut String,
        spare: &mut String,
    ) {
        let next = self.write_once(s, next, found, out);
        if !self.settled(s.as_bytes(), next, known, found) {
            self.settle(1, next, hints, known, found, out, spare);
        }
    }

    /// [`Self::redact_into`] for a string the caller owns, redacted where it is: when
    /// the findings of the first pass are near its end (see [`Self::growth_in_place`]),
    /// they are replaced in `s` itself, which saves an allocation and a copy of the
    /// whole string (a small growth usually fits the allocation as it is), and the
    /// second pass, unless [`Self::settled`] says it can be skipped, scans `s`. Passes
    /// that find something run through `out` and `spare` as in [`Self::redact_into`],
    /// and the result is moved into `s`. Returns whether `s` changed.
    #[allow(clippy::too_many_arguments, reason = "internal; the buffers are reused")]
    pub(crate) fn redact_string(
        &self,
        s: &mut String,
        start: Start,
        hints: Hints,
        known: &KnownSet,
        found: &mut Vec<Hit>,
        out: &mut String,
        spare: &mut String,
    ) -> bool {
        if hints.secret {
            let Some(p) = credential_value(s.as_bytes()) else {
                return false;
            };
            s.clear();
            s.push_str(p);
            return true;
        }
        let Some(next) = self.scan_once(s, start, hints, known, found) else {
            return false;
        };
        if let Some(growth) = self.growth_in_place(s, found) {
            // Decided on the text as it was, before the splice.
            let settled = self.settled(s.as_bytes(), next, known, found);
            s.reserve_exact(growth);
            for hit in found.iter().rev() {
                s.replace_range(hit.start..hit.end, hit.kind.placeholder());
            }
            // `s` is the output of the first pass. The second, if it is needed, looks at
            // `s` itself (it usually finds nothing: no copy at all then).
            if settled {
                return true;
            }
            let Some(after) = self.scan_once(s, next, hints, known, found) else {
                return true;
            };
            let next = self.write_once(s, after, found, out);
            self.settle(2, next, hints, known, found, out, spare);
        } else {
            self.copy_and_settle(s, next, hints, known, found, out, spare);
        }
        // Into the string's own allocation when it fits; otherwise the string takes the
        // output buffer and leaves its old one as the next output buffer.
        if s.capacity() >= out.len() {
            s.clear();
            s.push_str(out);
        } else {
            std::mem::swap(s, out);
        }
        true
    }

    /// How many bytes `s` grows by when its (merged) findings `found` are replaced in
    /// `s` itself, the last first; `None` when that is not done: unless every finding
    /// gets its plain placeholder and the bytes moved (everything after each finding)
    /// are no more than the string, when it costs no more than building a copy, and
    /// usually no allocation (the growth is requested exactly: a string copied from
    /// the wire has no spare capacity, and an exact request is one the allocator can
    /// often grant where the string is).
    fn growth_in_place(&self, s: &str, found: &[Hit]) -> Option<usize> {
        let n = s.len();
        let mut moved = 0;
        let mut len = n;
        for hit in found {
            if !self.plain(hit.kind) || !s.is_char_boundary(hit.start) || !s.is_char_boundary(hit.end) {
                return None;
            }
            moved += n - hit.end;
            len = len - (hit.end - hit.start) + hit.kind.placeholder().len();
        }
        (moved <= n).then(|| len.saturating_sub(n))
    }

    /// Whether findings of `kind` get the fixed placeholder.
    fn plain(&self, kind: Kind) -> bool {
        kind.pii_index()
            .is_none_or(|i| self.styles[i] == Style::Placeholder)
    }

    /// The passes after the first `done`, on `out` (the output of the pass before,
    /// which started its search at `next`), until one finds nothing or [`MAX_PASSES`]
    /// have.
    #[allow(clippy::too_many_arguments, reason = "internal; the buffers are reused")]
    fn settle(
        &self,
        done: usize,
        mut next: Start,
        hints: Hints,
        known: &KnownSet,
        found: &mut Vec<Hit>,
        out: &mut String,
        spare: &mut String,
    ) {
        for _ in done..MAX_PASSES {
            let Some(after) = self.scan_once(out, next, hints, known, found) else {
                return;
            };
            next = self.write_once(out, after, found, spare);
            std::mem::swap(out, spare);
        }
        out.clear();
        out.push_str(UNSTABLE);
    }

    /// Whether the output of a first pass over `h`, which found `found` (merged), is
    /// already final, so that the second pass can be skipped: it would look from
    /// `next.from` on (see [`Self::redact_into`]) and find nothing there.
    ///
    /// Every finding of a pass is set off by a trigger byte, by an `earer `, or by a
    /// registered secret. A replacement cannot make an `earer `, nor a match of a
    /// registered secret unless one could overlap a placeholder (which the registry
    /// tells: `clear_of_placeholders`); what is left are the triggers from `next.from`
    /// on. The `A`s and `_`s of the plain placeholders are inert (no prefix starts
    /// there, and what [`secret::prefix_at`] reads around them lies inside the
    /// placeholder: the test `placeholders_are_inert` holds every placeholder to that).
    /// The triggers between and after the findings are bytes of `h` as they were, and
    /// none of them set off a finding in the first pass (a finding holds the trigger
    /// that set it off, and these lie outside every finding; the one exception, the `A`
    /// of `BEARER ` before its token, has no fence between it and the token's
    /// placeholder, so the walk below stops at it). A detector decides on the
    /// bytes it reads, so one of them can only decide otherwise in the second pass if it
    /// reads a byte that changed: a byte of a placeholder. It cannot when a fence
    /// ([`FENCES`]) stands between the trigger and every placeholder next to it, and
    /// the scan's state (the email and IPv6 floors) then matters as little: what it
    /// bounds cannot reach across a fence either. So the second pass is skipped when,
    /// walking out from each finding over the text beside it, a fence (or the next
    /// finding, or the end) comes before any trigger. (In a table of numbers that is the
    /// `, ` between cells.) Pseudonyms and partial forms have digits and `:` in them, so
    /// a pass that wrote one is always checked by a second.
    ///
    /// [`secret::prefix_at`]: super::detect::secret::prefix_at
    #[inline(never)]
    fn settled(&self, h: &[u8], next: Start, known: &KnownSet, found: &[Hit]) -> bool {
        if (known.automaton.is_some() && !known.clear_of_placeholders) || next.earer {
            return false;
        }
        let mut from = next.from;
        for (k, hit) in found.iter().enumerate() {
            let Some(beside) = h.get(from..hit.start) else {
                return false;
            };
            if !self.plain(hit.kind) || !fenced(beside.iter().rev()) || (k > 0 && !fenced(beside.iter())) {
                return false;
            }
            from = hit.end;
        }
        h.get(from..).is_some_and(|after| fenced(after.iter()))
    }

    /// The scan of one pass of [`Self::redact_into`]: the (merged) findings of `h` from
    /// `start` in `found`, and where the next pass can start; `None` when there are
    /// none.
    fn scan_once(
        &self,
        h: &str,
        start: Start,
        hints: Hints,
        known: &KnownSet,
        found: &mut Vec<Hit>,
    ) -> Option<Start> {
        found.clear();
        let earer = self.scanner.scan(h.as_bytes(), start, hints, known, found);
        if found.is_empty() {
            return None;
        }
        scan::merge(found);
        // The text before the first finding stays as it is (and no replacement can
        // make a `Bearer ` that ends in it).
        Some(Start {
            from: start.from.min(found[0].start),
            earer,
            earer_from: start.earer_from.min(found[0].start),
        })
    }

    /// The output of one pass: `h` with the findings `found` of [`Self::scan_once`]
    /// replaced, in `out` (cleared first). Returns where the next pass starts: `next`,
    /// or the whole string if a finding was not cut at character boundaries.
    fn write_once(&self, h: &str, next: Start, found: &[Hit], out: &mut String) -> Start {
        out.clear();
        let need = h.len() + 16 * found.len();
        if out.capacity() < need {
            // A fresh allocation rather than `reserve`, which would copy the old
            // (cleared) contents over.
            *out = String::with_capacity(need);
        }
        let mut last = 0;
        for hit in found {
            let (Some(keep), Some(matched)) = (h.get(last..hit.start), h.get(hit.start..hit.end)) else {
                // Every detector starts and ends on an ASCII byte, so this is not
                // reached; should it be, the byte path keeps the output well-formed.
                let mut bytes = Vec::with_capacity(h.len());
                self.splice_bytes(h.as_bytes(), found, &mut bytes);
                out.clear();
                out.push_str(&String::from_utf8_lossy(&bytes));
                return Start::WHOLE;
            };
            out.push_str(keep);
            self.render(hit.kind, matched.as_bytes(), out);
            last = hit.end;
        }
        out.push_str(h.get(last..).unwrap_or_default());
        next
    }

    /// Writes the replacement of `matched` (a value of kind `kind`) to `out`.
    pub(crate) fn render(&self, kind: Kind, matched: &[u8], out: &mut String) {
        let style = kind.pii_index().map_or(Style::Placeholder, |i| self.styles[i]);
        match style {
            Style::Pseudonym => {
                if let Some(Ok(mut mac)) = self.key.as_ref().map(|k| Hmac::<Sha256>::new_from_slice(&k.0)) {
                    mac.update(kind.label().as_bytes());
                    mac.update(&[0]);
                    mac.update(&normalize(kind, matched));
                    let tag = mac.finalize().into_bytes();
                    out.push('[');
                    out.push_str(kind.label());
                    out.push(':');
                    for b in tag.iter().take(4) {
                        let [hi, lo] = hex_byte(*b);
                        out.push(char::from(hi));
                        out.push(char::from(lo));
                    }
                    out.push(']');
                    return;
                }
            }
            Style::Partial if matches!(kind, Kind::CreditCard | Kind::Phone | Kind::Ssn) => {
                let digits: Vec<u8> = matched.iter().copied().filter(u8::is_ascii_digit).collect();
                let last4 = &digits[digits.len().saturating_sub(4)..];
                let p = kind.placeholder();
                out.push_str(&p[..p.len() - 1]);
                out.push_str(":\u{2026}");
                out.extend(last4.iter().map(|&d| char::from(d)));
                out.push(']');
                return;
            }
            Style::Placeholder | Style::Partial => {}
        }
        out.push_str(kind.placeholder());
    }
}

/// Bytes that no detector turning a trigger down reads across, in either direction:
/// list and cell separators, quotes and brackets. None is part of any value (a digit
/// group, a separator, an address, a token) nor of what a detector skips while looking
/// around a value (spaces, `:`, `=`, `/`, `#`, `$`), so every look left or right stops
/// at one, and reading one decides the look. (The one read that goes on is the search
/// for the end of a PEM block, and a `-----BEGIN` line with a private-key label is
/// always a finding, up to that end.) The test `fences_stop_every_detector` holds the
/// detectors to it.
pub(crate) const FENCES: [u8; 10] = [b',', b';', b'|', b'"', b'<', b'>', b'[', b']', b'{', b'}'];

/// What [`fenced`] makes of a byte: a fence, a trigger, or neither.
static BESIDE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0u8;
    loop {
        if scan::is_trigger(b) {
            t[b as usize] = TRIGGER;
        }
        b = b.wrapping_add(1);
        if b == 0 {
            break;
        }
    }
    let mut k = 0;
    while k < FENCES.len() {
        t[FENCES[k] as usize] = FENCE;
        k += 1;
    }
    t
};
const FENCE: u8 = 1;
const TRIGGER: u8 = 2;

/// Whether `bytes`, walked in order away from a finding, reach a fence (or their end)
/// before a trigger byte.
fn fenced<'a>(bytes: impl Iterator<Item = &'a u8>) -> bool {
    for &b in bytes {
        match BESIDE[usize::from(b)] {
            FENCE => return true,
            TRIGGER => return false,
            _ => {}
        }
    }
    true
}

/// Where the scan of a string that holds only a registered secret starts: past its
/// end, with no `earer ` (the registry's automaton runs on the whole string anyway).
fn past_end(h: &[u8]) -> Start {
    Start {
        from: h.len(),
        earer: false,
        earer_from: h.len(),
    }
}

/// Under a credential key the whole value is a secret: its placeholder, unless `s` is
/// empty or that placeholder already.
fn credential_value(s: &[u8]) -> Option<&'static str> {
    let p = Kind::Secret.placeholder();
    (!s.is_empty() && s != p.as_bytes()).then_some(p)
}

fn hex_byte(b: u8) -> [u8; 2] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]
}

/// The canonical form hashed for a pseudonym, so that spellings of one value agree.
fn normalize(kind: Kind, matched: &[u8]) -> Vec<u8> {
    match kind {
        Kind::CreditCard | Kind::Ssn => matched.iter().copied().filter(u8::is_ascii_digit).collect(),
        Kind::Phone => {
            let d: Vec<u8> = matched.iter().copied().filter(u8::is_ascii_digit).collect();
            if d.len() == 11 && d[0] == b'1' {
                d[1..].to_vec()
            } else {
                d
            }
        }
        _ => matched.to_ascii_lowercase(),
    }
}

impl Redactor for PatternRedactor {
    fn redact_str<'a>(&self, input: &'a str) -> Cow<'a, str> {
        let redacted = self.known.with_snapshot(|known| {
            let start = match self.survey_text(known, input.as_bytes()) {
                Survey::Nothing => return None,
                Survey::Folds => {
                    return self.redact_folding_str(input, Hints::default(), known, &mut Vec::new());
                }
                Survey::Scan(start) => start,
            };
            let mut out = String::new();
            self.redact_into(
                input,
                start,
                Hints::default(),
                known,
                &mut Vec::new(),
                &mut out,
                &mut String::new(),
            )
            .then_some(out)
        });
        redacted.map_or(Cow::Borrowed(input), Cow::Owned)
    }

    fn redact_json(&self, value: &mut Value) {
        super::json::redact(self, value);
    }
}

/// Redaction settings of one endpoint, as configuration data.
///
/// ```
/// use mcp_guard_core::redact::{Kind, RedactionConfig, Style};
///
/// let cfg: RedactionConfig = serde_json::from_value(serde_json::json!({
///     "detect": ["email", "credit-card"],
///     "style": "pseudonym",
///     "style-overrides": { "credit-card": "partial" },
/// }))?;
/// let redactor = cfg.build(None);
/// # let _ = (Kind::Email, Style::Partial, redactor);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
#[non_exhaustive]
pub struct RedactionConfig {
    /// PII kinds to detect (default: all). Secrets are always detected.
    pub detect: Vec<Kind>,
    /// Replacement style of every PII kind.
    pub style: Style,
    /// Per-kind style overrides.
    pub style_overrides: std::collections::BTreeMap<Kind, Style>,
    /// Accept international numbers written from `+` and a country code as phone
    /// numbers (see [`PatternRedactorBuilder::e164`]).
    pub e164: bool,
    /// Also redact email addresses at documentation domains (`example.com`, `.test`…;
    /// see [`PatternRedactorBuilder::documentation_domains`]). Off by default.
    pub documentation_domains: bool,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        Self {
            detect: Kind::PII.to_vec(),
            style: Style::Placeholder,
            style_overrides: std::collections::BTreeMap::default(),
            e164: false,
            documentation_domains: false,
        }
    }
}

impl RedactionConfig {
    /// Compiles the settings, sharing `known` (or a fresh registry) for secret scrubbing.
    pub fn build(&self, known: Option<Arc<KnownSecrets>>) -> PatternRedactor {
        let mut b = PatternRedactor::builder()
            .only(&self.detect)
            .style(self.style)
            .e164(self.e164)
            .documentation_domains(self.documentation_domains);
        for (&k, &s) in &self.style_overrides {
            b = b.style_for(k, s);
        }
        if let Some(known) = known {
            b = b.known_secrets(known);
        }
        b.build()
    }
}
