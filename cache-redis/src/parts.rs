//! What both faces of [`RedisEngine`](crate::RedisEngine) are built from: the builder's
//! settings checked once ([`Parts`]), the backend of each server with its TLS settings, and the
//! [`Core`] over the topology the URL names.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cache_core::config::redact_url as redact;
use cache_core::key::KeySpace;
use cache_core::{CacheError, Result};
use cache_remote::{RemoteOptions, Transport};

use crate::backend::Redis;
use crate::cluster::{Cluster, NodeFactory};
use crate::commands::{Commands, MAX_TTL, RELAXED_MAX_KEY_LEN};
use crate::config::{ReadFrom, RedisEngineBuilder, RedisProtocol, ServerUrl, Target, parse_target};
use crate::core::{Core, Topology};
use crate::invalidation::FeedTarget;
use crate::sentinel::Sentinel;

/// What both faces of the engine are built from.
pub(crate) struct Parts {
    pub(crate) target: Target,
    pub(crate) commands: Commands,
    pub(crate) options: RemoteOptions,
    pub(crate) shown_url: String,
    pub(crate) tls_root_certificate: Option<Vec<u8>>,
    pub(crate) danger_accept_invalid_certs: bool,
    pub(crate) read_from: ReadFrom,
    #[cfg(feature = "redis-crate")]
    pub(crate) external: Option<Arc<dyn crate::external::External>>,
}

impl Parts {
    /// A factory of backends for any host, with the credentials, database and TLS of `url`.
    fn factory(&self, url: &ServerUrl) -> NodeFactory {
        let template = url.clone();
        let root = self.tls_root_certificate.clone();
        let danger = self.danger_accept_invalid_certs;
        Box::new(move |address: &str| {
            let mut url = template.clone();
            let (host, port) = address.rsplit_once(':').ok_or_else(|| {
                CacheError::invalid_config(format!("not a host:port address: {address}"))
            })?;
            url.host = host.to_string();
            url.port = port.parse().map_err(|_| {
                CacheError::invalid_config(format!("not a host:port address: {address}"))
            })?;
            backend(&url, root.as_deref(), danger)
        })
    }

    pub(crate) fn core<T: Transport>(self) -> Result<Arc<Core<T>>> {
        let settings = self.options.client.clone();
        let replica_reads = self.read_from == ReadFrom::ReplicaPreferred;
        #[cfg(feature = "redis-crate")]
        if let Some(external) = &self.external {
            return Ok(Arc::new(Core {
                feed: Arc::new(FeedTarget::unavailable(
                    "invalidation feeds need the engine's own connections, not a redis crate \
                     connection",
                )),
                topology: Topology::External(Arc::clone(external)),
                commands: self.commands,
                read_from: self.read_from,
                options: self.options,
                shown_url: "a redis crate connection".into(),
                closed: AtomicBool::new(false),
            }));
        }
        let topology = match &self.target {
            Target::Single(url) => Topology::Single(Arc::new(T::client(
                backend(
                    url,
                    self.tls_root_certificate.as_deref(),
                    self.danger_accept_invalid_certs,
                )?,
                settings,
            ))),
            Target::Cluster(seeds) => {
                let cluster = Cluster::new(
                    seeds.iter().map(ServerUrl::address).collect(),
                    self.factory(&seeds[0]),
                    settings,
                );
                Topology::Cluster(Box::new(if replica_reads {
                    cluster.reading_replicas()
                } else {
                    cluster
                }))
            }
            Target::Sentinel {
                sentinels,
                master,
                data,
            } => Topology::Sentinel(Sentinel::new(
                master.clone(),
                sentinels.iter().map(ServerUrl::address).collect(),
                self.factory(&sentinels[0]),
                self.factory(data),
                settings,
                replica_reads,
            )),
        };
        // The invalidation feed's own clients, blocking whatever the engine's face.
        let feed = match &self.target {
            Target::Single(url) => FeedTarget::single(cache_remote::blocking::Client::new(
                backend(
                    url,
                    self.tls_root_certificate.as_deref(),
                    self.danger_accept_invalid_certs,
                )?,
                self.options.client.clone(),
            )),
            Target::Cluster(seeds) => FeedTarget::cluster(
                seeds.iter().map(ServerUrl::address).collect(),
                self.factory(&seeds[0]),
                self.options.client.clone(),
            ),
            Target::Sentinel {
                sentinels,
                master,
                data,
            } => FeedTarget::sentinel(
                master.clone(),
                sentinels.iter().map(ServerUrl::address).collect(),
                self.factory(&sentinels[0]),
                self.factory(data),
                self.options.client.clone(),
            ),
        };
        let feed = Arc::new(feed);
        Ok(Arc::new(Core {
            feed,
            topology,
            commands: self.commands,
            read_from: self.read_from,
            options: self.options,
            shown_url: self.shown_url,
            closed: AtomicBool::new(false),
        }))
    }
}

