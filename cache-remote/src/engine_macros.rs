//! The parts of a blocking remote engine that are the same for every backend, as macros: the
//! constructors and the `CacheEngine` methods that only hand an exchange to the client.
//!
//! Both macros expect the engine to be a struct with a field `inner` (an `Arc` or a plain
//! struct) holding `client: blocking::Client<_>` and `commands`, whose methods build the
//! exchanges: `get(key)`, `set(key, &value, ttl)`, `delete(key)`, `exists(key)`, `clear()`,
//! `get_many(keys)`, `set_many(entries, ttl)`, `delete_many(keys)`, `add(key, &value, ttl)`,
//! `increment(key, delta)`, `touch(key, ttl)` (each returning `Result` of an exchange, but
//! `clear`, which cannot fail before I/O) and `ping()`.

/// Expands, inside `impl Engine`, into `new`, `connect`, `from_env`, `builder`, `ping` and
/// `pool_state`. `$builder` is the engine's builder type, `$address` the builder setter that
/// names the server (`url`, `server`), `$default` the server `new()` uses, for the docs.
#[macro_export]
macro_rules! remote_engine_constructors {
    ($builder:ty, $address:ident, $default:literal) => {
        #[doc = concat!(
            "An engine for `", $default, "` with every default; no connection is opened until ",
            "the first operation."
        )]
        pub fn new() -> Self {
            Self::builder()
                .build()
                .unwrap_or_else(|_| unreachable!("the default settings are valid"))
        }

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

        /// Checks that the server answers.
        ///
        /// # Errors
        ///
        /// `Connection`, `Timeout`, `Authentication`, `Closed`.
        pub fn ping(&self) -> $crate::__private::Result<()> {
            let commands = &self.inner.commands;
            self.inner.client.run("ping", || Ok(commands.ping()))
        }

        /// How many connections the engine has open and idle, and the most it ever had open.
        pub fn pool_state(&self) -> $crate::blocking::PoolState {
            self.inner.client.pool_state()
        }
    };
}

/// Expands, inside `impl CacheEngine for Engine`, into every method. Each operation builds its
/// exchange with `self.inner.commands` and runs it with `self.inner.client` under the
/// operation's name; `capabilities` calls the crate's
/// `capabilities(&self.inner.options, &self.inner.commands)`.
#[macro_export]
macro_rules! blocking_engine_methods {
    () => {
        fn capabilities(&self) -> $crate::__private::Capabilities {
            capabilities(&self.inner.options, &self.inner.commands)
        }

        fn get(&self, key: &str) -> $crate::__private::Result<Option<$crate::__private::Bytes>> {
            let commands = &self.inner.commands;
            self.inner.client.run("get", || commands.get(key))
        }

        fn set(
            &self,
            key: &str,
            value: $crate::__private::Bytes,
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<()> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("set", || commands.set(key, &value, ttl))
        }

        fn delete(&self, key: &str) -> $crate::__private::Result<bool> {
            let commands = &self.inner.commands;
            self.inner.client.run("delete", || commands.delete(key))
        }

        fn exists(&self, key: &str) -> $crate::__private::Result<bool> {
            let commands = &self.inner.commands;
            self.inner.client.run("exists", || commands.exists(key))
        }

        fn clear(&self) -> $crate::__private::Result<()> {
            let commands = &self.inner.commands;
            self.inner.client.run("clear", || Ok(commands.clear()))
        }

        fn close(&self) -> $crate::__private::Result<()> {
            self.inner.client.close();
            Ok(())
        }

        fn get_many(
            &self,
            keys: &[&str],
        ) -> $crate::__private::Result<Vec<Option<$crate::__private::Bytes>>> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("get_many", || commands.get_many(keys))
        }

        fn set_many(
            &self,
            entries: &[(&str, $crate::__private::Bytes)],
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<()> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("set_many", || commands.set_many(entries, ttl))
        }

        fn delete_many(&self, keys: &[&str]) -> $crate::__private::Result<u64> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("delete_many", || commands.delete_many(keys))
        }

        fn add(
            &self,
            key: &str,
            value: $crate::__private::Bytes,
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<bool> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("add", || commands.add(key, &value, ttl))
        }

        fn increment(&self, key: &str, delta: i64) -> $crate::__private::Result<i64> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("increment", || commands.increment(key, delta))
        }

        fn touch(&self, key: &str, ttl: $crate::__private::Ttl) -> $crate::__private::Result<bool> {
            let commands = &self.inner.commands;
            self.inner.client.run("touch", || commands.touch(key, ttl))
        }
    };
}

