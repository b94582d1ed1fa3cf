//! Adapter specifics of the tenant store suite: the Arc adapter's
//! failures (401/400 surface as errors, 5xx are retried to success, routes
//! its SQL cannot name are refused) and the embedded opener (org ids as file
//! names, a bounded cache of open files).

use super::*;

// ---- Arc adapter specifics ----

fn arc_parts(h: &Harness) -> &ArcStandIn {
    match h {
        Harness::Arc { arc, .. } => arc,
        Harness::Embedded { .. } => unreachable!("an arc harness"),
    }
}

#[tokio::test]
async fn arc_stand_in_reports_a_missing_measurement_as_duckdb_does() {
    let h = Harness::arc().await;
    let raw = RawArcClient::new(arc_parts(&h).url());
    let (status, body) = raw.query(None, "SELECT id FROM acme.agents").await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["success"], false);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.starts_with("Query execution failed: IO Error: No files found that match the pattern"),
        "{msg}"
    );
    assert!(msg.contains("acme/agents"), "{msg}");
}

#[tokio::test]
async fn arc_store_surfaces_401_and_400() {
    let h = Harness::arc().await;
    let arc = arc_parts(&h);
    let store = h.store(ORG_A).await;
    let b = builder(store.as_ref(), ORG_A);
    let faults = arc.faults();
    let is_rejected =
        |e: &StoreError, status: &str| matches!(e, StoreError::Backend(m) if m.contains(status));

    faults.inject(Fault::unauthorized().on(Target::Writes).times(1));
    let e = store.append_memories(&fixture()).await.unwrap_err();
    assert!(is_rejected(&e, "401"), "{e:?}");
    faults.inject(Fault::status(400).on(Target::Writes).times(1));
    let e = store.append_memories(&fixture()).await.unwrap_err();
    assert!(is_rejected(&e, "400"), "{e:?}");
    assert_eq!(arc.row_count(DB, TABLE), 0, "nothing stored");

    faults.inject(Fault::unauthorized().on(Target::Writes).times(1));
    let e = store
        .append_state(StateTable::Agents, agent(5, "agent_1", ORG_A, "x", "0"))
        .await
        .unwrap_err();
    assert!(is_rejected(&e, "401"), "{e:?}");
    faults.inject(Fault::status(400).on(Target::Writes).times(1));
    let e = store
        .append_state(StateTable::Agents, agent(5, "agent_1", ORG_A, "x", "0"))
        .await
        .unwrap_err();
    assert!(is_rejected(&e, "400"), "{e:?}");

    // A refused read is an error, not an empty answer (also on a table
    // that does not exist yet).
    let list = list_sql(&b, &list_params(|_| {}), NOW);
    faults.inject(Fault::unauthorized().on(Target::Queries).times(1));
    let e = store.query(&list).await.unwrap_err();
    assert!(is_rejected(&e, "401"), "{e:?}");
    faults.inject(Fault::status(400).on(Target::Queries).times(1));
    let e = store.query(&list).await.unwrap_err();
    assert!(is_rejected(&e, "400"), "{e:?}");
    let agents = b.latest_state(&state_query(StateTable::Agents, &["name"]));
    faults.inject(Fault::status(400).on(Target::Queries).times(1));
    let e = store.query(&agents).await.unwrap_err();
    assert!(is_rejected(&e, "400"), "{e:?}");
    assert!(faults.active().is_empty());

    // Without faults all of it works.
    store.append_memories(&fixture()).await.unwrap();
    assert_eq!(store.query(&list).await.unwrap().rows.len(), 4);
}

#[tokio::test]
async fn arc_store_retries_5xx_to_success() {
    let h = Harness::arc().await;
    let arc = arc_parts(&h);
    let store = h.store(ORG_A).await;
    let b = builder(store.as_ref(), ORG_A);
    let faults = arc.faults();

    faults.inject(Fault::status(503).on(Target::Writes).times(2));
    store.append_memories(&fixture()).await.unwrap();
    assert_eq!(arc.row_count(DB, TABLE), 5, "stored once");

    faults.inject(Fault::status(500).on(Target::Writes).times(1));
    store
        .append_state(StateTable::Agents, agent(5, "agent_1", ORG_A, "x", "0"))
        .await
        .unwrap();
    assert_eq!(arc.row_count(DB, "agents"), 1);

    // A write that landed but answered 500 is stored twice, read once.
    faults.inject(
        Fault::status_after_processing(500)
            .on(Target::Writes)
            .times(1),
    );
    let row = mem(
        1, "m9", ORG_A, "agent_9", "", "episodic", "general", "twice", "", "", 0.0,
    );
    store.append_memories(&[row]).await.unwrap();
    assert_eq!(arc.row_count(DB, TABLE), 7);
    let by_agent = list_params(|p| p.agent_id = Some("agent_9".into()));
    assert_eq!(
        ids(&store.query(&list_sql(&b, &by_agent, NOW)).await.unwrap()),
        ["m9"]
    );

    faults.inject(Fault::status(503).on(Target::Queries).times(2));
    let rows = store
        .query(&list_sql(&b, &list_params(|_| {}), NOW))
        .await
        .unwrap();
    assert_eq!(ids(&rows), ["m9", "m1", "m2", "m3", "m4"]);
    faults.inject(Fault::status(502).on(Target::Queries).times(1));
    let sessions = b.latest_state(&state_query(StateTable::Sessions, &["status"]));
    assert!(store.query(&sessions).await.unwrap().rows.is_empty());
    assert!(faults.active().is_empty());
}

