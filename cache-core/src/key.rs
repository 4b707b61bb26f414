//! The portable key rule and prefix-free namespaces.
//!
//! Every engine enforces one rule by default, so a key that works on one engine works on all of
//! them:
//!
//! - a key is not empty;
//! - it is at most [`MAX_KEY_LEN`] (250) bytes long **after** the engine adds its namespace and
//!   any internal prefix, so the room left for the key itself is
//!   [`Capabilities::max_key_len`](crate::Capabilities::max_key_len);
//! - it holds no whitespace and no control character (checked on Unicode characters: a space, a
//!   tab, `\r`, `\n`, NUL, DEL and U+0085 are all refused). Any other Unicode text is fine.
//!
//! A key that breaks the rule gives [`CacheError::InvalidKey`] before anything is sent or
//! changed.
//!
//! Namespaces are composed so that no namespace's prefix is a prefix of another's: `a` and `a:b`
//! never share a key, and clearing one never touches the other. See [`namespace_prefix`].

use crate::error::{CacheError, KeyProblem, Result};

/// The longest key, prefix included, that the portable key rule allows: 250 bytes (memcached's
/// limit).
pub const MAX_KEY_LEN: usize = 250;

/// The longest namespace [`namespace_prefix`] accepts, in bytes, before escaping.
pub const MAX_NAMESPACE_LEN: usize = 64;

/// Checks `key` against the portable key rule, given that the engine adds `prefix_len` bytes in
/// front of it.
///
/// # Errors
///
/// [`CacheError::InvalidKey`] saying what is wrong: empty, too long, or a forbidden character.
///
/// ```
/// use cache_core::key::check_key;
///
/// assert!(check_key("user:42", 0).is_ok());
/// assert!(check_key("naïve-ключ", 0).is_ok());
/// assert!(check_key("", 0).is_err());
/// assert!(check_key("two words", 0).is_err());
/// assert!(check_key("inject\r\ndelete x", 0).is_err());
/// assert!(check_key(&"k".repeat(250), 0).is_ok());
/// assert!(check_key(&"k".repeat(250), 4).is_err());
/// ```
#[inline]
pub fn check_key(key: &str, prefix_len: usize) -> Result<()> {
    if key.is_empty() {
        return Err(CacheError::invalid_key(key, KeyProblem::Empty));
    }
    let max = MAX_KEY_LEN.saturating_sub(prefix_len);
    if key.len() > max {
        return Err(CacheError::invalid_key(
            key,
            KeyProblem::TooLong {
                len: key.len(),
                max,
            },
        ));
    }
    // Most keys are printable ASCII: check that eight bytes at a time, and decode characters only
    // when some byte is a space, a control byte, DEL or non-ASCII.
    if is_plain_ascii(key.as_bytes()) {
        return Ok(());
    }
    check_chars(key)
}

/// Whether every byte is printable ASCII without space (0x21..=0x7e).
#[inline]
fn is_plain_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // A byte below 0x21 sets its high bit in `low`; one at 0x7f or above sets it in `high`
        // (a carry out of a 0xff byte can only flag a neighbour too: false alarms fall back to
        // the exact check, and no bad byte goes unflagged).
        let low = w.wrapping_sub(ONES * 0x21) & !w & HIGHS;
        let high = (w.wrapping_add(ONES) | w) & HIGHS;
        if low | high != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b > b' ' && b < 0x7f)
}

#[cold]
fn check_chars(key: &str) -> Result<()> {
    match key
        .char_indices()
        .find(|(_, ch)| ch.is_whitespace() || ch.is_control())
    {
        Some((at, ch)) => Err(CacheError::invalid_key(
            key,
            KeyProblem::ForbiddenChar { ch, at },
        )),
        None => Ok(()),
    }
}

