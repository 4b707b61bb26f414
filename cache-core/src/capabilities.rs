//! What an engine declares about itself: its limits, its sharing, and the optional operations
//! it offers.

use std::fmt;
use std::time::Duration;

use crate::error::{CacheError, Result};
use crate::key::MAX_KEY_LEN;
use crate::ttl::{DEFAULT_TTL, Ttl};

/// An optional operation of [`CacheEngine`](crate::CacheEngine): one that no composition of the
/// required operations can make atomic, so an engine either implements it or answers
/// [`CacheError::Unsupported`].
///
/// New operations may be added in minor releases (the enum is `#[non_exhaustive]`); an engine
/// written before one existed keeps compiling and simply does not declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`add`](crate::CacheEngine::add): store only if absent, atomically.
    Add,
    /// [`increment`](crate::CacheEngine::increment): an atomic counter.
    Increment,
    /// [`touch`](crate::CacheEngine::touch): a new TTL without rewriting the value.
    Touch,
    /// [`delete_if_equals`](crate::CacheEngine::delete_if_equals): compare and delete, atomically.
    DeleteIfEquals,
    /// [`remaining_ttl`](crate::CacheEngine::remaining_ttl) and
    /// [`get_with_ttl`](crate::CacheEngine::get_with_ttl): how long an entry has left.
    RemainingTtl,
}

impl Operation {
    /// Every optional operation, in declaration order.
    pub const ALL: [Operation; 5] = [
        Operation::Add,
        Operation::Increment,
        Operation::Touch,
        Operation::DeleteIfEquals,
        Operation::RemainingTtl,
    ];

    /// The method's name (`"add"`, `"remaining_ttl"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Operation::Add => "add",
            Operation::Increment => "increment",
            Operation::Touch => "touch",
            Operation::DeleteIfEquals => "delete_if_equals",
            Operation::RemainingTtl => "remaining_ttl",
        }
    }

    const fn bit(self) -> u32 {
        1 << self as u32
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Operation`]s: the optional operations an engine offers.
///
/// ```
/// use cache_core::{Operation, Operations};
///
/// let ops = Operations::NONE.with(Operation::Add).with(Operation::DeleteIfEquals);
/// assert!(ops.contains(Operation::Add));
/// assert!(!ops.contains(Operation::Increment));
/// assert_eq!(ops.iter().count(), 2);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Operations(u32);

impl Operations {
    /// No optional operation: what an engine that implements only the required methods offers.
    pub const NONE: Operations = Operations(0);
    /// Every optional operation this version of the trait knows.
    pub const ALL: Operations = {
        let mut bits = 0;
        let mut i = 0;
        while i < Operation::ALL.len() {
            bits |= Operation::ALL[i].bit();
            i += 1;
        }
        Operations(bits)
    };

    /// This set with `op` added.
    #[must_use]
    pub const fn with(self, op: Operation) -> Self {
        Operations(self.0 | op.bit())
    }

    /// This set with `op` removed.
    #[must_use]
    pub const fn without(self, op: Operation) -> Self {
        Operations(self.0 & !op.bit())
    }

    /// Whether `op` is in the set.
    pub const fn contains(self, op: Operation) -> bool {
        self.0 & op.bit() != 0
    }

    /// The operations in both sets.
    #[must_use]
    pub const fn intersection(self, other: Operations) -> Self {
        Operations(self.0 & other.0)
    }

    /// The operations in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Operation> {
        Operation::ALL
            .into_iter()
            .filter(move |op| self.contains(*op))
    }
}

impl FromIterator<Operation> for Operations {
    fn from_iter<I: IntoIterator<Item = Operation>>(ops: I) -> Self {
        ops.into_iter().fold(Operations::NONE, Operations::with)
    }
}

