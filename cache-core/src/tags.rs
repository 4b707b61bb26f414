//! Tags: invalidate every entry that carries a tag with one write, on any engine.
//!
//! A tag is a name (`"user:7"`, `"catalog"`) whose current **version** is a random token stored
//! under the key `#tag:<name>` in the same engine (so in the same namespace). An entry written
//! with tags records the version of each tag at the time of writing, in a small header in front
//! of its value. A read of a tagged entry fetches the current versions (one bulk read, whatever
//! the number of tags) and treats the entry as absent unless every tag still has the version it
//! recorded. Invalidating a tag writes a new version: **one `set`, whatever the number of
//! entries**; the stale entries are left in place and are replaced by the next write or expire.
//!
//! This works on every engine, because it only uses `get_many`, `add` and `set`. Consequences
//! worth knowing:
//! - a tag whose version key is evicted or deleted invalidates every entry carrying it (an
//!   absent version never matches; it is never taken for "not invalidated yet"), so eviction
//!   can only make entries miss, never come back;
//! - take the versions ([`TagExt::tag_versions`]) **before** computing a value and write with
//!   them ([`TagExt::set_with_versions`]): a tag invalidated while the value was being computed
//!   then makes the value miss at once, instead of caching data from before the invalidation.
//!   [`TagExt::set_tagged`] takes them just before writing; the typed layer's
//!   `entry(key).tags(..)` takes them before running its loader;
//! - through a two-tier engine, a version cached in the local tier is as fresh as that tier is
//!   (its invalidation feed, or its local TTL without one);
//! - keys starting with `#tag:` are this module's.
//!
//! ```
//! use cache_core::tags::TagExt;
//! use cache_core::{Bytes, CacheEngine, Ttl};
//!
//! fn orders<E: CacheEngine + ?Sized>(engine: &E) -> cache_core::Result<()> {
//!     engine.set_tagged("order:1", Bytes::from_static(b"..."), Ttl::Default, &["user:7"])?;
//!     engine.set_tagged("order:2", Bytes::from_static(b"..."), Ttl::Default, &["user:7", "eu"])?;
//!     assert!(engine.get_tagged("order:2")?.is_some());
//!
//!     engine.invalidate_tag("user:7")?; // one write
//!     assert_eq!(engine.get_tagged("order:1")?, None);
//!     assert_eq!(engine.get_tagged("order:2")?, None);
//!     Ok(())
//! }
//! # let _ = orders::<dyn CacheEngine>;
//! ```

use std::future::Future;

use bytes::{BufMut, Bytes, BytesMut};

use crate::asynchronous::AsyncCacheEngine;
use crate::blocking::CacheEngine;
use crate::error::{CacheError, KeyDisplay, Result};
use crate::ttl::Ttl;

/// The prefix of the keys that hold tag versions: the version of tag `t` is under `#tag:t`.
pub const TAG_KEY_PREFIX: &str = "#tag:";

/// The most tags one entry may carry.
pub const MAX_TAGS: usize = 32;

/// The first bytes of a tagged value: a byte no UTF-8 text starts with, `T`, and the format.
const MAGIC: [u8; 3] = [0xC8, b'T', 1];

/// The longest version token a tag key may hold (ours are 8 bytes).
const MAX_TOKEN: usize = 64;

/// The key that holds `tag`'s version.
pub fn tag_key(tag: &str) -> String {
    let mut key = String::with_capacity(TAG_KEY_PREFIX.len() + tag.len());
    key.push_str(TAG_KEY_PREFIX);
    key.push_str(tag);
    key
}

/// The versions of some tags at one moment, to write an entry with (see
/// [`TagExt::tag_versions`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagVersions {
    tags: Vec<(String, Bytes)>,
}

