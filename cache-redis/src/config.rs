//! Configuration: URL, builder, environment.

use std::fmt;

use std::marker::PhantomData;

use cache_core::config::redact_url as redact;
use cache_core::{CacheError, Result};
use cache_remote::{Async, Blocking, RemoteOptions};

/// The URL `RedisEngine::new()` uses: `redis://127.0.0.1:6379`.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Default largest value: 64 MiB. Redis itself accepts up to 512 MiB (`proto-max-bulk-len`);
/// a cache value that large is rare, and every reply is bounded by this limit, so a lower
/// default bounds what a misbehaving server can make the engine hold. Raise it with
/// [`RedisEngineBuilder::max_value_size`].
pub const DEFAULT_MAX_VALUE_SIZE: usize = 64 * 1024 * 1024;

/// Builds a [`RedisEngine`](crate::RedisEngine) of either face: `RedisEngine::builder()` for
/// the blocking face ([`Blocking`]), `RedisEngine::async_builder()` (with the `tokio` feature) for
/// the async one ([`Async`]). The setters of one face's connections exist on that face's
/// builder only. Setters cannot fail; `build` checks everything.
#[must_use]
pub struct RedisEngineBuilder<Face = Blocking> {
    pub(crate) url: String,
    pub(crate) options: RemoteOptions,
    pub(crate) max_value_size: usize,
    pub(crate) relaxed_keys: bool,
    pub(crate) colocate_namespace: bool,
    pub(crate) tls_root_certificate: Option<Vec<u8>>,
    pub(crate) danger_accept_invalid_certs: bool,
    pub(crate) protocol: Option<RedisProtocol>,
    pub(crate) read_from: ReadFrom,
    /// A `redis` crate connection to run on, instead of the URL's servers.
    #[cfg(feature = "redis-crate")]
    pub(crate) external: Option<std::sync::Arc<dyn crate::external::External>>,
    face: PhantomData<fn() -> Face>,
}

/// Where reads go on a Redis Cluster or through Sentinel: the masters (the default), or their
/// replicas when there are any ([`RedisEngineBuilder::read_from`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReadFrom {
    /// Every operation goes to the master: reads see every write that returned.
    #[default]
    Master,
    /// `get`, `get_many`, `exists`, `remaining_ttl`, `get_with_ttl` and `get_many_with_ttl`
    /// go to a replica of the key's master (in turn, when there are several), and to the
    /// master when it has none or the replica fails. Writes still go to the master.
    ///
    /// Replication is asynchronous: a read on a replica may miss a write that returned a
    /// moment before (see the [crate docs](crate#reading-from-replicas) for how often and how
    /// old, measured). So it gives up read-your-writes: the conformance kit assumes it, and a
    /// tiered cache refuses such a shared tier (`InvalidConfig`), through
    /// [`Capabilities::read_your_writes`](cache_core::Capabilities::read_your_writes).
    ReplicaPreferred,
}

/// The RESP version the engine speaks with the data servers: RESP2 by default, RESP3 when
/// asked (`?protocol=resp3` or [`RedisEngineBuilder::protocol`]).
///
/// Both give the same results: every operation reads either protocol's replies. RESP3
/// (`HELLO 3`, Redis 6 or later) lets a server send pushes on the same connection as replies;
/// the engine sets them apart from replies, and the invalidation feed
/// ([`RedisEngine::invalidations`](crate::RedisEngine::invalidations)) uses them to hear its
/// invalidations on one connection instead of a redirected subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedisProtocol {
    /// RESP2, which every Redis speaks.
    #[default]
    Resp2,
    /// RESP3, negotiated with `HELLO 3` on every connection; a server that refuses it fails
    /// the connection with `InvalidConfig`.
    Resp3,
}

impl RedisProtocol {
    /// Reads the `protocol` URL parameter's forms, as the `redis` crate does: `resp2` or `2`,
    /// `resp3` or `3`.
    fn parse(value: &str) -> std::result::Result<Self, String> {
        match value {
            "resp2" | "2" => Ok(Self::Resp2),
            "resp3" | "3" => Ok(Self::Resp3),
            other => Err(format!(
                "protocol {other:?} is not a RESP version (resp2 or resp3)"
            )),
        }
    }
}

