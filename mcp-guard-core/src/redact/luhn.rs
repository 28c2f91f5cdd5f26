//! The Luhn (mod 10) check digit used by payment card numbers.

/// Whether `digits` (ASCII `0`-`9` only) pass the Luhn check.
///
/// Any non-digit byte makes the check fail. An empty slice fails.
pub(crate) fn valid(digits: &[u8]) -> bool {
    /// A digit doubled, minus 9 when above 9.
    const DOUBLED: [u8; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    let mut double = false;
    for &b in digits.iter().rev() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return false;
        }
        sum += u32::from(if double { DOUBLED[usize::from(d)] } else { d });
        double = !double;
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
