//! Plain HTTP endpoints served on the gRPC port: `/health` (200 while the
//! process runs), `/ready` (200 once the database answers and the schema
//! is at least at the expected migration) and `/metrics` (OpenMetrics: the
//! port's requests, admin calls by method and code among them;
//! publications and reconciliation passes; the audit chain's last walk;
//! erasure jobs).

use crate::domain::audit::monitor::AuditMetrics;
use crate::domain::erasure::ErasureMetrics;
use crate::domain::publish::PublishMetrics;
use crate::store::{SqlStore, Store};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use memtrace_common::requests::{RequestMetrics, openmetrics, tag_route};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What the probes look at.
#[derive(Debug)]
pub struct Probes {
    pub store: OnceLock<Arc<SqlStore>>,
    pub started: Instant,
    pub expected_migration: Option<i64>,
    /// Every request of the port, counted by the serve loop's layer.
    pub requests: Arc<RequestMetrics>,
    /// Publication and reconciliation, counted by the publisher.
    pub publish: PublishMetrics,
    /// The audit chain's last walk.
    pub audit: AuditMetrics,
    /// Erasure jobs by state and outcome.
    pub erasure: ErasureMetrics,
    registry: Registry,
}

impl Probes {
    /// Probes of a process implementing `grpc_methods` (for the request
    /// metrics' route labels).
    pub fn new(expected_migration: Option<i64>, grpc_methods: Vec<String>) -> Self {
        let requests = Arc::new(RequestMetrics::new(grpc_methods));
        let mut registry = Registry::default();
        requests.register(&mut registry);
        let publish = PublishMetrics::default();
        publish.register(&mut registry);
        let audit = AuditMetrics::default();
        audit.register(&mut registry);
        let erasure = ErasureMetrics::default();
        erasure.register(&mut registry);
        Self {
            store: OnceLock::new(),
            started: Instant::now(),
            expected_migration,
            requests,
            publish,
            audit,
            erasure,
            registry,
        }
    }
}

pub fn router(probes: Arc<Probes>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn(tag_route))
        .with_state(probes)
}

async fn metrics(State(probes): State<Arc<Probes>>) -> axum::response::Response {
    openmetrics(&probes.registry)
}

async fn health(State(probes): State<Arc<Probes>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "service": "memtrace-control-plane",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": probes.started.elapsed().as_secs(),
    }))
}

async fn ready(State(probes): State<Arc<Probes>>) -> (StatusCode, Json<Value>) {
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": reason})),
        )
    };
    let Some(store) = probes.store.get() else {
        return not_ready("database not connected or migrations not applied yet".into());
    };
    let applied =
        match tokio::time::timeout(Duration::from_secs(2), store.applied_migration()).await {
            Ok(Ok(applied)) => applied.unwrap_or(0),
            Ok(Err(error)) => return not_ready(format!("database unreachable: {error}")),
            Err(_) => return not_ready("database did not answer within 2s".into()),
        };
    if let Some(expected) = probes.expected_migration
        && applied < expected
    {
        return not_ready(format!(
            "schema is at migration {applied}, MEMTRACE_EXPECTED_MIGRATION requires {expected}"
        ));
    }
    (
        StatusCode::OK,
        Json(json!({"status": "ready", "migration": applied})),
    )
}
