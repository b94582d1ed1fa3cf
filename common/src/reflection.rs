//! gRPC server reflection as clients need it: served under both
//! `grpc.reflection.v1` and `grpc.reflection.v1alpha` (many clients, built
//! on gRPC libraries older than the v1 protocol, ask only v1alpha and find
//! no reflection at all otherwise), listing exactly the services the
//! process serves and describing only the proto files those need.
//!
//! Registering a whole descriptor set would list every service in it: the
//! workers would advertise the control plane's admin services, which they
//! do not serve, and clients calling them get UNIMPLEMENTED. Every memtrace
//! process also serves `grpc.health.v1.Health` and the two reflection
//! services, so they are always listed.
//!
//! Files are registered decoded (kept files only), which drops proto
//! extensions from what reflection returns; memtrace's protos declare none.

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};
use std::collections::{BTreeMap, BTreeSet};
use tonic::service::Routes;
use tonic_reflection::server::Builder;

/// `grpc.health.v1.Health`.
pub const HEALTH: &str = tonic_health::pb::health_server::SERVICE_NAME;
/// `grpc.reflection.v1.ServerReflection`.
pub const REFLECTION_V1: &str = tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME;
/// `grpc.reflection.v1alpha.ServerReflection`.
pub const REFLECTION_V1ALPHA: &str =
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME;

