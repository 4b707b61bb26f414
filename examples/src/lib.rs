//! Runnable examples for cache-toolkit (`cargo run --example quickstart`).
//!
//! This crate also compiles and runs the code blocks of the repository's README as doctests, so
//! the README cannot drift from the API.
#![doc = include_str!("../../README.md")]
#![forbid(unsafe_code)]

pub mod freshness;
pub mod http_proxy;
pub mod observability;
pub mod service;
pub mod two_tiers;
