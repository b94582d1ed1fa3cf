//! `memtrace-data-plane` owns the stateless worker. Today: the published-state
//! [`snapshot`] (watched from the state bus, swapped atomically, validated
//! record by record, with a last-known-good file) and the worker's
//! [`registration`] under a lease, and agent [`auth`]entication against the
//! snapshot, and the [`query`] builder: every read as escaped, validated SQL
//! for Arc (DuckDB) or the embedded SQLite store, and the [`arc`] client:
//! memory batches as columnar MessagePack, written to and read from each
//! tenant's Arc with bounded retries, and [`ingest`]: per-tenant group
//! commit into Arc behind bounded queues, acknowledged only once Arc stored
//! the batch, and the memory [`service`] behind the memtrace-compatible
//! [`rest`] API and the `memtrace.v1` [`grpc`] API.

pub mod arc;
pub mod arc_health;
pub mod auth;
pub mod grpc;
pub mod ingest;
pub mod limits;
pub mod query;
pub mod registration;
pub mod rest;
pub mod service;
pub mod snapshot;
pub mod store;
pub mod worker;