impl TagVersions {
    /// The tags, in the order given.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|(tag, _)| tag.as_str())
    }

    /// `value` with the header that records these versions.
    pub fn wrap(&self, value: &[u8]) -> Bytes {
        let header: usize = self
            .tags
            .iter()
            .map(|(tag, token)| 2 + tag.len() + token.len())
            .sum();
        let mut out = BytesMut::with_capacity(MAGIC.len() + 1 + header + value.len());
        out.put_slice(&MAGIC);
        // At most MAX_TAGS tags, names under 256 bytes and tokens of MAX_TOKEN: all checked
        // when the versions were taken.
        out.put_u8(u8::try_from(self.tags.len()).unwrap_or(u8::MAX));
        for (tag, token) in &self.tags {
            out.put_u8(u8::try_from(tag.len()).unwrap_or(u8::MAX));
            out.put_slice(tag.as_bytes());
            out.put_u8(u8::try_from(token.len()).unwrap_or(u8::MAX));
            out.put_slice(token);
        }
        out.put_slice(value);
        out.freeze()
    }
}

/// What the bytes under a key are, for a tag-aware reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unwrapped {
    /// A value written without tags: nothing to check.
    Plain(Bytes),
    /// A value written with tags: check them with [`Tagged::check`] against the current
    /// versions of [`Tagged::tag_keys`].
    Tagged(Tagged),
}

/// A tagged value and the versions it was written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    versions: TagVersions,
    value: Bytes,
}

impl Tagged {
    /// The keys whose values are the current versions of this entry's tags.
    pub fn tag_keys(&self) -> Vec<String> {
        self.versions.tags().map(tag_key).collect()
    }

    /// The value, if every tag still has the version it was written with: `current` holds what
    /// a `get_many` of [`tag_keys`](Self::tag_keys) returned, in order.
    pub fn check(self, current: &[Option<Bytes>]) -> Option<Bytes> {
        let fresh = current.len() == self.versions.tags.len()
            && self
                .versions
                .tags
                .iter()
                .zip(current)
                .all(|((_, recorded), now)| now.as_ref() == Some(recorded));
        fresh.then_some(self.value)
    }

    /// The value, whatever its tags say (for a value just written).
    pub fn into_value(self) -> Bytes {
        self.value
    }

    /// The versions it was written with.
    pub fn versions(&self) -> &TagVersions {
        &self.versions
    }
}

/// Splits `bytes` into a plain value or a tagged value and its recorded versions.
///
/// # Errors
///
/// [`CacheError::Serialization`] for bytes that start like a tagged value but are cut short or
/// malformed (the key is only used in the message).
pub fn unwrap(key: &str, bytes: Bytes) -> Result<Unwrapped> {
    if !bytes.starts_with(&MAGIC) {
        return Ok(Unwrapped::Plain(bytes));
    }
    let malformed = || CacheError::Serialization {
        message: format!(
            "the value under key {} starts like a tagged value but its tag header is malformed",
            KeyDisplay::new(key)
        ),
        source: None,
    };
    let mut at = MAGIC.len();
    let mut take = |len: usize| -> Result<Bytes> {
        let end = at.checked_add(len).filter(|end| *end <= bytes.len());
        let end = end.ok_or_else(malformed)?;
        let part = bytes.slice(at..end);
        at = end;
        Ok(part)
    };
    let count = usize::from(take(1)?[0]);
    if count > MAX_TAGS {
        return Err(malformed());
    }
    let mut tags = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(take(1)?[0]);
        let name = take(len)?;
        let name = std::str::from_utf8(&name)
            .map_err(|_| malformed())?
            .to_owned();
        let len = usize::from(take(1)?[0]);
        tags.push((name, take(len)?));
    }
    let value = bytes.slice(at..);
    Ok(Unwrapped::Tagged(Tagged {
        versions: TagVersions { tags },
        value,
    }))
}

