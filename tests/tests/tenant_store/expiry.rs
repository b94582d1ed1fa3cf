//! Expiry in the tenant store contract: a memory's `expires_at` round-trips
//! and every read hides the memories expired at its `now`, on both engines;
//! on Arc, a measurement none of whose files has the column answers the
//! reads naming it with DuckDB's binder error, surfaced as
//! `StoreError::MissingColumn`, and reads without it.

use super::*;
use memtrace_tests::arc::client::msgpack;

/// Two expired memories (one a minute ago, one exactly now), one expiring
/// in a minute, one that never expires: every read at `NOW` shows the
/// last two.
pub(crate) async fn expired_memories_are_hidden_from_every_read(h: &Harness) {
    let store = h.store(ORG_A).await;
    let b = builder(store.as_ref(), ORG_A);
    let at = |minutes: i64| NOW.0 + minutes * MINUTE;
    let mut rows = vec![
        mem(
            40, "gone_1", ORG_A, "agent_1", "", "episodic", "general", "expired", "", "", 0.0,
        ),
        mem(
            30,
            "gone_2",
            ORG_A,
            "agent_1",
            "",
            "episodic",
            "general",
            "expires now",
            "",
            "",
            0.0,
        ),
        mem(
            20,
            "soon",
            ORG_A,
            "agent_1",
            "",
            "episodic",
            "general",
            "expires soon",
            "",
            "",
            0.0,
        ),
        mem(
            10,
            "kept",
            ORG_A,
            "agent_1",
            "",
            "episodic",
            "general",
            "never expires",
            "",
            "",
            0.0,
        ),
    ];
    rows[0].expires_at = at(-1);
    rows[1].expires_at = NOW.0;
    rows[2].expires_at = at(1);
    store.append_memories(&rows).await.unwrap();

    let list = list_params(|_| {});
    let got = store.query(&list_sql(&b, &list, NOW)).await.unwrap();
    assert_eq!(ids(&got), ["kept", "soon"], "collapsed page");
    let got = store
        .query(&b.newest_memories(&list.page().filter, 10, NOW))
        .await
        .unwrap();
    assert_eq!(ids(&got), ["kept", "soon"], "newest-first prefix");
    let at_col = got.column("expires_at").expect("an expires_at column");
    let stored: Vec<i64> = got
        .rows
        .iter()
        .map(|r| r[at_col].as_i64().unwrap())
        .collect();
    assert_eq!(stored, [0, at(1)], "expires_at round-trips");

    for (id, visible) in [("gone_1", false), ("gone_2", false), ("soon", true)] {
        let one = store
            .query(&b.get(&MemoryId::parse(id).unwrap(), NOW))
            .await
            .unwrap();
        assert_eq!(one.rows.len(), usize::from(visible), "get {id}");
    }
    let export = ExportQuery::parse(&ExportParams::default()).unwrap();
    let got = store
        .query(&b.export_page(&export, Some(DEDUP_WINDOW), NOW))
        .await
        .unwrap();
    assert_eq!(ids(&got), ["soon", "kept"], "export");
    let stats = store
        .query(&b.agent_stats(&AgentId::parse("agent_1").unwrap(), Some(DEDUP_WINDOW), NOW))
        .await
        .unwrap();
    let counted: u64 = stats
        .into_maps()
        .iter()
        .map(|m| {
            m["memory_count"]
                .as_u64()
                .or_else(|| m["memory_count"].as_str()?.parse().ok())
                .unwrap()
        })
        .sum();
    assert_eq!(counted, 2, "stats");
    // a minute later the one expiring "soon" is gone too
    let later = UnixMicros(at(1));
    let got = store.query(&list_sql(&b, &list, later)).await.unwrap();
    assert_eq!(ids(&got), ["kept"]);
}

#[tokio::test]
async fn arc_reads_a_measurement_written_before_expires_at_existed() {
    let h = Harness::arc().await;
    let Harness::Arc { arc, .. } = &h else {
        unreachable!("an arc harness")
    };
    // the columns the original memtrace (and memtrace before expiry) wrote
    let old = json!({"m": TABLE, "columns": {
        "time": [NOW.0 - MINUTE], "id": ["old_1"], "org_id": [ORG_A], "agent_id": ["agent_1"],
        "session_id": [""], "memory_type": ["episodic"], "event_type": ["general"],
        "content": ["written before expiry"], "metadata_json": ["{}"], "tags_csv": [""],
        "dedup_key": [""], "importance": [0.5], "parent_id": [""],
    }});
    let raw = RawArcClient::new(arc.url());
    let (status, body) = raw.write(Some(DB), msgpack(&old)).await.unwrap();
    assert_eq!(status, 204, "{body}");
    arc.flush_buffers().unwrap();
    let store = h.store(ORG_A).await;
    let b = builder(store.as_ref(), ORG_A);
    let list = list_params(|_| {});
    let err = store.query(&list_sql(&b, &list, NOW)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::MissingColumn("expires_at")),
        "{err:?}"
    );
    let without = b.clone().without_column("expires_at");
    let got = store.query(&list_sql(&without, &list, NOW)).await.unwrap();
    assert_eq!(ids(&got), ["old_1"]);
    let got = store
        .query(&without.get(&MemoryId::parse("old_1").unwrap(), NOW))
        .await
        .unwrap();
    assert_eq!(got.rows.len(), 1, "get without the column");
    // once a row with the column is stored, the full read works again and
    // reads the old row's expiry as never
    let mut new = mem(
        0, "new_1", ORG_A, "agent_1", "", "episodic", "general", "x", "", "", 0.0,
    );
    new.expires_at = NOW.0 + MINUTE;
    store.append_memories(&[new]).await.unwrap();
    arc.flush_buffers().unwrap();
    let got = store.query(&list_sql(&b, &list, NOW)).await.unwrap();
    assert_eq!(ids(&got), ["new_1", "old_1"]);
}
