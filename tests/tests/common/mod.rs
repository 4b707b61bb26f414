//! A small reference engine for the kit's own tests, with faults that can be switched on to
//! prove that the kit catches them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cache_core::clock::{Clock, ManualClock};
use cache_core::counter::{apply_increment, format_counter};
use cache_core::key::{check_key, namespace_prefix};
use cache_core::{Bytes, CacheEngine, CacheError, Capabilities, Expiry, Result, Ttl};
use cache_tests::TestContext;

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Stores every entry without expiry.
    IgnoresTtl,
    /// `clear` empties the whole shared store, other namespaces included.
    ClearsTooMuch,
    /// `clear` leaves entries behind.
    ClearsTooLittle,
    /// `set` on an existing key keeps the old value.
    StaleOverwrite,
    /// Keys are prefixed by plain concatenation (`ns:`), so `a` + `b:k` meets `a:b` + `k`.
    NaiveNamespace,
    /// `increment` reads and writes under two separate locks.
    RacyIncrement,
    /// `Ttl::After(d)` shorter than a second is stored without expiry.
    SubSecondIsNever,
}

type Store = HashMap<String, (Bytes, Option<Instant>)>;

fn shared_store() -> Arc<Mutex<Store>> {
    static STORE: OnceLock<Arc<Mutex<Store>>> = OnceLock::new();
    Arc::clone(STORE.get_or_init(Default::default))
}

#[derive(Debug)]
pub struct ReferenceEngine {
    store: Arc<Mutex<Store>>,
    prefix: String,
    clock: Arc<ManualClock>,
    default_ttl: Duration,
    closed: AtomicBool,
    fault: Fault,
}

impl ReferenceEngine {
    pub fn new(ctx: &TestContext, fault: Fault) -> Self {
        let prefix = if fault == Fault::NaiveNamespace {
            format!("{}:", ctx.namespace())
        } else {
            namespace_prefix(ctx.namespace()).expect("valid namespace")
        };
        Self {
            store: shared_store(),
            prefix,
            clock: ctx.clock(),
            default_ttl: ctx.default_ttl(),
            closed: AtomicBool::new(false),
            fault,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Store>> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(CacheError::Closed {
                backend: "reference",
            });
        }
        Ok(self.store.lock().expect("store lock"))
    }

    fn key(&self, key: &str) -> Result<String> {
        check_key(key, self.prefix.len())?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn deadline(&self, ttl: Ttl) -> Result<Option<Option<Instant>>> {
        Ok(match ttl.resolve(Ttl::After(self.default_ttl)) {
            Expiry::Now => None,
            Expiry::Never => Some(None),
            Expiry::After(_) if self.fault == Fault::IgnoresTtl => Some(None),
            Expiry::After(d)
                if self.fault == Fault::SubSecondIsNever && d < Duration::from_secs(1) =>
            {
                Some(None)
            }
            Expiry::After(d) => {
                if d > self.capabilities().max_ttl {
                    return Err(CacheError::InvalidTtl {
                        backend: "reference",
                        ttl: d,
                        max: self.capabilities().max_ttl,
                    });
                }
                Some(Some(self.clock.now() + d))
            }
        })
    }

    fn live<'a>(&self, store: &'a Store, key: &str) -> Option<&'a Bytes> {
        let (value, deadline) = store.get(key)?;
        match deadline {
            Some(at) if self.clock.now() >= *at => None,
            _ => Some(value),
        }
    }
}

impl CacheEngine for ReferenceEngine {
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let key = self.key(key)?;
        let store = self.lock()?;
        Ok(self.live(&store, &key).cloned())
    }

    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let key = self.key(key)?;
        let deadline = self.deadline(ttl)?;
        let mut store = self.lock()?;
        match deadline {
            None => {
                store.remove(&key);
            }
            Some(deadline) => {
                if self.fault == Fault::StaleOverwrite && self.live(&store, &key).is_some() {
                    return Ok(());
                }
                store.insert(key, (value, deadline));
            }
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let key = self.key(key)?;
        let mut store = self.lock()?;
        let live = self.live(&store, &key).is_some();
        store.remove(&key);
        Ok(live)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let key = self.key(key)?;
        let store = self.lock()?;
        Ok(self.live(&store, &key).is_some())
    }

    fn clear(&self) -> Result<()> {
        let mut store = self.lock()?;
        match self.fault {
            Fault::ClearsTooMuch => store.clear(),
            Fault::ClearsTooLittle => {
                let mut keys: Vec<String> = store
                    .keys()
                    .filter(|k| k.starts_with(&self.prefix))
                    .cloned()
                    .collect();
                keys.sort();
                for key in keys.iter().skip(1) {
                    store.remove(key);
                }
            }
            _ => store.retain(|k, _| !k.starts_with(&self.prefix)),
        }
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
        for (key, _) in entries {
            self.key(key)?;
        }
        self.deadline(ttl)?;
        for (key, value) in entries {
            self.set(key, value.clone(), ttl)?;
        }
        Ok(())
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        for key in keys {
            self.key(key)?;
        }
        let mut removed = 0;
        for key in keys {
            removed += u64::from(self.delete(key)?);
        }
        Ok(removed)
    }

    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let full = self.key(key)?;
        let deadline = self.deadline(ttl)?;
        let mut store = self.lock()?;
        if self.live(&store, &full).is_some() {
            return Ok(false);
        }
        if let Some(deadline) = deadline {
            store.insert(full, (value, deadline));
        }
        Ok(true)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let full = self.key(key)?;
        let default = self.deadline(Ttl::Default)?.flatten();
        let (current, deadline) = {
            let store = self.lock()?;
            let current = self.live(&store, &full).cloned();
            let deadline = if current.is_some() {
                store.get(&full).and_then(|(_, d)| *d)
            } else {
                default
            };
            (current, deadline)
        };
        if self.fault == Fault::RacyIncrement {
            std::thread::yield_now();
        }
        let mut store = self.lock()?;
        let current = if self.fault == Fault::RacyIncrement {
            current
        } else {
            self.live(&store, &full).cloned()
        };
        let next = apply_increment(key, current.as_deref(), delta)?;
        store.insert(full, (format_counter(next), deadline));
        Ok(next)
    }

    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let full = self.key(key)?;
        let deadline = self.deadline(ttl)?;
        let mut store = self.lock()?;
        if self.live(&store, &full).is_none() {
            return Ok(false);
        }
        match deadline {
            None => {
                store.remove(&full);
            }
            Some(deadline) => {
                if let Some(entry) = store.get_mut(&full) {
                    entry.1 = deadline;
                }
            }
        }
        Ok(true)
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.backend = "reference";
        caps.shared_across_threads = true;
        caps.shared_across_processes = false;
        caps.ttl_resolution = Duration::ZERO;
        caps.max_ttl = Duration::from_secs(365 * 24 * 3600);
        caps.max_key_len = cache_core::key::MAX_KEY_LEN - self.prefix.len();
        caps.default_ttl = Ttl::After(self.default_ttl);
        caps
    }
}
