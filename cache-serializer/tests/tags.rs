//! Tags in the typed layer: an invalidated tag makes every entry carrying it a miss, with one
//! write whatever the number of entries; versions taken before a loader runs; evicted versions
//! never bring entries back; malformed headers are misses (errors in strict mode); both faces;
//! real Redis and memcached.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use cache_core::tags::{TagExt, tag_key};
use cache_core::{CacheEngine, CacheError, Ttl};
use cache_local::InMemoryEngine;
use cache_serializer::{AsyncTypedCache, TypedCache};
use cache_tests::servers::{ServerKind, TestServer};

fn minutes(n: u64) -> Ttl {
    Ttl::After(Duration::from_secs(60 * n))
}

/// What every engine must show, through the typed layer.
fn invalidation_works_on<E: CacheEngine>(cache: &TypedCache<E>) {
    cache
        .set_tagged("order:1", &"books".to_string(), minutes(5), &["user:7"])
        .unwrap();
    cache
        .set_tagged(
            "order:2",
            &"lamp".to_string(),
            minutes(5),
            &["user:7", "eu"],
        )
        .unwrap();
    cache
        .set_tagged(
            "order:3",
            &"chair".to_string(),
            minutes(5),
            &["user:8", "eu"],
        )
        .unwrap();
    cache
        .set("plain", &"untagged".to_string(), minutes(5))
        .unwrap();
    assert_eq!(
        cache.get::<String>("order:2").unwrap().as_deref(),
        Some("lamp")
    );

    let before = cache.stats();
    cache.invalidate_tag("user:7").unwrap();
    assert_eq!(cache.get::<String>("order:1").unwrap(), None);
    assert_eq!(cache.get::<String>("order:2").unwrap(), None);
    assert_eq!(
        cache.get::<String>("order:3").unwrap().as_deref(),
        Some("chair")
    );
    assert_eq!(
        cache.get::<String>("plain").unwrap().as_deref(),
        Some("untagged")
    );
    let many: Vec<Option<String>> = cache
        .get_many(&["order:1", "order:2", "order:3", "plain"])
        .unwrap();
    assert_eq!(
        many,
        vec![None, None, Some("chair".into()), Some("untagged".into())]
    );
    let stats = cache.stats();
    assert_eq!(stats.tag_misses - before.tag_misses, 4, "{stats:?}");

    // Written again, the entry is current again; another tag invalidates it too.
    cache
        .set_tagged("order:1", &"books".to_string(), minutes(5), &["user:7"])
        .unwrap();
    assert_eq!(
        cache.get::<String>("order:1").unwrap().as_deref(),
        Some("books")
    );
    cache.invalidate_tag("eu").unwrap();
    assert_eq!(cache.get::<String>("order:3").unwrap(), None);
    assert_eq!(
        cache.get::<String>("order:1").unwrap().as_deref(),
        Some("books")
    );

    // A version that disappears (evicted, deleted) makes its entries miss: they never come back.
    assert!(cache.engine().delete(&tag_key("user:7")).unwrap());
    assert_eq!(cache.get::<String>("order:1").unwrap(), None);
    cache
        .set_tagged("order:1", &"books".to_string(), minutes(5), &["user:7"])
        .unwrap();
    assert_eq!(
        cache.get::<String>("order:1").unwrap().as_deref(),
        Some("books")
    );

    // entry(key).tags(..) takes the versions before its loader: an invalidation while the
    // loader runs makes the value it stores miss.
    let v: String = cache
        .entry("profile:7")
        .ttl(minutes(5))
        .tags(&["user:7"])
        .or_load(|| {
            cache.invalidate_tag("user:7").unwrap(); // another process, say
            "read before the change".to_string()
        })
        .unwrap();
    assert_eq!(
        v, "read before the change",
        "the caller gets what it loaded"
    );
    assert_eq!(
        cache.get::<String>("profile:7").unwrap(),
        None,
        "but it is not served"
    );
    let v: String = cache
        .entry("profile:7")
        .ttl(minutes(5))
        .tags(&["user:7"])
        .or_load(|| "current".to_string())
        .unwrap();
    assert_eq!(v, "current");
    let again: String = cache
        .entry("profile:7")
        .ttl(minutes(5))
        .tags(&["user:7"])
        .or_load(|| -> String { panic!("cached and current") })
        .unwrap();
    assert_eq!(again, "current");
}

#[test]
fn in_memory() {
    invalidation_works_on(&TypedCache::new(InMemoryEngine::new()));
}

