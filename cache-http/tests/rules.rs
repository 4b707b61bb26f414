//! Every caching rule, through a real axum server and a real HTTP client, over an
//! `InMemoryEngine` and over an `AsyncRedisEngine` on a real Redis.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::time::Duration;

use cache_http::HttpCacheBuilder;
use common::{App, Backend, Engine, pattern};
use reqwest::Method;

macro_rules! on_every_engine {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::Backend::Memory).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::Backend::Redis).await
                }
            )*
        }
    };
}

on_every_engine!(
    a_fresh_response_is_served_from_the_cache,
    what_a_shared_cache_must_not_store_is_never_served_again,
    max_age_expires,
    s_maxage_takes_precedence_over_max_age,
    vary_gives_each_variant_its_own_response,
    vary_star_is_never_stored,
    authorization_is_cached_only_when_the_response_allows_it,
    statuses_are_stored_as_rfc_9111_says,
    last_modified_gives_heuristic_freshness,
    no_explicit_freshness_needs_a_default_ttl,
    upstream_age_and_expires_count,
    large_bodies_stream_through_whole_and_uncached,
    concurrent_misses_reach_the_handler_once,
    other_methods_pass_through_and_unsafe_ones_invalidate,
    head_is_served_from_a_cached_get,
    request_directives_are_honoured,
    key_headers_separate_entries,
    conditional_requests_are_answered_not_modified_from_the_cache,
    stale_responses_with_validators_are_revalidated,
    no_cache_responses_are_stored_and_revalidated_every_time,
    stale_if_error_serves_the_stored_response_when_the_origin_fails,
    stale_while_revalidate_serves_stale_and_refreshes_in_the_background,
    max_stale_requests_accept_stale_responses,
    qualified_no_cache_and_private_store_the_rest,
    cdn_cache_control_decides_for_this_cache,
    expires_dates_are_read_leniently_but_not_guessed,
    ranges_are_served_from_a_stored_complete_response,
    must_understand_stores_known_statuses_despite_no_store,
);

async fn a_fresh_response_is_served_from_the_cache(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let target = "/fresh?cc=max-age=60";
    let first = app.get(target).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(
        first.header("age"),
        None,
        "a response from the handler has no Age"
    );
    assert_eq!(
        first.header("cache-status"),
        Some("cache-toolkit; fwd=uri-miss; stored")
    );
    let second = app.get(target).await;
    assert!(second.hit(), "{second:?}");
    assert_eq!(second.body, first.body);
    let status = second.header("cache-status").unwrap();
    let ttl: u64 = status
        .strip_prefix("cache-toolkit; hit; ttl=")
        .unwrap_or_else(|| panic!("{status}"))
        .parse()
        .unwrap();
    assert!((50..=60).contains(&ttl), "{status}");
    assert_eq!(second.header("cache-control"), Some("max-age=60"));
    let age = second.age().expect("a hit carries Age");
    assert!(age <= 2, "age {age}");
    assert_eq!(app.calls("GET", target), 1);
    // Another query is another resource.
    let other = app.get("/fresh?cc=max-age=60&x=1").await;
    assert!(!other.hit());
    let stats = app.layer.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.stores),
        (1, 2, 2),
        "{stats:?}"
    );
    assert_eq!(stats.engine_errors, 0);
    // A cache nearer the origin keeps its entry, first.
    let behind = "/fresh?cc=max-age=60&upstream_status=origin-cache%3B%20hit";
    let miss = app.get(behind).await;
    let entries: Vec<&str> = miss
        .headers
        .get_all("cache-status")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        entries,
        ["origin-cache; hit", "cache-toolkit; fwd=uri-miss; stored"]
    );
    let hit = app.get(behind).await;
    let entries: Vec<&str> = hit
        .headers
        .get_all("cache-status")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(entries[0], "origin-cache; hit");
    assert!(
        entries[1].starts_with("cache-toolkit; hit; ttl="),
        "{entries:?}"
    );
}

async fn what_a_shared_cache_must_not_store_is_never_served_again(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    for target in [
        "/never?cc=no-store",
        "/never?cc=no-store,max-age=60",
        "/never?cc=private,max-age=60",
        "/never?cc=max-age=60&cookie=1",
        "/never?cc=max-age=abc",
    ] {
        for _ in 0..2 {
            let reply = app.get(target).await;
            assert_eq!(reply.status, 200);
            assert!(!reply.hit(), "{target}");
        }
        assert_eq!(app.calls("GET", target), 2, "{target}");
    }
    // The Set-Cookie reached the client all the same.
    let reply = app.get("/never?cc=max-age=60&cookie=1").await;
    assert_eq!(reply.header("set-cookie"), Some("session=abc"));
    assert_eq!(app.layer.stats().stores, 0);
}

