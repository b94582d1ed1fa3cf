#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::process::Command;

/// A self-signed certificate and key for `name`, made with the openssl
/// command (`scripts/setup.sh` installs it) in `dir`.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", &format!("/CN={name}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

fn files(cert: &Path, key: &Path) -> TlsFiles {
    TlsFiles::from_settings("server", cert.to_str().unwrap(), key.to_str().unwrap())
        .unwrap()
        .unwrap()
}

fn der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

#[test]
fn a_half_set_pair_names_both_settings() {
    assert!(
        TlsFiles::from_settings("server", " ", "")
            .unwrap()
            .is_none()
    );
    for (cert, key) in [("/c.pem", ""), ("", "/k.pem")] {
        let err = TlsFiles::from_settings("control_plane", cert, key)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "[control_plane] tls_cert_file (MEMTRACE_CONTROL_PLANE_TLS_CERT_FILE) and \
             [control_plane] tls_key_file (MEMTRACE_CONTROL_PLANE_TLS_KEY_FILE) go together: \
             set both to serve TLS, or neither to serve plaintext"
        );
    }
}

#[test]
fn bad_files_are_refused_naming_the_setting_without_quoting_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "one");
    let (_, other_key) = self_signed(dir.path(), "two");
    let missing = dir.path().join("missing.pem");
    let err = ServerTls::load(files(&missing, &key))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot read [server] tls_cert_file (MEMTRACE_SERVER_TLS_CERT_FILE)"),
        "{err}"
    );

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "not pem at all: s3cr3t-k3y-bytes").unwrap();
    let err = ServerTls::load(files(&garbage, &key))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls_cert_file") && err.contains("no CERTIFICATE"),
        "{err}"
    );
    let err = ServerTls::load(files(&cert, &garbage))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls_key_file") && err.contains("no private key"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
    // the key is given as the certificate: no certificate in it
    let err = ServerTls::load(files(&key, &key)).unwrap_err().to_string();
    assert!(err.contains("tls_cert_file"), "{err}");

    let err = ServerTls::load(files(&cert, &other_key))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls_cert_file")
            && err.contains("tls_key_file")
            && err.contains("does not match"),
        "{err}"
    );
}

#[test]
fn a_changed_pair_is_reloaded_and_a_bad_one_keeps_the_current() {
    let dir = tempfile::tempdir().unwrap();
    let (first_cert, first_key) = self_signed(dir.path(), "first");
    let (second_cert, second_key) = self_signed(dir.path(), "second");
    let served_cert = dir.path().join("served.pem");
    let served_key = dir.path().join("served.key");
    std::fs::copy(&first_cert, &served_cert).unwrap();
    std::fs::copy(&first_key, &served_key).unwrap();
    let tls = ServerTls::load(files(&served_cert, &served_key)).unwrap();
    assert_eq!(tls.current_certificate(), Some(der(&first_cert)));
    assert_eq!(
        tls.config().alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert!(matches!(tls.reload(false), Reload::Unchanged));

    // half-way through a replacement: the new certificate with the old key
    std::fs::copy(&second_cert, &served_cert).unwrap();
    let Reload::Failed(error) = tls.reload(false) else {
        panic!("a mismatched pair is not served");
    };
    assert!(error.to_string().contains("not one pair"), "{error}");
    assert_eq!(tls.current_certificate(), Some(der(&first_cert)));
    // the same failure is reported once, not at every look
    assert!(matches!(tls.reload(false), Reload::Unchanged));

    std::fs::copy(&second_key, &served_key).unwrap();
    assert!(matches!(tls.reload(false), Reload::Reloaded));
    assert_eq!(tls.current_certificate(), Some(der(&second_cert)));
    assert!(matches!(tls.reload(false), Reload::Unchanged));
    // SIGHUP reloads even an unchanged pair
    assert!(matches!(tls.reload(true), Reload::Reloaded));

    std::fs::remove_file(&served_key).unwrap();
    assert!(matches!(
        tls.reload(false),
        Reload::Failed(TlsError::Read { .. })
    ));
    assert_eq!(tls.current_certificate(), Some(der(&second_cert)));
}
