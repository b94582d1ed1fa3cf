//! A minimal stand-in for an Arc instance's `GET /health` (Arc answers 200
//! with `{"status":"ok",…}`), recording the headers it was called with, for
//! the control plane's binding test. The full Arc stand-in (writes, queries,
//! faults) belongs to the data-plane tests.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use std::sync::{Arc, Mutex};

/// Headers of every `/health` call received.
#[derive(Debug, Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<HeaderMap>>>);

impl Calls {
    pub fn all(&self) -> Vec<HeaderMap> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// Serves `/health` on `127.0.0.1:0`; returns the base URL and the call log.
pub async fn start() -> anyhow::Result<(String, Calls, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let calls = Calls::default();
    let app = axum::Router::new()
        .route("/health", get(health))
        .with_state(calls.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), calls, task))
}

async fn health(State(calls): State<Calls>, headers: HeaderMap) -> Json<serde_json::Value> {
    if let Ok(mut all) = calls.0.lock() {
        all.push(headers);
    }
    Json(serde_json::json!({"status": "ok", "uptime": "1s"}))
}
