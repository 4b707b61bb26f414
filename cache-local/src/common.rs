//! Pieces shared by the two local engines: entries, weights, time and configuration.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_core::clock::Clock;
use cache_core::key::MAX_KEY_LEN;
use cache_core::{Bytes, CacheError, Expiry, KeyDisplay, Result, Ttl};

/// The longest TTL a local engine accepts: 100 years of 365 days.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The default entry bound of both local engines: 300 entries.
pub const DEFAULT_MAX_CAPACITY: u64 = 300;

/// How much longer than asked a local entry may live with an exact clock: deadlines are kept in
/// whole milliseconds.
pub(crate) const TTL_RESOLUTION: Duration = Duration::from_millis(1);

/// The largest share of a shard one entry may take, so that storing one entry never empties a
/// whole shard: it bounds the largest value accepted with a byte bound.
pub(crate) const LARGEST_SHARE: f64 = 0.97;

/// Deadlines are milliseconds since the engine was built; this one means "never".
pub(crate) const NEVER: u64 = u64::MAX;

pub(crate) struct Entry {
    pub(crate) value: Bytes,
    /// When the TTL ends, in milliseconds on the engine's timer; [`NEVER`] for no TTL.
    pub(crate) deadline: u64,
    /// When the entry was last read or written, for the time-to-idle; 0 without one.
    touched: AtomicU64,
}

impl Entry {
    /// An entry written now.
    #[inline]
    pub(crate) fn new(value: Bytes, deadline: u64, timer: &Timer) -> Self {
        let touched = if timer.idle.is_some() {
            timer.now_ms()
        } else {
            0
        };
        Self {
            value,
            deadline,
            touched: AtomicU64::new(touched),
        }
    }

    /// When the entry expires: its deadline, or sooner when it sits unread for the
    /// time-to-idle.
    #[inline]
    pub(crate) fn end(&self, timer: &Timer) -> u64 {
        match timer.idle {
            None => self.deadline,
            Some(idle) => self
                .deadline
                .min(self.touched.load(Ordering::Relaxed).saturating_add(idle)),
        }
    }

    #[inline]
    pub(crate) fn is_expired(&self, timer: &Timer) -> bool {
        self.is_expired_at(timer, timer.now_ms())
    }

    #[inline]
    pub(crate) fn is_expired_at(&self, timer: &Timer, now: u64) -> bool {
        let end = self.end(timer);
        end != NEVER && now >= end
    }

    /// Whether the entry is live, counting the read towards its time-to-idle if so.
    #[inline]
    pub(crate) fn read(&self, timer: &Timer) -> bool {
        let now = timer.now_ms();
        if self.is_expired_at(timer, now) {
            return false;
        }
        // Stored only when the millisecond changed: most hits on a hot entry then only read
        // its cache line, which other cores can keep a copy of.
        if timer.idle.is_some() && self.touched.load(Ordering::Relaxed) != now {
            self.touched.store(now, Ordering::Relaxed);
        }
        true
    }

    /// How long a live entry has left (at least 1 ms): until its deadline or, with a
    /// time-to-idle, until it would have sat unread that long, whichever comes first.
    pub(crate) fn remaining(&self, timer: &Timer) -> cache_core::Remaining {
        let end = self.end(timer);
        if end == NEVER {
            return cache_core::Remaining::Never;
        }
        let left = end.saturating_sub(timer.now_ms()).max(1);
        cache_core::Remaining::After(std::time::Duration::from_millis(left))
    }
}

/// Weighs entries so that one weight bound enforces both our bounds.
///
/// Without a byte bound every entry weighs 1 and the capacity is `max_capacity`. With a byte
/// bound `B` and an entry bound `C`, an entry of `b` bytes weighs `max(b * C, B)` against a
/// capacity of `C * B`: the sum of weights staying within `C * B` implies both `count <= C`
/// (each entry weighs at least `B`) and `bytes <= B` (each weighs at least `b * C`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryWeighter {
    per_byte: u64,
    floor: u64,
}

impl EntryWeighter {
    /// Every entry weighs one: a bound on the entry count only.
    #[cfg(test)]
    pub(crate) const UNIT: Self = Self {
        per_byte: 0,
        floor: 1,
    };

