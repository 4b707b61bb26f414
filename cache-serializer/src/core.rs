//! What both faces of the typed cache share: codec, fingerprints, the envelope, statistics and
//! the handling of backend failures. Only the engine calls and the waiting of single-flight
//! differ between [`TypedCache`](crate::TypedCache) and [`AsyncTypedCache`](crate::AsyncTypedCache).

use std::any::TypeId;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cache_core::{Bytes, CacheError, KeyDisplay, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use cache_layers::{FailOpen, Operation};

use crate::codec::Codec;
use crate::envelope::{self, Refusal};
use crate::fingerprint::{Fingerprint, TypeMap, fingerprint_of};
use crate::refresh::{Judgement, Refreshing};

/// Called with every backend failure (see [`TypedCacheBuilder::on_backend_error`](crate::TypedCacheBuilder::on_backend_error)).
pub type FailureHook = Arc<dyn Fn(&CacheError) + Send + Sync>;

/// Counts of what a [`TypedCache`](crate::TypedCache) (or an
/// [`AsyncTypedCache`](crate::AsyncTypedCache)) has done, from its `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads that returned a value.
    pub hits: u64,
    /// Reads that returned nothing: absent keys, and (unless strict) values of another schema or
    /// undecodable bytes.
    pub misses: u64,
    /// Values written.
    pub sets: u64,
    /// Values found that were written for another schema, codec or envelope version.
    pub schema_mismatches: u64,
    /// Values found that could not be decoded: foreign, truncated or corrupted bytes.
    pub decode_failures: u64,
    /// Loader runs of the entry API (each key of a batch load counts once).
    pub loads: u64,
    /// Callers that waited for another caller's loader instead of running their own.
    pub coalesced_waits: u64,
    /// Reads that found a cached absence (a loader's "not found", see
    /// [`Entry::negative_ttl`](crate::Entry::negative_ttl)):
    /// they return `None` without loading. Not counted as misses.
    pub negative_hits: u64,
    /// Values served past their freshness by a refreshing entry while they were refreshed.
    pub stale_hits: u64,
    /// Background refreshes started by refreshing entries: stale values, and fresh ones that
    /// early refresh drew (counted in [`early_refreshes`](Self::early_refreshes) too).
    pub refreshes: u64,
    /// Background refreshes started before the value went stale (early refresh, XFetch).
    pub early_refreshes: u64,
    /// Background refreshes whose loader failed or whose value could not be stored; the old
    /// value stays until it expires.
    pub refresh_failures: u64,
    /// Reads that found an entry carrying a tag invalidated since it was written: misses
    /// (counted in [`misses`](Self::misses) too).
    pub tag_misses: u64,
    /// Loads that found another process's lease on the key and waited for its value (see
    /// [`Lease`](crate::Lease)).
    pub lease_waits: u64,
    /// Waits for another process's lease that ended with this caller loading: the wait bound
    /// passed, or the engine failed.
    pub lease_timeouts: u64,
    /// Reads whose backend failure became a miss (fail-open mode).
    pub failed_open_reads: u64,
    /// Writes whose backend failure was skipped (fail-open mode).
    pub failed_open_writes: u64,
    /// Values a bulk read left out (misses, or `Serialization` in strict mode) because the
    /// values before them had used up the call's budget (see
    /// [`TypedCacheBuilder::max_bytes_per_call`](crate::TypedCacheBuilder::max_bytes_per_call)).
    pub over_budget: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) sets: AtomicU64,
    pub(crate) schema_mismatches: AtomicU64,
    pub(crate) decode_failures: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) coalesced_waits: AtomicU64,
    pub(crate) negative_hits: AtomicU64,
    pub(crate) stale_hits: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) early_refreshes: AtomicU64,
    pub(crate) refresh_failures: AtomicU64,
    pub(crate) tag_misses: AtomicU64,
    pub(crate) lease_waits: AtomicU64,
    pub(crate) lease_timeouts: AtomicU64,
    pub(crate) over_budget: AtomicU64,
}

/// What a read found under a key.
pub(crate) enum Found<T> {
    /// A value of the type.
    Value(T),
    /// A cached absence of the type.
    Absent,
    /// Nothing usable: absent, or (lenient) another type's value or undecodable bytes.
    Miss,
}

