//! The tenant storage contract (`memtrace_data_plane::store::TenantStore`)
//! as behaviour, run against both adapters: `ArcStore` on a real Arc
//! stand-in behind a real group-commit batcher, and `EmbeddedStore` on a
//! SQLite file in a temp dir. Every scenario is written once against
//! `&dyn TenantStore` and instantiated per engine (`arc::*`,
//! `embedded::*`); reads are the query builder's SQL for the store's own
//! dialect. Then adapter specifics: Arc failures (401/400 surface, 5xx are
//! retried) and the embedded opener (org ids as file names, bounded cache).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::settings::{TenantLimits, WriteCompression, WriteSettings};
use memtrace_data_plane::arcdb::{ArcClient, RetryPolicy};
use memtrace_data_plane::ingest::Batcher;
use memtrace_data_plane::query::{
    AgentId, ExportCursor, ExportParams, ExportQuery, Ident, ListParams, ListQuery, MEMORY_COLUMNS,
    MemoryId, OrgId, QueryBuilder, SearchParams, SearchQuery, Sql, StateId, StateQuery, UnixMicros,
};
use memtrace_data_plane::service::collapse::{ReadMemory, newest_first};
use memtrace_data_plane::snapshot::ArcRoute;
use memtrace_data_plane::store::MemoryRow;
use memtrace_data_plane::store::{
    ArcStore, EmbeddedStores, Rows, StateRow, StateTable, StoreError, TenantStore, time_micros,
};
use memtrace_tests::arc::client::RawArcClient;
use memtrace_tests::arc::{ArcStandIn, Fault, Target};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// 2026-11-25T12:00:00Z.
const NOW: UnixMicros = UnixMicros(1_795_608_000_000_000);
const MINUTE: i64 = 60_000_000;
const ORG_A: &str = "org_a";
const ORG_B: &str = "org_b";
const DB: &str = "acme";
const TABLE: &str = "events";

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(10),
        max: Duration::from_millis(40),
        max_elapsed: Duration::from_secs(5),
    }
}

/// One engine with its backing service, handing out org stores.
enum Harness {
    Arc {
        arc: ArcStandIn,
        batcher: Batcher,
        client: ArcClient,
    },
    Embedded {
        _dir: tempfile::TempDir,
        stores: EmbeddedStores,
    },
}

impl Harness {
    async fn arc() -> Self {
        // instant answers (CostModel::instant): behaviour, not time
        let arc = ArcStandIn::start().await.unwrap();
        let client = ArcClient::new(Duration::from_secs(2), Duration::from_secs(10)).unwrap();
        let settings = |_org: &str| {
            let ws = WriteSettings {
                batch_size: 500,
                flush_interval: Duration::from_secs(1),
                linger: Duration::from_millis(2),
                max_batch_bytes: 8 << 20,
                // 3 retries: the policy's 4 attempts
                retry_max_attempts: 3,
                query_timeout: Duration::from_secs(5),
                compression: WriteCompression::Zstd,
                max_inflight_writes: 2,
            };
            let limits = TenantLimits {
                requests_per_second: 0,
                burst: 0,
                max_payload_bytes: 1 << 20,
                max_queued_events: 10_000,
                max_concurrent_reads: 8,
            };
            (ws, limits)
        };
        let batcher = Batcher::new(client.clone(), settings, fast_retry());
        Self::Arc {
            arc,
            batcher,
            client,
        }
    }

    fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stores = EmbeddedStores::new(dir.path().join("orgs"), TABLE).unwrap();
        Self::Embedded { _dir: dir, stores }
    }

    /// The store of `org`; on Arc every org shares one database and
    /// measurement, so org isolation rests on the reads alone.
    async fn store(&self, org: &str) -> Arc<dyn TenantStore> {
        match self {
            Self::Arc {
                arc,
                batcher,
                client,
            } => {
                let route = Arc::new(ArcRoute {
                    binding_id: "bind_1".into(),
                    url: arc.url(),
                    database: DB.into(),
                    measurement: TABLE.into(),
                    api_key: None,
                });
                let store =
                    ArcStore::new(org, route, batcher.clone(), client.clone(), fast_retry())
                        .unwrap();
                Arc::new(store)
            }
            Self::Embedded { stores, .. } => stores.open(org).await.unwrap(),
        }
    }
}

