//! `memtrace-data-plane` will own the stateless worker: the etcd snapshot
//! watcher, agent authentication against that snapshot, the memtrace-compatible
//! REST and `memtrace.v1` gRPC APIs, per-tenant batching into Arc, and reads.
//! Nothing of it exists yet; the crate is in the workspace so the layout of
//! `docs/ARCHITECTURE.md` holds and later issues add code, not structure.
