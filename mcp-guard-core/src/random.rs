//! One-time values (ids, authorization codes, CSRF values, PKCE verifiers, cookies)
//! from the operating system's random source, with one failure policy for the whole
//! workspace: the source failing is an error, on which the caller refuses what it was
//! doing (an OAuth error, an error page, a 500 naming the cause). Nothing panics, and
//! nothing falls back to a weaker source, an empty value or a fixed one.
//!
//! [`base64url`] makes the unpadded base64url strings URLs and cookies carry;
//! [`crate::hex::random`] makes hex ones through the same [`fill`].
//!
//! ```
//! let code = mcp_guard_core::random::base64url(32)?;
//! assert_eq!(code.len(), 43);
//! assert!(code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
//! # Ok::<(), getrandom::Error>(())
//! ```

use base64::Engine as _;

/// Fills `buf` from the operating system's random source.
///
/// # Errors
/// The random source failed: refuse what the value was for.
pub fn fill(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    #[cfg(any(test, feature = "test-util"))]
    if FAIL.with(std::cell::Cell::get) {
        return Err(getrandom::Error::UNSUPPORTED);
    }
    getrandom::getrandom(buf)
}

/// `n` random bytes as unpadded base64url (`[A-Za-z0-9_-]`, `ceil(4n/3)` characters).
///
/// # Errors
/// The random source failed: refuse what the value was for.
pub fn base64url(n: usize) -> Result<String, getrandom::Error> {
    let mut b = vec![0u8; n];
    fill(&mut b)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// Makes [`fill`] fail on the current thread while the returned guard lives, so a test
/// can check that a caller refuses (feature `test-util`). Only this thread is affected:
/// run the code under test on it (a current-thread runtime).
#[cfg(any(test, feature = "test-util"))]
pub fn fail_on_this_thread() -> FailGuard {
    FAIL.with(|f| f.set(true));
    FailGuard(())
}

/// While it lives, [`fill`] fails on the thread that made it ([`fail_on_this_thread`]).
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug)]
#[must_use = "the source fails only while the guard lives"]
pub struct FailGuard(());

#[cfg(any(test, feature = "test-util"))]
impl Drop for FailGuard {
    fn drop(&mut self) {
        FAIL.with(|f| f.set(false));
    }
}

#[cfg(any(test, feature = "test-util"))]
thread_local! {
    static FAIL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_base64url_of_the_length_asked_and_differ() {
        let a = base64url(18).unwrap();
        let b = base64url(18).unwrap();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn a_failing_source_is_an_error_for_every_kind_of_value() {
        {
            let _fail = fail_on_this_thread();
            assert!(base64url(32).is_err());
            assert!(crate::hex::random(16).is_err());
            assert!(fill(&mut [0u8; 8]).is_err());
        }
        assert!(
            base64url(32).is_ok(),
            "the source works again once the guard is gone"
        );
    }
}