/// Checks a tag list before anything is read or written.
fn check_tags(tags: &[&str]) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(CacheError::InvalidConfig {
            message: format!("{} tags on one entry: at most {MAX_TAGS}", tags.len()),
        });
    }
    for tag in tags {
        if tag.is_empty() || tag.len() > 200 {
            return Err(CacheError::InvalidConfig {
                message: format!(
                    "tag {} is {} bytes long: tags are 1 to 200 bytes",
                    KeyDisplay::new(tag),
                    tag.len()
                ),
            });
        }
        crate::key::check_key(&tag_key(tag), 0)?;
    }
    Ok(())
}

/// A new random version token: 8 bytes from the standard library's randomly seeded hasher and
/// the clock, so two writers racing to create a version almost never pick the same one (and
/// if they did, `add` lets only one of them write it).
fn new_token() -> Bytes {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    Bytes::copy_from_slice(&hasher.finish().to_be_bytes())
}

/// How many times [`TagExt::tag_versions`] tries to create a missing version before it gives
/// up (each retry means another writer deleted it again in between).
const VERSION_ATTEMPTS: usize = 4;

fn versions_from(tags: &[&str], found: Vec<Option<Bytes>>) -> Result<(TagVersions, Vec<usize>)> {
    let mut missing = Vec::new();
    let mut out = Vec::with_capacity(tags.len());
    for (i, (tag, token)) in tags.iter().zip(found).enumerate() {
        match token {
            Some(token) if token.len() <= MAX_TOKEN => out.push(((*tag).to_owned(), token)),
            Some(token) => {
                return Err(CacheError::Serialization {
                    message: format!(
                        "the version of tag {} is {} bytes: not written by cache-core's tags",
                        KeyDisplay::new(tag),
                        token.len()
                    ),
                    source: None,
                });
            }
            None => {
                missing.push(i);
                out.push(((*tag).to_owned(), Bytes::new()));
            }
        }
    }
    Ok((TagVersions { tags: out }, missing))
}

fn gave_up(tag: &str) -> CacheError {
    CacheError::Backend {
        backend: "tags",
        source: format!(
            "the version of tag {} kept disappearing while it was created",
            KeyDisplay::new(tag)
        )
        .into(),
    }
}

/// Tags on every blocking engine: write entries with tags, read them only while their tags are
/// current, invalidate a tag with one write. See the [module docs](self).
pub trait TagExt: CacheEngine {
    /// The current versions of `tags`, creating those that have none yet.
    ///
    /// # Errors
    ///
    /// The engine's errors; [`CacheError::InvalidConfig`] for more than [`MAX_TAGS`] tags or
    /// an empty or over-long tag; `InvalidKey` for a tag the key rule refuses.
    fn tag_versions(&self, tags: &[&str]) -> Result<TagVersions> {
        check_tags(tags)?;
        let keys: Vec<String> = tags.iter().map(|tag| tag_key(tag)).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (mut versions, missing) = versions_from(tags, self.get_many(&refs)?)?;
        for i in missing {
            let mut attempts = 0;
            versions.tags[i].1 = loop {
                attempts += 1;
                let token = new_token();
                if self.add(&keys[i], token.clone(), Ttl::Never)? {
                    break token;
                }
                if let Some(token) = self.get(&keys[i])? {
                    break token;
                }
                if attempts == VERSION_ATTEMPTS {
                    return Err(gave_up(tags[i]));
                }
            };
        }
        Ok(versions)
    }

