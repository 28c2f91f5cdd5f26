//! Behaviour of [`PatternRedactor`]: exact outputs, each detector's accept and reject
//! cases, JSON handling, styles, known secrets, idempotence and hostile input.
#![allow(
    clippy::unreadable_literal,
    clippy::cast_precision_loss,
    clippy::inconsistent_digit_grouping
)]

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::{Value, json};

use super::*;

fn r() -> PatternRedactor {
    PatternRedactor::builder()
        .session_key(SessionKey::from_bytes([1; 32]))
        .build()
}

fn red(s: &str) -> String {
    r().redact_str(s).into_owned()
}

#[track_caller]
fn same(s: &str) {
    assert!(
        matches!(r().redact_str(s), Cow::Borrowed(_)),
        "should be untouched: {s:?} -> {:?}",
        red(s)
    );
}

#[test]
fn exact_outputs() {
    let cases = [
        ("contact jane.doe@acme.co today", "contact [REDACTED_EMAIL] today"),
        (
            "call +1 (415) 555-0132 or 415.555.0133",
            "call [REDACTED_PHONE] or [REDACTED_PHONE]",
        ),
        (
            "ssn 123-45-6789, alt 321 54 9876",
            "ssn [REDACTED_SSN], alt [REDACTED_SSN]",
        ),
        ("visa 4111 1111 1111 1111 exp", "visa [REDACTED_CREDIT_CARD] exp"),
        (
            "mc 5555-5555-5555-4444 / 2223003122003222",
            "mc [REDACTED_CREDIT_CARD] / [REDACTED_CREDIT_CARD]",
        ),
        ("amex 378282246310005.", "amex [REDACTED_CREDIT_CARD]."),
        (
            "from 192.168.10.1:8080 and [2001:db8::1]:443",
            "from [REDACTED_IP]:8080 and [[REDACTED_IP]]:443",
        ),
        ("dev fe80::1ff:fe23:4567:890a%eth0 up", "dev [REDACTED_IP] up"),
        ("mapped ::ffff:192.0.2.128 ok", "mapped [REDACTED_IP] ok"),
        (
            "Authorization: Bearer abcDEF123456789xyzTOKEN",
            "Authorization: Bearer [REDACTED_SECRET]",
        ),
        (
            "authorization: bearer abcDEF123456789xyzTOKEN",
            "authorization: bearer [REDACTED_SECRET]",
        ),
        (
            "AUTHORIZATION: BEARER abcDEF123456789xyzTOKEN",
            "AUTHORIZATION: BEARER [REDACTED_SECRET]",
        ),
        ("key AKIAIOSFODNN7EXAMPLE end", "key [REDACTED_SECRET] end"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED_SECRET]"),
        ("x xoxb-123456789012-abcdefABCDEF y", "x [REDACTED_SECRET] y"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "[REDACTED_SECRET]"),
        ("sk-proj-abc123DEF456ghi789JKL0", "[REDACTED_SECRET]"),
        ("AIzaSyA1234567890abcdefghijklmnopqrstu", "[REDACTED_SECRET]"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U!",
            "jwt [REDACTED_SECRET]!",
        ),
        (
            "k: -----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK=\n-----END RSA PRIVATE KEY----- done",
            "k: [REDACTED_SECRET] done",
        ),
        (
            "cut -----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN",
            "cut [REDACTED_SECRET]",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(red(input), want, "input {input:?}");
    }
}

#[test]
fn rejects_traps() {
    for s in [
        "version 1.2.3.4",
        "build 1.2.3.4.5",
        "Windows 10.0.19045.2965",
        "v1.2.3.4",
        "300.1.2.3",
        "at 2024-05-06T12:34:56.789Z",
        "ts 1715000000000 ms",
        "id 550e8400-e29b-41d4-a716-446655440000",
        "sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "order 4111111111111112",
        "ssn 000-12-3456 666-12-3456 912-12-3456 123-00-4567 123-45-0000",
        "localhost:8080 example.com:443",
        "call 155-555-1234",
        "std::vec::Vec and A::B",
        "12:30:45",
        "Bearer tokens-are-described-here",
        "task-oriented-sk-abcdefghijklmnopqrstuvw",
        "user@localhost",
        "price 1234 5678 9012",
        "ratio 1.5 and 2.25",
        "café naïve 東京 🎉",
    ] {
        same(s);
    }
}

#[test]
fn failed_card_does_not_hide_ssn() {
    // A card candidate that fails Luhn must not swallow the SSN that overlaps it.
    assert_eq!(red("4111 123-45-6789"), "4111 [REDACTED_SSN]");
    assert_eq!(red("ref 123-45-6789-1111"), "ref 123-45-6789-1111");
}

#[test]
fn e164_only_when_enabled() {
    same("dial +442071838750");
    let e = PatternRedactor::builder().e164(true).build();
    assert_eq!(e.redact_str("dial +442071838750"), "dial [REDACTED_PHONE]");
}

#[test]
fn kinds_can_be_switched_off_but_not_secrets() {
    let only = PatternRedactor::builder()
        .only(&[Kind::Email])
        .disable(Kind::Secret)
        .disable(Kind::KnownSecret)
        .build();
    assert_eq!(
        only.redact_str("a@b.io 123-45-6789 10.0.0.1 AKIAIOSFODNN7EXAMPLE"),
        "[REDACTED_EMAIL] 123-45-6789 10.0.0.1 [REDACTED_SECRET]"
    );
}

#[test]
fn json_keys_numbers_and_embedded() {
    let mut v = json!({
        "card": 4111111111111111u64,
        "not_card": 4111111111111112u64,
        "ts": 1715000000000u64,
        "ssn": 123456789,
        "phone": "4155550132",
        "id": 123456789,
        "a@b.io": "key",
        "nested": {"text": "{\"ip\": \"10.9.8.7\", \"n\": [1, 5555555555554444]}"},
        "pretty": "{\n  \"mail\": \"x@y.org\"\n}",
        "plain_json": "[1, 2]",
        "password": "hunter2",
        "progressToken": "abc",
        "version": "1.2.3.4",
        "list": ["ok", "x@y.org", 7],
    });
    r().redact_json(&mut v);
    assert_eq!(
        v,
        json!({
            "card": "[REDACTED_CREDIT_CARD]",
            "not_card": 4111111111111112u64,
            "ts": 1715000000000u64,
            "ssn": "[REDACTED_SSN]",
            "phone": "[REDACTED_PHONE]",
            "id": 123456789,
            "[REDACTED_EMAIL]": "key",
            "nested": {"text": "{\"ip\":\"[REDACTED_IP]\",\"n\":[1,\"[REDACTED_CREDIT_CARD]\"]}"},
            "pretty": "{\n  \"mail\": \"[REDACTED_EMAIL]\"\n}",
            "plain_json": "[1, 2]",
            "password": "[REDACTED_SECRET]",
            "progressToken": "abc",
            "version": "1.2.3.4",
            "list": ["ok", "[REDACTED_EMAIL]", 7],
        })
    );
}

/// A number is a card candidate only with a first digit of 2-6 (tested without dividing
/// by a power of ten), up to the largest `u64` with no overflow.
#[test]
fn card_numbers_by_first_digit() {
    let cases = [
        (4_222_222_222_222u64, true),
        (1_715_000_000_000, false),
        (2_221_000_000_000_009, true),
        (6_011_111_111_111_117, true),
        (5_555_555_555_554_444, true),
        (1_999_999_999_999_999, false),
        (7_011_111_111_111_117, false),
        (9_999_999_999_999_995, false),
        (u64::MAX, false),
    ];
    for (n, card) in cases {
        let mut v = json!({ "n": n });
        r().redact_json(&mut v);
        let want = if card {
            json!("[REDACTED_CREDIT_CARD]")
        } else {
            json!(n)
        };
        assert_eq!(v["n"], want, "{n}");
    }
    // Under keys that name them, SSNs and phone numbers sent as numbers.
    let mut v = json!({"ssn": 123_456_789, "mobile": 4_155_550_132u64, "tel": 14_155_550_132u64, "n": 4_155_550_132u64});
    r().redact_json(&mut v);
    assert_eq!(
        v,
        json!({"ssn": "[REDACTED_SSN]", "mobile": "[REDACTED_PHONE]", "tel": "[REDACTED_PHONE]", "n": 4_155_550_132u64})
    );
}

#[test]
fn escaped_values_are_found_after_parsing() {
    // In JSON text the `@` is `\u0040`; the walk sees the decoded string.
    let v: Value = serde_json::from_str(r#"{"m": "jane\u0040acme.co"}"#).unwrap();
    assert_eq!(r().redacted(v).get()["m"], "[REDACTED_EMAIL]");
}

#[test]
fn colliding_keys_are_kept() {
    let out = r().redacted(json!({"a@b.io": 1, "c@d.io": 2})).into_inner();
    assert_eq!(out, json!({"[REDACTED_EMAIL]": 1, "[REDACTED_EMAIL]#2": 2}));
}

#[test]
fn a_failed_random_source_gives_placeholders_not_pseudonyms_under_a_weak_key() {
    let failing = crate::random::fail_on_this_thread();
    assert!(SessionKey::random().is_err());
    let r = PatternRedactor::builder().style(Style::Pseudonym).build();
    drop(failing);
    // Without a key nothing is tagged: a tag under a guessable key could be reversed by
    // hashing candidate values.
    assert_eq!(r.redact_str("mail jane@acme.co"), "mail [REDACTED_EMAIL]");
    assert_eq!(r.redact_str("call (415) 555-0132"), "call [REDACTED_PHONE]");
    // A key given later (one per session) brings pseudonyms back.
    let keyed = r.with_session_key(SessionKey::from_bytes([1; 32]));
    assert!(keyed.redact_str("jane@acme.co").starts_with("[EMAIL:"));
}

#[test]
fn pseudonyms_are_stable_per_session() {
    let base = PatternRedactor::builder().style(Style::Pseudonym).build();
    let s1 = base.with_session_key(SessionKey::from_bytes([1; 32]));
    let s2 = base.with_session_key(SessionKey::from_bytes([2; 32]));
    let a = s1.redact_str("jane@acme.co");
    assert!(
        a.starts_with("[EMAIL:") && a.len() == "[EMAIL:12345678]".len(),
        "{a}"
    );
    assert_eq!(a, s1.redact_str("JANE@acme.co"), "case-insensitive email");
    assert_ne!(a, s1.redact_str("john@acme.co"));
    assert_ne!(a, s2.redact_str("jane@acme.co"));
    // Different spellings of one number agree.
    assert_eq!(s1.redact_str("(415) 555-0132"), s1.redact_str("+1 415-555-0132"));
    assert_eq!(
        s1.redact_str("4111-1111-1111-1111"),
        s1.redact_str("4111111111111111")
    );
    // Secrets never get a pseudonym.
    assert_eq!(s1.redact_str("AKIAIOSFODNN7EXAMPLE"), "[REDACTED_SECRET]");
    // Pseudonyms survive a second pass.
    let twice = s1.redact_str(&a).into_owned();
    assert_eq!(twice, a);
}

#[test]
fn partial_style() {
    let p = PatternRedactor::builder().style(Style::Partial).build();
    assert_eq!(
        p.redact_str("4111 1111 1111 1234"),
        "4111 1111 1111 1234",
        "luhn fails"
    );
    assert_eq!(
        p.redact_str("card 4242 4242 4242 4242"),
        "card [REDACTED_CREDIT_CARD:\u{2026}4242]"
    );
    assert_eq!(p.redact_str("ssn 123-45-6789"), "ssn [REDACTED_SSN:\u{2026}6789]");
    assert_eq!(p.redact_str("a@b.io"), "[REDACTED_EMAIL]");
    let once = p.redact_str("x 5555555555554444 y").into_owned();
    assert_eq!(p.redact_str(&once), once);
}

#[test]
fn known_secrets_in_encodings() {
    let known = Arc::new(KnownSecrets::new());
    let red = PatternRedactor::builder()
        .known_secrets(Arc::clone(&known))
        .build();
    let secret = "tok/3n+Secret:value";
    assert_eq!(red.redact_str(secret), secret, "not yet registered");
    assert!(red.add_known_secret(&SecretString::from(secret)));
    let b64 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("user:{secret}"),
    );
    let url = "tok%2F3n%2BSecret%3Avalue";
    for (input, want) in [
        (format!("echo {secret}!"), "echo [REDACTED_SECRET]!".to_owned()),
        (format!("url ?t={url}&x"), "url ?t=[REDACTED_SECRET]&x".to_owned()),
        (
            format!("\"{}\"", serde_json::to_string(secret).unwrap().trim_matches('"')),
            "\"[REDACTED_SECRET]\"".to_owned(),
        ),
    ] {
        assert_eq!(red.redact_str(&input), want);
    }
    let basic = red.redact_str(&format!("Basic {b64}")).into_owned();
    assert!(basic.contains("[REDACTED_SECRET]"), "{basic}");
    assert!(!basic.contains(&b64[8..20]), "{basic}");
    // Updatable at run time, visible to clones.
    let clone = red.clone();
    assert!(known.remove(&SecretString::from(secret)));
    assert_eq!(clone.redact_str(secret), secret);
}

/// Every thread keeps the registry generations it used last: a change made on another
/// thread, or on this one, still takes effect for the next redaction, and a thread that
/// works with more registries than it keeps gets each one's own secrets.
#[test]
fn registry_changes_reach_every_thread() {
    let known = Arc::new(KnownSecrets::new());
    let red = PatternRedactor::builder()
        .known_secrets(Arc::clone(&known))
        .build();
    let secret = SecretString::from("cross-thread-Secret-42x");
    let text = "echo cross-thread-Secret-42x";
    let mut doc = serde_json::json!({ "t": text });
    red.redact_json(&mut doc);
    assert_eq!(
        doc["t"], text,
        "nothing registered yet; this generation is now cached"
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(red.redact_str(text), text);
            assert!(known.add(&secret));
        });
    });
    let mut doc = serde_json::json!({ "t": text });
    red.redact_json(&mut doc);
    assert_eq!(doc["t"], "echo [REDACTED_SECRET]", "added on another thread");
    assert_eq!(red.find(text).len(), 1);
    assert_eq!(&*red.redact_bytes(text.as_bytes()), b"echo [REDACTED_SECRET]");
    // A thread that cached the generation with the secret sees it go.
    let (cached, go) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            assert_eq!(red.redact_str(text), "echo [REDACTED_SECRET]");
            cached.wait();
            go.wait();
            red.redact_str(text).into_owned()
        });
        cached.wait();
        assert!(known.remove(&secret));
        go.wait();
        assert_eq!(worker.join().unwrap(), text, "removed on another thread");
    });
    assert_eq!(red.redact_str(text), text, "removed");
    // More registries on one thread than it keeps generations of, used in turn.
    let many: Vec<(PatternRedactor, String)> = (0..7)
        .map(|i| {
            let r = PatternRedactor::builder().build();
            let s = format!("registry-{i}-secret-Q7xZ");
            assert!(r.add_known_secret(&SecretString::from(s.as_str())));
            (r, s)
        })
        .collect();
    for _ in 0..3 {
        for (i, (r, own)) in many.iter().enumerate() {
            let other = &many[(i + 1) % many.len()].1;
            let out = r.redact_str(&format!("{own} {other}")).into_owned();
            assert_eq!(out, format!("[REDACTED_SECRET] {other}"), "registry {i}");
        }
    }
}