/// Why reflection could not be set up (a startup error: the process's own
/// descriptors are wrong).
#[derive(Debug, thiserror::Error)]
pub enum ReflectionError {
    #[error("file descriptor set does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("service {0} is declared in no registered proto file")]
    UnknownService(String),
    #[error("proto file {file} imports {import}, which no registered descriptor set holds")]
    MissingImport { file: String, import: String },
    #[error(transparent)]
    Build(#[from] tonic_reflection::server::Error),
}

/// The services reflection lists: `served`, then health and reflection.
pub fn listed(served: &[&str]) -> Vec<String> {
    served
        .iter()
        .copied()
        .chain([HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA])
        .map(str::to_owned)
        .collect()
}

/// Adds reflection v1 and v1alpha to `routes`, listing the services of
/// [`listed`]`(served)`, described by the files of `descriptors` (an
/// encoded `FileDescriptorSet`) that declare them and the files those
/// import.
pub fn add_reflection(
    routes: Routes,
    descriptors: &[u8],
    served: &[&str],
) -> Result<Routes, ReflectionError> {
    let services = listed(served);
    let files = files_for(&descriptor_sets(descriptors), &services)?;
    let builder = || {
        services.iter().fold(
            Builder::configure()
                .include_reflection_service(false)
                .register_file_descriptor_set(files.clone()),
            |b, s| b.with_service_name(s.clone()),
        )
    };
    Ok(routes
        .add_service(builder().build_v1()?)
        .add_service(builder().build_v1alpha()?))
}

/// The gRPC method paths (`/package.Service/Method`) of the services of
/// [`listed`]`(served)`, as declared in `descriptors` (and the health and
/// reflection protos): every path this process implements.
pub fn method_paths(descriptors: &[u8], served: &[&str]) -> Result<Vec<String>, ReflectionError> {
    let services = listed(served);
    let files = files_for(&descriptor_sets(descriptors), &services)?;
    let mut paths = Vec::new();
    for file in &files.file {
        for service in &file.service {
            let name = format!("{}.{}", file.package(), service.name());
            if services.contains(&name) {
                paths.extend(
                    service
                        .method
                        .iter()
                        .map(|m| format!("/{name}/{}", m.name())),
                );
            }
        }
    }
    Ok(paths)
}

/// `descriptors` and the descriptor sets of the health and reflection
/// services every process serves.
fn descriptor_sets(descriptors: &[u8]) -> [&[u8]; 4] {
    [
        descriptors,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
}

/// The files among `sets` that declare one of `services`, with every file
/// they import, transitively.
fn files_for(sets: &[&[u8]], services: &[String]) -> Result<FileDescriptorSet, ReflectionError> {
    let mut all: BTreeMap<String, FileDescriptorProto> = BTreeMap::new();
    for set in sets {
        for file in FileDescriptorSet::decode(*set)?.file {
            all.entry(file.name().to_owned()).or_insert(file);
        }
    }
    let mut wanted: Vec<String> = Vec::new();
    for service in services {
        let file = all
            .values()
            .find(|f| {
                f.service
                    .iter()
                    .any(|s| format!("{}.{}", f.package(), s.name()) == *service)
            })
            .ok_or_else(|| ReflectionError::UnknownService(service.clone()))?;
        wanted.push(file.name().to_owned());
    }
    let mut kept = BTreeSet::new();
    while let Some(name) = wanted.pop() {
        if !kept.insert(name.clone()) {
            continue;
        }
        let file = &all[&name];
        for import in &file.dependency {
            if !all.contains_key(import) {
                return Err(ReflectionError::MissingImport {
                    file: name.clone(),
                    import: import.clone(),
                });
            }
            wanted.push(import.clone());
        }
    }
    Ok(FileDescriptorSet {
        file: kept.iter().map(|name| all[name].clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prost_types::ServiceDescriptorProto;

    fn file(name: &str, package: &str, services: &[&str], imports: &[&str]) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.into()),
            package: Some(package.into()),
            dependency: imports.iter().map(|i| (*i).to_owned()).collect(),
            service: services
                .iter()
                .map(|s| ServiceDescriptorProto {
                    name: Some((*s).to_owned()),
                    ..ServiceDescriptorProto::default()
                })
                .collect(),
            ..FileDescriptorProto::default()
        }
    }

    fn set() -> Vec<u8> {
        FileDescriptorSet {
            file: vec![
                file("t.proto", "google.protobuf", &[], &[]),
                file("admin.proto", "x.admin", &["Org"], &["t.proto"]),
                file("data.proto", "x.v1", &["Memory", "Agent"], &[]),
                file("state.proto", "x.state", &[], &[]),
            ],
        }
        .encode_to_vec()
    }

    fn names(set: &FileDescriptorSet) -> Vec<&str> {
        set.file.iter().map(|f| f.name()).collect()
    }

    #[test]
    fn keeps_the_files_of_the_listed_services_and_their_imports() {
        let set = set();
        let data = files_for(&[&set], &["x.v1.Memory".into()]).unwrap();
        assert_eq!(names(&data), ["data.proto"]);
        let admin = files_for(&[&set], &["x.admin.Org".into()]).unwrap();
        assert_eq!(names(&admin), ["admin.proto", "t.proto"]);
        // health and reflection are always listed, so their files are needed
        let served = listed(&["x.v1.Agent"]);
        assert!(matches!(
            files_for(&[&set], &served),
            Err(ReflectionError::UnknownService(ref s)) if s == HEALTH
        ));
        let sets = [
            set.as_slice(),
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let kept = files_for(&sets, &served).unwrap();
        assert!(names(&kept).contains(&"data.proto"));
        assert!(!names(&kept).contains(&"admin.proto"));
        assert_eq!(kept.file.len(), 4, "{:?}", names(&kept));
    }

    #[test]
    fn refuses_unknown_services_and_missing_imports() {
        let set = set();
        let unknown = files_for(&[&set], &["x.v1.Session".into()]).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "service x.v1.Session is declared in no registered proto file"
        );
        let orphan = FileDescriptorSet {
            file: vec![file("a.proto", "a", &["S"], &["gone.proto"])],
        }
        .encode_to_vec();
        let missing = files_for(&[&orphan], &["a.S".into()]).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "proto file a.proto imports gone.proto, which no registered descriptor set holds"
        );
    }

    #[test]
    fn names_are_the_generated_ones() {
        assert_eq!(HEALTH, "grpc.health.v1.Health");
        assert_eq!(REFLECTION_V1, "grpc.reflection.v1.ServerReflection");
        assert_eq!(
            REFLECTION_V1ALPHA,
            "grpc.reflection.v1alpha.ServerReflection"
        );
    }
}
