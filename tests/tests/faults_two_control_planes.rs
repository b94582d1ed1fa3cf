//! Fault scenario 6, two control-plane replicas on one PostgreSQL: one real
//! PostgreSQL, one etcd, two `memtrace-control-plane` processes on the same
//! database, etcd prefix and keys, and two workers under REST and gRPC
//! streaming load. Both replicas take concurrent admin writes (keys
//! created and revoked, an org override set to ever new values, orgs
//! created) while one of them is killed (SIGKILL) with its calls in flight
//! and started again, a few times. Afterwards: `memtracectl audit verify`
//! passes on both (the chain never forked), what etcd holds converges to
//! the database, a watch on `keys/` from revision 1 never saw a revoked key
//! published live again, every worker refuses every revoked key and
//! accepts every live one, and the checker finds every acknowledged
//! memory once with every write attempt answered.
//! `MEMTRACE_FAULTS_FULL=1` runs the long variant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::state::StateKeys;
use memtrace_proto::state::v1 as state;
use memtrace_tests::api::Api;
use memtrace_tests::cli::Ctl;
use memtrace_tests::cluster::{Cluster, eventually};
use memtrace_tests::faults::replicas::{
    AdminCall, AdminOutcome, KeyEvents, no_answer, republished_after_revocation, tally,
};
use memtrace_tests::faults::{Load, LoadSpec, Rig, RigSpec, print_figures, report_json, scaled};
use memtrace_tests::postgres::PgServer;
use memtrace_tests::watchers::{etcd_bus, fleet};
use prost::Message;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PREFIX: &str = "/memtrace-faults-2cp/v1/";
/// The org override both replicas keep setting.
const SETTING: &str = "arc.write_batch_size";
/// How long etcd may take to hold what the database holds once the
/// admin writes stopped.
const CONVERGE_WITHIN: Duration = Duration::from_secs(10);

/// Where replica `i` answers now (it moves when it is started again).
type Servers = Arc<[Mutex<String>; 2]>;

struct AdminLoad {
    servers: Servers,
    token: String,
    org: String,
    side_org: String,
    deadline: Instant,
    max_calls: usize,
    /// A call to replica `i` has been started and not answered yet.
    in_flight: [AtomicBool; 2],
}

impl AdminLoad {
    fn ctl(&self, replica: usize) -> Ctl {
        Ctl {
            server: self.servers[replica].lock().unwrap().clone(),
            token: self.token.clone(),
            ca_file: None,
        }
    }

