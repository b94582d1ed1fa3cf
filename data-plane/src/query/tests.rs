//! Exact SQL per query kind for a fixed "now", and the validation rules.

use super::*;
use std::time::Duration;

/// 2026-11-25T12:00:00Z.
const NOW: UnixMicros = UnixMicros(1_795_608_000_000_000);

/// The memory columns as every memory read selects them (alias `a`).
fn columns(a: &str) -> String {
    MEMORY_COLUMNS
        .iter()
        .map(|c| format!("{a}.{c} AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The predicate hiding memories expired at `NOW`, in every memory read.
const UNEXPIRED: &str = "COALESCE(v.expires_at, 0) NOT BETWEEN 1 AND 1795608000000000";

/// `sql` as the Arc dialect writes it: a memory row's id is its `id` or,
/// for a row the original memtrace wrote, the id derived from the row.
fn arcify(sql: &str) -> String {
    let id = format!(
        "COALESCE(v.id, {})",
        memtrace_common::legacy::arc_legacy_id("v.")
    );
    sql.replace("v.id AS id", &format!("{id} AS id"))
        .replace("v.id <> ''", "(v.id IS NULL OR v.id <> '')")
        .replace("PARTITION BY v.id ", &format!("PARTITION BY {id} "))
}

fn arc() -> QueryBuilder {
    QueryBuilder::new(
        Dialect::Arc {
            database: Ident::database("tenant_db").unwrap(),
        },
        OrgId::parse("org_default").unwrap(),
        Ident::table("events").unwrap(),
    )
}

fn embedded() -> QueryBuilder {
    QueryBuilder::new(
        Dialect::Embedded,
        OrgId::parse("org_default").unwrap(),
        Ident::table("memories").unwrap(),
    )
}

#[test]
fn newest_prefix_with_every_list_filter_embedded() {
    let q = ListQuery::parse(&ListParams {
        agent_id: Some("agent_1".into()),
        session_id: Some("sess_1".into()),
        memory_type: Some("episodic".into()),
        event_type: Some("tool_call".into()),
        tags: Some("ab, c.d,,ab".into()),
        since: Some("24h".into()),
        until: Some("2026-11-25T11:00:00Z".into()),
        limit: Some(10),
        offset: Some(20),
        order: Some("desc".into()),
    })
    .unwrap();
    let page = q.page();
    assert_eq!((page.limit, page.offset, page.order), (10, 20, Order::Desc));
    let expected = format!(
        "SELECT {} FROM \"memories\" AS v WHERE v.org_id = 'org_default' AND v.id <> '' \
         AND v.agent_id = 'agent_1' AND v.session_id = 'sess_1' \
         AND v.time > 1795521600000000 AND v.time < 1795604400000000 \
         AND v.memory_type = 'episodic' AND v.event_type = 'tool_call' \
         AND instr(',' || v.tags_csv || ',', ',ab,') > 0 \
         AND instr(',' || v.tags_csv || ',', ',c.d,') > 0 \
         AND {UNEXPIRED} ORDER BY v.time DESC LIMIT 32",
        columns("v")
    );
    assert_eq!(
        embedded().newest_memories(&page.filter, 32, NOW).as_str(),
        expected
    );
}

#[test]
fn newest_prefix_defaults_arc() {
    let q = ListQuery::parse(&ListParams::default()).unwrap();
    let page = q.page();
    assert_eq!((page.limit, page.offset, page.order), (100, 0, Order::Desc));
    let expected = format!(
        "SELECT {} FROM tenant_db.events AS v WHERE v.org_id = 'org_default' AND v.id <> '' \
         AND {UNEXPIRED} ORDER BY v.time DESC LIMIT 102",
        columns("v")
    );
    assert_eq!(
        arc().newest_memories(&page.filter, 102, NOW).as_str(),
        arcify(&expected)
    );
}

#[test]
fn search_filters_arc() {
    let q = SearchQuery::parse(&SearchParams {
        memory_types: vec!["decision".into(), "entity".into(), "decision".into()],
        event_types: vec!["error".into()],
        tags: vec!["x".into()],
        content_contains: Some("50% of O'Brien's_data drop table".into()),
        min_importance: Some(0.5),
        since: Some("2026-11-25T10:00:00+01:00".into()),
        ..SearchParams::default()
    })
    .unwrap();
    let page = q.page();
    assert!(page.importance_tiebreak);
    assert_eq!((page.limit, page.offset), (50, 0));
    let expected = format!(
        "SELECT {} FROM tenant_db.events AS v WHERE v.org_id = 'org_default' AND v.id <> '' \
         AND v.time > '2026-11-25 09:00:00.000000' \
         AND v.memory_type IN ('decision', 'entity') AND v.event_type = 'error' \
         AND instr(',' || v.tags_csv || ',', ',x,') > 0 \
         AND lower(v.content) LIKE lower('%50!%' || ' of' || ' O''Brien''s!_data' || ' drop' \
         || ' table%') ESCAPE '!' AND v.importance >= 0.5 AND {UNEXPIRED} \
         ORDER BY v.time DESC LIMIT 52",
        columns("v")
    );
    assert_eq!(
        arc().newest_memories(&page.filter, 52, NOW).as_str(),
        arcify(&expected)
    );
}

#[test]
fn get_by_id_both_dialects() {
    let id = MemoryId::parse("0190a0b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b").unwrap();
    for (builder, table) in [(embedded(), "\"memories\""), (arc(), "tenant_db.events")] {
        let expected = format!(
            "SELECT {} FROM {table} AS v WHERE v.org_id = 'org_default' \
             AND v.id = '0190a0b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b' AND {UNEXPIRED} \
             ORDER BY v.time DESC LIMIT 1",
            columns("v")
        );
        let expected = if table.starts_with("tenant_db") {
            arcify(&expected)
        } else {
            expected
        };
        assert_eq!(builder.get(&id, NOW).as_str(), expected);
    }
}

#[test]
fn session_context_reads_the_newest_hundred_of_the_window() {
    let q = ContextQuery::parse("sess_1", None, &["episodic".into(), "decision".into()]).unwrap();
    let page = q.page();
    assert_eq!((page.limit, page.offset, page.order), (100, 0, Order::Desc));
    let sql = arc().newest_memories(&page.filter, 102, NOW);
    assert!(
        sql.as_str().contains(
            "AND v.session_id = 'sess_1' AND v.time > '2026-11-24 12:00:00.000000' \
             AND v.memory_type IN ('episodic', 'decision') AND COALESCE(v.expires_at, 0) \
             NOT BETWEEN 1 AND 1795608000000000 ORDER BY v.time DESC LIMIT 102"
        ),
        "{sql}"
    );
    let absolute = ContextQuery::parse("sess_1", Some("2026-11-01"), &[]).unwrap();
    assert!(
        arc()
            .newest_memories(&absolute.page().filter, 102, NOW)
            .as_str()
            .contains("v.time > '2026-11-01 00:00:00.000000' AND COALESCE(v.expires_at")
    );
}

/// The collapse in SQL over `columns`, filtered by `predicates`.
fn collapsed_rows(table: &str, cols: &[&str], predicates: &str, window: Option<&str>) -> String {
    let list = |a: &str| {
        cols.iter()
            .map(|c| format!("{a}.{c} AS {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let versions = format!(
        "SELECT {}, ROW_NUMBER() OVER (PARTITION BY v.id ORDER BY v.time DESC) AS version \
         FROM {table} AS v WHERE v.org_id = 'org_default' AND v.id <> ''{predicates} \
         AND {UNEXPIRED}",
        list("v")
    );
    let versions = if table.starts_with("tenant_db.") {
        arcify(&versions)
    } else {
        versions
    };
    match window {
        None => format!(
            "SELECT {} FROM ({versions}) AS versions WHERE versions.version = 1",
            list("versions")
        ),
        Some(w) => format!(
            "SELECT {} FROM (SELECT {}, LEAD(versions.time) OVER (PARTITION BY \
             versions.dedup_key ORDER BY versions.time, versions.id) AS next_time \
             FROM ({versions}) AS versions WHERE versions.version = 1) AS latest \
             WHERE latest.dedup_key = '' OR latest.next_time IS NULL OR {w} >= 86400000000",
            list("latest"),
            list("versions")
        ),
    }
}

#[test]
fn collapsed_page_oldest_first_both_dialects() {
    let q = ListQuery::parse(&ListParams {
        agent_id: Some("agent_1".into()),
        limit: Some(10),
        offset: Some(5000),
        order: Some("asc".into()),
        ..ListParams::default()
    })
    .unwrap();
    let day = Some(Duration::from_secs(86_400));
    let rows = collapsed_rows(
        "tenant_db.events",
        &MEMORY_COLUMNS,
        " AND v.agent_id = 'agent_1'",
        Some("epoch_us(latest.next_time) - epoch_us(latest.time)"),
    );
    let expected = format!(
        "SELECT {} FROM ({rows}) AS kept ORDER BY kept.time ASC, kept.id ASC LIMIT 11 OFFSET 5000",
        columns("kept")
    );
    assert_eq!(arc().collapsed_page(&q.page(), day, NOW).as_str(), expected);
    let rows = collapsed_rows(
        "\"memories\"",
        &MEMORY_COLUMNS,
        " AND v.agent_id = 'agent_1'",
        Some("latest.next_time - latest.time"),
    );
    assert!(
        embedded()
            .collapsed_page(&q.page(), day, NOW)
            .as_str()
            .contains(&rows)
    );
    // dedup off: retried ids only
    let ids_only = collapsed_rows(
        "\"memories\"",
        &MEMORY_COLUMNS,
        " AND v.agent_id = 'agent_1'",
        None,
    );
    assert!(
        embedded()
            .collapsed_page(&q.page(), None, NOW)
            .as_str()
            .contains(&ids_only)
    );
    // a search keeps its importance tiebreak
    let search = SearchQuery::parse(&SearchParams::default()).unwrap();
    assert!(
        arc()
            .collapsed_page(&search.page(), day, NOW)
            .as_str()
            .ends_with(
                "ORDER BY kept.time DESC, kept.importance DESC, kept.id DESC LIMIT 51 OFFSET 0"
            )
    );
}

#[test]
fn agent_stats_arc() {
    let day = "'2026-11-24 12:00:00.000000'";
    let rows = collapsed_rows(
        "tenant_db.events",
        &["time", "id", "dedup_key", "memory_type", "event_type"],
        " AND v.agent_id = 'agent_1'",
        Some("epoch_us(latest.next_time) - epoch_us(latest.time)"),
    );
    let expected = format!(
        "SELECT d.memory_type AS memory_type, COUNT(*) AS memory_count, \
         COUNT(CASE WHEN d.time > {day} THEN 1 END) AS memories_24h, \
         COUNT(CASE WHEN d.time > {day} AND d.event_type = 'error' THEN 1 END) AS errors_24h, \
         MAX(d.time) AS last_active FROM ({rows}) AS d GROUP BY d.memory_type \
         ORDER BY d.memory_type"
    );
    let agent = AgentId::parse("agent_1").unwrap();
    assert_eq!(
        arc()
            .agent_stats(&agent, Some(Duration::from_secs(86_400)), NOW)
            .as_str(),
        expected
    );
}

#[test]
fn latest_state_arc() {
    let q = StateQuery::new(
        Ident::table("sessions").unwrap(),
        vec![
            Ident::column("agent_id").unwrap(),
            Ident::column("status").unwrap(),
        ],
    )
    .unwrap()
    .with_ids([
        StateId::parse("sess_1").unwrap(),
        StateId::parse("sess_2").unwrap(),
        StateId::parse("sess_1").unwrap(),
    ])
    .unwrap()
    .with_equal(Ident::column("status").unwrap(), "active")
    .unwrap()
    .with_limit(Limit::list(Some(5)));
    let expected = "SELECT latest.time AS time, latest.id AS id, latest.agent_id AS agent_id, \
         latest.status AS status FROM (SELECT v.time AS time, v.id AS id, \
         v.agent_id AS agent_id, v.status AS status, ROW_NUMBER() OVER (PARTITION BY v.id \
         ORDER BY v.time DESC) AS version FROM tenant_db.sessions AS v \
         WHERE v.org_id = 'org_default' AND v.id <> '' AND v.id IN ('sess_1', 'sess_2')) AS latest \
         WHERE latest.version = 1 AND latest.status = 'active' \
         ORDER BY latest.time DESC, latest.id DESC LIMIT 5";
    assert_eq!(arc().latest_state(&q).as_str(), expected);
    let time = Ident::column("time").unwrap();
    assert!(StateQuery::new(Ident::table("agents").unwrap(), vec![time]).is_err());
}

fn invalid(field: &'static str, rule: &'static str) -> QueryError {
    QueryError::Invalid { field, rule }
}

#[test]
fn offset_is_bounded_before_any_store_sees_it() {
    let offset = |n: i64| {
        ListQuery::parse(&ListParams {
            offset: Some(n),
            ..ListParams::default()
        })
    };
    assert_eq!(offset(0).unwrap().offset, 0);
    assert_eq!(offset(100_000).unwrap().offset, MAX_OFFSET);
    for refused in [-1, 100_001, i64::MAX] {
        let err = offset(refused).unwrap_err();
        assert_eq!(
            err,
            invalid("offset", "must be between 0 and 100000"),
            "{refused}"
        );
        assert_eq!(
            err.to_string(),
            "invalid offset: must be between 0 and 100000"
        );
    }
    // the deepest page still renders its OFFSET
    let deepest = offset(100_000).unwrap().page();
    let sql = arc().collapsed_page(&deepest, None, NOW);
    assert!(
        sql.as_str().ends_with("LIMIT 101 OFFSET 100000"),
        "{}",
        sql.as_str()
    );
}

#[test]
fn validation_names_field_and_rule() {
    let list = |p: ListParams| ListQuery::parse(&p).unwrap_err();
    assert_eq!(
        list(ListParams {
            agent_id: Some("1agent".into()),
            ..ListParams::default()
        }),
        invalid("agent_id", validate::ID_RULE)
    );
    assert_eq!(
        list(ListParams {
            session_id: Some("s'; --".into()),
            ..ListParams::default()
        })
        .field(),
        "session_id"
    );
    assert_eq!(
        list(ListParams {
            memory_type: Some("semantic".into()),
            ..ListParams::default()
        }),
        invalid(
            "memory_type",
            "must be one of episodic|session|decision|entity"
        )
    );
    assert_eq!(
        list(ListParams {
            memory_type: Some("bad-type".into()),
            ..ListParams::default()
        }),
        invalid("memory_type", validate::TYPE_RULE)
    );
    assert_eq!(
        list(ListParams {
            tags: Some("ok,not ok".into()),
            ..ListParams::default()
        }),
        invalid("tags", validate::TAG_RULE)
    );
    for (p, field) in [
        (
            ListParams {
                since: Some("garbage".into()),
                ..ListParams::default()
            },
            "since",
        ),
        (
            ListParams {
                until: Some("9999h".into()),
                ..ListParams::default()
            },
            "until",
        ),
        (
            ListParams {
                order: Some("up".into()),
                ..ListParams::default()
            },
            "order",
        ),
        (
            ListParams {
                offset: Some(-1),
                ..ListParams::default()
            },
            "offset",
        ),
        (
            ListParams {
                offset: Some(100_001),
                ..ListParams::default()
            },
            "offset",
        ),
    ] {
        assert_eq!(list(p).field(), field);
    }
    let search = |p: SearchParams| SearchQuery::parse(&p).unwrap_err();
    assert_eq!(
        search(SearchParams {
            memory_types: vec!["episodic".into(), "nope".into()],
            ..SearchParams::default()
        })
        .field(),
        "memory_types"
    );
    assert_eq!(
        search(SearchParams {
            tags: (0..17).map(|i| format!("t{i}")).collect(),
            ..SearchParams::default()
        }),
        QueryError::TooMany {
            field: "tags",
            max: 16
        }
    );
    // duplicates collapse before the distinct count; the count as sent is
    // bounded before anything else, so a huge list is refused after at most
    // MAX_LIST_VALUES values were looked at (was: a quadratic de-duplication
    // of every value first)
    let tags = SearchQuery::parse(&SearchParams {
        tags: ["a", "b", "a", "", "b"].map(String::from).to_vec(),
        ..SearchParams::default()
    })
    .unwrap()
    .filter
    .tags;
    assert_eq!(
        tags.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    // distinct values: refused at the 17th
    assert_eq!(
        search(SearchParams {
            tags: (0..300_000).map(|i| format!("t{i}")).collect(),
            ..SearchParams::default()
        }),
        QueryError::TooMany {
            field: "tags",
            max: 16
        }
    );
    // the same few values many times: refused at the 257th
    for (field, huge) in [
        (
            "tags",
            SearchParams {
                tags: vec!["same".into(); 300_000],
                ..SearchParams::default()
            },
        ),
        (
            "event_types",
            SearchParams {
                event_types: vec!["general".into(); 40_000],
                ..SearchParams::default()
            },
        ),
        (
            "memory_types",
            SearchParams {
                memory_types: vec!["episodic".into(); 40_000],
                ..SearchParams::default()
            },
        ),
    ] {
        let e = search(huge);
        assert_eq!(e.field(), field);
        assert!(
            e.to_string().contains("at most 256 values may be sent"),
            "{e}"
        );
    }
    let csv = vec!["x"; 10_000].join(",");
    let e = ListQuery::parse(&ListParams {
        tags: Some(csv),
        ..ListParams::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("at most 256 values"), "{e}");
    assert_eq!(
        search(SearchParams {
            min_importance: Some(f64::NAN),
            ..SearchParams::default()
        })
        .field(),
        "min_importance"
    );
    assert_eq!(
        search(SearchParams {
            content_contains: Some("x".repeat(513)),
            ..SearchParams::default()
        })
        .field(),
        "content_contains"
    );
    let err = ContextQuery::parse("sess_1", None, &["x".into()]).unwrap_err();
    assert_eq!(err.field(), "include_types");
    assert_eq!(
        err.to_string(),
        "invalid include_types: must be one of episodic|session|decision|entity"
    );
}

#[test]
fn ids_limits_and_identifiers() {
    assert!(MemoryId::parse("0190a0b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b").is_ok());
    assert!(MemoryId::parse("mem_abc").is_ok());
    assert!(MemoryId::parse("0190a0b2").is_err());
    assert!(AgentId::parse("0190a0b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b").is_err());
    assert!(AgentId::parse(&format!("a{}", "b".repeat(127))).is_ok());
    assert!(AgentId::parse(&format!("a{}", "b".repeat(128))).is_err());
    assert!(Tag::parse(&"t".repeat(64)).is_ok() && Tag::parse(&"t".repeat(65)).is_err());
    assert!(Tag::parse("").is_err() && Tag::parse("a,b").is_err());
    assert!(EventType::parse("tool_call").is_ok() && EventType::parse("tool-call").is_err());
    for (n, list, search) in [(None, 100, 50), (Some(0), 100, 50), (Some(-3), 100, 50)] {
        assert_eq!(
            (Limit::list(n).get(), Limit::search(n).get()),
            (list, search)
        );
    }
    assert_eq!(Limit::list(Some(1001)).get(), 100);
    assert_eq!(Limit::search(Some(1000)).get(), 1000);
    assert!(
        Ident::database("tenant-db").is_err(),
        "Arc's rewriter cannot read hyphens"
    );
    assert!(Ident::database(&"d".repeat(65)).is_err());
    assert!(Ident::table("events").is_ok() && Ident::table("ev\"ents").is_err());
    assert!(Ident::column("Status").is_err());
    assert_eq!(Order::parse(Some("ASC")).unwrap(), Order::Asc);
    assert_eq!(DedupKey::parse("\0").unwrap_err().field(), "dedup_key");
    assert_eq!(ContentPattern::parse("\0\0").unwrap(), None);
}

/// The largest search a request can ask for: every list at its maximum,
/// every value at its longest, and a content pattern that maximises
/// escaping and whitespace splitting.
fn largest_search() -> SearchParams {
    SearchParams {
        agent_id: Some(format!("a{}", "b".repeat(127))),
        session_id: Some(format!("s{}", "b".repeat(127))),
        memory_types: ["episodic", "session", "decision", "entity"]
            .map(String::from)
            .to_vec(),
        event_types: (0..16)
            .map(|i| format!("e{i:02}{}", "x".repeat(60)))
            .collect(),
        tags: (0..16)
            .map(|i| format!("{i:02}{}", "_".repeat(62)))
            .collect(),
        content_contains: Some("' ".repeat(256)),
        since: Some("2026-11-01T00:00:00Z".into()),
        until: Some("1h".into()),
        min_importance: Some(f64::MIN_POSITIVE),
        ..SearchParams::default()
    }
}

#[test]
fn worst_case_search_fits_arc_limit() {
    let p = largest_search();
    let page = SearchQuery::parse(&p).unwrap().page();
    let day = Some(Duration::from_secs(86_400));
    for sql in [
        arc().newest_memories(&page.filter, PREFIX_MAX_ROWS, NOW),
        arc().collapsed_page(&page, day, NOW),
    ] {
        assert!(
            sql.as_str().len() <= ARC_MAX_SQL_LEN,
            "{} bytes",
            sql.as_str().len()
        );
    }
}

/// The largest read a request can ask for, with the org's erasures in
/// progress filling their whole budget, stays under Arc's limit.
#[test]
fn the_largest_read_with_the_erasure_budget_fits() {
    use crate::erasure::{Erasure, Filter, Scope, State};
    use crate::query::validate::{EventType, MemoryId, Tag};
    use std::sync::Arc;
    let p = largest_search();
    let page = SearchQuery::parse(&p).unwrap().page();
    let day = Some(Duration::from_secs(86_400));
    let read_len = arc().collapsed_page(&page, day, NOW).as_str().len();
    assert!(
        (8_000..=9_000).contains(&read_len),
        "the longest read takes {read_len} bytes"
    );
    const { assert!(5_600 + ERASURE_SQL_BUDGET <= ARC_MAX_SQL_LEN) };
    // erasures as the worker admits them: until the next would pass the budget
    let erasure = |i: i64, scope: Scope| Erasure {
        id: format!("era_{i}"),
        org_id: "org_default".into(),
        scope,
        as_of: NOW.0 + i,
        requested_by: "api_key:k".into(),
        requested_at: NOW.0,
        state: State::Requested,
        detail: String::new(),
    };
    let widest_filter = Scope::Filter(Filter {
        agent_id: Some(crate::query::validate::AgentId::parse(&"a".repeat(128)).unwrap()),
        event_types: (0..16)
            .map(|i| EventType::parse(&format!("e{i:02}{}", "x".repeat(60))).unwrap())
            .collect(),
        tags: (0..16)
            .map(|i| Tag::parse(&format!("{i:02}{}", "_".repeat(62))).unwrap())
            .collect(),
        since: Some(1),
        until: Some(2),
        ..Filter::default()
    });
    let uuids = Scope::Ids(
        (0..crate::erasure::MAX_IDS)
            .map(|i| MemoryId::parse(&format!("0190a8e2-7c3b-7d4e-8f00-{i:012x}")).unwrap())
            .collect(),
    );
    let b = arc();
    let fits_alone = |s: &Scope| b.erasure_sql_len(&[&erasure(0, s.clone())]) <= ERASURE_SQL_BUDGET;
    assert!(
        fits_alone(&widest_filter) && fits_alone(&uuids),
        "a largest delete is admitted"
    );
    let mut admitted: Vec<Erasure> = Vec::new();
    for i in 0..1000 {
        let next = erasure(
            i,
            if i % 2 == 0 {
                widest_filter.clone()
            } else {
                uuids.clone()
            },
        );
        let mut all: Vec<&Erasure> = admitted.iter().collect();
        all.push(&next);
        if b.erasure_sql_len(&all) > ERASURE_SQL_BUDGET {
            break;
        }
        admitted.push(next);
    }
    assert!(!admitted.is_empty());
    let hiding = arc().with_erasures(admitted.into_iter().map(Arc::new).collect());
    // a search with many long values, 4.4 KB on its own
    let mut p = p;
    p.content_contains = Some("x".repeat(200));
    p.tags.truncate(10);
    p.event_types.truncate(8);
    let page = SearchQuery::parse(&p).unwrap().page();
    let alone = arc().collapsed_page(&page, day, NOW).as_str().len();
    assert!((4_000..=5_600).contains(&alone), "{alone} bytes");
    for sql in [
        hiding.newest_memories(&page.filter, PREFIX_MAX_ROWS, NOW),
        hiding.collapsed_page(&page, day, NOW),
    ] {
        assert!(
            sql.as_str().len() <= ARC_MAX_SQL_LEN,
            "{} bytes",
            sql.as_str().len()
        );
        assert!(sql.as_str().contains(" AND NOT ("), "{sql}");
    }
}

#[test]
fn erasures_hide_their_rows_with_bounds_the_pruner_cannot_read() {
    use crate::erasure::{Erasure, Filter, Scope, State};
    use crate::query::validate::{AgentId, MemoryId};
    use std::sync::Arc;
    let by_id = Erasure {
        id: "era_1".into(),
        org_id: "org_default".into(),
        scope: Scope::Ids(vec![
            MemoryId::parse("m1").unwrap(),
            MemoryId::parse("m2").unwrap(),
        ]),
        as_of: 1_000,
        requested_by: "api_key:k".into(),
        requested_at: 1_000,
        state: State::Requested,
        detail: String::new(),
    };
    let by_agent = Erasure {
        id: "era_2".into(),
        scope: Scope::Filter(Filter {
            agent_id: Some(AgentId::parse("a1").unwrap()),
            since: Some(10),
            ..Filter::default()
        }),
        as_of: 2_000,
        ..by_id.clone()
    };
    assert_eq!(
        arc().erasure_predicate(&by_id),
        "id IN ('m1', 'm2') AND epoch_us(time) <= 1000"
    );
    assert_eq!(
        embedded().erasure_predicate(&by_agent),
        "agent_id = 'a1' AND time > 10 AND time <= 2000"
    );
    let b = arc().with_erasures(vec![Arc::new(by_id), Arc::new(by_agent)]);
    let sql = b.newest_memories(&MemoryFilter::default(), 10, NOW);
    assert!(
        sql.as_str().ends_with(
            "AND NOT (v.id IN ('m1', 'm2') AND epoch_us(v.time) <= 1000) \
             AND NOT (v.agent_id = 'a1' AND epoch_us(v.time) > 10 AND epoch_us(v.time) <= 2000) \
             ORDER BY v.time DESC LIMIT 10"
        ),
        "{sql}"
    );
    let get = b.get(&MemoryId::parse("m1").unwrap(), NOW);
    assert!(
        get.as_str().contains("AND NOT (v.id IN ('m1', 'm2')"),
        "{get}"
    );
    let stats = b.agent_stats(&AgentId::parse("a1").unwrap(), None, NOW);
    assert!(
        stats.as_str().contains("AND NOT (v.agent_id = 'a1'"),
        "{stats}"
    );
}

#[test]
fn retention_hides_older_memories_with_one_lower_bound() {
    let day = Duration::from_secs(86_400);
    let b = arc().with_retention(Some(day));
    let cutoff = "'2026-11-24 12:00:00.000000'";
    let list = |since: Option<&str>| {
        let p = ListParams {
            since: since.map(str::to_owned),
            ..ListParams::default()
        };
        let page = ListQuery::parse(&p).unwrap().page();
        b.newest_memories(&page.filter, 10, NOW).into_string()
    };
    assert!(
        list(None).contains(&format!("v.time > {cutoff}")),
        "{}",
        list(None)
    );
    // an older since gives way to the retention, a later one wins
    let older = list(Some("2026-01-01T00:00:00Z"));
    assert!(
        older.contains(&format!("v.time > {cutoff}")) && older.matches("v.time >").count() == 1,
        "{older}"
    );
    let later = list(Some("1h"));
    assert!(
        later.contains("v.time > '2026-11-25 11:00:00.000000'")
            && later.matches("v.time >").count() == 1,
        "{later}"
    );
    let get = b.get(&MemoryId::parse("m1").unwrap(), NOW);
    assert!(
        get.as_str().contains(&format!("v.time > {cutoff}")),
        "{get}"
    );
    // without retention nothing is added
    let plain = arc().get(&MemoryId::parse("m1").unwrap(), NOW);
    assert!(!plain.as_str().contains("v.time >"), "{plain}");
}

fn export_query(p: ExportParams) -> ExportQuery {
    ExportQuery::parse(&p).unwrap()
}

#[test]
fn export_first_page_collapses_oldest_first_both_dialects() {
    let q = export_query(ExportParams {
        agent_id: Some("agent_1".into()),
        limit: Some(50),
        ..ExportParams::default()
    });
    let day = Some(Duration::from_secs(86_400));
    let rows = collapsed_rows(
        "tenant_db.events",
        &MEMORY_COLUMNS,
        " AND v.agent_id = 'agent_1'",
        Some("epoch_us(latest.next_time) - epoch_us(latest.time)"),
    );
    assert_eq!(
        arc().export_page(&q, day, NOW).as_str(),
        format!(
            "SELECT {} FROM ({rows}) AS kept ORDER BY kept.time ASC, kept.id ASC LIMIT 51",
            columns("kept")
        )
    );
    let rows = collapsed_rows("\"memories\"", &MEMORY_COLUMNS, "", None);
    let all = export_query(ExportParams::default());
    assert_eq!(all.limit, EXPORT_DEFAULT_LIMIT);
    assert_eq!(
        embedded().export_page(&all, None, NOW).as_str(),
        format!(
            "SELECT {} FROM ({rows}) AS kept ORDER BY kept.time ASC, kept.id ASC LIMIT 1001",
            columns("kept")
        )
    );
}

#[test]
fn export_next_page_is_a_keyset_with_the_cursor_as_the_scan_bound() {
    // 2026-11-25T11:00:00Z
    let at = 1_795_604_400_000_000_i64;
    let cursor = ExportCursor::encode(at, "mem_b");
    let q = export_query(ExportParams {
        session_id: Some("sess_1".into()),
        limit: Some(10),
        cursor: Some(cursor),
        ..ExportParams::default()
    });
    assert_eq!(
        q.after,
        Some(ExportCursor {
            micros: at,
            id: MemoryId::parse("mem_b").unwrap()
        })
    );
    let day = Some(Duration::from_secs(86_400));
    // Arc: the scan's bound is the pruner's `time > '…'` (1 µs before the
    // cursor), the keyset on the collapsed rows is on microseconds
    let rows = collapsed_rows(
        "tenant_db.events",
        &MEMORY_COLUMNS,
        " AND v.session_id = 'sess_1' AND v.time > '2026-11-25 10:59:59.999999'",
        Some("epoch_us(latest.next_time) - epoch_us(latest.time)"),
    );
    assert_eq!(
        arc().export_page(&q, day, NOW).as_str(),
        format!(
            "SELECT {} FROM ({rows}) AS kept WHERE epoch_us(kept.time) > {at} \
             OR (epoch_us(kept.time) = {at} AND kept.id > 'mem_b') \
             ORDER BY kept.time ASC, kept.id ASC LIMIT 11",
            columns("kept")
        )
    );
    let rows = collapsed_rows(
        "\"memories\"",
        &MEMORY_COLUMNS,
        &format!(" AND v.session_id = 'sess_1' AND v.time > {}", at - 1),
        Some("latest.next_time - latest.time"),
    );
    assert_eq!(
        embedded().export_page(&q, day, NOW).as_str(),
        format!(
            "SELECT {} FROM ({rows}) AS kept WHERE kept.time > {at} \
             OR (kept.time = {at} AND kept.id > 'mem_b') \
             ORDER BY kept.time ASC, kept.id ASC LIMIT 11",
            columns("kept")
        )
    );
    // with retention: one lower bound, the later of the two
    let old = export_query(ExportParams {
        cursor: Some(ExportCursor::encode(1_000, "mem_a")),
        ..ExportParams::default()
    });
    let sql = embedded()
        .with_retention(Some(Duration::from_secs(86_400)))
        .export_page(&old, None, NOW)
        .into_string();
    assert!(
        sql.contains(&format!("v.time > {}", NOW.0 - 86_400_000_000))
            && sql.matches("v.time >").count() == 1,
        "{sql}"
    );
}

#[test]
fn export_hides_erasures_in_progress() {
    use crate::erasure::{Erasure, Scope, State};
    use std::sync::Arc;
    let erasure = Erasure {
        id: "era_1".into(),
        org_id: "org_default".into(),
        scope: Scope::Ids(vec![MemoryId::parse("m1").unwrap()]),
        as_of: 1_000,
        requested_by: "api_key:k".into(),
        requested_at: 1_000,
        state: State::Requested,
        detail: String::new(),
    };
    let q = export_query(ExportParams {
        cursor: Some(ExportCursor::encode(5, "m0")),
        ..ExportParams::default()
    });
    for b in [arc(), embedded()] {
        let sql = b
            .with_erasures(vec![Arc::new(erasure.clone())])
            .export_page(&q, Some(Duration::from_secs(60)), NOW)
            .into_string();
        let time = if sql.contains("epoch_us") {
            "epoch_us(v.time)"
        } else {
            "v.time"
        };
        assert!(
            sql.contains(&format!("AND NOT (v.id = 'm1' AND {time} <= 1000)")),
            "{sql}"
        );
    }
}

#[test]
fn export_cursor_and_limit_are_validated() {
    let at = 1_795_604_400_123_456_i64;
    let c = ExportCursor::encode(at, "mem_0123abcd");
    assert!(
        !c.contains(['+', '/', '=']),
        "base64url without padding: {c}"
    );
    assert_eq!(
        ExportCursor::parse(&c).unwrap(),
        ExportCursor {
            micros: at,
            id: MemoryId::parse("mem_0123abcd").unwrap()
        }
    );
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let bad = [
        "not base64!".to_owned(),
        "x".repeat(600),
        b64("no-colon"),
        b64(":mem_a"),
        b64("12x:mem_a"),
        b64("99999999999999999999:mem_a"),
        b64("12:"),
        b64("12:bad id"),
        b64("12:mem_a:more"),
    ];
    for value in bad {
        let e = ExportCursor::parse(&value).unwrap_err();
        assert_eq!(e.field(), "cursor", "{value}");
        let e = ExportQuery::parse(&ExportParams {
            cursor: Some(value.clone()),
            ..ExportParams::default()
        })
        .unwrap_err();
        assert_eq!(e.field(), "cursor", "{value}");
    }
    let limit = |n: i64| {
        ExportQuery::parse(&ExportParams {
            limit: Some(n),
            ..ExportParams::default()
        })
    };
    assert_eq!(limit(0).unwrap().limit, EXPORT_DEFAULT_LIMIT);
    assert_eq!(limit(1).unwrap().limit, 1);
    assert_eq!(limit(10_000).unwrap().limit, EXPORT_MAX_LIMIT);
    for n in [-1, 10_001, i64::MAX] {
        assert_eq!(limit(n).unwrap_err().field(), "limit", "{n}");
    }
    assert_eq!(
        ExportQuery::parse(&ExportParams {
            agent_id: Some("bad agent".into()),
            ..ExportParams::default()
        })
        .unwrap_err()
        .field(),
        "agent_id"
    );
}

#[test]
fn rows_of_the_original_memtrace_read_with_derived_ids_on_arc() {
    let legacy = memtrace_common::legacy::arc_legacy_id("v.");
    let derived = MemoryId::parse("lg_0123456789abcdef0123456789abcdef").unwrap();
    let plain = MemoryId::parse("mem_1").unwrap();
    // get: a derived id on the id expression, another on the column
    let get = arc().get(&derived, NOW);
    assert!(
        get.as_str().contains(&format!(
            "AND COALESCE(v.id, {legacy}) = 'lg_0123456789abcdef0123456789abcdef'"
        )),
        "{get}"
    );
    assert!(
        arc()
            .get(&plain, NOW)
            .as_str()
            .contains("AND v.id = 'mem_1'")
    );
    assert!(
        embedded()
            .get(&derived, NOW)
            .as_str()
            .contains("AND v.id = 'lg_"),
        "the embedded store never holds the original's rows"
    );
    // a table the original alone wrote has no id column
    let no_id = arc().without_column("id");
    let list = ListQuery::parse(&ListParams::default()).unwrap();
    let sql = no_id.newest_memories(&list.page().filter, 10, NOW);
    assert!(sql.as_str().contains(&format!("{legacy} AS id")), "{sql}");
    let words = sql
        .as_str()
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'));
    assert!(
        !words.clone().any(|w| w == "v.id"),
        "names no id column: {sql}"
    );
    assert!(no_id.get(&plain, NOW).as_str().contains("AND 1 = 0"));
    // a delete's cover: derived ids on the id expression in reads, the
    // column alone in the eraser's predicate
    let scope = crate::erasure::Scope::Ids(vec![derived.clone(), plain.clone()]);
    let read = arc().erasure_cover(&scope, 5, "v.");
    assert!(
        read.starts_with(&format!("COALESCE(v.id, {legacy}) IN (")),
        "{read}"
    );
    let eraser = arc().erasure_cover(&scope, 5, "");
    assert!(eraser.starts_with("id IN ("), "{eraser}");
    let only_plain = crate::erasure::Scope::Ids(vec![plain]);
    assert!(
        arc()
            .erasure_cover(&only_plain, 5, "v.")
            .starts_with("v.id = 'mem_1'")
    );
}
