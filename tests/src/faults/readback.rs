//! Reading a run back: through the API of every worker that is up (each
//! agent's memories, oldest first, page by page: one read per worker and
//! agent), and straight from the Arc stand-in (every stored row of the
//! org, duplicates included).

use super::history::Observed;
use crate::arc::ArcStandIn;
use anyhow::{Context, bail};
use serde_json::Value;

/// Rows per page of an API read (the list's largest page).
const PAGE: usize = 1000;
/// Rows per statement of a direct read (under the stand-in's answer cap).
const STORE_PAGE: usize = 50_000;

/// Every memory id of `agent` through `GET /api/v1/memories` on `url`,
/// oldest first, in page order.
pub async fn api_ids(url: &str, key: &str, agent: &str) -> anyhow::Result<Vec<String>> {
    let http = crate::http_client();
    let mut ids = Vec::new();
    for page in 0.. {
        let offset = page * PAGE;
        anyhow::ensure!(offset <= 100_000, "more than 100,000 memories for {agent}");
        let resp = http
            .get(format!(
                "{url}/api/v1/memories?agent_id={agent}&order=asc&limit={PAGE}&offset={offset}"
            ))
            .header("x-api-key", key)
            .send()
            .await
            .with_context(|| format!("list {agent} at {offset}"))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.context("a JSON list")?;
        if status != 200 {
            bail!("list {agent} at {offset}: {status} {body}");
        }
        let memories = body["memories"].as_array().context("memories")?;
        ids.extend(
            memories
                .iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned)),
        );
        if body["has_more"] != Value::Bool(true) {
            break;
        }
    }
    Ok(ids)
}

/// Every stored row's id of `org_id` in `database`.`measurement`.
pub async fn stored_ids(
    arc: &ArcStandIn,
    database: &str,
    measurement: &str,
    org_id: &str,
) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        org_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "org id {org_id:?}"
    );
    let mut ids = Vec::new();
    for page in 0.. {
        let sql = format!(
            "SELECT id FROM {measurement} WHERE org_id = '{org_id}' ORDER BY time, id \
             LIMIT {STORE_PAGE} OFFSET {}",
            page * STORE_PAGE
        );
        let out = arc.query(database, &sql).await?;
        let n = out.data.len();
        ids.extend(
            out.data
                .into_iter()
                .filter_map(|row| row.into_iter().next())
                .filter_map(|v| v.as_str().map(str::to_owned)),
        );
        if n < STORE_PAGE {
            break;
        }
    }
    Ok(ids)
}

/// Reads back through every worker in `urls` (each agent once per worker)
/// and from the stand-in.
pub async fn observe(
    urls: &[String],
    key: &str,
    agents: &[String],
    arc: &ArcStandIn,
    database: &str,
    org_id: &str,
) -> anyhow::Result<Observed> {
    let mut observed = Observed::default();
    for (w, url) in urls.iter().enumerate() {
        for agent in agents {
            let ids = api_ids(url, key, agent).await?;
            observed
                .api_reads
                .push((format!("worker {w} {agent}"), ids));
        }
    }
    observed.stored_rows = stored_ids(arc, database, "events", org_id).await?;
    Ok(observed)
}
