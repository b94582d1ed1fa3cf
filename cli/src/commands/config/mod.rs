//! `memtracectl config …`: runtime settings (list, get, set, reset, export,
//! import, audit, rollback). The control plane validates everything; values
//! are sent as typed text (`500`, `2s`, `4MiB`, `true`, `debug`).

mod transfer;

use super::audit::{AuditListView, list as audit_list};
use crate::client::Admin;
use crate::error::{CliError, Subject};
use crate::output::{Output, Render, cell, fields, rfc3339, table, yes_no};
use clap::Subcommand;
use memtrace_proto::admin::v1 as pb;
use serde::Serialize;
use serde_json::Value;
use std::io::{self, Write};
use std::path::PathBuf;
use transfer::{DocumentView, ExportedView, ImportView};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// list every setting with its effective value and where it comes from
    List {
        /// resolve for this org (its overrides win)
        #[arg(long, value_name = "ORG_ID")]
        org: Option<String>,
    },
    /// show one setting: value, source, type, range, default, flags
    Get {
        /// setting key, e.g. arc.write_batch_size
        key: String,
        /// resolve for this org
        #[arg(long, value_name = "ORG_ID")]
        org: Option<String>,
    },
    /// change a setting (globally, or for one org); prints the revision
    Set {
        /// setting key, e.g. arc.write_batch_size
        key: String,
        /// new value, e.g. 500, 2s, 4MiB, true, debug
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// override the value for this org only
        #[arg(long, value_name = "ORG_ID")]
        org: Option<String>,
    },
    /// remove a value: back to the default (or, with --org, to the global value)
    Reset {
        /// setting key
        key: String,
        /// remove this org's override
        #[arg(long, value_name = "ORG_ID")]
        org: Option<String>,
    },
    /// write the stored values as a json document (sensitive values excluded)
    Export {
        /// write to this file instead of stdout
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// apply a document written by 'config export' (merging; all or nothing)
    Import {
        /// the document to import
        file: PathBuf,
        /// only show what would change and what conflicts
        #[arg(long)]
        dry_run: bool,
        /// overwrite values changed after the document was exported
        #[arg(long)]
        force: bool,
    },
    /// show the audit trail of config changes (newest first)
    Audit {
        /// only this setting (its global and per-org changes)
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// only this org's overrides
        #[arg(long, value_name = "ORG_ID")]
        org: Option<String>,
        /// at most this many entries
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// restore the value an audited config change replaced
    Rollback {
        /// sequence number of the audit entry (see 'memtracectl config audit')
        seq: u64,
    },
}

pub async fn run(
    command: ConfigCommand,
    admin: &Admin,
    out: &mut Output<'_>,
) -> anyhow::Result<()> {
    let mut client = admin.config();
    let fail = |s| admin.fail(s, Subject::Setting);
    match command {
        ConfigCommand::List { org } => {
            let org_id = org.unwrap_or_default();
            let list = client
                .list_settings(admin.request(pb::ListSettingsRequest {
                    org_id: org_id.clone(),
                }))
                .await
                .map_err(|s| admin.fail(s, Subject::Org))?
                .into_inner();
            out.emit(&SettingListView {
                org_id: (!org_id.is_empty()).then_some(org_id),
                settings: list.settings.iter().map(SettingView::from).collect(),
            })
        }
        ConfigCommand::Get { key, org } => {
            let setting = client
                .get_setting(admin.request(pb::GetSettingRequest {
                    key,
                    org_id: org.unwrap_or_default(),
                }))
                .await
                .map_err(fail)?
                .into_inner();
            out.emit(&SettingView::from(&setting))
        }
        ConfigCommand::Set { key, value, org } => {
            let changed = client
                .set_setting(admin.request(pb::SetSettingRequest {
                    key,
                    value,
                    org_id: org.unwrap_or_default(),
                }))
                .await
                .map_err(fail)?
                .into_inner();
            out.emit(&ChangeView::new("set", changed))
        }
        ConfigCommand::Reset { key, org } => {
            let changed = client
                .reset_setting(admin.request(pb::ResetSettingRequest {
                    key,
                    org_id: org.unwrap_or_default(),
                }))
                .await
                .map_err(fail)?
                .into_inner();
            out.emit(&ChangeView::new("reset", changed))
        }
        ConfigCommand::Rollback { seq } => {
            let changed = client
                .rollback_setting(admin.request(pb::RollbackSettingRequest { seq }))
                .await
                .map_err(|s| admin.fail(s, Subject::AuditEntry))?
                .into_inner();
            out.emit(&ChangeView::new("rolled back", changed))
        }
        ConfigCommand::Export { file } => {
            let export = client
                .export_settings(admin.request(pb::ExportSettingsRequest {}))
                .await
                .map_err(fail)?
                .into_inner();
            let document: Value = serde_json::from_str(&export.document).map_err(|e| {
                CliError::new(format!(
                    "the control plane returned an unreadable export ({e})"
                ))
            })?;
            match file {
                None => out.emit(&DocumentView(document)),
                Some(path) => {
                    let mut text = serde_json::to_string_pretty(&document)?;
                    text.push('\n');
                    std::fs::write(&path, text).map_err(|e| {
                        CliError::new(format!("cannot write {}: {e}", path.display()))
                    })?;
                    out.emit(&ExportedView {
                        file: path.display().to_string(),
                        values: export.values,
                        excluded_sensitive: export.excluded_sensitive,
                    })
                }
            }
        }
        ConfigCommand::Import {
            file,
            dry_run,
            force,
        } => {
            let document = std::fs::read_to_string(&file).map_err(|e| {
                CliError::new(format!("cannot read {}: {e}", file.display()))
                    .with_hint("pass a file written by 'memtracectl config export --file FILE'")
            })?;
            let report = client
                .import_settings(admin.request(pb::ImportSettingsRequest {
                    document,
                    dry_run,
                    force,
                }))
                .await
                .map_err(fail)?
                .into_inner();
            out.emit(&ImportView::new(dry_run, report))
        }
        ConfigCommand::Audit { key, org, limit } => {
            let entries = audit_list(
                admin,
                pb::ListAuditRequest {
                    action_prefix: "config.".into(),
                    key: key.unwrap_or_default(),
                    org_id: org.unwrap_or_default(),
                    limit,
                    ..pb::ListAuditRequest::default()
                },
            )
            .await?;
            out.emit(&AuditListView::from(entries))
        }
    }
}

/// A typed JSON value from its encoding (the text itself if it is not JSON).
fn typed(value_json: &str, fallback: &str) -> Value {
    serde_json::from_str(value_json).unwrap_or_else(|_| Value::String(fallback.to_owned()))
}

/// One setting, as `config get` and each entry of `config list`.
#[derive(Debug, Serialize)]
pub struct SettingView {
    pub key: String,
    pub value: Value,
    pub source: String,
    pub default: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub range: String,
    pub category: String,
    pub per_org: bool,
    pub locked: bool,
    pub sensitive: bool,
    pub masked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    pub updated_at: Option<String>,
    pub description: String,
    #[serde(skip)]
    shown: String,
}

impl From<&pb::Setting> for SettingView {
    fn from(s: &pb::Setting) -> Self {
        Self {
            key: s.key.clone(),
            value: typed(&s.value_json, &s.value),
            source: s.source.clone(),
            default: s.default_value.clone(),
            ty: s.r#type.clone(),
            range: s.range.clone(),
            category: s.category.clone(),
            per_org: s.per_org,
            locked: s.locked,
            sensitive: s.sensitive,
            masked: s.masked,
            org_id: (!s.org_id.is_empty()).then(|| s.org_id.clone()),
            updated_at: rfc3339(s.updated_at.as_ref()),
            description: s.description.clone(),
            shown: s.value.clone(),
        }
    }
}

impl SettingView {
    fn flags(&self) -> String {
        let flags: Vec<&str> = [
            (self.locked, "locked"),
            (self.sensitive, "sensitive"),
            (self.per_org, "per-org"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if flags.is_empty() {
            "-".to_owned()
        } else {
            flags.join(",")
        }
    }

    fn shown_or_empty(&self) -> String {
        if self.shown.is_empty() {
            "\"\"".to_owned()
        } else {
            self.shown.clone()
        }
    }
}

impl Render for SettingView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut pairs = vec![
            ("key", self.key.clone()),
            ("value", self.shown_or_empty()),
            ("source", self.source.clone()),
            ("default", self.default.clone()),
            ("type", format!("{} ({})", self.ty, self.range)),
            ("category", self.category.clone()),
            ("per org", yes_no(self.per_org).to_owned()),
            ("locked", yes_no(self.locked).to_owned()),
            ("sensitive", yes_no(self.sensitive).to_owned()),
            ("updated", cell(&self.updated_at, "-")),
        ];
        if let Some(org) = &self.org_id {
            pairs.insert(1, ("org", org.clone()));
        }
        pairs.push(("description", self.description.clone()));
        fields(w, &pairs)
    }
}

/// `config list` result.
#[derive(Debug, Serialize)]
pub struct SettingListView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    pub settings: Vec<SettingView>,
}

