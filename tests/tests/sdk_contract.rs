//! The published Python SDK (`memtrace-sdk==0.2.0` from PyPI, unchanged)
//! against the real `memtrace-worker` binary: `tests/sdk/contract.py` runs
//! all 19 methods of its sync and async clients and the SDK's error mapping
//! against a worker started with a real etcd and control plane, the org and
//! its API key created through `memtracectl`:
//! - an org bound to an Arc stand-in (`memtracectl org add-arc`), on a
//!   worker without an embedded store;
//! - an org without a binding on a worker with an embedded store;
//! - an org without a binding on a worker without one: `NoArcInstanceError`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::keys::generate_key_b64;
use memtrace_tests::arc::{ArcStandIn, TokenGrant};
use memtrace_tests::cli::Ctl;
use memtrace_tests::control_plane::{ControlPlane, ControlPlaneSpec};
use memtrace_tests::etcd::EtcdServer;
use memtrace_tests::python::{ContractMode, run_contract, sdk_python};
use memtrace_tests::worker::Worker;
use std::path::Path;
use std::time::{Duration, Instant};

const PREFIX: &str = "/memtrace-sdk/v1/";
const ARC_TOKEN: &str = "arc-sdk-contract-token-0123456789";
const ARC_DATABASE: &str = "sdkcontract";
/// The whole script (two clients, ~130 checks) on a 2-core machine.
const CONTRACT_TIMEOUT: Duration = Duration::from_secs(180);
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// etcd, a control plane publishing to it, and an admin CLI.
struct Cluster {
    etcd: EtcdServer,
    _cp: ControlPlane,
    ctl: Ctl,
    fleet_key: String,
    dir: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let etcd = tokio::task::block_in_place(EtcdServer::start).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fleet_key = generate_key_b64();
    let mut spec = ControlPlaneSpec::default();
    spec.extra_env
        .insert("MEMTRACE_ETCD_ENDPOINTS".into(), etcd.endpoint());
    spec.extra_env
        .insert("MEMTRACE_ETCD_PREFIX".into(), PREFIX.into());
    spec.extra_env
        .insert("MEMTRACE_FLEET_KEY".into(), fleet_key.clone());
    let cp = ControlPlane::start(dir.path(), spec).await.unwrap();
    let ctl = Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
    };
    Cluster {
        etcd,
        _cp: cp,
        ctl,
        fleet_key,
        dir,
    }
}

impl Cluster {
    /// Creates an org (bound to `arc` when given) and a read-write API key;
    /// returns the key's secret.
    async fn org_with_key(&self, name: &str, arc: Option<&ArcStandIn>) -> String {
        let org = self.ctl.json(&["org", "create", name]).await.unwrap();
        let org_id = org["id"].as_str().unwrap().to_owned();
        if let Some(arc) = arc {
            self.ctl
                .json(&[
                    "org",
                    "add-arc",
                    &org_id,
                    "--url",
                    &arc.url(),
                    "--database",
                    ARC_DATABASE,
                    "--api-key",
                    ARC_TOKEN,
                ])
                .await
                .unwrap();
        }
        let key = self
            .ctl
            .json(&[
                "key",
                "create",
                "--org",
                &org_id,
                "--name",
                "sdk",
                "--scopes",
                "read,write",
            ])
            .await
            .unwrap();
        key["key"].as_str().unwrap().to_owned()
    }

    /// Starts a worker and waits until it is ready and has applied
    /// everything published so far (the org, its binding and its key).
    async fn worker(&self, id: &str, extra_env: &[(&str, &str)]) -> Worker {
        let worker = Worker::spawn(
            self.dir.path(),
            id,
            &self.etcd.endpoint(),
            PREFIX,
            &self.fleet_key,
            extra_env,
        )
        .await
        .unwrap();
        let http = memtrace_tests::http_client();
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            let ready = http
                .get(format!("{}/ready", worker.url()))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            let status = self.ctl.json(&["status"]).await.ok();
            let in_sync = status.as_ref().is_some_and(|s| {
                s["workers_in_sync"] == 1 && s["published_revision"].as_i64() > Some(0)
            });
            if ready && in_sync {
                return worker;
            }
            assert!(
                Instant::now() < deadline,
                "worker {id} not ready and in sync within {SYNC_TIMEOUT:?} (status: {status:?}); log:\n{}",
                worker.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs the script; on failure, panics with its output and the worker's log.
async fn contract(python: &Path, worker: &Worker, api_key: &str, mode: ContractMode) -> String {
    let run = run_contract(python, &worker.url(), api_key, mode, CONTRACT_TIMEOUT)
        .await
        .unwrap();
    assert!(
        run.success,
        "the SDK contract ({mode:?}) failed:\n{}\n--- worker log (tail) ---\n{}",
        run.report(),
        tail(&worker.logs(), 60)
    );
    assert!(run.stdout.contains("contract: PASSED"), "{}", run.report());
    println!("{}", run.stdout);
    assert!(
        !worker.logs().contains(api_key),
        "the API key never reaches the worker's log"
    );
    run.stdout
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_against_an_org_bound_to_arc() {
    // The venv first: a missing Python or a failed pip fails here, loudly.
    let python = sdk_python().await.unwrap();
    let c = cluster().await;
    let arc = ArcStandIn::builder()
        .token(ARC_TOKEN, TokenGrant::databases([ARC_DATABASE]))
        .start()
        .await
        .unwrap();
    let key = c.org_with_key("sdk-arc", Some(&arc)).await;
    let worker = c.worker("sdk-arc", &[]).await;
    contract(&python, &worker, &key, ContractMode::Full).await;
    let stats = arc.stats().db(ARC_DATABASE);
    assert!(
        stats.rows >= 10,
        "memories, agents and sessions went to the org's Arc: {stats:?}"
    );
    assert!(worker.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_against_the_embedded_store() {
    let python = sdk_python().await.unwrap();
    let c = cluster().await;
    let key = c.org_with_key("sdk-embedded", None).await;
    let embedded = tempfile::tempdir().unwrap();
    let dir = embedded.path().to_str().unwrap();
    let worker = c
        .worker("sdk-embedded", &[("MEMTRACE_WORKER_EMBEDDED_DIR", dir)])
        .await;
    contract(&python, &worker, &key, ContractMode::Full).await;
    let files = std::fs::read_dir(embedded.path()).unwrap().count();
    assert!(files > 0, "the org's data went to the embedded store");
    assert!(worker.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_sees_no_arc_instance_for_an_unbound_org() {
    let python = sdk_python().await.unwrap();
    let c = cluster().await;
    let key = c.org_with_key("sdk-unbound", None).await;
    let worker = c.worker("sdk-unbound", &[]).await;
    let out = contract(&python, &worker, &key, ContractMode::NoArc).await;
    assert!(out.contains("NoArcInstanceError (503)"), "{out}");
    assert!(worker.stop().await.unwrap().success());
}
