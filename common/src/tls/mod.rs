//! TLS, with rustls and its ring provider everywhere: the provider every
//! process installs for its HTTP clients ([`install_crypto_provider`]: reqwest
//! is compiled without a bundled one), and the server side both planes share
//! ([`server`]: a certificate and key from PEM files, re-read when they
//! change; [`incoming`]: the handshakes in front of the shared serve loop).
//!
//! Plaintext stays the default: Kubernetes deployments often terminate TLS
//! at an ingress or a mesh sidecar, and a certificate a process cannot renew
//! by itself would only add an expiry to watch.

pub mod incoming;
pub mod server;

pub use server::{ServerTls, TlsError, TlsFiles};

/// Installs rustls' ring provider as the process default; idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
