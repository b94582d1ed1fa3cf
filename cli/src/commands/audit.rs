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
    /// check the keyed chain of the whole trail (in the control plane, which
    /// holds the keys); exits 1 when it is broken or partly unverifiable
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
            match view.status {
                VerifyStatus::Ok => Ok(()),
                VerifyStatus::Broken => Err(CliError::new(format!(
                    "audit chain broken at entry {}: {}",
                    view.broken_seq.unwrap_or(0),
                    view.problem.clone().unwrap_or_default()
                ))
                .with_hint(
                    "the audit_log table was changed outside memtrace; keep this database for \
                     investigation and compare it with a backup",
                )
                .into()),
                VerifyStatus::Unverifiable => Err(CliError::new(format!(
                    "audit chain not fully verifiable: {}",
                    view.unverifiable
                        .iter()
                        .map(UnverifiableView::problem)
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
                .with_hint(
                    "no tampering was found, but these entries were keyed under master keys the \
                     control plane does not hold; configure those keys as previous master keys \
                     (MEMTRACE_MASTER_KEYS_PREVIOUS) and verify again",
                )
                .into()),
            }
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
    /// The master key of the entry's MAC; `None` for unkeyed (version 1) entries.
    pub kek_id: Option<String>,
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
            kek_id: (!e.kek_id.is_empty()).then_some(e.kek_id),
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

/// What `audit verify` found: tampering ("broken") and entries that could
/// not be checked ("unverifiable") are different findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyStatus {
    Ok,
    Unverifiable,
    Broken,
}

/// Entries keyed under a master key the control plane does not hold.
#[derive(Debug, Serialize)]
pub struct UnverifiableView {
    pub kek_id: String,
    pub entries: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

impl UnverifiableView {
    fn problem(&self) -> String {
        format!(
            "entries {}–{} ({}) unverifiable: key {} not held",
            self.first_seq, self.last_seq, self.entries, self.kek_id
        )
    }
}

/// `audit verify` result.
#[derive(Debug, Serialize)]
pub struct VerifyView {
    pub ok: bool,
    pub status: VerifyStatus,
    pub entries: u64,
    pub head_seq: u64,
    pub head_hash: String,
    pub broken_seq: Option<u64>,
    pub problem: Option<String>,
    /// Entries 1..=this are unkeyed (checked with plain SHA-256 only).
    pub unkeyed_entries: u64,
    pub unverifiable: Vec<UnverifiableView>,
}

impl From<pb::VerifyAuditResponse> for VerifyView {
    fn from(r: pb::VerifyAuditResponse) -> Self {
        let broken = !r.ok && r.broken_seq > 0;
        let status = if r.ok {
            VerifyStatus::Ok
        } else if broken {
            VerifyStatus::Broken
        } else {
            VerifyStatus::Unverifiable
        };
        Self {
            ok: r.ok,
            status,
            entries: r.entries,
            head_seq: r.head_seq,
            head_hash: r.head_hash,
            broken_seq: broken.then_some(r.broken_seq),
            problem: broken.then_some(r.problem),
            unkeyed_entries: r.unkeyed_entries,
            unverifiable: r
                .unverifiable
                .into_iter()
                .map(|u| UnverifiableView {
                    kek_id: u.kek_id,
                    entries: u.entries,
                    first_seq: u.first_seq,
                    last_seq: u.last_seq,
                })
                .collect(),
        }
    }
}

impl Render for VerifyView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        match self.status {
            VerifyStatus::Ok => writeln!(
                w,
                "audit chain ok: {} entries, head entry {}, head hash {}",
                self.entries, self.head_seq, self.head_hash
            )?,
            VerifyStatus::Broken => writeln!(
                w,
                "audit chain BROKEN at entry {}: {} ({} entries verified before it)",
                self.broken_seq.unwrap_or(0),
                self.problem.as_deref().unwrap_or_default(),
                self.entries
            )?,
            VerifyStatus::Unverifiable => {
                writeln!(
                    w,
                    "audit chain UNVERIFIABLE in part (no tampering found in {} entries checked, head entry {}):",
                    self.entries, self.head_seq
                )?;
                for range in &self.unverifiable {
                    writeln!(w, "  {}", range.problem())?;
                }
            }
        }
        if self.unkeyed_entries > 0 {
            writeln!(
                w,
                "note: entries 1–{} were written before the chain was keyed and are checked with \
                 plain SHA-256 only, which anyone able to write the database can recompute",
                self.unkeyed_entries
            )?;
        }
        Ok(())
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

    fn render(view: &VerifyView) -> String {
        let mut out = Vec::new();
        view.table(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Tampering and entries under a key not held read differently.
    #[test]
    fn verify_tells_broken_from_unverifiable() {
        let broken = VerifyView::from(pb::VerifyAuditResponse {
            ok: false,
            entries: 2,
            broken_seq: 3,
            problem: "its content does not match its MAC".into(),
            unkeyed_entries: 1,
            ..pb::VerifyAuditResponse::default()
        });
        assert_eq!(broken.status, VerifyStatus::Broken);
        let text = render(&broken);
        assert!(text.starts_with("audit chain BROKEN at entry 3"), "{text}");
        assert!(text.contains("entries 1–1 were written before"), "{text}");

        let unverifiable = VerifyView::from(pb::VerifyAuditResponse {
            ok: false,
            entries: 9,
            head_seq: 9,
            unverifiable: vec![pb::UnverifiableAuditEntries {
                kek_id: "kek-00000000000000aa".into(),
                entries: 4,
                first_seq: 2,
                last_seq: 5,
            }],
            ..pb::VerifyAuditResponse::default()
        });
        assert_eq!(unverifiable.status, VerifyStatus::Unverifiable);
        assert_eq!(unverifiable.broken_seq, None);
        let text = render(&unverifiable);
        assert!(
            text.contains("entries 2–5 (4) unverifiable: key kek-00000000000000aa not held"),
            "{text}"
        );
        assert!(!text.contains("BROKEN"), "{text}");
        assert_eq!(
            serde_json::to_value(&unverifiable).unwrap()["status"],
            "unverifiable"
        );
    }
}
