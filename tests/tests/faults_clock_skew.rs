//! Fault scenario 7, clock skew: three real workers, one with its wall
//! clock 5 minutes ahead, one 5 minutes behind, one correct (libfaketime,
//! `faults::skew`; the monotonic clock stays true). Under REST and gRPC
//! load over all three, with client-chosen ids and every client's memories
//! in its own session: nothing acknowledged is lost or shown twice, and
//! every read through every worker — the agent's list, the session's list,
//! a list and a search by agent and session — returns every acknowledged
//! memory of that agent and session once, ordered by the writer's clock —
//! also a memory stored twice, minutes apart, by workers with different
//! clocks (Arc stored a batch and answered 500, the client retried it on
//! the next worker).
//! Memories the server names get unique ids on every worker, whose time is
//! the writer's clock; a client writing one memory after another sees them
//! in its order per worker, and across workers in the order of the
//! writers' clocks (a worker 5 min behind stamps them 5 min older). And a
//! change to a session or an agent made through a worker behind the one
//! that wrote the row replaces it. A third test steps one worker's clock
//! back 5 minutes while it runs under load: its stamps never go back, so
//! what it writes after the step reads after what it wrote before (see
//! docs/RELIABILITY.md, scenario 7).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::Api;
use memtrace_tests::arc::{Fault, Target};
use memtrace_tests::cluster::eventually;
use memtrace_tests::faults::skew::{
    clock_offset_secs, id_micros, now_micros, rfc3339_micros, skewed_clock_env, stepping_clock_env,
};
use memtrace_tests::faults::{Load, LoadSpec, Rig, RigSpec, print_figures, report_json, scaled};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

/// Worker 0 five minutes ahead, worker 1 five minutes behind, worker 2
/// correct.
const SKEW_SECS: [i64; 3] = [300, -300, 0];

async fn skewed_rig(prefix: &str) -> Rig {
    let mut spec = RigSpec::new(prefix, SKEW_SECS.len());
    for (slot, skew) in SKEW_SECS.iter().enumerate() {
        if *skew != 0 {
            for (k, v) in skewed_clock_env(*skew).unwrap() {
                spec = spec.slot_env(slot, &k, &v);
            }
        }
    }
    let rig = Rig::start(spec).await.unwrap();
    // the skew is real: a memory each worker names carries its clock
    for (i, skew) in SKEW_SECS.iter().enumerate() {
        let off = clock_offset_secs(&rig.worker(i).url(), &rig.key, &format!("clock_probe{i}"))
            .await
            .unwrap();
        assert!(
            (off - *skew as f64).abs() < 30.0,
            "worker {i}: clock {off:.1} s off, wanted {skew} s"
        );
    }
    rig
}

/// Every id of a read through `url` of `path` (a memory list), oldest
/// first, page by page.
async fn list_ids(api: &Api, path: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for page in 0..100 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, body) = api
            .call(
                "GET",
                &format!("{path}{sep}order=asc&limit=1000&offset={}", page * 1000),
                None,
            )
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        for m in body["memories"].as_array().unwrap() {
            let created = rfc3339_micros(m["time"].as_str().unwrap()).unwrap();
            out.push((m["id"].as_str().unwrap().to_owned(), created));
        }
        if body["has_more"] != Value::Bool(true) {
            return out;
        }
    }
    panic!("{path}: more than 100 pages");
}

