//! `memtrace-data-plane` owns the stateless worker. Today: the published-state
//! [`snapshot`] (watched from the state bus, swapped atomically, validated
//! record by record, with a last-known-good file) and the worker's
//! [`registration`] under a lease, and agent [`auth`]entication against the
//! snapshot. Next: the memtrace-compatible REST and `memtrace.v1` gRPC APIs,
//! per-tenant batching into Arc, and reads.

pub mod auth;
pub mod registration;
pub mod snapshot;
