//! TLS on both planes, against the real binaries and certificates from a
//! throw-away PKI: `memtracectl --server https://… --ca-file …` drives the
//! control plane (the admin token from a file, the Arc key from stdin; a
//! secret passed in argv warns and never reaches a log); the worker answers
//! REST over https (h2 or HTTP/1.1, as the client's ALPN offers) and gRPC
//! over TLS; plaintext clients and clients of another CA get nothing; a
//! half-set or mismatched pair refuses the start naming the settings; and a
//! certificate replaced on disk is served without a restart, while a pair
//! that does not match is logged and ignored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_proto::v1 as pb;
use memtrace_tests::api::Api;
use memtrace_tests::cli::{memtracectl, memtracectl_with_stdin};
use memtrace_tests::cluster::{Cluster, arc_with_token, eventually};
use memtrace_tests::control_plane::{self, ControlPlane, ControlPlaneSpec};
use memtrace_tests::grpc::with_key;
use memtrace_tests::https_client;
use memtrace_tests::pki::{ServedTls, TestPki};
use memtrace_tests::process::{isolated_command, output_within};
use pb::memory_service_client::MemoryServiceClient;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const PREFIX: &str = "/memtrace-tls/v1/";
const ARC_KEY: &str = "arc-tls-test-secret-0123456789abcdef";
const DB: &str = "tlstest";

fn subdir(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).unwrap();
    path
}

/// Puts `from` in place of `to` whole (written aside, then renamed), as a
/// Kubernetes secret update swaps files.
fn install(from: &Path, to: &Path) {
    let aside = PathBuf::from(format!("{}.new", to.display()));
    std::fs::copy(from, &aside).unwrap();
    std::fs::rename(&aside, to).unwrap();
}

/// Serves `pki`'s pair from files of their own under `dir`, so a test can
/// replace them.
fn served_copy(pki: &TestPki, dir: &Path, name: &str) -> ServedTls {
    let served = ServedTls {
        cert_file: dir.join(format!("{name}.pem")),
        key_file: dir.join(format!("{name}.key")),
        ca_file: pki.ca.clone(),
    };
    install(&pki.server_cert, &served.cert_file);
    install(&pki.server_key, &served.key_file);
    served
}

