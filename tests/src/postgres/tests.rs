//! Unit tests of the PostgreSQL harness that need no server: binary
//! discovery, uid parsing and database-name validation.

use super::bins::versioned_bin_dirs;
use super::os::parse_euid;
use super::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn versions_sort_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    for v in ["9.6", "15", "16", "notaversion", "13"] {
        fs::create_dir_all(dir.path().join(v).join("bin")).unwrap();
    }
    let got: Vec<String> = versioned_bin_dirs(dir.path())
        .iter()
        .map(|p| {
            p.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(got, ["16", "15", "13", "9.6"]);
}

#[test]
fn missing_binaries_say_what_to_install() {
    let empty = tempfile::tempdir().unwrap();
    let err = PgBins::find_in(empty.path().as_os_str(), empty.path()).unwrap_err();
    assert!(
        err.to_string().contains("apt-get install -y postgresql"),
        "{err}"
    );
}

#[test]
fn binaries_found_under_newest_versioned_dir() {
    let root = tempfile::tempdir().unwrap();
    for v in ["13", "16"] {
        let bin = root.path().join(v).join("bin");
        fs::create_dir_all(&bin).unwrap();
        for b in ["initdb", "pg_ctl", "postgres", "psql"] {
            fs::write(bin.join(b), "#!/bin/sh\n").unwrap();
            fs::set_permissions(bin.join(b), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let bins = PgBins::find_in(std::ffi::OsStr::new(""), root.path()).unwrap();
    assert_eq!(bins.initdb, root.path().join("16/bin/initdb"));
    assert_eq!(bins.psql, Some(root.path().join("16/bin/psql")));
    assert_eq!(bins.pg_isready, None);
}

#[test]
fn euid_is_the_second_uid_field() {
    let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
    assert_eq!(parse_euid(status), Some(0));
    assert_eq!(parse_euid("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
    assert_eq!(parse_euid("nothing"), None);
}

#[test]
fn database_names_are_plain_identifiers() {
    assert!(validate_db_name("alpha_1").is_ok());
    assert!(validate_db_name("_x").is_ok());
    assert!(validate_db_name("").is_err());
    assert!(validate_db_name("1abc").is_err());
    assert!(validate_db_name("a\"; DROP").is_err());
    assert!(validate_db_name(&"a".repeat(64)).is_err());
}
