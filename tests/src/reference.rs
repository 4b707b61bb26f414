//! [`ReferenceEngine`]: the smallest complete engine, and the model for writing one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cache_core::clock::{Clock, SystemClock};
use cache_core::counter::{apply_increment, format_counter};
use cache_core::key::{MAX_KEY_LEN, check_key, namespace_prefix};
use cache_core::{Bytes, CacheEngine, CacheError, Capabilities, Expiry, Remaining, Result, Ttl};

use crate::TestContext;

const BACKEND: &str = "reference";
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

type Store = HashMap<String, (Bytes, Option<Instant>)>;

/// A small, obviously correct engine: one `Mutex<HashMap>` shared by every engine of the process
/// (like one server), namespaces as key prefixes, and every rule of the trait.
///
/// It is slow and unbounded: use it as a test double in your own tests, and read its source as
/// the model of a backend. Each method shows the order every engine follows: check the key
/// (counting the prefix), resolve the TTL, check limits, and only then touch the store.
///
/// ```
/// use cache_core::{Bytes, CacheEngine, Ttl};
/// use cache_tests::{ReferenceEngine, TestContext};
///
/// let engine = ReferenceEngine::new(&TestContext::new());
/// engine.set("k", Bytes::from_static(b"v"), Ttl::Default).unwrap();
/// assert!(engine.exists("k").unwrap());
/// ```
#[derive(Debug)]
pub struct ReferenceEngine {
    store: Arc<Mutex<Store>>,
    prefix: String,
    clock: Arc<dyn Clock>,
    default_ttl: Ttl,
    closed: AtomicBool,
}

fn shared_store() -> Arc<Mutex<Store>> {
    static STORE: OnceLock<Arc<Mutex<Store>>> = OnceLock::new();
    Arc::clone(STORE.get_or_init(Default::default))
}

impl ReferenceEngine {
    /// An engine in the context's namespace, with its default TTL and manual clock.
    ///
    /// # Panics
    ///
    /// If the context's namespace is not a valid namespace (contexts always are).
    pub fn new(ctx: &TestContext) -> Self {
        Self::with(ctx.namespace(), Ttl::After(ctx.default_ttl()), ctx.clock())
            .unwrap_or_else(|e| panic!("the kit's namespace is valid: {e}"))
    }

    /// An engine in `namespace` with the system clock and the 300 s default TTL.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for an invalid namespace.
    pub fn in_namespace(namespace: &str) -> Result<Self> {
        Self::with(namespace, Ttl::Default, Arc::new(SystemClock))
    }

