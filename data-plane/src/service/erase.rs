//! Deleting memories: by id, by ids, or by filter (with a dry run that
//! counts). A delete is recorded as an erasure on the state bus; from then
//! on every worker hides the covered rows from every read, and the control
//! plane erases them physically (see `crate::erasure`). The answer is 202:
//! hidden now, erased shortly.

use super::{OrgService, ServiceError};
use crate::erasure::{self, Erasure, Filter, MAX_IDS, Scope, State};
use crate::query::validate::MemoryId;
use crate::query::{QueryError, SearchParams, SearchQuery, UnixMicros};
use serde::Serialize;
use std::time::Duration;

/// What a tenant asks to delete in one request.
#[derive(Debug, Clone, Default)]
pub struct DeleteRequest {
    /// Memory ids (every other field must be empty then).
    pub ids: Vec<String>,
    /// A filter: agent, session, memory and event types, tags, since/until.
    pub filter: SearchParams,
    /// Count what would be deleted; delete nothing.
    pub dry_run: bool,
}

/// The answer to a delete.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deletion {
    pub dry_run: bool,
    /// Memories a dry run would delete (absent otherwise: the receipt of
    /// the erasure counts the rows removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erasure: Option<ErasureView>,
}

/// An erasure in progress as the data API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErasureView {
    pub id: String,
    /// `requested`, `running` or `blocked`.
    pub state: &'static str,
    /// Why it is blocked.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub requested_by: String,
    pub requested_at: String,
    /// Whether every live worker hid the rows before this answer (only in
    /// the answer to the delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagated: Option<bool>,
}

/// How long a delete refused for the org's erasure budget asks to wait.
const BUDGET_RETRY_AFTER: Duration = Duration::from_secs(10);

impl OrgService {
    /// Deletes one memory (`DELETE /api/v1/memories/{id}`).
    pub async fn delete_memory(&self, id: &str) -> Result<Deletion, ServiceError> {
        self.check_unbound("deleting memories")?;
        let id = MemoryId::parse(id)?;
        self.erase(Scope::Ids(vec![id])).await
    }

    /// Deletes memories by ids or by filter, or counts them (`dry_run`).
    pub async fn delete_memories(&self, req: &DeleteRequest) -> Result<Deletion, ServiceError> {
        self.check_unbound("deleting memories")?;
        let now = UnixMicros::now();
        let scope = if req.ids.is_empty() {
            Scope::Filter(delete_filter(&req.filter, now)?)
        } else {
            if !filter_is_empty(&req.filter) {
                return Err(ServiceError::BadRequest(
                    "ids and filter fields cannot be combined: delete by ids or by filter".into(),
                ));
            }
            if req.ids.len() > MAX_IDS {
                return Err(QueryError::invalid("ids", "at most 100 ids per delete").into());
            }
            let mut ids: Vec<MemoryId> = req
                .ids
                .iter()
                .map(|id| MemoryId::parse(id))
                .collect::<Result<_, _>>()?;
            ids.sort();
            ids.dedup();
            Scope::Ids(ids)
        };
        if req.dry_run {
            let count = super::rows::count(self.read(|b| b.count_covered(&scope, now.0)).await?);
            return Ok(Deletion {
                dry_run: true,
                count: Some(count),
                erasure: None,
            });
        }
        self.erase(scope).await
    }

    /// The org's erasures in progress (`GET /api/v1/erasures`).
    pub fn erasures(&self) -> Result<Vec<ErasureView>, ServiceError> {
        self.check_unbound("listing the org's erasures")?;
        Ok(self
            .builder
            .erasures()
            .iter()
            .map(|e| view(e, None))
            .collect())
    }

    pub(super) async fn erase(&self, scope: Scope) -> Result<Deletion, ServiceError> {
        let Some(requests) = self.erasure_requests.as_ref() else {
            return Err(ServiceError::Unavailable(
                "this worker cannot record deletes (no state bus)".into(),
            ));
        };
        let erasure = self.new_erasure(scope, super::ids::next_micros());
        self.check_erasure_budget(&erasure)?;
        let recorded = requests
            .record(
                &erasure,
                self.builder.erasure_predicate(&erasure),
                self.store_kind(),
            )
            .await
            .map_err(|e| ServiceError::Unavailable(format!("{e}; nothing was deleted, retry")))?;
        tracing::info!(org_id = %self.org, erasure_id = %erasure.id, revision = recorded.revision, propagated = recorded.propagated, "delete recorded");
        Ok(Deletion {
            dry_run: false,
            count: None,
            erasure: Some(view(&erasure, Some(recorded.propagated))),
        })
    }

