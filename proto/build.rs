//! Generates the memtrace protobuf code into OUT_DIR, plus a file descriptor
//! set for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "protos/memtrace/admin/v1/admin.proto",
        "protos/memtrace/admin/v1/config.proto",
        "protos/memtrace/admin/v1/erasure.proto",
        "protos/memtrace/state/v1/state.proto",
        "protos/memtrace/v1/memtrace.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        // prost's codec behind a guard against amplifying memory batches
        .codec_path("crate::codec::GuardedCodec")
        .file_descriptor_set_path(out_dir.join("memtrace_descriptor.bin"))
        .compile_protos(&protos, &["protos"])?;
    Ok(())
}