impl<T> Found<T> {
    /// What an entry loader answers with this, if it answers: a value, or for optional
    /// loads a cached absence (a loader that always finds a value replaces an absence).
    /// `None`: load.
    pub(crate) fn answer(self, optional: bool) -> Option<Option<T>> {
        match self {
            Found::Value(value) => Some(Some(value)),
            Found::Absent if optional => Some(None),
            Found::Absent | Found::Miss => None,
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The face-independent state of a typed cache.
pub(crate) struct TypedCore<C> {
    pub(crate) codec: C,
    pub(crate) strict: bool,
    /// The fail-open layer's decision (absorb or return), counts and hook, used for every
    /// engine call of the typed cache.
    pub(crate) fail_open: FailOpen,
    pub(crate) schemas: TypeMap<Fingerprint>,
    pub(crate) stats: Counters,
    /// Payloads of at least this many bytes are stored LZ4-compressed (`None`: never).
    pub(crate) compress_above: Option<usize>,
    /// The most bytes a compressed value may inflate to when read.
    pub(crate) max_inflated: usize,
    /// The most payload bytes (inflated) one bulk read decodes.
    pub(crate) max_bytes_per_call: usize,
    /// The keys this cache refreshes in the background right now.
    pub(crate) refreshing: Refreshing,
    /// Loads take a lease across processes first, when set.
    pub(crate) lease: Option<crate::Lease>,
}

/// The default of [`TypedCacheBuilder::max_inflated_size`](crate::TypedCacheBuilder::max_inflated_size): 64 MiB.
pub const DEFAULT_MAX_INFLATED: usize = 64 << 20;
/// The default of [`TypedCacheBuilder::max_bytes_per_call`](crate::TypedCacheBuilder::max_bytes_per_call): 256 MiB.
pub const DEFAULT_MAX_BYTES_PER_CALL: usize = 256 << 20;

impl<C: Codec> TypedCore<C> {
    pub(crate) fn stats(&self) -> CacheStats {
        let c = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: load(&c.hits),
            misses: load(&c.misses),
            sets: load(&c.sets),
            schema_mismatches: load(&c.schema_mismatches),
            decode_failures: load(&c.decode_failures),
            loads: load(&c.loads),
            coalesced_waits: load(&c.coalesced_waits),
            negative_hits: load(&c.negative_hits),
            stale_hits: load(&c.stale_hits),
            refreshes: load(&c.refreshes),
            early_refreshes: load(&c.early_refreshes),
            refresh_failures: load(&c.refresh_failures),
            tag_misses: load(&c.tag_misses),
            lease_waits: load(&c.lease_waits),
            lease_timeouts: load(&c.lease_timeouts),
            failed_open_reads: self.fail_open.counts().failed_open_reads,
            failed_open_writes: self.fail_open.counts().failed_open_writes,
            over_budget: load(&c.over_budget),
        }
    }

    /// The fingerprint values of `T` are written with.
    ///
    /// # Errors
    ///
    /// [`CacheError::UnknownSchema`] when `T`'s shape cannot be traced and no schema name was
    /// given for it.
    pub(crate) fn fingerprint<T: DeserializeOwned + 'static>(&self) -> Result<Fingerprint> {
        if !self.schemas.is_empty() {
            if let Some(fp) = self.schemas.get(&TypeId::of::<T>()) {
                return Ok(*fp);
            }
        }
        fingerprint_of::<T>().map_err(|reason| CacheError::UnknownSchema {
            type_name: std::any::type_name::<T>(),
            reason: format!(
                "{reason}; name its schema with TypedCacheBuilder::schema::<T>(\"name/1\")"
            ),
        })
    }

    /// Encodes `value` with its envelope.
    ///
    /// # Errors
    ///
    /// `UnknownSchema`, or `Serialization` when the codec refuses the value.
    pub(crate) fn encode<T: Serialize + DeserializeOwned + 'static>(
        &self,
        value: &T,
    ) -> Result<Bytes> {
        self.encode_loaded(value, None)
    }