/// A string leaf whose findings are replaced where it is (one pass settles it, the
/// findings near its end) comes out exactly as one rebuilt from a copy: the text path
/// always copies. Both ways are taken here: findings at the end, at the start (too much
/// to move), many, with and without spare capacity, after non-ASCII text, and with
/// styles that are not plain placeholders.
#[test]
fn leaves_redacted_in_place_match_the_text_path() {
    let texts = [
        "résumé 東京 привет, contact (236) 446-1795.",
        "call +17696200570",
        "a@b.io then a long tail of ordinary words that would all have to move over",
        "ends with a card 4111 1111 1111 1111",
        "x 123-45-6789 y 10.0.0.1 z a@b.io w (415) 555-0132",
        "shrinks: jane.doe.with.a.long.name@acme.co",
        "grows: 1.2.3.4",
        "key AKIAIOSFODNN7EXAMPLE at the end",
        "two findings close to the end, a@b.io 10.0.0.1",
        "three near the end, jane.doe.with.a.long.name@acme.co or 10.0.0.1 or (415) 555-0132",
        "two at the start, too much to move: a@b.io c@d.io and then a long tail of plain words",
        "a finding, then a trigger after it: a@b.io 12",
        "Bearer abcdefghijklmnopqrstuvwxyz012345",
    ];
    let styled = PatternRedactor::builder()
        .style(Style::Pseudonym)
        .style_for(Kind::CreditCard, Style::Partial)
        .session_key(SessionKey::from_bytes([3; 32]))
        .build();
    for red in [r(), styled] {
        for text in texts {
            let want = red.redact_str(text).into_owned();
            assert_ne!(want, text, "{text}");
            for spare in [0, 1, 3, 64] {
                let mut leaf = String::with_capacity(text.len() + spare);
                leaf.push_str(text);
                let mut doc = json!({ "content": [{ "type": "text", "text": null }] });
                doc["content"][0]["text"] = Value::String(leaf);
                red.redact_json(&mut doc);
                assert_eq!(doc["content"][0]["text"], want, "{text} with {spare} spare bytes");
            }
        }
    }
}