/// `GET url` trusting only `ca`; the status, or why it failed.
async fn status(url: &str, ca: &Path) -> Result<u16, String> {
    https_client(ca)
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_planes_serve_tls_to_the_cli_rest_and_grpc_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(&subdir(dir.path(), "pki"), "client").unwrap();
    let other = TestPki::create(&subdir(dir.path(), "other"), "client").unwrap();
    let c = Cluster::start_with_tls(PREFIX, Some(pki.served()))
        .await
        .unwrap();
    let url = c.control_plane.url();
    assert!(url.starts_with("https://"), "{url}");
    let ca = pki.ca.to_str().unwrap();
    let token = c.ctl.token.clone();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let token_file = token_file.to_str().unwrap();
    let tls_args = ["--server", url.as_str(), "--ca-file", ca];
    let token_env = [("MEMTRACE_ADMIN_TOKEN", token.as_str())];

    // memtracectl over https, trusting the CA of --ca-file; the token from a file
    let mut args = tls_args.to_vec();
    args.extend([
        "--token-file",
        token_file,
        "org",
        "create",
        "tls-org",
        "-o",
        "json",
    ]);
    let created = memtracectl(&args, &[]).await.unwrap();
    assert!(created.success, "{created:?}");
    assert!(
        created.stderr.is_empty(),
        "no secret in argv, no warning: {created:?}"
    );
    let org = created.json().unwrap()["id"].as_str().unwrap().to_owned();

    // the Arc key from stdin, checked by the Arc it unlocks
    let arc = arc_with_token(ARC_KEY, DB).await.unwrap();
    let arc_url = arc.url();
    let mut args = tls_args.to_vec();
    args.extend(["org", "add-arc", &org, "--url", &arc_url, "--database", DB]);
    args.extend(["--api-key-file", "-", "-o", "json"]);
    let stdin = format!("{ARC_KEY}\n");
    let bound = memtracectl_with_stdin(&args, &token_env, Some(stdin.as_bytes()))
        .await
        .unwrap();
    assert!(bound.success && bound.stderr.is_empty(), "{bound:?}");
    let mut args = tls_args.to_vec();
    args.extend(["org", "test-arc", &org]);
    let tested = memtracectl(&args, &token_env).await.unwrap();
    assert!(tested.success, "{tested:?}");
    assert_eq!(
        arc.health_calls()[0]["authorization"],
        format!("Bearer {ARC_KEY}").as_str()
    );

    // secrets in argv still work, with one warning line each on stderr
    let mut args = tls_args.to_vec();
    args.extend(["--token", &token, "org", "add-arc", &org, "--url", &arc_url]);
    args.extend([
        "--database",
        DB,
        "--api-key",
        ARC_KEY,
        "--replace",
        "-o",
        "json",
    ]);
    let in_argv = memtracectl(&args, &[]).await.unwrap();
    assert!(in_argv.success, "{in_argv:?}");
    let warnings: Vec<&str> = in_argv.stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{in_argv:?}");
    for (line, flag, instead) in [
        (warnings[0], "--token", "--token-file"),
        (warnings[1], "--api-key", "--api-key-file"),
    ] {
        assert!(
            line.starts_with(&format!("warning: {flag} puts the "))
                && line.contains("other users of this machine")
                && line.contains(instead),
            "{line}"
        );
        assert!(!line.contains(ARC_KEY) && !line.contains(&token), "{line}");
    }

    // without the CA, or over plaintext, the CLI gets nothing and is told why
    let untrusted = memtracectl(&["--server", &url, "org", "list"], &token_env)
        .await
        .unwrap();
    assert!(
        !untrusted.success && untrusted.stderr.contains("--ca-file"),
        "{untrusted:?}"
    );
    let plain_url = url.replacen("https://", "http://", 1);
    let plaintext = memtracectl(&["--server", &plain_url, "org", "list"], &token_env)
        .await
        .unwrap();
    assert!(
        !plaintext.success && plaintext.stderr.contains("cannot reach the control plane"),
        "{plaintext:?}"
    );

    // a worker serving TLS; the harness waits for it over https
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let served = served_copy(&pki, dir.path(), "worker");
    let worker = c
        .worker_with_tls("tls-worker", Some(&served), &[])
        .await
        .unwrap();
    let base = worker.url();
    assert!(base.starts_with("https://"), "{base}");

    // REST over https: h2 for clients that offer it, HTTP/1.1 for the rest
    let api = Api::new(&worker, Some(&key));
    let body = json!({"agent_id": "tls-agent", "content": "written over https"});
    let (s, b) = api.post("/api/v1/memories", body).await;
    assert_eq!(s, 201, "{b}");
    let pem = std::fs::read(&pki.ca).unwrap();
    let h2 = https_client(&pki.ca)
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (h2.status().as_u16(), h2.version()),
        (200, reqwest::Version::HTTP_2)
    );
    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .http1_only()
        .build()
        .unwrap();
    let h1 = http1
        .get(format!("{base}/api/v1/memories?agent_id=tls-agent"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (h1.status().as_u16(), h1.version()),
        (200, reqwest::Version::HTTP_11)
    );

    // gRPC over TLS with a tonic client trusting the CA
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pem));
    let channel = Endpoint::from_shared(base.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");
    let mut memories = MemoryServiceClient::new(channel);
    let input = pb::MemoryInput {
        agent_id: "tls-agent".into(),
        content: "written over grpc with tls".into(),
        ..pb::MemoryInput::default()
    };
    memories
        .create_memory(with_key(
            Some(&key),
            pb::CreateMemoryRequest {
                memory: Some(input),
            },
        ))
        .await
        .unwrap();
    eventually(
        "both memories listed over grpc",
        Duration::from_secs(20),
        async || {
            let listed = memories
                .list_memories(with_key(
                    Some(&key),
                    pb::ListMemoriesRequest {
                        agent_id: "tls-agent".into(),
                        ..pb::ListMemoriesRequest::default()
                    },
                ))
                .await
                .map_err(|s| s.to_string())?
                .into_inner();
            match listed.memories.len() {
                2 => Ok(()),
                n => Err(format!("{n} memories")),
            }
        },
    )
    .await
    .unwrap();

    // plaintext clients and clients of another CA get nothing from it
    let plain = memtrace_tests::http_client()
        .get(format!("http://{}/health", worker.addr))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plaintext REST on a TLS port: {plain:?}");
    let plain_grpc = async {
        let channel = Endpoint::from_shared(format!("http://{}", worker.addr))?
            .timeout(Duration::from_secs(10))
            .connect()
            .await?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await?;
        anyhow::Ok(())
    };
    assert!(plain_grpc.await.is_err(), "plaintext gRPC on a TLS port");
    assert!(status(&format!("{base}/health"), &other.ca).await.is_err());

    // the worker's files replaced by another CA's pair: served without a restart
    let pid = worker.pid();
    install(&other.server_cert, &served.cert_file);
    install(&other.server_key, &served.key_file);
    eventually(
        "the worker serves the new certificate",
        Duration::from_secs(20),
        async || status(&format!("{base}/health"), &other.ca).await,
    )
    .await
    .unwrap();
    assert!(status(&format!("{base}/health"), &pki.ca).await.is_err());
    assert_eq!(worker.pid(), pid, "the same process");

    // no secret reaches a log
    let cp_log = c.control_plane.logs();
    let worker_log = worker.logs();
    assert!(cp_log.contains("api key created"), "the log was captured");
    for (what, secret) in [
        ("arc key", ARC_KEY),
        ("api key", &key),
        ("admin token", &token),
    ] {
        assert!(!cp_log.contains(secret), "{what} in the control plane log");
        assert!(!worker_log.contains(secret), "{what} in the worker log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestPki::create(&subdir(dir.path(), "first"), "client").unwrap();
    let second = TestPki::create(&subdir(dir.path(), "second"), "client").unwrap();
    let served = served_copy(&first, dir.path(), "control-plane");
    let spec = ControlPlaneSpec {
        tls: Some(served.clone()),
        ..ControlPlaneSpec::default()
    };
    let cp = ControlPlane::start(&subdir(dir.path(), "cp"), spec)
        .await
        .unwrap();
    let token = cp.admin_token().unwrap();
    let health = format!("{}/health", cp.url());
    assert_eq!(status(&health, &first.ca).await, Ok(200));
    assert!(status(&health, &second.ca).await.is_err());

    // half-way through a renewal: the new certificate with the old key is
    // not a pair; logged, and the old pair kept
    install(&second.server_cert, &served.cert_file);
    eventually(
        "the mismatched pair logged",
        Duration::from_secs(20),
        async || {
            cp.logs()
                .lines()
                .find(|l| l.contains("tls certificate not reloaded"))
                .map(str::to_owned)
        },
    )
    .await
    .map(|line| {
        assert!(
            line.contains("tls_cert_file") && line.contains("tls_key_file"),
            "{line}"
        )
    })
    .unwrap();
    assert_eq!(status(&health, &first.ca).await, Ok(200));

    // the new key: the new pair is served to new connections
    install(&second.server_key, &served.key_file);
    eventually(
        "the new certificate served",
        Duration::from_secs(20),
        async || status(&health, &second.ca).await,
    )
    .await
    .unwrap();
    assert!(status(&health, &first.ca).await.is_err());
    assert!(cp.logs().contains("tls certificate reloaded"));

    // memtracectl trusting only the new CA; the old CA is refused with a hint
    let url = cp.url();
    let env = [("MEMTRACE_ADMIN_TOKEN", token.as_str())];
    let second_ca = second.ca.to_str().unwrap();
    let ok = memtracectl(
        &["--server", &url, "--ca-file", second_ca, "org", "list"],
        &env,
    )
    .await
    .unwrap();
    assert!(ok.success, "{ok:?}");
    let first_ca = first.ca.to_str().unwrap();
    let old = memtracectl(
        &["--server", &url, "--ca-file", first_ca, "org", "list"],
        &env,
    )
    .await
    .unwrap();
    assert!(
        !old.success && old.stderr.contains("not signed by the CA in --ca-file"),
        "{old:?}"
    );
    assert!(cp.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_set_or_mismatched_pair_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(&subdir(dir.path(), "pki"), "client").unwrap();
    let other = TestPki::create(&subdir(dir.path(), "other"), "client").unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let master_key = memtrace_common::keys::generate_key_b64();
    let refused = async |env: &[(&str, &str)]| {
        let mut env = env.to_vec();
        env.push(("MEMTRACE_MASTER_KEY", &master_key));
        let out = control_plane::run_to_exit(dir.path(), &env).await.unwrap();
        assert!(!out.status.success(), "started: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let both_named = |err: &str, section: &str| {
        let upper = section.to_ascii_uppercase();
        for setting in [
            format!("[{section}] tls_cert_file (MEMTRACE_{upper}_TLS_CERT_FILE)"),
            format!("[{section}] tls_key_file (MEMTRACE_{upper}_TLS_KEY_FILE)"),
        ] {
            assert!(err.contains(&setting), "{setting} not named: {err}");
        }
    };

    // a certificate without its key
    let cert = path(&pki.server_cert);
    let err = refused(&[("MEMTRACE_CONTROL_PLANE_TLS_CERT_FILE", &cert)]).await;
    both_named(&err, "control_plane");
    assert!(err.contains("go together"), "{err}");

    // a worker with a key and no certificate, refused before anything else
    let mut worker = isolated_command("memtrace-worker", dir.path()).unwrap();
    worker.env("MEMTRACE_SERVER_TLS_KEY_FILE", path(&pki.server_key));
    let out = output_within(worker, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    both_named(&err, "server");
    assert!(err.contains("go together"), "{err}");

    // a key that is not the certificate's
    let foreign_key = path(&other.server_key);
    let err = refused(&[
        ("MEMTRACE_CONTROL_PLANE_TLS_CERT_FILE", &cert),
        ("MEMTRACE_CONTROL_PLANE_TLS_KEY_FILE", &foreign_key),
    ])
    .await;
    both_named(&err, "control_plane");
    assert!(err.contains("not one pair"), "{err}");

    // a file that is not there
    let missing = path(&dir.path().join("missing.pem"));
    let key = path(&pki.server_key);
    let err = refused(&[
        ("MEMTRACE_CONTROL_PLANE_TLS_CERT_FILE", &missing),
        ("MEMTRACE_CONTROL_PLANE_TLS_KEY_FILE", &key),
    ])
    .await;
    assert!(
        err.contains("cannot read [control_plane] tls_cert_file") && err.contains("missing.pem"),
        "{err}"
    );
}
