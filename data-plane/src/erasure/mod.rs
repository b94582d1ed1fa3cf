//! Erasures as workers see them: which of an org's memories are being
//! erased. A tenant's delete is recorded on the state bus
//! (`erasures/<org>/<erasure id>`, an `ErasureRecord` signed with the fleet
//! key) by the worker that took it; from then on every worker hides the rows
//! the erasure covers from every read (the query builder adds one predicate
//! per erasure, see `query::build::erasures`), whatever Arc's buffer shows,
//! until the control plane has erased them physically, verified that none is
//! left and removed the record.
//!
//! A memory erasure covers the rows written at or before its `as_of`: by id
//! (every version of those memories) or by filter (agent, session, memory
//! and event types, tags, a time range). A memory written after the delete
//! (a new id, or a client re-using a deleted id) is not covered.

use crate::query::QueryError;
use crate::query::validate::{AgentId, EventType, MemoryId, MemoryType, SessionId, Tag};
use memtrace_proto::state::v1 as state;
use std::sync::Arc;

pub mod requests;

pub use requests::{ErasureRequests, Recorded};

/// Most memory ids one erasure names (a batch delete by ids): what fits
/// the SQL budget of an org's erasures in progress
/// (`query::ERASURE_SQL_BUDGET`) with room to spare.
pub const MAX_IDS: usize = 100;
/// Most values of one list field (types, tags) of a filter erasure.
pub const MAX_FILTER_VALUES: usize = 16;

/// One erasure in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub id: String,
    pub org_id: String,
    pub scope: Scope,
    /// Rows written at or before this time (µs) are covered.
    pub as_of: i64,
    pub requested_by: String,
    pub requested_at: i64,
    pub state: State,
    /// Why it is blocked, when it is.
    pub detail: String,
}

/// What an erasure covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every version of these memories.
    Ids(Vec<MemoryId>),
    /// The versions of these memories up to `as_of` in the memory table:
    /// an update superseded them (they are kept in `memory_versions`, so
    /// history still shows them).
    Superseded(Vec<MemoryId>),
    /// The memories matching every given field.
    Filter(Filter),
    /// Everything of the org (its deletion).
    WholeOrg,
    /// The memories expired at the erasure's `as_of` (the control plane's
    /// expiry sweep; reads already hide them).
    Expired,
}

/// A delete by filter; empty fields match anything, at least one is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub agent_id: Option<AgentId>,
    pub session_id: Option<SessionId>,
    pub memory_types: Vec<MemoryType>,
    pub event_types: Vec<EventType>,
    /// Memories carrying all of these tags.
    pub tags: Vec<Tag>,
    /// `time > since` (µs).
    pub since: Option<i64>,
    /// `time < until` (µs).
    pub until: Option<i64>,
}

impl Filter {
    /// Whether no field narrows it (such a filter would cover the whole
    /// org, which only an org deletion may).
    pub fn is_empty(&self) -> bool {
        self.agent_id.is_none()
            && self.session_id.is_none()
            && self.memory_types.is_empty()
            && self.event_types.is_empty()
            && self.tags.is_empty()
            && self.since.is_none()
            && self.until.is_none()
    }
}

/// Where an erasure stands (a finished one is no longer on the bus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Recorded; the control plane has not taken it up yet.
    Requested,
    /// The control plane is erasing.
    Running,
    /// The store refused (see `detail`); retried later. Rows stay hidden.
    Blocked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Running => "running",
            Self::Blocked => "blocked",
        }
    }
}

/// The erasures of one org in progress, oldest first.
pub type OrgErasures = Arc<[Arc<Erasure>]>;

