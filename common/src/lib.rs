//! `memtrace-common` owns what both memtrace planes share and nothing else:
//! layered configuration loading ([`config`]), telemetry setup
//! ([`telemetry`]), the shutdown signal ([`shutdown`]), the closed set of error
//! codes and their gRPC/HTTP mapping ([`error`]), the AEAD envelopes for stored
//! secrets ([`envelope`]) and for secrets in transit to workers ([`fleet`]), the formats of API keys and admin tokens
//! ([`credentials`]), base64 key parsing ([`keys`]), id generation ([`ids`]),
//! TLS ([`tls`]: the provider for HTTP clients, and each plane's server
//! certificate, re-read when it changes), gRPC reflection of what a
//! process serves ([`reflection`]), the state bus between the
//! planes ([`bus`]: etcd, or in-process for a single node) with the layout of
//! the state published on it ([`state`]), and the typed registry of runtime
//! settings with their effective values ([`settings`]).

pub mod backoff;
pub mod bus;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod envelope;
pub mod error;
pub mod fleet;
pub mod ids;
pub mod keys;
pub mod legacy;
pub mod legacy_keys;
pub mod names;
pub mod receipt;
pub mod reflection;
pub mod requests;
pub mod serve;
pub mod settings;
pub mod shutdown;
pub mod signing;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod token;

#[cfg(test)]
mod fuzz_tests;
