//! Every read the query builder produces, run with `Dialect::Embedded`
//! against an in-memory SQLite table shaped like the embedded store
//! (`time` INTEGER microseconds): duplicates collapse, tags match whole,
//! content search ignores case and wildcards, bounds and paging hold, stats
//! count, state rows resolve to their latest version. Every memory page is
//! read both ways — collapsed in SQL, and as a newest-first prefix
//! collapsed by the worker's code — and the two must agree.
#![allow(clippy::unwrap_used)]

use memtrace_data_plane::query::{
    AgentId, ContextQuery, Dialect, Ident, Limit, ListParams, ListQuery, MemoryId, MemoryPage,
    Order, OrgId, QueryBuilder, SearchParams, SearchQuery, Sql, StateId, StateQuery, UnixMicros,
};
use memtrace_data_plane::service::Memory;
use memtrace_data_plane::service::collapse::{ReadMemory, importance_ties, newest_first};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Row};
use std::time::Duration;

/// 2026-11-25T12:00:00Z.
const NOW: UnixMicros = UnixMicros(1_795_608_000_000_000);
const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;

/// (minutes before NOW, id, org, agent, session, type, event, content, tags, dedup, importance)
type Fixture = (
    i64,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    f64,
);

#[rustfmt::skip]
const ROWS: &[Fixture] = &[
    // m1: written, retried with a later time, and retried again unchanged.
    (90, "m1", "org_default", "agent_1", "sess_1", "episodic", "tool_call", "Deployed the Payment service", "ab,x", "k1", 0.7),
    (60, "m1", "org_default", "agent_1", "sess_1", "episodic", "tool_call", "Deployed the Payment service", "ab,x", "k1", 0.7),
    (60, "m1", "org_default", "agent_1", "sess_1", "episodic", "tool_call", "Deployed the Payment service", "ab,x", "k1", 0.7),
    (120, "m2", "org_default", "agent_1", "sess_1", "decision", "error", "Chose 50% rollout_plan", "abc", "k2", 0.9),
    (7200, "m3", "org_default", "agent_1", "sess_2", "entity", "error", "ancient", "ab", "it's", 0.1),
    (30, "m4", "org_default", "agent_2", "sess_3", "episodic", "general", "O'Brien said DROP TABLE is bad", "", "k4", 0.0),
    (10, "m5", "org_other", "agent_1", "sess_1", "episodic", "tool_call", "Deployed the Payment service", "ab", "k5", 0.7),
    (180, "m6", "org_default", "agent_1", "sess_1", "episodic", "tool_call", "up 100 percent", "x,ab", "k6", 0.2),
    (120, "m7", "org_default", "agent_3", "sess_4", "entity", "general", "tie", "", "k7", 0.5),
];

