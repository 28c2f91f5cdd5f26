//! A seeded generator of labelled test data for the redactor: positives with spans,
//! negative traps, and PII-free or PII-bearing JSON for accuracy tests and benches.
//!
//! Everything is a pure function of the seed (a `SplitMix64` generator written out
//! here, so the data does not change with a dependency's version).
#![allow(
    missing_docs,
    clippy::missing_panics_doc,
    clippy::exhaustive_structs,
    clippy::cast_possible_truncation,
    clippy::explicit_auto_deref,
    reason = "test data generator"
)]

use std::fmt::Write as _;
use std::ops::Range;

use super::Kind;

/// `SplitMix64`: small, fast, good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[usize::try_from(self.below(items.len() as u64)).unwrap_or(0)]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + u8::try_from(self.below(10)).unwrap_or(0)))
            .collect()
    }

    pub fn alnum_in(&mut self, lo: u64, hi: u64, alphabet: &[u8]) -> String {
        let n = usize::try_from(self.range(lo, hi)).unwrap_or(0);
        self.alnum(n, alphabet)
    }

    pub fn digits_in(&mut self, lo: u64, hi: u64) -> String {
        let n = usize::try_from(self.range(lo, hi)).unwrap_or(0);
        self.digits(n)
    }

    pub fn alnum(&mut self, n: usize, alphabet: &[u8]) -> String {
        (0..n).map(|_| char::from(*self.pick(alphabet))).collect()
    }
}

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGIT: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const WORDS: &[&str] = &[
    "the",
    "report",
    "shows",
    "that",
    "our",
    "customer",
    "asked",
    "about",
    "a",
    "refund",
    "for",
    "order",
    "and",
    "please",
    "review",
    "deployment",
    "status",
    "of",
    "service",
    "with",
    "latency",
    "when",
    "cache",
    "is",
    "warm",
    "user",
    "requested",
    "update",
    "to",
    "profile",
    "settings",
    "meeting",
    "notes",
    "include",
    "next",
    "steps",
    "résumé",
    "naïve",
    "café",
    "über",
    "東京",
    "データ",
    "привет",
    "mañana",
    "→",
    "—",
    "🙂",
];

/// A value with the kind it is.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub text: String,
    /// Labelled spans (byte ranges) and their kinds.
    pub spans: Vec<(Kind, Range<usize>)>,
}

pub fn email(r: &mut Rng) -> String {
    let first = r.alnum_in(2, 8, LOWER);
    let local = match r.below(4) {
        0 => first,
        1 => format!("{first}.{}", r.alnum_in(2, 8, LOWER)),
        2 => format!("{first}{}", r.digits(2)),
        _ => format!("{first}+{}", r.alnum(3, LOWER)),
    };
    let domain = r.alnum_in(3, 10, LOWER);
    let tld = *r.pick(&["com", "org", "io", "co.uk", "de", "company", "net"]);
    let sub = if r.chance(20) {
        format!("{}.", r.alnum(4, LOWER))
    } else {
        String::new()
    };
    format!("{local}@{sub}{domain}.{tld}")
}

pub fn phone(r: &mut Rng) -> String {
    let area = loop {
        let a = r.range(200, 999);
        if a % 100 != 11 {
            break a;
        }
    };
    let ex = r.range(200, 999);
    let line = r.digits(4);
    match r.below(9) {
        0 => format!("({area}) {ex}-{line}"),
        1 => format!("{area}-{ex}-{line}"),
        2 => format!("{area}.{ex}.{line}"),
        3 => format!("{area} {ex} {line}"),
        4 => format!("+1 {area} {ex} {line}"),
        5 => format!("+1-{area}-{ex}-{line}"),
        6 => format!("+1{area}{ex}{line}"),
        7 => format!("1-{area}-{ex}-{line}"),
        _ => format!("+1 ({area}) {ex}-{line}"),
    }
}

pub fn ssn(r: &mut Rng) -> String {
    let area = loop {
        let a = r.range(1, 899);
        if a != 666 {
            break a;
        }
    };
    let group = r.range(1, 99);
    let serial = r.range(1, 9999);
    let sep = if r.chance(80) { '-' } else { ' ' };
    format!("{area:03}{sep}{group:02}{sep}{serial:04}")
}

