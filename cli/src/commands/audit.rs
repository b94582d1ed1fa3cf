//! `memtracectl audit …`: the control plane's admin audit trail (list,
//! verify). `config audit` is a filtered `audit list`.

use crate::client::Admin;
use crate::error::{CliError, Subject};
use crate::output::{Output, Render, rfc3339, table};
use clap::Subcommand;
use memtrace_proto::admin::v1 as pb;
use serde::Serialize;
use serde_json::Value;
use std::io::{self, Write};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// list audit entries, newest first
    List {
        /// at most this many entries
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// only actions starting with this, e.g. config. or org.
        #[arg(long, value_name = "PREFIX")]
        action: Option<String>,
        /// only this org and its settings
        #[arg(long, value_name = "ORG_ID")]
        org: Option<String>,
        /// only this setting key
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// only this outcome
        #[arg(long, value_parser = ["ok", "denied", "failed"])]
        outcome: Option<String>,
        /// only entries older than this sequence number (paging)
        #[arg(long, value_name = "SEQ")]
        before: Option<u64>,
    },
    /// check the hash chain of the whole trail; exits 1 when it is broken
    Verify,
}

pub async fn run(command: AuditCommand, admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    match command {
        AuditCommand::List {
            limit,
            action,
            org,
            key,
            outcome,
            before,
        } => {
            let entries = list(
                admin,
                pb::ListAuditRequest {
                    action_prefix: action.unwrap_or_default(),
                    key: key.unwrap_or_default(),
                    org_id: org.unwrap_or_default(),
                    outcome: outcome.unwrap_or_default(),
                    before_seq: before.unwrap_or(0),
                    limit,
                    ..pb::ListAuditRequest::default()
                },
            )
            .await?;
            out.emit(&AuditListView::from(entries))
        }
        AuditCommand::Verify => {
            let report = admin
                .audit()
                .verify_audit(admin.request(pb::VerifyAuditRequest {}))
                .await
                .map_err(|s| admin.fail(s, Subject::None))?
                .into_inner();
            let view = VerifyView::from(report);
            out.emit(&view)?;
            if view.ok {
                return Ok(());
            }
            Err(CliError::new(format!(
                "audit chain broken at entry {}: {}",
                view.broken_seq.unwrap_or(0),
                view.problem.clone().unwrap_or_default()
            ))
            .with_hint(
                "the audit_log table was changed outside memtrace; keep this database for \
                 investigation and compare it with a backup",
            )
            .into())
        }
    }
}

/// Runs one `ListAudit` call.
pub async fn list(
    admin: &Admin,
    request: pb::ListAuditRequest,
) -> anyhow::Result<Vec<pb::AuditEntry>> {
    Ok(admin
        .audit()
        .list_audit(admin.request(request))
        .await
        .map_err(|s| admin.fail(s, Subject::None))?
        .into_inner()
        .entries)
}

/// One audit entry.
#[derive(Debug, Serialize)]
pub struct AuditEntryView {
    pub seq: u64,
    pub at: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub details: Value,
    pub hash: String,
}

impl From<pb::AuditEntry> for AuditEntryView {
    fn from(e: pb::AuditEntry) -> Self {
        Self {
            seq: e.seq,
            at: rfc3339(e.at.as_ref()),
            details: serde_json::from_str(&e.details_json).unwrap_or(Value::String(e.details_json)),
            actor: e.actor,
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            hash: e.hash,
        }
    }
}

impl AuditEntryView {
    /// `old -> new` for config changes, else the details as compact json.
    fn summary(&self) -> String {
        let d = &self.details;
        let text = |v: &Value| match v {
            Value::Null => "(not set)".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut summary = if d.get("new").is_some() || d.get("old").is_some() {
            format!("{} -> {}", text(&d["old"]), text(&d["new"]))
        } else if let Some(attempted) = d.get("attempted") {
            format!("attempted {}", text(attempted))
        } else {
            d.to_string()
        };
        if let Some(reason) = d.get("reason").and_then(Value::as_str) {
            summary.push_str(&format!(" ({reason})"));
        }
        if let Some(seq) = d.get("rollback_of") {
            summary.push_str(&format!(" (rollback of {seq})"));
        }
        summary
    }
}

/// `audit list` and `config audit` result.
#[derive(Debug, Serialize)]
pub struct AuditListView {
    pub entries: Vec<AuditEntryView>,
}

impl From<Vec<pb::AuditEntry>> for AuditListView {
    fn from(entries: Vec<pb::AuditEntry>) -> Self {
        Self {
            entries: entries.into_iter().map(AuditEntryView::from).collect(),
        }
    }
}

impl Render for AuditListView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.entries.is_empty() {
            return writeln!(w, "no audit entries");
        }
        let rows: Vec<Vec<String>> = self
            .entries
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    e.at.clone().unwrap_or_else(|| "-".into()),
                    e.actor.clone(),
                    e.action.clone(),
                    e.target.clone(),
                    e.outcome.clone(),
                    e.summary(),
                ]
            })
            .collect();
        table(
            w,
            &[
                "seq", "time", "actor", "action", "target", "outcome", "change",
            ],
            &rows,
        )
    }
}

/// `audit verify` result.
#[derive(Debug, Serialize)]
pub struct VerifyView {
    pub ok: bool,
    pub entries: u64,
    pub head_seq: u64,
    pub head_hash: String,
    pub broken_seq: Option<u64>,
    pub problem: Option<String>,
}

impl From<pb::VerifyAuditResponse> for VerifyView {
    fn from(r: pb::VerifyAuditResponse) -> Self {
        Self {
            ok: r.ok,
            entries: r.entries,
            head_seq: r.head_seq,
            head_hash: r.head_hash,
            broken_seq: (!r.ok).then_some(r.broken_seq),
            problem: (!r.ok).then_some(r.problem),
        }
    }
}

impl Render for VerifyView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.ok {
            writeln!(
                w,
                "audit chain ok: {} entries, head entry {}, head hash {}",
                self.entries, self.head_seq, self.head_hash
            )
        } else {
            writeln!(
                w,
                "audit chain BROKEN at entry {}: {} ({} entries verified before it)",
                self.broken_seq.unwrap_or(0),
                self.problem.as_deref().unwrap_or_default(),
                self.entries
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_summarise_config_changes() {
        let entry = AuditEntryView::from(pb::AuditEntry {
            seq: 3,
            action: "config.set".into(),
            outcome: "ok".into(),
            details_json: r#"{"key":"log.level","old":null,"new":"debug"}"#.into(),
            ..pb::AuditEntry::default()
        });
        assert_eq!(entry.summary(), "(not set) -> debug");
        let denied = AuditEntryView::from(pb::AuditEntry {
            details_json: r#"{"attempted":"300","reason":"locked"}"#.into(),
            ..pb::AuditEntry::default()
        });
        assert_eq!(denied.summary(), "attempted 300 (locked)");
        assert_eq!(
            serde_json::to_value(&denied).unwrap()["details"]["reason"],
            "locked"
        );
    }
}
