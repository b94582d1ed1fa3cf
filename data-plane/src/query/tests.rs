//! Exact SQL per query kind for a fixed "now", and the validation rules.

use super::*;
use std::time::Duration;

/// 2026-11-25T12:00:00Z.
const NOW: UnixMicros = UnixMicros(1_795_608_000_000_000);

const SELECT: &str = "SELECT latest.max_time AS time, m.id AS id, MAX(m.org_id) AS org_id, \
    MAX(m.agent_id) AS agent_id, MAX(m.session_id) AS session_id, \
    MAX(m.memory_type) AS memory_type, MAX(m.event_type) AS event_type, \
    MAX(m.content) AS content, MAX(m.metadata_json) AS metadata_json, \
    MAX(m.tags_csv) AS tags_csv, MAX(m.dedup_key) AS dedup_key, \
    MAX(m.importance) AS importance, MAX(m.parent_id) AS parent_id";

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

/// `FROM <t> AS m JOIN (... WHERE <inner> ...) ... WHERE <outer> GROUP BY`.
fn dedup_from(table: &str, inner: &str, outer: &str) -> String {
    format!(
        " FROM {table} AS m JOIN (SELECT v.id AS id, MAX(v.time) AS max_time FROM {table} AS v \
         WHERE {inner} GROUP BY v.id) AS latest ON m.id = latest.id AND m.time = latest.max_time \
         WHERE {outer} GROUP BY m.id, latest.max_time"
    )
}

#[test]
fn list_with_every_filter_embedded() {
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
        order: Some("asc".into()),
    })
    .unwrap();
    let scan = "org_id = 'org_default' AND m.agent_id = 'agent_1' AND m.session_id = 'sess_1' \
        AND m.time > 1795521600000000 AND m.time < 1795604400000000";
    let inner = "v.org_id = 'org_default' AND v.agent_id = 'agent_1' AND v.session_id = 'sess_1' \
        AND v.time > 1795521600000000 AND v.time < 1795604400000000 \
        AND v.memory_type = 'episodic' AND v.event_type = 'tool_call' \
        AND instr(',' || v.tags_csv || ',', ',ab,') > 0 \
        AND instr(',' || v.tags_csv || ',', ',c.d,') > 0";
    let expected = format!(
        "{SELECT}{} ORDER BY latest.max_time ASC, m.id ASC LIMIT 11 OFFSET 20",
        dedup_from("\"memories\"", inner, &format!("m.{scan}"))
    );
    assert_eq!(embedded().list(&q, NOW).as_str(), expected);
    assert!(q.has_more(11) && !q.has_more(10));
}

#[test]
fn list_defaults_arc() {
    let q = ListQuery::parse(&ListParams::default()).unwrap();
    let expected = format!(
        "{SELECT}{} ORDER BY latest.max_time DESC, m.id DESC LIMIT 101 OFFSET 0",
        dedup_from(
            "tenant_db.events",
            "v.org_id = 'org_default'",
            "m.org_id = 'org_default'"
        )
    );
    assert_eq!(arc().list(&q, NOW).as_str(), expected);
}

#[test]
fn search_arc() {
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
    let inner = "v.org_id = 'org_default' AND v.time > '2026-11-25 09:00:00.000000' \
        AND v.memory_type IN ('decision', 'entity') AND v.event_type = 'error' \
        AND instr(',' || v.tags_csv || ',', ',x,') > 0 \
        AND lower(v.content) LIKE lower('%50!%' || ' of' || ' O''Brien''s!_data' || ' drop' \
        || ' table%') ESCAPE '!' AND v.importance >= 0.5";
    let outer = "m.org_id = 'org_default' AND m.time > '2026-11-25 09:00:00.000000'";
    let expected = format!(
        "{SELECT}{} ORDER BY latest.max_time DESC, MAX(m.importance) DESC, m.id DESC LIMIT 50",
        dedup_from("tenant_db.events", inner, outer)
    );
    assert_eq!(arc().search(&q, NOW).as_str(), expected);
}

#[test]
fn get_by_id_both_dialects() {
    let id = MemoryId::parse("0190a0b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b").unwrap();
    let pred = "id = '0190a0b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b'";
    for (builder, table) in [(embedded(), "\"memories\""), (arc(), "tenant_db.events")] {
        let expected = format!(
            "{SELECT}{} ORDER BY latest.max_time DESC, m.id DESC LIMIT 1",
            dedup_from(
                table,
                &format!("v.org_id = 'org_default' AND v.{pred}"),
                &format!("m.org_id = 'org_default' AND m.{pred}")
            )
        );
        assert_eq!(builder.get(&id).as_str(), expected);
    }
}

#[test]
fn session_context_arc() {
    let q = ContextQuery::parse("sess_1", None, &["episodic".into(), "decision".into()]).unwrap();
    let bound = "time > '2026-11-24 12:00:00.000000'";
    let expected = format!(
        "{SELECT}{} ORDER BY latest.max_time DESC, m.id DESC LIMIT 100",
        dedup_from(
            "tenant_db.events",
            &format!(
                "v.org_id = 'org_default' AND v.session_id = 'sess_1' AND v.{bound} \
                 AND v.memory_type IN ('episodic', 'decision')"
            ),
            &format!("m.org_id = 'org_default' AND m.session_id = 'sess_1' AND m.{bound}")
        )
    );
    assert_eq!(arc().session_context(&q, NOW).as_str(), expected);
    let absolute = ContextQuery::parse("sess_1", Some("2026-11-01"), &[]).unwrap();
    assert!(
        arc()
            .session_context(&absolute, NOW)
            .as_str()
            .contains("v.time > '2026-11-01 00:00:00.000000' GROUP BY v.id")
    );
}