/// A registered secret that a placeholder completes (`SECRET]x`) makes a chain: each
/// pass replaces one match, and its placeholder and the next `x` form the next. Text, bytes
/// and a JSON leaf (which takes its first two passes where it is) agree on when the
/// chain is too long: a string still changing after `MAX_PASSES` passes is replaced
/// whole.
#[test]
fn pass_limit_is_the_same_on_every_path() {
    let r = PatternRedactor::builder().build();
    assert!(r.add_known_secret(&SecretString::from("SECRET]x")));
    for m in 1..=MAX_PASSES + 2 {
        let text = format!("SECRET]{}", "x".repeat(m));
        let want = if m < MAX_PASSES {
            format!("{}[REDACTED_SECRET]", "[REDACTED_".repeat(m - 1))
        } else {
            UNSTABLE.to_owned()
        };
        assert_eq!(r.redact_str(&text), want, "{m} links");
        assert_eq!(&*r.redact_bytes(text.as_bytes()), want.as_bytes(), "{m} links");
        let mut doc = json!({ "t": null });
        doc["t"] = Value::String(text.clone());
        r.redact_json(&mut doc);
        assert_eq!(doc["t"], want, "{m} links, as a JSON leaf");
    }
}

#[test]
fn idempotent_on_mixed_text() {
    let r = r();
    assert_eq!(
        r.redact_str("a@b.io 4111111111111111"),
        "[REDACTED_EMAIL] [REDACTED_CREDIT_CARD]"
    );
    let text = "a@b.io 4111111111111111 123-45-6789 (415) 555-0132 ::1 10.0.0.1 AKIAIOSFODNN7EXAMPLE \
                version a@b.co 1.2.3.4 x@y.z.1.2.3.4";
    let once = r.redact_str(text).into_owned();
    assert_eq!(r.redact_str(&once), once);
    assert!(r.find(&once).is_empty(), "{once}");
}

/// A card next to another number reads as cells of a table and is let go; once that
/// number is replaced, the card stands alone, and the second pass takes it.
#[test]
fn second_pass_takes_what_a_replacement_uncovers() {
    let plain = PatternRedactor::builder().build();
    for (text, want) in [
        (
            "123-45-6789 4111 1111 1111 1111",
            "[REDACTED_SSN] [REDACTED_CREDIT_CARD]",
        ),
        (
            "4111 1111 1111 1111 123-45-6789",
            "[REDACTED_CREDIT_CARD] [REDACTED_SSN]",
        ),
        (
            "10.0.0.1 4111 1111 1111 1111",
            "[REDACTED_IP] [REDACTED_CREDIT_CARD]",
        ),
    ] {
        assert_every_path(&plain, text, want);
    }
    // With registered secrets: one that cannot touch a placeholder (the skip applies),
    // and one that is part of a placeholder (every pass is taken). Either way the text
    // path gives what the byte path, which takes every pass, gives.
    for secret in ["cred-00-q8Xv2LmN5tRz7WkPd4Hs9Yb", "REDACTED_SSN"] {
        let r = PatternRedactor::builder().build();
        r.add_known_secret(&SecretString::from(secret));
        for text in [
            "123-45-6789 4111 1111 1111 1111",
            "id 078-05-1120 then cred-00-q8Xv2LmN5tRz7WkPd4Hs9Yb.",
            "call (415) 555-0132 now",
        ] {
            let once = r.redact_str(text);
            assert_eq!(
                &*r.redact_bytes(text.as_bytes()),
                once.as_bytes(),
                "{secret}: {text}"
            );
            assert_eq!(r.redact_str(&once), once, "{secret}: {text}");
        }
    }
}

