//! TLS setup shared by every HTTP client memtrace builds (reqwest is compiled
//! without a bundled crypto provider, so one must be installed per process).

/// Installs rustls' ring provider as the process default; idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
