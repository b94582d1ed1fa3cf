//! The Kubernetes manifests under `deploy/kubernetes` (a kustomize base and
//! the overlays `single-node` and `ha`) build with `kubectl kustomize`
//! (offline), and every `MEMTRACE_*` variable each overlay sets is a setting
//! memtrace knows, with a value its config loader accepts — so a renamed
//! setting cannot leave a manifest silently ignoring it. Schema validation,
//! checkov and the structural checks run in tests/k8s/validate.sh.
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

async fn render(overlay: &str) -> String {
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("kustomize")
        .arg(deploy_dir().join("overlays").join(overlay))
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("kubectl kustomize timed out")
        .expect("kubectl is required for this test (install kubectl)");
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn single_node_overlay_sets_only_known_settings() {
    let rendered = render("single-node").await;
    check_overlay(&rendered, &["MEMTRACE_AUTH_DB_PATH"]);
    assert!(
        !rendered.contains("MEMTRACE_DATABASE_URL"),
        "SQLite overlay"
    );
    assert!(rendered.contains("kind: PersistentVolumeClaim"));
    assert!(rendered.contains("claimName: memtrace-control-plane-data"));
}

#[tokio::test]
async fn ha_overlay_sets_only_known_settings() {
    let rendered = render("ha").await;
    check_overlay(&rendered, &["MEMTRACE_DATABASE_URL"]);
    assert!(
        !rendered.contains("MEMTRACE_AUTH_DB_PATH"),
        "PostgreSQL overlay"
    );
    assert!(!rendered.contains("kind: PersistentVolumeClaim"));
}

/// Kinds, names and settings both overlays share; `extra` are the
/// overlay's own required variables.
fn check_overlay(rendered: &str, extra: &[&str]) {
    for kind in [
        "kind: Deployment",
        "kind: Service",
        "kind: PodDisruptionBudget",
        "kind: HorizontalPodAutoscaler",
        "kind: NetworkPolicy",
        "kind: ServiceAccount",
    ] {
        assert!(rendered.contains(kind), "{kind} missing");
    }
    assert!(rendered.contains("name: memtrace-worker"));
    assert!(rendered.contains("name: memtrace-control-plane"));

    // secrets are referenced, never inlined
    assert!(!rendered.contains("kind: Secret\n"), "a Secret is inlined");

    let vars = memtrace_env(rendered);
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    for required in [
        "MEMTRACE_ETCD_ENDPOINTS",
        "MEMTRACE_FLEET_KEY",
        "MEMTRACE_MASTER_KEY",
        "MEMTRACE_WORKER_ID",
        "MEMTRACE_SERVER_SHUTDOWN_TIMEOUT",
        "MEMTRACE_BOOTSTRAP_ADMIN_TOKEN",
        "MEMTRACE_ETCD_CA_FILE",
        "MEMTRACE_ETCD_CERT_FILE",
        "MEMTRACE_ETCD_KEY_FILE",
    ]
    .iter()
    .chain(extra)
    {
        assert!(names.contains(required), "{required} not set: {names:?}");
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
