//! The Grafana dashboard (`deploy/grafana/memtrace.json`) and the alerting
//! rules (`deploy/prometheus/alerts.yaml`) query only metrics a running
//! worker or control plane exports: every `memtrace_*` name in them is
//! looked up in the `/metrics` of real processes, so a renamed metric
//! cannot leave a panel empty or an alert that never fires. Their shape
//! is checked too (panels with queries; rules with an expression, a
//! duration, a severity and a summary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::Api;
use memtrace_tests::cluster::Cluster;
use memtrace_tests::grpc::get_text;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;

const PREFIX: &str = "/memtrace-dashboards/v1/";

fn deploy(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Every `memtrace_*` metric name in `text`, as exported families are
/// named in `# TYPE` lines (without `_total`, `_bucket`, `_count`, `_sum`).
fn queried(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"memtrace_[a-z0-9_]+").unwrap();
    re.find_iter(text)
        .map(|m| {
            let name = m.as_str();
            ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// The family names of an OpenMetrics text.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_dashboard_and_the_rules_are_well_formed() {
    let dashboard: Value = serde_json::from_str(&deploy("grafana/memtrace.json")).unwrap();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 7, "{} panels", panels.len());
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{panel}");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(expr.contains("memtrace_"), "{expr}");
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{expr}"
            );
        }
    }
    let rules = deploy("prometheus/alerts.yaml");
    let alerts = rules.matches("- alert: ").count();
    assert!(alerts >= 5, "{alerts} alerts");
    for field in ["expr: ", "for: ", "severity: ", "summary: "] {
        assert_eq!(rules.matches(field).count(), alerts, "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_they_query_is_exported() {
    let c = Cluster::start(PREFIX).await.unwrap();
    let org = c.org("dashboards").await.unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let embedded = tempfile::tempdir().unwrap();
    let worker = c
        .worker(
            "dashboards",
            &[(
                "MEMTRACE_WORKER_EMBEDDED_DIR",
                embedded.path().to_str().unwrap(),
            )],
        )
        .await
        .unwrap();
    let (s, b) = Api::new(&worker, Some(&key))
        .post(
            "/api/v1/memories",
            json!({"agent_id": "dash", "content": "a sample"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let mut names = exported(&get_text(&worker.url(), "/metrics").await);
    names.extend(exported(
        &get_text(&c.control_plane.url(), "/metrics").await,
    ));
    for (file, text) in [
        ("grafana/memtrace.json", deploy("grafana/memtrace.json")),
        ("prometheus/alerts.yaml", deploy("prometheus/alerts.yaml")),
    ] {
        let wanted = queried(&text);
        assert!(wanted.len() >= 5, "{file}: {wanted:?}");
        let missing: Vec<_> = wanted.difference(&names).collect();
        assert!(
            missing.is_empty(),
            "{file} queries metrics no process exports: {missing:?}\nexported: {names:?}"
        );
    }
}
