//! Migrating from the Go memtrace: a SQLite file in its schema and its
//! encryption (built here: an `mtk_` key of 32 random bytes, bcrypt-hashed,
//! an Arc key sealed with AES-256-GCM under a random master key in a 0600
//! file) goes through `memtracectl import legacy` — dry run (nothing
//! changes), for real, again (everything skipped) — and then the imported
//! key drives the pinned Python SDK against a real worker on the org's Arc
//! stand-in, with the deprecation headers, the per-org counter, the
//! original agents and sessions listed with their ids and times, the
//! import in the audit trail, and the per-org setting turning the key off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use memtrace_common::legacy_keys::{generate_legacy_api_key, legacy_prefix, seal_legacy_secret};
use memtrace_proto::v1 as pb;
use memtrace_tests::cluster::{Cluster, arc_with_token, eventually};
use memtrace_tests::grpc::{channel, get_text, with_key};
use memtrace_tests::python::{ContractMode, run_contract, sdk_python};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const PREFIX: &str = "/memtrace-legacy/v1/";
const ARC_TOKEN: &str = "arc-legacy-import-token-0123456789";
const ARC_DATABASE: &str = "legacyimport";
const ORG: &str = "org_0a1b2c3d4e5f60718293a4b5";
const ORG_ACME: &str = "org_default";
const AGENT: &str = "agent_1122334455667788990aabbc";
const SESSION: &str = "sess_aabbccddeeff001122334455";

/// The Go memtrace's metadata schema (internal/metadata, v0.2.0).
const SCHEMA: &str = "
CREATE TABLE organizations (id TEXT PRIMARY KEY, name TEXT NOT NULL,
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP, settings_json TEXT DEFAULT '{}');
CREATE TABLE api_keys (id INTEGER PRIMARY KEY AUTOINCREMENT, key_hash TEXT NOT NULL,
  key_prefix TEXT NOT NULL, name TEXT NOT NULL UNIQUE, org_id TEXT REFERENCES organizations(id),
  permissions TEXT DEFAULT 'read,write', created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
  expires_at DATETIME, enabled INTEGER DEFAULT 1);
CREATE INDEX idx_api_keys_prefix ON api_keys(key_prefix);
CREATE TABLE agents (id TEXT PRIMARY KEY, org_id TEXT REFERENCES organizations(id), name TEXT NOT NULL,
  description TEXT, config_json TEXT DEFAULT '{}', created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
  last_active_at DATETIME, UNIQUE(org_id, name));
CREATE TABLE sessions (id TEXT PRIMARY KEY, org_id TEXT REFERENCES organizations(id),
  agent_id TEXT REFERENCES agents(id), status TEXT DEFAULT 'active', metadata_json TEXT,
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
  closed_at DATETIME);
CREATE TABLE arc_instances (id TEXT PRIMARY KEY, org_id TEXT UNIQUE REFERENCES organizations(id)
  ON DELETE CASCADE, url TEXT NOT NULL, api_key_cipher BLOB, api_key_nonce BLOB, database TEXT NOT NULL,
  measurement TEXT DEFAULT 'events', created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
  updated_at DATETIME DEFAULT CURRENT_TIMESTAMP);
";

/// Writes the legacy file and the master key file; returns the live key.
fn legacy_db(dir: &Path, arc_url: &str) -> String {
    let mut master = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut master);
    let key_file = dir.join("legacy-master.key");
    std::fs::write(
        &key_file,
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(master)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let db = rusqlite::Connection::open(dir.join("memtrace.db")).unwrap();
    db.execute_batch(SCHEMA).unwrap();
    db.execute(
        "INSERT INTO organizations (id, name) VALUES (?1, 'legacy-co')",
        [ORG],
    )
    .unwrap();
    // its name is taken here: imported under a mapped one
    db.execute(
        "INSERT INTO organizations (id, name) VALUES (?1, 'acme')",
        [ORG_ACME],
    )
    .unwrap();
    let (cipher, nonce) = seal_legacy_secret(&master, ARC_TOKEN.as_bytes());
    db.execute(
        "INSERT INTO arc_instances (id, org_id, url, api_key_cipher, api_key_nonce, database) \
         VALUES ('arc_00112233445566778899aabb', ?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![ORG, arc_url, cipher, nonce.to_vec(), ARC_DATABASE],
    )
    .unwrap();
    let key = generate_legacy_api_key();
    for (name, token, enabled) in [
        ("agent-key", key.as_str().to_owned(), 1),
        ("old-key", generate_legacy_api_key().to_string(), 0),
    ] {
        // cost 4: the worker accepts any cost
        let hash = bcrypt::hash(&token, 4).unwrap();
        db.execute(
            "INSERT INTO api_keys (key_hash, key_prefix, name, org_id, created_at, enabled) \
             VALUES (?1, ?2, ?3, ?4, '2025-01-02 15:04:05', ?5)",
            rusqlite::params![hash, legacy_prefix(&token), name, ORG, enabled],
        )
        .unwrap();
    }
    db.execute(
        "INSERT INTO agents (id, org_id, name, description, created_at) \
         VALUES (?1, ?2, 'planner', 'plans things', '2025-01-02 15:04:05')",
        [AGENT, ORG],
    )
    .unwrap();
    db.execute(
        "INSERT INTO sessions (id, org_id, agent_id, status, metadata_json, created_at, updated_at) \
         VALUES (?1, ?2, ?3, 'active', '{\"ticket\":\"T-1\"}', '2025-01-03 10:00:00', '2025-01-03 11:30:00')",
        [SESSION, ORG, AGENT],
    )
    .unwrap();
    key.to_string()
}