    /// Entries weigh their bytes of key plus value (at least one).
    #[cfg(test)]
    pub(crate) const BYTES: Self = Self {
        per_byte: 1,
        floor: 1,
    };

    #[inline]
    pub(crate) fn weigh(&self, key_len: usize, value_len: usize) -> u64 {
        let bytes = (key_len as u64).saturating_add(value_len as u64);
        bytes.saturating_mul(self.per_byte).max(self.floor)
    }
}

/// Reads the engine's clock as whole milliseconds since the engine was built.
///
/// With the system clock, reads use `CLOCK_MONOTONIC_COARSE` (through `coarsetime`), which costs
/// a few nanoseconds instead of the ~20 ns of `Instant::now()` that profiles showed as the largest
/// cost of a hit. The coarse clock is the same timeline, updated once per kernel tick, so it lags
/// the exact one by less than one tick. Writes add one tick (and 1 ms for rounding) to every
/// deadline, so an entry never expires before its TTL; reads then see it expire at most one more
/// tick late. The declared resolution is `2 * tick + 2 ms`. The tick is measured once per
/// process; if it is over 10 ms (or cannot be seen moving), the exact clock is used instead.
#[derive(Clone)]
pub(crate) struct Timer {
    kind: TimerKind,
    /// The time-to-idle in milliseconds: entries unread this long expire.
    pub(crate) idle: Option<u64>,
}

#[derive(Clone)]
enum TimerKind {
    Coarse {
        origin: coarsetime::Instant,
        tick_ms: u64,
    },
    Exact {
        origin: Instant,
    },
    Custom {
        origin: Instant,
        clock: Arc<dyn Clock>,
    },
}

/// The coarse clock's tick in whole milliseconds (rounded up), when it is usable.
fn coarse_tick_ms() -> Option<u64> {
    static TICK: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        let give_up = Instant::now() + Duration::from_millis(100);
        let mut last = coarsetime::Instant::now_without_cache_update();
        let mut changes = Vec::with_capacity(3);
        while changes.len() < 3 && Instant::now() < give_up {
            let now = coarsetime::Instant::now_without_cache_update();
            if now != last {
                changes.push(now);
                last = now;
            } else {
                std::thread::yield_now();
            }
        }
        let [a, b, c] = changes[..] else { return None };
        let tick = (b - a).as_nanos().max((c - b).as_nanos());
        (tick <= 10_000_000).then(|| tick.div_ceil(1_000_000).max(1))
    })
}

impl Timer {
    /// The engine's timer; entries unread for `idle` expire.
    pub(crate) fn new(clock: Option<Arc<dyn Clock>>, idle: Option<Duration>) -> Self {
        let mut timer = Self::with_clock(clock);
        timer.idle = idle.map(|idle| {
            // Like a TTL, rounded up and given the coarse clock's margin, so that an entry is
            // never dropped sooner than asked.
            let margin = match &timer.kind {
                TimerKind::Coarse { tick_ms, .. } => tick_ms + 1,
                _ => 0,
            };
            cache_core::ttl::ceil_millis(idle)
                .unwrap_or(NEVER - 1)
                .saturating_add(margin)
        });
        timer
    }

    fn with_clock(clock: Option<Arc<dyn Clock>>) -> Self {
        let kind = match clock {
            Some(clock) => TimerKind::Custom {
                origin: clock.now(),
                clock,
            },
            None => match coarse_tick_ms() {
                Some(tick_ms) => TimerKind::Coarse {
                    origin: coarsetime::Instant::now_without_cache_update(),
                    tick_ms,
                },
                None => TimerKind::Exact {
                    origin: Instant::now(),
                },
            },
        };
        Self { kind, idle: None }
    }

    #[inline]
    fn elapsed(&self) -> Duration {
        match &self.kind {
            TimerKind::Coarse { origin, .. } => {
                let elapsed = coarsetime::Instant::now_without_cache_update() - *origin;
                Duration::from_nanos(elapsed.as_nanos())
            }
            TimerKind::Exact { origin } => Instant::now().saturating_duration_since(*origin),
            TimerKind::Custom { origin, clock } => clock.now().saturating_duration_since(*origin),
        }
    }