fn builder(store: &dyn TenantStore, org: &str) -> QueryBuilder {
    QueryBuilder::new(
        store.dialect(),
        OrgId::parse(org).unwrap(),
        Ident::table(store.memories_table()).unwrap(),
    )
}

#[allow(clippy::too_many_arguments)]
fn mem(
    minutes_ago: i64,
    id: &str,
    org: &str,
    agent: &str,
    session: &str,
    memory_type: &str,
    event_type: &str,
    content: &str,
    tags: &str,
    dedup: &str,
    importance: f64,
) -> MemoryRow {
    MemoryRow {
        // odd microseconds: the precision must survive both engines
        time: NOW.0 - minutes_ago * MINUTE + 123,
        id: id.into(),
        org_id: org.into(),
        agent_id: agent.into(),
        session_id: session.into(),
        memory_type: memory_type.to_owned().into(),
        event_type: event_type.into(),
        content: content.into(),
        metadata_json: format!(r#"{{"n":"{id}"}}"#).into(),
        tags_csv: tags.into(),
        dedup_key: dedup.into(),
        importance,
        parent_id: String::new(),
        expires_at: 0,
    }
}

#[rustfmt::skip]
fn fixture() -> Vec<MemoryRow> {
    vec![
        mem(30, "m1", ORG_A, "agent_1", "sess_1", "episodic", "tool_call", "Deployed the Payment service", "deploy,prod", "k1", 0.75),
        mem(60, "m2", ORG_A, "agent_1", "sess_2", "decision", "error", "It's a 50% rollout_plan", "prod", "k2", 0.5),
        mem(90, "m3", ORG_A, "agent_2", "sess_3", "entity", "general", "O'Brien said DROP TABLE is bad", "", "k3", 0.0),
        mem(180, "m4", ORG_A, "agent_1", "sess_1", "episodic", "general", "old payment note", "deploy", "k_old", 0.25),
        mem(10, "b1", ORG_B, "agent_1", "sess_1", "episodic", "tool_call", "Deployed the Payment service", "deploy,prod", "k1", 0.75),
    ]
}

fn ids(rows: &Rows) -> Vec<String> {
    let at = rows.column("id").expect("an id column");
    rows.rows
        .iter()
        .map(|r| r[at].as_str().unwrap().to_owned())
        .collect()
}

/// The dedup window the reads of these tests collapse keys with.
pub(crate) const DEDUP_WINDOW: Duration = Duration::from_secs(3600);

/// A list as the SQL-collapsed page (the shape oldest-first and deep pages
/// use; the newest-first prefix is checked against it in
/// `duplicate_keys_read_once_in_both_shapes`).
pub(crate) fn list_sql(b: &QueryBuilder, q: &ListQuery, now: UnixMicros) -> Sql {
    b.collapsed_page(&q.page(), Some(DEDUP_WINDOW), now)
}

/// A search as the SQL-collapsed page.
pub(crate) fn search_sql(b: &QueryBuilder, q: &SearchQuery, now: UnixMicros) -> Sql {
    b.collapsed_page(&q.page(), Some(DEDUP_WINDOW), now)
}

fn list_params(f: impl FnOnce(&mut ListParams)) -> ListQuery {
    let mut p = ListParams::default();
    f(&mut p);
    ListQuery::parse(&p).unwrap()
}

fn search_params(f: impl FnOnce(&mut SearchParams)) -> SearchQuery {
    let mut p = SearchParams::default();
    f(&mut p);
    SearchQuery::parse(&p).unwrap()
}

// ---- scenarios, each run on both engines ----

async fn memories_read_back_through_the_builder(h: &Harness) {
    let store = h.store(ORG_A).await;
    let store = store.as_ref();
    store.append_memories(&fixture()).await.unwrap();
    let b = builder(store, ORG_A);
    let list = |q: ListQuery| {
        let sql = list_sql(&b, &q, NOW);
        async move { store.query(&sql).await.unwrap() }
    };

    // Everything of org A, newest first, every column as written.
    let all = list(list_params(|_| {})).await;
    assert_eq!(all.columns, MEMORY_COLUMNS, "{all:?}");
    assert_eq!(ids(&all), ["m1", "m2", "m3", "m4"]);
    let written = fixture();
    for (row, want) in all.clone().into_maps().iter().zip(&written) {
        assert_eq!(time_micros(&row["time"]), Some(want.time), "{row:?}");
        assert_eq!(row["org_id"], &*want.org_id);
        assert_eq!(row["agent_id"], want.agent_id.as_str());
        assert_eq!(row["session_id"], want.session_id.as_str());
        assert_eq!(row["memory_type"], &*want.memory_type);
        assert_eq!(row["event_type"], want.event_type.as_str());
        assert_eq!(row["content"], want.content.as_str());
        assert_eq!(row["metadata_json"], &*want.metadata_json);
        assert_eq!(row["tags_csv"], want.tags_csv.as_str());
        assert_eq!(row["dedup_key"], want.dedup_key.as_str());
        assert_eq!(row["importance"].as_f64(), Some(want.importance));
        assert_eq!(row["parent_id"], "");
    }
    let asc = list(list_params(|p| p.order = Some("asc".into()))).await;
    assert_eq!(ids(&asc), ["m4", "m3", "m2", "m1"]);
    let page = list(list_params(|p| {
        p.limit = Some(1);
        p.offset = Some(1);
    }))
    .await;
    assert_eq!(ids(&page), ["m2", "m3"], "limit + 1 rows from the offset");

    // Filters.
    let by_agent = list(list_params(|p| p.agent_id = Some("agent_1".into()))).await;
    assert_eq!(ids(&by_agent), ["m1", "m2", "m4"]);
    let by_session = list(list_params(|p| p.session_id = Some("sess_1".into()))).await;
    assert_eq!(ids(&by_session), ["m1", "m4"]);
    let by_type = list(list_params(|p| p.memory_type = Some("episodic".into()))).await;
    assert_eq!(ids(&by_type), ["m1", "m4"]);
    let by_event = list(list_params(|p| p.event_type = Some("error".into()))).await;
    assert_eq!(ids(&by_event), ["m2"]);
    let by_tags = list(list_params(|p| p.tags = Some("prod,deploy".into()))).await;
    assert_eq!(ids(&by_tags), ["m1"]);
    let by_tag = list(list_params(|p| p.tags = Some("dep".into()))).await;
    assert!(ids(&by_tag).is_empty(), "tags match whole");
    let since = list(list_params(|p| p.since = Some("2h".into()))).await;
    assert_eq!(ids(&since), ["m1", "m2", "m3"]);

    // Search: content (case-insensitive, literal % and '), importance.
    let search = |q: SearchQuery| {
        let sql = search_sql(&b, &q, NOW);
        async move { store.query(&sql).await.unwrap() }
    };
    let found = search(search_params(|p| {
        p.content_contains = Some("PAYMENT".into())
    }))
    .await;
    assert_eq!(ids(&found), ["m1", "m4"]);
    let found = search(search_params(|p| p.content_contains = Some("50%".into()))).await;
    assert_eq!(ids(&found), ["m2"]);
    let found = search(search_params(|p| {
        p.content_contains = Some("o'brien said drop table".into())
    }))
    .await;
    assert_eq!(ids(&found), ["m3"]);
    let found = search(search_params(|p| {
        p.min_importance = Some(0.5);
        p.agent_id = Some("agent_1".into());
    }))
    .await;
    assert_eq!(ids(&found), ["m1", "m2"]);

    // Get by id.
    let one = store
        .query(&b.get(&MemoryId::parse("m2").unwrap(), UnixMicros::now()))
        .await
        .unwrap();
    assert_eq!(ids(&one), ["m2"]);
    assert_eq!(time_micros(&one.rows[0][0]), Some(written[1].time));
}

async fn other_orgs_rows_are_never_read(h: &Harness) {
    let a = h.store(ORG_A).await;
    // Org B's row lands in org A's table (written through A's store).
    a.append_memories(&fixture()).await.unwrap();
    let b_store = h.store(ORG_B).await;
    b_store
        .append_memories(&[mem(
            5, "b2", ORG_B, "agent_1", "sess_1", "episodic", "general", "b only", "", "kb", 0.5,
        )])
        .await
        .unwrap();
    let for_a = builder(a.as_ref(), ORG_A);
    let all = a
        .query(&list_sql(&for_a, &list_params(|_| {}), NOW))
        .await
        .unwrap();
    assert_eq!(ids(&all), ["m1", "m2", "m3", "m4"]);
    let found = a
        .query(&search_sql(
            &for_a,
            &search_params(|p| p.content_contains = Some("payment".into())),
            NOW,
        ))
        .await
        .unwrap();
    assert_eq!(ids(&found), ["m1", "m4"]);
    for id in ["b1", "b2"] {
        let got = a
            .query(&for_a.get(&MemoryId::parse(id).unwrap(), UnixMicros::now()))
            .await
            .unwrap();
        assert!(got.rows.is_empty(), "{id}: {got:?}");
    }
    // Org B's builder sees only org B's rows of its own store.
    let for_b = builder(b_store.as_ref(), ORG_B);
    let b_rows = b_store
        .query(&list_sql(&for_b, &list_params(|_| {}), NOW))
        .await
        .unwrap();
    let b_ids = ids(&b_rows);
    assert!(b_ids.contains(&"b2".to_owned()), "{b_ids:?}");
    assert!(b_ids.iter().all(|id| id.starts_with('b')), "{b_ids:?}");
}

async fn a_memory_written_twice_reads_once(h: &Harness) {
    let store = h.store(ORG_A).await;
    let row = fixture().remove(0);
    // A retry re-sends the same row; a later retry re-sends it with a new time.
    store
        .append_memories(std::slice::from_ref(&row))
        .await
        .unwrap();
    store
        .append_memories(std::slice::from_ref(&row))
        .await
        .unwrap();
    let mut later = row.clone();
    later.time += 7;
    store
        .append_memories(std::slice::from_ref(&later))
        .await
        .unwrap();
    let b = builder(store.as_ref(), ORG_A);
    let all = store
        .query(&list_sql(&b, &list_params(|_| {}), NOW))
        .await
        .unwrap();
    assert_eq!(ids(&all), ["m1"]);
    assert_eq!(time_micros(&all.rows[0][0]), Some(later.time));
    let one = store
        .query(&b.get(&MemoryId::parse("m1").unwrap(), UnixMicros::now()))
        .await
        .unwrap();
    assert_eq!(one.rows.len(), 1);
    assert_eq!(one.into_maps()[0]["content"], row.content.as_str());
}

fn agent(micros_ago: i64, id: &str, org: &str, name: &str, deleted: &str) -> StateRow {
    StateRow {
        time: NOW.0 - micros_ago,
        id: id.into(),
        values: vec![
            org.into(),
            name.into(),
            String::new(),
            "{}".into(),
            "2026-11-25T10:00:00Z".into(),
            deleted.into(),
        ],
    }
}

fn session(micros_ago: i64, id: &str, org: &str, status: &str) -> StateRow {
    let closed = if status == "closed" {
        "2026-11-25T11:59:00Z"
    } else {
        ""
    };
    StateRow {
        time: NOW.0 - micros_ago,
        id: id.into(),
        values: vec![
            org.into(),
            "agent_1".into(),
            status.into(),
            "{}".into(),
            "2026-11-25T10:00:00Z".into(),
            "2026-11-25T11:00:00Z".into(),
            closed.into(),
        ],
    }
}

fn state_query(table: StateTable, columns: &[&str]) -> StateQuery {
    StateQuery::new(
        Ident::table(table.name()).unwrap(),
        columns.iter().map(|c| Ident::column(c).unwrap()).collect(),
    )
    .unwrap()
}

async fn state_rows_latest_version_wins(h: &Harness) {
    let store = h.store(ORG_A).await;
    let writes = [
        agent(3000, "agent_1", ORG_A, "one", "0"),
        agent(2000, "agent_1", ORG_A, "uno", "0"),
        agent(3000, "agent_2", ORG_A, "two", "0"),
        agent(1000, "agent_2", ORG_A, "two", "1"),
        agent(500, "agent_3", ORG_B, "foreign", "0"),
    ];
    for row in writes.clone() {
        store.append_state(StateTable::Agents, row).await.unwrap();
    }
    let b = builder(store.as_ref(), ORG_A);
    let live = state_query(StateTable::Agents, &["name", "deleted"])
        .with_equal(Ident::column("deleted").unwrap(), "0")
        .unwrap();
    let rows = store.query(&b.latest_state(&live)).await.unwrap();
    assert_eq!(rows.columns, ["time", "id", "name", "deleted"]);
    assert_eq!(ids(&rows), ["agent_1"], "{rows:?}");
    assert_eq!(rows.rows[0][2], "uno");
    assert_eq!(time_micros(&rows.rows[0][0]), Some(writes[1].time));

    let all = state_query(StateTable::Agents, &["name", "deleted", "created_at"]);
    let rows = store.query(&b.latest_state(&all)).await.unwrap();
    assert_eq!(ids(&rows), ["agent_2", "agent_1"], "newest first");
    let maps = rows.into_maps();
    assert_eq!(maps[0]["deleted"], "1");
    assert_eq!(maps[0]["created_at"], "2026-11-25T10:00:00Z");
    assert_eq!(time_micros(&maps[0]["time"]), Some(writes[3].time));

    let one = state_query(StateTable::Agents, &["name"])
        .with_ids([StateId::parse("agent_2").unwrap()])
        .unwrap();
    let rows = store.query(&b.latest_state(&one)).await.unwrap();
    assert_eq!(ids(&rows), ["agent_2"]);
    let foreign = state_query(StateTable::Agents, &["name"])
        .with_ids([StateId::parse("agent_3").unwrap()])
        .unwrap();
    assert!(
        store
            .query(&b.latest_state(&foreign))
            .await
            .unwrap()
            .rows
            .is_empty()
    );

    // Sessions: a closed session never matches status = active through
    // its older row.
    for row in [
        session(3000, "sess_1", ORG_A, "active"),
        session(1000, "sess_1", ORG_A, "closed"),
        session(2000, "sess_2", ORG_A, "active"),
    ] {
        store.append_state(StateTable::Sessions, row).await.unwrap();
    }
    let active = state_query(StateTable::Sessions, &["agent_id", "status", "closed_at"])
        .with_equal(Ident::column("status").unwrap(), "active")
        .unwrap();
    let rows = store.query(&b.latest_state(&active)).await.unwrap();
    assert_eq!(ids(&rows), ["sess_2"]);
    let all = state_query(StateTable::Sessions, &["status", "closed_at"]);
    let maps = store
        .query(&b.latest_state(&all))
        .await
        .unwrap()
        .into_maps();
    assert_eq!(maps.len(), 2);
    assert_eq!(
        (&maps[0]["id"], &maps[0]["status"], &maps[0]["closed_at"]),
        (
            &json!("sess_1"),
            &json!("closed"),
            &json!("2026-11-25T11:59:00Z")
        )
    );
}

async fn a_state_row_of_the_wrong_width_is_refused(h: &Harness) {
    let store = h.store(ORG_A).await;
    let mut row = agent(10, "agent_1", ORG_A, "x", "0");
    row.values.pop();
    let err = store
        .append_state(StateTable::Agents, row)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(err.to_string().contains("agents"), "{err}");
}

async fn never_written_tables_read_empty(h: &Harness) {
    let store = h.store(ORG_A).await;
    let b = builder(store.as_ref(), ORG_A);
    let check = |rows: Rows, what: &str| {
        assert!(rows.rows.is_empty(), "{what}: {rows:?}");
    };
    let agents = state_query(StateTable::Agents, &["name"]);
    let sessions = state_query(StateTable::Sessions, &["status"]);
    let reads = [
        ("list", list_sql(&b, &list_params(|_| {}), NOW)),
        ("get", b.get(&MemoryId::parse("m1").unwrap(), NOW)),
        ("agents", b.latest_state(&agents)),
        ("sessions", b.latest_state(&sessions)),
        (
            "stats",
            b.agent_stats(&AgentId::parse("agent_1").unwrap(), Some(DEDUP_WINDOW), NOW),
        ),
    ];
    for (what, sql) in &reads {
        check(store.query(sql).await.unwrap(), what);
    }
    // Memories exist now, the state tables still do not.
    store.append_memories(&fixture()).await.unwrap();
    check(
        store.query(&reads[2].1).await.unwrap(),
        "agents after memories",
    );
    check(
        store.query(&reads[3].1).await.unwrap(),
        "sessions after memories",
    );
    assert_eq!(store.query(&reads[0].1).await.unwrap().rows.len(), 4);
}

/// Duplicates by dedup key (different ids, as two workers or an index
/// that forgot the key would store them): each read shows the later of two
/// within the window, keeps a repeat from beyond it, and the newest-first
/// prefix collapsed by the worker agrees with the collapse in SQL.
async fn duplicate_keys_read_once_in_both_shapes(h: &Harness) {
    let store = h.store(ORG_A).await;
    let rows = [
        // k1 written three times: at -50 and -40 min (duplicates), and at
        // -170 min, more than the one-hour window before them
        mem(
            170, "d1", ORG_A, "agent_1", "", "episodic", "general", "same", "", "k1", 0.0,
        ),
        mem(
            50, "d2", ORG_A, "agent_1", "", "episodic", "general", "same", "", "k1", 0.0,
        ),
        mem(
            40, "d3", ORG_A, "agent_1", "", "episodic", "general", "same", "", "k1", 0.0,
        ),
        // d3 retried: same id, later time
        mem(
            30, "d3", ORG_A, "agent_1", "", "episodic", "general", "same", "", "k1", 0.0,
        ),
        mem(
            45, "e1", ORG_A, "agent_1", "", "episodic", "general", "other", "", "k2", 0.0,
        ),
        // no key: never collapsed by key
        mem(
            20, "f1", ORG_A, "agent_1", "", "episodic", "general", "x", "", "", 0.0,
        ),
        mem(
            20, "f2", ORG_A, "agent_1", "", "episodic", "general", "x", "", "", 0.0,
        ),
    ];
    store.append_memories(&rows).await.unwrap();
    let b = builder(store.as_ref(), ORG_A);
    let all = list_params(|_| {});
    let got = store.query(&list_sql(&b, &all, NOW)).await.unwrap();
    assert_eq!(ids(&got), ["f2", "f1", "d3", "e1", "d1"]);
    // d3 at its newest version
    assert_eq!(time_micros(&got.rows[2][0]), Some(rows[3].time));
    // dedup off: ids only
    let ids_only = store
        .query(&b.collapsed_page(&all.page(), None, NOW))
        .await
        .unwrap();
    assert_eq!(ids(&ids_only), ["f2", "f1", "d3", "e1", "d2", "d1"]);
    // oldest first: the same memories, reversed
    let asc = list_params(|p| p.order = Some("asc".into()));
    let got = store.query(&list_sql(&b, &asc, NOW)).await.unwrap();
    assert_eq!(ids(&got), ["d1", "e1", "d3", "f1", "f2"]);
    // the newest-first prefix, collapsed by the worker's code, agrees
    let prefix = store
        .query(&b.newest_memories(&all.page().filter, 100, NOW))
        .await
        .unwrap();
    let read: Vec<ReadMemory> = prefix
        .clone()
        .into_maps()
        .iter()
        .map(|m| ReadMemory {
            micros: time_micros(&m["time"]).unwrap(),
            memory: memtrace_data_plane::service::Memory {
                id: m["id"].as_str().unwrap().into(),
                time: String::new(),
                org_id: ORG_A.into(),
                agent_id: String::new(),
                session_id: String::new(),
                memory_type: String::new(),
                event_type: String::new(),
                content: String::new(),
                metadata: None,
                tags: Vec::new(),
                dedup_key: m["dedup_key"].as_str().unwrap().into(),
                importance: 0.0,
                parent_id: String::new(),
                expires_at: None,
            },
        })
        .collect();
    let window = i64::try_from(DEDUP_WINDOW.as_micros()).unwrap();
    let c = newest_first(read, 100, Some(window));
    assert!(c.complete);
    let shown: Vec<&str> = c.visible.iter().map(|r| r.memory.id.as_str()).collect();
    assert_eq!(shown, ["f2", "f1", "d3", "e1", "d1"]);
    // agent stats count what reads show
    let stats = store
        .query(&b.agent_stats(&AgentId::parse("agent_1").unwrap(), Some(DEDUP_WINDOW), NOW))
        .await
        .unwrap();
    let count = stats.column("memory_count").unwrap();
    assert_eq!(stats.rows.len(), 1);
    assert_eq!(stats.rows[0][count].as_i64(), Some(5));
}

/// Export pages (keyset on time, then id, over the collapsed rows) read
/// every visible memory once, oldest first, whatever the page size — a
/// page boundary between two memories of the same microsecond included.
async fn export_pages_keyset_through_ties_and_collapse(h: &Harness) {
    let store = h.store(ORG_A).await;
    let row = |ago, id: &str, key: &str| {
        mem(
            ago, id, ORG_A, "agent_1", "", "episodic", "general", id, "", key, 0.0,
        )
    };
    let rows = [
        row(170, "d1", "k1"),
        row(50, "d2", "k1"),
        row(40, "d3", "k1"),
        row(30, "d3", "k1"),
        row(45, "e1", "k2"),
        row(20, "f1", ""),
        row(20, "f2", ""),
        row(20, "f0", ""),
        row(10, "g1", ""),
    ];
    store.append_memories(&rows).await.unwrap();
    // another org's newer row, never exported here
    h.store(ORG_B)
        .await
        .append_memories(&[mem(
            5, "z1", ORG_B, "agent_1", "", "episodic", "general", "z1", "", "", 0.0,
        )])
        .await
        .unwrap();
    let b = builder(store.as_ref(), ORG_A);
    let want = ["d1", "e1", "d3", "f0", "f1", "f2", "g1"];
    for limit in [1, 2, 3, 7, 100] {
        let mut got = Vec::new();
        let mut cursor = None;
        for _ in 0..20 {
            let q = ExportQuery::parse(&ExportParams {
                limit: Some(limit),
                cursor: cursor.take(),
                ..ExportParams::default()
            })
            .unwrap();
            let page = store
                .query(&b.export_page(&q, Some(DEDUP_WINDOW), NOW))
                .await
                .unwrap();
            let mut page_ids = ids(&page);
            let more = page_ids.len() > limit as usize;
            page_ids.truncate(limit as usize);
            let last = page_ids.len().saturating_sub(1);
            got.extend(page_ids.iter().cloned());
            if !more {
                break;
            }
            let micros = time_micros(&page.rows[last][0]).unwrap();
            cursor = Some(ExportCursor::encode(micros, &page_ids[last]));
        }
        assert_eq!(got, want, "limit {limit}");
    }
    // d3 at its newest version
    let q = ExportQuery::parse(&ExportParams::default()).unwrap();
    let all = store
        .query(&b.export_page(&q, Some(DEDUP_WINDOW), NOW))
        .await
        .unwrap();
    assert_eq!(time_micros(&all.rows[2][0]), Some(rows[3].time));
}

macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod arc {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(&super::Harness::arc().await).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(&super::Harness::embedded()).await;
                }
            )*
        }
    };
}

on_both_engines!(
    memories_read_back_through_the_builder,
    other_orgs_rows_are_never_read,
    a_memory_written_twice_reads_once,
    state_rows_latest_version_wins,
    a_state_row_of_the_wrong_width_is_refused,
    never_written_tables_read_empty,
    duplicate_keys_read_once_in_both_shapes,
    export_pages_keyset_through_ties_and_collapse,
    concurrent_appends_all_land,
    expired_memories_are_hidden_from_every_read,
);

#[path = "tenant_store/adapters.rs"]
mod adapters;
#[path = "tenant_store/concurrency.rs"]
mod concurrency;
use concurrency::concurrent_appends_all_land;
#[path = "tenant_store/expiry.rs"]
mod expiry;
use expiry::expired_memories_are_hidden_from_every_read;
