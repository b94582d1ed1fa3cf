//! The worker's operator endpoints on its one port: `GET /health` (the
//! original's shape: status, uptime, Arc reachability), `GET /ready` (503
//! until the first full snapshot; then the applied revision, its staleness
//! and Arc reachability, never fatal) and `GET /metrics` (OpenMetrics:
//! snapshot, ingest and Arc reachability figures).
//!
//! They need no key and share the API's port, so they report counts and
//! never an org id: Arc reachability is `arc: {reachable: n, unreachable:
//! m}` (the original listed `arc: {org_id: bool}`, which told any caller who
//! the tenants are).

use crate::arcdb::health::ArcHealth;
use crate::ingest::{Batcher, IngestGauges};
use crate::snapshot::SnapshotHandle;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the probe handlers read.
pub struct Probes {
    pub snapshot: Arc<SnapshotHandle>,
    pub registry: Registry,
    pub batcher: Batcher,
    pub ingest: IngestGauges,
    pub arc_health: Arc<ArcHealth>,
    pub started: Instant,
    pub worker_id: String,
}

/// `/health`, `/ready` and `/metrics`.
pub fn router(probes: Arc<Probes>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(probes)
}

async fn health(State(probes): State<Arc<Probes>>) -> Json<serde_json::Value> {
    let uptime =
        humantime::format_duration(Duration::from_secs(probes.started.elapsed().as_secs()));
    let arc = probes.arc_health.counts(&probes.snapshot.load());
    Json(json!({
        "status": "ok",
        "service": "memtrace",
        "worker_id": probes.worker_id,
        "uptime": uptime.to_string(),
        "arc": arc,
    }))
}

async fn ready(State(probes): State<Arc<Probes>>) -> (StatusCode, Json<serde_json::Value>) {
    if !probes.snapshot.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": "no snapshot of published state yet"})),
        );
    }
    let snapshot = probes.snapshot.load();
    (
        StatusCode::OK,
        Json(json!({
            "status": "ready",
            "applied_revision": snapshot.applied_revision,
            "staleness_ms": probes.snapshot.staleness_ms(),
            "orgs": snapshot.orgs.len(),
            // reported, never fatal: an unreachable Arc fails only its org
            "arc": probes.arc_health.counts(&snapshot),
        })),
    )
}

async fn metrics(State(probes): State<Arc<Probes>>) -> impl IntoResponse {
    probes.snapshot.refresh_metrics();
    probes.arc_health.refresh_metrics(&probes.snapshot.load());
    probes.ingest.refresh(&probes.batcher.metrics());
    memtrace_common::requests::openmetrics(&probes.registry)
}