    #[inline]
    pub(crate) fn now_ms(&self) -> u64 {
        match &self.kind {
            TimerKind::Coarse { origin, .. } => {
                (coarsetime::Instant::now_without_cache_update() - *origin).as_millis()
            }
            _ => u64::try_from(self.elapsed().as_millis()).unwrap_or(NEVER - 1),
        }
    }

    /// The deadline of an entry stored now for `ttl`, rounded up so the entry never lives
    /// shorter than asked.
    pub(crate) fn deadline(&self, ttl: Duration) -> Option<u64> {
        self.deadline_at(self.elapsed(), ttl)
    }

    /// The current time in milliseconds and the deadline for `ttl` from it, from one clock read.
    pub(crate) fn now_and_deadline(&self, ttl: Duration) -> (u64, Option<u64>) {
        let elapsed = self.elapsed();
        let now = u64::try_from(elapsed.as_millis()).unwrap_or(NEVER - 1);
        (now, self.deadline_at(elapsed, ttl))
    }

    fn deadline_at(&self, elapsed: Duration, ttl: Duration) -> Option<u64> {
        if ttl > MAX_TTL {
            return None;
        }
        let at = elapsed.checked_add(ttl)?;
        let margin = match &self.kind {
            TimerKind::Coarse { tick_ms, .. } => tick_ms + 1,
            _ => 0,
        };
        let ms = cache_core::ttl::ceil_millis(at)?.checked_add(margin)?;
        (ms < NEVER).then_some(ms)
    }

    /// How much longer than asked an entry may live.
    pub(crate) fn resolution(&self) -> Duration {
        match &self.kind {
            TimerKind::Coarse { tick_ms, .. } => Duration::from_millis(2 * tick_ms + 2),
            _ => TTL_RESOLUTION,
        }
    }
}

/// What both local engines' builders take.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) max_capacity: Option<u64>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) default_ttl: Option<Ttl>,
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) time_to_idle: Option<Duration>,
    pub(crate) listener: Option<Arc<crate::listener::RemovalListener>>,
}

impl Options {
    /// The fields, for the builders' `Debug`.
    pub(crate) fn describe(&self, f: &mut std::fmt::DebugStruct<'_, '_>) {
        f.field("max_capacity", &self.max_capacity)
            .field("max_bytes", &self.max_bytes)
            .field("default_ttl", &self.default_ttl)
            .field("clock", &self.clock)
            .field("time_to_idle", &self.time_to_idle)
            .field("removal_listener", &self.listener.is_some());
    }
}

/// Validated settings common to both local engines.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) backend: &'static str,
    pub(crate) max_capacity: u64,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) default_ttl: Ttl,
    pub(crate) timer: Timer,
    pub(crate) shards: usize,
    pub(crate) weighter: EntryWeighter,
    pub(crate) weight_capacity: u64,
    /// The largest value accepted, when a byte bound is set.
    pub(crate) max_value_size: Option<usize>,
    pub(crate) time_to_idle: Option<Duration>,
    pub(crate) listener: Option<crate::listener::Listener>,
}