fn luhn_complete(prefix: &str, len: usize, r: &mut Rng) -> String {
    let mut d: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
    while d.len() < len - 1 {
        d.push(u8::try_from(r.below(10)).unwrap_or(0));
    }
    let mut sum = 0u32;
    for (i, &x) in d.iter().rev().enumerate() {
        let mut v = u32::from(x);
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    d.push(u8::try_from((10 - sum % 10) % 10).unwrap_or(0));
    d.into_iter().map(|x| char::from(b'0' + x)).collect()
}

/// A valid card number (issuer range + Luhn), in digits only.
pub fn card_digits(r: &mut Rng) -> String {
    let (prefix, len) = match r.below(9) {
        0 => ("4".to_owned(), *r.pick(&[16, 16, 16, 13, 19])),
        1 => (r.range(51, 55).to_string(), 16),
        2 => (r.range(2221, 2720).to_string(), 16),
        3 => ((*r.pick(&["34", "37"])).to_owned(), 15),
        4 => ((*r.pick(&["6011", "65", "644", "649"])).to_owned(), 16),
        5 => (r.range(3528, 3589).to_string(), 16),
        6 => ((*r.pick(&["36", "38", "300", "305"])).to_owned(), 14),
        7 => ("62".to_owned(), *r.pick(&[16, 17, 18, 19])),
        _ => ("4".to_owned(), 16),
    };
    luhn_complete(&prefix, len, r)
}

pub fn card(r: &mut Rng) -> String {
    let d = card_digits(r);
    let sep = *r.pick(&["", " ", "-"]);
    if sep.is_empty() {
        return d;
    }
    let groups: Vec<&str> = if d.len() == 15 || d.len() == 14 {
        vec![&d[..4], &d[4..10], &d[10..]]
    } else {
        d.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect()
    };
    groups.join(sep)
}

pub fn ipv4(r: &mut Rng) -> String {
    format!(
        "{}.{}.{}.{}",
        r.range(1, 255),
        r.below(256),
        r.below(256),
        r.range(1, 254)
    )
}

pub fn ipv6(r: &mut Rng) -> String {
    let g = |r: &mut Rng| {
        let v = r.below(0x10000);
        if r.chance(50) {
            format!("{v:x}")
        } else {
            format!("{v:04x}")
        }
    };
    match r.below(8) {
        0 => (0..8).map(|_| g(r)).collect::<Vec<_>>().join(":"),
        1 => format!("2001:db8::{}", g(r)),
        2 => format!("fe80::{}:{}:{}:{}%eth{}", g(r), g(r), g(r), g(r), r.below(3)),
        3 => "::1".to_owned(),
        4 => format!("::ffff:{}", ipv4(r)),
        5 => format!("{}:{}::{}:{}", g(r), g(r), g(r), g(r)),
        6 => format!("2001:db8:{}:{}::", g(r), g(r)),
        _ => format!("64:ff9b::{}", ipv4(r)),
    }
}

pub fn secret(r: &mut Rng) -> String {
    match r.below(9) {
        0 => format!("AKIA{}", r.alnum(16, UPPER_DIGIT)),
        1 => format!("ghp_{}", r.alnum(36, ALNUM)),
        2 => format!("github_pat_{}_{}", r.alnum(22, ALNUM), r.alnum(59, ALNUM)),
        3 => format!("xoxb-{}-{}-{}", r.digits(12), r.digits(13), r.alnum(24, ALNUM)),
        4 => format!("sk_live_{}", r.alnum(24, ALNUM)),
        5 => format!("sk-proj-{}{}", r.digits(2), r.alnum(40, ALNUM)),
        6 => format!("AIza{}", r.alnum(35, ALNUM)),
        7 => format!(
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{}.{}",
            r.alnum(40, ALNUM),
            r.alnum(43, ALNUM)
        ),
        _ => format!("Bearer {}", r.alnum(32, ALNUM)),
    }
}

fn filler(r: &mut Rng, out: &mut String, words: usize) {
    for _ in 0..words {
        out.push_str(*r.pick(WORDS));
        out.push(' ');
    }
}

/// A labelled sentence holding one or two values of `kind`.
pub fn positive(r: &mut Rng, kind: Kind) -> Labelled {
    let mut text = String::new();
    let mut spans = Vec::new();
    {
        let n = r.range(0, 6) as usize;
        filler(r, &mut text, n);
    };
    for i in 0..r.range(1, 2) {
        if i > 0 {
            text.push_str(*r.pick(&[" and ", ", ", "; "]));
        }
        text.push_str(*r.pick(&["", "(", "<", "\"", "'", "at ", "= ", ": "]));
        let v = match kind {
            Kind::Email => email(r),
            Kind::Phone => phone(r),
            Kind::Ssn => ssn(r),
            Kind::CreditCard => card(r),
            Kind::Ipv4 => ipv4(r),
            Kind::Ipv6 => ipv6(r),
            _ => secret(r),
        };
        // A `Bearer` finding covers the token only.
        let start = text.len() + if v.starts_with("Bearer ") { 7 } else { 0 };
        text.push_str(&v);
        spans.push((kind, start..text.len()));
        text.push_str(*r.pick(&["", ")", ">", "\"", "'", ".", ",", " "]));
    }
    text.push(' ');
    {
        let n = r.range(0, 6) as usize;
        filler(r, &mut text, n);
    };
    Labelled { text, spans }
}

/// Text that looks numeric or structured but holds nothing to redact.
pub fn trap(r: &mut Rng) -> String {
    match r.below(18) {
        0 => format!(
            "version {}.{}.{}.{}",
            r.below(20),
            r.below(20),
            r.below(100),
            r.below(100)
        ),
        1 => format!(
            "v{}.{}.{}.{}",
            r.below(20),
            r.below(20),
            r.below(100),
            r.below(100)
        ),
        2 => format!(
            "build {}.{}.{}.{}.{}",
            r.below(20),
            r.below(20),
            r.below(100),
            r.below(100),
            r.below(9)
        ),
        3 => format!("10.0.{}.{}", r.range(10000, 30000), r.range(1000, 9999)),
        4 => format!(
            "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            r.range(2000, 2030),
            r.range(1, 12),
            r.range(1, 28),
            r.below(24),
            r.below(60),
            r.below(60),
            r.below(1000)
        ),
        5 => format!("{}", r.range(1_500_000_000_000, 1_900_000_000_000)),
        6 => format!(
            "{}-{}-{}-{}-{}",
            r.alnum(8, HEX),
            r.alnum(4, HEX),
            r.alnum(4, HEX),
            r.alnum(4, HEX),
            r.alnum(12, HEX)
        ),
        7 => {
            let n = *r.pick(&[32, 40, 64]);
            r.alnum(n, HEX)
        }
        8 => {
            // A 16-digit order number that fails Luhn.
            let c = card_digits(r);
            let last = c.as_bytes()[c.len() - 1];
            let bad = char::from(b'0' + (last - b'0' + 1) % 10);
            format!("order {}{bad}", &c[..c.len() - 1])
        }
        9 => format!("000-{:02}-{:04}", r.range(1, 99), r.range(1, 9999)),
        10 => format!("666-{:02}-{:04}", r.range(1, 99), r.range(1, 9999)),
        11 => format!(
            "{}-{:02}-{:04}",
            r.range(900, 999),
            r.range(1, 99),
            r.range(1, 9999)
        ),
        12 => format!("{}-00-{:04}", r.range(1, 899), r.range(1, 9999)),
        13 => format!(
            "{}:{}",
            r.pick(&["localhost", "example.com", "db.internal", "api"]),
            r.range(1, 65535)
        ),
        14 => format!(
            "{}.{}.{}.{}",
            r.range(256, 999),
            r.below(256),
            r.below(256),
            r.below(256)
        ),
        15 => format!(
            "{}.{}.{}.{}",
            r.below(256),
            r.below(256),
            r.range(256, 999),
            r.below(256)
        ),
        16 => format!("{:02}:{:02}:{:02}", r.below(24), r.below(60), r.below(60)),
        _ => format!(
            "{} ms, {} items, ${}.{:02}",
            r.below(5000),
            r.below(100),
            r.below(10_000),
            r.below(100)
        ),
    }
}

fn prose(r: &mut Rng, out: &mut String, words: usize) {
    for i in 0..words {
        out.push_str(*r.pick(WORDS));
        out.push(if i % 12 == 11 { '.' } else { ' ' });
    }
}

/// A harmless numeric value as it appears in tool output.
fn clean_number_text(r: &mut Rng, out: &mut String) {
    match r.below(14) {
        0 => {
            let _ = write!(out, "{}", r.below(1_000_000));
        }
        1 => {
            let _ = write!(out, "{}", r.range(1_500_000_000, 1_900_000_000));
        }
        2 => {
            let _ = write!(out, "{}", r.range(1_500_000_000_000, 1_900_000_000_000));
        }
        3 => {
            let _ = write!(out, "{}.{:02}", r.below(100_000), r.below(100));
        }
        4 => out.push_str(&trap(r)),
        5 => {
            // A list of small numbers: the source of accidental Luhn passes.
            for _ in 0..r.range(3, 12) {
                let _ = write!(out, "{} ", r.below(10_000));
            }
        }
        6 => {
            for _ in 0..r.range(3, 8) {
                let _ = write!(out, "{}-", r.below(1000));
            }
            out.push('0');
        }
        7 => {
            let _ = write!(out, "{}", r.digits_in(5, 12));
        }
        8 => {
            let _ = write!(
                out,
                "{}/{}/{}",
                r.range(1, 12),
                r.range(1, 28),
                r.range(1990, 2030)
            );
        }
        9 => {
            let _ = write!(out, "#{}", r.digits_in(4, 10));
        }
        10 => {
            let _ = write!(out, "{}x{}", r.range(1, 4000), r.range(1, 4000));
        }
        11 => {
            let _ = write!(out, "{}.{}", r.below(90), r.digits(6));
        }
        12 => {
            let _ = write!(out, "{} {} {}", r.digits(4), r.digits(4), r.digits(4));
        }
        _ => {
            let _ = write!(
                out,
                "{}",
                r.digits_in(13, 19).trim_start_matches(['3', '4', '5', '6', '2'])
            );
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A `tools/call` response whose text is a table of mostly numbers. With `pii`, about
/// one row in eight carries a value to redact.
pub fn digit_heavy_json(seed: u64, target_bytes: usize, pii: bool) -> String {
    let mut r = Rng::new(seed);
    let mut rows = Vec::new();
    let mut size = 0;
    while size < target_bytes {
        let mut text = String::new();
        let _ = write!(text, "row {}: ", r.below(100_000));
        for _ in 0..6 {
            clean_number_text(&mut r, &mut text);
            text.push_str(", ");
        }
        if pii && r.chance(12) {
            text.push_str(&match r.below(5) {
                0 => card(&mut r),
                1 => ssn(&mut r),
                2 => phone(&mut r),
                3 => ipv4(&mut r),
                _ => email(&mut r),
            });
        }
        let row = format!(
            "{{\"id\":{},\"ts\":{},\"amount\":{}.{:02},\"qty\":{},\"note\":{}}}",
            r.below(10_000_000),
            r.range(1_500_000_000_000, 1_900_000_000_000),
            r.below(10_000),
            r.below(100),
            r.below(1000),
            json_str(&text)
        );
        size += row.len() + 1;
        rows.push(row);
    }
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"ok\"}}],\"structuredContent\":{{\"rows\":[{}]}}}}}}",
        rows.join(",")
    )
}

/// A `tools/call` response with prose paragraphs. With `pii`, some paragraphs mention
/// an email address, phone number or card.
pub fn prose_json(seed: u64, target_bytes: usize, pii: bool) -> String {
    let mut r = Rng::new(seed);
    let mut items = Vec::new();
    let mut size = 0;
    while size < target_bytes {
        let mut text = String::new();
        {
            let n = r.range(40, 120) as usize;
            prose(&mut r, &mut text, n);
        };
        if pii && r.chance(30) {
            text.push_str(" contact ");
            text.push_str(&if r.chance(50) {
                email(&mut r)
            } else {
                phone(&mut r)
            });
            text.push('.');
        }
        let item = format!("{{\"type\":\"text\",\"text\":{}}}", json_str(&text));
        size += item.len() + 1;
        items.push(item);
    }
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{{\"content\":[{}],\"isError\":false}}}}",
        items.join(",")
    )
}

/// PII-free JSON in the shape of tool results: records with ids, timestamps, amounts,
/// versions, hashes, UUIDs, number lists and prose.
pub fn clean_json(seed: u64, target_bytes: usize) -> String {
    let mut r = Rng::new(seed);
    let mut out = String::from("[");
    while out.len() < target_bytes {
        let mut note = String::new();
        {
            let n = r.range(3, 20) as usize;
            prose(&mut r, &mut note, n);
        };
        for _ in 0..r.range(1, 4) {
            note.push(' ');
            clean_number_text(&mut r, &mut note);
        }
        let _ = write!(
            out,
            "{{\"id\":{},\"ts\":{},\"ts_us\":{},\"amount\":{}.{:02},\"version\":\"{}.{}.{}.{}\",\"sha\":\"{}\",\"uuid\":\"{}\",\"counts\":[{},{},{},{}],\"ref\":\"{}\",\"note\":{}}},",
            r.below(10_000_000_000),
            r.range(1_500_000_000_000, 1_900_000_000_000),
            r.range(1_500_000_000_000_000, 1_900_000_000_000_000),
            r.below(100_000),
            r.below(100),
            r.below(20),
            r.below(20),
            r.below(100),
            r.below(10_000),
            r.alnum(40, HEX),
            trap_uuid(&mut r),
            r.below(100_000),
            r.below(100_000),
            r.below(100_000),
            r.below(100_000),
            r.digits_in(6, 12),
            json_str(&note),
        );
    }
    out.pop();
    out.push(']');
    out
}

fn trap_uuid(r: &mut Rng) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        r.alnum(8, HEX),
        r.alnum(4, HEX),
        r.alnum(4, HEX),
        r.alnum(4, HEX),
        r.alnum(12, HEX)
    )
}
