//! Comparisons 5-7 and 10: the remote engines against their raw clients, `redis-benchmark` and
//! a raw memcached socket loop, each on one connection; and 64 threads on one engine with and
//! without the connection bound.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Instant;

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_memcached::MemcachedEngine;
use cache_redis::RedisEngine;
use cache_serializer::TypedCache;
use cache_tests::servers::TestServer;
use serde::{Deserialize, Serialize};

use crate::measure::{interleave, rate};
use crate::{Goal, Plan, Row};

/// About 64 bytes once encoded with its envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Small {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) scores: [u16; 8],
    pub(crate) active: bool,
}

pub(crate) fn small() -> Small {
    Small {
        id: 4_242_424_242,
        name: "a name of some length".into(),
        scores: [1, 2, 300, 4_000, 5, 60, 7, 8],
        active: true,
    }
}

fn timed(ops: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..ops {
        f(i);
    }
    rate(ops, start.elapsed())
}

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Pins the benchmark to CPU 0 and the servers to CPU 1. Unpinned, a round trip on loopback was
/// 3-4x faster when the scheduler happened to put client and server on one core than when a
/// wake-up crossed cores, and it chose differently per connection: ratios between two clients
/// then measured the scheduler, not the clients. Pinned, every contender crosses cores, as a
/// client and its server on different machines would.
pub(crate) fn pin(servers: &[&TestServer]) -> bool {
    // Counted once, before the first pinning: afterwards this process sees only its core.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if cores < 2 {
        return false;
    }
    let taskset = |cpu: &str, pid: u32| {
        Command::new("taskset")
            .args(["-a", "-p", "-c", cpu, &pid.to_string()])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut ok = taskset("0", std::process::id());
    for server in servers {
        ok &= server.pid().is_some_and(|pid| taskset("1", pid));
    }
    ok
}