impl<Face> RedisEngineBuilder<Face> {
    /// Checks the settings and builds what both faces share.
    pub(crate) fn parts(self) -> Result<Parts> {
        let mut target = parse_target(&self.url)?;
        set_protocol(&mut target, self.protocol)?;
        #[cfg(feature = "redis-crate")]
        let external = self.external.clone();
        #[cfg(not(feature = "redis-crate"))]
        let external: Option<()> = None;
        #[cfg(feature = "redis-crate")]
        if let Some(external) = &external {
            external.check()?;
            if external.one_slot() && !(self.colocate_namespace && self.options.namespace.is_some())
            {
                return Err(CacheError::invalid_config(
                    "the redis crate's cluster connection runs a co-located namespace only \
                     (namespace(..) and colocate_namespace(true): every key on one master); \
                     with keys spread over the masters, use a redis-cluster:// URL and the \
                     engine's own connections",
                ));
            }
        }
        if self.read_from != ReadFrom::Master && external.is_some() {
            return Err(CacheError::invalid_config(
                "read_from(ReplicaPreferred) needs the engine's own connections, not a redis \
                 crate connection",
            ));
        }
        if self.read_from != ReadFrom::Master && matches!(target, Target::Single(_)) {
            return Err(CacheError::invalid_config(
                "read_from(ReplicaPreferred) needs a cluster or sentinels, which name the \
                 replicas; a single server's reads go to it",
            ));
        }
        #[cfg(feature = "redis-crate")]
        let one_slot = external.as_ref().is_some_and(|e| e.one_slot());
        #[cfg(not(feature = "redis-crate"))]
        let one_slot = false;
        let cluster = one_slot || matches!(target, Target::Cluster(_));
        let mut keys = self.options.validate(MAX_TTL)?;
        if self.colocate_namespace {
            let namespace = match (cluster, self.options.namespace.as_deref()) {
                (true, Some(namespace)) => namespace,
                (true, None) => {
                    return Err(CacheError::invalid_config(
                        "colocate_namespace needs a namespace to co-locate",
                    ));
                }
                _ => {
                    return Err(CacheError::invalid_config(
                        "colocate_namespace is for a cluster (redis-cluster:// URLs)",
                    ));
                }
            };
            if namespace.contains(['{', '}']) {
                return Err(CacheError::invalid_config(
                    "a co-located namespace must not hold { or }: it becomes a hash tag",
                ));
            }
            keys = KeySpace::new(Some(&format!("{{{namespace}}}")))?;
            // The prefix as stored (the namespace escaped), whose hash tag places every key.
            #[cfg(feature = "redis-crate")]
            if let Some(external) = &external {
                external.use_tag(keys.prefix());
            }
        }
        if self.relaxed_keys {
            keys = keys.relaxed(RELAXED_MAX_KEY_LEN);
        }
        // Check the TLS settings once, before any connection.
        backend(
            target.template(),
            self.tls_root_certificate.as_deref(),
            self.danger_accept_invalid_certs,
        )?;
        let address = match &target {
            _ if external.is_some() => "a redis crate connection".to_string(),
            Target::Single(url) => url.address(),
            Target::Cluster(seeds) => seeds
                .iter()
                .map(ServerUrl::address)
                .collect::<Vec<_>>()
                .join(","),
            Target::Sentinel { master, .. } => format!("master {master}"),
        };
        let commands = Commands::new(
            keys,
            self.options.default_ttl,
            self.max_value_size,
            address,
            matches!(target, Target::Cluster(_)),
        );
        Ok(Parts {
            target,
            commands,
            shown_url: redact(&self.url),
            options: self.options,
            tls_root_certificate: self.tls_root_certificate,
            danger_accept_invalid_certs: self.danger_accept_invalid_certs,
            read_from: self.read_from,
            #[cfg(feature = "redis-crate")]
            external,
        })
    }
}

/// Settles the RESP version of every data server: the builder's, else the URL's, else RESP2.
/// Sentinels are asked in RESP2 whatever the data servers speak.
fn set_protocol(target: &mut Target, chosen: Option<RedisProtocol>) -> Result<()> {
    let data: Vec<&mut ServerUrl> = match target {
        Target::Single(url) => vec![url],
        Target::Cluster(seeds) => seeds.iter_mut().collect(),
        Target::Sentinel {
            sentinels, data, ..
        } => {
            for sentinel in sentinels.iter_mut() {
                sentinel.protocol = Some(RedisProtocol::Resp2);
            }
            vec![data]
        }
    };
    for url in data {
        match (url.protocol, chosen) {
            (Some(asked), Some(chosen)) if asked != chosen => {
                return Err(CacheError::invalid_config(format!(
                    "the URL asks for {asked:?} and the builder for {chosen:?}: choose one"
                )));
            }
            (asked, chosen) => {
                url.protocol = Some(chosen.or(asked).unwrap_or_default());
            }
        }
    }
    Ok(())
}

#[cfg(feature = "tls")]
fn backend(url: &ServerUrl, root: Option<&[u8]>, danger: bool) -> Result<Redis> {
    let tls = if url.tls {
        Some(cache_remote::tls::settings(&url.host, root, danger)?)
    } else {
        if root.is_some() || danger {
            return Err(CacheError::invalid_config(
                "TLS settings need a rediss:// URL",
            ));
        }
        None
    };
    Ok(Redis::new(url, tls))
}

#[cfg(not(feature = "tls"))]
fn backend(url: &ServerUrl, root: Option<&[u8]>, danger: bool) -> Result<Redis> {
    if url.tls || root.is_some() || danger {
        return Err(CacheError::invalid_config(
            "rediss:// URLs and TLS settings need the `tls` feature of cache-redis",
        ));
    }
    Ok(Redis::new(url))
}
