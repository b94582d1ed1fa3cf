//! The real `memtracectl dev` binary: control plane, in-process bus and
//! worker in one process on loopback ports. First start prints the demo api
//! key once and keeps owner-only dev keys; the worker becomes ready; the
//! control plane lists the demo org; a second start in the same data
//! directory reuses the keys and prints no key; the printed key stores a
//! memory through the REST API and reads it back (embedded store, kept
//! across restarts); master and fleet keys never
//! reach the output; a taken port fails with one line naming the setting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::cli::Ctl;
use memtrace_tests::process::{isolated_command, output_within, terminate, wait_for_listen_addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Child;

/// One running `memtracectl dev`.
struct Dev {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    control_plane: std::net::SocketAddr,
    worker: std::net::SocketAddr,
}

impl Dev {
    async fn start(dir: &Path, run: &str) -> Dev {
        let stdout = dir.join(format!("{run}.out"));
        let stderr = dir.join(format!("{run}.log"));
        let mut command = isolated_command("memtracectl", dir).unwrap();
        command
            .args(["dev", "--data-dir"])
            .arg(dir.join("data"))
            .env("MEMTRACE_LOG_FORMAT", "json")
            .env("MEMTRACE_CONTROL_PLANE_LISTEN", "127.0.0.1:0")
            .env("MEMTRACE_SERVER_HOST", "127.0.0.1")
            .env("MEMTRACE_SERVER_PORT", "0")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let mut child = command.spawn().unwrap();
        let within = Duration::from_secs(30);
        let control_plane =
            wait_for_listen_addr(&stderr, &mut child, "control plane listening", within)
                .await
                .unwrap();
        let worker = wait_for_listen_addr(&stderr, &mut child, "worker listening", within)
            .await
            .unwrap();
        Dev {
            child,
            stdout,
            stderr,
            control_plane,
            worker,
        }
    }

    /// Waits until the banner (printed once the demo org exists) is complete.
    async fn banner(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
            if text.contains("client.remember(") && text.trim_end().ends_with('=') {
                return text;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "dev exited with {status}; stdout:\n{text}\nlog:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no banner within 30s; stdout:\n{text}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default() + &self.log()
    }

    async fn wait_worker_ready(&self) -> serde_json::Value {
        let client = memtrace_tests::http_client();
        let url = format!("http://{}/ready", self.worker);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = client.get(&url).send().await
                && response.status() == 200
            {
                return response.json().await.unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "worker /ready never answered 200"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs a memory with the printed api key (retrying while the worker's
    /// snapshot does not know the key yet) and reads it back.
    async fn remember_and_recall(&self, api_key: &str, content: &str) {
        let client = memtrace_tests::http_client();
        let base = format!("http://{}/api/v1/memories", self.worker);
        let body = serde_json::json!({"agent_id": "demo", "content": content});
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let response = client
                .post(&base)
                .header("x-api-key", api_key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            if status == 201 {
                let memory: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(memory["content"], content, "{memory}");
                break;
            }
            assert!(
                status == 401 && Instant::now() < deadline,
                "POST /api/v1/memories answered {status}: {text}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let list: serde_json::Value = client
            .get(format!("{base}?agent_id=demo"))
            .header("x-api-key", api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let found = list["memories"]
            .as_array()
            .unwrap_or_else(|| panic!("no memories in {list}"))
            .iter()
            .any(|m| m["content"] == content);
        assert!(found, "the memory is read back: {list}");
    }

    fn ctl(&self, data: &Path) -> Ctl {
        let token = std::fs::read_to_string(data.join("dev-admin.token")).unwrap();
        Ctl {
            server: format!("http://{}", self.control_plane),
            token: token.trim().to_owned(),
            ca_file: None,
        }
    }

    /// Stops with SIGTERM, or SIGINT (ctrl-c) when `interrupt`.
    async fn stop(mut self, interrupt: bool) -> String {
        let status = if interrupt {
            let pid = self.child.id().unwrap().to_string();
            std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap();
            tokio::time::timeout(Duration::from_secs(15), self.child.wait())
                .await
                .expect("dev did not exit within 15s of SIGINT")
                .unwrap()
        } else {
            terminate(&mut self.child).await.unwrap()
        };
        let output = self.output();
        assert!(
            status.success(),
            "dev did not stop cleanly ({status}):\n{output}"
        );
        for half in ["control plane stopped", "worker stopped"] {
            assert!(output.contains(half), "{half} missing:\n{output}");
        }
        output
    }
}

fn api_keys_in(text: &str) -> Vec<String> {
    regex::Regex::new(r"mtk_[0-9a-f]{16,}")
        .unwrap()
        .find_iter(text)
        .map(|m| m.as_str().to_owned())
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The value of `NAME=` in the dev keys file.
fn key_value(keys_file: &str, name: &str) -> String {
    keys_file
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} missing from dev-keys.env:\n{keys_file}"))
        .trim()
        .to_owned()
}

async fn demo_orgs(ctl: &Ctl) -> Vec<serde_json::Value> {
    let list = ctl.json(&["org", "list"]).await.unwrap();
    list["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["name"] == "demo")
        .cloned()
        .collect()
}

#[tokio::test]
async fn first_start_prints_the_demo_key_once_and_restarts_reuse_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let mut first = Dev::start(dir.path(), "first").await;
    let banner = first.banner().await;
    let keys = api_keys_in(&banner);
    assert!(
        !keys.is_empty(),
        "first start prints the demo api key:\n{banner}"
    );
    assert!(keys.iter().all(|k| k == &keys[0]), "one key:\n{banner}");
    let api_key = keys[0].clone();
    assert!(banner.contains("curl -H"), "{banner}");
    assert!(banner.contains("/api/v1/memories"), "{banner}");
    assert!(banner.contains("from memtrace import Memtrace"), "{banner}");
    assert!(
        banner.contains(&format!("localhost:{}", first.worker.port())),
        "examples use the worker's port:\n{banner}"
    );
    assert!(
        first.log().contains("development-only"),
        "a startup log line labels the keys development-only"
    );

    for file in ["dev-keys.env", "dev-admin.token", "dev-demo.json"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    let keys_file = std::fs::read_to_string(data.join("dev-keys.env")).unwrap();
    assert!(keys_file.contains("DEVELOPMENT-ONLY"), "{keys_file}");
    let master = key_value(&keys_file, "MEMTRACE_MASTER_KEY");
    let fleet = key_value(&keys_file, "MEMTRACE_FLEET_KEY");
    assert!(
        data.join("memtrace.db").is_file(),
        "sqlite db in the data dir"
    );

    let ready = first.wait_worker_ready().await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let ctl = first.ctl(&data);
    let demo = demo_orgs(&ctl).await;
    assert_eq!(demo.len(), 1, "{demo:?}");
    let org_id = demo[0]["id"].as_str().unwrap().to_owned();
    assert!(banner.contains(&org_id), "{banner}");
    first.remember_and_recall(&api_key, "hello").await;

    let output = first.stop(false).await;
    for secret in [&master, &fleet] {
        assert!(
            !output.contains(secret.as_str()),
            "a master/fleet key leaked into the output"
        );
    }

    let mut second = Dev::start(dir.path(), "second").await;
    let banner = second.banner().await;
    assert!(
        api_keys_in(&banner).is_empty(),
        "a restart prints no api key:\n{banner}"
    );
    assert!(banner.contains(&org_id), "{banner}");
    // the banner appears only once the control plane answers admin calls
    let ctl = second.ctl(&data);
    let demo = demo_orgs(&ctl).await;
    second.wait_worker_ready().await;
    assert_eq!(demo.len(), 1, "no second demo org: {demo:?}");
    assert_eq!(demo[0]["id"], org_id.as_str());
    let keys = ctl.json(&["key", "list", "--org", &org_id]).await.unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
    // the key printed on the first start still works, and the embedded store kept the data
    second.remember_and_recall(&api_key, "hello again").await;
    let output = second.stop(true).await;
    assert_eq!(
        std::fs::read_to_string(data.join("dev-keys.env")).unwrap(),
        keys_file,
        "the keys are generated once and reused"
    );
    for secret in [&master, &fleet, &api_key] {
        assert!(
            !output.contains(secret.as_str()),
            "a secret appeared on the second start"
        );
    }
}

#[tokio::test]
async fn a_taken_port_fails_with_one_line_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (var, value, setting) in [
        (
            "MEMTRACE_CONTROL_PLANE_LISTEN",
            addr.clone(),
            "MEMTRACE_CONTROL_PLANE_LISTEN",
        ),
        (
            "MEMTRACE_SERVER_PORT",
            taken.local_addr().unwrap().port().to_string(),
            "MEMTRACE_SERVER_PORT",
        ),
    ] {
        let mut command = isolated_command("memtracectl", dir.path()).unwrap();
        command
            .args(["dev", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("MEMTRACE_CONTROL_PLANE_LISTEN", "127.0.0.1:0")
            .env("MEMTRACE_SERVER_HOST", "127.0.0.1")
            .env("MEMTRACE_SERVER_PORT", "0")
            .env(var, &value)
            .stdout(Stdio::piped());
        let out = output_within(command, Duration::from_secs(30))
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "one error line:\n{stderr}");
        let line = errors[0];
        assert!(line.contains(&addr), "{line}");
        assert!(line.contains(setting), "{line}");
        assert!(out.stdout.is_empty(), "no banner when a port is taken");
    }
}

/// Rows of `table` in an embedded org file (0 when the table is missing).
fn embedded_rows(file: &Path, table: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| {
        r.get(0)
    })
    .unwrap_or(0)
}

#[tokio::test]
async fn deleting_an_org_erases_its_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut dev = Dev::start(dir.path(), "erase").await;
    let banner = dev.banner().await;
    let api_key = api_keys_in(&banner)[0].clone();
    dev.wait_worker_ready().await;
    let ctl = dev.ctl(&data);
    let org_id = demo_orgs(&ctl).await[0]["id"].as_str().unwrap().to_owned();
    dev.remember_and_recall(&api_key, "forget me").await;
    let file = data.join("embedded").join(format!("{org_id}.db"));
    assert!(embedded_rows(&file, "events") > 0, "the memory is stored");

    ctl.json(&["org", "delete", &org_id]).await.unwrap();
    let job = memtrace_tests::cluster::eventually(
        "the org's erasure done",
        Duration::from_secs(30),
        async || {
            let list = ctl
                .json(&["erasure", "list", "--org", &org_id])
                .await
                .map_err(|e| format!("{e:#}"))?;
            let job = list["erasures"][0].clone();
            if job["state"] == "done" {
                Ok(job)
            } else {
                Err(list.to_string())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", dev.log()));
    assert_eq!(job["scope"], serde_json::json!({"whole_org": true}));
    assert_eq!(job["target"]["host"], "embedded", "{job}");
    assert!(
        job["rows_removed"]["events"].as_u64().unwrap() >= 1,
        "{job}"
    );
    for table in ["events", "memory_versions", "agents", "sessions"] {
        assert_eq!(job["verification"][table]["remaining"], 0, "{job}");
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut path = file.clone().into_os_string();
        path.push(suffix);
        assert!(
            !Path::new(&path).exists(),
            "the org's embedded file {} is removed",
            Path::new(&path).display()
        );
    }
    let receipt = &job["receipt"];
    assert_eq!(receipt["receipt"]["target"]["store"], "embedded", "{job}");
    assert!(
        receipt["signature"]["value"].is_string(),
        "a signed receipt: {job}"
    );
    dev.stop(false).await;
}