impl<Face> Default for RedisEngineBuilder<Face> {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.into(),
            options: RemoteOptions::default(),
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            relaxed_keys: false,
            colocate_namespace: false,
            tls_root_certificate: None,
            danger_accept_invalid_certs: false,
            protocol: None,
            read_from: ReadFrom::Master,
            #[cfg(feature = "redis-crate")]
            external: None,
            face: PhantomData,
        }
    }
}

impl<Face> Clone for RedisEngineBuilder<Face> {
    fn clone(&self) -> Self {
        Self {
            url: self.url.clone(),
            options: self.options.clone(),
            max_value_size: self.max_value_size,
            relaxed_keys: self.relaxed_keys,
            colocate_namespace: self.colocate_namespace,
            tls_root_certificate: self.tls_root_certificate.clone(),
            danger_accept_invalid_certs: self.danger_accept_invalid_certs,
            protocol: self.protocol,
            read_from: self.read_from,
            #[cfg(feature = "redis-crate")]
            external: self.external.clone(),
            face: PhantomData,
        }
    }
}

impl<Face> fmt::Debug for RedisEngineBuilder<Face> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEngineBuilder")
            .field("url", &redact(&self.url))
            .field("options", &self.options)
            .field("max_value_size", &self.max_value_size)
            .field("relaxed_keys", &self.relaxed_keys)
            .field("colocate_namespace", &self.colocate_namespace)
            .field(
                "tls_root_certificate",
                &self.tls_root_certificate.as_ref().map(|_| "set"),
            )
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .field("protocol", &self.protocol)
            .field("read_from", &self.read_from)
            .finish()
    }
}

impl<Face> RedisEngineBuilder<Face> {
    /// Where the data lives. Default `redis://127.0.0.1:6379`.
    ///
    /// | form | what |
    /// |---|---|
    /// | `redis://[user][:password@]host[:port][/db]` | one server (port 6379, database 0 by default) |
    /// | `redis-cluster://[user][:password@]host:port[,host:port...]` | a Redis Cluster, found through any of these nodes (database 0 only) |
    /// | `redis-sentinel://[user][:password@]host:port[,host:port...]/master[/db]` | the master named `master`, found through these sentinels (port 26379 by default) |
    /// | `redis+unix:///path/to/redis.sock[?db=N&user=NAME&pass=PASSWORD]` or `unix:///path...` | one server on the same host, through its Unix domain socket (`unixsocket` in redis.conf); the `redis` crate's forms |
    ///
    /// A one-server URL may end with `?protocol=resp3` (or `resp2`, `3`, `2`), as with the
    /// `redis` crate; see [`protocol`](Self::protocol). `rediss://`, `rediss-cluster://` and `rediss-sentinel://` are the same over TLS (feature
    /// `tls`). Credentials are those of the data servers; a password with special characters is
    /// percent-encoded. See [`cluster`](Self::cluster) and [`sentinels`](Self::sentinels) for
    /// the same without a URL.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// A Redis Cluster, found through any of `nodes` (`host:port`, or `redis://` URLs whose
    /// credentials are used on every node). Replaces the URL; the same as
    /// `url("redis-cluster://node,node,...")`.
    ///
    /// Keys of a namespace spread over every master; bulk operations group keys by node and run
    /// the nodes at once. MOVED and ASK redirections, slot moves and failovers are followed
    /// without the caller seeing them, but for errors while a failed master is replaced (see
    /// the [crate docs](crate#redis-cluster)).
    pub fn cluster<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.url = nodes_url("redis-cluster://", nodes, "");
        self
    }

    /// The master named `master`, found through `sentinels` (`host:port`, port 26379 by
    /// default, or `redis://` URLs whose credentials are used for the master). Replaces the
    /// URL; the same as `url("redis-sentinel://sentinel,sentinel,.../master")`. After a
    /// failover the engine follows the new master (see the
    /// [crate docs](crate#redis-sentinel)).
    pub fn sentinels<S: Into<String>>(
        mut self,
        sentinels: impl IntoIterator<Item = S>,
        master: &str,
    ) -> Self {
        self.url = nodes_url("redis-sentinel://", sentinels, &format!("/{master}"));
        self
    }

    cache_remote::remote_builder_setters!();

    /// The largest value accepted, in bytes; default 64 MiB (Redis's own limit is 512 MiB).
    /// Larger values are refused with `ValueTooLarge` before anything is sent, and a reply
    /// announcing a larger value is refused before it is read (the connection is dropped).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// Accepts keys that break the portable key rule (whitespace, control characters, up to
    /// 64 KiB), which Redis stores fine but other engines refuse. Default off, so keys stay
    /// portable between engines.
    pub fn relaxed_keys(mut self, relaxed: bool) -> Self {
        self.relaxed_keys = relaxed;
        self
    }

    /// On a cluster: keeps every key of the namespace in one hash slot, so on one master, by
    /// putting the namespace in a hash tag (`{namespace}:key`). Default off: keys spread over
    /// every master.
    ///
    /// The trade-off: the namespace's data, memory and load then sit on one master (and its
    /// replicas) instead of being spread, and that master's failover stops the whole namespace
    /// at once; in exchange every bulk operation on the namespace is one request to one node,
    /// and a clear touches one node. `build` refuses it without a cluster or a namespace, or
    /// with a namespace holding `{` or `}`.
    pub fn colocate_namespace(mut self, colocate: bool) -> Self {
        self.colocate_namespace = colocate;
        self
    }

    /// The RESP version to speak with the data servers (one server, every cluster node, the
    /// master found through sentinels; sentinels themselves are asked in RESP2). Default: what
    /// the URL's `protocol` parameter says, else [`RedisProtocol::Resp2`]. `build` refuses a
    /// setting that contradicts the URL's.
    pub fn protocol(mut self, protocol: RedisProtocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Where reads go on a cluster or through sentinels: [`ReadFrom::Master`] (the default) or
    /// [`ReadFrom::ReplicaPreferred`], which spreads reads over replicas at the cost of
    /// read-your-writes. `build` refuses replicas for a single server (it has none the engine
    /// knows of).
    pub fn read_from(mut self, read_from: ReadFrom) -> Self {
        self.read_from = read_from;
        self
    }

    /// Trusts the CA certificate(s) in `pem` (PEM format) for `rediss://` URLs, instead of the
    /// system's and the webpki roots. Needs the `tls` feature.
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// Accepts any server certificate on `rediss://` URLs: **no protection against a
    /// man-in-the-middle**. For tests only. This is the only way to turn verification off: a URL
    /// fragment such as `#insecure` is refused. Needs the `tls` feature.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.danger_accept_invalid_certs = accept;
        self
    }

    /// Like [`from_env`](Self::from_env) with another source of variables (a config system,
    /// a test).
    ///
    /// # Errors
    ///
    /// `InvalidConfig` naming the variable that cannot be parsed.
    pub fn from_lookup(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        if let Some(url) = lookup("CACHE_REDIS_URL") {
            self.url = url;
        }
        self.options.read_env("CACHE_REDIS", &lookup)?;
        Ok(self)
    }
}

