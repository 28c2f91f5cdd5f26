//! Property checks shared by the fuzz targets (`fuzz/`) and the test that replays
//! `fuzz/regressions/`. Not part of the API.
#![allow(missing_docs)]

use std::sync::OnceLock;

use secrecy::SecretString;
use serde_json::Value;

use super::scan::{Hints, Start, Survey};
use super::{MAX_JSON_DEPTH, PatternRedactor, Redactor, SessionKey, Style, TOO_DEEP};

/// A registered credential the checks plant.
pub const KNOWN: &str = "fz-KnownSecret-7Hq2/x+9";

/// Values that must never survive redaction when planted between `<` and `>`.
pub const PLANTS: &[&str] = &[
    "jane.doe@mailhost.io",
    "(415) 555-0132",
    "+1 415 555 0132",
    "123-45-6789",
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
    "378282246310005",
    "192.168.1.20",
    "2001:db8::8a2e:370:7334",
    "fe80::1%eth0",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_0123456789abcdefghijABCDEFGHIJ012345",
    "sk-proj-abc123DEF456ghi789JKL0",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXZhbHVl",
    KNOWN,
    // Written with characters beyond ASCII: full-width digits, a zero-width space
    // inside, Arabic-Indic digits, a full-width `@`, a tag character inside the
    // registered credential.
    "\u{FF14}\u{FF11}\u{FF11}\u{FF11} \u{FF11}\u{FF11}\u{FF11}\u{FF11} \u{FF11}\u{FF11}\u{FF11}\u{FF11} \u{FF11}\u{FF11}\u{FF11}\u{FF11}",
    "415-555\u{200B}-0132",
    "\u{0661}\u{0662}\u{0663}-\u{0664}\u{0665}-\u{0666}\u{0667}\u{0668}\u{0669}",
    "jane\u{FF20}mailhost.io",
    "fz-Known\u{E0020}Secret-7Hq2/x+9",
];

/// The redactors under test: placeholders, and pseudonyms with partial cards, both
/// scrubbing [`KNOWN`]; and a default one with no registered secret.
pub fn redactors() -> &'static [PatternRedactor; 3] {
    static R: OnceLock<[PatternRedactor; 3]> = OnceLock::new();
    R.get_or_init(|| {
        let a = PatternRedactor::builder().build();
        a.add_known_secret(&SecretString::from(KNOWN));
        let b = PatternRedactor::builder()
            .style(Style::Pseudonym)
            .style_for(super::Kind::CreditCard, Style::Partial)
            .e164(true)
            .known_secrets(std::sync::Arc::clone(a.known_secrets()))
            .session_key(SessionKey::from_bytes([9; 32]))
            .build();
        [a, b, PatternRedactor::builder().build()]
    })
}

/// `data[0]` picks a value to plant (or none), `data[1]` where; the rest is the text.
fn plant(data: &[u8]) -> (Vec<u8>, Option<&'static str>) {
    let Some((&pick, rest)) = data.split_first() else {
        return (Vec::new(), None);
    };
    let Some((&at, text)) = rest.split_first() else {
        return (Vec::new(), None);
    };
    let Some(&value) = PLANTS.get(usize::from(pick)) else {
        return (text.to_vec(), None);
    };
    let at = usize::from(at).min(text.len());
    let mut out = text[..at].to_vec();
    out.extend_from_slice(b" <");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"> ");
    out.extend_from_slice(&text[at..]);
    (out, Some(value))
}