pub(crate) fn run(
    plan: &Plan,
    redis: &TestServer,
    memcached: &TestServer,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let ops = plan.remote_ops;
    if !pin(&[redis, memcached]) {
        eprintln!(
            "warning: could not pin the benchmark and the servers to separate CPUs (taskset); remote ratios may be noisy"
        );
    }
    // 5. TypedCache over Redis / the raw redis crate, get and set of the same bytes.
    let engine = RedisEngine::builder()
        .url(redis.url())
        .namespace("bench")
        .max_connections(1)
        .build()
        .map_err(fail("redis engine"))?;
    let typed = TypedCache::new(engine.clone());
    let encoded = typed.encode(&small()).map_err(fail("encode"))?;
    let mut raw = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .map_err(fail("raw redis"))?;
    typed
        .set("small", &small(), Ttl::Never)
        .map_err(fail("set"))?;
    let raw_key = "bench:small";

    let get = interleave(
        plan.rounds,
        &mut [
            &mut || {
                timed(ops, |_| {
                    std::hint::black_box(typed.get::<Small>("small").ok().flatten());
                })
            },
            &mut || {
                timed(ops, |_| {
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(raw_key)
                        .query(&mut raw)
                        .ok()
                        .flatten();
                    std::hint::black_box(v);
                })
            },
            &mut || redis_benchmark(redis, "get", encoded.len(), ops).unwrap_or(f64::NAN),
        ],
    );
    let value = small();
    let set = interleave(
        plan.rounds,
        &mut [
            &mut || {
                timed(ops, |_| {
                    let _ = typed.set("small", &value, Ttl::Never);
                })
            },
            &mut || {
                timed(ops, |_| {
                    let _: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(raw_key)
                        .arg(&encoded[..])
                        .query(&mut raw);
                })
            },
            &mut || redis_benchmark(redis, "set", encoded.len(), ops).unwrap_or(f64::NAN),
        ],
    );
    rows.push(Row::rate(
        5,
        &format!(
            "TypedCache<Redis> get of a {} B struct / raw redis crate",
            encoded.len()
        ),
        get[0],
        get[1],
        Goal::AtLeast(0.93),
    ));
    rows.push(Row::rate(
        5,
        "TypedCache<Redis> set / raw redis crate",
        set[0],
        set[1],
        Goal::AtLeast(0.93),
    ));
    // The engine alone (bytes in, bytes out) against the raw crate, through the remote core.
    let bytes_get = interleave(
        plan.rounds,
        &mut [
            &mut || {
                timed(ops, |_| {
                    std::hint::black_box(engine.get("small").ok().flatten());
                })
            },
            &mut || {
                timed(ops, |_| {
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(raw_key)
                        .query(&mut raw)
                        .ok()
                        .flatten();
                    std::hint::black_box(v);
                })
            },
        ],
    );
    let bytes_set = interleave(
        plan.rounds,
        &mut [
            &mut || {
                timed(ops, |_| {
                    let _ = engine.set("small", encoded.clone(), Ttl::Never);
                })
            },
            &mut || {
                timed(ops, |_| {
                    let _: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(raw_key)
                        .arg(&encoded[..])
                        .query(&mut raw);
                })
            },
        ],
    );
    rows.push(Row::rate(
        5,
        "RedisEngine get (remote core) / raw redis crate",
        bytes_get[0],
        bytes_get[1],
        Goal::AtLeast(0.93),
    ));
    rows.push(Row::rate(
        5,
        "RedisEngine set (remote core) / raw redis crate",
        bytes_set[0],
        bytes_set[1],
        Goal::AtLeast(0.93),
    ));
    rows.push(Row::rate(
        5,
        "TypedCache<Redis> get / redis-benchmark -c 1 -P 1",
        get[0],
        get[2],
        Goal::AtLeast(0.95),
    ));
    rows.push(Row::rate(
        5,
        "TypedCache<Redis> set / redis-benchmark -c 1 -P 1",
        set[0],
        set[2],
        Goal::AtLeast(0.95),
    ));

    // 6. get_many of 16 keys / 16 single gets, per key.
    let mc = MemcachedEngine::builder()
        .server(memcached.url())
        .namespace("bench")
        .max_connections(1)
        .build()
        .map_err(fail("memcached engine"))?;
    let keys: Vec<String> = (0..16).map(|i| format!("many:{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let payload = Bytes::from(vec![0x33; 64]);
    for key in &keys {
        engine
            .set(key, payload.clone(), Ttl::Never)
            .map_err(fail("redis set"))?;
        mc.set(key, payload.clone(), Ttl::Never)
            .map_err(fail("memcached set"))?;
    }
    for (name, engine, goal) in [
        ("Redis", &engine as &dyn CacheEngine, 10.0),
        ("Memcached", &mc as &dyn CacheEngine, 8.0),
    ] {
        let r = interleave(
            plan.rounds,
            &mut [
                &mut || {
                    16.0 * timed(ops / 16, |_| {
                        std::hint::black_box(engine.get_many(&key_refs).ok());
                    })
                },
                &mut || {
                    timed(ops, |i| {
                        std::hint::black_box(engine.get(key_refs[i % 16]).ok());
                    })
                },
            ],
        );
        rows.push(Row::rate(
            6,
            &format!("{name} get_many(16) / 16 single gets, per key"),
            r[0],
            r[1],
            Goal::AtLeast(goal),
        ));
    }

    // 7. MemcachedEngine get / a raw text-protocol socket loop.
    mc.set("one", payload.clone(), Ttl::Never)
        .map_err(fail("memcached set"))?;
    // The raw loop reads the same payload under a plain key of the same length as the
    // engine's wire key (`bench:` + 16-digit generation + `:one`).
    let wire_key = format!("bench:{}:one", "0".repeat(16));
    let mut socket = Raw::connect(&memcached.address())?;
    socket.set(&wire_key, &payload)?;
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || {
                timed(ops, |_| {
                    std::hint::black_box(mc.get("one").ok().flatten());
                })
            },
            &mut || {
                timed(ops, |_| {
                    std::hint::black_box(socket.get(&wire_key).ok().flatten());
                })
            },
        ],
    );
    rows.push(Row::rate(
        7,
        "MemcachedEngine get (remote core) / raw text-protocol socket loop",
        r[0],
        r[1],
        Goal::AtLeast(0.9),
    ));
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || {
                timed(ops, |_| {
                    let _ = mc.set("one", payload.clone(), Ttl::Never);
                })
            },
            &mut || {
                timed(ops, |_| {
                    let _ = socket.set(&wire_key, &payload);
                })
            },
        ],
    );
    rows.push(Row::rate(
        7,
        "MemcachedEngine set (remote core) / raw text-protocol socket loop",
        r[0],
        r[1],
        Goal::AtLeast(0.9),
    ));

    // 10. Many callers on one engine: the default connection bound (32) costs no throughput
    // against no bound at all.
    for (name, bounded, unbounded) in [
        (
            "RedisEngine",
            Box::new(
                RedisEngine::builder()
                    .url(redis.url())
                    .namespace("bench")
                    .build()
                    .map_err(fail("redis engine"))?,
            ) as Box<dyn CacheEngine>,
            Box::new(
                RedisEngine::builder()
                    .url(redis.url())
                    .namespace("bench")
                    .max_connections(1 << 20)
                    .max_idle_connections(1 << 20)
                    .build()
                    .map_err(fail("redis engine"))?,
            ) as Box<dyn CacheEngine>,
        ),
        (
            "MemcachedEngine",
            Box::new(
                MemcachedEngine::builder()
                    .server(memcached.url())
                    .namespace("bench")
                    .build()
                    .map_err(fail("memcached engine"))?,
            ),
            Box::new(
                MemcachedEngine::builder()
                    .server(memcached.url())
                    .namespace("bench")
                    .max_connections(1 << 20)
                    .max_idle_connections(1 << 20)
                    .build()
                    .map_err(fail("memcached engine"))?,
            ),
        ),
    ] {
        bounded
            .set("many:0", payload.clone(), Ttl::Never)
            .map_err(fail("set"))?;
        let r = interleave(
            plan.rounds,
            &mut [&mut || threads_rate(&*bounded, 64, ops / 16), &mut || {
                threads_rate(&*unbounded, 64, ops / 16)
            }],
        );
        rows.push(Row::rate(
            10,
            &format!("{name} gets, 64 threads: default bound (32 connections) / unbounded"),
            r[0],
            r[1],
            Goal::AtLeast(0.9),
        ));
        if name == "RedisEngine" {
            // The server's own client with as many connections as we have threads.
            let size = payload.len();
            let r = interleave(
                plan.rounds,
                &mut [&mut || threads_rate(&*bounded, 64, ops / 16), &mut || {
                    redis_benchmark_clients(redis, "get", size, ops * 4, 64).unwrap_or(f64::NAN)
                }],
            );
            rows.push(Row::rate(
                10,
                "RedisEngine gets, 64 threads, default bound / redis-benchmark -c 64 -P 1",
                r[0],
                r[1],
                Goal::AtLeast(0.9),
            ));
        }
    }
    Ok(())
}