impl RedisEngineBuilder<Blocking> {
    cache_remote::blocking_builder_setters!();
}

impl RedisEngineBuilder<Async> {
    cache_remote::async_builder_setters!();

    /// Runs the engine on a connection of the `redis` crate the service already holds
    /// (`redis::aio::ConnectionManager`, `redis::aio::MultiplexedConnection`, or another
    /// `redis::aio::ConnectionLike`), instead of connections of its own to the URL's servers:
    /// one pool for the whole service, and the crate's features (its reconnection, its
    /// RESP3 settings). Feature `redis-crate`.
    ///
    /// Every operation behaves as on the engine's own connections (the conformance kit passes),
    /// but for two promises the crate keeps in its own way:
    ///
    /// - **Reply bounds**: the crate reads a whole reply before the engine sees it, so a reply
    ///   over [`max_value_size`](Self::max_value_size) is refused only once read, and a
    ///   misbehaving server can make the process hold what it sends.
    /// - **Deadlines**: each request is bounded by the engine's
    ///   [`timeout`](Self::timeout) (the request fails with `Timeout`), but the crate decides
    ///   what happens to its connection then (`ConnectionManager` reconnects; its own
    ///   `response_timeout` applies too); connecting is the crate's
    ///   (`connection_timeout`).
    ///
    /// Against the kit's hostile servers (`tests/redis_crate_hostile.rs`), every operation
    /// ends within its deadline when the server never answers, trickles a reply, stays silent
    /// (the crate then fails to connect), nests arrays a million deep or floods pushes; but a
    /// value announced huge, an endless array or an endless line makes the process hold what
    /// the server sends (hundreds of MiB within the check; 4 GiB for a 2 GiB announced value,
    /// with deadlines overrun while the runtime's threads read it). The engine's own
    /// connections refuse all three before reading them.
    ///
    /// The engine never sends a request twice; neither does the crate's
    /// `ConnectionManager` (it reconnects, it does not resend). The crate's cluster connection
    /// is refused here (`InvalidConfig` at `build`): built elsewhere, it may resend commands on
    /// its own, which could apply an `add` or an `increment` twice; hand the engine its
    /// `ClusterClientBuilder` with [`redis_cluster`](Self::redis_cluster) instead, or use a
    /// `redis-cluster://` URL. The settings of the engine's own connections
    /// (the URL's address, TLS, pool bounds, pipelines) do not apply; the namespace, default
    /// TTL, value limit and timeout do. Replica reads and invalidation feeds need the engine's
    /// own connections (`InvalidConfig`).
    #[cfg(feature = "redis-crate")]
    pub fn redis_connection<C>(mut self, connection: C) -> Self
    where
        C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
    {
        self.external = Some(std::sync::Arc::new(crate::external::CrateConnection {
            connection,
            name: std::any::type_name::<C>(),
        }));
        self
    }

