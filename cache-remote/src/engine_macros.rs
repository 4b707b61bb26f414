//! The parts of a remote engine that are the same for every backend and both faces, as macros:
//! the constructors, and the engine trait's methods, which hand each call to the engine's core.
//!
//! The macros expect the engine to be a struct with a field `inner` that dereferences to its
//! core: a type generic over the [`Transport`](crate::Transport) with one `async` method per
//! operation, named and typed as the trait's (`get(&self, key: &str)`, `set(&self, key, value,
//! ttl)`, ..., `delete_if_equals(&self, key, expected: &[u8])`, and `remaining_ttl`,
//! `get_with_ttl` and `get_many_with_ttl` included, so the trait's provided two-step versions are
//! never used), plus `ping()`, `capabilities()` and `close()`. The core is written once; the
//! blocking face runs its futures with [`block_on`](crate::block_on) (they are ready at their
//! first poll), the async face awaits them.

/// Expands, inside `impl Engine`, into `new`, `connect`, `from_env`, `builder` and `ping`, for
/// the blocking face (`blocking`) or the async one (`async`: `connect` and `ping` are async).
/// `$builder` is the engine's builder type, `$address` the builder setter that names the server
/// (`url`, `server`), `$default` the server `new()` uses, for the docs.
#[macro_export]
macro_rules! remote_engine_constructors {
    (blocking, $builder:ty, $address:ident, $default:literal) => {
        $crate::remote_engine_constructors!(@common $builder, $default);

        /// Builds an engine for `address` with the other defaults and checks that the server
        /// answers.
        ///
        /// # Errors
        ///
        /// `InvalidConfig` for a bad address; `Connection`, `Timeout` or `Authentication`
        /// when the server cannot be reached or refuses the credentials (within the connect
        /// timeout, 1 s by default).
        pub fn connect(address: &str) -> $crate::__private::Result<Self> {
            let engine = Self::builder().$address(address).build()?;
            engine.ping()?;
            Ok(engine)
        }

        /// Checks that every server answers.
        ///
        /// # Errors
        ///
        /// `Connection`, `Timeout`, `Authentication`, `Closed`.
        pub fn ping(&self) -> $crate::__private::Result<()> {
            $crate::block_on(self.inner.ping())
        }
    };
    (async, $builder:ty, $address:ident, $default:literal) => {
        $crate::remote_engine_constructors!(@common $builder, $default);

        /// Builds an engine for `address` with the other defaults and checks that the server
        /// answers.
        ///
        /// # Errors
        ///
        /// `InvalidConfig` for a bad address; `Connection`, `Timeout` or `Authentication`
        /// when the server cannot be reached or refuses the credentials (within the connect
        /// timeout, 1 s by default).
        pub async fn connect(address: &str) -> $crate::__private::Result<Self> {
            let engine = Self::builder().$address(address).build()?;
            engine.ping().await?;
            Ok(engine)
        }

        /// Checks that every server answers.
        ///
        /// # Errors
        ///
        /// `Connection`, `Timeout`, `Authentication`, `Closed`.
        pub async fn ping(&self) -> $crate::__private::Result<()> {
            self.inner.ping().await
        }
    };
    (@common $builder:ty, $default:literal) => {
        #[doc = concat!(
            "An engine for `", $default, "` with every default; no connection is opened until ",
            "the first operation."
        )]
        pub fn new() -> Self {
            Self::builder()
                .build()
                .unwrap_or_else(|_| unreachable!("the default settings are valid"))
        }

        /// An engine configured from the environment (see the crate docs); no connection is
        /// opened.
        ///
        /// # Errors
        ///
        /// `InvalidConfig` for a variable that cannot be parsed, or as the builder's `build`.
        pub fn from_env() -> $crate::__private::Result<Self> {
            Self::builder().from_env()?.build()
        }

        /// A builder with every default.
        pub fn builder() -> $builder {
            <$builder>::default()
        }
    };
}