/// What lets a first pass skip the second (`PatternRedactor::settled`): the plain
/// placeholders set nothing off, whatever is glued to them on either side, alone or
/// next to each other.
#[test]
fn placeholders_are_inert() {
    let kinds = Kind::WITH_OWN_PLACEHOLDER;
    let mut texts = Vec::new();
    for a in kinds {
        for b in kinds {
            let (a, b) = (a.placeholder(), b.placeholder());
            texts.push(format!("{a}{b}"));
            for glue in (0x20u8..0x7f)
                .chain([b'\n', b'\t'])
                .filter(|&g| !scan::is_trigger(g))
            {
                let g = char::from(glue);
                texts.push(format!("{g}{a}{g}{b}{g}"));
                texts.push(format!("BE{a}{g}{g}{b}ARER {g}"));
            }
            texts.push(format!("é{a}→{b}東"));
        }
    }
    let plain = PatternRedactor::builder().build();
    for text in &texts {
        assert!(plain.find(text).is_empty(), "{:?} in {text:?}", plain.find(text));
        assert_eq!(plain.redact_str(text), text.as_str());
    }
    // And so a string whose findings leave no trigger outside the placeholders settles
    // after one pass, with the result two full passes give.
    for text in [
        "call (415) 555-0132.",
        "to a@b.io, c@d.io or 10.0.0.1!",
        "key AKIAIOSFODNN7EXAMPLE",
    ] {
        let once = plain.redact_str(text);
        assert_eq!(&*plain.redact_bytes(text.as_bytes()), once.as_bytes(), "{text}");
        assert_eq!(plain.redact_str(&once), once);
    }
}

/// What lets a first pass skip the second across fences (`PatternRedactor::settled`):
/// no detector reads across a `,` or `;`, whatever stands on either side. Every pair
/// of pieces below (values, parts of values, what detectors look at around a value),
/// joined by a fence, is found to hold what its two sides hold (`fuzzing::check_scan`,
/// under every key hint, with E.164 numbers off and on, by the reference scanner).
#[test]
fn fences_stop_every_detector() {
    let pieces = [
        "",
        " ",
        "x",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "4111 1111 1111",
        " 1111",
        "3782 822463 10005",
        "123-45-6789",
        "123 45",
        "-6789",
        "078051120",
        "(415) 555-0132",
        "+1 415 555 0132",
        "415.555.0132",
        "415-555-",
        "+4930123456789",
        "1-",
        "+",
        "(",
        "192.168.1.20",
        "10.0.",
        ".20",
        "version ",
        "v",
        "2001:db8::1",
        "fe80::1%eth0",
        "::",
        ":1",
        "a@b.io",
        "jane.doe@",
        "@example.com",
        "ghp_",
        "0123456789abcdefghijABCDEFGHIJ012345",
        "sk-proj-abc123DEF456ghi789JKL0",
        "AKIAIOSFODNN7EXAMPLE",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXZhbHVl",
        "eyJ",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----",
        "Bearer abcdefghijklmnop1234",
        "Bearer ",
        "#12",
        "$5",
        "12 ",
        "\t",
        "5/1/1997",
        "12:30",
        "1234",
        "1",
    ];
    for a in pieces {
        for b in pieces {
            for fence in pattern::FENCES {
                let f = char::from(fence);
                for text in [format!("{a}{f}{b}"), format!("{a}{f} {b}"), format!("{a} {f}{b}")] {
                    fuzzing::check_scan(text.as_bytes());
                }
            }
        }
    }
}

/// A table row whose findings stand between fences takes one pass, and gives what
/// every pass would: cells next to a finding that it would turn down while the value
/// was there (a card next to a number reads as a table) are still taken by the second
/// pass when no fence stands between.
#[test]
fn fenced_rows_settle_after_one_pass() {
    let plain = PatternRedactor::builder().build();
    for (text, want) in [
        (
            "row 1: 704638, 6/5/2020, 4111 1111 1111 1111",
            "row 1: 704638, 6/5/2020, [REDACTED_CREDIT_CARD]",
        ),
        (
            "123-45-6789, 12 4111 1111 1111 1111; 10.0.0.1",
            "[REDACTED_SSN], 12 4111 1111 1111 1111; [REDACTED_IP]",
        ),
        (
            "123-45-6789 4111 1111 1111 1111, 7",
            "[REDACTED_SSN] [REDACTED_CREDIT_CARD], 7",
        ),
        (
            "123-45-6789 4111 1111 1111 1111, 10.0.0.1",
            "[REDACTED_SSN] [REDACTED_CREDIT_CARD], [REDACTED_IP]",
        ),
        (
            "a@b.io,4111 1111 1111 1111 12",
            "[REDACTED_EMAIL],4111 1111 1111 1111 12",
        ),
        (
            "x, BEARER abcdefghijklmnop1234, 7",
            "x, BEARER [REDACTED_SECRET], 7",
        ),
        (
            "| 704638 | 4111 1111 1111 1111 | 12 |",
            "| 704638 | [REDACTED_CREDIT_CARD] | 12 |",
        ),
        (
            "<td>12</td><td>4111 1111 1111 1111</td><td>123-45-6789</td>",
            "<td>12</td><td>[REDACTED_CREDIT_CARD]</td><td>[REDACTED_SSN]</td>",
        ),
    ] {
        assert_every_path(&plain, text, want);
    }
}

/// `text` redacts to `want` as text, as bytes (which take every pass) and as a JSON
/// leaf (redacted where it is).
fn assert_every_path(r: &PatternRedactor, text: &str, want: &str) {
    assert_eq!(r.redact_str(text), want, "{text}");
    assert_eq!(&*r.redact_bytes(text.as_bytes()), want.as_bytes(), "{text}");
    let mut v = json!({ "note": text });
    r.redact_json(&mut v);
    assert_eq!(v, json!({ "note": want }), "{text}");
}