#[test]
fn over_redis_one_write_invalidates_a_thousand_entries() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let connect = |namespace: &str| {
        cache_redis::RedisEngine::builder()
            .url(server.url())
            .namespace(namespace)
            .build()
            .unwrap()
    };
    invalidation_works_on(&TypedCache::new(connect("tags-kit")));

    // Two processes' caches; a thousand entries under one tag; the invalidation is one SET.
    let (writer, reader) = (
        TypedCache::new(connect("tags")),
        TypedCache::new(connect("tags")),
    );
    for i in 0..1000u32 {
        writer
            .set_tagged(&format!("item:{i}"), &i, minutes(5), &["catalog"])
            .unwrap();
    }
    assert_eq!(reader.get::<u32>("item:999").unwrap(), Some(999));
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let writes = |admin: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(admin).unwrap();
        let calls = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(&format!("cmdstat_{name}:calls=")))
                .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ["set", "del", "unlink", "mset", "eval", "evalsha", "exec"]
            .iter()
            .map(|name| calls(name))
            .sum()
    };
    let before = writes(&mut admin);
    writer.invalidate_tag("catalog").unwrap();
    assert_eq!(
        writes(&mut admin) - before,
        1,
        "one write for a thousand entries"
    );
    for i in [0, 500, 999] {
        assert_eq!(reader.get::<u32>(&format!("item:{i}")).unwrap(), None);
    }

    // A bulk read of tagged entries reads all their tags at once: two MGETs for 100 entries
    // carrying 5 distinct tags, not one per entry.
    let keys: Vec<String> = (0..100).map(|i| format!("bulk:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let tag = format!("shelf:{}", i % 5);
        writer
            .set_tagged(key, &(i as u32), minutes(5), &[&tag, "bulk"])
            .unwrap();
    }
    writer.invalidate_tag("shelf:0").unwrap();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mgets = |admin: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(admin).unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("cmdstat_mget:calls="))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = mgets(&mut admin);
    let got: Vec<Option<u32>> = reader.get_many(&refs).unwrap();
    assert_eq!(
        mgets(&mut admin) - before,
        2,
        "one MGET for the values, one for their tags"
    );
    for (i, value) in got.iter().enumerate() {
        let expected = (i % 5 != 0).then_some(i as u32);
        assert_eq!(*value, expected, "entry {i}");
    }
}

#[test]
fn over_memcached() {
    let Some(server) = TestServer::shared(ServerKind::Memcached) else {
        return;
    };
    let engine = cache_memcached::MemcachedEngine::builder()
        .server(server.url())
        .namespace("tags")
        .build()
        .unwrap();
    invalidation_works_on(&TypedCache::new(engine));
}

#[test]
fn malformed_tag_headers_are_misses_or_strict_errors() {
    let engine = InMemoryEngine::new();
    let cache = TypedCache::new(engine.clone());
    cache.set_tagged("k", &1u32, minutes(5), &["t"]).unwrap();
    let whole = engine.get("k").unwrap().unwrap();
    // Cut inside the tag header.
    engine.set("k", whole.slice(..6), minutes(5)).unwrap();
    assert_eq!(cache.get::<u32>("k").unwrap(), None);
    assert_eq!(cache.stats().decode_failures, 1);
    let strict = TypedCache::builder(engine.clone())
        .strict(true)
        .build()
        .unwrap();
    assert!(matches!(
        strict.get::<u32>("k"),
        Err(CacheError::Serialization { .. })
    ));
    // Bad tags are typed errors that write nothing.
    for bad in [&["has space"][..], &[""][..], &["x"; 33][..]] {
        assert!(
            cache.set_tagged("other", &1u32, minutes(5), bad).is_err(),
            "{bad:?}"
        );
    }
    assert!(!cache.exists("other").unwrap());
    // The core API reads what the typed layer wrote, and the other way round.
    engine
        .set_tagged("raw", cache.encode(&5u32).unwrap(), minutes(5), &["t"])
        .unwrap();
    assert_eq!(cache.get::<u32>("raw").unwrap(), Some(5));
    cache.invalidate_tag("t").unwrap();
    assert_eq!(engine.get_tagged("raw").unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_face() {
    let cache = AsyncTypedCache::new(InMemoryEngine::new());
    cache
        .set_tagged("a", &1u32, minutes(5), &["t"])
        .await
        .unwrap();
    let b: u32 = cache
        .entry("b")
        .ttl(minutes(5))
        .tags(&["t", "u"])
        .or_load(|| async { 2 })
        .await
        .unwrap();
    assert_eq!(b, 2);
    assert_eq!(cache.get::<u32>("b").await.unwrap(), Some(2));
    cache.invalidate_tag("u").await.unwrap();
    assert_eq!(cache.get::<u32>("a").await.unwrap(), Some(1));
    assert_eq!(cache.get::<u32>("b").await.unwrap(), None);
    cache.invalidate_tag("t").await.unwrap();
    assert_eq!(
        cache.get_many::<u32>(&["a", "b"]).await.unwrap(),
        vec![None, None]
    );
    assert_eq!(cache.stats().tag_misses, 3);
}
