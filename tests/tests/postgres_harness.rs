//! The PostgreSQL harness starts a real server with isolated databases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;

use memtrace_tests::postgres::PgServer;

#[test]
fn real_server_with_two_isolated_databases() {
    let pg = PgServer::start().expect("start postgres");
    let port = pg.port();
    assert_eq!(
        pg.url(),
        format!("postgres://memtrace@127.0.0.1:{port}/memtrace")
    );

    // The default database works and really is PostgreSQL.
    let version = pg.psql(&pg.url(), "SHOW server_version_num").unwrap();
    let version: u32 = version.trim().parse().unwrap();
    assert!(version >= 100_000, "server_version_num {version}");
    let settings = pg
        .psql(
            &pg.url(),
            "SELECT current_setting('fsync') || ',' || current_setting('listen_addresses')",
        )
        .unwrap();
    assert_eq!(settings.trim(), "off,127.0.0.1");

    let alpha = pg.fresh_database("alpha").unwrap();
    let beta = pg.fresh_database("beta").unwrap();
    assert_eq!(alpha, format!("postgres://memtrace@127.0.0.1:{port}/alpha"));
    assert_eq!(beta, format!("postgres://memtrace@127.0.0.1:{port}/beta"));

    assert_eq!(
        pg.psql(&alpha, "SELECT current_database()").unwrap().trim(),
        "alpha"
    );
    assert_eq!(
        pg.psql(&beta, "SELECT current_database()").unwrap().trim(),
        "beta"
    );

    // Same table name in both, different contents: the databases are isolated.
    pg.psql(
        &alpha,
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b');",
    )
    .unwrap();
    pg.psql(
        &beta,
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (7, 'z');",
    )
    .unwrap();
    assert_eq!(
        pg.psql(&alpha, "SELECT id, v FROM t ORDER BY id").unwrap(),
        "1|a\n2|b\n"
    );
    assert_eq!(
        pg.psql(&beta, "SELECT id, v FROM t ORDER BY id").unwrap(),
        "7|z\n"
    );

    // Errors surface with the server's message.
    let err = pg.psql(&beta, "SELECT * FROM missing_table").unwrap_err();
    assert!(format!("{err:#}").contains("missing_table"), "{err:#}");
    // Duplicate and malformed names are rejected.
    assert!(pg.fresh_database("alpha").is_err());
    assert!(pg.fresh_database("bad-name").is_err());

    // Dropping stops the server.
    drop(pg);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );
}

#[test]
fn parallel_servers_get_distinct_ports() {
    let servers: Vec<PgServer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2).map(|_| s.spawn(PgServer::start)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    assert_ne!(servers[0].port(), servers[1].port());
    for pg in &servers {
        assert_eq!(pg.psql(&pg.url(), "SELECT 40 + 2").unwrap(), "42\n");
    }
}
