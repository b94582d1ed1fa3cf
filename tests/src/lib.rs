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
pub mod faults;
pub mod grpc;
pub mod load;
pub mod metrics;
pub mod otlp;
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

/// An HTTPS client that trusts only the PEM CA at `ca`. Each call makes a
/// new client, so no pooled connection outlives a certificate reload.
pub fn https_client(ca: &std::path::Path) -> reqwest::Client {
    memtrace_common::tls::install_crypto_provider();
    let pem = std::fs::read(ca).expect("the test CA file");
    let ca = reqwest::Certificate::from_pem(&pem).expect("a PEM certificate");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("an https client")
}

/// [`https_client`] when a CA is given, else [`http_client`].
pub fn client_for(ca: Option<&std::path::Path>) -> reqwest::Client {
    ca.map_or_else(http_client, https_client)
}
