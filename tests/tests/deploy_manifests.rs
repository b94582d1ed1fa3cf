//! The Kubernetes manifests under `deploy/kubernetes` build with
//! `kubectl kustomize` (offline), and every `MEMTRACE_*` variable they set
//! is a setting memtrace knows, with a value its config loader accepts — so
//! a renamed setting cannot leave a manifest silently ignoring it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::config::{Env, FileSource, load};
use std::path::PathBuf;
use std::time::Duration;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// `(name, literal value)` of every `MEMTRACE_*` env entry; secret
/// references have no literal value.
fn memtrace_env(rendered: &str) -> Vec<(String, Option<String>)> {
    let re =
        regex::Regex::new(r#"name: (MEMTRACE_[A-Z0-9_]+)\s*\n\s*value: "?([^"\n]*)"?"#).unwrap();
    let named = regex::Regex::new(r"name: (MEMTRACE_[A-Z0-9_]+)").unwrap();
    let mut out: Vec<(String, Option<String>)> = re
        .captures_iter(rendered)
        .map(|c| (c[1].to_owned(), Some(c[2].to_owned())))
        .collect();
    for c in named.captures_iter(rendered) {
        if !out.iter().any(|(n, _)| n == &c[1]) {
            out.push((c[1].to_owned(), None));
        }
    }
    out
}

#[tokio::test]
async fn manifests_build_and_set_only_known_settings() {
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("kustomize").arg(deploy_dir()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("kubectl kustomize timed out")
        .expect("kubectl is required for this test (install kubectl)");
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    for kind in [
        "kind: Deployment",
        "kind: Service",
        "kind: PodDisruptionBudget",
        "kind: HorizontalPodAutoscaler",
    ] {
        assert!(rendered.contains(kind), "{kind} missing");
    }
    assert!(rendered.contains("name: memtrace-worker"));
    assert!(rendered.contains("name: memtrace-control-plane"));

    let vars = memtrace_env(&rendered);
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    for required in [
        "MEMTRACE_ETCD_ENDPOINTS",
        "MEMTRACE_FLEET_KEY",
        "MEMTRACE_MASTER_KEY",
        "MEMTRACE_WORKER_ID",
        "MEMTRACE_SERVER_SHUTDOWN_TIMEOUT",
    ] {
        assert!(names.contains(&required), "{required} not set: {names:?}");
    }
    let literal: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .collect();
    assert!(literal.len() >= 6, "{literal:?}");
    let loaded = load(&FileSource::None, &Env::from_pairs(literal.clone()))
        .unwrap_or_else(|e| panic!("manifest values refused: {e}"));
    assert!(
        loaded.ignored_vars.is_empty(),
        "manifests set unknown variables: {:?}",
        loaded.ignored_vars
    );
    assert_eq!(loaded.config.server.shutdown_timeout, 30);

    // a misspelt variable is caught by the same check
    let mut wrong = literal;
    wrong.push(("MEMTRACE_WORKER_SNAPSHOT_CACH".into(), "/x".into()));
    let loaded = load(&FileSource::None, &Env::from_pairs(wrong)).unwrap();
    assert_eq!(loaded.ignored_vars, vec!["MEMTRACE_WORKER_SNAPSHOT_CACH"]);
}
