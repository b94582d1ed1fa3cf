//! `memtrace-control-plane` owns the tenants of memtrace: organizations, their
//! Arc bindings (with envelope-encrypted Arc API keys), data-plane API keys,
//! admin tokens and the master key ring. It serves the gRPC admin API
//! (`memtrace.admin.v1`) and HTTP `/health`/`/ready` on one port, stores its
//! state through sqlx (SQLite by default, PostgreSQL for HA), and is never on
//! the data path.
//!
//! Layout: [`domain`] (the rules), [`store`] (persistence contract and its sqlx
//! backend), [`grpc`] (thin adapters), [`server`] (wiring and lifecycle).

pub mod auth;
pub mod bootstrap;
pub mod clock;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod http;
pub mod secrets;
pub mod server;
mod startup;
pub mod store;

pub use error::ControlPlaneError;
pub use secrets::Secrets;
pub use server::{ServeOptions, serve};