/// Gets per second of `threads` threads sharing `engine`, each doing `each` gets.
fn threads_rate(engine: &dyn CacheEngine, threads: usize, each: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..each {
                    std::hint::black_box(engine.get("many:0").ok());
                }
            });
        }
    });
    rate(threads * each, start.elapsed())
}

/// Requests per second reported by `redis-benchmark -c 1 -P 1` for one test.
fn redis_benchmark(server: &TestServer, test: &str, size: usize, requests: usize) -> Option<f64> {
    redis_benchmark_clients(server, test, size, requests, 1)
}

/// Requests per second reported by `redis-benchmark -c CLIENTS -P 1` for one test.
fn redis_benchmark_clients(
    server: &TestServer,
    test: &str,
    size: usize,
    requests: usize,
    clients: usize,
) -> Option<f64> {
    let address = server.address();
    let (host, port) = address.rsplit_once(':')?;
    // On the benchmark's CPU, like the other clients.
    let out = Command::new("taskset")
        .args(["-c", "0", "redis-benchmark"])
        .args([
            "-h",
            host,
            "-p",
            port,
            "-c",
            &clients.to_string(),
            "-P",
            "1",
            "--csv",
            "-t",
            test,
        ])
        .args(["-n", &requests.to_string(), "-d", &size.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps",...: the second column of the data line.
    text.lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&format!("\"{test}")))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

/// A raw memcached text-protocol connection: the physical limit of one connection.
struct Raw {
    reader: BufReader<TcpStream>,
    line: String,
    request: Vec<u8>,
}

impl Raw {
    fn connect(address: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(address).map_err(fail("raw memcached"))?;
        stream.set_nodelay(true).map_err(fail("nodelay"))?;
        Ok(Self {
            reader: BufReader::new(stream),
            line: String::new(),
            request: Vec::new(),
        })
    }

    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        self.request.clear();
        self.request
            .extend_from_slice(format!("set {key} 0 0 {}\r\n", value.len()).as_bytes());
        self.request.extend_from_slice(value);
        self.request.extend_from_slice(b"\r\n");
        self.reader
            .get_mut()
            .write_all(&self.request)
            .map_err(fail("write"))?;
        self.line.clear();
        self.reader
            .read_line(&mut self.line)
            .map_err(fail("read"))?;
        if self.line.trim_end() == "STORED" {
            Ok(())
        } else {
            Err(format!("raw set answered {:?}", self.line))
        }
    }

    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.request.clear();
        self.request.extend_from_slice(b"get ");
        self.request.extend_from_slice(key.as_bytes());
        self.request.extend_from_slice(b"\r\n");
        self.reader
            .get_mut()
            .write_all(&self.request)
            .map_err(fail("write"))?;
        self.line.clear();
        self.reader
            .read_line(&mut self.line)
            .map_err(fail("read"))?;
        if self.line.starts_with("END") {
            return Ok(None);
        }
        let len: usize = self
            .line
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or("bad VALUE line")?;
        let mut data = vec![0; len + 2];
        self.reader.read_exact(&mut data).map_err(fail("read"))?;
        data.truncate(len);
        self.line.clear();
        self.reader
            .read_line(&mut self.line)
            .map_err(fail("read"))?;
        Ok(Some(data))
    }
}
