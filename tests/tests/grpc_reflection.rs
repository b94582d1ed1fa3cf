//! gRPC reflection of the real control plane and worker, as grpcurl-like
//! clients see it: under `grpc.reflection.v1` and `v1alpha` alike, each
//! process lists exactly the services it serves (the worker used to list the
//! control plane's admin services too, and answered v1 only), and describes
//! no proto file of a service it does not serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::cluster::Cluster;
use memtrace_tests::reflection::{Version, files_containing, services};
use std::collections::BTreeSet;

const COMMON: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

fn set(names: &[&str]) -> BTreeSet<String> {
    names
        .iter()
        .chain(&COMMON)
        .map(|s| (*s).to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_lists_exactly_what_it_serves_under_both_versions() {
    let c = Cluster::start("/memtrace-reflection/v1/").await.unwrap();
    c.org("reflection").await.unwrap();
    let worker = c.worker("reflection", &[]).await.unwrap();
    let control_plane = c.control_plane.url();
    let worker = worker.url();
    let served_by_worker = set(&[
        "memtrace.v1.MemoryService",
        "memtrace.v1.AgentService",
        "memtrace.v1.SessionService",
    ]);
    let served_by_control_plane = set(&[
        "memtrace.admin.v1.ClusterService",
        "memtrace.admin.v1.OrgService",
        "memtrace.admin.v1.ArcBindingService",
        "memtrace.admin.v1.ApiKeyService",
        "memtrace.admin.v1.AdminTokenService",
        "memtrace.admin.v1.MasterKeyService",
        "memtrace.admin.v1.ConfigService",
        "memtrace.admin.v1.AuditService",
        "memtrace.admin.v1.ErasureService",
    ]);
    for version in [Version::V1, Version::V1Alpha] {
        assert_eq!(
            services(&worker, version).await.unwrap(),
            served_by_worker,
            "{version:?}"
        );
        assert_eq!(
            services(&control_plane, version).await.unwrap(),
            served_by_control_plane,
            "{version:?}"
        );
        // what is listed is described; what is not served is not
        let files = files_containing(&worker, version, "memtrace.v1.MemoryService")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(files, ["memtrace/v1/memtrace.proto"], "{version:?}");
        for (url, unserved) in [
            (&worker, "memtrace.admin.v1.OrgService"),
            (&worker, "memtrace.state.v1.OrgRecord"),
            (&control_plane, "memtrace.v1.MemoryService"),
        ] {
            let refused = files_containing(url, version, unserved)
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(
                refused.code(),
                tonic::Code::NotFound,
                "{unserved} {version:?}"
            );
        }
        let admin = files_containing(&control_plane, version, "memtrace.admin.v1.ConfigService")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(admin, ["memtrace/admin/v1/config.proto"], "{version:?}");
    }
}
