//! The Luhn (mod 10) check digit used by payment card numbers.

/// Whether `digits` (ASCII `0`-`9` only) pass the Luhn check.
///
/// Any non-digit byte makes the check fail. An empty slice fails.
pub(crate) fn valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_numbers() {
        assert!(super::valid(b"4111111111111111"));
        assert!(super::valid(b"378282246310005"));
        assert!(super::valid(b"79927398713"));
        assert!(!super::valid(b"4111111111111112"));
        assert!(!super::valid(b""));
        assert!(!super::valid(b"41111x1111111111"));
    }
}