impl fmt::Debug for Operations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// What an engine supports and its limits, for users, for the layers built on it, and for the
/// conformance kit.
///
/// The kit decides what to check from these values, never from the backend's name. Engines
/// outside this workspace build one from [`Capabilities::default`] and set its fields; a field
/// added in a later release gets a default that claims nothing (an operation not offered), so
/// such an engine keeps compiling and keeps telling the truth.
///
/// ```
/// use cache_core::{Capabilities, Operation, Operations};
///
/// let mut caps = Capabilities::default();
/// caps.backend = "my-store";
/// caps.operations = Operations::NONE.with(Operation::Add);
/// assert!(caps.supports(Operation::Add));
/// assert!(caps.require(Operation::DeleteIfEquals, "leases").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// A short name of the backend (`"in-memory"`, `"redis"`), for messages only.
    pub backend: &'static str,
    /// Whether every thread holding the engine sees the same entries.
    pub shared_across_threads: bool,
    /// Whether other processes (and machines) see the same entries.
    pub shared_across_processes: bool,
    /// How much longer than asked an entry may live (the TTL granularity plus clock lag).
    pub ttl_resolution: Duration,
    /// The longest `Ttl::After` the engine accepts right now.
    pub max_ttl: Duration,
    /// The largest value the engine stores, in bytes; `None` when only memory limits it.
    pub max_value_size: Option<usize>,
    /// The longest key the engine accepts, in bytes, once its namespace prefix is counted.
    pub max_key_len: usize,
    /// The TTL that [`Ttl::Default`] stands for on this engine.
    pub default_ttl: Ttl,
    /// The namespace the engine's keys live in, if any (for labels and messages).
    pub namespace: Option<String>,
    /// The optional operations the engine implements. An engine that overrides an optional
    /// method of the trait lists it here; the others answer
    /// [`CacheError::Unsupported`]. Empty by default.
    pub operations: Operations,
    /// Entries not read for this long expire (besides their TTL), when the engine has a
    /// time-to-idle: `get`, `get_many`, `get_with_ttl` and `get_many_with_ttl` reset it,
    /// `exists` and `remaining_ttl` do not, and `remaining_ttl` reports whichever ends first.
    /// `None` by default.
    pub time_to_idle: Option<Duration>,
    /// Whether a read that starts after a write returned sees that write (or a later one).
    /// `true` by default; `false` for an engine that reads from replicas, which may lag its
    /// writes (a Redis engine with `read_from(ReplicaPreferred)`). Layers that keep copies of
    /// what they read (a tiered cache) need it and refuse an engine without it.
    pub read_your_writes: bool,
}

impl Capabilities {
    /// Whether the engine offers `op`.
    pub fn supports(&self, op: Operation) -> bool {
        self.operations.contains(op)
    }

    /// `Ok` when the engine offers `op`; otherwise [`CacheError::InvalidConfig`] naming what
    /// needs it, for layers that check their engine when they are built.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` when `op` is not offered.
    pub fn require(&self, op: Operation, needed_by: &str) -> Result<()> {
        if self.supports(op) {
            Ok(())
        } else {
            Err(CacheError::invalid_config(format!(
                "{needed_by} need `{op}`, which the {} engine does not offer",
                self.backend
            )))
        }
    }

    /// The [`CacheError::Unsupported`] error for `op` on this engine.
    pub fn unsupported(&self, op: Operation) -> CacheError {
        CacheError::Unsupported {
            backend: self.backend,
            operation: op,
        }
    }
}

impl Default for Capabilities {
    /// A conservative description: not shared, 1 s resolution, 30 days maximum TTL, no value
    /// limit, the full portable key length, the 300 s default TTL, no namespace and no optional
    /// operation.
    fn default() -> Self {
        Self {
            backend: "unknown",
            shared_across_threads: false,
            shared_across_processes: false,
            ttl_resolution: Duration::from_secs(1),
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            max_value_size: None,
            max_key_len: MAX_KEY_LEN,
            default_ttl: Ttl::After(DEFAULT_TTL),
            namespace: None,
            operations: Operations::NONE,
            time_to_idle: None,
            read_your_writes: true,
        }
    }
}