#[test]
fn agent_stats_arc() {
    let day = "'2026-11-24 12:00:00.000000'";
    let rows = format!(
        "SELECT latest.max_time AS time, m.id AS id, MAX(m.memory_type) AS memory_type, \
         MAX(m.event_type) AS event_type{}",
        dedup_from(
            "tenant_db.events",
            "v.org_id = 'org_default' AND v.agent_id = 'agent_1'",
            "m.org_id = 'org_default' AND m.agent_id = 'agent_1'"
        )
    );
    let expected = format!(
        "SELECT d.memory_type AS memory_type, COUNT(*) AS memory_count, \
         COUNT(CASE WHEN d.time > {day} THEN 1 END) AS memories_24h, \
         COUNT(CASE WHEN d.time > {day} AND d.event_type = 'error' THEN 1 END) AS errors_24h, \
         MAX(d.time) AS last_active FROM ({rows}) AS d GROUP BY d.memory_type \
         ORDER BY d.memory_type"
    );
    let agent = AgentId::parse("agent_1").unwrap();
    assert_eq!(arc().agent_stats(&agent, NOW).as_str(), expected);
}

#[test]
fn dedup_lookup_exact_and_batched() {
    let keys: Vec<DedupKey> = ["k1", "k2", "k1", "it's"]
        .iter()
        .map(|k| DedupKey::parse(k).unwrap())
        .collect();
    let day = Duration::from_secs(86_400);
    let sql = embedded().dedup_lookup(&keys, day, NOW);
    assert_eq!(
        sql.iter().map(Sql::as_str).collect::<Vec<_>>(),
        [
            "SELECT DISTINCT v.dedup_key AS dedup_key FROM \"memories\" AS v \
          WHERE v.org_id = 'org_default' AND v.time > 1795521600000000 \
          AND v.dedup_key IN ('k1','k2','it''s')"
        ]
    );
    assert!(arc().dedup_lookup(&[], day, NOW).is_empty());

    // 450 automatic-size keys: as many per statement as Arc's SQL length
    // cap allows (about 270), every key once.
    let many: Vec<DedupKey> = (0..450)
        .map(|i| DedupKey::parse(&format!("{i:032x}")).unwrap())
        .collect();
    let batches = arc().dedup_lookup(&many, day, NOW);
    let counts: Vec<usize> = batches
        .iter()
        .map(|s| s.as_str().matches("','").count() + 1)
        .collect();
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts[0] >= 260, "{counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 450);
    assert!(batches.iter().all(|s| s.as_str().len() <= ARC_MAX_SQL_LEN));
    // the count cap still applies to tiny keys
    let tiny: Vec<DedupKey> = (0..1_500)
        .map(|i| DedupKey::parse(&format!("k{i}")).unwrap())
        .collect();
    let batches = arc().dedup_lookup(&tiny, day, NOW);
    let first = batches[0].as_str().matches("','").count() + 1;
    assert_eq!(first, DEDUP_BATCH_MAX_KEYS);
    assert!(batches.iter().all(|s| s.as_str().len() <= ARC_MAX_SQL_LEN));
    // Long, quote-heavy keys: split by size, every query within Arc's limit,
    // every key asked exactly once.
    let long: Vec<DedupKey> = (0..100)
        .map(|i| DedupKey::parse(&format!("{i:03}{}", "' ".repeat(126))).unwrap())
        .collect();
    let batches = arc().dedup_lookup(&long, day, NOW);
    assert!(batches.len() > 1);
    assert!(batches.iter().all(|s| s.as_str().len() <= ARC_MAX_SQL_LEN));
    for i in 0..100 {
        let hits = batches
            .iter()
            .map(|s| s.as_str().matches(&format!("'{i:03}''")).count())
            .sum::<usize>();
        assert_eq!(hits, 1, "key {i}");
    }
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
    let expected = format!(
        "SELECT latest.max_time AS time, m.id AS id, MAX(m.agent_id) AS agent_id, \
         MAX(m.status) AS status{} ORDER BY latest.max_time DESC, m.id DESC LIMIT 5",
        dedup_from(
            "tenant_db.sessions",
            "v.org_id = 'org_default' AND v.id IN ('sess_1', 'sess_2')",
            "m.org_id = 'org_default' AND m.id IN ('sess_1', 'sess_2') AND m.status = 'active'"
        )
    );
    assert_eq!(arc().latest_state(&q).as_str(), expected);
    let time = Ident::column("time").unwrap();
    assert!(StateQuery::new(Ident::table("agents").unwrap(), vec![time]).is_err());
}

fn invalid(field: &'static str, rule: &'static str) -> QueryError {
    QueryError::Invalid { field, rule }
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

#[test]
fn worst_case_search_fits_arc_limit() {
    // Every list at its maximum, every value at its longest, and a content
    // pattern that maximises escaping and whitespace splitting.
    let p = SearchParams {
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
    };
    let sql = arc().search(&SearchQuery::parse(&p).unwrap(), NOW);
    assert!(
        sql.as_str().len() <= ARC_MAX_SQL_LEN,
        "{} bytes",
        sql.as_str().len()
    );
}
