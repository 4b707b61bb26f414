//! [`RequiredOnly`]: any engine reduced to the six required methods of the trait.

use cache_core::{Bytes, CacheEngine, Capabilities, NonBlocking, Operations, Result, Ttl};

/// `E` with only the required methods of [`CacheEngine`]: its optional operations answer
/// `Unsupported` and are declared absent, whatever `E` offers. For testing what a layer or a
/// typed cache does on an engine that offers nothing optional (it refuses when built, or says
/// `Unsupported` when used), without writing such an engine.
///
/// ```
/// use cache_core::{Bytes, CacheEngine, CacheError, Ttl};
/// use cache_tests::{ReferenceEngine, RequiredOnly, TestContext};
///
/// let engine = RequiredOnly(ReferenceEngine::new(&TestContext::new()));
/// engine.set("k", Bytes::from_static(b"v"), Ttl::Default)?;
/// assert!(matches!(
///     engine.increment("n", 1),
///     Err(CacheError::Unsupported { .. })
/// ));
/// # Ok::<(), CacheError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RequiredOnly<E>(pub E);

impl<E: CacheEngine> CacheEngine for RequiredOnly<E> {
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.0.get(key)
    }
    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.0.set(key, value, ttl)
    }
    fn delete(&self, key: &str) -> Result<bool> {
        self.0.delete(key)
    }
    fn clear(&self) -> Result<()> {
        self.0.clear()
    }
    fn close(&self) -> Result<()> {
        self.0.close()
    }
    fn capabilities(&self) -> Capabilities {
        let mut caps = self.0.capabilities();
        caps.operations = Operations::NONE;
        caps
    }
}

/// As non-blocking as the engine it reduces.
impl<E: NonBlocking> NonBlocking for RequiredOnly<E> {}