async fn max_age_expires(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let target = "/short?cc=max-age=1";
    assert!(!app.get(target).await.hit());
    assert!(app.get(target).await.hit());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = app.get(target).await;
    assert!(!after.hit(), "expired after max-age");
    assert!(after.text().starts_with("call 2 "));
    assert_eq!(app.calls("GET", target), 2);
}

async fn s_maxage_takes_precedence_over_max_age(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    // A shared cache keeps it for s-maxage, not max-age.
    let short = "/smax?cc=max-age=60,s-maxage=1";
    assert!(!app.get(short).await.hit());
    assert!(app.get(short).await.hit());
    let long = "/smax?cc=max-age=0,s-maxage=60";
    assert!(!app.get(long).await.hit());
    assert!(app.get(long).await.hit(), "s-maxage=60 wins over max-age=0");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !app.get(short).await.hit(),
        "s-maxage=1 wins over max-age=60"
    );
    assert!(app.get(long).await.hit());
    assert_eq!(app.calls("GET", short), 2);
    assert_eq!(app.calls("GET", long), 1);
}

async fn vary_gives_each_variant_its_own_response(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let target = "/vary?cc=max-age=60&vary=accept-language";
    let en = app.get_with(target, &[("accept-language", "en")]).await;
    assert!(en.text().contains("lang=en"));
    let fr = app.get_with(target, &[("accept-language", "fr")]).await;
    assert!(
        !fr.hit(),
        "another value of a varied header is another variant"
    );
    assert!(fr.text().contains("lang=fr"));
    // A header the response does not vary on is shared.
    let en_again = app
        .get_with(target, &[("accept-language", "en"), ("x-other", "2")])
        .await;
    assert!(en_again.hit());
    assert_eq!(en_again.body, en.body);
    let fr_again = app.get_with(target, &[("accept-language", "fr")]).await;
    assert!(fr_again.hit());
    assert_eq!(fr_again.body, fr.body);
    // No accept-language at all is a variant of its own.
    let none = app.get(target).await;
    assert!(!none.hit());
    assert!(none.text().contains("lang=-"));
    assert!(app.get(target).await.hit());
    assert_eq!(app.calls("GET", target), 3);
    assert_eq!(en_again.header("vary"), Some("accept-language"));
    // Whitespace and case do not make another variant; order does.
    let list = "/vary-list?cc=max-age=60&vary=accept-language";
    app.get_with(list, &[("accept-language", "en, de")]).await;
    let spaced = app.get_with(list, &[("accept-language", " EN ,de ")]).await;
    assert!(spaced.hit());
    let reordered = app.get_with(list, &[("accept-language", "de, en")]).await;
    assert!(!reordered.hit());
    // A reload of one variant (a request that skips the cache) keeps the others.
    let reloaded = app
        .get_with(
            target,
            &[("accept-language", "en"), ("cache-control", "no-cache")],
        )
        .await;
    assert!(!reloaded.hit());
    assert_eq!(app.calls("GET", target), 4);
    assert!(
        app.get_with(target, &[("accept-language", "fr")])
            .await
            .hit(),
        "reloading the en variant hid the fr one"
    );
    assert!(
        app.get_with(target, &[("accept-language", "en")])
            .await
            .hit()
    );
    assert_eq!(app.calls("GET", target), 4);
}

async fn vary_star_is_never_stored(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let target = "/star?cc=max-age=60&vary=*";
    assert!(!app.get(target).await.hit());
    assert!(!app.get(target).await.hit());
    assert_eq!(app.calls("GET", target), 2);
}

async fn authorization_is_cached_only_when_the_response_allows_it(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];

    // max-age alone does not allow a shared cache to reuse an authorized response.
    let plain = "/auth?cc=max-age=60";
    assert!(
        app.get_with(plain, &alice)
            .await
            .text()
            .contains("user=Bearer alice")
    );
    let again = app.get_with(plain, &alice).await;
    assert!(!again.hit());
    let anonymous = app.get(plain).await;
    assert!(
        !anonymous.hit(),
        "alice's response was not stored for anyone"
    );
    assert!(anonymous.text().contains("user=-"));
    assert_eq!(app.calls("GET", plain), 3);

    // public and s-maxage say it is shareable: any request may get it.
    for target in ["/auth?cc=public,max-age=60", "/auth?cc=s-maxage=60"] {
        let first = app.get_with(target, &alice).await;
        assert!(first.text().contains("user=Bearer alice"));
        let for_bob = app.get_with(target, &bob).await;
        assert!(for_bob.hit(), "{target}: shareable by the origin's word");
        assert_eq!(for_bob.body, first.body);
        assert!(app.get(target).await.hit());
        assert_eq!(app.calls("GET", target), 1, "{target}");
    }

    // must-revalidate allows reuse; here only for the same credentials.
    let own = "/auth?cc=must-revalidate,max-age=60";
    let first = app.get_with(own, &alice).await;
    let again = app.get_with(own, &alice).await;
    assert!(again.hit());
    assert_eq!(again.body, first.body);
    let for_bob = app.get_with(own, &bob).await;
    assert!(!for_bob.hit(), "never alice's response for bob");
    assert!(for_bob.text().contains("user=Bearer bob"));
    assert!(app.get_with(own, &bob).await.hit());
    let anonymous = app.get(own).await;
    assert!(!anonymous.hit(), "nor for a request without credentials");
    assert!(anonymous.text().contains("user=-"));
    assert_eq!(app.calls("GET", own), 3);

    // Unless the layer is told to share them, as RFC 9111 section 3.5 allows.
    let Some(app) = App::start(backend, |b| b.share_must_revalidate(true)).await else {
        return;
    };
    let first = app.get_with(own, &alice).await;
    let anonymous = app.get(own).await;
    assert!(anonymous.hit());
    assert_eq!(anonymous.body, first.body);
}