/// A key that held a value comes out holding its placeholder, and `[REDACTED_SSN]` or
/// `[REDACTED_PHONE]` in a key names the kind: the value under it is read with those
/// hints the first time already, so a second redaction changes nothing (found by the
/// JSON property test once its keys could hold an SSN).
#[test]
fn keys_hint_as_they_come_out() {
    let r = PatternRedactor::builder().build();
    let mut v = json!({ "123-45-6789": "187524111", "id (415) 555-0132": ["2125550147"] });
    r.redact_json(&mut v);
    assert_eq!(
        v,
        json!({ "[REDACTED_SSN]": "[REDACTED_SSN]", "id [REDACTED_PHONE]": ["[REDACTED_PHONE]"] })
    );
    let once = v.clone();
    r.redact_json(&mut v);
    assert_eq!(v, once);
}

#[test]
fn bytes_with_invalid_utf8() {
    let r = r();
    let mut input = b"\xff\xfe mail a@b.io \xc3".to_vec();
    input.extend_from_slice(b" 4111111111111111\x80");
    let out = r.redact_bytes(&input);
    assert_eq!(
        &*out,
        b"\xff\xfe mail [REDACTED_EMAIL] \xc3 [REDACTED_CREDIT_CARD]\x80"
    );
}

/// 16 MiB strings of repeated trigger patterns: the scan finishes (a quadratic one would
/// take hours here, so the run would time out) and its output is idempotent. No
/// wall-clock bound: a busy machine must not fail it; speed is the benchmark's. In
/// debug builds the digit-dense patterns (one candidate every two bytes) use 2 MiB so
/// the test stays quick; `cargo test --release` runs all of them at 16 MiB.
#[test]
fn hostile_16_mib_inputs_are_linear() {
    let r = r();
    let full = 16 << 20;
    let dense = if cfg!(debug_assertions) { 2 << 20 } else { full };
    for (unit, size) in [
        ("1", dense),
        ("1.", dense),
        ("1:", dense),
        ("1 ", dense),
        ("1-", dense),
        ("a@", full),
        ("@a.", full),
        ("::", full),
        ("eyJ", full),
        ("-----BEGIN PRIVATE KEY-----", full),
        // Non-ASCII text is searched for characters that fold as well as for triggers
        // (a second vector pass, slow in debug builds).
        ("é", dense),
        ("\u{200B}", dense),
        ("\u{FF14}\u{FF11}\u{FF11}\u{FF11} ", dense),
        ("\u{0663}-", dense),
        ("xoxb-", full),
        ("Bearer ", full),
    ] {
        let s = unit.repeat(size / unit.len());
        let out = r.redact_str(&s);
        assert_eq!(r.redact_str(&out), out, "{unit:?}");
    }
}

#[test]
fn deep_json_is_bounded() {
    let mut v = Value::String("a@b.io".into());
    for _ in 0..100_000 {
        v = Value::Array(vec![v]);
    }
    let out = r().redacted(v);
    let s = serde_json::to_string(out.get()).unwrap();
    assert!(s.contains(TOO_DEEP) && !s.contains("a@b.io"));
}

#[test]
fn config_parses_and_builds() {
    let cfg: RedactionConfig = serde_json::from_value(
        json!({"detect": ["ssn"], "style": "partial", "style-overrides": {"ssn": "placeholder"}}),
    )
    .unwrap();
    let r = cfg.build(None);
    assert_eq!(r.redact_str("123-45-6789 a@b.io"), "[REDACTED_SSN] a@b.io");
    assert!(serde_json::from_value::<RedactionConfig>(json!({"detekt": []})).is_err());
    assert_eq!(RedactionConfig::default().detect.len(), 6);
}

/// Precision and recall per kind over the seeded corpus; zero findings on traps.
#[test]
fn accuracy_on_labelled_corpus() {
    use corpus::Rng;
    let r = r();
    let mut rng = Rng::new(0x5eed);
    let kinds = [
        Kind::Email,
        Kind::Phone,
        Kind::Ssn,
        Kind::CreditCard,
        Kind::Ipv4,
        Kind::Ipv6,
        Kind::Secret,
    ];
    let same_label = |a: Kind, b: Kind| a.label() == b.label();
    let mut table = String::from(
        "| kind | labelled | found | true pos. | precision | recall |\n|---|---|---|---|---|---|\n",
    );
    for kind in kinds {
        let (mut labelled, mut found, mut tp, mut fp_found) = (0usize, 0usize, 0usize, 0usize);
        for _ in 0..2000 {
            let sample = corpus::positive(&mut rng, kind);
            let findings = r.find(&sample.text);
            labelled += sample.spans.len();
            for (k, span) in &sample.spans {
                if findings.iter().any(|f| {
                    same_label(f.kind(), *k) && f.range().start <= span.start && f.range().end >= span.end
                }) {
                    tp += 1;
                } else {
                    eprintln!(
                        "missed {kind:?}: {:?} in {:?} -> {:?}",
                        &sample.text[span.clone()],
                        sample.text,
                        findings
                    );
                }
            }
            for f in &findings {
                found += 1;
                let ok = sample.spans.iter().any(|(k, s)| {
                    same_label(f.kind(), *k) && f.range().start < s.end && s.start < f.range().end
                });
                if !ok {
                    fp_found += 1;
                    eprintln!(
                        "false {kind:?}: {:?} in {:?}",
                        &sample.text[f.range()],
                        sample.text
                    );
                }
            }
        }
        let precision = (found - fp_found) as f64 / found.max(1) as f64;
        let recall = tp as f64 / labelled.max(1) as f64;
        let _ = writeln!(
            table,
            "| {kind:?} | {labelled} | {found} | {tp} | {precision:.4} | {recall:.4} |"
        );
        assert!(recall >= 0.99, "{kind:?} recall {recall}");
        assert!(precision >= 0.99, "{kind:?} precision {precision}");
    }
    let mut trap_hits = 0;
    for _ in 0..20_000 {
        let t = corpus::trap(&mut rng);
        let f = r.find(&t);
        if !f.is_empty() {
            trap_hits += 1;
            eprintln!("trap hit: {t:?} -> {f:?}");
        }
    }
    let _ = writeln!(table, "\nnegative traps: 20000, findings: {trap_hits}");
    println!("{table}");
    assert_eq!(trap_hits, 0);
}

/// About 10 MB of PII-free tool output: at most one false card. The corpus deliberately
/// holds rows of 3-12 small space-separated numbers; a row of exactly four 4-digit
/// numbers is shaped like a card printed in groups and passes the issuer and Luhn checks
/// about one time in forty. The card rule turns those down by context (numbers next to
/// it, column alignment, a date glued to the end); the rest is chance.
#[test]
fn false_cards_in_clean_json() {
    let text = corpus::clean_json(0x000C_1EA4, 10_000_000);
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let r = r();
    r.redact_json(&mut v);
    let out = serde_json::to_string(&v).unwrap();
    let count = |p: &str| out.matches(p).count();
    let cards = count("[REDACTED_CREDIT_CARD]");
    println!(
        "clean JSON {} bytes: false cards {cards}, phones {}, ssn {}, ip {}, email {}, secret {}",
        text.len(),
        count("[REDACTED_PHONE]"),
        count("[REDACTED_SSN]"),
        count("[REDACTED_IP]"),
        count("[REDACTED_EMAIL]"),
        count("[REDACTED_SECRET]"),
    );
    assert!(cards <= 1, "{cards} false cards");
}

