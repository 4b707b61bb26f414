//! Parsing helpers for engines' environment variables, so every engine reads them the same way.

use std::time::Duration;

use crate::error::{CacheError, Result};
use crate::ttl::Ttl;

/// Parses a whole number from variable `name`.
///
/// # Errors
///
/// `InvalidConfig` naming the variable.
///
/// ```
/// assert_eq!(cache_core::config::parse_number("N", " 42 ").unwrap(), 42);
/// assert!(cache_core::config::parse_number("N", "many").is_err());
/// ```
pub fn parse_number(name: &str, text: &str) -> Result<u64> {
    text.trim().parse().map_err(|_| {
        CacheError::invalid_config(format!("{name} must be a whole number, got {text:?}"))
    })
}

/// Parses milliseconds from variable `name`.
///
/// # Errors
///
/// `InvalidConfig` naming the variable.
pub fn parse_millis(name: &str, text: &str) -> Result<Duration> {
    parse_number(name, text).map(Duration::from_millis)
}

/// Parses a TTL from variable `name`: `never`, or seconds (fractions allowed).
///
/// # Errors
///
/// `InvalidConfig` naming the variable.
///
/// ```
/// use std::time::Duration;
/// use cache_core::{Ttl, config::parse_ttl};
///
/// assert_eq!(parse_ttl("T", "1.5").unwrap(), Ttl::After(Duration::from_millis(1500)));
/// assert_eq!(parse_ttl("T", "never").unwrap(), Ttl::Never);
/// assert!(parse_ttl("T", "-1").is_err());
/// ```
pub fn parse_ttl(name: &str, text: &str) -> Result<Ttl> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("never") {
        return Ok(Ttl::Never);
    }
    let secs: f64 = text.parse().map_err(|_| {
        CacheError::invalid_config(format!("{name} must be `never` or seconds, got {text:?}"))
    })?;
    Duration::try_from_secs_f64(secs)
        .map(Ttl::After)
        .map_err(|_| CacheError::invalid_config(format!("{name} is out of range: {text:?}")))
}

/// Hides the password of a URL (`scheme://user:password@host/...`, or a `pass=` or
/// `password=` query parameter, as Unix socket URLs carry it) behind `***`.
///
/// ```
/// use cache_core::config::redact_url;
///
/// assert_eq!(redact_url("redis://app:s3cret@host:6379/2"), "redis://app:***@host:6379/2");
/// assert_eq!(redact_url("memcached://host:11211"), "memcached://host:11211");
/// assert_eq!(
///     redact_url("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
///     "redis+unix:///run/redis.sock?db=1&pass=***"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, query)) => (url, Some(query)),
        None => (url, None),
    };
    let mut out = redact_authority(url);
    if let Some(query) = query {
        let hidden: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if matches!(name, "pass" | "password") => format!("{name}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&hidden.join("&"));
    }
    out
}

fn redact_authority(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            let hidden = if credentials.contains(':') {
                ":***"
            } else {
                ""
            };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_string(),
    }
}