async fn store() -> SqlitePool {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE memories (time INTEGER NOT NULL, id TEXT NOT NULL, org_id TEXT NOT NULL, \
         agent_id TEXT NOT NULL, session_id TEXT NOT NULL, memory_type TEXT NOT NULL, \
         event_type TEXT NOT NULL, content TEXT NOT NULL, metadata_json TEXT NOT NULL, \
         tags_csv TEXT NOT NULL, dedup_key TEXT NOT NULL, importance REAL NOT NULL, \
         parent_id TEXT NOT NULL, expires_at INTEGER NOT NULL DEFAULT 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for r in ROWS {
        sqlx::query("INSERT INTO memories VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?, ?, '', 0)")
            .bind(NOW.0 - r.0 * MINUTE)
            .bind(r.1)
            .bind(r.2)
            .bind(r.3)
            .bind(r.4)
            .bind(r.5)
            .bind(r.6)
            .bind(r.7)
            .bind(r.8)
            .bind(r.9)
            .bind(r.10)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query(
        "CREATE TABLE sessions (time INTEGER NOT NULL, id TEXT NOT NULL, org_id TEXT NOT NULL, \
         agent_id TEXT NOT NULL, status TEXT NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for (ago, id, org, status) in [
        (60, "sess_1", "org_default", "active"),
        (10, "sess_1", "org_default", "closed"),
        (60, "sess_2", "org_default", "active"),
        (60, "sess_2", "org_default", "active"),
        (60, "sess_3", "org_other", "active"),
    ] {
        sqlx::query("INSERT INTO sessions VALUES (?, ?, ?, 'agent_1', ?)")
            .bind(NOW.0 - ago * MINUTE)
            .bind(id)
            .bind(org)
            .bind(status)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool
}

fn builder(org: &str) -> QueryBuilder {
    QueryBuilder::new(
        Dialect::Embedded,
        OrgId::parse(org).unwrap(),
        Ident::table("memories").unwrap(),
    )
}

async fn rows(pool: &SqlitePool, sql: Sql) -> Vec<SqliteRow> {
    sqlx::query(AssertSqlSafe(sql.into_string()))
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn ids(pool: &SqlitePool, sql: Sql) -> Vec<String> {
    rows(pool, sql)
        .await
        .iter()
        .map(|r| r.get::<String, _>("id"))
        .collect()
}

/// The dedup window of these tests.
const WINDOW: Duration = Duration::from_secs(86_400);

/// A memory row as the collapse reads it.
fn read(r: &SqliteRow) -> ReadMemory {
    ReadMemory {
        micros: r.get("time"),
        memory: Memory {
            id: r.get("id"),
            time: String::new(),
            org_id: r.get("org_id"),
            agent_id: r.get("agent_id"),
            session_id: r.get("session_id"),
            memory_type: r.get("memory_type"),
            event_type: r.get("event_type"),
            content: r.get("content"),
            metadata: None,
            tags: Vec::new(),
            dedup_key: r.get("dedup_key"),
            importance: r.get("importance"),
            parent_id: r.get("parent_id"),
            expires_at: None,
        },
    }
}

/// The ids of `page`, read both ways, which must agree: collapsed in SQL,
/// and as newest-first prefixes of `fetch` rows collapsed in the worker
/// (each prefix either settles the page or is reported short). Also
/// whether more follow the page.
async fn page_ids(
    pool: &SqlitePool,
    b: &QueryBuilder,
    page: &MemoryPage,
    window: Option<Duration>,
) -> (Vec<String>, bool) {
    let sql = rows(pool, b.collapsed_page(page, window, NOW)).await;
    let mut exact: Vec<String> = sql.iter().map(|r| r.get::<String, _>("id")).collect();
    let limit = page.limit as usize;
    let has_more = exact.len() > limit;
    exact.truncate(limit);
    let offset = page.offset as usize;
    let wanted = offset + limit + 1;
    let micros = window.map(|w| w.as_micros() as i64);
    for fetch in [wanted + 1, 3, 1000] {
        let prefix = rows(pool, b.newest_memories(&page.filter, fetch as u32, NOW)).await;
        let mut c = newest_first(prefix.iter().map(read).collect(), fetch, micros);
        if !c.complete && c.visible.len() < wanted {
            continue; // a short prefix: the service reads a longer one
        }
        if page.importance_tiebreak {
            importance_ties(&mut c.visible);
        }
        if page.order == Order::Asc {
            // an oldest-first page is the whole collapsed read, reversed
            if !c.complete {
                continue;
            }
            c.visible.reverse();
        }
        let ids: Vec<String> = c.visible.iter().map(|r| r.memory.id.clone()).collect();
        assert_eq!(
            ids.len() > offset + limit,
            has_more,
            "has_more, fetch {fetch}"
        );
        let got: Vec<String> = ids.into_iter().skip(offset).take(limit).collect();
        assert_eq!(got, exact, "prefix of {fetch} vs collapsed in SQL");
    }
    (exact, has_more)
}

async fn list(pool: &SqlitePool, p: ListParams) -> Vec<String> {
    let q = ListQuery::parse(&p).unwrap();
    page_ids(pool, &builder("org_default"), &q.page(), Some(WINDOW))
        .await
        .0
}

async fn search(pool: &SqlitePool, p: SearchParams) -> Vec<String> {
    let q = SearchQuery::parse(&p).unwrap();
    page_ids(pool, &builder("org_default"), &q.page(), Some(WINDOW))
        .await
        .0
}

#[tokio::test]
async fn list_collapses_duplicates_and_filters() {
    let pool = store().await;
    let page = ListQuery::parse(&ListParams::default()).unwrap().page();
    let all = rows(
        &pool,
        builder("org_default").collapsed_page(&page, Some(WINDOW), NOW),
    )
    .await;
    let got: Vec<(String, i64)> = all.iter().map(|r| (r.get("id"), r.get("time"))).collect();
    let at = |m: i64| NOW.0 - m * MINUTE;
    // m1 once, at its latest time; m7 and m2 share a time: id breaks the tie.
    assert_eq!(
        got,
        [
            ("m4", at(30)),
            ("m1", at(60)),
            ("m7", at(120)),
            ("m2", at(120)),
            ("m6", at(180)),
            ("m3", at(7200))
        ]
        .map(|(id, t)| (id.to_owned(), t))
    );
    assert_eq!(
        all[1].get::<String, _>("content"),
        "Deployed the Payment service"
    );
    assert_eq!(all[1].get::<f64, _>("importance"), 0.7);

    let p = |f: fn(&mut ListParams)| {
        let mut p = ListParams::default();
        f(&mut p);
        p
    };
    // Whole tags: `ab` never matches `abc`.
    assert_eq!(
        list(&pool, p(|p| p.tags = Some("ab".into()))).await,
        ["m1", "m6", "m3"]
    );
    assert_eq!(
        list(&pool, p(|p| p.tags = Some("ab,x".into()))).await,
        ["m1", "m6"]
    );
    assert_eq!(
        list(&pool, p(|p| p.tags = Some("abc".into()))).await,
        ["m2"]
    );
    assert_eq!(
        list(&pool, p(|p| p.tags = Some("a".into()))).await,
        Vec::<String>::new()
    );
    // Time bounds: since is exclusive of older rows, until of newer ones.
    assert_eq!(
        list(&pool, p(|p| p.since = Some("4h".into()))).await,
        ["m4", "m1", "m7", "m2", "m6"]
    );
    assert_eq!(
        list(&pool, p(|p| p.until = Some("90m".into()))).await,
        ["m7", "m2", "m6", "m3"]
    );
    let window = p(|p| {
        p.since = Some("2026-11-25T08:30:00Z".into());
        p.until = Some("2026-11-25T10:30:00+00:00".into());
    });
    assert_eq!(list(&pool, window).await, ["m7", "m2", "m6"]);
    assert_eq!(
        list(&pool, p(|p| p.until = Some("now".into()))).await.len(),
        6
    );
    // Equality filters.
    assert_eq!(
        list(&pool, p(|p| p.agent_id = Some("agent_2".into()))).await,
        ["m4"]
    );
    assert_eq!(
        list(&pool, p(|p| p.session_id = Some("sess_1".into()))).await,
        ["m1", "m2", "m6"]
    );
    assert_eq!(
        list(&pool, p(|p| p.memory_type = Some("decision".into()))).await,
        ["m2"]
    );
    assert_eq!(
        list(&pool, p(|p| p.event_type = Some("error".into()))).await,
        ["m2", "m3"]
    );
    // Paging: limit + 1 rows tell whether more exist.
    let page = ListQuery::parse(&p(|p| {
        p.limit = Some(2);
        p.offset = Some(1);
    }))
    .unwrap();
    let (got, more) = page_ids(&pool, &builder("org_default"), &page.page(), Some(WINDOW)).await;
    assert_eq!(got, ["m1", "m7"]);
    assert!(more);
    let last = ListQuery::parse(&p(|p| {
        p.limit = Some(2);
        p.offset = Some(4);
    }))
    .unwrap();
    let (got, more) = page_ids(&pool, &builder("org_default"), &last.page(), Some(WINDOW)).await;
    assert_eq!(got, ["m6", "m3"]);
    assert!(!more);
    assert_eq!(
        list(&pool, p(|p| p.order = Some("asc".into()))).await,
        ["m3", "m6", "m2", "m7", "m1", "m4"]
    );
    // Another org sees only its own rows.
    let all = ListQuery::parse(&ListParams::default()).unwrap().page();
    let (other, _) = page_ids(&pool, &builder("org_other"), &all, Some(WINDOW)).await;
    assert_eq!(other, ["m5"]);
}

#[tokio::test]
async fn search_is_case_insensitive_and_literal() {
    let pool = store().await;
    let content = |s: &str| SearchParams {
        content_contains: Some(s.into()),
        ..SearchParams::default()
    };
    assert_eq!(search(&pool, content("deployed THE payment")).await, ["m1"]);
    assert_eq!(
        search(&pool, content("o'brien said drop table")).await,
        ["m4"]
    );
    // `%`, `_` and `!` are literal characters, not wildcards.
    assert_eq!(search(&pool, content("%")).await, ["m2"]);
    assert_eq!(search(&pool, content("_")).await, ["m2"]);
    assert_eq!(search(&pool, content("50%")).await, ["m2"]);
    assert_eq!(search(&pool, content("1_0")).await, Vec::<String>::new());
    assert_eq!(search(&pool, content("!")).await, Vec::<String>::new());
    // Importance, types, tags; importance breaks the m2/m7 time tie.
    let p = SearchParams {
        min_importance: Some(0.5),
        ..SearchParams::default()
    };
    assert_eq!(search(&pool, p).await, ["m1", "m2", "m7"]);
    let p = SearchParams {
        memory_types: vec!["decision".into(), "entity".into()],
        ..SearchParams::default()
    };
    assert_eq!(search(&pool, p).await, ["m2", "m7", "m3"]);
    let p = SearchParams {
        tags: vec!["x".into(), "ab".into()],
        event_types: vec!["tool_call".into()],
        limit: Some(1),
        ..SearchParams::default()
    };
    assert_eq!(search(&pool, p).await, ["m1"]);
}

#[tokio::test]
async fn get_context_stats_and_state() {
    let pool = store().await;
    let b = builder("org_default");
    let get = |id: &str| b.get(&MemoryId::parse(id).unwrap(), NOW);
    let found = rows(&pool, get("m1")).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get::<i64, _>("time"), NOW.0 - HOUR);
    assert!(
        rows(&pool, get("m5")).await.is_empty(),
        "another org's memory"
    );
    assert!(
        rows(&pool, get("0190a0b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"))
            .await
            .is_empty()
    );

    let ctx = ContextQuery::parse("sess_1", None, &[]).unwrap();
    assert_eq!(
        page_ids(&pool, &b, &ctx.page(), Some(WINDOW)).await.0,
        ["m1", "m2", "m6"]
    );
    let ctx = ContextQuery::parse("sess_1", Some("150m"), &["episodic".into()]).unwrap();
    assert_eq!(
        page_ids(&pool, &b, &ctx.page(), Some(WINDOW)).await.0,
        ["m1"]
    );

    let stats = rows(
        &pool,
        b.agent_stats(&AgentId::parse("agent_1").unwrap(), Some(WINDOW), NOW),
    )
    .await;
    let got: Vec<(String, i64, i64, i64, i64)> = stats
        .iter()
        .map(|r| {
            let (t, c, d, e, l) = (
                "memory_type",
                "memory_count",
                "memories_24h",
                "errors_24h",
                "last_active",
            );
            (r.get(t), r.get(c), r.get(d), r.get(e), r.get(l))
        })
        .collect();
    assert_eq!(
        got,
        [
            ("decision".to_owned(), 1, 1, 1, NOW.0 - 2 * HOUR),
            ("entity".to_owned(), 1, 0, 0, NOW.0 - 120 * HOUR),
            ("episodic".to_owned(), 2, 2, 0, NOW.0 - HOUR),
        ]
    );
    assert!(
        rows(
            &pool,
            b.agent_stats(&AgentId::parse("nobody").unwrap(), Some(WINDOW), NOW)
        )
        .await
        .is_empty()
    );

    let status = Ident::column("status").unwrap();
    let sessions = || {
        StateQuery::new(
            Ident::table("sessions").unwrap(),
            vec![Ident::column("agent_id").unwrap(), status.clone()],
        )
        .unwrap()
    };
    let latest = rows(&pool, b.latest_state(&sessions())).await;
    let got: Vec<(String, String)> = latest
        .iter()
        .map(|r| (r.get("id"), r.get("status")))
        .collect();
    assert_eq!(
        got,
        [
            ("sess_1".into(), "closed".into()),
            ("sess_2".into(), "active".into())
        ]
    );
    let active = sessions().with_equal(status.clone(), "active").unwrap();
    assert_eq!(ids(&pool, b.latest_state(&active)).await, ["sess_2"]);
    let one = sessions()
        .with_ids([StateId::parse("sess_1").unwrap()])
        .unwrap()
        .with_limit(Limit::list(Some(1)));
    assert_eq!(ids(&pool, b.latest_state(&one)).await, ["sess_1"]);
}

/// The Arc rendering of string literals (pieces joined by `||`, trailing
/// backslashes as `chr(92)`) evaluates to the value; SQLite spells `chr`
/// as `char`.
#[tokio::test]
async fn arc_literals_evaluate_to_the_value() {
    let pool = store().await;
    let arc = Dialect::Arc {
        database: Ident::database("db").unwrap(),
    };
    for value in [
        "",
        "plain",
        "drop table x",
        "it's",
        "a\\",
        "\\\\",
        "a\\ b",
        " \\ ",
        "\\' ''\\",
        "tab\there\nnl",
        "n\0ul",
        "  lead",
        "trail  ",
        "é ü",
    ] {
        let expr = arc.string_literal(value).replace("chr(92)", "char(92)");
        let sql = format!("SELECT {expr} AS v");
        let got: String = sqlx::query(AssertSqlSafe(sql))
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("v");
        assert_eq!(got, value.replace('\0', ""), "{expr}");
    }
}
