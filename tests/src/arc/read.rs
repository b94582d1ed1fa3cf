//! `POST /api/v1/query`: faults, auth, Arc's SQL checks, the rewrite, the
//! run on SQLite, and Arc's JSON envelope; `SHOW DATABASES|TABLES` too.
//! A statement that reaches the engine is charged by the [`CostModel`]
//! (its scans as the store counts them) and its answer held until
//! `max(actual time, modelled cost)`, counted from the end of the fault
//! handling.

use super::Shared;
use super::auth::{Permission, authenticate, authorize, header_db};
use super::cost::{CostModel, ScanShape};
use super::faults::Target;
use super::query::{self, Refusal, Rewritten};
use super::server::{
    After, ConnKill, Failure, QUERY_PATH, apply_faults, auth_failure, injected, json_reply,
    query_error, read_body,
};
use super::store::{QueryError, QueryOutput};
use super::timefmt::rfc3339_now;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use regex::Regex;
use serde_json::{Value, json};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// Largest query request body.
const MAX_QUERY_BODY: usize = 1 << 20;

pub(super) async fn query_route(
    State(s): State<Arc<Shared>>,
    Extension(conn): Extension<ConnKill>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    s.record("POST", QUERY_PATH, &headers);
    s.stats_mut(|st| st.query_requests += 1);
    let resp = query_inner(&s, &conn, &headers, body).await;
    s.finish(resp)
}

async fn query_inner(
    s: &Arc<Shared>,
    conn: &ConnKill,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let after = match apply_faults(s, conn, Target::Queries).await {
        Ok(after) => after,
        Err(resp) => return resp,
    };
    let started = Instant::now();
    let grant = match authenticate(s, headers) {
        Ok(g) => g,
        Err(f) => return auth_failure(f),
    };
    if let Err(f) = authorize(grant.as_ref(), Permission::Read, []) {
        return auth_failure(f);
    }
    let body = match read_body(headers, body, MAX_QUERY_BODY).await {
        Ok(b) => b,
        Err(f) => return query_error(f),
    };
    let sql = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => v
            .get("sql")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        Err(e) => {
            let msg = format!("Invalid request body: {e}");
            return query_error((StatusCode::BAD_REQUEST, msg));
        }
    };
    let header = match header_db(headers) {
        Ok(h) => h,
        Err(f) => return query_error(f),
    };
    let prepared = match prepare(header.as_deref(), &sql) {
        Ok(p) => p,
        Err(f) => return query_error(f),
    };
    let dbs: Vec<&str> = match &prepared {
        Prepared::Select(r) => r.databases.iter().map(String::as_str).collect(),
        Prepared::ShowTables(db) => vec![db.as_str()],
        Prepared::ShowDatabases => vec![],
    };
    if let Err(f) = authorize(grant.as_ref(), Permission::Read, dbs.iter().copied()) {
        return auth_failure(f);
    }
    let dbs: Vec<String> = dbs.into_iter().map(str::to_string).collect();
    let model = s.cost_model();
    let (out, charge) = execute(s, prepared, model).await;
    if let Some(c) = &charge {
        s.stats_mut(|st| {
            st.statements += 1;
            st.rows_scanned += c.rows;
            st.modelled_query_time += c.modelled;
            st.engine_query_time += c.engine;
            if c.engine > c.modelled {
                st.engine_bound_statements += 1;
            }
        });
        hold(started, c.modelled).await;
    }
    let out = match out {
        Ok(out) => out,
        Err(f) => return query_error(f),
    };
    s.stats_mut(|st| {
        for db in dbs {
            st.databases.entry(db).or_default().queries += 1;
        }
    });
    match after {
        Some(After::Status(code)) => return injected(code),
        Some(After::Reset) => conn.reset().await,
        None => {}
    }
    let row_count = out.data.len();
    json_reply(
        StatusCode::OK,
        json!({
            "success": true,
            "columns": out.columns,
            "data": out.data,
            "row_count": row_count,
            "execution_time_ms": started.elapsed().as_millis() as u64,
            "timestamp": rfc3339_now(),
        }),
    )
}

enum Prepared {
    Select(Rewritten),
    ShowDatabases,
    ShowTables(String),
}

static SHOW_DATABASES: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)^\s*SHOW\s+DATABASES\s*;?\s*$").ok());
static SHOW_TABLES: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*SHOW\s+(?:TABLES|MEASUREMENTS)(?:\s+FROM\s+([\w-]+))?\s*;?\s*$").ok()
});

/// Arc's checks in Arc's order, then the rewrite.
fn prepare(header_db: Option<&str>, sql: &str) -> Result<Prepared, Failure> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    query::validate(sql).map_err(bad)?;
    if header_db.is_some() && query::has_cross_database_syntax(sql) {
        return Err(bad(query::CROSS_DB.into()));
    }
    if SHOW_DATABASES.as_ref().is_some_and(|r| r.is_match(sql)) {
        return Ok(Prepared::ShowDatabases);
    }
    if let Some(c) = SHOW_TABLES.as_ref().and_then(|r| r.captures(sql)) {
        // Arc lists `default` here unless FROM names a database, header or not.
        let db = c.get(1).map_or("default", |m| m.as_str());
        return Ok(Prepared::ShowTables(db.to_string()));
    }
    query::rewrite(sql, header_db)
        .map(Prepared::Select)
        .map_err(|r| match r {
            Refusal::BadRequest(m) => bad(m),
            Refusal::Failed(m) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Query execution failed: {m}"),
            ),
        })
}