impl Settings {
    pub(crate) fn new(backend: &'static str, options: Options, shards: usize) -> Result<Self> {
        let Options {
            max_capacity,
            max_bytes,
            default_ttl,
            clock,
            time_to_idle,
            listener,
        } = options;
        let max_capacity = max_capacity.unwrap_or(DEFAULT_MAX_CAPACITY);
        let default_ttl = default_ttl.unwrap_or(Ttl::Default);
        match time_to_idle {
            Some(idle) if idle.is_zero() => {
                return Err(CacheError::invalid_config(
                    "time_to_idle must not be zero: nothing would be kept",
                ));
            }
            Some(idle) if idle > MAX_TTL => {
                return Err(CacheError::invalid_config(format!(
                    "time_to_idle of {idle:?} is longer than the longest local TTL ({MAX_TTL:?})"
                )));
            }
            _ => {}
        }
        if max_capacity == 0 {
            return Err(CacheError::invalid_config(
                "max_capacity must be at least 1",
            ));
        }
        match default_ttl.resolve(Ttl::Default) {
            Expiry::Now => {
                return Err(CacheError::invalid_config(
                    "default_ttl must not be zero: nothing would be kept",
                ));
            }
            Expiry::After(d) if d > MAX_TTL => {
                return Err(CacheError::invalid_config(format!(
                    "default_ttl of {d:?} is longer than the longest local TTL ({MAX_TTL:?})"
                )));
            }
            _ => {}
        }
        let shards = shards.max(1) as u64;
        let per_shard_entries = max_capacity / shards;
        if per_shard_entries == 0 {
            return Err(CacheError::invalid_config(format!(
                "max_capacity {max_capacity} is smaller than the {shards} shards"
            )));
        }
        // Each shard gets an equal, whole share, so the sum never exceeds the bound.
        let (weighter, weight_capacity, max_value_size) = match max_bytes {
            None => (
                EntryWeighter {
                    per_byte: 0,
                    floor: 1,
                },
                per_shard_entries * shards,
                None,
            ),
            Some(bytes) => {
                let total = max_capacity.checked_mul(bytes).ok_or_else(|| {
                    CacheError::invalid_config(format!(
                        "max_capacity {max_capacity} times max_bytes {bytes} overflows 64 bits"
                    ))
                })?;
                let per_shard = total / shards;
                let hot_target = hot_target(per_shard);
                let largest_entry = hot_target / max_capacity;
                let max_value = largest_entry
                    .checked_sub(MAX_KEY_LEN as u64)
                    .filter(|v| *v > 0);
                let Some(max_value) = max_value else {
                    return Err(CacheError::invalid_config(format!(
                        "max_bytes {bytes} leaves no room for a value once a {MAX_KEY_LEN}-byte \
                         key is counted (each of the {shards} shards holds {largest_entry} bytes)"
                    )));
                };
                if hot_target < bytes {
                    return Err(CacheError::invalid_config(format!(
                        "max_capacity {max_capacity} is too small for {shards} shards with a byte bound"
                    )));
                }
                (
                    EntryWeighter {
                        per_byte: max_capacity,
                        floor: bytes,
                    },
                    per_shard * shards,
                    Some(usize::try_from(max_value).unwrap_or(usize::MAX)),
                )
            }
        };
        Ok(Self {
            backend,
            max_capacity,
            max_bytes,
            default_ttl,
            timer: Timer::new(clock, time_to_idle),
            shards: shards as usize,
            weighter,
            weight_capacity,
            max_value_size,
            time_to_idle,
            listener: listener.map(crate::listener::Listener::new),
        })
    }

    /// The deadline for `ttl`, or `None` when the value must not be kept.
    ///
    /// # Errors
    ///
    /// `InvalidTtl` beyond [`MAX_TTL`].
    /// Like [`deadline`](Self::deadline), also returning the current time when the clock was
    /// read for it, so the caller need not read it again.
    #[inline]
    pub(crate) fn deadline_and_now(&self, ttl: Ttl) -> Result<(Option<u64>, Option<u64>)> {
        match ttl.resolve(self.default_ttl) {
            Expiry::Never => Ok((Some(NEVER), None)),
            Expiry::Now => Ok((None, None)),
            Expiry::After(d) => match self.timer.now_and_deadline(d) {
                (now, Some(deadline)) => Ok((Some(deadline), Some(now))),
                (_, None) => Err(CacheError::InvalidTtl {
                    backend: self.backend,
                    ttl: d,
                    max: MAX_TTL,
                }),
            },
        }
    }

    #[inline]
    pub(crate) fn deadline(&self, ttl: Ttl) -> Result<Option<u64>> {
        match ttl.resolve(self.default_ttl) {
            Expiry::Never => Ok(Some(NEVER)),
            Expiry::Now => Ok(None),
            Expiry::After(d) => match self.timer.deadline(d) {
                Some(deadline) => Ok(Some(deadline)),
                None => Err(CacheError::InvalidTtl {
                    backend: self.backend,
                    ttl: d,
                    max: MAX_TTL,
                }),
            },
        }
    }

