//! `POST /api/v1/write/msgpack`: faults, auth, body, decode, store, 204.
//! An accepted write is held until `max(actual time, modelled cost)`
//! ([`super::CostModel::write_cost`]), counted from the end of the fault
//! handling, or from when one of the model's ingest lanes was free if it
//! had to wait for one. On a gzip-only build ([`super::ArcStandIn::set_gzip_only`]) a
//! zstd body is not recognised: it is read as raw MessagePack and fails
//! decoding with `Invalid MessagePack payload: …` (400), as such builds do.

use super::Shared;
use super::auth::{Permission, authenticate, authorize, header_db, valid_name};
use super::decode::{decode, decompress};
use super::faults::Target;
use super::read::hold;
use super::server::{
    After, ConnKill, Failure, WRITE_PATH, apply_faults, auth_failure, injected, read_body,
    write_error,
};
use super::store::StoreError;
use super::timefmt::now_us;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

pub(super) async fn write(
    State(s): State<Arc<Shared>>,
    Extension(conn): Extension<ConnKill>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    s.record("POST", WRITE_PATH, &headers);
    s.stats_mut(|st| st.write_requests += 1);
    let resp = write_inner(&s, &conn, &headers, body).await;
    s.finish(resp)
}

struct Ingested {
    rows: u64,
    decoded_bytes: u64,
    skipped: u64,
}

async fn write_inner(
    s: &Arc<Shared>,
    conn: &ConnKill,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let after = match apply_faults(s, conn, Target::Writes).await {
        Ok(after) => after,
        Err(resp) => return resp,
    };
    let started = Instant::now();
    let grant = match authenticate(s, headers) {
        Ok(g) => g,
        Err(f) => return auth_failure(f),
    };
    let db = match header_db(headers) {
        Ok(db) => db.unwrap_or_else(|| "default".into()),
        Err(f) => return write_error(f),
    };
    if let Err(f) = authorize(grant.as_ref(), Permission::Write, [db.as_str()]) {
        return auth_failure(f);
    }
    let body = match read_body(headers, body, s.limits.max_body_bytes).await {
        Ok(b) if b.is_empty() => {
            return write_error((StatusCode::BAD_REQUEST, "Empty payload".into()));
        }
        Ok(b) => b,
        Err(f) => return write_error(f),
    };
    let wire = body.len() as u64;
    let (shared, database) = (s.clone(), db.clone());
    let done = tokio::task::spawn_blocking(move || ingest(&shared, &database, &body)).await;
    let ingested = match done {
        Ok(Ok(i)) => i,
        Ok(Err(f)) => return write_error(f),
        Err(e) => return write_error((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let model = s.cost_model();
    let modelled = model.write_cost(ingested.rows);
    s.stats_mut(|st| st.modelled_write_time += modelled);
    // the engine's time starts when a lane is free (see `CostModel`)
    let (lane, waited) = s.write_lane(model.write_lanes).await;
    let started = if waited { Instant::now() } else { started };
    hold(started, modelled).await;
    drop(lane);
    s.stats_mut(|st| {
        let d = st.databases.entry(db).or_default();
        d.write_requests += 1;
        d.rows += ingested.rows;
        d.wire_bytes += wire;
        d.decoded_bytes += ingested.decoded_bytes;
        d.skipped_items += ingested.skipped;
    });
    match after {
        Some(After::Status(code)) => injected(code),
        Some(After::Reset) => conn.reset().await,
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Decompress, decode, validate names, store (unless counting only).
fn ingest(s: &Shared, db: &str, body: &[u8]) -> Result<Ingested, Failure> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let zstd = !s.gzip_only.load(Ordering::SeqCst);
    let payload = decompress(body, s.limits.max_decompressed_bytes, zstd).map_err(bad)?;
    let decoded =
        decode(&payload, now_us()).map_err(|e| bad(format!("Invalid MessagePack payload: {e}")))?;
    for b in &decoded.batches {
        if !valid_name(&b.measurement, 128) {
            return Err(bad(format!(
                "invalid measurement name {:?}: must start with a letter and contain only \
                 alphanumeric characters, underscores, or hyphens",
                b.measurement
            )));
        }
    }
    let rows = decoded.batches.iter().map(|b| b.rows() as u64).sum();
    let skipped = decoded.skipped.len() as u64;
    if !s.limits.counting_only {
        let mut store = s.store.lock().map_err(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "store poisoned".to_string(),
            )
        })?;
        let now = Instant::now();
        for b in decoded.batches {
            store.write(db, b, now).map_err(|e| match e {
                StoreError::Full(m) => (StatusCode::INSUFFICIENT_STORAGE, m),
                StoreError::Mismatch(m) => bad(format!("Failed to write records: {m}")),
                StoreError::Internal(m) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Failed to write records: {m}"),
                ),
            })?;
        }
    }
    Ok(Ingested {
        rows,
        decoded_bytes: payload.len() as u64,
        skipped,
    })
}
