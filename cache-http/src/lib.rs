//! HTTP response caching for tower (work in progress).
#![deny(missing_docs)]
#![forbid(unsafe_code)]