    /// Runs the engine on a Redis Cluster through the `redis` crate's cluster connection
    /// (feature `redis-crate`), made from `cluster` with its retries turned off, so that the
    /// crate never sends a command twice (`add`, `increment` and the delete of
    /// `delete_if_equals` must not be), and opened at the first operation.
    ///
    /// Every request goes to the master of one slot: the engine needs a
    /// [`namespace`](Self::namespace) and [`colocate_namespace`](Self::colocate_namespace), so
    /// that every key of the namespace lives on that master (`InvalidConfig` otherwise). With
    /// keys spread over the masters, use a `redis-cluster://` URL and the engine's own
    /// connections. While the namespace's slot moves or its master fails over, operations fail
    /// with a transient `Connection` error (the crate's `MOVED`, `ASK`, `TRYAGAIN`,
    /// `CLUSTERDOWN`), and succeed again once the crate has read the new slot map; nothing is
    /// resent for them. What else this transport does and does not keep is as for
    /// [`redis_connection`](Self::redis_connection).
    ///
    /// ```no_run
    /// # fn main() -> cache_core::Result<()> {
    /// use cache_redis::RedisEngine;
    ///
    /// let nodes = vec!["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"];
    /// let engine = RedisEngine::async_builder()
    ///     .redis_cluster(redis::cluster::ClusterClientBuilder::new(nodes))
    ///     .namespace("sessions")
    ///     .colocate_namespace(true)
    ///     .build()?;
    /// # let _ = engine;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis-crate")]
    pub fn redis_cluster(mut self, cluster: redis::cluster::ClusterClientBuilder) -> Self {
        self.external = Some(std::sync::Arc::new(crate::external::CrateCluster::new(
            cluster,
        )));
        self
    }

    /// Runs the engine on the master some sentinels name, through the `redis` crate's
    /// `SentinelClient` (feature `redis-crate`; build it for `SentinelServerType::Master`).
    /// The engine asks it for the master at the first operation and keeps one multiplexed
    /// connection to it; when that connection fails, an operation times out on it, or the
    /// server answers `READONLY` (it was demoted), the operation fails (nothing is resent) and
    /// the next one asks the sentinels again. So after a failover the engine serves again
    /// once the sentinels name the new master. What else this transport does and does not
    /// keep is as for [`redis_connection`](Self::redis_connection); the engine's own sentinel
    /// support (`redis-sentinel://` URLs) also checks the master in the background and reads
    /// from replicas on request.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use cache_redis::RedisEngine;
    /// use redis::sentinel::{SentinelClient, SentinelServerType};
    ///
    /// let sentinel = SentinelClient::build(
    ///     vec!["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"],
    ///     "mymaster".to_string(),
    ///     None,
    ///     SentinelServerType::Master,
    /// )?;
    /// let engine = RedisEngine::async_builder()
    ///     .redis_sentinel(sentinel)
    ///     .namespace("sessions")
    ///     .build()?;
    /// # let _ = engine;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis-crate")]
    pub fn redis_sentinel(mut self, sentinel: redis::sentinel::SentinelClient) -> Self {
        self.external = Some(std::sync::Arc::new(crate::external::CrateSentinel::new(
            sentinel,
        )));
        self
    }
}