/// Builds the prefix that an engine puts in front of every key of `namespace`.
///
/// The namespace is escaped (`%` becomes `%25`, `:` becomes `%3A`) and followed by `:`. The
/// escaped namespace holds no `:`, so the first `:` of a stored key always ends its namespace:
/// the prefixes are prefix-free, and `a` (`a:`) and `a:b` (`a%3Ab:`) never share a key.
///
/// # Errors
///
/// [`CacheError::InvalidConfig`] when the namespace is empty, longer than
/// [`MAX_NAMESPACE_LEN`] bytes, or holds whitespace or control characters.
///
/// ```
/// use cache_core::key::namespace_prefix;
///
/// assert_eq!(namespace_prefix("app").unwrap(), "app:");
/// assert_eq!(namespace_prefix("app:v2").unwrap(), "app%3Av2:");
/// assert!(namespace_prefix("").is_err());
/// ```
pub fn namespace_prefix(namespace: &str) -> Result<String> {
    if namespace.is_empty() {
        return Err(CacheError::invalid_config("a namespace must not be empty"));
    }
    if namespace.len() > MAX_NAMESPACE_LEN {
        return Err(CacheError::invalid_config(format!(
            "a namespace is at most {MAX_NAMESPACE_LEN} bytes, got {}",
            namespace.len()
        )));
    }
    if let Some(ch) = namespace
        .chars()
        .find(|ch| ch.is_whitespace() || ch.is_control())
    {
        return Err(CacheError::invalid_config(format!(
            "a namespace must not hold whitespace or control characters, found {ch:?}"
        )));
    }
    let mut prefix = String::with_capacity(namespace.len() + 8);
    for ch in namespace.chars() {
        match ch {
            '%' => prefix.push_str("%25"),
            ':' => prefix.push_str("%3A"),
            other => prefix.push(other),
        }
    }
    prefix.push(':');
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_characters() {
        for key in [
            "a b",
            "a\tb",
            "a\r\nb",
            "a\0b",
            "a\u{7f}b",
            "a\u{85}b",
            "a\u{a0}b",
            "a\u{2028}b",
        ] {
            let err = check_key(key, 0).unwrap_err();
            assert!(
                matches!(
                    err,
                    CacheError::InvalidKey {
                        problem: KeyProblem::ForbiddenChar { .. },
                        ..
                    }
                ),
                "{key:?}: {err}"
            );
        }
    }

    #[test]
    fn length_counts_bytes_and_prefix() {
        let key = "é".repeat(125); // 250 bytes
        assert!(check_key(&key, 0).is_ok());
        assert!(check_key(&key, 1).is_err());
        let err = check_key(&"x".repeat(251), 0).unwrap_err();
        assert!(matches!(
            err,
            CacheError::InvalidKey {
                problem: KeyProblem::TooLong { len: 251, max: 250 },
                ..
            }
        ));
    }

    #[test]
    fn prefixes_are_prefix_free() {
        let names = ["a", "a:b", "a%3Ab", "a:", "ab", "%", "a%"];
        let prefixes: Vec<String> = names.iter().map(|n| namespace_prefix(n).unwrap()).collect();
        for (i, p) in prefixes.iter().enumerate() {
            for (j, q) in prefixes.iter().enumerate() {
                if i != j {
                    assert!(!q.starts_with(p.as_str()), "{p} is a prefix of {q}");
                }
            }
        }
    }

    #[test]
    fn bad_namespaces() {
        assert!(namespace_prefix("").is_err());
        assert!(namespace_prefix("a b").is_err());
        assert!(namespace_prefix(&"n".repeat(MAX_NAMESPACE_LEN + 1)).is_err());
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::is_plain_ascii;

    /// The word-at-a-time check agrees with the byte-at-a-time rule for every byte value in
    /// every position of a 16-byte key.
    #[test]
    fn word_check_matches_the_byte_rule() {
        for bad in 0..=255u8 {
            for at in 0..16 {
                let mut key = *b"abcdefghijklmnop";
                key[at] = bad;
                let expected = key.iter().all(|&b| b > b' ' && b < 0x7f);
                assert_eq!(is_plain_ascii(&key), expected, "byte {bad:#x} at {at}");
            }
        }
        assert!(is_plain_ascii(b""));
        assert!(is_plain_ascii(b"~!"));
    }
}
