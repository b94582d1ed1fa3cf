//! `memtrace-proto` owns every wire contract between memtrace processes: the
//! admin API of the control plane (`memtrace.admin.v1`), the records the
//! control plane publishes to etcd (`memtrace.state.v1`), and the public data
//! API of the workers (`memtrace.v1`). Generated code, and the codec it is
//! generated with ([`codec`]: prost's, with a guard against memory batches
//! that would amplify on decoding); domain types and validation live in the
//! crates that use them.

pub mod codec;

/// The control plane's admin API.
pub mod admin {
    /// Version 1 of the admin API.
    pub mod v1 {
        tonic::include_proto!("memtrace.admin.v1");
    }
}

/// Records published to etcd by the control plane and watched by workers.
pub mod state {
    /// Version 1 of the published records.
    pub mod v1 {
        tonic::include_proto!("memtrace.state.v1");
    }
}

/// The workers' agent-facing data API (memories, agents, sessions).
pub mod v1 {
    tonic::include_proto!("memtrace.v1");
}

/// Encoded `FileDescriptorSet` of every memtrace proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("memtrace_descriptor");

#[cfg(test)]
mod fuzz_tests;
