//! Property tests: whatever a user sends in any field, the SQL has the same
//! structure as with a benign value, every literal decodes to exactly the
//! value sent, and (Arc) Arc's own regex passes read the literals where they
//! are and do not refuse the query.

use super::dialect::like_contains;
use super::tokenize::{
    Tok, arc_guard_trips, arc_mask_spans, literal_spans, normalize, shape, strings, tokenize,
};
use super::validate::strip_nul;
use super::*;
use proptest::prelude::*;
use std::time::Duration;

const NOW: UnixMicros = UnixMicros(1_795_608_000_000_000);

fn builders() -> [QueryBuilder; 2] {
    let org = OrgId::parse("org_1").unwrap();
    let table = Ident::table("events").unwrap();
    [
        QueryBuilder::new(
            Dialect::Arc {
                database: Ident::database("db").unwrap(),
            },
            org.clone(),
            table.clone(),
        ),
        QueryBuilder::new(Dialect::Embedded, org, table),
    ]
}

/// Strings rich in what breaks SQL: quotes, backslashes, LIKE wildcards,
/// the `!` escape, NUL, whitespace, comment openers, guard keywords.
fn nasty() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "'",
        "''",
        "\\",
        "\\'",
        "\"",
        "%",
        "_",
        "!",
        "\0",
        " ",
        "\t",
        "\n",
        "--",
        "/*",
        "*/",
        ";",
        "drop",
        " table",
        "DELETE FROM",
        "insert into",
        "update x set",
        "x",
        "é",
        "chr(92)",
        "||",
        "FROM db.secret",
        ")",
        "(",
    ]);
    prop_oneof![
        any::<String>(),
        prop::collection::vec(atoms, 0..24).prop_map(|parts| parts.concat()),
    ]
}