/// Oldest first by the writer's clock (ties by id), as every read orders.
fn assert_ordered_by_stamp(what: &str, rows: &[(String, i64)]) {
    for w in rows.windows(2) {
        assert!(
            (w[0].1, &w[0].0) <= (w[1].1, &w[1].0),
            "{what}: {w:?} out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_workers_lose_nothing_and_every_read_stays_complete() {
    let rig = skewed_rig("/memtrace-faults-skew/v1/").await;
    let apis: Vec<Api> = (0..SKEW_SECS.len())
        .map(|i| Api::new(rig.worker(i), Some(&rig.key)))
        .collect();
    let mut spec = LoadSpec::new(
        "skew",
        scaled(Duration::from_secs(4), Duration::from_secs(30)),
    );
    // ≤ 1,000 memories per client in the CI variant: one search page
    spec.pace = Duration::from_millis(if memtrace_tests::faults::full() {
        50
    } else {
        60
    });
    // every client's agent registered, and its session started, through
    // a different worker (each stamps them with its own clock)
    for c in 0..spec.rest_clients + spec.grpc_clients {
        let api = &apis[c % apis.len()];
        let (status, body) = api
            .post("/api/v1/agents", json!({"name": spec.agent(c)}))
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = api
            .post("/api/v1/sessions", json!({"agent_id": spec.agent(c)}))
            .await;
        assert_eq!(status, 201, "{body}");
        spec.sessions.push(body["id"].as_str().unwrap().to_owned());
    }

    let load = Load::start(spec.clone(), rig.endpoints.clone(), &rig.key);
    load.wait_acked(200, Duration::from_secs(30)).await.unwrap();
    // Arc stores 30 writes and answers 500: the workers retry, then refuse,
    // and clients send the batch again to the next worker — another clock —
    // so one id is stored with stamps minutes apart; reads show it once
    rig.arc.faults().inject(
        Fault::status_after_processing(500)
            .on(Target::Writes)
            .times(30),
    );
    let elapsed = {
        tokio::time::sleep(spec.duration).await;
        load.started().elapsed()
    };
    let history = load.finish().await.unwrap();
    let report = rig.check(&history, &spec).await.unwrap();
    eprintln!("clock skew: {report}");
    report.assert_clean("clock skew");
    assert!(report.acknowledged > 0);
    assert_eq!(report.unfinished_batches, 0, "{report}");
    assert_eq!(report.acknowledged, report.sent, "{report}");
    assert_eq!(report.permanent_refusals, 0, "{report}");
    assert!(
        report.extra_stored_copies > 0 && report.retried_batches > 0,
        "no batch was stored twice: {report}"
    );
    let per_worker: Vec<usize> = {
        let h = history.lock().unwrap();
        (0..SKEW_SECS.len()).map(|w| h.attempts_on(w)).collect()
    };
    assert!(
        per_worker.iter().all(|n| *n > 0),
        "every worker took writes: {per_worker:?}"
    );

    // every read by agent and session, through every worker
    let acked = history.lock().unwrap().acked_ids();
    let mut reads = 0;
    for (c, session) in spec.sessions.iter().enumerate() {
        let agent = spec.agent(c);
        let prefix = format!("{}_c{c}_", spec.run);
        let want: BTreeSet<&str> = acked
            .iter()
            .filter(|id| id.starts_with(&prefix))
            .map(String::as_str)
            .collect();
        assert!(!want.is_empty(), "client {c} has acknowledged memories");
        for (w, api) in apis.iter().enumerate() {
            let paths = [
                format!("/api/v1/sessions/{session}/memories"),
                format!("/api/v1/memories?agent_id={agent}&session_id={session}"),
            ];
            let mut first = None;
            for path in &paths {
                let rows = list_ids(api, path).await;
                let what = format!("worker {w} {path}");
                let got: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
                let set: BTreeSet<&str> = got.iter().copied().collect();
                assert_eq!(set.len(), got.len(), "{what}: an id twice");
                assert!(
                    set == want,
                    "{what}: {} read, {} acknowledged; missing {:?}, extra {:?}",
                    set.len(),
                    want.len(),
                    want.difference(&set).take(5).collect::<Vec<_>>(),
                    set.difference(&want).take(5).collect::<Vec<_>>()
                );
                assert_ordered_by_stamp(&what, &rows);
                first.get_or_insert(rows);
                reads += 1;
            }
            // a search by agent and session: the same memories, in the
            // same order (its page is at most 1,000)
            let (status, body) = api
                .post(
                    "/api/v1/search",
                    json!({"agent_id": agent, "session_id": session, "order": "asc", "limit": 1000}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let found: Vec<&str> = body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap())
                .collect();
            let listed: Vec<&str> = first
                .as_ref()
                .unwrap()
                .iter()
                .map(|(id, _)| id.as_str())
                .collect();
            assert_eq!(
                found,
                listed[..listed.len().min(1000)],
                "worker {w}: search by agent and session"
            );
            reads += 1;
        }
    }

    // memories the server names: unique ids carrying the writer's clock,
    // each worker's in its write order, across workers by their clocks
    let order = ordered_writes(&rig, &apis).await;
    print_figures(
        "clock_skew",
        json!({
            "workers": 3,
            "skew_seconds": SKEW_SECS,
            "load_seconds": elapsed.as_secs_f64(),
            "events_per_second": report.acknowledged as f64 / elapsed.as_secs_f64(),
            "attempts_per_worker": per_worker,
            "reads_checked": reads,
            "server_named_ids": order,
            "report": report_json(&report),
        }),
    );
}

/// Rounds of batches of memories without ids, through each worker in turn
/// into one session, each batch after the last was answered; checks the
/// ids and the order every worker reads them in. Returns the ids written.
async fn ordered_writes(rig: &Rig, apis: &[Api]) -> usize {
    let (status, body) = apis[2]
        .post("/api/v1/sessions", json!({"agent_id": "skew_agent0"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let session = body["id"].as_str().unwrap().to_owned();
    // (worker, id, time µs) in write order
    let mut written: Vec<(usize, String, i64)> = Vec::new();
    for round in 0..3 {
        for (w, api) in apis.iter().enumerate() {
            let memories: Vec<Value> = (0..10)
                .map(|i| {
                    json!({"agent_id": "skew_ordered", "session_id": session,
                           "content": format!("ordered write round {round} worker {w} item {i}")})
                })
                .collect();
            let (status, body) = api
                .post("/api/v1/memories", json!({"memories": memories}))
                .await;
            assert_eq!(status, 201, "{body}");
            for m in body["memories"].as_array().unwrap() {
                let id = m["id"].as_str().unwrap().to_owned();
                let created = rfc3339_micros(m["time"].as_str().unwrap()).unwrap();
                assert_eq!(id_micros(&id).unwrap(), created, "{id} carries its time");
                written.push((w, id, created));
            }
        }
    }
    let ids: HashSet<&str> = written.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), written.len(), "server-named ids are unique");
    for w in 0..apis.len() {
        let mine: Vec<i64> = written.iter().filter(|r| r.0 == w).map(|r| r.2).collect();
        assert!(
            mine.windows(2).all(|p| p[0] < p[1]),
            "worker {w} stamps in its write order: {mine:?}"
        );
    }
    // every worker reads them all, by the writers' clocks: the worker
    // behind's first, then the correct one's, then the one ahead's
    let mut expected: Vec<(String, i64)> =
        written.iter().map(|(_, id, t)| (id.clone(), *t)).collect();
    expected.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let by_skew: Vec<usize> = {
        let mut w: Vec<usize> = (0..SKEW_SECS.len()).collect();
        w.sort_by_key(|w| SKEW_SECS[*w]);
        w
    };
    let worker_of = |id: &str| written.iter().find(|r| r.1 == id).map(|r| r.0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for (w, api) in apis.iter().enumerate() {
        let rows = loop {
            rig.arc.flush_buffers().unwrap();
            let rows = list_ids(api, &format!("/api/v1/sessions/{session}/memories")).await;
            if rows.len() >= written.len() || Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(rows, expected, "worker {w}: the session, oldest first");
        let writers: Vec<usize> = rows.iter().map(|(id, _)| worker_of(id)).collect();
        let mut grouped = writers.clone();
        grouped.sort_by_key(|w| by_skew.iter().position(|x| x == w));
        assert_eq!(
            writers, grouped,
            "worker {w}: ordered by the writers' clocks"
        );
    }
    written.len()
}

/// A session closed, or an agent deleted, through a worker whose clock is
/// behind the one that created it: the change wins on every worker (a
/// change is stamped after the row it replaces). And a key's expiry is
/// judged by each worker's own clock (a documented limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_a_worker_behind_replaces_the_row_it_changes() {
    let rig = skewed_rig("/memtrace-faults-skew-state/v1/").await;
    let apis: Vec<Api> = (0..SKEW_SECS.len())
        .map(|i| Api::new(rig.worker(i), Some(&rig.key)))
        .collect();
    // (created through, changed through): ahead → correct, correct →
    // behind, ahead → behind
    for (created_on, changed_on) in [(0, 2), (2, 1), (0, 1)] {
        let name = format!("skew_state_{created_on}_{changed_on}");
        let (status, body) = apis[created_on]
            .post("/api/v1/agents", json!({"name": name}))
            .await;
        assert_eq!(status, 201, "{body}");
        let agent = body["id"].as_str().unwrap().to_owned();
        let (status, body) = apis[created_on]
            .post("/api/v1/sessions", json!({"agent_id": agent}))
            .await;
        assert_eq!(status, 201, "{body}");
        let session = body["id"].as_str().unwrap().to_owned();
        rig.arc.flush_buffers().unwrap();

        let (status, body) = apis[changed_on]
            .call(
                "PUT",
                &format!("/api/v1/sessions/{session}"),
                Some(json!({"status": "closed"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "closed");
        let (status, body) = apis[changed_on]
            .call("DELETE", &format!("/api/v1/agents/{agent}"), None)
            .await;
        assert!(status == 204 || status == 200, "{status} {body}");
        rig.arc.flush_buffers().unwrap();

        for (w, api) in apis.iter().enumerate() {
            let what = format!(
                "created through worker {created_on} ({} s), changed through worker \
                 {changed_on} ({} s), read through worker {w}",
                SKEW_SECS[created_on], SKEW_SECS[changed_on]
            );
            let (status, body) = api.get(&format!("/api/v1/sessions/{session}")).await;
            assert_eq!(status, 200, "{what}: {body}");
            assert_eq!(
                body["status"], "closed",
                "{what}: the close was lost: {body}"
            );
            let (status, body) = api.get(&format!("/api/v1/agents/{agent}")).await;
            assert_eq!(status, 404, "{what}: the delete was lost: {body}");
        }
    }

    // One memory written through all three workers (same agent and
    // content: one dedup key), the one ahead first, the one behind last.
    // Each worker's own dedup index knows only its own write, so all three
    // are stored; reads collapse them by key within the dedup window (24 h
    // by default, far more than the skew) and show the newest *by stamp*:
    // the copy written first, through the worker 5 minutes ahead.
    let mut copies = Vec::new();
    for w in [0, 2, 1] {
        let (status, body) = apis[w]
            .post(
                "/api/v1/memories",
                json!({"agent_id": "skew_dup", "content": "the same words, three times"}),
            )
            .await;
        assert_eq!(status, 201, "worker {w}: {body}");
        copies.push(body["id"].as_str().unwrap().to_owned());
    }
    rig.arc.flush_buffers().unwrap();
    for (w, api) in apis.iter().enumerate() {
        let shown: Vec<String> = list_ids(api, "/api/v1/memories?agent_id=skew_dup")
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            shown,
            [copies[0].clone()],
            "worker {w}: one copy, the newest by stamp"
        );
    }

    // A key expiring in 2 minutes (by the control plane's clock) is
    // already expired for the worker 5 minutes ahead and valid for the
    // others: expiry is judged by the worker's own clock, off by its skew.
    let key = rig
        .cluster
        .ctl
        .json(&[
            "key",
            "create",
            "--org",
            &rig.org,
            "--name",
            "expires-soon",
            "--scopes",
            "read,write",
            "--expires-in",
            "120s",
        ])
        .await
        .unwrap();
    let secret = key["key"].as_str().unwrap();
    let status = rig.cluster.ctl.json(&["status"]).await.unwrap();
    let published = status["published_revision"].as_i64().unwrap();
    rig.cluster.wait_applied(published).await.unwrap();
    let mut answers = Vec::new();
    for i in 0..SKEW_SECS.len() {
        let (status, _) = Api::new(rig.worker(i), Some(secret))
            .get("/api/v1/memories?limit=1")
            .await;
        answers.push(status);
    }
    assert_eq!(
        answers,
        [401, 200, 200],
        "a key expiring in 120 s through workers {SKEW_SECS:?} s off"
    );
}

/// Ten memories the server names, written through `api` into `session`:
/// (id, time µs) in write order.
async fn write_ten(api: &Api, session: &str, label: &str) -> Vec<(String, i64)> {
    let memories: Vec<Value> = (0..10)
        .map(|i| json!({"agent_id": "skew_step", "session_id": session, "content": format!("{label} {i}")}))
        .collect();
    let (status, body) = api
        .post("/api/v1/memories", json!({"memories": memories}))
        .await;
    assert_eq!(status, 201, "{body}");
    body["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let id = m["id"].as_str().unwrap().to_owned();
            let t = rfc3339_micros(m["time"].as_str().unwrap()).unwrap();
            assert_eq!(id_micros(&id).unwrap(), t, "{id} carries its time");
            (id, t)
        })
        .collect()
}

/// A worker whose clock is stepped back 5 minutes while it runs under
/// load: nothing is lost or shown twice, and what it writes after the step
/// is still stamped after what it wrote before (its stamps never go back),
/// so every read keeps its write order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepped_back_while_running_keeps_the_workers_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("faketime-offset");
    std::fs::write(&file, "+0\n").unwrap();
    let mut rig_spec = RigSpec::new("/memtrace-faults-skew-step/v1/", 2);
    for (k, v) in stepping_clock_env(&file).unwrap() {
        rig_spec = rig_spec.slot_env(0, &k, &v);
    }
    let rig = Rig::start(rig_spec).await.unwrap();
    let api = Api::new(rig.worker(0), Some(&rig.key));
    let (status, body) = api
        .post("/api/v1/agents", json!({"name": "skew_step"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .post("/api/v1/sessions", json!({"agent_id": "skew_step"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let session = body["id"].as_str().unwrap().to_owned();

    let spec = LoadSpec::new(
        "skewstep",
        scaled(Duration::from_secs(4), Duration::from_secs(20)),
    );
    let load = Load::start(spec.clone(), rig.endpoints.clone(), &rig.key);
    load.wait_acked(200, Duration::from_secs(30)).await.unwrap();
    let before = write_ten(&api, &session, "before the step").await;
    std::fs::write(&file, "-300\n").unwrap();
    let stepped_at = Instant::now();
    // The step shows where the worker reads its clock raw: a key that
    // expires 2 s from now is refused by worker 1 once expired, and still
    // accepted by worker 0, whose clock went back 5 minutes.
    let key = rig
        .cluster
        .ctl
        .json(&[
            "key",
            "create",
            "--org",
            &rig.org,
            "--name",
            "expires-at-once",
            "--scopes",
            "read",
            "--expires-in",
            "2s",
        ])
        .await
        .unwrap();
    let secret = key["key"].as_str().unwrap().to_owned();
    eventually(
        "worker 0's clock stepped back",
        Duration::from_secs(15),
        async || {
            let mut got = Vec::new();
            for w in 0..2 {
                let (status, _) = Api::new(rig.worker(w), Some(&secret))
                    .get("/api/v1/memories?limit=1")
                    .await;
                got.push(status);
            }
            anyhow::ensure!(got == [200, 401], "the expired key answered {got:?}");
            anyhow::Ok(())
        },
    )
    .await
    .unwrap();
    let step_seen_ms = stepped_at.elapsed().as_millis() as u64;
    let after = write_ten(&api, &session, "after the step").await;
    load.wait_acked(200, Duration::from_secs(30)).await.unwrap();
    // the load's own length (20 s in the long variant)
    tokio::time::sleep_until((load.started() + spec.duration).into()).await;
    let elapsed = load.started().elapsed();
    let history = load.finish().await.unwrap();
    let report = rig.check(&history, &spec).await.unwrap();
    eprintln!("clock stepped back: {report}");
    // the only ids the load did not send: the 20 the worker named
    let mut named: Vec<&str> = before
        .iter()
        .chain(&after)
        .map(|(id, _)| id.as_str())
        .collect();
    let mut unknown: Vec<&str> = report.unknown_ids.iter().map(String::as_str).collect();
    named.sort_unstable();
    unknown.sort_unstable();
    unknown.dedup();
    assert_eq!(unknown, named, "{report}");
    assert!(report.acknowledged_lost.is_empty(), "{report}");
    assert!(report.visible_duplicates.is_empty(), "{report}");
    assert_eq!(report.unfinished_batches, 0, "{report}");
    assert_eq!(report.acknowledged, report.sent, "{report}");
    assert_eq!(report.permanent_refusals, 0, "{report}");

    // stamped after what came before, not 5 min back
    let last_before = before.last().unwrap().1;
    assert!(
        after.windows(2).all(|p| p[0].1 < p[1].1) && after[0].1 > last_before,
        "stamps went back with the clock: before {before:?}, after {after:?}"
    );
    assert!(
        after[0].1 > now_micros() - 120_000_000,
        "stamped {} s behind our clock",
        (now_micros() - after[0].1) / 1_000_000
    );
    let expected: Vec<(String, i64)> = before.iter().chain(&after).cloned().collect();
    rig.arc.flush_buffers().unwrap();
    for w in 0..2 {
        let rows = list_ids(
            &Api::new(rig.worker(w), Some(&rig.key)),
            &format!("/api/v1/sessions/{session}/memories"),
        )
        .await;
        assert_eq!(rows, expected, "worker {w}: the session in write order");
    }
    print_figures(
        "clock_stepped_back",
        json!({
            "workers": 2,
            "step_seconds": -300,
            "step_seen_through_an_expired_key_ms": step_seen_ms,
            "load_seconds": elapsed.as_secs_f64(),
            "report": report_json(&report),
        }),
    );
}
