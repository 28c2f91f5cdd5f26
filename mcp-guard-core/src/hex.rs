//! Lower-case hexadecimal, the one encoding of digests and ids across the workspace.
//!
//! Written by hand: two short functions, where a crate would add a dependency for
//! what `write!` and `u8::from_str_radix` already do.
//!
//! ```
//! assert_eq!(mcp_guard_core::hex::encode(&[0x00, 0xab, 0xff]), "00abff");
//! assert_eq!(mcp_guard_core::hex::decode("00abff"), Some(vec![0x00, 0xab, 0xff]));
//! assert_eq!(mcp_guard_core::hex::decode("abc"), None);
//! ```

use std::fmt::Write as _;

/// `bytes` as lower-case hex, two digits a byte.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `n` bytes from the operating system's random source, as hex: ids and one-time values.
/// The one failure policy for them ([`crate::random`]): an error, on which the caller
/// refuses what it was doing; nothing falls back to a weaker source or a fixed value.
///
/// # Errors
/// The random source failed.
pub fn random(n: usize) -> Result<String, getrandom::Error> {
    let mut b = vec![0u8; n];
    crate::random::fill(&mut b)?;
    Ok(encode(&b))
}

/// The bytes of an even-length hex string (either case); `None` for anything else.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}