    fn with(namespace: &str, default_ttl: Ttl, clock: Arc<dyn Clock>) -> Result<Self> {
        Ok(Self {
            store: shared_store(),
            prefix: namespace_prefix(namespace)?,
            clock,
            default_ttl,
            closed: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Store>> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(CacheError::Closed { backend: BACKEND });
        }
        // Every critical section leaves the map consistent, so a poisoned lock is usable.
        Ok(self.store.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The stored key: the namespace prefix and the key, after checking the key rule.
    fn key(&self, key: &str) -> Result<String> {
        check_key(key, self.prefix.len())?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// `None`: do not keep; `Some(None)`: never expires; `Some(Some(at))`: expires at `at`.
    fn deadline(&self, ttl: Ttl) -> Result<Option<Option<Instant>>> {
        Ok(match ttl.resolve(self.default_ttl) {
            Expiry::Now => None,
            Expiry::Never => Some(None),
            Expiry::After(d) if d > MAX_TTL => {
                return Err(CacheError::InvalidTtl {
                    backend: BACKEND,
                    ttl: d,
                    max: MAX_TTL,
                });
            }
            Expiry::After(d) => Some(Some(self.clock.now() + d)),
        })
    }

    fn live<'s>(&self, store: &'s Store, key: &str) -> Option<&'s Bytes> {
        match store.get(key)? {
            (_, Some(at)) if self.clock.now() >= *at => None,
            (value, _) => Some(value),
        }
    }
}

/// The reference engine never waits, so it is an async engine too.
impl cache_core::NonBlocking for ReferenceEngine {}

impl CacheEngine for ReferenceEngine {
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let key = self.key(key)?;
        let store = self.lock()?;
        Ok(self.live(&store, &key).cloned())
    }

    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.set_many(&[(key, value)], ttl)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.delete_many(&[key])? == 1)
    }

    fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        let key = self.key(key)?;
        // One lock for the comparison and the removal: atomic.
        let mut store = self.lock()?;
        if self
            .live(&store, &key)
            .is_some_and(|v| v.as_ref() == expected)
        {
            store.remove(&key);
            return Ok(true);
        }
        Ok(false)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        Ok(self.get_with_ttl(key)?.map(|(_, left)| left))
    }

    fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        let key = self.key(key)?;
        let store = self.lock()?;
        let now = self.clock.now();
        Ok(match store.get(&key) {
            Some((_, Some(at))) if now >= *at => None,
            Some((value, Some(at))) => Some((value.clone(), Remaining::After(*at - now))),
            Some((value, None)) => Some((value.clone(), Remaining::Never)),
            None => None,
        })
    }

    fn clear(&self) -> Result<()> {
        self.lock()?.retain(|k, _| !k.starts_with(&self.prefix));
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let keys = keys
            .iter()
            .map(|k| self.key(k))
            .collect::<Result<Vec<_>>>()?;
        let store = self.lock()?;
        Ok(keys.iter().map(|k| self.live(&store, k).cloned()).collect())
    }

    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let keys = entries
            .iter()
            .map(|(k, _)| self.key(k))
            .collect::<Result<Vec<_>>>()?;
        let deadline = self.deadline(ttl)?;
        let mut store = self.lock()?;
        for (key, (_, value)) in keys.into_iter().zip(entries) {
            match deadline {
                None => store.remove(&key),
                Some(at) => store.insert(key, (value.clone(), at)),
            };
        }
        Ok(())
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let keys = keys
            .iter()
            .map(|k| self.key(k))
            .collect::<Result<Vec<_>>>()?;
        let mut store = self.lock()?;
        let mut removed = 0;
        for key in keys {
            if self.live(&store, &key).is_some() {
                removed += 1;
            }
            store.remove(&key);
        }
        Ok(removed)
    }

    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let key = self.key(key)?;
        let deadline = self.deadline(ttl)?;
        let mut store = self.lock()?;
        if self.live(&store, &key).is_some() {
            return Ok(false);
        }
        match deadline {
            None => store.remove(&key),
            Some(at) => store.insert(key, (value, at)),
        };
        Ok(true)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let full = self.key(key)?;
        let default = self.deadline(Ttl::Default)?;
        let mut store = self.lock()?;
        let current = self.live(&store, &full).cloned();
        let next = apply_increment(key, current.as_deref(), delta)?;
        let deadline = match current {
            Some(_) => store.get(&full).and_then(|(_, at)| *at),
            None => default.flatten(),
        };
        store.insert(full, (format_counter(next), deadline));
        Ok(next)
    }

    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let key = self.key(key)?;
        let deadline = self.deadline(ttl)?;
        let mut store = self.lock()?;
        if self.live(&store, &key).is_none() {
            return Ok(false);
        }
        match deadline {
            None => {
                store.remove(&key);
            }
            Some(at) => {
                if let Some(entry) = store.get_mut(&key) {
                    entry.1 = at;
                }
            }
        }
        Ok(true)
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.backend = BACKEND;
        caps.shared_across_threads = true;
        caps.shared_across_processes = false;
        caps.ttl_resolution = Duration::ZERO;
        caps.max_ttl = MAX_TTL;
        caps.max_value_size = None;
        caps.max_key_len = MAX_KEY_LEN - self.prefix.len();
        caps.operations = cache_core::Operations::ALL;
        caps.default_ttl = match self.default_ttl {
            Ttl::Default => Ttl::After(cache_core::DEFAULT_TTL),
            other => other,
        };
        caps
    }
}