    /// A new erasure of `scope` covering rows up to `as_of`, asked by this
    /// request's key.
    pub(super) fn new_erasure(&self, scope: Scope, as_of: i64) -> Erasure {
        let now = super::ids::next_micros();
        Erasure {
            id: erasure::new_id(now),
            org_id: self.org.as_str().to_owned(),
            scope,
            as_of,
            requested_by: format!("api_key:{}", self.requested_by),
            requested_at: now,
            state: State::Requested,
            detail: String::new(),
        }
    }

    /// `arc` or `embedded`: where the org's memories are.
    pub(super) fn store_kind(&self) -> &'static str {
        match self.store.dialect() {
            crate::query::Dialect::Arc { .. } => "arc",
            crate::query::Dialect::Embedded => "embedded",
        }
    }

    /// Refuses `erasure` when it alone (400) or with the org's erasures in
    /// progress (429) passes the SQL budget reads give erasures.
    pub(super) fn check_erasure_budget(&self, erasure: &Erasure) -> Result<(), ServiceError> {
        let alone = self.builder.erasure_sql_len(&[erasure]);
        if alone > crate::query::ERASURE_SQL_BUDGET {
            return Err(QueryError::invalid(
                "ids",
                "too long together for one delete: send fewer ids per request",
            )
            .into());
        }
        let mut pending: Vec<&Erasure> = self.builder.erasures().iter().map(|e| &**e).collect();
        pending.push(erasure);
        if self.builder.erasure_sql_len(&pending) > crate::query::ERASURE_SQL_BUDGET {
            tracing::info!(org_id = %self.org, pending = pending.len() - 1, "delete or update refused: the org's erasures in progress fill its budget");
            return Err(ServiceError::ErasuresBusy {
                retry_after: BUDGET_RETRY_AFTER,
            });
        }
        Ok(())
    }
}

fn view(e: &Erasure, propagated: Option<bool>) -> ErasureView {
    ErasureView {
        id: e.id.clone(),
        state: e.state.as_str(),
        detail: e.detail.clone(),
        requested_by: e.requested_by.clone(),
        requested_at: super::rows::rfc3339(e.requested_at),
        propagated,
    }
}

fn filter_is_empty(p: &SearchParams) -> bool {
    p.agent_id.is_none()
        && p.session_id.is_none()
        && p.memory_types.is_empty()
        && p.event_types.is_empty()
        && p.tags.is_empty()
        && p.content_contains.is_none()
        && p.since.is_none()
        && p.until.is_none()
        && p.min_importance.is_none()
}

/// A delete's filter, validated as a search's, with its time bounds
/// resolved against `now`. Content and importance cannot select memories
/// to delete; an empty filter is refused (deleting everything is an org
/// deletion).
fn delete_filter(p: &SearchParams, now: UnixMicros) -> Result<Filter, ServiceError> {
    if p.content_contains.is_some() || p.min_importance.is_some() {
        return Err(ServiceError::BadRequest(
            "content_contains and min_importance cannot select memories to delete; \
             use ids, agent_id, session_id, memory_types, event_types, tags, since or until"
                .into(),
        ));
    }
    let f = SearchQuery::parse(p)?.page().filter;
    let filter = Filter {
        agent_id: f.agent_id,
        session_id: f.session_id,
        memory_types: f.memory_types,
        event_types: f.event_types,
        tags: f.tags,
        since: f.since.map(|t| t.resolve(now).0),
        until: f.until.map(|t| t.resolve(now).0),
    };
    if filter.is_empty() {
        return Err(ServiceError::BadRequest(
            "a delete needs ids or at least one of agent_id, session_id, memory_types, \
             event_types, tags, since, until (an org's memories all go with the org: \
             memtracectl org delete)"
                .into(),
        ));
    }
    Ok(filter)
}