    /// Stores `value` under `key` for `ttl`, recorded with `versions` (taken before the value
    /// was computed).
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::set`].
    fn set_with_versions(
        &self,
        key: &str,
        value: &[u8],
        ttl: Ttl,
        versions: &TagVersions,
    ) -> Result<()> {
        self.set(key, versions.wrap(value), ttl)
    }

    /// Stores `value` under `key` for `ttl`, carrying `tags` at their current versions.
    ///
    /// # Errors
    ///
    /// As [`tag_versions`](Self::tag_versions) and [`CacheEngine::set`].
    fn set_tagged(&self, key: &str, value: Bytes, ttl: Ttl, tags: &[&str]) -> Result<()> {
        let versions = self.tag_versions(tags)?;
        self.set_with_versions(key, &value, ttl, &versions)
    }

    /// The value under `key`, unless it carries a tag invalidated since it was written (then
    /// `None`, as for an absent key). Values written without tags are returned as they are.
    ///
    /// # Errors
    ///
    /// The engine's errors; [`CacheError::Serialization`] for a malformed tag header.
    fn get_tagged(&self, key: &str) -> Result<Option<Bytes>> {
        match self.get(key)? {
            Some(bytes) => self.check_tags(key, bytes),
            None => Ok(None),
        }
    }

    /// What `bytes`, read under `key`, hold once their tags are checked: the value, or `None`
    /// when a tag was invalidated since they were written.
    ///
    /// # Errors
    ///
    /// As [`get_tagged`](Self::get_tagged).
    fn check_tags(&self, key: &str, bytes: Bytes) -> Result<Option<Bytes>> {
        match unwrap(key, bytes)? {
            Unwrapped::Plain(value) => Ok(Some(value)),
            Unwrapped::Tagged(tagged) => {
                let keys = tagged.tag_keys();
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                let current = self.get_many(&refs)?;
                Ok(tagged.check(&current))
            }
        }
    }

    /// Makes every entry carrying `tag` absent to tag-aware reads: one write of a new version.
    ///
    /// # Errors
    ///
    /// The engine's errors; as [`tag_versions`](Self::tag_versions) for a bad tag.
    fn invalidate_tag(&self, tag: &str) -> Result<()> {
        check_tags(&[tag])?;
        self.set(&tag_key(tag), new_token(), Ttl::Never)
    }
}

impl<E: CacheEngine + ?Sized> TagExt for E {}

/// Tags on every async engine: [`TagExt`]'s operations as futures, with the same behaviour.
pub trait AsyncTagExt: AsyncCacheEngine {
    /// As [`TagExt::tag_versions`].
    ///
    /// # Errors
    ///
    /// As [`TagExt::tag_versions`].
    fn tag_versions(&self, tags: &[&str]) -> impl Future<Output = Result<TagVersions>> + Send {
        async move {
            check_tags(tags)?;
            let keys: Vec<String> = tags.iter().map(|tag| tag_key(tag)).collect();
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let (mut versions, missing) = versions_from(tags, self.get_many(&refs).await?)?;
            for i in missing {
                let mut attempts = 0;
                versions.tags[i].1 = loop {
                    attempts += 1;
                    let token = new_token();
                    if self.add(&keys[i], token.clone(), Ttl::Never).await? {
                        break token;
                    }
                    if let Some(token) = self.get(&keys[i]).await? {
                        break token;
                    }
                    if attempts == VERSION_ATTEMPTS {
                        return Err(gave_up(tags[i]));
                    }
                };
            }
            Ok(versions)
        }
    }

    /// As [`TagExt::set_with_versions`].
    ///
    /// # Errors
    ///
    /// As [`TagExt::set_with_versions`].
    fn set_with_versions(
        &self,
        key: &str,
        value: &[u8],
        ttl: Ttl,
        versions: &TagVersions,
    ) -> impl Future<Output = Result<()>> + Send {
        self.set(key, versions.wrap(value), ttl)
    }

    /// As [`TagExt::set_tagged`].
    ///
    /// # Errors
    ///
    /// As [`TagExt::set_tagged`].
    fn set_tagged(
        &self,
        key: &str,
        value: Bytes,
        ttl: Ttl,
        tags: &[&str],
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            let versions = AsyncTagExt::tag_versions(self, tags).await?;
            self.set(key, versions.wrap(&value), ttl).await
        }
    }

    /// As [`TagExt::get_tagged`].
    ///
    /// # Errors
    ///
    /// As [`TagExt::get_tagged`].
    fn get_tagged(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>>> + Send {
        async move {
            match self.get(key).await? {
                Some(bytes) => AsyncTagExt::check_tags(self, key, bytes).await,
                None => Ok(None),
            }
        }
    }

    /// As [`TagExt::check_tags`].
    ///
    /// # Errors
    ///
    /// As [`TagExt::check_tags`].
    fn check_tags(
        &self,
        key: &str,
        bytes: Bytes,
    ) -> impl Future<Output = Result<Option<Bytes>>> + Send {
        async move {
            match unwrap(key, bytes)? {
                Unwrapped::Plain(value) => Ok(Some(value)),
                Unwrapped::Tagged(tagged) => {
                    let keys = tagged.tag_keys();
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    let current = self.get_many(&refs).await?;
                    Ok(tagged.check(&current))
                }
            }
        }
    }

    /// As [`TagExt::invalidate_tag`].
    ///
    /// # Errors
    ///
    /// As [`TagExt::invalidate_tag`].
    fn invalidate_tag(&self, tag: &str) -> impl Future<Output = Result<()>> + Send {
        async move {
            check_tags(&[tag])?;
            self.set(&tag_key(tag), new_token(), Ttl::Never).await
        }
    }
}

impl<E: AsyncCacheEngine + ?Sized> AsyncTagExt for E {}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(pairs: &[(&str, &[u8])]) -> TagVersions {
        TagVersions {
            tags: pairs
                .iter()
                .map(|(t, v)| ((*t).to_owned(), Bytes::copy_from_slice(v)))
                .collect(),
        }
    }

    #[test]
    fn wrap_and_unwrap_round_trip() {
        let v = versions(&[("user:7", b"12345678"), ("eu", b"abcdefgh")]);
        let wrapped = v.wrap(b"payload");
        let Unwrapped::Tagged(tagged) = unwrap("k", wrapped).unwrap() else {
            panic!("tagged")
        };
        assert_eq!(tagged.tag_keys(), vec!["#tag:user:7", "#tag:eu"]);
        assert_eq!(tagged.versions(), &v);
        let same = [
            Some(Bytes::from_static(b"12345678")),
            Some(Bytes::from_static(b"abcdefgh")),
        ];
        assert_eq!(
            tagged.clone().check(&same).as_deref(),
            Some(&b"payload"[..])
        );
        let moved = [
            Some(Bytes::from_static(b"12345678")),
            Some(Bytes::from_static(b"zzzzzzzz")),
        ];
        assert_eq!(tagged.clone().check(&moved), None);
        let evicted = [Some(Bytes::from_static(b"12345678")), None];
        assert_eq!(tagged.check(&evicted), None);
    }

    #[test]
    fn plain_values_pass_and_malformed_headers_are_errors() {
        assert_eq!(
            unwrap("k", Bytes::from_static(b"plain")).unwrap(),
            Unwrapped::Plain(Bytes::from_static(b"plain"))
        );
        let wrapped = versions(&[("t", b"12345678")]).wrap(b"v");
        for cut in MAGIC.len()..wrapped.len() - 1 {
            let r = unwrap("k", wrapped.slice(..cut));
            assert!(
                matches!(r, Err(CacheError::Serialization { .. })),
                "cut at {cut}: {r:?}"
            );
        }
        let mut many = MAGIC.to_vec();
        many.push(200);
        assert!(unwrap("k", Bytes::from(many)).is_err());
    }

    #[test]
    fn tag_lists_are_checked() {
        assert!(check_tags(&["a", "b"]).is_ok());
        assert!(check_tags(&[""]).is_err());
        assert!(check_tags(&["has space"]).is_err());
        assert!(check_tags(&["x"; MAX_TAGS + 1]).is_err());
        assert!(check_tags(&[&"x".repeat(201)]).is_err());
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 8);
    }
}