/// Expands, inside `impl CacheEngine for Engine`, into every method: each runs the core's
/// method of the same name on the calling thread.
#[macro_export]
macro_rules! blocking_engine_methods {
    () => {
        fn capabilities(&self) -> $crate::__private::Capabilities {
            self.inner.capabilities()
        }

        fn get(&self, key: &str) -> $crate::__private::Result<Option<$crate::__private::Bytes>> {
            $crate::block_on(self.inner.get(key))
        }

        fn set(
            &self,
            key: &str,
            value: $crate::__private::Bytes,
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<()> {
            $crate::block_on(self.inner.set(key, value, ttl))
        }

        fn delete(&self, key: &str) -> $crate::__private::Result<bool> {
            $crate::block_on(self.inner.delete(key))
        }

        fn delete_if_equals(&self, key: &str, expected: &[u8]) -> $crate::__private::Result<bool> {
            $crate::block_on(self.inner.delete_if_equals(key, expected))
        }

        fn exists(&self, key: &str) -> $crate::__private::Result<bool> {
            $crate::block_on(self.inner.exists(key))
        }

        fn clear(&self) -> $crate::__private::Result<()> {
            $crate::block_on(self.inner.clear())
        }

        fn close(&self) -> $crate::__private::Result<()> {
            self.inner.close()
        }

        fn get_many(
            &self,
            keys: &[&str],
        ) -> $crate::__private::Result<Vec<Option<$crate::__private::Bytes>>> {
            $crate::block_on(self.inner.get_many(keys))
        }

        fn set_many(
            &self,
            entries: &[(&str, $crate::__private::Bytes)],
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<()> {
            $crate::block_on(self.inner.set_many(entries, ttl))
        }

        fn delete_many(&self, keys: &[&str]) -> $crate::__private::Result<u64> {
            $crate::block_on(self.inner.delete_many(keys))
        }

        fn add(
            &self,
            key: &str,
            value: $crate::__private::Bytes,
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<bool> {
            $crate::block_on(self.inner.add(key, value, ttl))
        }

        fn increment(&self, key: &str, delta: i64) -> $crate::__private::Result<i64> {
            $crate::block_on(self.inner.increment(key, delta))
        }

        fn touch(&self, key: &str, ttl: $crate::__private::Ttl) -> $crate::__private::Result<bool> {
            $crate::block_on(self.inner.touch(key, ttl))
        }

        fn remaining_ttl(
            &self,
            key: &str,
        ) -> $crate::__private::Result<Option<$crate::__private::Remaining>> {
            $crate::block_on(self.inner.remaining_ttl(key))
        }

        fn get_with_ttl(
            &self,
            key: &str,
        ) -> $crate::__private::Result<
            Option<($crate::__private::Bytes, $crate::__private::Remaining)>,
        > {
            $crate::block_on(self.inner.get_with_ttl(key))
        }

        fn get_many_with_ttl(
            &self,
            keys: &[&str],
        ) -> $crate::__private::Result<
            Vec<Option<($crate::__private::Bytes, $crate::__private::Remaining)>>,
        > {
            $crate::block_on(self.inner.get_many_with_ttl(keys))
        }
    };
}

/// Expands, inside `impl AsyncCacheEngine for Engine`, into every method: each awaits the
/// core's method of the same name.
#[macro_export]
macro_rules! async_engine_methods {
    () => {
        fn capabilities(&self) -> $crate::__private::Capabilities {
            self.inner.capabilities()
        }

        async fn get(
            &self,
            key: &str,
        ) -> $crate::__private::Result<Option<$crate::__private::Bytes>> {
            self.inner.get(key).await
        }

        async fn set(
            &self,
            key: &str,
            value: $crate::__private::Bytes,
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<()> {
            self.inner.set(key, value, ttl).await
        }

        async fn delete(&self, key: &str) -> $crate::__private::Result<bool> {
            self.inner.delete(key).await
        }

        async fn delete_if_equals(
            &self,
            key: &str,
            expected: &[u8],
        ) -> $crate::__private::Result<bool> {
            self.inner.delete_if_equals(key, expected).await
        }

        async fn exists(&self, key: &str) -> $crate::__private::Result<bool> {
            self.inner.exists(key).await
        }

        async fn clear(&self) -> $crate::__private::Result<()> {
            self.inner.clear().await
        }

        async fn close(&self) -> $crate::__private::Result<()> {
            self.inner.close()
        }

        async fn get_many(
            &self,
            keys: &[&str],
        ) -> $crate::__private::Result<Vec<Option<$crate::__private::Bytes>>> {
            self.inner.get_many(keys).await
        }

        async fn set_many(
            &self,
            entries: &[(&str, $crate::__private::Bytes)],
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<()> {
            self.inner.set_many(entries, ttl).await
        }

        async fn delete_many(&self, keys: &[&str]) -> $crate::__private::Result<u64> {
            self.inner.delete_many(keys).await
        }

        async fn add(
            &self,
            key: &str,
            value: $crate::__private::Bytes,
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<bool> {
            self.inner.add(key, value, ttl).await
        }

        async fn increment(&self, key: &str, delta: i64) -> $crate::__private::Result<i64> {
            self.inner.increment(key, delta).await
        }

        async fn touch(
            &self,
            key: &str,
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<bool> {
            self.inner.touch(key, ttl).await
        }

        async fn remaining_ttl(
            &self,
            key: &str,
        ) -> $crate::__private::Result<Option<$crate::__private::Remaining>> {
            self.inner.remaining_ttl(key).await
        }

        async fn get_with_ttl(
            &self,
            key: &str,
        ) -> $crate::__private::Result<
            Option<($crate::__private::Bytes, $crate::__private::Remaining)>,
        > {
            self.inner.get_with_ttl(key).await
        }

        async fn get_many_with_ttl(
            &self,
            keys: &[&str],
        ) -> $crate::__private::Result<
            Vec<Option<($crate::__private::Bytes, $crate::__private::Remaining)>>,
        > {
            self.inner.get_many_with_ttl(keys).await
        }
    };
}