    /// Encodes `value` with its envelope, recording `load_time` (how long its loader took) when
    /// given.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub(crate) fn encode_loaded<T: Serialize + DeserializeOwned + 'static>(
        &self,
        value: &T,
        load_time: Option<std::time::Duration>,
    ) -> Result<Bytes> {
        thread_local! {
            /// The size of this thread's last encoded value.
            static LAST_LEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }
        let fingerprint = self.fingerprint::<T>()?;
        // Values tend to keep their size: allocate what the last one took, so the buffer usually
        // ends exactly full and `Bytes::from` takes it as is. Growing a small buffer reallocated
        // several times for 1 KiB, and `Bytes::from(Vec)` allocates again whenever the capacity
        // exceeds the length.
        let hint = LAST_LEN
            .with(std::cell::Cell::get)
            .clamp(envelope::HEADER_LEN + 8, 1 << 20);
        let mut out = Vec::with_capacity(hint);
        match load_time {
            Some(took) => envelope::write_timed_header(&mut out, C::ID, fingerprint, took),
            None => envelope::write_header(&mut out, C::ID, fingerprint),
        }
        let start = out.len();
        let encoded = self.codec.encode(value, &mut out);
        LAST_LEN.with(|last| last.set(out.len()));
        if encoded.is_ok()
            && self
                .compress_above
                .is_some_and(|above| out.len() - start >= above)
        {
            envelope::compress(&mut out);
        }
        encoded.map_err(|e| {
            CacheError::serialization(
                format!(
                    "cannot encode a `{}` with {}",
                    std::any::type_name::<T>(),
                    C::NAME
                ),
                e,
            )
        })?;
        Ok(Bytes::from(out))
    }

    pub(crate) fn decode_with<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        bytes: &[u8],
        fingerprint: Fingerprint,
    ) -> Result<Option<T>> {
        Ok(match self.found(key, bytes, fingerprint)? {
            Found::Value(value) => Some(value),
            Found::Absent | Found::Miss => None,
        })
    }

    /// The envelope of a cached absence of `T`s.
    pub(crate) fn absent(&self, fingerprint: Fingerprint) -> Bytes {
        Bytes::from(envelope::absent(C::ID, fingerprint))
    }

    /// What a lookup of `key` read (`None`: nothing, or a tagged entry gone stale) holds for a
    /// reader of the type `fingerprint` names; a miss is counted.
    pub(crate) fn found_or_miss<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        bytes: Option<Bytes>,
        fingerprint: Fingerprint,
    ) -> Result<Found<T>> {
        match bytes {
            Some(bytes) => self.found(key, &bytes, fingerprint),
            None => {
                self.miss::<()>()?;
                Ok(Found::Miss)
            }
        }
    }

    /// What `bytes`, read under `key`, hold for a reader of the type `fingerprint` names.
    pub(crate) fn found<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        bytes: &[u8],
        fingerprint: Fingerprint,
    ) -> Result<Found<T>> {
        let mut unbounded = usize::MAX;
        self.found_within(key, bytes, fingerprint, &mut unbounded)
    }

    /// [`found`](Self::found), taking the value's payload size (inflated) from `budget`: a value
    /// larger than what is left is not decoded (a miss, or `Serialization` in strict mode).
    fn found_within<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        bytes: &[u8],
        fingerprint: Fingerprint,
        budget: &mut usize,
    ) -> Result<Found<T>> {
        let stats = &self.stats;
        let opened = envelope::open(bytes, C::ID, fingerprint);
        if let Ok(envelope::Payload::Absent) = opened {
            bump(&stats.negative_hits);
            return Ok(Found::Absent);
        }
        if let Ok(payload) = &opened {
            let size = payload.size();
            if size > *budget {
                bump(&stats.over_budget);
                let failure = CacheError::Serialization {
                    message: format!(
                        "the value under key {} ({size} bytes) is over what is left of the \
                         call's budget ({} of {} bytes, TypedCacheBuilder::max_bytes_per_call)",
                        KeyDisplay::new(key),
                        *budget,
                        self.max_bytes_per_call
                    ),
                    source: None,
                };
                return if self.strict {
                    Err(failure)
                } else {
                    bump(&stats.misses);
                    Ok(Found::Miss)
                };
            }
            *budget -= size;
        }
        let inflated = opened.map(|payload| payload.inflate(self.max_inflated));
        let failure = match inflated {
            Ok(Err(why)) => {
                bump(&stats.decode_failures);
                CacheError::Serialization {
                    message: format!(
                        "cannot read the value under key {}: {why}",
                        KeyDisplay::new(key)
                    ),
                    source: None,
                }
            }
            Ok(Ok(payload)) => match self.codec.decode::<T>(&payload) {
                Ok(value) => {
                    bump(&stats.hits);
                    return Ok(Found::Value(value));
                }
                Err(e) => {
                    bump(&stats.decode_failures);
                    CacheError::serialization(
                        format!(
                            "cannot decode the value under key {} as a `{}`",
                            KeyDisplay::new(key),
                            std::any::type_name::<T>()
                        ),
                        e,
                    )
                }
            },
            Err(Refusal::Foreign) => {
                bump(&stats.decode_failures);
                CacheError::Serialization {
                    message: format!(
                        "the value under key {} was not written by cache-serializer (or was cut short)",
                        KeyDisplay::new(key)
                    ),
                    source: None,
                }
            }
            Err(Refusal::Mismatch { expected, found }) => {
                bump(&stats.schema_mismatches);
                CacheError::SchemaMismatch {
                    key: KeyDisplay::new(key),
                    expected,
                    found,
                }
            }
        };
        if self.strict {
            Err(failure)
        } else {
            bump(&stats.misses);
            Ok(Found::Miss)
        }
    }

    /// A read's result through the fail-open layer's one decision: the value, or a miss for an
    /// absorbed backend failure (counted and reported by the layer).
    pub(crate) fn fail_open<T>(
        &self,
        result: Result<T>,
        fallback: impl FnOnce() -> T,
    ) -> Result<T> {
        self.fail_open.settle(Operation::Get, result, fallback)
    }

    /// A write's result through the fail-open layer: as [`read`](Self::read), for writes.
    pub(crate) fn write<T>(&self, result: Result<T>, fallback: impl FnOnce() -> T) -> Result<T> {
        self.fail_open.settle(Operation::Set, result, fallback)
    }

    /// Counts `count` values as stored when the write succeeded; a failed write is absorbed or
    /// returned like any other and counts nothing.
    pub(crate) fn stored(&self, result: Result<()>, count: u64) -> Result<()> {
        match result {
            Ok(()) => {
                self.stats.sets.fetch_add(count, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => self.write(Err(e), || ()),
        }
    }

    /// Counts a miss.
    pub(crate) fn miss<T>(&self) -> Result<Option<T>> {
        bump(&self.stats.misses);
        Ok(None)
    }

    /// Decodes what a bulk read found, in the order of `keys`, within the call's budget of
    /// payload bytes: values past it are misses (`Serialization` in strict mode), counted.
    pub(crate) fn decode_all<T: DeserializeOwned + 'static>(
        &self,
        keys: &[&str],
        values: Vec<Option<Bytes>>,
        fingerprint: Fingerprint,
    ) -> Result<Vec<Option<T>>> {
        Ok(self
            .found_all(keys, values, fingerprint)?
            .into_iter()
            .map(|found| match found {
                Found::Value(value) => Some(value),
                Found::Absent | Found::Miss => None,
            })
            .collect())
    }

    /// What a bulk read found under each of `keys`, within the call's budget (see
    /// [`decode_all`](Self::decode_all)).
    pub(crate) fn found_all<T: DeserializeOwned + 'static>(
        &self,
        keys: &[&str],
        values: Vec<Option<Bytes>>,
        fingerprint: Fingerprint,
    ) -> Result<Vec<Found<T>>> {
        let mut budget = self.max_bytes_per_call;
        keys.iter()
            .zip(values)
            .map(|(key, bytes)| match bytes {
                Some(bytes) => self.found_within(key, &bytes, fingerprint, &mut budget),
                None => {
                    self.miss::<()>()?;
                    Ok(Found::Miss)
                }
            })
            .collect()
    }

    /// Encodes every entry of a bulk write before anything is written.
    pub(crate) fn encode_all<'k, T: Serialize + DeserializeOwned + 'static>(
        &self,
        entries: &[(&'k str, T)],
    ) -> Result<Vec<(&'k str, Bytes)>> {
        entries
            .iter()
            .map(|(key, value)| Ok((*key, self.encode(value)?)))
            .collect()
    }

    /// The error for a loaded value that could not be read back.
    pub(crate) fn unreadable_load(key: &str) -> CacheError {
        CacheError::Serialization {
            message: format!(
                "the value loaded for key {} could not be read back",
                KeyDisplay::new(key)
            ),
            source: None,
        }
    }
}

impl<C: Codec> TypedCore<C> {
    /// Counts what a refresh judgement means for the value served: `true` when a background
    /// refresh should start.
    pub(crate) fn serve(&self, judgement: Judgement) -> bool {
        match judgement {
            Judgement::Fresh => false,
            Judgement::Early => true,
            Judgement::Stale => {
                bump(&self.stats.stale_hits);
                true
            }
        }
    }

    /// Counts a background refresh that starts.
    pub(crate) fn refresh_started(&self, judgement: Judgement) {
        bump(&self.stats.refreshes);
        if judgement == Judgement::Early {
            bump(&self.stats.early_refreshes);
        }
    }
}

/// What the bytes under a key are, before the envelope is opened.
pub(crate) enum Tagging {
    /// Untagged: the envelope itself.
    Plain(Bytes),
    /// Tagged: check the tags, then open the envelope inside.
    Check(cache_core::tags::Tagged),
    /// A malformed tag header (lenient mode): a miss, counted as a decode failure.
    Malformed,
}

impl<C: Codec> TypedCore<C> {
    /// Splits off a tag header, if `bytes` have one.
    ///
    /// # Errors
    ///
    /// In strict mode, `Serialization` for a malformed tag header.
    pub(crate) fn tagging(&self, key: &str, bytes: Bytes) -> Result<Tagging> {
        match cache_core::tags::unwrap(key, bytes) {
            Ok(cache_core::tags::Unwrapped::Plain(bytes)) => Ok(Tagging::Plain(bytes)),
            Ok(cache_core::tags::Unwrapped::Tagged(tagged)) => Ok(Tagging::Check(tagged)),
            Err(e) => {
                bump(&self.stats.decode_failures);
                if self.strict {
                    Err(e)
                } else {
                    Ok(Tagging::Malformed)
                }
            }
        }
    }

    /// The envelope of a tagged entry whose tags were just read as `current`: `None` (counted)
    /// when one was invalidated.
    pub(crate) fn tags_checked(
        &self,
        tagged: cache_core::tags::Tagged,
        current: &[Option<Bytes>],
    ) -> Option<Bytes> {
        let checked = tagged.check(current);
        if checked.is_none() {
            bump(&self.stats.tag_misses);
        }
        checked
    }

    /// The envelope inside bytes this process just wrote (a leader's outcome): no check.
    pub(crate) fn strip_tags(key: &str, bytes: Bytes) -> Bytes {
        match cache_core::tags::unwrap(key, bytes.clone()) {
            Ok(cache_core::tags::Unwrapped::Tagged(tagged)) => tagged.into_value(),
            _ => bytes,
        }
    }
}

/// What a bulk read found, before tags are checked: one slot per key, and the tag keys every
/// tagged slot needs, each once, to be read in one bulk read.
pub(crate) struct BulkTags {
    slots: Vec<Slot>,
    pub(crate) tag_keys: Vec<String>,
}

enum Slot {
    /// An envelope (or nothing): no tags to check.
    Ready(Option<Bytes>),
    /// A tagged entry and the positions of its tags in `tag_keys`.
    Tagged(cache_core::tags::Tagged, Vec<usize>),
}

impl<C: Codec> TypedCore<C> {
    /// Splits what a bulk read of `keys` found into envelopes and tagged entries.
    ///
    /// # Errors
    ///
    /// As [`tagging`](Self::tagging).
    pub(crate) fn bulk_tagging(
        &self,
        keys: &[&str],
        found: Vec<Option<Bytes>>,
    ) -> Result<BulkTags> {
        let mut tag_keys: Vec<String> = Vec::new();
        let mut positions_of: std::collections::HashMap<String, usize> = Default::default();
        let mut slots = Vec::with_capacity(found.len());
        for (key, bytes) in keys.iter().zip(found) {
            let Some(bytes) = bytes else {
                slots.push(Slot::Ready(None));
                continue;
            };
            slots.push(match self.tagging(key, bytes)? {
                Tagging::Plain(bytes) => Slot::Ready(Some(bytes)),
                Tagging::Malformed => Slot::Ready(None),
                Tagging::Check(tagged) => {
                    let positions = tagged
                        .tag_keys()
                        .into_iter()
                        .map(|tag_key| {
                            *positions_of.entry(tag_key).or_insert_with_key(|tag_key| {
                                tag_keys.push(tag_key.clone());
                                tag_keys.len() - 1
                            })
                        })
                        .collect();
                    Slot::Tagged(tagged, positions)
                }
            });
        }
        Ok(BulkTags { slots, tag_keys })
    }

    /// The envelopes of a bulk read, once the tags' current versions (`current`, in the order
    /// of [`BulkTags::tag_keys`]) are known: `None` where a tag was invalidated.
    pub(crate) fn bulk_checked(
        &self,
        bulk: BulkTags,
        current: &[Option<Bytes>],
    ) -> Vec<Option<Bytes>> {
        bulk.slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Ready(bytes) => bytes,
                Slot::Tagged(tagged, positions) => {
                    let mine: Vec<Option<Bytes>> = positions
                        .iter()
                        .map(|&at| current.get(at).cloned().flatten())
                        .collect();
                    self.tags_checked(tagged, &mine)
                }
            })
            .collect()
    }
}