/// A password that never shows in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A parsed Redis URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// The host as written (an IPv6 literal keeps its brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) db: u32,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Secret>,
    pub(crate) tls: bool,
    /// `host` is the path of a Unix domain socket (`port` is then 0).
    pub(crate) unix: bool,
    /// The RESP version the URL asks for, if it says.
    pub(crate) protocol: Option<RedisProtocol>,
}

impl ServerUrl {
    /// `host:port`, or `unix:` and the socket's path, to connect to and to name in errors.
    pub(crate) fn address(&self) -> String {
        if self.unix {
            format!("{}{}", cache_remote::UNIX_PREFIX, self.host)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Builds a several-node URL from nodes given one by one (`host:port` or `redis://` URLs): the
/// first credentials found are kept.
fn nodes_url<S: Into<String>>(
    scheme: &str,
    nodes: impl IntoIterator<Item = S>,
    path: &str,
) -> String {
    let mut userinfo = None;
    let mut tls = false;
    let mut hosts = Vec::new();
    for node in nodes {
        let node: String = node.into();
        let rest = if let Some(rest) = node.strip_prefix("rediss://") {
            tls = true;
            rest.to_string()
        } else {
            node.strip_prefix("redis://").unwrap_or(&node).to_string()
        };
        let rest = rest.split('/').next().unwrap_or_default();
        let host = match rest.rsplit_once('@') {
            Some((info, host)) => {
                userinfo.get_or_insert_with(|| info.to_string());
                host
            }
            None => rest,
        };
        hosts.push(host.to_string());
    }
    let scheme = if tls {
        scheme.replacen("redis", "rediss", 1)
    } else {
        scheme.to_string()
    };
    let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    format!("{scheme}{userinfo}{}{path}", hosts.join(","))
}

/// Where an engine's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// One server.
    Single(ServerUrl),
    /// A cluster, found through these nodes (each with the credentials and TLS of the URL).
    Cluster(Vec<ServerUrl>),
    /// The master named `master`, found through these sentinels; `data` holds the
    /// credentials, database and TLS for the master (its host is replaced when found).
    Sentinel {
        sentinels: Vec<ServerUrl>,
        master: String,
        data: ServerUrl,
    },
}

impl Target {
    /// A URL naming the data servers' credentials, database and TLS, for any host.
    pub(crate) fn template(&self) -> &ServerUrl {
        match self {
            Self::Single(url) => url,
            Self::Cluster(seeds) => &seeds[0],
            Self::Sentinel { data, .. } => data,
        }
    }
}

/// Parses every URL form [`RedisEngineBuilder::url`] accepts.
pub(crate) fn parse_target(text: &str) -> Result<Target> {
    let bad = |why: &str| {
        CacheError::invalid_config(format!("cannot use Redis URL {}: {why}", redact(text)))
    };
    let (kind, tls, rest) = if let Some(rest) = text.strip_prefix("redis-cluster://") {
        ("cluster", false, rest)
    } else if let Some(rest) = text.strip_prefix("rediss-cluster://") {
        ("cluster", true, rest)
    } else if let Some(rest) = text.strip_prefix("redis-sentinel://") {
        ("sentinel", false, rest)
    } else if let Some(rest) = text.strip_prefix("rediss-sentinel://") {
        ("sentinel", true, rest)
    } else {
        return parse_url(text).map(Target::Single);
    };
    if text.contains(['#', '?']) {
        return Err(bad("fragments and query parameters are not accepted"));
    }
    let (hosts, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match hosts.rsplit_once('@') {
        Some((info, hosts)) => (format!("{info}@"), hosts),
        None => (String::new(), hosts),
    };
    let scheme = if tls { "rediss" } else { "redis" };
    let default_port = if kind == "sentinel" { 26379 } else { 6379 };
    let mut nodes = Vec::new();
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let mut url = parse_url(&format!("{scheme}://{userinfo}{host}"))
            .map_err(|_| bad(&format!("node {host:?} is not host[:port]")))?;
        let has_port = match host.rfind(']') {
            Some(close) => host[close..].contains(':'),
            None => host.contains(':'),
        };
        if !has_port {
            url.port = default_port;
        }
        nodes.push(url);
    }
    if nodes.is_empty() {
        return Err(bad("no node given"));
    }
    match kind {
        "cluster" => {
            if !matches!(path, "" | "/" | "/0") {
                return Err(bad("a cluster has database 0 only"));
            }
            Ok(Target::Cluster(nodes))
        }
        _ => {
            let mut parts = path.trim_start_matches('/').split('/');
            let master = parts.next().unwrap_or_default();
            if master.is_empty() {
                return Err(bad(
                    "name the master: redis-sentinel://host:port/master-name",
                ));
            }
            let db = match parts.next() {
                None | Some("") => 0,
                Some(db) => db
                    .parse()
                    .map_err(|_| bad("the path must be /master-name[/db]"))?,
            };
            if parts.next().is_some() {
                return Err(bad("the path must be /master-name[/db]"));
            }
            let mut data = nodes[0].clone();
            data.db = db;
            // Sentinels are asked without credentials: those are the master's.
            let sentinels = nodes
                .into_iter()
                .map(|mut s| {
                    s.username = None;
                    s.password = None;
                    s.db = 0;
                    s
                })
                .collect();
            Ok(Target::Sentinel {
                sentinels,
                master: master.to_string(),
                data,
            })
        }
    }
}

/// Parses `redis://[user][:password@]host[:port][/db]` or `rediss://...`, or a Unix socket's
/// URL (`redis+unix:///path` or `unix:///path`).
pub(crate) fn parse_url(text: &str) -> Result<ServerUrl> {
    let bad = |why: &str| {
        CacheError::invalid_config(format!("cannot use Redis URL {}: {why}", redact(text)))
    };
    if let Some(rest) = text
        .strip_prefix("redis+unix://")
        .or_else(|| text.strip_prefix("unix://"))
    {
        return parse_unix_url(rest).map_err(|why| bad(&why));
    }
    if text.contains('#') {
        return Err(bad("fragments are not accepted (insecure TLS is only \
             RedisEngineBuilder::danger_accept_invalid_certs)"));
    }
    let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(bad(&format!(
                "the scheme must be redis:// or rediss://, not {other}://"
            )));
        }
    };
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(host) => host.to_string(),
        None => return Err(bad("no host")),
    };
    let mut protocol = None;
    for (name, value) in url.query_pairs() {
        match name.as_ref() {
            "protocol" => protocol = Some(RedisProtocol::parse(&value).map_err(|why| bad(&why))?),
            other => {
                return Err(bad(&format!(
                    "unknown parameter {other:?} (protocol is the only one)"
                )));
            }
        }
    }
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        db => db
            .parse()
            .map_err(|_| bad("the path must be a database number (/0)"))?,
    };
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| bad("credentials must be UTF-8 once percent-decoded"))
    };
    let username = Some(decode(url.username())?).filter(|u| !u.is_empty());
    let password = url.password().map(decode).transpose()?.map(Secret);
    Ok(ServerUrl {
        host,
        port: url.port().unwrap_or(6379),
        db,
        username,
        password,
        tls,
        unix: false,
        protocol,
    })
}