impl Erasure {
    /// Decodes and validates an authentic record found under
    /// `erasures/<org_id>/<erasure_id>`.
    pub fn from_record(
        org_id: &str,
        erasure_id: &str,
        record: state::ErasureRecord,
    ) -> Result<Self, String> {
        if record.org_id != org_id || record.erasure_id != erasure_id {
            return Err(format!(
                "record names erasure {:?} of org {:?} under the key of {erasure_id:?} of {org_id:?}",
                record.erasure_id, record.org_id
            ));
        }
        if record.as_of_micros <= 0 {
            return Err("as_of_micros must be positive".into());
        }
        let invalid = |e: QueryError| format!("invalid scope: {e}");
        let scope = match record.scope.and_then(|s| s.kind) {
            Some(state::erasure_scope::Kind::MemoryIds(ids)) => Scope::Ids(memory_ids(ids)?),
            Some(state::erasure_scope::Kind::Superseded(ids)) => {
                Scope::Superseded(memory_ids(ids)?)
            }
            Some(state::erasure_scope::Kind::Filter(f)) => {
                let filter = Filter::from_record(f).map_err(invalid)?;
                if filter.is_empty() {
                    return Err("a filter erasure needs at least one field".into());
                }
                Scope::Filter(filter)
            }
            Some(state::erasure_scope::Kind::WholeOrg(true)) => Scope::WholeOrg,
            Some(state::erasure_scope::Kind::Expired(true)) => Scope::Expired,
            Some(
                state::erasure_scope::Kind::WholeOrg(false)
                | state::erasure_scope::Kind::Expired(false),
            )
            | None => {
                return Err("an erasure without a scope".into());
            }
        };
        let state = match state::ErasureState::try_from(record.state) {
            Ok(state::ErasureState::Requested) => State::Requested,
            Ok(state::ErasureState::Running) => State::Running,
            Ok(state::ErasureState::Blocked) => State::Blocked,
            // an unknown state still hides the rows: fail closed
            Ok(state::ErasureState::Unspecified) | Err(_) => State::Requested,
        };
        Ok(Self {
            id: record.erasure_id,
            org_id: record.org_id,
            scope,
            as_of: record.as_of_micros,
            requested_by: record.requested_by,
            requested_at: record.requested_at_micros,
            state,
            detail: record.detail,
        })
    }

    /// The record a worker writes for a tenant's delete, with the covered
    /// rows as `memory_predicate` (rendered by the org's query builder).
    pub fn to_record(&self, memory_predicate: String, store: &str) -> state::ErasureRecord {
        let kind = match &self.scope {
            Scope::Ids(ids) => state::erasure_scope::Kind::MemoryIds(state::ErasureMemoryIds {
                ids: ids.iter().map(|id| id.as_str().to_owned()).collect(),
            }),
            Scope::Superseded(ids) => {
                state::erasure_scope::Kind::Superseded(state::ErasureMemoryIds {
                    ids: ids.iter().map(|id| id.as_str().to_owned()).collect(),
                })
            }
            Scope::Filter(f) => state::erasure_scope::Kind::Filter(f.to_record()),
            Scope::WholeOrg => state::erasure_scope::Kind::WholeOrg(true),
            Scope::Expired => state::erasure_scope::Kind::Expired(true),
        };
        let state = match self.state {
            State::Requested => state::ErasureState::Requested,
            State::Running => state::ErasureState::Running,
            State::Blocked => state::ErasureState::Blocked,
        };
        state::ErasureRecord {
            schema: memtrace_common::state::RECORD_SCHEMA,
            erasure_id: self.id.clone(),
            org_id: self.org_id.clone(),
            scope: Some(state::ErasureScope { kind: Some(kind) }),
            as_of_micros: self.as_of,
            requested_by: self.requested_by.clone(),
            requested_at_micros: self.requested_at,
            state: state as i32,
            detail: self.detail.clone(),
            memory_predicate,
            store: store.to_owned(),
        }
    }
}