    /// Refuses a value that could never be admitted.
    #[inline]
    pub(crate) fn check_value(&self, key: &str, value: &Bytes) -> Result<()> {
        match self.max_value_size {
            Some(limit) if value.len() > limit => Err(CacheError::ValueTooLarge {
                backend: self.backend,
                key: KeyDisplay::new(key),
                size: value.len(),
                limit,
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn capabilities(&self, shared: bool) -> cache_core::Capabilities {
        let mut caps = cache_core::Capabilities::default();
        caps.backend = self.backend;
        caps.shared_across_threads = shared;
        caps.shared_across_processes = false;
        caps.ttl_resolution = self.timer.resolution();
        caps.max_ttl = MAX_TTL;
        caps.max_value_size = self.max_value_size;
        caps.max_key_len = MAX_KEY_LEN;
        caps.operations = cache_core::Operations::ALL;
        caps.default_ttl = match self.default_ttl {
            Ttl::Default => Ttl::After(cache_core::DEFAULT_TTL),
            other => other,
        };
        caps.time_to_idle = self.time_to_idle;
        caps
    }

    /// Tells the listener, if there is one, about entries that left the store; call it once
    /// the store's lock is released.
    #[inline]
    pub(crate) fn notify(&self, removed: crate::listener::Removed) {
        if removed.is_empty() {
            return;
        }
        if let Some(listener) = &self.listener {
            listener.notify(removed, &self.timer);
        }
    }

    /// One `increment` on the key's entry, run by the store under its lock: a live counter is
    /// changed in place (the store re-weighs one that grew and evicts to stay within the
    /// bounds); an absent or expired one starts at `delta` with the default TTL (`fresh`).
    pub(crate) fn increment(
        &self,
        key: &str,
        delta: i64,
        fresh: Option<u64>,
        entry: Option<&mut Entry>,
    ) -> crate::shard::Update<Result<i64>> {
        use crate::shard::Update;
        use cache_core::counter::{apply_increment, format_counter};
        match entry {
            Some(e) if !e.is_expired(&self.timer) => {
                let next = match apply_increment(key, Some(&e.value), delta) {
                    Ok(n) => n,
                    Err(err) => return Update::Keep(Err(err)),
                };
                let value = format_counter(next);
                if let Err(err) = self.check_value(key, &value) {
                    return Update::Keep(Err(err));
                }
                e.value = value;
                Update::Keep(Ok(next))
            }
            expired => {
                let value = format_counter(delta);
                if let Err(err) = self.check_value(key, &value) {
                    return Update::Keep(Err(err));
                }
                match fresh {
                    Some(deadline) => {
                        Update::Put(Entry::new(value, deadline, &self.timer), Ok(delta))
                    }
                    None if expired.is_some() => Update::Remove(Ok(delta)),
                    None => Update::Keep(Ok(delta)),
                }
            }
        }
    }

    /// Whether a removal listener is set (so removals must be collected).
    #[inline]
    pub(crate) fn listening(&self) -> bool {
        self.listener.is_some()
    }
}

/// The heaviest entry one shard of `shard_weight` accepts.
fn hot_target(shard_weight: u64) -> u64 {
    ((shard_weight as f64 * LARGEST_SHARE) as u64).clamp(shard_weight.min(1), shard_weight)
}

pub(crate) fn closed(backend: &'static str) -> CacheError {
    CacheError::Closed { backend }
}

/// For both engines' `keys` and `entries`: pushes `pick(key, entry)` for each entry live now.
pub(crate) fn collect_live<'a, T>(
    timer: &'a Timer,
    out: &'a mut Vec<T>,
    pick: impl Fn(&str, &Entry) -> T + 'a,
) -> impl FnMut(&str, &Entry) + 'a {
    let now = timer.now_ms();
    move |key, entry| {
        if !entry.is_expired_at(timer, now) {
            out.push(pick(key, entry));
        }
    }
}

/// For both engines' `invalidate_if`: whether to keep an entry. Expired entries go, uncounted;
/// live ones go when `doomed` says so, counted in `count`.
pub(crate) fn keep_unless<'a>(
    timer: &'a Timer,
    count: &'a mut u64,
    mut doomed: impl FnMut(&str, &Bytes) -> bool + 'a,
) -> impl FnMut(&str, &Entry) -> bool + 'a {
    let now = timer.now_ms();
    move |key, entry| {
        if entry.is_expired_at(timer, now) {
            return false;
        }
        let gone = doomed(key, &entry.value);
        *count += u64::from(gone);
        !gone
    }
}
