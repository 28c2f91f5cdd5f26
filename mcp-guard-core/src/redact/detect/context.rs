//! Words around a bare number that say what it is: `Phone: 5551234567`,
//! `5551234567 (mobile)`, `card 501812345678`.
//!
//! A number whose shape alone does not tell (ten bare digits, a twelve-digit card) is
//! taken only with such a word close by. The look stops at a fence (`, ; | " < > [ ]
//! { }`), so that a placeholder (which sits between `[` and `]`) is never read as a
//! context and the second-pass skip stays sound (see `PatternRedactor::settled`).

use crate::redact::pattern::FENCES;

/// How far from the number a context word may be, in bytes.
const BEFORE: usize = 40;
const AFTER: usize = 20;

/// Words that say a number next to them is a phone number (lower case).
const PHONE_WORDS: &[&[u8]] = &[
    b"phone",
    b"phones",
    b"telephone",
    b"tel",
    b"mobile",
    b"mob",
    b"cell",
    b"cellphone",
    b"fax",
    b"call",
    b"calls",
    b"called",
    b"calling",
    b"dial",
    b"sms",
    b"text",
    b"message",
    b"messages",
    b"whatsapp",
    b"contact",
    b"reach",
    b"office",
    b"desk",
    b"hotline",
    b"landline",
    b"answering",
];

/// Words that say a number next to them is a payment card number (lower case).
const CARD_WORDS: &[&[u8]] = &[
    b"card",
    b"cards",
    b"cc",
    b"credit",
    b"debit",
    b"maestro",
    b"visa",
    b"mastercard",
    b"amex",
    b"pan",
];

/// Whether one of `words` stands within reach of `h[start..end]` (no fence between).
/// A word counts when a run of letters ends with it, so that `\nMobile` (a literal
/// backslash and `n` before the word, as templates sometimes leave) still counts.
fn near(h: &[u8], start: usize, end: usize, words: &[&[u8]]) -> bool {
    let lo = start.saturating_sub(BEFORE);
    let left = &h[lo..start];
    let left = match left.iter().rposition(|b| FENCES.contains(b)) {
        Some(f) => &left[f + 1..],
        None => left,
    };
    let right = h.get(end..(end + AFTER).min(h.len())).unwrap_or_default();
    let right = match right.iter().position(|b| FENCES.contains(b)) {
        Some(f) => &right[..f],
        None => right,
    };
    has_word(left, words) || has_word(right, words)
}

/// Whether a run of ASCII letters in `s` ends with one of `words` (ASCII case ignored).
fn has_word(s: &[u8], words: &[&[u8]]) -> bool {
    let mut i = 0;
    while i < s.len() {
        if !s[i].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let from = i;
        while i < s.len() && s[i].is_ascii_alphabetic() {
            i += 1;
        }
        let run = &s[from..i];
        if words
            .iter()
            .any(|w| run.len() >= w.len() && run[run.len() - w.len()..].eq_ignore_ascii_case(w))
        {
            return true;
        }
    }
    false
}

/// Words that say a number next to them is a product code, not a card (lower case).
const PRODUCT_WORDS: &[&[u8]] = &[b"ean", b"isbn", b"gtin", b"upc", b"barcode", b"sku"];

/// Words just before a number that say it is part of a street address (lower case).
const ADDRESS_WORDS: &[&[u8]] = &[
    b"apt",
    b"apartment",
    b"suite",
    b"ste",
    b"unit",
    b"room",
    b"rm",
    b"floor",
    b"box",
    b"bldg",
    b"building",
    b"lot",
];

/// Whether a product-code word (`EAN`, `ISBN`…) stands near `h[start..end]`.
pub(crate) fn product_near(h: &[u8], start: usize, end: usize) -> bool {
    near(h, start, end, PRODUCT_WORDS)
}

/// Whether the word just before `s` (past spaces and a `.` or `#`) is one that starts
/// a street address's unit (`Apt.`, `Suite`…): `Suite 796 628 1570 Main St` is not a
/// phone number. Reads no further than that word, and never across a fence.
pub(crate) fn address_before(h: &[u8], s: usize) -> bool {
    let mut i = s;
    let mut skipped = 0;
    while i > 0 && skipped < 3 && matches!(h[i - 1], b' ' | b'.' | b'#') {
        i -= 1;
        skipped += 1;
    }
    let mut w = i;
    while w > 0 && i - w < 10 && h[w - 1].is_ascii_alphabetic() {
        w -= 1;
    }
    let word = &h[w..i];
    !word.is_empty() && ADDRESS_WORDS.iter().any(|a| word.eq_ignore_ascii_case(a))
}

/// Whether a phone word stands near `h[start..end]`.
pub(crate) fn phone_near(h: &[u8], start: usize, end: usize) -> bool {
    near(h, start, end, PHONE_WORDS)
}

/// Whether a card word stands near `h[start..end]`.
pub(crate) fn card_near(h: &[u8], start: usize, end: usize) -> bool {
    near(h, start, end, CARD_WORDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_near_a_number() {
        let at = |s: &str| {
            let p = s.find(|c: char| c.is_ascii_digit()).unwrap_or(0);
            let e = p + s[p..].find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len() - p);
            (phone_near(s.as_bytes(), p, e), card_near(s.as_bytes(), p, e))
        };
        assert_eq!(at("Phone: 5551234567"), (true, false));
        assert_eq!(at("\\nMobile: 5551234567"), (true, false));
        assert_eq!(at("5551234567 (mobile)"), (true, false));
        assert_eq!(at("call me at 5551234567"), (true, false));
        assert_eq!(at("my card 501812345678"), (false, true));
        assert_eq!(at("order 5551234567"), (false, false));
        assert_eq!(at("telephone, 5551234567"), (false, false), "a fence between");
        assert_eq!(at("[REDACTED_PHONE] 5551234567"), (false, false));
        assert_eq!(
            at("microphone5551234567"),
            (true, false),
            "a run that ends with the word"
        );
        assert_eq!(at("phoned 5551234567"), (false, false));
    }
}