/// Asserts the report's (imported, skipped) of orgs, of api keys and of
/// every other kind.
fn assert_counts(report: &Value, orgs: (u64, u64), others: (u64, u64), api_keys: (u64, u64)) {
    for kind in ["org", "arc_binding", "api_key", "agent", "session"] {
        let c = &report["counts"][kind];
        let got = (
            c["imported"].as_u64().unwrap(),
            c["skipped"].as_u64().unwrap(),
        );
        let want = match kind {
            "org" => orgs,
            "api_key" => api_keys,
            _ => others,
        };
        assert_eq!(got, want, "{kind}: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_memtrace_is_imported_and_its_keys_keep_working() {
    let python = sdk_python().await.unwrap();
    let c = Cluster::start(PREFIX).await.unwrap();
    let arc = arc_with_token(ARC_TOKEN, ARC_DATABASE).await.unwrap();
    let legacy = tempfile::tempdir().unwrap();
    let key = legacy_db(legacy.path(), &arc.url());
    let db = legacy.path().join("memtrace.db");
    let master = legacy.path().join("legacy-master.key");
    let import = |dry_run: bool| {
        let mut args = vec![
            "import".to_owned(),
            "legacy".into(),
            "--db".into(),
            db.to_str().unwrap().into(),
            "--legacy-master-key-file".into(),
            master.to_str().unwrap().into(),
        ];
        if dry_run {
            args.push("--dry-run".into());
        }
        args
    };
    let run = async |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.ctl.json(&args).await.unwrap()
    };

    // a master key file others can read is refused, naming the flag
    std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = import(true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = c.ctl.run(&args).await.unwrap();
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("--legacy-master-key-file") && refused.stderr.contains("chmod 600"),
        "{}",
        refused.stderr
    );
    std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o600)).unwrap();

    c.org("acme").await.unwrap();

    // dry run: the plan, and nothing changes
    let plan = run(import(true)).await;
    assert_eq!(plan["dry_run"], true);
    // the disabled key is skipped
    assert_counts(&plan, (2, 0), (1, 0), (1, 1));
    let orgs = c.ctl.json(&["org", "list"]).await.unwrap();
    assert!(!orgs.to_string().contains(ORG), "{orgs}");
    assert_eq!(plan["notes"][0]["id"], ORG_ACME, "{plan}");
    assert_eq!(
        arc.stats().db(ARC_DATABASE).rows,
        0,
        "nothing written to Arc"
    );

    // for real
    let done = run(import(false)).await;
    assert_counts(&done, (2, 0), (1, 0), (1, 1));
    assert!(
        done.to_string().contains("disabled in the Go memtrace"),
        "{done}"
    );

    let acme = c.ctl.json(&["org", "get", ORG_ACME]).await.unwrap();
    assert_eq!(acme["name"], format!("acme ({ORG_ACME})"), "{acme}");

    // again: everything exists
    let again = run(import(false)).await;
    assert_counts(&again, (0, 2), (0, 1), (0, 2));
    assert!(
        !format!("{plan}{done}{again}").contains(ARC_TOKEN),
        "the Arc key is never printed"
    );

    // the key is listed as legacy; the imports are audited
    let keys = c.ctl.json(&["key", "list", "--org", ORG]).await.unwrap();
    let listed = &keys["keys"][0];
    assert_eq!(listed["legacy"], true, "{keys}");
    assert_eq!(
        listed["id"],
        format!("key_{}", legacy_prefix(&key)),
        "{keys}"
    );
    let audit = c
        .ctl
        .json(&["audit", "list", "--limit", "100"])
        .await
        .unwrap();
    for action in [
        "org.create",
        "arc.bind",
        "key.import_legacy",
        "import.legacy_state",
    ] {
        assert!(
            audit["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == action),
            "{action} audited: {audit}"
        );
    }
    let arc_writes: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "import.legacy_state" && e["target"] == ORG)
        .collect();
    assert_eq!(
        arc_writes.len(),
        1,
        "only the run that wrote is audited: {audit}"
    );
    assert_eq!(arc_writes[0]["details"]["agents_imported"], 1, "{audit}");
    assert_eq!(arc_writes[0]["details"]["sessions_imported"], 1, "{audit}");

    // the key, in its old format, through the pinned Python SDK
    let worker = c.worker("legacy", &[]).await.unwrap();
    let contract = run_contract(
        &python,
        &worker.url(),
        &key,
        None,
        ContractMode::Full,
        Duration::from_secs(180),
    )
    .await
    .unwrap();
    assert!(contract.success, "{}\n{}", contract.report(), worker.logs());
    assert!(
        contract.stdout.contains("contract: PASSED"),
        "{}",
        contract.report()
    );

    // a plain request: deprecation headers, the original agent and session
    let http = memtrace_tests::http_client();
    let get = async |path: &str| {
        http.get(format!("{}{path}", worker.url()))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap()
    };
    let agents = get(&format!("/api/v1/agents/{AGENT}")).await;
    assert_eq!(agents.status(), 200);
    assert_eq!(agents.headers()["deprecation"], "true");
    let warning = agents.headers()["warning"].to_str().unwrap().to_owned();
    assert!(
        warning.starts_with("299 - ") && warning.contains("memtracectl key create"),
        "{warning}"
    );
    let agent: Value = agents.json().await.unwrap();
    assert_eq!(agent["name"], "planner", "{agent}");
    assert!(
        agent["created_at"]
            .as_str()
            .unwrap()
            .starts_with("2025-01-02T15:04:05"),
        "{agent}"
    );
    let session: Value = get(&format!("/api/v1/sessions/{SESSION}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(session["agent_id"], AGENT, "{session}");
    assert_eq!(session["metadata"]["ticket"], "T-1", "{session}");
    assert!(
        session["created_at"]
            .as_str()
            .unwrap()
            .starts_with("2025-01-03T10:00:00"),
        "{session}"
    );
    assert!(
        session["updated_at"]
            .as_str()
            .unwrap()
            .starts_with("2025-01-03T11:30:00"),
        "{session}"
    );

    // gRPC: the same metadata (tonic merges a unary call's trailers into it)
    let mut grpc = pb::agent_service_client::AgentServiceClient::new(channel(&worker.url()).await);
    let got = grpc
        .get_agent(with_key(
            Some(&key),
            pb::AgentRef {
                id: AGENT.into(),
                cascade: false,
            },
        ))
        .await
        .unwrap();
    assert_eq!(got.metadata().get("deprecation").unwrap(), "true");
    assert!(
        got.metadata()
            .get("warning")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("legacy memtrace API key")
    );
    assert_eq!(got.get_ref().name, "planner");

    // counted per org
    let series = format!("memtrace_legacy_key_requests_total{{org=\"{ORG}\"}}");
    let n = sample(&get_text(&worker.url(), "/metrics").await, &series);
    assert!(n >= 4.0, "{series} = {n}");

    // turned off for the org: the SDK's "invalid API key", still marked deprecated
    c.ctl
        .json(&[
            "config",
            "set",
            "auth.legacy_keys_enabled",
            "false",
            "--org",
            ORG,
        ])
        .await
        .unwrap();
    let refused = eventually("legacy keys off", Duration::from_secs(20), async || {
        let r = get("/api/v1/agents").await;
        if r.status() == 401 {
            Ok(r)
        } else {
            Err(r.status().to_string())
        }
    })
    .await
    .unwrap();
    assert_eq!(refused.headers()["deprecation"], "true");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid API key", "{body}");
    let refusals = get_text(&worker.url(), "/metrics").await;
    let series = r#"memtrace_admission_refusals_total{reason="legacy_disabled"}"#;
    assert!(sample(&refusals, series) >= 1.0, "{refusals}");
    assert!(
        !worker.logs().contains(&key),
        "the key never reaches the log"
    );
    assert!(worker.stop().await.unwrap().success());
}

/// The value of the sample `series` (name and labels as exported); 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
