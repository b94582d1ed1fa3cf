//! Concurrent writers on one org store: every acknowledged row is read back.

use super::*;

pub(super) async fn concurrent_appends_all_land(h: &Harness) {
    let store = h.store(ORG_A).await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                let id = format!("c{t}_{i}");
                let row = mem(
                    100 - t,
                    &id,
                    ORG_A,
                    "agent_c",
                    "",
                    "episodic",
                    "general",
                    "c",
                    "",
                    "",
                    0.0,
                );
                store.append_memories(&[row]).await.unwrap();
                let state = agent(t * 10 + i, &format!("agent_{t}"), ORG_A, &id, "0");
                store.append_state(StateTable::Agents, state).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let b = builder(store.as_ref(), ORG_A);
    let q = list_params(|p| p.limit = Some(1000));
    assert_eq!(
        store
            .query(&list_sql(&b, &q, NOW))
            .await
            .unwrap()
            .rows
            .len(),
        80
    );
    let latest = state_query(StateTable::Agents, &["name"]);
    let rows = store.query(&b.latest_state(&latest)).await.unwrap();
    assert_eq!(rows.rows.len(), 16);
    // The newest version of agent_t is its first write (smallest "ago").
    for r in rows.into_maps() {
        let t = r["id"]
            .as_str()
            .unwrap()
            .trim_start_matches("agent_")
            .to_owned();
        assert_eq!(r["name"], format!("c{t}_0"), "{r:?}");
    }
}