/// Expands, inside `impl Engine` of an async engine, into `new`, `connect` (async), `from_env`,
/// `builder` and `ping` (async). `$builder` is the engine's builder type (the async face of the
/// builder), `$address` the builder setter that names the server, `$default` the server `new()`
/// uses, for the docs.
#[macro_export]
macro_rules! async_remote_engine_constructors {
    ($builder:ty, $address:ident, $default:literal) => {
        #[doc = concat!(
            "An engine for `", $default, "` with every default; no connection is opened until ",
            "the first operation."
        )]
        pub fn new() -> Self {
            Self::builder()
                .build()
                .unwrap_or_else(|_| unreachable!("the default settings are valid"))
        }

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

        /// An engine configured from the environment (see the crate docs); no connection is
        /// opened.
        ///
        /// # Errors
        ///
        /// `InvalidConfig` for a variable that cannot be parsed, or as the builder's `build`.
        pub fn from_env() -> $crate::__private::Result<Self> {
            Self::builder().from_env()?.build()
        }

        /// A builder with every default, whose `build` makes this async engine.
        pub fn builder() -> $builder {
            <$builder>::default()
        }

        /// Checks that the server answers.
        ///
        /// # Errors
        ///
        /// `Connection`, `Timeout`, `Authentication`, `Closed`.
        pub async fn ping(&self) -> $crate::__private::Result<()> {
            let commands = &self.inner.commands;
            self.inner.client.run("ping", || Ok(commands.ping())).await
        }

        /// How many connections the engine has open now.
        pub fn open_connections(&self) -> usize {
            self.inner.client.open_connections()
        }
    };
}

/// Expands, inside `impl AsyncCacheEngine for Engine`, into every method. Each operation builds
/// its exchange with `self.inner.commands` and awaits it on `self.inner.client` (a pipelined
/// client) under the operation's name; `capabilities` is as in [`blocking_engine_methods!`].
#[macro_export]
macro_rules! async_engine_methods {
    () => {
        fn capabilities(&self) -> $crate::__private::Capabilities {
            capabilities(&self.inner.options, &self.inner.commands)
        }

        async fn get(
            &self,
            key: &str,
        ) -> $crate::__private::Result<Option<$crate::__private::Bytes>> {
            let commands = &self.inner.commands;
            self.inner.client.run("get", || commands.get(key)).await
        }

        async fn set(
            &self,
            key: &str,
            value: $crate::__private::Bytes,
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<()> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("set", || commands.set(key, &value, ttl))
                .await
        }

        async fn delete(&self, key: &str) -> $crate::__private::Result<bool> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("delete", || commands.delete(key))
                .await
        }

        async fn exists(&self, key: &str) -> $crate::__private::Result<bool> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("exists", || commands.exists(key))
                .await
        }

        async fn clear(&self) -> $crate::__private::Result<()> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("clear", || Ok(commands.clear()))
                .await
        }

        async fn get_many(
            &self,
            keys: &[&str],
        ) -> $crate::__private::Result<Vec<Option<$crate::__private::Bytes>>> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("get_many", || commands.get_many(keys))
                .await
        }

        async fn set_many(
            &self,
            entries: &[(&str, $crate::__private::Bytes)],
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<()> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("set_many", || commands.set_many(entries, ttl))
                .await
        }

        async fn delete_many(&self, keys: &[&str]) -> $crate::__private::Result<u64> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("delete_many", || commands.delete_many(keys))
                .await
        }

        async fn add(
            &self,
            key: &str,
            value: $crate::__private::Bytes,
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<bool> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("add", || commands.add(key, &value, ttl))
                .await
        }

        async fn increment(&self, key: &str, delta: i64) -> $crate::__private::Result<i64> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("increment", || commands.increment(key, delta))
                .await
        }

        async fn touch(
            &self,
            key: &str,
            ttl: $crate::__private::Ttl,
        ) -> $crate::__private::Result<bool> {
            let commands = &self.inner.commands;
            self.inner
                .client
                .run("touch", || commands.touch(key, ttl))
                .await
        }

        async fn close(&self) -> $crate::__private::Result<()> {
            self.inner.client.close();
            Ok(())
        }
    };
}
