#[test]
fn the_defaults_are_a_table_of_every_section() {
    let table = super::defaults_table().expect("defaults serialise");
    for section in [
        "server",
        "arc",
        "auth",
        "dedup",
        "etcd",
        "worker",
        "control_plane",
    ] {
        assert!(
            table.get(section).is_some_and(toml::Value::is_table),
            "{section}"
        );
    }
}

#[test]
fn listen_address_brackets_ipv6_hosts() {
    let mut s = super::ServerConfig {
        port: 9100,
        ..Default::default()
    };
    assert_eq!(s.listen_address(), "0.0.0.0:9100");
    s.host = "::1".into();
    assert_eq!(s.listen_address(), "[::1]:9100");
    s.host = "[::]".into();
    assert_eq!(s.listen_address(), "[::]:9100");
}

use super::*;

#[test]
fn defaults_match_the_original() {
    let loaded = load(&FileSource::None, &Env::default()).unwrap();
    let c = loaded.config;
    assert_eq!(c.server.port, 9100);
    assert_eq!(c.arc.write_batch_size, 100);
    assert_eq!(c.arc.write_flush_interval_ms, 1000);
    assert_eq!(c.arc.measurement, "events");
    assert_eq!(c.auth.db_path, "./data/memtrace.db");
    assert_eq!(c.dedup.window_hours, 24);
    assert_eq!(c.control_plane.listen, "0.0.0.0:9200");
    assert_eq!(c.log.format, LogFormat::Console);
}

#[test]
fn env_overrides_file_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memtrace.toml");
    std::fs::write(
        &path,
        "[arc]\nwrite_batch_size = 500\nurl = \"http://arc:8000\"\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let env = Env::from_pairs([
        ("MEMTRACE_ARC_WRITE_BATCH_SIZE", "700"),
        ("MEMTRACE_CONTROL_PLANE_LISTEN", "127.0.0.1:0"),
        ("MEMTRACE_DEDUP_ENABLED", "false"),
        ("MEMTRACE_MASTER_KEY", "not a setting"),
        ("MEMTRACE_ARC_NO_SUCH_KEY", "1"),
        ("PATH", "/bin"),
    ]);
    let loaded = load(&FileSource::Path(path.clone()), &env).unwrap();
    assert_eq!(loaded.file, Some(path));
    assert_eq!(loaded.config.arc.write_batch_size, 700);
    assert_eq!(loaded.config.arc.url, "http://arc:8000");
    assert_eq!(loaded.config.log.format, LogFormat::Json);
    assert_eq!(loaded.config.control_plane.listen, "127.0.0.1:0");
    assert!(!loaded.config.dedup.enabled);
    assert_eq!(
        loaded.ignored_vars,
        vec!["MEMTRACE_ARC_NO_SUCH_KEY".to_owned()]
    );
}

#[test]
fn bad_values_name_the_variable_or_key() {
    let env = Env::from_pairs([("MEMTRACE_SERVER_PORT", "http")]);
    let err = load(&FileSource::None, &env).unwrap_err().to_string();
    assert!(
        err.contains("MEMTRACE_SERVER_PORT") && err.contains("integer"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memtrace.toml");
    std::fs::write(&path, "[arc]\nwrite_batchsize = 5\n").unwrap();
    let err = load(&FileSource::Path(path), &Env::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("write_batchsize"), "{err}");

    let env = Env::from_pairs([("MEMTRACE_LOG_FORMAT", "xml")]);
    let err = load(&FileSource::None, &env).unwrap_err().to_string();
    assert!(err.contains("xml"), "{err}");
}

#[test]
fn locked_settings_from_file_and_env() {
    let loaded = load(&FileSource::None, &Env::default()).unwrap();
    assert_eq!(
        loaded.config.control_plane.locked_settings,
        crate::settings::locked_by_default()
    );
    let env = Env::from_pairs([(
        "MEMTRACE_CONTROL_PLANE_LOCKED_SETTINGS",
        " log.level, dedup.enabled ,",
    )]);
    let loaded = load(&FileSource::None, &env).unwrap();
    assert_eq!(
        loaded.config.control_plane.locked_settings,
        vec!["log.level".to_owned(), "dedup.enabled".to_owned()]
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memtrace.toml");
    std::fs::write(&path, "[control_plane]\nlocked_settings = []\n").unwrap();
    let loaded = load(&FileSource::Path(path.clone()), &Env::default()).unwrap();
    assert!(loaded.config.control_plane.locked_settings.is_empty());

    std::fs::write(
        &path,
        "[control_plane]\nlocked_settings = [\"log.levle\"]\n",
    )
    .unwrap();
    let err = load(&FileSource::Path(path), &Env::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("locked_settings") && err.contains("did you mean log.level"),
        "{err}"
    );
}

#[test]
fn tls_pairs_are_both_or_neither() {
    let loaded = load(&FileSource::None, &Env::default()).unwrap();
    assert_eq!(loaded.config.server.tls_files().unwrap(), None);
    assert_eq!(loaded.config.control_plane.tls_files().unwrap(), None);
    let env = Env::from_pairs([
        ("MEMTRACE_SERVER_TLS_CERT_FILE", "/etc/memtrace/worker.pem"),
        ("MEMTRACE_SERVER_TLS_KEY_FILE", "/etc/memtrace/worker.key"),
    ]);
    let loaded = load(&FileSource::None, &env).unwrap();
    let files = loaded.config.server.tls_files().unwrap().unwrap();
    assert_eq!(files.cert_file, Path::new("/etc/memtrace/worker.pem"));
    assert_eq!(files.key_file, Path::new("/etc/memtrace/worker.key"));

    for (var, section) in [
        ("MEMTRACE_SERVER_TLS_KEY_FILE", "server"),
        ("MEMTRACE_CONTROL_PLANE_TLS_CERT_FILE", "control_plane"),
    ] {
        let env = Env::from_pairs([(var, "/etc/memtrace/half.pem")]);
        let err = load(&FileSource::None, &env).unwrap_err().to_string();
        let upper = section.to_ascii_uppercase();
        for named in [
            format!("[{section}] tls_cert_file (MEMTRACE_{upper}_TLS_CERT_FILE)"),
            format!("[{section}] tls_key_file (MEMTRACE_{upper}_TLS_KEY_FILE)"),
        ] {
            assert!(err.contains(&named), "{err}");
        }
        assert!(err.contains("set both"), "{err}");
    }
}

#[test]
fn search_uses_home_from_injected_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".memtrace")).unwrap();
    std::fs::write(
        dir.path().join(".memtrace/memtrace.toml"),
        "[server]\nport = 9999\n",
    )
    .unwrap();
    let env = Env::from_pairs([("HOME", dir.path().to_str().unwrap())]);
    let loaded = load(&FileSource::Search, &env).unwrap();
    assert_eq!(loaded.config.server.port, 9999);
}