impl Render for SettingListView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        let rows: Vec<Vec<String>> = self
            .settings
            .iter()
            .map(|s| {
                vec![
                    s.key.clone(),
                    s.shown_or_empty(),
                    s.source.clone(),
                    s.default.clone(),
                    s.category.clone(),
                    s.flags(),
                ]
            })
            .collect();
        table(
            w,
            &["key", "value", "source", "default", "category", "flags"],
            &rows,
        )
    }
}

/// `config set`, `reset` and `rollback` results.
#[derive(Debug, Serialize)]
pub struct ChangeView {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    pub old_value: String,
    pub old_source: String,
    pub value: Value,
    pub source: String,
    pub changed: bool,
    /// `null` when publication was deferred.
    pub revision: Option<u64>,
    pub audit_seq: Option<u64>,
    pub category: String,
    #[serde(skip)]
    verb: &'static str,
    #[serde(skip)]
    shown: String,
}

impl ChangeView {
    fn new(verb: &'static str, response: pb::SettingChangeResponse) -> Self {
        let setting = response.setting.unwrap_or_default();
        Self {
            key: setting.key,
            org_id: (!setting.org_id.is_empty()).then_some(setting.org_id),
            old_value: response.old_value,
            old_source: response.old_source,
            value: typed(&setting.value_json, &setting.value),
            source: setting.source,
            changed: response.changed,
            revision: (response.revision > 0).then_some(response.revision),
            audit_seq: (response.audit_seq > 0).then_some(response.audit_seq),
            category: setting.category,
            verb,
            shown: setting.value,
        }
    }
}

