//! What a layer sees of an operation: which one it is, and how it ended.

use std::sync::{Arc, OnceLock};

use cache_core::{CacheError, Capabilities};

/// An engine operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// `get`.
    Get,
    /// `set`.
    Set,
    /// `delete`.
    Delete,
    /// `exists`.
    Exists,
    /// `clear`.
    Clear,
    /// `close`.
    Close,
    /// `get_many`.
    GetMany,
    /// `set_many`.
    SetMany,
    /// `delete_many`.
    DeleteMany,
    /// `add`.
    Add,
    /// `increment`.
    Increment,
    /// `touch`.
    Touch,
    /// `remaining_ttl`.
    RemainingTtl,
    /// `get_with_ttl`.
    GetWithTtl,
    /// `get_many_with_ttl`.
    GetManyWithTtl,
    /// `delete_if_equals`: a write, like `delete` (a failure fails open as "not deleted").
    DeleteIfEquals,
}

impl Operation {
    /// Every operation, in a fixed order (for pre-registering metrics, say).
    pub const ALL: [Operation; 16] = [
        Self::Get,
        Self::Set,
        Self::Delete,
        Self::Exists,
        Self::Clear,
        Self::Close,
        Self::GetMany,
        Self::SetMany,
        Self::DeleteMany,
        Self::Add,
        Self::Increment,
        Self::Touch,
        Self::RemainingTtl,
        Self::GetWithTtl,
        Self::GetManyWithTtl,
        Self::DeleteIfEquals,
    ];

    /// The operation's name, as the engine traits spell it (`get_many`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Set => "set",
            Self::Delete => "delete",
            Self::Exists => "exists",
            Self::Clear => "clear",
            Self::Close => "close",
            Self::GetMany => "get_many",
            Self::SetMany => "set_many",
            Self::DeleteMany => "delete_many",
            Self::Add => "add",
            Self::Increment => "increment",
            Self::Touch => "touch",
            Self::RemainingTtl => "remaining_ttl",
            Self::GetWithTtl => "get_with_ttl",
            Self::GetManyWithTtl => "get_many_with_ttl",
            Self::DeleteIfEquals => "delete_if_equals",
        }
    }

    /// Its index in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether it only reads (`get`, `exists`, `get_many`, `remaining_ttl`, `get_with_ttl`,
    /// `get_many_with_ttl`): a failed read can fall back to a miss.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Self::Get
                | Self::Exists
                | Self::GetMany
                | Self::RemainingTtl
                | Self::GetWithTtl
                | Self::GetManyWithTtl
        )
    }
}

/// What a layer may label its reports with: the engine's backend and namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// The backend (`"redis"`, `"in-memory"`).
    pub backend: &'static str,
    /// The namespace, or `""` without one.
    pub namespace: Arc<str>,
}

impl Labels {
    fn of(capabilities: &Capabilities) -> Self {
        Self {
            backend: capabilities.backend,
            namespace: Arc::from(capabilities.namespace.as_deref().unwrap_or_default()),
        }
    }
}

/// Where a call finds its labels: read from the engine's capabilities the first time a layer
/// asks, then kept. Layers that ask only when someone listens cost nothing otherwise.
pub(crate) struct LabelSource<'a> {
    pub(crate) cell: &'a OnceLock<Labels>,
    pub(crate) fetch: &'a (dyn Fn() -> Capabilities + Sync),
}

/// One call through a layer.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// Which operation.
    pub operation: Operation,
    /// The key, for operations on one key. Layers that report keys must never show them raw
    /// (hash them or leave them out).
    pub key: Option<&'a str>,
    /// How many keys the operation is about (1 for a single key, the batch size for bulk
    /// operations, 0 for `clear` and `close`).
    pub keys: usize,
    pub(crate) source: &'a LabelSource<'a>,
}

impl Call<'_> {
    /// The engine's backend and namespace.
    pub fn labels(&self) -> &Labels {
        self.source
            .cell
            .get_or_init(|| Labels::of(&(self.source.fetch)()))
    }
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("operation", &self.operation)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// How an operation ended, as a layer reports it.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// It succeeded; for reads, how many keys were found and how many missed.
    Done {
        /// Keys read and found.
        hits: u64,
        /// Keys read and not found.
        misses: u64,
    },
    /// It failed with this error, which the caller gets.
    Failed(&'a CacheError),
    /// It failed with this error, and a fail-open layer turned it into a miss or a skipped
    /// write.
    Absorbed(&'a CacheError),
}

impl Outcome<'_> {
    /// A short name: `ok`, `error` or `absorbed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Done { .. } => "ok",
            Self::Failed(_) => "error",
            Self::Absorbed(_) => "absorbed",
        }
    }
}

/// The kind of an error, for labels: `transient` (`Connection`, `Timeout`), `backend` (the
/// cache's other failures) or `caller` (invalid input and the like).
pub fn error_kind(error: &CacheError) -> &'static str {
    if error.is_transient() {
        "transient"
    } else if error.is_backend_failure() {
        "backend"
    } else {
        "caller"
    }
}
