//! Attribute macros for cache-toolkit (work in progress).
#![deny(missing_docs)]
#![forbid(unsafe_code)]
