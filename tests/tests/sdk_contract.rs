//! The published Python SDK (`memtrace-sdk==0.2.0` from PyPI, unchanged)
//! against the real `memtrace-worker` binary: `tests/sdk/contract.py` runs
//! all 19 methods of its sync and async clients and the SDK's error mapping
//! against a worker started with a real etcd and control plane, the org and
//! its API key created through `memtracectl`:
//! - an org bound to an Arc stand-in (`memtracectl org add-arc`), on a
//!   worker without an embedded store;
//! - an org without a binding on a worker with an embedded store;
//! - an org without a binding on a worker without one: `NoArcInstanceError`;
//! - the embedded store again, the worker serving TLS: the SDK over
//!   `https://` (HTTP/1.1 by ALPN), trusting the test CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::arc::ArcStandIn;
use memtrace_tests::cluster::{Cluster, arc_with_token};
use memtrace_tests::pki::TestPki;
use memtrace_tests::python::{ContractMode, run_contract, sdk_python};
use memtrace_tests::worker::Worker;
use std::path::Path;
use std::time::Duration;

const PREFIX: &str = "/memtrace-sdk/v1/";
const ARC_TOKEN: &str = "arc-sdk-contract-token-0123456789";
const ARC_DATABASE: &str = "sdkcontract";
/// The whole script (two clients, ~130 checks) on a 2-core machine.
const CONTRACT_TIMEOUT: Duration = Duration::from_secs(180);

/// Creates an org (bound to `arc` when given) and a read-write API key;
/// returns the key's secret.
async fn org_with_key(c: &Cluster, name: &str, arc: Option<&ArcStandIn>) -> String {
    let org_id = c.org(name).await.unwrap();
    if let Some(arc) = arc {
        c.add_arc(&org_id, &arc.url(), ARC_DATABASE, Some(ARC_TOKEN))
            .await
            .unwrap();
    }
    c.key(&org_id, "read,write").await.unwrap().0
}

/// Runs the script; on failure, panics with its output and the worker's log.
async fn contract(python: &Path, worker: &Worker, api_key: &str, mode: ContractMode) -> String {
    let run = run_contract(
        python,
        &worker.url(),
        api_key,
        worker.ca_file(),
        mode,
        CONTRACT_TIMEOUT,
    )
    .await
    .unwrap();
    assert!(
        run.success,
        "the SDK contract ({mode:?}) failed:\n{}\n--- worker log (tail) ---\n{}",
        run.report(),
        tail(&worker.logs(), 60)
    );
    assert!(run.stdout.contains("contract: PASSED"), "{}", run.report());
    for client in ["sync ", "async"] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok    {client} "))),
            "the {client} client ran its checks: {}",
            run.report()
        );
    }
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
    let c = Cluster::start(PREFIX).await.unwrap();
    // instant answers (arc_with_token): behaviour, not time
    let arc = arc_with_token(ARC_TOKEN, ARC_DATABASE).await.unwrap();
    let key = org_with_key(&c, "sdk-arc", Some(&arc)).await;
    let worker = c.worker("sdk-arc", &[]).await.unwrap();
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
    let c = Cluster::start(PREFIX).await.unwrap();
    let key = org_with_key(&c, "sdk-embedded", None).await;
    let embedded = tempfile::tempdir().unwrap();
    let dir = embedded.path().to_str().unwrap();
    let worker = c
        .worker("sdk-embedded", &[("MEMTRACE_WORKER_EMBEDDED_DIR", dir)])
        .await
        .unwrap();
    contract(&python, &worker, &key, ContractMode::Full).await;
    let files = std::fs::read_dir(embedded.path()).unwrap().count();
    assert!(files > 0, "the org's data went to the embedded store");
    assert!(worker.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_sees_no_arc_instance_for_an_unbound_org() {
    let python = sdk_python().await.unwrap();
    let c = Cluster::start(PREFIX).await.unwrap();
    let key = org_with_key(&c, "sdk-unbound", None).await;
    let worker = c.worker("sdk-unbound", &[]).await.unwrap();
    let out = contract(&python, &worker, &key, ContractMode::NoArc).await;
    assert!(out.contains("NoArcInstanceError (503)"), "{out}");
    assert!(worker.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_https() {
    let python = sdk_python().await.unwrap();
    let c = Cluster::start(PREFIX).await.unwrap();
    let key = org_with_key(&c, "sdk-https", None).await;
    let pki = TestPki::create(c.dir.path(), "client").unwrap();
    let embedded = tempfile::tempdir().unwrap();
    let dir = embedded.path().to_str().unwrap();
    let worker = c
        .worker_with_tls(
            "sdk-https",
            Some(&pki.served()),
            &[("MEMTRACE_WORKER_EMBEDDED_DIR", dir)],
        )
        .await
        .unwrap();
    assert!(worker.url().starts_with("https://"));
    let out = contract(&python, &worker, &key, ContractMode::Full).await;
    assert!(out.contains("against https://"), "{out}");
    assert!(worker.stop().await.unwrap().success());
}