impl Render for ChangeView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        let scope = match &self.org_id {
            Some(org) => format!(" for org {org}"),
            None => String::new(),
        };
        if self.changed {
            writeln!(
                w,
                "{} {}{scope}: {} ({}) -> {} ({})",
                self.verb, self.key, self.old_value, self.old_source, self.shown, self.source
            )?;
        } else {
            writeln!(
                w,
                "{}{scope} is already {} ({}); nothing changed",
                self.key, self.shown, self.source
            )?;
        }
        match self.revision {
            Some(revision) => writeln!(w, "published at revision {revision}")?,
            None => writeln!(
                w,
                "publication deferred: the change is saved and the control plane will publish it"
            )?,
        }
        if let Some(seq) = self.audit_seq {
            writeln!(w, "audit entry {seq}")?;
        }
        if self.category == "restart-required" && self.changed {
            writeln!(
                w,
                "note: this setting takes effect when each process restarts"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting() -> pb::Setting {
        pb::Setting {
            key: "arc.write_batch_size".into(),
            value: "500".into(),
            value_json: "500".into(),
            source: "global".into(),
            default_value: "100".into(),
            r#type: "integer".into(),
            range: "1..=100000 events".into(),
            category: "hot".into(),
            per_org: true,
            ..pb::Setting::default()
        }
    }

    #[test]
    fn values_are_typed_in_json_and_changes_print_the_revision() {
        let view = SettingView::from(&setting());
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["value"], 500);
        assert_eq!(json["type"], "integer");
        assert!(json.get("org_id").is_none());

        let change = ChangeView::new(
            "set",
            pb::SettingChangeResponse {
                setting: Some(setting()),
                old_value: "100".into(),
                old_source: "default".into(),
                changed: true,
                revision: 42,
                audit_seq: 7,
            },
        );
        let mut buf = Vec::new();
        change.table(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with("set arc.write_batch_size: 100 (default) -> 500 (global)\n"));
        assert!(text.contains("published at revision 42"), "{text}");
        assert_eq!(serde_json::to_value(&change).unwrap()["revision"], 42);

        let deferred = ChangeView::new(
            "reset",
            pb::SettingChangeResponse {
                setting: Some(setting()),
                ..pb::SettingChangeResponse::default()
            },
        );
        assert!(serde_json::to_value(&deferred).unwrap()["revision"].is_null());
    }
}
