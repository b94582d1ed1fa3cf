//! REST single-memory writes shaped like the SDK's `remember`.

use super::{Bounds, Run, claim, collect, content, ensure_loopback, micros};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

/// REST single-memory writes shaped like the SDK's `remember`, from
/// `concurrency` tasks.
pub async fn rest_single(
    base: &str,
    key: &str,
    concurrency: usize,
    bounds: Bounds,
) -> anyhow::Result<Run> {
    ensure_loopback(base)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()?;
    let url = format!("{}/api/v1/memories", base.trim_end_matches('/'));
    let budget = Arc::new(AtomicU64::new(bounds.max_requests));
    let deadline = Instant::now() + bounds.duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (http, url, budget, key) = (http.clone(), url.clone(), budget.clone(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let mut seq = 0u64;
            while claim(&budget, deadline) {
                let body = serde_json::json!({
                    "agent_id": "agent_bench",
                    "memory_type": "episodic",
                    "event_type": "general",
                    "content": content("rest", task, seq, 0),
                });
                seq += 1;
                let t = Instant::now();
                let sent = http
                    .post(&url)
                    .header("x-api-key", &key)
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        run.requests += 1;
                        run.events += 1;
                        run.latencies_us.push(micros(t.elapsed()));
                    }
                    Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                        run.errors += 1;
                        run.throttled += 1;
                    }
                    Ok(r) => {
                        run.errors += 1;
                        *run.failures.entry(r.status().as_u16()).or_default() += 1;
                    }
                    Err(_) => {
                        run.errors += 1;
                        *run.failures.entry(0).or_default() += 1;
                    }
                }
            }
            run
        }));
    }
    collect(tasks, started).await
}
