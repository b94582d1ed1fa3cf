//! Conversions between a bus [`ErasureRecord`] and a job row: the scope as
//! JSON and back, and the record a job republishes.

use crate::store::{ErasureJobRow, NewErasure};
use memtrace_common::state::RECORD_SCHEMA;
use memtrace_proto::state::v1::{
    ErasureFilter, ErasureMemoryIds, ErasureRecord, ErasureScope, ErasureState, erasure_scope,
};
use serde_json::{Value, json};

/// The scope as the job stores it.
pub(crate) fn scope_to_json(scope: Option<&ErasureScope>) -> Value {
    match scope.and_then(|s| s.kind.as_ref()) {
        Some(erasure_scope::Kind::MemoryIds(ids)) => json!({"memory_ids": ids.ids}),
        Some(erasure_scope::Kind::Filter(f)) => json!({"filter": {
            "agent_id": f.agent_id,
            "session_id": f.session_id,
            "memory_types": f.memory_types,
            "event_types": f.event_types,
            "tags": f.tags,
            "since_micros": f.since_micros,
            "until_micros": f.until_micros,
        }}),
        Some(erasure_scope::Kind::WholeOrg(true)) => json!({"whole_org": true}),
        Some(erasure_scope::Kind::Superseded(ids)) => json!({"superseded_ids": ids.ids}),
        Some(erasure_scope::Kind::Expired(true)) => json!({"expired": true}),
        _ => json!({}),
    }
}

fn strings(value: &Value, field: &str) -> Vec<String> {
    value[field]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The scope back from its JSON (`None` for an unknown shape).
pub(crate) fn scope_from_json(text: &str) -> Option<ErasureScope> {
    let value: Value = serde_json::from_str(text).ok()?;
    let kind = if value.get("memory_ids").is_some() {
        erasure_scope::Kind::MemoryIds(ErasureMemoryIds {
            ids: strings(&value, "memory_ids"),
        })
    } else if let Some(f) = value.get("filter") {
        erasure_scope::Kind::Filter(ErasureFilter {
            agent_id: f["agent_id"].as_str().unwrap_or_default().to_owned(),
            session_id: f["session_id"].as_str().unwrap_or_default().to_owned(),
            memory_types: strings(f, "memory_types"),
            event_types: strings(f, "event_types"),
            tags: strings(f, "tags"),
            since_micros: f["since_micros"].as_i64().unwrap_or_default(),
            until_micros: f["until_micros"].as_i64().unwrap_or_default(),
        })
    } else if value.get("superseded_ids").is_some() {
        erasure_scope::Kind::Superseded(ErasureMemoryIds {
            ids: strings(&value, "superseded_ids"),
        })
    } else if value["whole_org"].as_bool() == Some(true) {
        erasure_scope::Kind::WholeOrg(true)
    } else if value["expired"].as_bool() == Some(true) {
        erasure_scope::Kind::Expired(true)
    } else {
        return None;
    };
    Some(ErasureScope { kind: Some(kind) })
}

/// Whether the stored scope is the superseded versions of updated
/// memories (kept in `memory_versions`, so erased from the memory table
/// only).
pub(crate) fn is_superseded(scope_json: &str) -> bool {
    serde_json::from_str::<Value>(scope_json)
        .map(|v| v.get("superseded_ids").is_some())
        .unwrap_or(false)
}

/// The ids of a memory-ids or superseded scope that are derived ids of
/// rows the original memtrace wrote (`lg_…`, `memtrace_common::legacy`).
pub(crate) fn legacy_ids(scope_json: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<Value>(scope_json) else {
        return Vec::new();
    };
    let mut ids = strings(&value, "memory_ids");
    ids.extend(strings(&value, "superseded_ids"));
    ids.retain(|id| memtrace_common::legacy::is_legacy_id(id));
    ids
}

/// Whether the stored scope is a whole-org erasure.
pub(crate) fn is_whole_org(scope_json: &str) -> bool {
    serde_json::from_str::<Value>(scope_json)
        .map(|v| v["whole_org"].as_bool() == Some(true))
        .unwrap_or(false)
}

/// The bus state a job's state shows as (`None`: the record is removed).
pub(crate) fn bus_state(state: &str) -> Option<ErasureState> {
    match state {
        "requested" => Some(ErasureState::Requested),
        "running" | "failed" => Some(ErasureState::Running),
        "blocked" => Some(ErasureState::Blocked),
        _ => None,
    }
}

/// The record a job is published as (`None` once done).
pub(crate) fn record_of(job: &ErasureJobRow) -> Option<ErasureRecord> {
    let state = bus_state(&job.state)?;
    Some(ErasureRecord {
        schema: RECORD_SCHEMA,
        erasure_id: job.id.clone(),
        org_id: job.org_id.clone(),
        scope: scope_from_json(&job.scope_json),
        as_of_micros: job.as_of_micros,
        requested_by: job.requested_by.clone(),
        requested_at_micros: job.requested_at_micros,
        state: state as i32,
        detail: job.detail.clone(),
        memory_predicate: job.memory_predicate.clone(),
        store: job.store.clone(),
    })
}

/// A new job (state `requested`) from an adopted record.
pub(crate) fn job_from_record(record: &ErasureRecord, now: i64) -> ErasureJobRow {
    NewErasure {
        id: record.erasure_id.clone(),
        org_id: record.org_id.clone(),
        scope_json: scope_to_json(record.scope.as_ref()).to_string(),
        memory_predicate: record.memory_predicate.clone(),
        store: record.store.clone(),
        as_of_micros: record.as_of_micros,
        requested_by: record.requested_by.clone(),
        requested_at_micros: record.requested_at_micros,
    }
    .into_job(now)
}
