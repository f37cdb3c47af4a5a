#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure
//! The one integration test binary: the sidecar in-process with generated certs,
//! real TLS, against a real local upstream.

mod approvals;
mod audit;
mod dataplane;
mod identity;
mod policy;
mod sessions;
