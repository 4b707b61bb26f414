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

/// Where an engine's keys live: the prefix of its namespace, any bytes the engine adds after
/// it, and the room left for the caller's keys.
///
/// An engine builds one when it is built and runs every key through it. Its
/// [`max_key_len`](Self::max_key_len) is the value for
/// [`Capabilities::max_key_len`](crate::Capabilities::max_key_len): a backend that declared the
/// full 250 bytes while adding a prefix would accept keys its server refuses, and fail the kit.
///
/// ```
/// use cache_core::key::KeySpace;
///
/// // An engine that stores `app:` + 17 bytes of its own (a generation, say) + the key.
/// let space = KeySpace::new(Some("app")).unwrap().reserve(17).unwrap();
/// assert_eq!(space.prefix(), "app:");
/// assert_eq!(space.max_key_len(), 250 - 4 - 17);
/// assert!(space.check(&"k".repeat(229)).is_ok());
/// assert!(space.check(&"k".repeat(230)).is_err());
///
/// let plain = KeySpace::new(None).unwrap();
/// assert_eq!(plain.prefixed("user:1").unwrap(), "user:1");
/// assert_eq!(KeySpace::new(Some("a:b")).unwrap().prefixed("k").unwrap(), "a%3Ab:k");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    namespace: Option<String>,
    prefix: String,
    reserved: usize,
    max_total: usize,
    relaxed: bool,
}

impl KeySpace {
    /// The key space of `namespace` (none: keys are stored as given) under the portable key
    /// rule.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidConfig`] for a namespace [`namespace_prefix`] refuses.
    pub fn new(namespace: Option<&str>) -> Result<Self> {
        let prefix = match namespace {
            Some(ns) => namespace_prefix(ns)?,
            None => String::new(),
        };
        Ok(Self {
            namespace: namespace.map(str::to_string),
            prefix,
            reserved: 0,
            max_total: MAX_KEY_LEN,
            relaxed: false,
        })
    }

    /// Counts `bytes` the engine adds to every key besides the namespace prefix (a generation,
    /// a tag), so that [`max_key_len`](Self::max_key_len) leaves room for them.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidConfig`] when no room would be left for a key.
    pub fn reserve(mut self, bytes: usize) -> Result<Self> {
        self.reserved = self.reserved.saturating_add(bytes);
        if self.prefix_len() >= self.max_total {
            return Err(CacheError::invalid_config(format!(
                "the namespace prefix and {} reserved bytes leave no room for keys of at most \
                 {} bytes",
                self.reserved, self.max_total
            )));
        }
        Ok(self)
    }

    /// Accepts any non-empty key (whitespace and control characters too) of up to `max_total`
    /// bytes with its prefix, for servers that store such keys: keys are no longer portable
    /// between engines.
    pub fn relaxed(mut self, max_total: usize) -> Self {
        self.relaxed = true;
        self.max_total = max_total;
        self
    }

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The escaped namespace prefix (`app:`), empty without a namespace.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bytes added in front of every key: the prefix plus the reserved bytes.
    pub fn prefix_len(&self) -> usize {
        self.prefix.len() + self.reserved
    }

    /// The longest key a caller may use: what the engine declares as
    /// [`Capabilities::max_key_len`](crate::Capabilities::max_key_len).
    pub fn max_key_len(&self) -> usize {
        self.max_total.saturating_sub(self.prefix_len())
    }

    /// Checks `key` against the rule of this key space.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidKey`] saying what is wrong.
    #[inline]
    pub fn check(&self, key: &str) -> Result<()> {
        if !self.relaxed {
            return check_key(key, self.prefix_len());
        }
        if key.is_empty() {
            return Err(CacheError::invalid_key(key, KeyProblem::Empty));
        }
        if key.len() > self.max_key_len() {
            return Err(CacheError::invalid_key(
                key,
                KeyProblem::TooLong {
                    len: key.len(),
                    max: self.max_key_len(),
                },
            ));
        }
        Ok(())
    }

    /// Checks `key` and returns it behind the namespace prefix (without the reserved bytes,
    /// which the engine adds itself).
    ///
    /// # Errors
    ///
    /// As [`check`](Self::check).
    #[inline]
    pub fn prefixed(&self, key: &str) -> Result<String> {
        self.check(key)?;
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        Ok(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_spaces_count_prefix_and_reserved_bytes() {
        let space = KeySpace::new(Some("n")).unwrap();
        assert_eq!(space.max_key_len(), 248);
        assert!(KeySpace::new(Some("n")).unwrap().reserve(248).is_err());
        let relaxed = KeySpace::new(Some("n")).unwrap().relaxed(1000);
        assert!(relaxed.check("with space\r\n").is_ok());
        assert!(relaxed.check("").is_err());
        assert!(relaxed.check(&"k".repeat(998)).is_ok());
        assert!(relaxed.check(&"k".repeat(999)).is_err());
        assert!(KeySpace::new(Some("")).is_err());
    }

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