/// The part of `redis+unix://` or `unix://` URL after the scheme: `/path/to/socket`, then
/// optionally `?db=N&user=NAME&pass=PASSWORD`, the parameters the `redis` crate reads there.
fn parse_unix_url(rest: &str) -> std::result::Result<ServerUrl, String> {
    if rest.contains('#') {
        return Err("fragments are not accepted".into());
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !path.starts_with('/') {
        return Err("the socket path must be absolute: redis+unix:///run/redis/redis.sock".into());
    }
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| "the URL must be UTF-8 once percent-decoded".to_string())
    };
    let mut url = ServerUrl {
        host: decode(path)?,
        port: 0,
        db: 0,
        username: None,
        password: None,
        tls: false,
        unix: true,
        protocol: None,
    };
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value)?;
        match name {
            "db" => {
                url.db = value
                    .parse()
                    .map_err(|_| format!("db must be a database number, not {value:?}"))?;
            }
            "user" => url.username = Some(value).filter(|user| !user.is_empty()),
            "pass" | "password" => url.password = Some(Secret(value)),
            "protocol" => url.protocol = Some(RedisProtocol::parse(&value)?),
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (db, user, pass, protocol)"
                ));
            }
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let plain = parse_url("redis://127.0.0.1").unwrap();
        assert_eq!(plain.address(), "127.0.0.1:6379");
        assert_eq!(
            (plain.db, plain.tls, plain.password.is_none()),
            (0, false, true)
        );
        let full = parse_url("rediss://app:p%40ss%2Bw@cache.internal:6380/2").unwrap();
        assert_eq!(full.address(), "cache.internal:6380");
        assert_eq!(full.username.as_deref(), Some("app"));
        assert_eq!(full.password, Some(Secret("p@ss+w".into())));
        assert_eq!((full.db, full.tls), (2, true));
        let only_password = parse_url("redis://:secret@h/").unwrap();
        assert_eq!(only_password.username, None);
        assert_eq!(only_password.password, Some(Secret("secret".into())));
        assert_eq!(
            parse_url("redis://[::1]:7000").unwrap().address(),
            "[::1]:7000"
        );
        assert_eq!(plain.protocol, None);
        for (url, protocol) in [
            ("redis://h/?protocol=resp3", RedisProtocol::Resp3),
            ("rediss://h:6380/1?protocol=3", RedisProtocol::Resp3),
            ("redis://h?protocol=2", RedisProtocol::Resp2),
        ] {
            assert_eq!(parse_url(url).unwrap().protocol, Some(protocol), "{url}");
        }
    }

    #[test]
    fn unix_socket_urls() {
        let plain = parse_url("redis+unix:///run/redis/redis.sock").unwrap();
        assert_eq!(plain.address(), "unix:/run/redis/redis.sock");
        assert_eq!((plain.db, plain.tls, plain.unix), (0, false, true));
        let full = parse_url("unix:///tmp/r%20s.sock?db=3&user=app&pass=p%40ss").unwrap();
        assert_eq!(full.address(), "unix:/tmp/r s.sock");
        assert_eq!(full.db, 3);
        assert_eq!(full.username.as_deref(), Some("app"));
        assert_eq!(full.password, Some(Secret("p@ss".into())));
        assert_eq!(
            parse_url("unix:///tmp/r.sock?protocol=resp2")
                .unwrap()
                .protocol,
            Some(RedisProtocol::Resp2)
        );
        let resp3 = parse_url("unix:///tmp/r.sock?protocol=resp3&pass=hunter2").unwrap();
        assert_eq!(resp3.protocol, Some(RedisProtocol::Resp3));
        for bad in [
            "redis+unix://relative/path",
            "unix:///tmp/r.sock?db=x",
            "unix:///tmp/r.sock?pass=hunter2&timeout=5",
            "unix:///tmp/r.sock?protocol=resp4&pass=hunter2",
            "unix:///tmp/r.sock#insecure",
        ] {
            let err = parse_url(bad).unwrap_err();
            assert!(
                matches!(err, CacheError::InvalidConfig { .. }),
                "{bad}: {err}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn bad_urls_name_the_problem_without_the_password() {
        for bad in [
            "http://h",
            "redis://",
            "redis://h/x",
            "redis://h?protocol=resp4",
            "redis://u:hunter2@h?timeout=5",
            "redis-cluster://h:1,h:2?protocol=resp3",
            "redis://u:hunter2@h#insecure",
            "not a url",
        ] {
            let err = parse_target(bad).unwrap_err();
            assert!(
                matches!(err, CacheError::InvalidConfig { .. }),
                "{bad}: {err}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn passwords_never_show_in_debug() {
        let url = parse_url("redis://u:hunter2@h").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
        let builder = RedisEngineBuilder::<Blocking>::default().url("redis://u:hunter2@h");
        assert!(!format!("{builder:?}").contains("hunter2"));
    }

    #[test]
    fn env_lookup() {
        let vars = |name: &str| match name {
            "CACHE_REDIS_URL" => Some("redis://10.0.0.1:7000/3".to_string()),
            "CACHE_REDIS_NAMESPACE" => Some("svc".to_string()),
            "CACHE_REDIS_TIMEOUT_MS" => Some("250".to_string()),
            _ => None,
        };
        let b = RedisEngineBuilder::<Blocking>::default()
            .from_lookup(vars)
            .unwrap();
        assert_eq!(b.url, "redis://10.0.0.1:7000/3");
        assert_eq!(b.options.namespace.as_deref(), Some("svc"));
        assert_eq!(
            b.options.client.timeout,
            std::time::Duration::from_millis(250)
        );
        let bad = RedisEngineBuilder::<Blocking>::default()
            .from_lookup(|n| (n == "CACHE_REDIS_MAX_CONNECTIONS").then(|| "many".to_string()));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("CACHE_REDIS_MAX_CONNECTIONS")
        );
    }
}
