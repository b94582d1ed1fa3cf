//! `memtrace-data-plane` owns the stateless worker: it authenticates agent
//! requests against the published state it watches ([`snapshot`],
//! [`admission`]), serves the memtrace-compatible [`rest`] API and the
//! `memtrace.v1` [`grpc`] API over one memory [`service`], and keeps each
//! tenant's data in that tenant's store ([`store`]): its Arc ([`arcdb`],
//! written through per-tenant group commit, [`ingest`]; read with SQL from
//! the [`query`] builder) or, on a single node, an embedded SQLite file.
//! [`worker`] wires the process; [`registration`] and [`probes`] are its
//! presence in the fleet and its operator endpoints.

pub mod admission;
pub mod arcdb;
pub mod erasure;
pub mod grpc;
pub mod ingest;
pub mod probes;
pub mod query;
pub mod registration;
pub mod rest;
pub mod service;
pub mod snapshot;
pub mod store;
pub mod worker;

#[cfg(test)]
mod fuzz_tests;
