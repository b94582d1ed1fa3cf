//! The state bus over TLS with client certificates and etcd authentication,
//! as `[etcd]` configures it (`ca_file`, `cert_file`, `key_file`, `user`,
//! `password_file`), against a real etcd started with `--client-cert-auth`
//! and auth enabled: the configured connection reads and writes; a client
//! without the certificate, without the CA, or with a wrong password gets
//! nothing; and half-set or contradictory settings are refused up front with
//! an error naming them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::bus::{self, BusError, Op};
use memtrace_common::config::EtcdConfig;
use memtrace_tests::etcd::EtcdServer;
use std::time::Duration;

const PASSWORD: &str = "etcd-root-password-for-tests";

/// Turns on etcd authentication with a `root` user (the client
/// certificate's common name) and [`PASSWORD`].
async fn enable_auth(etcd: &EtcdServer) {
    let pki = etcd.tls().unwrap();
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(
            std::fs::read(&pki.ca).unwrap(),
        ))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(&pki.client_cert).unwrap(),
            std::fs::read(&pki.client_key).unwrap(),
        ));
    memtrace_common::tls::install_crypto_provider();
    let mut client = etcd_client::Client::connect(
        [etcd.endpoint()],
        Some(etcd_client::ConnectOptions::new().with_tls(tls)),
    )
    .await
    .unwrap();
    client.user_add("root", PASSWORD, None).await.unwrap();
    client.user_grant_role("root", "root").await.unwrap();
    client.auth_enable().await.unwrap();
}

fn config(etcd: &EtcdServer, dir: &std::path::Path) -> EtcdConfig {
    let pki = etcd.tls().unwrap();
    let password_file = dir.join("etcd-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    EtcdConfig {
        endpoints: etcd.endpoint(),
        connect_timeout_ms: 2000,
        request_timeout_ms: 2000,
        ca_file: s(&pki.ca),
        cert_file: s(&pki.client_cert),
        key_file: s(&pki.client_key),
        user: "root".into(),
        password_file: s(&password_file),
        ..EtcdConfig::default()
    }
}

/// Connects and does one write and one read; the first error.
async fn round_trip(config: &EtcdConfig) -> Result<(), BusError> {
    let bus = tokio::time::timeout(Duration::from_secs(10), bus::connect(config))
        .await
        .map_err(|_| BusError::Unavailable("connect timed out".into()))??;
    bus.apply(vec![Op::Put {
        key: "/tls-test/k".into(),
        value: b"v".to_vec(),
    }])
    .await?;
    let read = bus.load("/tls-test/").await?;
    assert_eq!(read.kvs.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificates_and_etcd_auth_are_configurable() {
    let etcd = tokio::task::block_in_place(EtcdServer::start_tls).unwrap();
    enable_auth(&etcd).await;
    let dir = tempfile::tempdir().unwrap();
    let good = config(&etcd, dir.path());
    round_trip(&good)
        .await
        .expect("the configured connection works");

    // a wrong password
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let bad_password = EtcdConfig {
        password_file: wrong.to_str().unwrap().into(),
        ..good.clone()
    };
    assert!(round_trip(&bad_password).await.is_err(), "wrong password");
    // no client certificate: etcd refuses the handshake
    let no_cert = EtcdConfig {
        cert_file: String::new(),
        key_file: String::new(),
        ..good.clone()
    };
    assert!(round_trip(&no_cert).await.is_err(), "no client certificate");
    // without the CA, etcd's certificate is not trusted
    let no_ca = EtcdConfig {
        ca_file: String::new(),
        ..good.clone()
    };
    assert!(round_trip(&no_ca).await.is_err(), "untrusted server");

    // settings that cannot work are refused before connecting, by name
    for (broken, names) in [
        (
            EtcdConfig {
                key_file: String::new(),
                ..good.clone()
            },
            "cert_file and key_file",
        ),
        (
            EtcdConfig {
                password_file: String::new(),
                ..good.clone()
            },
            "user and password_file",
        ),
        (
            EtcdConfig {
                endpoints: good.endpoints.replace("https://", "http://"),
                ..good.clone()
            },
            "need https:// endpoints",
        ),
        (
            EtcdConfig {
                ca_file: "/nonexistent/ca.pem".into(),
                ..good.clone()
            },
            "ca_file",
        ),
    ] {
        let Err(e) = bus::connect(&broken).await else {
            panic!("{names}: connected");
        };
        assert!(matches!(e, BusError::Rejected(_)), "{names}: {e}");
        assert!(e.to_string().contains(names), "{names}: {e}");
    }
}