/// Text properties: no panic; idempotent; nothing detectable left; a planted value is
/// gone; the byte API agrees with the string API on valid UTF-8.
///
/// # Panics
/// When a property does not hold.
pub fn check_str(data: &[u8]) {
    let (bytes, planted) = plant(data);
    let text = String::from_utf8_lossy(&bytes);
    check_scan(text.as_bytes());
    // The vector searches for characters that fold against the chunk loop, on the
    // text and on the raw bytes (which need not be UTF-8).
    for h in [text.as_bytes(), &bytes] {
        assert_eq!(
            super::unicode::folds(h),
            super::unicode::folds_by_chunks(h),
            "fold tests disagree on {h:?}"
        );
    }
    for r in redactors() {
        let known = r.snapshot();
        assert!(
            r.survey(&known, text.as_bytes()).is_some()
                || super::unicode::folds(text.as_bytes())
                || r.find(&text).is_empty(),
            "surveyed as empty, yet {:?} found in {text:?}",
            r.find(&text)
        );
        // The one without a registry leaves the registered value.
        let planted = planted.filter(|&p| !p.starts_with("fz-Known") || !r.known_secrets().is_empty());
        let once = r.redact_str(&text);
        let twice = r.redact_str(&once);
        assert_eq!(once, twice, "not idempotent for {text:?}");
        assert!(r.find(&once).is_empty(), "left {:?} in {once:?}", r.find(&once));
        if let Some(p) = planted {
            // The planted occurrence must be gone (the same characters may still appear
            // elsewhere in a form that is not a finding, e.g. glued to a word).
            assert!(
                !once.contains(&format!("<{p}>")),
                "planted {p:?} survived: {once:?}"
            );
        }
        if std::str::from_utf8(&bytes).is_ok() {
            assert_eq!(&*r.redact_bytes(&bytes), once.as_bytes());
        }
        // A string leaf of a document (redacted where it is when it can be) comes out
        // as the text does, unless it is JSON itself.
        if !super::json::looks_like_json(&text) {
            let mut leaf = Value::String(text.clone().into_owned());
            r.redact_json(&mut leaf);
            assert_eq!(leaf.as_str(), Some(&*once), "as a JSON leaf: {text:?}");
        }
        let b1 = r.redact_bytes(&bytes);
        assert_eq!(r.redact_bytes(&b1), b1, "bytes not idempotent");
    }
}

/// The scanner against its byte-at-a-time reference (which visits every trigger byte
/// in turn), under every key hint: the same findings from 0, from where the survey says
/// the triggers start, and from two points inside the text.
///
/// # Panics
/// When they differ.
pub fn check_scan(h: &[u8]) {
    let plain = &redactors()[2];
    let known = plain.snapshot();
    let sc = plain.scanner();
    let hinted = [
        Hints::default(),
        Hints {
            ssn: true,
            ..Hints::default()
        },
        Hints {
            phone: true,
            ..Hints::default()
        },
        Hints {
            version: true,
            ..Hints::default()
        },
    ];
    // The survey of the text paths against the fold test and the reference scan.
    let whole = |start: Start| {
        let mut found = Vec::new();
        sc.scan_with::<false>(h, start, Hints::default(), &known, &mut found);
        super::scan::merge(&mut found);
        found
    };
    let text = String::from_utf8_lossy(h);
    let folds = super::unicode::folds(h);
    match sc.survey_text(h) {
        Survey::Folds => assert!(folds, "surveyed as folding: {text:?}"),
        Survey::Nothing => assert!(
            !folds && whole(Start::WHOLE).is_empty(),
            "surveyed as empty: {text:?}"
        ),
        Survey::Scan(start) => {
            assert!(!folds, "surveyed as not folding: {text:?}");
            assert_eq!(whole(start), whole(Start::WHOLE), "survey {start:?} in {text:?}");
        }
    }
    for hints in hinted {
        let run = |start: Start, reference: bool| {
            let mut found = Vec::new();
            if reference {
                sc.scan_with::<false>(h, start, hints, &known, &mut found);
            } else {
                sc.scan(h, start, hints, &known, &mut found);
            }
            super::scan::merge(&mut found);
            found
        };
        let want = run(Start::WHOLE, true);
        assert_eq!(run(Start::WHOLE, false), want, "{hints:?} in {text:?}");
        match sc.survey(h) {
            Some(start) => assert_eq!(run(start, false), want, "survey {start:?}, {hints:?} in {text:?}"),
            None => assert!(want.is_empty(), "surveyed as empty, {hints:?} in {text:?}"),
        }
        // From anywhere, the middle of a digit run included.
        for from in [h.len() / 3, h.len() / 2] {
            let start = Start {
                from,
                earer: true,
                earer_from: 0,
            };
            assert_eq!(
                run(start, false),
                run(start, true),
                "from {from}, {hints:?} in {text:?}"
            );
        }
        check_fences(h, hints);
    }
}

