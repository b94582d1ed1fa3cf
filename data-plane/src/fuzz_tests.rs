//! Fuzzing what crosses a trust boundary into the worker (property tests;
//! `scripts/fuzz.sh` runs them longer): request bodies and query values as
//! agents send them, and records as they arrive from the bus. Any input is
//! answered — accepted or refused naming a field — without panicking, and
//! what is accepted keeps the service's bounds.

use crate::query::{ListParams, ListQuery, SearchParams, SearchQuery};
use crate::service::types::{MAX_CONTENT_BYTES, MAX_MEMORY_TAGS};
use crate::service::{CreateMemoryRequest, NewMemory};
use crate::snapshot::{ApplyReport, Snapshot, SnapshotBuilder};
use memtrace_common::fleet::{FleetKey, FleetKeyring};
use memtrace_common::state::StateKeys;
use proptest::prelude::*;
use serde_json::Value;
use std::sync::Arc;

/// Strings with what breaks parsers: quotes, escapes, NUL, unicode, commas,
/// long runs.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[a-zA-Z0-9_,.\\-]{0,40}",
        prop::collection::vec(
            prop::sample::select(vec![
                "'", "\"", "\\", "\0", ",", "%", "_", "é", "🙂", " ", "\n", "a"
            ]),
            0..60
        )
        .prop_map(|v| v.concat()),
    ]
}

/// JSON values, nested a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<i64>().prop_map(|i| Value::Number(i.into())),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A create body: the real field names with arbitrary values, and noise.
fn create_body() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec![
        "id",
        "agent_id",
        "content",
        "memory_type",
        "event_type",
        "session_id",
        "metadata",
        "tags",
        "importance",
        "dedup_key",
        "parent_id",
        "x",
    ]);
    prop::collection::btree_map(field, json(), 0..10)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

proptest! {
    #[test]
    fn create_bodies_are_accepted_within_bounds_or_refused(body in create_body()) {
        let accepted = serde_json::from_value::<CreateMemoryRequest>(body)
            .ok()
            .and_then(|request| NewMemory::try_from(request).ok());
        if let Some(memory) = accepted {
            prop_assert!(!memory.content.is_empty());
            prop_assert!(memory.content.len() <= MAX_CONTENT_BYTES);
            prop_assert!(memory.tags.len() <= MAX_MEMORY_TAGS);
            prop_assert!((0.0..=1.0).contains(&memory.importance));
        }
    }

    #[test]
    fn raw_body_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = serde_json::from_slice::<CreateMemoryRequest>(&bytes).map(NewMemory::try_from);
    }

    #[test]
    fn search_and_list_values_never_panic(
        a in prop::option::of(text()),
        b in prop::option::of(text()),
        lists in prop::collection::vec(text(), 0..20),
        limit in prop::option::of(any::<i64>()),
        offset in prop::option::of(any::<i64>()),
        importance in prop::option::of(any::<f64>()),
    ) {
        let search = SearchParams {
            agent_id: a.clone(),
            session_id: b.clone(),
            memory_types: lists.clone(),
            event_types: lists.clone(),
            tags: lists.clone(),
            content_contains: a.clone(),
            since: b.clone(),
            until: a.clone(),
            min_importance: importance,
            limit,
            order: b.clone(),
        };
        let _ = SearchQuery::parse(&search);
        let list = ListParams {
            agent_id: a.clone(),
            session_id: b.clone(),
            memory_type: a.clone(),
            event_type: b.clone(),
            tags: Some(lists.join(",")),
            since: a.clone(),
            until: b.clone(),
            order: a,
            limit,
            offset,
        };
        let _ = ListQuery::parse(&list);
    }

    #[test]
    fn bus_records_never_panic_the_snapshot(
        kind in prop::sample::select(vec!["orgs/org_a", "arc/org_a", "keys/key_1", "token_keys/tk_1", "config/global/arc.write_batch_size", "config/org/org_a/dedup.enabled", "workers/w1", "meta/published", "erasures/org_a/e1", "other/x"]),
        value in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let keys = StateKeys::new("/f/v1/");
        let builder = SnapshotBuilder::new(
            keys.clone(),
            Arc::new(FleetKeyring::new(FleetKey::new(&[1; 32]), vec![])),
        );
        let mut snapshot = Snapshot::default();
        let mut report = ApplyReport::default();
        builder.put(&mut snapshot, &format!("/f/v1/{kind}"), &value, &mut report);
        // nothing unsigned is ever applied
        prop_assert!(snapshot.orgs.is_empty() && snapshot.api_keys.is_empty() && snapshot.routes.is_empty());
        prop_assert!(snapshot.erasures.is_empty() && snapshot.token_keys.is_empty());
    }

    #[test]
    fn token_requests_are_accepted_within_the_rules_or_refused(
        agent in prop::option::of(text()),
        scopes in prop::collection::vec(text(), 0..5),
        ttl in prop::option::of(any::<u64>()),
        max in 60i64..=2_592_000,
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        use crate::admission::tokens::MintRequest;
        let _ = serde_json::from_slice::<MintRequest>(&bytes).map(|r| r.checked(max));
        let request = MintRequest { agent_id: agent, scopes, ttl_seconds: ttl };
        if let Ok(ok) = request.checked(max) {
            prop_assert!(!ok.scopes.is_empty());
            prop_assert!(ok.scopes.iter().all(|s| ["read", "write", "admin"].contains(&s.as_str())));
            prop_assert!((1..=max).contains(&ok.ttl_seconds));
            prop_assert!(!(ok.agent.is_some() && ok.scopes.iter().any(|s| s == "admin")));
            prop_assert!(ok.agent.as_ref().is_none_or(|a| !a.is_empty() && a.len() <= 256));
        }
    }

    #[test]
    fn signed_erasure_records_apply_only_as_valid_erasures_of_their_path(
        org in prop::sample::select(vec!["org_a", "org_b"]),
        value in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let keys = StateKeys::new("/f/v1/");
        let fleet = FleetKeyring::new(FleetKey::new(&[1; 32]), vec![]);
        let path = "erasures/org_a/e1";
        let signed = memtrace_common::state::sign_record(fleet.active(), path, &value);
        let builder = SnapshotBuilder::new(keys.clone(), Arc::new(fleet));
        let mut snapshot = Snapshot::default();
        let mut report = ApplyReport::default();
        // authentic bytes of any content, under their own path or moved
        builder.put(&mut snapshot, &format!("/f/v1/erasures/{org}/e1"), &signed, &mut report);
        if org != "org_a" {
            prop_assert!(snapshot.erasures.is_empty(), "a record moved to another org's path");
        }
        for (org_id, erasures) in &snapshot.erasures {
            prop_assert_eq!(org_id.as_str(), "org_a");
            for erasure in erasures.values() {
                prop_assert_eq!(erasure.org_id.as_str(), "org_a");
                prop_assert_eq!(erasure.id.as_str(), "e1");
                prop_assert!(erasure.as_of > 0);
            }
        }
    }
}