/// What one statement cost: its modelled time, the real engine time and
/// the rows of the tables it scanned.
struct Charge {
    modelled: Duration,
    engine: Duration,
    rows: u64,
}

/// Sleeps until `started + modelled` (nothing if that has passed).
pub(super) async fn hold(started: Instant, modelled: Duration) {
    let until = started + modelled;
    if until > Instant::now() {
        tokio::time::sleep_until(until.into()).await;
    }
}

/// Runs the statement on the store; the charge is `None` when it did not
/// reach the engine (refused before, or the store is unusable).
async fn execute(
    s: &Arc<Shared>,
    prepared: Prepared,
    model: CostModel,
) -> (Result<QueryOutput, Failure>, Option<Charge>) {
    let internal = |m: String| (StatusCode::INTERNAL_SERVER_ERROR, m);
    let store = s.store.clone();
    let max_rows = s.limits.max_query_rows;
    let job = move || {
        let Ok(mut store) = store.lock() else {
            return (Err(internal("store poisoned".into())), None);
        };
        if let Err(e) = store.settle(Instant::now()) {
            return (Err(internal(format!("buffer flush failed: {e:?}"))), None);
        }
        let tables = || store.tables().into_iter();
        let metadata = Charge {
            modelled: model.statement_cost(&[]),
            engine: Duration::ZERO,
            rows: 0,
        };
        match prepared {
            Prepared::ShowDatabases => {
                let mut dbs: Vec<String> = tables().map(|(db, _)| db).collect();
                dbs.dedup();
                let out = QueryOutput {
                    columns: vec!["database".into()],
                    data: dbs.into_iter().map(|d| vec![Value::from(d)]).collect(),
                };
                (Ok(out), Some(metadata))
            }
            Prepared::ShowTables(db) => {
                let out = QueryOutput {
                    columns: [
                        "database",
                        "table_name",
                        "storage_path",
                        "file_count",
                        "total_size_mb",
                    ]
                    .map(String::from)
                    .to_vec(),
                    data: tables()
                        .filter(|(d, _)| *d == db)
                        .map(|(d, m)| {
                            let path = format!("standin://{d}/{m}/");
                            vec![d.into(), m.into(), path.into(), 1.into(), 0.into()]
                        })
                        .collect(),
                };
                (Ok(out), Some(metadata))
            }
            Prepared::Select(r) => {
                let mut shapes = Vec::new();
                for scan in super::scan::scans(&r.sql) {
                    match store.scan_shape(&scan) {
                        // every row still buffered: no Parquet file yet
                        Some(shape) if shape.rows == 0 => {
                            let missing =
                                format!("no such table: {}.{}", scan.database, scan.measurement);
                            return (Err(internal(engine_failure(&missing))), Some(metadata));
                        }
                        Some(shape) => shapes.push(shape),
                        None => {}
                    }
                }
                let ran = Instant::now();
                let out = store
                    .query(&r.sql, max_rows, &r.time_aliases)
                    .map_err(|e| match e {
                        QueryError::Engine(m) => internal(engine_failure(&m)),
                        QueryError::NotReadOnly => {
                            (StatusCode::BAD_REQUEST, query::DANGEROUS.into())
                        }
                        QueryError::TooLarge(n) => internal(format!(
                            "Query execution failed: result exceeds the stand-in's {n}-row cap"
                        )),
                    });
                let charge = Charge {
                    modelled: model.statement_cost(&shapes),
                    engine: ran.elapsed(),
                    rows: shapes.iter().map(|s: &ScanShape| s.rows).sum(),
                };
                (out, Some(charge))
            }
        }
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(done) => done,
        Err(e) => (Err(internal(e.to_string())), None),
    }
}

/// The query pipeline without HTTP, auth, faults or counters.
pub(crate) async fn run_query(
    s: &Arc<Shared>,
    header_db: Option<&str>,
    sql: &str,
) -> Result<QueryOutput, Failure> {
    let prepared = prepare(header_db, sql)?;
    execute(s, prepared, CostModel::instant()).await.0
}

/// Arc's message for an engine failure. A table the store does not have is
/// reported as DuckDB reports a `read_parquet` glob without files, which is
/// what Arc runs for a measurement that was never written; a column none of
/// its rows was written with, as DuckDB's binder reports a column no file
/// has (`read_parquet(…, union_by_name = true)`).
fn engine_failure(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("no such column: ") {
        let column = rest.split_whitespace().next().unwrap_or_default();
        return match column.split_once('.') {
            Some((table, name)) => format!(
                "Query execution failed: Binder Error: Table \"{table}\" does not have a column \
                 named \"{name}\""
            ),
            None => format!(
                "Query execution failed: Binder Error: Referenced column \"{column}\" not found \
                 in FROM clause!"
            ),
        };
    }
    match message.strip_prefix("no such table: ") {
        Some(rest) => {
            // rusqlite may append " in <sql> at offset <n>".
            let table = rest.split_whitespace().next().unwrap_or_default();
            let path = table.replacen('.', "/", 1);
            format!(
                "Query execution failed: IO Error: No files found that match the pattern \
                 \"standin://{path}/**/*.parquet\""
            )
        }
        None => format!("Query execution failed: {message}"),
    }
}