/// No detector reads across a fence (`PatternRedactor::settled` relies on it): cut
/// at a fence outside every finding, the two sides, each with the fence, are found to
/// hold what the whole holds. Checked at the first and the last such fence, with the
/// default detectors and with E.164 phone numbers on.
fn check_fences(h: &[u8], hints: Hints) {
    static E164: OnceLock<PatternRedactor> = OnceLock::new();
    let e164 = E164.get_or_init(|| PatternRedactor::builder().e164(true).build());
    for r in [&redactors()[2], e164] {
        let known = r.snapshot();
        let scan = |part: &[u8]| {
            let mut found = Vec::new();
            r.scanner()
                .scan_with::<false>(part, Start::WHOLE, hints, &known, &mut found);
            super::scan::merge(&mut found);
            found
        };
        let want = scan(h);
        let outside = |f: &usize| !want.iter().any(|w| (w.start..w.end).contains(f));
        let mut fences = h
            .iter()
            .enumerate()
            .filter(|(_, b)| super::pattern::FENCES.contains(b))
            .map(|(f, _)| f)
            .filter(outside);
        let (first, last) = (fences.clone().next(), fences.next_back());
        for f in first.into_iter().chain(last.filter(|l| Some(*l) != first)) {
            let mut split = scan(&h[..=f]);
            split.extend(scan(&h[f..]).into_iter().map(|mut hit| {
                hit.start += f;
                hit.end += f;
                hit
            }));
            assert_eq!(
                split,
                want,
                "cut at the fence at {f}, {hints:?}, e164 {}, in {:?}",
                r.scanner().e164,
                String::from_utf8_lossy(h)
            );
        }
    }
}

/// Same shape: arrays keep their length, objects their number of keys, scalars stay
/// scalars (a number may become a placeholder string); a subtree may be cut at the depth
/// limit.
fn same_shape(a: &Value, b: &Value, depth: usize) -> bool {
    if depth >= MAX_JSON_DEPTH && *b == Value::String(TOO_DEEP.to_owned()) {
        return true;
    }
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_shape(p, q, depth + 1))
        }
        (Value::Object(x), Value::Object(y)) => {
            // Keys may be renamed; compare values of unchanged keys, and counts.
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_none_or(|w| same_shape(v, w, depth + 1)))
        }
        (Value::String(_), Value::String(_))
        | (Value::Number(_), Value::Number(_) | Value::String(_))
        | (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        _ => false,
    }
}

/// JSON properties: valid JSON out; same shape; idempotent; a planted value is gone.
/// Inputs that are not JSON are wrapped as a string leaf.
///
/// # Panics
/// When a property does not hold.
pub fn check_json(data: &[u8]) {
    let (bytes, planted) = plant(data);
    let mut value: Value = serde_json::from_slice(data.get(2..).unwrap_or_default())
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    if let Some(p) = planted {
        value = serde_json::json!({ "wrapped": value, "p": p, "in": format!("x <{p}> y"), p: [p] });
    }
    for r in redactors() {
        let planted = planted.filter(|&p| !p.starts_with("fz-Known") || !r.known_secrets().is_empty());
        let out = r.redacted(value.clone()).into_inner();
        assert!(same_shape(&value, &out, 0), "shape changed: {value} -> {out}");
        let text = serde_json::to_string(&out).expect("serialises");
        let back: Value = serde_json::from_str(&text).expect("valid JSON");
        // (Not `back == out`: serde_json's float parsing does not always round-trip.)
        assert!(same_shape(&out, &back, 0));
        let again = r.redacted(out.clone()).into_inner();
        assert_eq!(again, out, "JSON not idempotent");
        if let Some(p) = planted {
            assert_ne!(out["p"], Value::from(p), "planted {p:?} survived: {text}");
            assert!(
                !text.contains(&format!("<{p}>")),
                "planted {p:?} survived: {text}"
            );
            let arr = serde_json::json!([p]);
            assert!(
                out.as_object()
                    .is_some_and(|m| !m.contains_key(p) && m.values().all(|v| *v != arr)),
                "{text}"
            );
        }
    }
}