/// Tokens of `sql` after normalisation, with the invariants every built
/// query must hold.
fn checked_tokens(b: &QueryBuilder, sql: &Sql) -> Vec<Tok> {
    let sql = sql.as_str();
    let tokens = tokenize(sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    // No quote character outside the literals.
    let spans = literal_spans(sql);
    let mut outside = String::new();
    let mut at = 0;
    for (start, end) in &spans {
        outside.push_str(&sql[at..*start]);
        at = *end;
    }
    outside.push_str(&sql[at..]);
    assert!(!outside.contains('\''), "stray quote: {sql}");
    if matches!(b.dialect(), Dialect::Arc { .. }) {
        assert_eq!(arc_mask_spans(sql), spans, "Arc masks other spans: {sql}");
        assert!(!arc_guard_trips(sql), "Arc's guard would refuse: {sql}");
        assert!(sql.len() <= ARC_MAX_SQL_LEN);
    }
    normalize(tokens)
}

/// `sql` has `benign`'s structure; returns its string values.
fn same_shape(b: &QueryBuilder, benign: &Sql, sql: &Sql) -> Vec<String> {
    let expected = checked_tokens(b, benign);
    let actual = checked_tokens(b, sql);
    assert_eq!(shape(&actual), shape(&expected), "\n{benign}\n{sql}");
    strings(&actual)
}

/// A search as its newest-first prefix.
fn search(b: &QueryBuilder, p: &SearchParams) -> Result<Sql, QueryError> {
    SearchQuery::parse(p).map(|q| b.newest_memories(&q.page().filter, 52, NOW))
}

/// A list as its collapsed-in-SQL page (the other shape).
fn list(b: &QueryBuilder, p: &ListParams) -> Result<Sql, QueryError> {
    ListQuery::parse(p).map(|q| b.collapsed_page(&q.page(), Some(Duration::from_secs(60)), NOW))
}

proptest! {
    // proptest's default config: 256 cases, or PROPTEST_CASES (scripts/fuzz.sh)
    #[test]
    fn content_contains_is_always_one_literal(value in nasty()) {
        for b in builders() {
            let benign = search(&b, &SearchParams {
                content_contains: Some("x".into()),
                ..SearchParams::default()
            }).unwrap();
            let p = SearchParams { content_contains: Some(value.clone()), ..SearchParams::default() };
            let stripped = strip_nul(&value);
            match search(&b, &p) {
                Ok(sql) if stripped.is_empty() => {
                    prop_assert!(!sql.as_str().contains("LIKE"));
                }
                Ok(sql) => {
                    let values = same_shape(&b, &benign, &sql);
                    prop_assert!(values.contains(&like_contains(&stripped)));
                }
                Err(e) => prop_assert_eq!(e.field(), "content_contains"),
            }
        }
    }

    #[test]
    fn state_filter_values_are_always_one_literal(value in nasty()) {
        let status = Ident::column("status").unwrap();
        let q = |v: &str| {
            StateQuery::new(Ident::table("sessions").unwrap(), vec![status.clone()])
                .unwrap()
                .with_equal(status.clone(), v)
        };
        for b in builders() {
            let benign = b.latest_state(&q("active").unwrap());
            if let Ok(query) = q(&value) {
                let values = same_shape(&b, &benign, &b.latest_state(&query));
                prop_assert_eq!(values.last(), Some(&strip_nul(&value)));
            }
        }
    }

    #[test]
    fn validated_list_fields_keep_the_structure(value in nasty(), which in 0..8usize) {
        for b in builders() {
            let set = |p: &mut ListParams, v: &str| match which {
                0 => p.agent_id = Some(v.into()),
                1 => p.session_id = Some(v.into()),
                2 => p.memory_type = Some(v.into()),
                3 => p.event_type = Some(v.into()),
                4 => p.tags = Some(v.into()),
                5 => p.since = Some(v.into()),
                6 => p.until = Some(v.into()),
                _ => p.order = Some(v.into()),
            };
            let benign_value = ["a", "s", "entity", "e", "t", "1h", "1h", "asc"][which];
            let mut p = ListParams::default();
            set(&mut p, benign_value);
            let benign = list(&b, &p).unwrap();
            set(&mut p, &value);
            match list(&b, &p) {
                // Empty values, `now` and tag lists (tags are trimmed, so a
                // blank one is no tag) legitimately change the predicate
                // count; anything else keeps the benign structure.
                Ok(sql) if value.is_empty()
                    || value == "now"
                    || (which == 4 && (value.contains(',') || value.trim().is_empty())) => {
                    checked_tokens(&b, &sql);
                }
                Ok(sql) => { same_shape(&b, &benign, &sql); }
                Err(e) => {
                    let fields = ["agent_id", "session_id", "memory_type", "event_type", "tags",
                        "since", "until", "order"];
                    prop_assert_eq!(e.field(), fields[which]);
                }
            }
        }
    }

    #[test]
    fn memory_ids_keep_the_structure(value in nasty()) {
        for b in builders() {
            let benign = b.get(&MemoryId::parse("m").unwrap(), UnixMicros(1_795_608_000_000_000));
            if let Ok(id) = MemoryId::parse(&value) {
                let values = same_shape(&b, &benign, &b.get(&id, UnixMicros(1_795_608_000_000_000)));
                prop_assert!(values.contains(&value));
            }
        }
    }

    #[test]
    fn literals_round_trip(value in nasty()) {
        for b in builders() {
            let rendered = b.dialect().string_literal(&value);
            let tokens = normalize(tokenize(&rendered).unwrap());
            prop_assert_eq!(tokens, vec![Tok::Str(strip_nul(&value))]);
        }
    }

    #[test]
    fn timestamps_round_trip(micros in -62_135_596_800_000_000i64..253_402_300_799_999_999) {
        let t = UnixMicros(micros);
        prop_assert_eq!(UnixMicros::parse_rfc3339(&t.to_rfc3339()), Some(t));
        prop_assert_eq!(UnixMicros::parse_rfc3339(&t.to_sql_timestamp()), Some(t));
        if micros >= 0 {
            // Cross-check the calendar arithmetic against humantime.
            let system = std::time::UNIX_EPOCH + Duration::from_micros(micros as u64);
            prop_assert_eq!(
                humantime::format_rfc3339_micros(system).to_string(),
                format!("{}Z", t.to_sql_timestamp().replace(' ', "T"))
            );
        }
    }
}
