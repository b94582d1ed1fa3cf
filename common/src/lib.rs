//! `memtrace-common` owns what both memtrace planes share and nothing else:
//! layered configuration loading ([`config`]), telemetry setup
//! ([`telemetry`]), the shutdown signal ([`shutdown`]), the closed set of error
//! codes and their gRPC/HTTP mapping ([`error`]), the AEAD envelopes for stored
//! secrets ([`envelope`]), the formats of API keys and admin tokens
//! ([`credentials`]), base64 key parsing ([`keys`]), id generation ([`ids`])
//! and the TLS provider for HTTP clients ([`tls`]).

pub mod config;
pub mod credentials;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod keys;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