/// The windowed scan finds exactly what the byte-at-a-time reference finds, on text
/// made of the shapes the window's masks encode (groups of digits and the bytes that
/// join them, valid and off by one), at every alignment against the 16-byte chunks.
#[test]
fn window_scan_matches_reference() {
    use corpus::Rng;
    const PIECES: &[&str] = &[
        " ",
        " ",
        ", ",
        "-",
        ".",
        "(",
        ")",
        "+",
        "/",
        ":",
        "@",
        "_",
        "A",
        "J",
        "x",
        "#",
        "$",
        "  ",
        "\t",
        "\n",
        "é",
        "ab",
        "sk-",
        "Bearer ",
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
        "3782 822463 10005",
        "123-45-6789",
        "078-05-1120",
        "(415) 555-0132",
        "415.555.0132",
        "1-415-555-0132",
        "+1 415 555 0132",
        "+44 20 7946 0958",
        "192.168.1.20",
        "1.2.3.4.5",
        "2001:db8::1",
        "jane@acme.co",
        "4111111111111111",
        "1234 5678",
    ];
    let mut rng = Rng::new(0x0005_ca1e);
    for _ in 0..20_000 {
        let mut s = String::new();
        let pieces = rng.range(0, 40);
        for _ in 0..pieces {
            if rng.chance(55) {
                let len = if rng.chance(10) {
                    rng.range(5, 20)
                } else {
                    rng.range(1, 6)
                };
                for _ in 0..len {
                    s.push(char::from(b'0' + u8::try_from(rng.below(10)).unwrap()));
                }
            } else if rng.chance(15) {
                // Generated values: every card layout (`4-4-4-1` for 13 digits…).
                let value = match rng.below(4) {
                    0 | 1 => corpus::card(&mut rng),
                    2 => corpus::ssn(&mut rng),
                    _ => corpus::phone(&mut rng),
                };
                s.push_str(&value);
            } else {
                let piece: &&str = rng.pick(PIECES);
                s.push_str(piece);
            }
        }
        fuzzing::check_scan(s.as_bytes());
    }
}

/// Replays `fuzz/regressions/<target>/*` through the fuzz targets' property checks.
#[test]
fn fuzz_regressions_replay() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut n = 0;
    for (target, check) in [
        ("redact_str", fuzzing::check_str as fn(&[u8])),
        ("redact_json", fuzzing::check_json),
    ] {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in dir.flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            check(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no regression inputs found under {}", root.display());
}

mod props {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::super::fuzzing;

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                "[0-9]{1,5}",
                "[ .:@\\-_()+/#%A-Za-z]",
                "[a-zA-Z]{1,6}",
                Just("é".to_owned()),
                Just("::".to_owned()),
                Just("eyJ".to_owned()),
                Just("ghp_".to_owned()),
                Just("Bearer ".to_owned()),
                Just(", ".to_owned()),
                Just(";".to_owned()),
                Just("4111 1111 1111 1111".to_owned()),
                Just("123-45-6789".to_owned()),
            ],
            0..40,
        )
        .prop_map(|v| v.concat())
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            Just(Value::from(4_111_111_111_111_111u64)),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(text(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn text_properties(pick in 0u8..20, at in any::<u8>(), s in text()) {
            let mut data = vec![pick, at];
            data.extend_from_slice(s.as_bytes());
            fuzzing::check_str(&data);
        }

        #[test]
        fn json_properties(pick in 0u8..20, v in json()) {
            let mut data = vec![pick, 0];
            data.extend_from_slice(serde_json::to_string(&v).unwrap().as_bytes());
            fuzzing::check_json(&data);
        }
    }
}

/// Every invisible character the hostile-text checker of tool definitions knows (the
/// ones it strips from results).
fn hostile_invisibles() -> Vec<char> {
    (0x80..=0x10_FFFF_u32)
        .filter_map(char::from_u32)
        .filter(|c| crate::pin::strip_invisible(&c.to_string()).is_empty())
        .collect()
}

/// A registered secret with an invisible character inside it is found on every path a
/// payload is redacted (text, bytes, a JSON leaf, a JSON key, `find`), whichever
/// character the hostile-text checker knows hides it, and the whole span goes.
#[test]
fn a_registered_secret_split_by_an_invisible_character_is_still_found() {
    let secret = "cnry-7f3a9c1e5b2d4f60a8e9";
    let r = r();
    r.add_known_secret(&SecretString::from(secret));
    let invisible = hostile_invisibles();
    assert!(invisible.len() > 150, "{}", invisible.len());
    for (i, c) in invisible.iter().enumerate() {
        let at = 1 + i % (secret.len() - 1);
        let hidden = format!("{}{c}{}", &secret[..at], &secret[at..]);
        let text = format!("token {hidden} end");
        let want = "token [REDACTED_SECRET] end";
        assert_eq!(r.redact_str(&text), want, "U+{:04X}", u32::from(*c));
        assert_eq!(&*r.redact_bytes(text.as_bytes()), want.as_bytes());
        let mut v = serde_json::json!({ "args": { "text": text.clone() }, hidden.clone(): 1 });
        r.redact_json(&mut v);
        assert_eq!(v["args"]["text"], want);
        assert_eq!(v["[REDACTED_SECRET]"], 1, "as a key: U+{:04X}", u32::from(*c));
        assert_eq!(r.find(&text).len(), 1);
    }
}

