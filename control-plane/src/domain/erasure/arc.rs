//! The two Arc calls an erasure job makes: `POST {url}/api/v1/delete`
//! (`{"database", "measurement", "where", "confirm": true}` → 200
//! `{"deleted_count", …}`) and the verification count through
//! `POST {url}/api/v1/query` (`{"sql", "format": "json"}` → Arc's JSON
//! envelope `{"success", "columns", "data"}`). A table that does not exist
//! deletes 0 rows and counts 0 (Arc answers a query on a measurement
//! without files with an error naming the missing files). The key goes out
//! only as a sensitive `Authorization` header and is never logged.

use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// The org's Arc, opened for one run.
pub(crate) struct ArcTarget {
    pub url: String,
    pub database: String,
    pub measurement: String,
    pub api_key: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for ArcTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArcTarget")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("measurement", &self.measurement)
            .finish_non_exhaustive()
    }
}

/// Why an Arc call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArcFailure {
    /// Arc refused for good until an operator acts (403: deletes disabled,
    /// the token lacks the delete permission; 401; no delete endpoint):
    /// the job is blocked with Arc's message.
    Refused(String),
    /// Unreachable, timed out or 5xx: retried with backoff.
    Transient(String),
    /// Any other answer (a 4xx for the request itself, an undecodable
    /// reply): the job fails with the detail and is retried later.
    Failed(String),
}

/// `'` doubled, for a SQL string literal.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Whether `predicate` stays inside the parentheses it is put in: outside
/// string literals its parentheses balance and never close more than they
/// opened, and it has no statement separator or comment. A predicate that
/// fails (`1=1) OR (1=1`) could widen `org_id = '<org>' AND (…)` beyond
/// the org, so it is refused, whoever signed it.
pub(crate) fn contained(predicate: &str) -> bool {
    let mut depth: i64 = 0;
    let mut in_literal = false;
    let mut chars = predicate.chars().peekable();
    while let Some(c) = chars.next() {
        if in_literal {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                } else {
                    in_literal = false;
                }
            }
            continue;
        }
        match c {
            '\'' => in_literal = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            ';' => return false,
            '-' if chars.peek() == Some(&'-') => return false,
            '/' if chars.peek() == Some(&'*') => return false,
            _ => {}
        }
    }
    depth == 0 && !in_literal
}

/// The rows of `org` a job covers: the whole org, or `predicate` within it.
pub(crate) fn where_clause(org: &str, predicate: Option<&str>) -> String {
    match predicate {
        Some(p) => format!("org_id = {} AND ({p})", quote(org)),
        None => format!("org_id = {}", quote(org)),
    }
}

fn endpoint(url: &str, path: &str) -> String {
    format!("{}{path}", url.trim_end_matches('/'))
}

/// Arc's message from an error body (`error` or `message`, else the text),
/// cut to a readable length.
fn message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        ["error", "message", "detail"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_owned))
    });
    let text = from_json.unwrap_or_else(|| body.trim().to_owned());
    text.chars().take(300).collect()
}

async fn post(
    http: &reqwest::Client,
    target: &ArcTarget,
    path: &str,
    body: Value,
) -> Result<(u16, String), ArcFailure> {
    let request = authorized(http.post(endpoint(&target.url, path)).json(&body), target)?;
    let response = request.send().await.map_err(|e| {
        ArcFailure::Transient(format!(
            "POST {path} failed: {}",
            crate::domain::arc::error_chain(&e)
        ))
    })?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| {
        ArcFailure::Transient(format!("POST {path}: reading the answer failed: {e}"))
    })?;
    Ok((status, text))
}

/// `request` with the target's key as a sensitive Bearer header.
pub(crate) fn authorized(
    request: reqwest::RequestBuilder,
    target: &ArcTarget,
) -> Result<reqwest::RequestBuilder, ArcFailure> {
    let Some(key) = &target.api_key else {
        return Ok(request);
    };
    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.as_str()))
        .map_err(|_| ArcFailure::Refused("the Arc API key is not a valid header".into()))?;
    value.set_sensitive(true);
    Ok(request.header(AUTHORIZATION, value))
}

