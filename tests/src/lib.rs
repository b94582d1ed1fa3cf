//! End-to-end test harness for memtrace: this crate owns starting real
//! processes (servers, databases, workers) on loopback, with every port bound
//! to 0 (or probed free) so tests can run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod api;
pub mod arc;
pub mod bench;
pub mod bins;
pub mod cli;
pub mod cluster;
pub mod control_plane;
pub mod etcd;
pub mod grpc;
pub mod load;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod python;
pub mod reflection;
pub mod watchers;
pub mod worker;

/// An HTTP client for tests (installs the process's TLS provider first).
pub fn http_client() -> reqwest::Client {
    memtrace_common::tls::install_crypto_provider();
    reqwest::Client::new()
}