/// The other kinds too, with invisible characters, digits of other scripts and
/// full-width forms inside a value: the whole original span is replaced.
#[test]
fn values_written_beyond_ascii_are_found() {
    let r = r();
    for (text, want) in [
        ("mail jane\u{200B}@acme.co now", "mail [REDACTED_EMAIL] now"),
        ("mail jane\u{FF20}acme.co now", "mail [REDACTED_EMAIL] now"),
        (
            "mail \u{FF4A}\u{FF41}\u{FF4E}\u{FF45}\u{FF20}acme.co",
            "mail [REDACTED_EMAIL]",
        ),
        ("mail jane\u{FE6B}acme.co", "mail [REDACTED_EMAIL]"),
        (
            "card \u{FF14}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}",
            "card [REDACTED_CREDIT_CARD]",
        ),
        (
            "card 4111\u{200D}1111\u{200D}1111\u{200D}1111 ok",
            "card [REDACTED_CREDIT_CARD] ok",
        ),
        (
            "card 4111\u{00A0}1111\u{00A0}1111\u{00A0}1111 ok",
            "card [REDACTED_CREDIT_CARD] ok",
        ),
        (
            "card 4111\u{FE0F}11111111111\u{E0001}1 ok",
            "card [REDACTED_CREDIT_CARD] ok",
        ),
        (
            "ssn \u{0661}\u{0662}\u{0663}-\u{0664}\u{0665}-\u{0666}\u{0667}\u{0668}\u{0669}",
            "ssn [REDACTED_SSN]",
        ),
        (
            "ssn \u{0967}\u{0968}\u{0969}-\u{096A}\u{096B}-\u{096C}\u{096D}\u{096E}\u{096F}",
            "ssn [REDACTED_SSN]",
        ),
        ("call (555)\u{2009}123\u{2013}4567", "call [REDACTED_PHONE]"),
        (
            "call \u{1D7D3}\u{1D7D3}\u{1D7D3}-123-4567",
            "call [REDACTED_PHONE]",
        ),
        ("call 555\u{2060}-123-4567", "call [REDACTED_PHONE]"),
        ("ip 10\u{FF0E}1\u{FF0E}2\u{FF0E}3 up", "ip [REDACTED_IP] up"),
        ("ip 10.1.2.\u{200B}3 up", "ip [REDACTED_IP] up"),
        ("key AKIA\u{200B}IOSFODNN7EXAMPLE", "key [REDACTED_SECRET]"),
        // Nothing to find: left as it is, invisible characters and all.
        (
            "résumé 東京 データ — → 🙂 \u{200B}",
            "résumé 東京 データ — → 🙂 \u{200B}",
        ),
        ("\u{FF11}\u{FF12}\u{FF13}", "\u{FF11}\u{FF12}\u{FF13}"),
    ] {
        assert_eq!(r.redact_str(text), want, "{text:?}");
        assert_eq!(&*r.redact_bytes(text.as_bytes()), want.as_bytes(), "{text:?}");
        let mut v = Value::String(text.to_owned());
        r.redact_json(&mut v);
        assert_eq!(v, want, "{text:?}");
        assert_eq!(r.redact_str(want), want, "idempotent: {text:?}");
    }
    // The partial form shows the digits as digits.
    let partial = PatternRedactor::builder().style(Style::Partial).build();
    assert_eq!(
        partial.redact_str("\u{FF14}\u{FF11}\u{FF11}\u{FF11}-1111-1111-1234"),
        "\u{FF14}\u{FF11}\u{FF11}\u{FF11}-1111-1111-1234",
        "fails Luhn"
    );
    assert_eq!(
        partial.redact_str("4111-1111-1111-\u{FF11}\u{FF11}\u{FF11}\u{FF11}"),
        "[REDACTED_CREDIT_CARD:\u{2026}1111]"
    );
    // Under a key that names a phone number.
    let mut v = serde_json::json!({"phone": "\u{FF15}\u{FF15}\u{FF15}1234567"});
    r.redact_json(&mut v);
    assert_eq!(v["phone"], "[REDACTED_PHONE]");
}

/// Long strings beyond ASCII take the survey's two searches (triggers and rare lead
/// bytes, then the common characters that fold and `rer `): a bearer token with no
/// trigger byte in it, before or after the first trigger, in text with and without
/// characters that fold, and as a key, is found on every path.
#[test]
fn bearer_tokens_in_long_text_beyond_ascii() {
    let r = r();
    let prose = "résumé café — データ привет 🙂 ".repeat(6);
    let token = "Bearer abcdefghijklmnopQRSTUVWxyz";
    for (text, want) in [
        (
            format!("{prose}{token} {prose}"),
            format!("{prose}Bearer [REDACTED_SECRET] {prose}"),
        ),
        (
            format!("{prose}{token} {prose} call 555-123-4567"),
            format!("{prose}Bearer [REDACTED_SECRET] {prose} call [REDACTED_PHONE]"),
        ),
        (
            format!("{prose} call 555-123-4567 {token} {prose}"),
            format!("{prose} call [REDACTED_PHONE] Bearer [REDACTED_SECRET] {prose}"),
        ),
        (
            format!("{prose}{token} {prose}\u{200B}"),
            format!("{prose}Bearer [REDACTED_SECRET] {prose}\u{200B}"),
        ),
        (
            format!("{prose}Be\u{200B}arer abcdefghijklmnopQRSTUVWxyz {prose}"),
            format!("{prose}Be\u{200B}arer [REDACTED_SECRET] {prose}"),
        ),
        (
            format!("{prose}the bearer of news, a referrer {prose}"),
            format!("{prose}the bearer of news, a referrer {prose}"),
        ),
    ] {
        assert_eq!(r.redact_str(&text), want, "{text:?}");
        assert_eq!(&*r.redact_bytes(text.as_bytes()), want.as_bytes(), "{text:?}");
        let mut v = Value::String(text.clone());
        r.redact_json(&mut v);
        assert_eq!(v, want, "{text:?}");
        let mut v = serde_json::json!({ text.clone(): 1 });
        r.redact_json(&mut v);
        assert_eq!(v, serde_json::json!({ want.clone(): 1 }), "{text:?}");
    }
}