#[tokio::test]
async fn arc_store_refuses_state_times_arc_would_misread() {
    let h = Harness::arc().await;
    let store = h.store(ORG_A).await;
    let mut row = agent(0, "agent_1", ORG_A, "x", "0");
    row.time = 1_795_608_000_000; // milliseconds
    let e = store
        .append_state(StateTable::Agents, row)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("microseconds"), "{e}");
    assert_eq!(arc_parts(&h).row_count(DB, "agents"), 0);
}

#[tokio::test]
async fn arc_store_refuses_routes_its_sql_cannot_name() {
    let h = Harness::arc().await;
    let Harness::Arc {
        arc,
        batcher,
        client,
    } = &h
    else {
        unreachable!()
    };
    for (database, measurement) in [("acme-prod", TABLE), (DB, "my-events"), (DB, "agents")] {
        let route = Arc::new(ArcRoute {
            binding_id: "bind_1".into(),
            url: arc.url(),
            database: database.into(),
            measurement: measurement.into(),
            api_key: None,
        });
        let e =
            ArcStore::new(ORG_A, route, batcher.clone(), client.clone(), fast_retry()).unwrap_err();
        assert!(e.to_string().contains("must"), "{e}");
    }
}

#[tokio::test]
async fn arc_store_bounds_a_read_by_the_query_timeout() {
    let h = Harness::arc().await;
    let Harness::Arc {
        arc,
        batcher,
        client,
    } = &h
    else {
        unreachable!()
    };
    let route = Arc::new(ArcRoute {
        binding_id: "bind_1".into(),
        url: arc.url(),
        database: DB.into(),
        measurement: TABLE.into(),
        api_key: None,
    });
    let unbounded = ArcStore::new(
        ORG_A,
        route.clone(),
        batcher.clone(),
        client.clone(),
        fast_retry(),
    )
    .unwrap();
    let store = ArcStore::new(ORG_A, route, batcher.clone(), client.clone(), fast_retry())
        .unwrap()
        .with_query_timeout(Duration::from_millis(200));
    let list = list_sql(&builder(&store, ORG_A), &list_params(|_| {}), NOW);
    // warm up: the stand-in's first query compiles its SQL rewriters, which
    // in a debug build on a busy machine can take most of the 200 ms below
    unbounded.query(&list).await.unwrap();
    arc.faults().inject(Fault::stall().on(Target::Queries));
    let started = std::time::Instant::now();
    let e = store.query(&list).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&e, StoreError::Unavailable(m) if m.contains("arc.query_timeout_ms")),
        "{e:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "bounded by the timeout: {took:?}"
    );
    arc.faults().clear();
    // the same store answers again once Arc does
    store.query(&list).await.unwrap();
}

// ---- embedded opener specifics ----

#[tokio::test]
async fn embedded_stores_take_only_org_ids_as_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let stores = EmbeddedStores::new(dir.path(), TABLE).unwrap();
    for bad in [
        "",
        "../org_a",
        "org/a",
        "org.a",
        "/etc/passwd",
        "1org",
        "org a",
    ] {
        let e = stores.open(bad).await.unwrap_err();
        assert!(e.to_string().contains("org_id"), "{bad:?}: {e}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // the org id rule of the control plane: org_ then letters, digits, _
    assert!(stores.open("org_a-1").await.is_err());
    let store = stores.open("org_a_1").await.unwrap();
    assert_eq!(store.path(), dir.path().join("org_a_1.db"));
    assert!(store.path().exists());
    assert_eq!(store.memories_table(), TABLE);
    assert!(EmbeddedStores::new(dir.path(), "agents").is_err());
    assert!(EmbeddedStores::new(dir.path(), "bad-name").is_err());
}

#[tokio::test]
async fn embedded_stores_keep_a_bounded_cache_and_rows_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let stores = EmbeddedStores::new(dir.path(), TABLE)
        .unwrap()
        .with_max_open(2);
    let a = stores.open(ORG_A).await.unwrap();
    a.append_memories(&fixture()).await.unwrap();
    assert!(Arc::ptr_eq(&a, &stores.open(ORG_A).await.unwrap()));
    drop(a);
    stores.open(ORG_B).await.unwrap();
    stores.open("org_c").await.unwrap();
    assert_eq!(stores.open_count(), 2);
    // org_a was least recently used: closed, and reopened from its file.
    let a = stores.open(ORG_A).await.unwrap();
    assert_eq!(stores.open_count(), 2);
    let b = builder(a.as_ref(), ORG_A);
    let rows = a
        .query(&list_sql(&b, &list_params(|_| {}), NOW))
        .await
        .unwrap();
    assert_eq!(ids(&rows), ["m1", "m2", "m3", "m4"]);
    let value: Value = rows.rows[0][0].clone();
    assert!(value.is_i64(), "embedded time is integer µs: {value}");
}