pub(crate) fn classify(path: &str, status: u16, body: &str) -> ArcFailure {
    let detail = format!("POST {path} answered {status}: {}", message(body));
    match status {
        401 | 403 | 404 | 405 => ArcFailure::Refused(detail),
        408 | 429 | 500..=599 => ArcFailure::Transient(detail),
        _ => ArcFailure::Failed(detail),
    }
}

const DELETE_PATH: &str = "/api/v1/delete";
const QUERY_PATH: &str = "/api/v1/query";

/// Deletes the rows of `table` matching `where_`; how many Arc deleted.
pub(crate) async fn delete(
    http: &reqwest::Client,
    target: &ArcTarget,
    table: &str,
    where_: &str,
) -> Result<u64, ArcFailure> {
    let body = json!({
        "database": target.database,
        "measurement": table,
        // Arc refuses keywords and some patterns even inside literals
        "where": super::literals::for_arc_delete(where_),
        "confirm": true,
    });
    let (status, text) = post(http, target, DELETE_PATH, body).await?;
    if status != 200 {
        return Err(classify(DELETE_PATH, status, &text));
    }
    let reply: Value = serde_json::from_str(&text)
        .map_err(|e| ArcFailure::Failed(format!("POST {DELETE_PATH}: answer is not JSON: {e}")))?;
    Ok(reply["deleted_count"].as_u64().unwrap_or(0))
}

/// The verification query of `table`.
pub(crate) fn count_sql(database: &str, table: &str, where_: &str) -> String {
    format!("SELECT COUNT(*) AS n FROM {database}.{table} WHERE {where_}")
}

/// Whether Arc's error says the table has no data at all (it does not
/// exist yet, or its files are gone): that counts as 0 rows.
fn missing_table(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("no files found")
        || lower.contains("does not exist")
        || lower.contains("table not found")
        || lower.contains("database not found")
}

/// How many rows of `table` still match `where_`.
pub(crate) async fn count(
    http: &reqwest::Client,
    target: &ArcTarget,
    sql: &str,
) -> Result<u64, ArcFailure> {
    let body = json!({"sql": sql, "format": "json"});
    let (status, text) = post(http, target, QUERY_PATH, body).await?;
    if status != 200 {
        if missing_table(&text) || super::expiry::missing_expiry_column(&text) {
            return Ok(0);
        }
        return Err(classify(QUERY_PATH, status, &text));
    }
    let reply: Value = serde_json::from_str(&text)
        .map_err(|e| ArcFailure::Failed(format!("POST {QUERY_PATH}: answer is not JSON: {e}")))?;
    if reply["success"].as_bool() == Some(false) {
        let error = reply["error"].as_str().unwrap_or_default();
        if missing_table(error) || super::expiry::missing_expiry_column(error) {
            return Ok(0);
        }
        return Err(ArcFailure::Failed(format!(
            "verification query failed: {}",
            message(&text)
        )));
    }
    let cell = &reply["data"][0][0];
    let n = cell
        .as_u64()
        .or_else(|| cell.as_f64().map(|f| f as u64))
        .or_else(|| cell.as_str().and_then(|s| s.parse().ok()));
    match n {
        Some(n) => Ok(n),
        None if reply["data"].as_array().is_some_and(Vec::is_empty) => Ok(0),
        None => Err(ArcFailure::Failed(format!(
            "verification query answered no count: {}",
            message(&text)
        ))),
    }
}

/// The URL's host (and port), for receipts and listings.
pub(crate) fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| {
                u.port()
                    .map_or_else(|| h.to_owned(), |p| format!("{h}:{p}"))
            })
        })
        .unwrap_or_default()
}
