//! `memtracectl erasure list|show`: the control plane's erasure jobs (a
//! tenant's deleted memories, or a deleted org, being erased from its Arc),
//! with their rows removed, verification and receipt.

use crate::client::Admin;
use crate::error::Subject;
use crate::output::{Output, Render, cell, fields, rfc3339, table};
use memtrace_proto::admin::v1 as pb;
use serde::Serialize;
use serde_json::Value;
use std::io::{self, Write};

/// `erasure list`.
pub(super) async fn list(
    admin: &Admin,
    org: Option<String>,
    state: Option<String>,
    out: &mut Output<'_>,
) -> anyhow::Result<()> {
    let erasures = admin
        .erasures()
        .list_erasures(admin.request(pb::ListErasuresRequest {
            org_id: org.unwrap_or_default(),
            state: state.unwrap_or_default(),
        }))
        .await
        .map_err(|s| admin.fail(s, Subject::None))?
        .into_inner()
        .erasures;
    out.emit(&ErasureListView {
        erasures: erasures.into_iter().map(ErasureView::from).collect(),
    })
}

/// `erasure show`.
pub(super) async fn show(admin: &Admin, id: String, out: &mut Output<'_>) -> anyhow::Result<()> {
    let erasure = admin
        .erasures()
        .get_erasure(admin.request(pb::GetErasureRequest { erasure_id: id }))
        .await
        .map_err(|s| admin.fail(s, Subject::None))?
        .into_inner();
    out.emit(&ErasureView::from(erasure))
}

fn json_or_null(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
    }
}

/// One erasure job.
#[derive(Debug, Serialize)]
pub struct ErasureView {
    pub erasure_id: String,
    pub org_id: String,
    pub state: String,
    pub detail: String,
    pub scope: Value,
    pub memory_predicate: String,
    pub requested_by: String,
    pub requested_at: Option<String>,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub target: Value,
    pub rows_removed: Value,
    pub verification: Value,
    pub receipt: Value,
}

impl From<pb::Erasure> for ErasureView {
    fn from(e: pb::Erasure) -> Self {
        Self {
            requested_at: rfc3339(e.requested_at.as_ref()),
            next_attempt_at: rfc3339(e.next_attempt_at.as_ref()),
            started_at: rfc3339(e.started_at.as_ref()),
            finished_at: rfc3339(e.finished_at.as_ref()),
            scope: json_or_null(&e.scope_json),
            target: json_or_null(&e.target_json),
            rows_removed: json_or_null(&e.rows_removed_json),
            verification: json_or_null(&e.verification_json),
            receipt: json_or_null(&e.receipt_json),
            erasure_id: e.erasure_id,
            org_id: e.org_id,
            state: e.state,
            detail: e.detail,
            memory_predicate: e.memory_predicate,
            requested_by: e.requested_by,
            attempts: e.attempts,
        }
    }
}

impl ErasureView {
    fn scope_summary(&self) -> String {
        if self.scope["whole_org"].as_bool() == Some(true) {
            "whole org".into()
        } else if let Some(ids) = self.scope["memory_ids"].as_array() {
            format!("{} memories", ids.len())
        } else if let Some(ids) = self.scope["superseded_ids"].as_array() {
            format!("{} updated (old versions)", ids.len())
        } else if self.scope.get("filter").is_some() {
            "filter".into()
        } else if self.scope["expired"].as_bool() == Some(true) {
            "expired memories".into()
        } else {
            "-".into()
        }
    }

    fn removed_summary(&self) -> String {
        match self.rows_removed.as_object() {
            Some(map) if !map.is_empty() => map
                .iter()
                .map(|(t, n)| format!("{t}={n}"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => "-".into(),
        }
    }
}

impl Render for ErasureView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        let compact = |v: &Value| {
            if v.is_null() {
                "-".to_owned()
            } else {
                v.to_string()
            }
        };
        fields(
            w,
            &[
                ("erasure", self.erasure_id.clone()),
                ("org", self.org_id.clone()),
                ("state", self.state.clone()),
                (
                    "detail",
                    if self.detail.is_empty() {
                        "-".into()
                    } else {
                        self.detail.clone()
                    },
                ),
                ("scope", compact(&self.scope)),
                (
                    "predicate",
                    if self.memory_predicate.is_empty() {
                        "-".into()
                    } else {
                        self.memory_predicate.clone()
                    },
                ),
                ("requested by", self.requested_by.clone()),
                ("requested at", cell(&self.requested_at, "-")),
                ("attempts", self.attempts.to_string()),
                ("next attempt", cell(&self.next_attempt_at, "-")),
                ("started", cell(&self.started_at, "-")),
                ("finished", cell(&self.finished_at, "-")),
                ("target", compact(&self.target)),
                ("rows removed", self.removed_summary()),
                ("verification", compact(&self.verification)),
            ],
        )?;
        if !self.receipt.is_null() {
            writeln!(w, "receipt:")?;
            let pretty = serde_json::to_string_pretty(&self.receipt).unwrap_or_default();
            writeln!(w, "{pretty}")?;
        }
        Ok(())
    }
}

/// `erasure list` result.
#[derive(Debug, Serialize)]
pub struct ErasureListView {
    pub erasures: Vec<ErasureView>,
}

impl Render for ErasureListView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.erasures.is_empty() {
            return writeln!(w, "no erasures");
        }
        let rows: Vec<Vec<String>> = self
            .erasures
            .iter()
            .map(|e| {
                vec![
                    e.erasure_id.clone(),
                    e.org_id.clone(),
                    e.state.clone(),
                    e.scope_summary(),
                    cell(&e.requested_at, "-"),
                    cell(&e.finished_at, "-"),
                    e.removed_summary(),
                    if e.detail.is_empty() {
                        "-".into()
                    } else {
                        e.detail.clone()
                    },
                ]
            })
            .collect();
        table(
            w,
            &[
                "ERASURE",
                "ORG",
                "STATE",
                "SCOPE",
                "REQUESTED",
                "FINISHED",
                "ROWS REMOVED",
                "DETAIL",
            ],
            &rows,
        )
    }
}