    /// Admin calls against `replica` in a loop, bounded by count and time:
    /// create a key, revoke the newest live key of this scenario (either
    /// replica's), set the side org's override to a new value, create an
    /// org.
    async fn run(&self, replica: usize) -> Vec<AdminCall> {
        let mut calls = Vec::new();
        for n in 0..self.max_calls {
            if Instant::now() >= self.deadline {
                break;
            }
            let ctl = self.ctl(replica);
            let started = Instant::now();
            let (op, target, args): (&'static str, String, Vec<String>) = match n % 4 {
                0 => {
                    let name = format!("r{replica}-k{n}");
                    let args = ["key", "create", "--org", &self.org, "--name", &name];
                    let args = [&args[..], &["--scopes", "read"]].concat();
                    let args = args.iter().map(|s| s.to_string()).collect();
                    ("key.create", name, args)
                }
                1 => {
                    let Some(id) = newest_live_key(&ctl, &self.org).await else {
                        continue;
                    };
                    let args = ["key", "revoke", id.as_str()];
                    ("key.revoke", id.clone(), args.map(str::to_owned).to_vec())
                }
                2 => {
                    let value = (1000 * (replica + 1) + n).to_string();
                    let args = ["config", "set", SETTING, &value, "--org", &self.side_org];
                    (
                        "config.set",
                        value.clone(),
                        args.map(str::to_owned).to_vec(),
                    )
                }
                _ => {
                    let name = format!("r{replica}-o{n}");
                    let args = ["org", "create", name.as_str()];
                    ("org.create", name.clone(), args.map(str::to_owned).to_vec())
                }
            };
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            args.extend(["--output", "json"]);
            let mut created_key = None;
            self.in_flight[replica].store(true, Ordering::Release);
            let answer = ctl.run(&args).await;
            self.in_flight[replica].store(false, Ordering::Release);
            let outcome = match answer {
                Ok(out) if out.success => {
                    if op == "key.create" {
                        let key = out.json().unwrap();
                        created_key = Some((
                            key["id"].as_str().unwrap().to_owned(),
                            key["key"].as_str().unwrap().to_owned(),
                        ));
                    }
                    AdminOutcome::Ok
                }
                Ok(out) if no_answer(&out.stderr) => AdminOutcome::NoAnswer(out.stderr),
                Ok(out) => AdminOutcome::Refused(out.stderr),
                Err(e) => AdminOutcome::NoAnswer(format!("{e:#}")),
            };
            if outcome != AdminOutcome::Ok {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            calls.push(AdminCall {
                replica,
                op,
                target,
                outcome,
                created_key,
                started,
                ended: Instant::now(),
            });
        }
        calls
    }
}

/// The newest live key this scenario created (named `r<replica>-k<n>`).
async fn newest_live_key(ctl: &Ctl, org: &str) -> Option<String> {
    let listed = ctl.json(&["key", "list", "--org", org]).await.ok()?;
    listed["keys"]
        .as_array()?
        .iter()
        .filter(|k| k["name"].as_str().is_some_and(|n| n.starts_with('r')))
        .filter_map(|k| k["id"].as_str())
        .next_back()
        .map(str::to_owned)
}

/// What etcd holds, opened with the fleet key: api keys (id → (org,
/// revoked)), live org ids, and the side org's override.
struct Published {
    keys: BTreeMap<String, (String, bool)>,
    orgs: Vec<String>,
    setting: Option<String>,
}

async fn published(cluster: &Cluster, side_org: &str) -> anyhow::Result<Published> {
    let bus = etcd_bus(&cluster.etcd.endpoint()).await?;
    let fleet = fleet(&cluster.fleet_key)?;
    let keys = StateKeys::new(&cluster.prefix);
    let open = |key: &str, value: &[u8]| -> anyhow::Result<Vec<u8>> {
        let path = keys.relative(key).unwrap_or(key);
        Ok(memtrace_common::state::open_record(&fleet, path, value)?.to_vec())
    };
    let mut out = Published {
        keys: BTreeMap::new(),
        orgs: Vec::new(),
        setting: None,
    };
    for kv in bus.load(&format!("{}keys/", keys.prefix())).await?.kvs {
        let r = state::ApiKeyRecord::decode(open(&kv.key, &kv.value)?.as_slice())?;
        out.keys.insert(r.key_id, (r.org_id, r.revoked));
    }
    for kv in bus.load(&format!("{}orgs/", keys.prefix())).await?.kvs {
        let r = state::OrgRecord::decode(open(&kv.key, &kv.value)?.as_slice())?;
        if !r.deleted {
            out.orgs.push(r.org_id);
        }
    }
    let setting = keys.org_setting(side_org, SETTING);
    if let Some(kv) = bus.load(&setting).await?.kvs.into_iter().next() {
        let r = state::SettingRecord::decode(open(&kv.key, &kv.value)?.as_slice())?;
        out.setting = Some(r.value_json);
    }
    Ok(out)
}

/// What the database holds, through `ctl`: api keys of `org` (id →
/// revoked), org ids, and the side org's override.
async fn stored(ctl: &Ctl, org: &str, side_org: &str) -> anyhow::Result<Published> {
    let listed = ctl.json(&["key", "list", "--org", org, "--all"]).await?;
    let mut keys = BTreeMap::new();
    for k in listed["keys"].as_array().into_iter().flatten() {
        let id = k["id"].as_str().unwrap_or_default().to_owned();
        keys.insert(id, (org.to_owned(), !k["revoked_at"].is_null()));
    }
    let orgs = ctl.json(&["org", "list"]).await?;
    let orgs = orgs["orgs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["id"].as_str().map(str::to_owned))
        .collect();
    let got = ctl
        .json(&["config", "get", SETTING, "--org", side_org])
        .await?;
    Ok(Published {
        keys,
        orgs,
        setting: Some(got["value"].to_string()),
    })
}

/// Where etcd and the database differ (empty: converged).
fn differences(etcd: &Published, db: &Published, org: &str) -> Vec<String> {
    let mut diff = Vec::new();
    for (id, (_, revoked)) in &db.keys {
        match etcd.keys.get(id) {
            Some((_, r)) if r == revoked => {}
            other => diff.push(format!("key {id}: db revoked={revoked}, etcd {other:?}")),
        }
    }
    for (id, (key_org, _)) in &etcd.keys {
        if key_org == org && !db.keys.contains_key(id) {
            diff.push(format!("key {id} in etcd only"));
        }
    }
    let (mut a, mut b) = (etcd.orgs.clone(), db.orgs.clone());
    a.sort();
    b.sort();
    if a != b {
        diff.push(format!("orgs: etcd {a:?}, db {b:?}"));
    }
    if etcd.setting != db.setting {
        diff.push(format!(
            "{SETTING}: etcd {:?}, db {:?}",
            etcd.setting, db.setting
        ));
    }
    diff
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_keep_one_chain_and_converge() {
    let pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let db_url = pg.fresh_database("replicas").unwrap();
    let rig = Rig::start(RigSpec::new(PREFIX, 2).database_url(&db_url))
        .await
        .unwrap();
    let mut replica = rig.cluster.replica().await.unwrap();
    let side_org = rig.cluster.org("side").await.unwrap();
    let phase = scaled(Duration::from_secs(6), Duration::from_secs(90));
    let kills = if memtrace_tests::faults::full() { 8 } else { 3 };
    let key_events = KeyEvents::start(
        &rig.cluster.etcd.endpoint(),
        PREFIX,
        &rig.cluster.fleet_key,
        phase * 4 + Duration::from_secs(120),
    )
    .await
    .unwrap();

    // long enough for every phase; `finish` ends it
    let spec = LoadSpec::new("twocp", phase * 4);
    let load = Load::start(spec.clone(), rig.endpoints.clone(), &rig.key);
    load.wait_acked(100, Duration::from_secs(30)).await.unwrap();

    let servers: Servers = Arc::new([
        Mutex::new(rig.cluster.control_plane.url()),
        Mutex::new(replica.url()),
    ]);
    let admin = Arc::new(AdminLoad {
        servers: servers.clone(),
        token: rig.cluster.ctl.token.clone(),
        org: rig.org.clone(),
        side_org: side_org.clone(),
        deadline: Instant::now() + phase,
        max_calls: if memtrace_tests::faults::full() {
            4000
        } else {
            400
        },
        in_flight: [AtomicBool::new(false), AtomicBool::new(false)],
    });
    let admin_started = Instant::now();
    let tasks: Vec<_> = (0..2)
        .map(|r| {
            let admin = admin.clone();
            tokio::spawn(async move { admin.run(r).await })
        })
        .collect();

    // replica 1 killed with calls in flight, started again, a few times
    let mut kill_times = Vec::new();
    let mut restart_ms = Vec::new();
    for k in 0..kills {
        tokio::time::sleep(phase / (kills + 1)).await;
        // with a call in flight: past the CLI's start, into the replica's
        // handling of it (a few ms in, varied per kill)
        let waiting = Instant::now();
        while !admin.in_flight[1].load(Ordering::Acquire)
            && waiting.elapsed() < Duration::from_millis(500)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(4 + 3 * (k as u64 % 4))).await;
        kill_times.push(Instant::now());
        replica.kill().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        replica = rig.cluster.replica().await.unwrap();
        restart_ms.push(started.elapsed().as_millis() as u64);
        *servers[1].lock().unwrap() = replica.url();
    }
    let mut calls = Vec::new();
    for task in tasks {
        calls.extend(task.await.unwrap());
    }
    let admin_ended = Instant::now();

    // both replicas verify one unbroken chain
    let ctls = [
        rig.cluster.ctl_for(&rig.cluster.control_plane),
        rig.cluster.ctl_for(&replica),
    ];
    let mut verified = Vec::new();
    for ctl in &ctls {
        let v = ctl.json(&["audit", "verify"]).await.unwrap();
        assert_eq!(
            (v["ok"].clone(), v["status"].clone()),
            (true.into(), "ok".into()),
            "audit verify on {}: {v}",
            ctl.server
        );
        verified.push(v["entries"].as_u64().unwrap());
    }
    assert_eq!(verified[0], verified[1], "both replicas walk one chain");
    let acknowledged_changes = calls
        .iter()
        .filter(|c| c.outcome == AdminOutcome::Ok)
        .count() as u64;
    assert!(
        verified[0] >= acknowledged_changes,
        "{} audit entries for {acknowledged_changes} acknowledged changes",
        verified[0]
    );

    // etcd converges to the database
    let converged_after = Instant::now();
    let db = eventually(
        "etcd holds the database's state",
        CONVERGE_WITHIN,
        async || {
            let db = stored(&ctls[0], &rig.org, &side_org)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let etcd = published(&rig.cluster, &side_org)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let diff = differences(&etcd, &db, &rig.org);
            if diff.is_empty() {
                Ok(db)
            } else {
                Err(diff.join("; "))
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nreplica 0 log tail:\n{}\nreplica 1 log tail:\n{}",
            tail(&rig.cluster.control_plane.logs()),
            tail(&replica.logs())
        )
    });
    let converge_ms = converged_after.elapsed().as_millis() as u64;
    // and every worker applied what was published last
    let status = ctls[1].json(&["status"]).await.unwrap();
    let last_published = status["published_revision"].as_i64().unwrap();
    rig.cluster.wait_applied(last_published).await.unwrap();

    // every acknowledged revocation committed (whichever replica took it)
    for call in calls
        .iter()
        .filter(|c| c.op == "key.revoke" && c.outcome == AdminOutcome::Ok)
    {
        assert_eq!(
            db.keys.get(&call.target).map(|(_, revoked)| *revoked),
            Some(true),
            "key {} revoked through replica {} is not revoked in the database",
            call.target,
            call.replica
        );
    }

    // no revoked key was ever published live again
    let events = key_events.caught_up(Duration::from_secs(10)).await.unwrap();
    let republished = republished_after_revocation(&events);
    assert!(
        republished.is_empty(),
        "revoked keys published live again (key, revoked at, live again at): {republished:?}"
    );

    // every worker refuses every revoked key and accepts every live one
    let secrets: BTreeMap<String, String> =
        calls.iter().filter_map(|c| c.created_key.clone()).collect();
    let (mut refused, mut accepted) = (0, 0);
    for w in rig.workers.iter().flatten() {
        for (id, secret) in &secrets {
            let Some((_, revoked)) = db.keys.get(id) else {
                panic!("key {id} was acknowledged but is not in the database");
            };
            let api = Api::new(w, Some(secret));
            let (status, body) = api
                .get("/api/v1/memories?agent_id=twocp-check&limit=1")
                .await;
            let want = if *revoked { 401 } else { 200 };
            assert_eq!(
                status,
                want,
                "key {id} (revoked={revoked}) on {}: {body}",
                w.url()
            );
            if *revoked {
                refused += 1
            } else {
                accepted += 1
            }
        }
    }
    assert!(
        refused > 0 && accepted > 0,
        "refused {refused}, accepted {accepted}"
    );

    // the data plane never noticed
    load.wait_acked(100, Duration::from_secs(30)).await.unwrap();
    let elapsed = load.started().elapsed();
    let history = load.finish().await.unwrap();
    let writes = history
        .lock()
        .unwrap()
        .attempts_between(admin_started, admin_ended);
    let report = rig.check(&history, &spec).await.unwrap();
    eprintln!("two control planes: {report}");
    report.assert_clean("two control planes");
    assert_eq!(report.unfinished_batches, 0, "{report}");
    assert_eq!(report.acknowledged, report.sent, "{report}");
    assert!(writes.0 > 0, "writes went on");
    assert_eq!(writes.1, 0, "a write failed during the admin writes");

    let interrupted = calls
        .iter()
        .filter(|c| {
            matches!(c.outcome, AdminOutcome::NoAnswer(_))
                && kill_times.iter().any(|k| c.started <= *k && *k <= c.ended)
        })
        .count();
    assert!(
        interrupted > 0,
        "no kill cut an admin call in flight ({kills} kills)"
    );
    let revoked = db.keys.values().filter(|(_, r)| *r).count();
    print_figures(
        "two_control_planes",
        json!({
            "workers": 2,
            "replicas": 2,
            "kills": kills,
            "load_seconds": elapsed.as_secs_f64(),
            "admin_seconds": (admin_ended - admin_started).as_secs_f64(),
            "admin_calls": calls.len(),
            "admin_calls_in_flight_at_a_kill": interrupted,
            "admin_outcomes": tally(&calls),
            "replica_ready_after_restart_ms": restart_ms,
            "audit_entries": verified[0],
            "converged_ms": converge_ms,
            "keys_in_db": db.keys.len(),
            "keys_revoked": revoked,
            "key_events_watched": events.len(),
            "workers_refused_revoked": refused,
            "workers_accepted_live": accepted,
            "write_attempts_during_admin": [writes.0, writes.1],
            "report": report_json(&report),
        }),
    );
    drop(pg);
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