/// The phone number forms of the issue: extensions, prefixes, separators, bare digits
/// with a key or a word that names a phone.
#[test]
fn phone_number_forms() {
    let r = r();
    for text in [
        "870-764-0242x4270",
        "870-764-0242 x4270",
        "870.764.0242x704",
        "(870)764-0242x41586",
        "870-764-0242 ext. 42",
        "870-764-0242 ext 42",
        "870-764-0242 extension 42",
        "870-764-0242 #42",
        "870-764-0242#42",
        "+1-870-764-0242",
        "+1-870-764-0242x427",
        "001-870-764-0242",
        "001-870-764-0242x42704",
        "+1 (870) 764-0242",
        "(+1) 870-764-0242",
        "(+1)870-764-0242",
        "1-870-764-0242",
        "1 870 764 0242",
        "1.870.764.0242",
        "870/764-0242",
        "870 764-0242",
        "(870) 764-0242",
        "+18707640242",
    ] {
        assert_eq!(
            r.redact_str(&format!("call {text} today")),
            "call [REDACTED_PHONE] today",
            "{text}"
        );
        assert_eq!(r.redact_str(&format!("<{text}>")), "<[REDACTED_PHONE]>", "{text}");
    }
    for (text, want) in [
        ("Phone: 8707640242", "Phone: [REDACTED_PHONE]"),
        ("\\nMobile: 8707640242\\n", "\\nMobile: [REDACTED_PHONE]\\n"),
        ("call me on 8707640242?", "call me on [REDACTED_PHONE]?"),
        ("8707640242 (fax)", "[REDACTED_PHONE] (fax)"),
        ("18707640242 mobile", "[REDACTED_PHONE] mobile"),
        // No phone word: ten digits could be anything.
        ("order 8707640242", "order 8707640242"),
        ("ref, 8707640242 call", "ref, [REDACTED_PHONE] call"),
        ("call, 8707640242", "call, 8707640242"),
        ("870-764-0242x", "870-764-0242x"),
        ("870-764-0242-1", "870-764-0242-1"),
        ("2001 870-764-0242", "2001 [REDACTED_PHONE]"),
    ] {
        assert_eq!(r.redact_str(text), want, "{text}");
    }
    let mut v = serde_json::json!({"phone_number": "8707640242", "n": "8707640242"});
    r.redact_json(&mut v);
    assert_eq!(
        v,
        serde_json::json!({"phone_number": "[REDACTED_PHONE]", "n": "8707640242"})
    );
    // Other countries: only with E.164 numbers on, and only from `+`.
    let intl = PatternRedactor::builder().e164(true).build();
    for text in [
        "+44(0)115 4960914",
        "+44115 496 0777",
        "+44(0)2074960074",
        "+49 (0) 9141 777631",
        "+33 1 83 41 77 76",
        "+33 (0)1 41 63 60 83",
        "+34842 91 41 77",
        "+39 0925141776",
        "+31(0)83-4497869",
        "+55 61 9141-7776",
        "+919141777631",
    ] {
        assert_eq!(
            intl.redact_str(&format!("call {text}.")),
            "call [REDACTED_PHONE].",
            "{text}"
        );
        assert_eq!(
            r.redact_str(&format!("call {text}.")),
            format!("call {text}."),
            "{text}"
        );
    }
    for text in ["+44 12", "+1 2 3", "020 7946 0958", "x+441234567890"] {
        assert_eq!(intl.redact_str(text), text, "{text}");
    }
}

/// Every card length each issuer uses, Luhn always, and a card followed by its expiry
/// or security code.
#[test]
fn card_lengths_of_every_issuer() {
    let r = r();
    let luhn = |prefix: &str, len: usize| {
        let mut d: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
        d.resize(len - 1, 7);
        let sum: u32 = d
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &x)| {
                let v = u32::from(x) * if i % 2 == 0 { 2 } else { 1 };
                if v > 9 { v - 9 } else { v }
            })
            .sum();
        d.push(u8::try_from((10 - sum % 10) % 10).unwrap());
        d.iter().map(|&x| char::from(b'0' + x)).collect::<String>()
    };
    let cases: &[(&str, &[usize])] = &[
        ("4", &[13, 16, 19]),
        ("51", &[16]),
        ("2221", &[16]),
        ("2720", &[16]),
        ("34", &[15]),
        ("37", &[15]),
        ("6011", &[16, 17, 18, 19]),
        ("65", &[16, 17, 18, 19]),
        ("644", &[16, 19]),
        ("300", &[14, 15, 16, 17, 18, 19]),
        ("36", &[14, 19]),
        ("38", &[14, 16]),
        ("3528", &[15, 16, 17, 18, 19]),
        ("3589", &[15, 16, 19]),
        ("2131", &[15]),
        ("1800", &[15]),
        ("62", &[16, 17, 18, 19]),
        ("5018", &[16, 19]),
        ("6759", &[16, 19]),
        ("6304", &[16]),
    ];
    for (prefix, lengths) in cases {
        for &n in *lengths {
            let card = luhn(prefix, n);
            assert_eq!(
                r.redact_str(&format!("pay {card} now")),
                "pay [REDACTED_CREDIT_CARD] now",
                "{card}"
            );
            let mut bad = card.clone().into_bytes();
            bad[n - 1] = b'0' + (bad[n - 1] - b'0' + 1) % 10;
            let bad = String::from_utf8(bad).unwrap();
            assert_eq!(
                r.redact_str(&format!("pay {bad} now")),
                format!("pay {bad} now"),
                "Luhn: {bad}"
            );
        }
    }
    // Maestro of 12 to 15 digits: with a card word or key only.
    for prefix in [
        "5018", "5020", "5038", "5612", "5893", "6304", "6759", "6761", "0604", "6390",
    ] {
        for n in [12, 13, 15] {
            if prefix == "0604" && n > 12 {
                continue;
            }
            let card = luhn(prefix, n);
            assert_eq!(
                r.redact_str(&format!("my card {card}")),
                "my card [REDACTED_CREDIT_CARD]",
                "{card}"
            );
            assert_eq!(
                r.redact_str(&format!("order {card}")),
                format!("order {card}"),
                "{card}"
            );
            let mut v = serde_json::json!({"credit_card_number": card, "cc": card.parse::<u64>().unwrap()});
            r.redact_json(&mut v);
            assert_eq!(v["credit_card_number"], "[REDACTED_CREDIT_CARD]", "{card}");
            if !card.starts_with('0') {
                assert_eq!(v["cc"], "[REDACTED_CREDIT_CARD]", "{card}");
            }
        }
    }
    for text in [
        "4111 1111 1111 1111 04/27",
        "4111 1111 1111 1111 4/2027",
        "4111 1111 1111 1111 123",
        "4111 1111 1111 1111 04/27 123",
    ] {
        assert!(
            r.redact_str(text).starts_with("[REDACTED_CREDIT_CARD] "),
            "{text}"
        );
    }
    assert_eq!(
        r.redact_str("4111 1111 1111 1111 123 456"),
        "4111 1111 1111 1111 123 456",
        "a table"
    );
}

/// Addresses at documentation domains are left unless asked for; a dotted quad under a
/// build or release key is a version.
#[test]
fn documentation_domains_and_versions() {
    let r = r();
    for text in [
        "jane@example.com",
        "a@mail.example.org",
        "x@host.test",
        "y@site.example",
        "z@foo.invalid",
    ] {
        assert_eq!(r.redact_str(text), text);
    }
    assert_eq!(r.redact_str("jane@example.co"), "[REDACTED_EMAIL]");
    let docs = PatternRedactor::builder().documentation_domains(true).build();
    assert_eq!(
        docs.redact_str("jane@example.com x@host.test"),
        "[REDACTED_EMAIL] [REDACTED_EMAIL]"
    );
    let cfg: RedactionConfig =
        serde_json::from_value(serde_json::json!({"documentation-domains": true})).unwrap();
    assert_eq!(cfg.build(None).redact_str("jane@example.com"), "[REDACTED_EMAIL]");
    let mut v = serde_json::json!({"build": "10.1.2.3", "release": "1.2.3.4", "host": "10.1.2.3"});
    r.redact_json(&mut v);
    assert_eq!(
        v,
        serde_json::json!({"build": "10.1.2.3", "release": "1.2.3.4", "host": "[REDACTED_IP]"})
    );
    assert_eq!(
        r.redact_str("Firefox rv:1.9.6.20 build 10.0.1.2"),
        "Firefox rv:1.9.6.20 build 10.0.1.2"
    );
}