impl Filter {
    fn from_record(f: state::ErasureFilter) -> Result<Self, QueryError> {
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        let positive = |t: i64| (t > 0).then_some(t);
        let bounded = |field: &'static str, n: usize| {
            if n > MAX_FILTER_VALUES {
                Err(QueryError::invalid(
                    field,
                    "an erasure filter takes at most 16 values",
                ))
            } else {
                Ok(())
            }
        };
        bounded("memory_types", f.memory_types.len())?;
        bounded("event_types", f.event_types.len())?;
        bounded("tags", f.tags.len())?;
        Ok(Self {
            agent_id: nonempty(f.agent_id).map(AgentId::parse_owned).transpose()?,
            session_id: nonempty(f.session_id)
                .map(SessionId::parse_owned)
                .transpose()?,
            memory_types: f
                .memory_types
                .iter()
                .map(|t| MemoryType::parse(t))
                .collect::<Result<_, _>>()?,
            event_types: f
                .event_types
                .into_iter()
                .map(EventType::parse_owned)
                .collect::<Result<_, _>>()?,
            tags: f
                .tags
                .into_iter()
                .map(Tag::parse_owned)
                .collect::<Result<_, _>>()?,
            since: positive(f.since_micros),
            until: positive(f.until_micros),
        })
    }

    fn to_record(&self) -> state::ErasureFilter {
        state::ErasureFilter {
            agent_id: self
                .agent_id
                .as_ref()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
            session_id: self
                .session_id
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            memory_types: self.memory_types.iter().map(|t| t.to_string()).collect(),
            event_types: self
                .event_types
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            tags: self.tags.iter().map(|t| t.as_str().to_owned()).collect(),
            since_micros: self.since.unwrap_or(0),
            until_micros: self.until.unwrap_or(0),
        }
    }
}

fn memory_ids(ids: state::ErasureMemoryIds) -> Result<Vec<MemoryId>, String> {
    if ids.ids.is_empty() || ids.ids.len() > MAX_IDS {
        return Err(format!("an erasure names 1 to {MAX_IDS} memory ids"));
    }
    ids.ids
        .into_iter()
        .map(MemoryId::parse_owned)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid scope: {e}"))
}

/// A new erasure id: `era_` + 14 hex µs + 12 random hex (time-ordered).
pub fn new_id(micros: i64) -> String {
    format!(
        "era_{:014x}{:012x}",
        micros.max(0),
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn erasure(scope: Scope) -> Erasure {
        Erasure {
            id: "era_1".into(),
            org_id: "org_a".into(),
            scope,
            as_of: 1_700_000_000_000_000,
            requested_by: "api_key:key_1".into(),
            requested_at: 1_700_000_000_000_000,
            state: State::Requested,
            detail: String::new(),
        }
    }

    #[test]
    fn records_round_trip() {
        let filter = Filter {
            agent_id: Some(AgentId::parse("a1").unwrap()),
            memory_types: vec![MemoryType::parse("decision").unwrap()],
            tags: vec![Tag::parse("t1").unwrap()],
            until: Some(5),
            ..Filter::default()
        };
        for scope in [
            Scope::Ids(vec![MemoryId::parse("m1").unwrap()]),
            Scope::Superseded(vec![MemoryId::parse("m1").unwrap()]),
            Scope::Filter(filter),
            Scope::WholeOrg,
        ] {
            let e = erasure(scope);
            let record = e.to_record("id = 'm1'".into(), "arc");
            assert_eq!(Erasure::from_record("org_a", "era_1", record).unwrap(), e);
        }
    }

    #[test]
    fn invalid_records_are_refused_with_the_reason() {
        let ok = erasure(Scope::Ids(vec![MemoryId::parse("m1").unwrap()]))
            .to_record(String::new(), "arc");
        assert!(
            Erasure::from_record("org_b", "era_1", ok.clone()).is_err(),
            "moved to another org"
        );
        let mut bad = ok.clone();
        bad.scope = None;
        assert!(
            Erasure::from_record("org_a", "era_1", bad)
                .unwrap_err()
                .contains("scope")
        );
        let mut bad = ok.clone();
        bad.scope = Some(state::ErasureScope {
            kind: Some(state::erasure_scope::Kind::MemoryIds(
                state::ErasureMemoryIds {
                    ids: vec!["bad id".into()],
                },
            )),
        });
        assert!(
            Erasure::from_record("org_a", "era_1", bad)
                .unwrap_err()
                .contains("id")
        );
        let mut bad = ok;
        bad.scope = Some(state::ErasureScope {
            kind: Some(state::erasure_scope::Kind::Filter(
                state::ErasureFilter::default(),
            )),
        });
        assert!(
            Erasure::from_record("org_a", "era_1", bad)
                .unwrap_err()
                .contains("at least one")
        );
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = new_id(1);
        let b = new_id(2);
        assert!(a < b && a.len() == 30, "{a} {b}");
    }
}