async fn statuses_are_stored_as_rfc_9111_says(backend: Backend) {
    // By default, only the heuristically cacheable statuses.
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    for (status, stored) in [(200, true), (404, true), (302, false), (500, false)] {
        let target = format!("/status?cc=max-age=60&status={status}");
        app.get(&target).await;
        assert_eq!(app.get(&target).await.hit(), stored, "{status}");
    }
    drop(app);
    let Some(app) = App::start(backend, |b| b.reverse_proxy()).await else {
        return;
    };
    for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
        let target = format!("/status?cc=max-age=60&status={status}");
        let first = app.get(&target).await;
        assert_eq!(first.status, status);
        let second = app.get(&target).await;
        assert!(second.hit(), "{status} is stored");
        assert_eq!(second.status, status);
        assert_eq!(second.body, first.body);
    }
    // Any other final status only with explicit freshness (RFC 9111 section 3)...
    for status in [201, 302, 307, 400, 403, 500, 503, 599] {
        let target = format!("/status?cc=max-age=60&status={status}");
        app.get(&target).await;
        let second = app.get(&target).await;
        assert!(second.hit(), "{status} with max-age is stored");
        assert_eq!(second.status, status);
        let heuristic = format!("/status?modified_ago=36000&status={status}");
        app.get(&heuristic).await;
        assert!(
            !app.get(&heuristic).await.hit(),
            "{status} is not heuristically cacheable"
        );
    }
    // ... unless marked public.
    let public = "/status?modified_ago=36000&status=599&cc=public";
    app.get(public).await;
    assert!(app.get(public).await.hit());
    // Partial content is never stored.
    let partial = "/status?cc=max-age=60&status=206";
    app.get(partial).await;
    assert!(!app.get(partial).await.hit());
    assert_eq!(app.calls("GET", partial), 2);
}

async fn last_modified_gives_heuristic_freshness(backend: Backend) {
    let Some(app) = App::start(backend, |b| b.heuristic_freshness(true)).await else {
        return;
    };
    // Modified ten hours ago: fresh for an hour.
    let target = "/heuristic?modified_ago=36000";
    app.get(target).await;
    let hit = app.get(target).await;
    assert!(hit.hit());
    assert_eq!(app.calls("GET", target), 1);
    drop(app);

    for configure in [
        (|b| b) as fn(HttpCacheBuilder<Engine>) -> HttpCacheBuilder<Engine>,
        |b| b.reverse_proxy().heuristic_freshness(false),
    ] {
        let Some(app) = App::start(backend, configure).await else {
            return;
        };
        app.get(target).await;
        assert!(
            !app.get(target).await.hit(),
            "off by default, or turned off"
        );
    }
}

async fn no_explicit_freshness_needs_a_default_ttl(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    app.get("/plain").await;
    assert!(
        !app.get("/plain").await.hit(),
        "no freshness, no default: not stored"
    );
    drop(app);

    let Some(app) = App::start(backend, |b| b.default_ttl(Duration::from_secs(60))).await else {
        return;
    };
    app.get("/plain").await;
    assert!(app.get("/plain").await.hit(), "stored for the default TTL");
    app.get("/plain?status=404").await;
    assert!(app.get("/plain?status=404").await.hit());
    // Explicit freshness still wins over the default.
    app.get("/plain?cc=max-age=0").await;
    assert!(!app.get("/plain?cc=max-age=0").await.hit());
    app.get("/plain?cc=no-store").await;
    assert!(!app.get("/plain?cc=no-store").await.hit());
}

async fn upstream_age_and_expires_count(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    // An Age from upstream is part of the age, and of the TTL: 60 - 30 s left.
    let aged = "/aged?cc=max-age=60&age=30";
    app.get(aged).await;
    let hit = app.get(aged).await;
    assert!(hit.hit());
    let age = hit.age().unwrap();
    assert!((30..=32).contains(&age), "age {age}");
    // Older than its max-age already: not stored.
    let stale = "/aged?cc=max-age=60&age=100";
    app.get(stale).await;
    assert!(!app.get(stale).await.hit());
    // A list or a parameter does not make an old response new (RFC 9111 section 5.1: the first
    // member counts), while a value that is no number is ignored.
    for stale in [
        "/aged?cc=max-age=60&age=100,%200",
        "/aged?cc=max-age=60&age=100%3Bfoo=bar",
    ] {
        app.get(stale).await;
        assert!(!app.get(stale).await.hit(), "{stale}");
    }
    let ignored = "/aged?cc=max-age=60&age=abc";
    app.get(ignored).await;
    let hit = app.get(ignored).await;
    assert!(hit.hit());
    assert!(hit.age().unwrap() <= 2);
    // Expires counts from Date when there is no max-age.
    let expires = "/expires?expires_in=60";
    app.get(expires).await;
    assert!(app.get(expires).await.hit());
    let past = "/expires?expires_in=-10";
    app.get(past).await;
    assert!(!app.get(past).await.hit());
    // max-age takes precedence over Expires.
    let both = "/expires?expires_in=60&cc=max-age=0";
    app.get(both).await;
    assert!(!app.get(both).await.hit());
}

async fn large_bodies_stream_through_whole_and_uncached(backend: Backend) {
    let Some(app) = App::start(backend, |b| b.max_body_size(64 * 1024)).await else {
        return;
    };
    // Streamed without a length: read up to the limit, then streamed on.
    let streamed = "/big?size=300000&cc=max-age=60";
    for _ in 0..2 {
        let reply = app.get(streamed).await;
        assert_eq!(reply.status, 200);
        assert!(!reply.hit());
        assert_eq!(reply.body.len(), 300_000);
        assert!(reply.body == pattern(300_000), "the body arrives intact");
    }
    assert_eq!(app.calls("GET", streamed), 2);
    // Announced as larger than the limit: streamed from the start.
    let announced = "/big?size=300000&cc=max-age=60&exact=1";
    for _ in 0..2 {
        let reply = app.get(announced).await;
        assert!(reply.body == pattern(300_000));
        assert_eq!(reply.header("content-length"), Some("300000"));
    }
    assert_eq!(app.calls("GET", announced), 2);
    assert_eq!(app.layer.stats().too_large, 4);
    // Under the limit, in several chunks: stored whole.
    let fits = "/big?size=60000&cc=max-age=60";
    app.get(fits).await;
    let hit = app.get(fits).await;
    assert!(hit.hit());
    assert!(hit.body == pattern(60_000));
    assert_eq!(hit.header("content-length"), Some("60000"));
    drop(app);

    // The default limit is 1 MiB: a 3 MiB body streams through.
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let large = "/big?size=3145728&cc=max-age=60";
    for _ in 0..2 {
        let reply = app.get(large).await;
        assert!(!reply.hit());
        assert!(reply.body == pattern(3 << 20));
    }
    let fits = "/big?size=1000000&cc=max-age=60";
    app.get(fits).await;
    let hit = app.get(fits).await;
    assert!(hit.hit());
    assert!(hit.body == pattern(1_000_000));
}

async fn concurrent_misses_reach_the_handler_once(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let app = std::sync::Arc::new(app);
    let target = "/slow?cc=max-age=60&sleep_ms=500";
    let requests: Vec<_> = (0..16)
        .map(|_| {
            let app = std::sync::Arc::clone(&app);
            tokio::spawn(async move { app.get(target).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200);
        bodies.push(reply.body);
    }
    assert_eq!(app.calls("GET", target), 1, "one call for 16 requests");
    assert!(bodies.iter().all(|body| *body == bodies[0]));
    let stats = app.layer.stats();
    assert_eq!(stats.misses, 1, "{stats:?}");
    assert_eq!(stats.coalesced + stats.hits, 15, "{stats:?}");
    assert!(stats.coalesced >= 1, "{stats:?}");

    // Concurrent requests for a response that may not be stored each reach the handler, and
    // none waits for long: after the first one's, the others ask at once.
    let private = "/slow?cc=private&sleep_ms=300";
    let started = std::time::Instant::now();
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let app = std::sync::Arc::clone(&app);
            tokio::spawn(async move { app.get(private).await })
        })
        .collect();
    for request in requests {
        assert!(!request.await.unwrap().hit());
    }
    assert_eq!(app.calls("GET", private), 8);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

async fn other_methods_pass_through_and_unsafe_ones_invalidate(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let target = "/things?cc=max-age=60";
    for _ in 0..2 {
        let reply = app.send(Method::POST, target, &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-cache"), None, "not a cache matter");
        assert!(reply.text().contains("of POST"));
    }
    assert_eq!(app.calls("POST", target), 2);
    for _ in 0..2 {
        app.send(Method::OPTIONS, target, &[]).await;
    }
    assert_eq!(app.calls("OPTIONS", target), 2);

    // A successful POST to a cached URI removes its entry (RFC 9111 section 4.4).
    app.get(target).await;
    assert!(app.get(target).await.hit());
    app.send(Method::POST, target, &[]).await;
    let after = app.get(target).await;
    assert!(!after.hit(), "invalidated by the POST");
    assert!(app.get(target).await.hit());
    // ... with its variants.
    let varied = "/things?cc=max-age=60&vary=accept-language";
    let fr = [("accept-language", "fr")];
    app.get_with(varied, &fr).await;
    assert!(app.get_with(varied, &fr).await.hit());
    app.send(Method::DELETE, varied, &[]).await;
    app.get(varied).await;
    assert!(!app.get_with(varied, &fr).await.hit(), "variants go too");
    // A failed one does not.
    let failing = "/things?cc=max-age=60&status=404";
    app.get(failing).await;
    app.send(Method::PUT, "/things?cc=max-age=60&status=404", &[])
        .await;
    assert!(
        app.get(failing).await.hit(),
        "an error response invalidates nothing"
    );
    let stats = app.layer.stats();
    assert_eq!(stats.passed, 7, "{stats:?}");
    assert!(stats.invalidations >= 2, "{stats:?}");
}

async fn head_is_served_from_a_cached_get(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let target = "/head?cc=max-age=60";
    let get = app.get(target).await;
    let head = app.send(Method::HEAD, target, &[]).await;
    assert!(head.hit());
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    assert_eq!(app.calls("HEAD", target), 0);
    assert_eq!(app.calls("GET", target), 1);
    // A HEAD miss reaches the handler and stores nothing a GET could use.
    let fresh = "/head?cc=max-age=60&x=2";
    let head = app.send(Method::HEAD, fresh, &[]).await;
    assert!(!head.hit());
    assert_eq!(app.calls("HEAD", fresh), 1);
    let get = app.get(fresh).await;
    assert!(!get.hit());
    assert!(!get.body.is_empty());
}

async fn request_directives_are_honoured(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let target = "/req?cc=max-age=60";
    app.get(target).await;
    assert!(app.get(target).await.hit());
    // no-cache (and max-age=0) reach the handler, and their response replaces the stored one.
    for directive in ["no-cache", "max-age=0"] {
        let reload = app.get_with(target, &[("cache-control", directive)]).await;
        assert!(!reload.hit(), "{directive}");
        assert_eq!(
            reload.header("cache-status"),
            Some("cache-toolkit; fwd=request; stored"),
            "{directive}"
        );
        let next = app.get(target).await;
        assert!(next.hit());
        assert_eq!(next.body, reload.body, "{directive}: the reload was stored");
    }
    assert_eq!(app.calls("GET", target), 3);
    // max-age=N refuses older responses; min-fresh those expiring sooner.
    let aged = "/req?cc=max-age=60&age=30";
    app.get(aged).await;
    assert!(
        !app.get_with(aged, &[("cache-control", "max-age=10")])
            .await
            .hit()
    );
    assert!(
        app.get_with(aged, &[("cache-control", "max-age=59")])
            .await
            .hit()
    );
    assert!(
        !app.get_with(aged, &[("cache-control", "min-fresh=50")])
            .await
            .hit()
    );
    assert!(
        app.get_with(aged, &[("cache-control", "min-fresh=5")])
            .await
            .hit()
    );
    // no-store: served from the cache if there, its own response never stored.
    let fresh = "/req?cc=max-age=60&x=no-store";
    let no_store = [("cache-control", "no-store")];
    assert!(!app.get_with(fresh, &no_store).await.hit());
    assert!(
        !app.get(fresh).await.hit(),
        "the no-store request's response was not stored"
    );
    assert!(app.get_with(fresh, &no_store).await.hit());
    // only-if-cached: 504 on a miss, without reaching the handler.
    let absent = "/req?cc=max-age=60&x=absent";
    let reply = app
        .get_with(absent, &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(reply.status, 504);
    assert_eq!(app.calls("GET", absent), 0);
    assert!(
        app.get_with(target, &[("cache-control", "only-if-cached")])
            .await
            .hit()
    );
    drop(app);

    // Turned off, the client's directives change nothing.
    let Some(app) = App::start(backend, |b| b.honour_request_directives(false)).await else {
        return;
    };
    app.get(target).await;
    assert!(
        app.get_with(target, &[("cache-control", "no-cache")])
            .await
            .hit()
    );
    assert_eq!(app.calls("GET", target), 1);
}

async fn key_headers_separate_entries(backend: Backend) {
    let Some(app) = App::start(backend, |b| b.key_headers(["X-Tenant"])).await else {
        return;
    };
    let target = "/tenant?cc=max-age=60";
    let a = app.get_with(target, &[("x-tenant", "a")]).await;
    let b = app.get_with(target, &[("x-tenant", "b")]).await;
    assert!(!b.hit());
    assert!(a.text().contains("tenant=a") && b.text().contains("tenant=b"));
    let a_again = app.get_with(target, &[("x-tenant", "a")]).await;
    assert!(a_again.hit());
    assert_eq!(a_again.body, a.body);
    assert!(
        !app.get(target).await.hit(),
        "no tenant is a key of its own"
    );
    assert_eq!(app.calls("GET", target), 3);
}

async fn conditional_requests_are_answered_not_modified_from_the_cache(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let tagged = "/cond?cc=max-age=60&etag=%22v1%22";
    let first = app.get(tagged).await;
    assert_eq!((first.status, first.header("etag")), (200, Some("\"v1\"")));
    for matching in ["\"v1\"", "W/\"v1\"", "\"v0\", \"v1\"", "*"] {
        let reply = app.get_with(tagged, &[("if-none-match", matching)]).await;
        assert_eq!(reply.status, 304, "{matching}");
        assert!(reply.hit(), "{matching}");
        assert!(reply.body.is_empty());
        assert_eq!(reply.header("etag"), Some("\"v1\""));
        assert_eq!(reply.header("cache-control"), Some("max-age=60"));
        assert!(reply.age().is_some());
    }
    // Another tag: the whole response, still from the cache.
    let other = app.get_with(tagged, &[("if-none-match", "\"v2\"")]).await;
    assert_eq!(other.status, 200);
    assert!(other.hit());
    assert_eq!(other.body, first.body);
    let head = app
        .send(Method::HEAD, tagged, &[("if-none-match", "\"v1\"")])
        .await;
    assert_eq!(head.status, 304);
    assert_eq!(app.calls("GET", tagged), 1);

    let dated = "/cond?cc=max-age=60&modified_ago=3600";
    app.get(dated).await;
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    let long_ago =
        httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(7200));
    let since_now = app.get_with(dated, &[("if-modified-since", &now)]).await;
    assert_eq!(since_now.status, 304);
    assert!(since_now.header("last-modified").is_some());
    let since_before = app
        .get_with(dated, &[("if-modified-since", &long_ago)])
        .await;
    assert_eq!(since_before.status, 200);
    assert!(since_before.hit());
    // If-None-Match wins over If-Modified-Since.
    let both = app
        .get_with(
            tagged,
            &[("if-none-match", "\"v2\""), ("if-modified-since", &now)],
        )
        .await;
    assert_eq!(both.status, 200);
    assert_eq!(app.calls("GET", dated), 1);
}

/// Waits past a one-second freshness lifetime.
async fn outlive_one_second() {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
}

async fn stale_responses_with_validators_are_revalidated(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    for target in [
        "/reval?cc=max-age=1&etag=%22v1%22",
        "/reval?cc=max-age=1&last_modified=1700000000",
    ] {
        let first = app.get(target).await;
        assert_eq!(first.header("x-call"), Some("1"));
        assert!(app.get(target).await.hit());
        outlive_one_second().await;
        let revalidated = app.get(target).await;
        assert_eq!(revalidated.status, 200, "{target}");
        assert_eq!(
            revalidated.body, first.body,
            "the stored body, not sent again"
        );
        assert_eq!(
            revalidated.header("x-call"),
            Some("2"),
            "headers updated from the 304"
        );
        assert_eq!(
            revalidated.header("cache-status"),
            Some("cache-toolkit; fwd=stale; fwd-status=304; stored"),
            "{target}"
        );
        assert_eq!(app.calls("GET", target), 2);
        // Fresh again for its lifetime, from the 304's time.
        let hit = app.get(target).await;
        assert!(hit.hit(), "{hit:?}");
        assert_eq!(hit.header("x-call"), Some("2"));
        assert_eq!(app.calls("GET", target), 2);
        // A client's own precondition is answered from the revalidated response.
        outlive_one_second().await;
        let validators = [
            ("if-none-match", "\"v1\""),
            ("if-modified-since", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ];
        let own = if target.contains("etag") {
            &validators[..1]
        } else {
            &validators[1..]
        };
        let not_modified = app.get_with(target, own).await;
        assert_eq!(not_modified.status, 304, "{target}");
        assert!(not_modified.body.is_empty());
        assert_eq!(app.calls("GET", target), 3);
    }
    let stats = app.layer.stats();
    assert_eq!(
        (stats.revalidations, stats.revalidated),
        (4, 4),
        "{stats:?}"
    );

    // A changed resource answers the conditional request in full: that is stored.
    let target = "/reval-changed?cc=max-age=1&etag=%22v1%22";
    app.get(target).await;
    outlive_one_second().await;
    let changed = app.get("/reval-changed?cc=max-age=1&etag=%22v1%22").await;
    assert_eq!(changed.header("x-call"), Some("2"));
    drop(app);

    // Without keep_stale, responses are dropped when their freshness ends.
    let Some(app) = App::start(backend, |b| b.keep_stale(Duration::ZERO)).await else {
        return;
    };
    let target = "/reval-none?cc=max-age=1&etag=%22v1%22";
    app.get(target).await;
    outlive_one_second().await;
    let refetched = app.get(target).await;
    assert_eq!(
        refetched.header("cache-status"),
        Some("cache-toolkit; fwd=uri-miss; stored")
    );
    assert_eq!(app.layer.stats().revalidations, 0);
}

async fn no_cache_responses_are_stored_and_revalidated_every_time(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let target = "/no-cache?cc=no-cache,max-age=60&etag=%22n%22";
    let first = app.get(target).await;
    for call in 2..5 {
        let reply = app.get(target).await;
        assert_eq!(reply.body, first.body);
        assert_eq!(reply.header("x-call"), Some(call.to_string().as_str()));
        assert!(
            reply
                .header("cache-status")
                .unwrap()
                .contains("fwd-status=304")
        );
    }
    assert_eq!(app.calls("GET", target), 4, "every request revalidated");
    // No freshness at all: stored all the same, to be revalidated.
    let target = "/no-cache?cc=no-cache&etag=%22m%22";
    let first = app.get(target).await;
    let second = app.get(target).await;
    assert_eq!(second.body, first.body);
    assert!(
        second
            .header("cache-status")
            .unwrap()
            .contains("fwd-status=304")
    );
    // Without a validator, every request gets the whole response.
    let target = "/no-cache?cc=no-cache,max-age=60";
    app.get(target).await;
    let second = app.get(target).await;
    assert!(second.text().starts_with("call 2 "));
}

async fn stale_if_error_serves_the_stored_response_when_the_origin_fails(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    // The origin fails from its second call on.
    let allowed = "/sie?cc=max-age=1,stale-if-error=60&fail_after=1";
    let forbidden = "/sie?cc=max-age=1,stale-if-error=60,must-revalidate&fail_after=1";
    let plain = "/sie?cc=max-age=1&etag=%22p%22&fail_after=1";
    for target in [allowed, forbidden, plain] {
        app.get(target).await;
    }
    outlive_one_second().await;
    let stale = app.get(allowed).await;
    assert_eq!(stale.status, 200);
    assert!(stale.text().starts_with("call 1 "));
    assert_eq!(
        stale.header("cache-status"),
        Some("cache-toolkit; fwd=stale; fwd-status=503")
    );
    assert_eq!(app.get(forbidden).await.status, 503, "must-revalidate");
    assert_eq!(app.get(plain).await.status, 503, "not allowed by default");
    assert_eq!(app.layer.stats().stale_served, 1);
    drop(app);

    // The layer's setting allows it for responses that do not forbid it.
    let Some(app) = App::start(backend, |b| b.serve_stale_on_error(Duration::from_secs(60))).await
    else {
        return;
    };
    app.get(plain).await;
    app.get(forbidden).await;
    outlive_one_second().await;
    let stale = app.get(plain).await;
    assert_eq!(stale.status, 200);
    assert!(stale.text().starts_with("call 1 "));
    assert_eq!(app.get(forbidden).await.status, 503);
}

async fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let target = "/swr?cc=max-age=1,stale-while-revalidate=60";
    app.get(target).await;
    outlive_one_second().await;
    let stale = app.get(target).await;
    assert!(stale.hit());
    assert!(stale.text().starts_with("call 1 "), "served stale at once");
    let ttl = stale.header("cache-status").unwrap();
    assert!(ttl.contains("; hit; ttl=-"), "{ttl}");
    // The background revalidation stores the new response.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = app.get(target).await;
        if reply.text().starts_with("call 2 ") {
            assert!(reply.hit());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.calls("GET", target), 2, "one revalidation");
}

async fn max_stale_requests_accept_stale_responses(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let target = "/max-stale?cc=max-age=1&etag=%22m%22";
    let forbidden = "/max-stale?cc=max-age=1,must-revalidate&etag=%22m%22";
    app.get(target).await;
    app.get(forbidden).await;
    outlive_one_second().await;
    let any = [("cache-control", "max-stale")];
    let stale = app.get_with(target, &any).await;
    assert!(stale.hit() && stale.header("x-call") == Some("1"));
    let too_stale = app
        .get_with(target, &[("cache-control", "max-stale=0")])
        .await;
    assert_eq!(too_stale.header("x-call"), Some("2"), "revalidated");
    let revalidated = app.get_with(forbidden, &any).await;
    assert_eq!(
        revalidated.header("x-call"),
        Some("2"),
        "must-revalidate wins"
    );
}

async fn qualified_no_cache_and_private_store_the_rest(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    for cc in [
        "max-age=60,private=%22x-secret%22",
        "max-age=60,no-cache=%22x-secret%22",
    ] {
        let target = format!("/qualified?secret=1&cc={cc}");
        let first = app.get(&target).await;
        assert_eq!(first.header("x-secret"), Some("s3cr3t"));
        let hit = app.get(&target).await;
        assert!(hit.hit(), "{cc}");
        assert_eq!(hit.header("x-secret"), None, "{cc}");
        assert_eq!(hit.body, first.body);
    }
}

async fn cdn_cache_control_decides_for_this_cache(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    // CDN-Cache-Control restricts what Cache-Control allows, and is passed on to the client.
    for target in [
        "/cdn?cc=max-age=600&cdn=no-store",
        "/cdn?cc=max-age=600&cdn=private",
        "/cdn?cc=max-age=600&cdn=max-age=0",
    ] {
        let first = app.get(target).await;
        assert!(first.header("cdn-cache-control").is_some(), "{target}");
        assert!(!app.get(target).await.hit(), "{target}");
    }
    // And allows what Cache-Control does not.
    let target = "/cdn?cc=no-store&cdn=max-age=600";
    app.get(target).await;
    assert!(app.get(target).await.hit());
    // An invalid field is ignored.
    let target = "/cdn?cc=no-store&cdn=max-age=600,%20%26%26";
    app.get(target).await;
    assert!(!app.get(target).await.hit());
    // Other names can be configured; then CDN-Cache-Control means nothing to this cache.
    let Some(app) = App::start(backend, |b| {
        b.targeted_cache_control(["Edge-Cache-Control"])
    })
    .await
    else {
        return;
    };
    let target = "/cdn?cc=max-age=600&cdn=no-store";
    app.get(target).await;
    assert!(app.get(target).await.hit());
}

async fn expires_dates_are_read_leniently_but_not_guessed(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    for expires in [
        "THU,%2018%20AUG%202050%2002:01:18%20gmt",
        "Mon,%2018%20Aug%202050%2002:01:18%20GMT",
        "Thu%20Aug%20%208%2002:01:18%202050",
    ] {
        let target = format!("/expires?expires={expires}");
        app.get(&target).await;
        assert!(app.get(&target).await.hit(), "{expires}");
    }
    for expires in [
        "Thu,%2018%20Aug%202050%2002:01:18%20UTC",
        "Thu,%2018%20Aug%2050%2002:01:18%20GMT",
        "0",
    ] {
        let target = format!("/expires?expires={expires}");
        app.get(&target).await;
        assert!(!app.get(&target).await.hit(), "{expires}");
    }
}

async fn ranges_are_served_from_a_stored_complete_response(backend: Backend) {
    let Some(app) = App::start(backend, |b| b).await else {
        return;
    };
    let target = "/ranged?cc=max-age=60&etag=%22r%22";
    let whole = app.get(target).await.text();
    let len = whole.len();
    let first = app.get_with(target, &[("range", "bytes=0-3")]).await;
    assert_eq!(first.status, 206);
    assert!(first.hit());
    assert_eq!(first.text(), whole[..4]);
    assert_eq!(
        first.header("content-range"),
        Some(format!("bytes 0-3/{len}").as_str())
    );
    let suffix = app.get_with(target, &[("range", "bytes=-5")]).await;
    assert_eq!(
        (suffix.status, suffix.text()),
        (206, whole[len - 5..].to_owned())
    );
    let past = app.get_with(target, &[("range", "bytes=9999-")]).await;
    assert_eq!(past.status, 416);
    assert_eq!(
        past.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    // Several ranges, or an If-Range for another version: the whole response.
    for headers in [
        [("range", "bytes=0-1,4-5"), ("x-other", "1")],
        [("range", "bytes=0-1"), ("if-range", "\"old\"")],
    ] {
        let reply = app.get_with(target, &headers).await;
        assert_eq!((reply.status, reply.text()), (200, whole.clone()));
    }
    let matching = app
        .get_with(target, &[("range", "bytes=0-1"), ("if-range", "\"r\"")])
        .await;
    assert_eq!(matching.status, 206);
    assert_eq!(
        app.calls("GET", target),
        1,
        "every range came from the cache"
    );
}

async fn must_understand_stores_known_statuses_despite_no_store(backend: Backend) {
    let Some(app) = App::start(backend, |b| b.store_any_status(true)).await else {
        return;
    };
    let known = "/mu?cc=must-understand,no-store,max-age=60";
    app.get(known).await;
    assert!(app.get(known).await.hit());
    // A status whose caching rules this cache does not know: not stored, no-store or not.
    let unknown = "/mu?cc=must-understand,max-age=60&status=299";
    app.get(unknown).await;
    assert!(!app.get(unknown).await.hit());
    assert_eq!(app.calls("GET", unknown), 2);
}
