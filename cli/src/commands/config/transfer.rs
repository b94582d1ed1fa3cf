//! Views of `config export` and `config import`.

use crate::output::{Render, table};
use memtrace_proto::admin::v1 as pb;
use serde::Serialize;
use serde_json::Value;
use std::io::{self, Write};

/// `config export` to stdout: the document itself, in either format.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct DocumentView(pub Value);

impl Render for DocumentView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        let text = serde_json::to_string_pretty(&self.0).map_err(io::Error::other)?;
        writeln!(w, "{text}")
    }
}

/// `config export --file` result.
#[derive(Debug, Serialize)]
pub struct ExportedView {
    pub file: String,
    pub values: u32,
    pub excluded_sensitive: Vec<String>,
}

impl Render for ExportedView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "exported {} values to {}", self.values, self.file)?;
        if !self.excluded_sensitive.is_empty() {
            writeln!(
                w,
                "not exported (sensitive): {}",
                self.excluded_sensitive.join(", ")
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize)]
pub struct DiffView {
    pub key: String,
    pub org_id: Option<String>,
    /// `null` when no value is stored (default or inherited).
    pub old: Option<String>,
    pub new: String,
}

#[derive(Debug, Serialize)]
pub struct ConflictView {
    pub key: String,
    pub org_id: Option<String>,
    pub kind: String,
    pub reason: String,
}

/// `config import` result.
#[derive(Debug, Serialize)]
pub struct ImportView {
    pub dry_run: bool,
    pub applied: bool,
    pub changes: Vec<DiffView>,
    pub conflicts: Vec<ConflictView>,
    pub unchanged: u32,
    pub revision: Option<u64>,
}

impl ImportView {
    pub(super) fn new(dry_run: bool, report: pb::ImportSettingsResponse) -> Self {
        let org = |o: String| (!o.is_empty()).then_some(o);
        Self {
            dry_run,
            applied: report.applied,
            changes: report
                .changes
                .into_iter()
                .map(|c| DiffView {
                    key: c.key,
                    org_id: org(c.org_id),
                    old: c.old_set.then_some(c.old_value),
                    new: c.new_value,
                })
                .collect(),
            conflicts: report
                .conflicts
                .into_iter()
                .map(|c| ConflictView {
                    key: c.key,
                    org_id: org(c.org_id),
                    kind: c.kind,
                    reason: c.reason,
                })
                .collect(),
            unchanged: report.unchanged,
            revision: (report.revision > 0).then_some(report.revision),
        }
    }
}

impl Render for ImportView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        if !self.changes.is_empty() {
            let rows: Vec<Vec<String>> = self
                .changes
                .iter()
                .map(|c| {
                    vec![
                        c.key.clone(),
                        c.org_id.clone().unwrap_or_else(|| "-".into()),
                        c.old.clone().unwrap_or_else(|| "(not set)".into()),
                        c.new.clone(),
                    ]
                })
                .collect();
            table(w, &["key", "org", "old", "new"], &rows)?;
        }
        if !self.conflicts.is_empty() {
            writeln!(w, "conflicts:")?;
            let rows: Vec<Vec<String>> = self
                .conflicts
                .iter()
                .map(|c| {
                    vec![
                        c.key.clone(),
                        c.org_id.clone().unwrap_or_else(|| "-".into()),
                        c.kind.clone(),
                        c.reason.clone(),
                    ]
                })
                .collect();
            table(w, &["key", "org", "kind", "reason"], &rows)?;
            if self
                .conflicts
                .iter()
                .any(|c| c.kind == "changed_since_export")
            {
                writeln!(
                    w,
                    "hint: pass --force to overwrite the values changed since the export"
                )?;
            }
        }
        let summary = format!(
            "{} changes, {} conflicts, {} unchanged",
            self.changes.len(),
            self.conflicts.len(),
            self.unchanged
        );
        if self.dry_run {
            return writeln!(w, "dry run: {summary}; nothing was applied");
        }
        match (self.applied, self.revision) {
            (true, Some(revision)) => {
                writeln!(w, "imported: {summary}; published at revision {revision}")
            }
            (true, None) => writeln!(w, "imported: {summary}; publication deferred"),
            (false, _) => writeln!(w, "nothing to import: {summary}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(kind: &str) -> String {
        let report = pb::ImportSettingsResponse {
            conflicts: vec![pb::ImportConflict {
                key: "arc.write_batch_size".into(),
                kind: kind.into(),
                reason: "the stored value 500 was written after this document was exported".into(),
                ..pb::ImportConflict::default()
            }],
            ..pb::ImportSettingsResponse::default()
        };
        let mut buf = Vec::new();
        ImportView::new(true, report).table(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn values_changed_since_the_export_get_the_force_hint() {
        let text = render("changed_since_export");
        assert!(text.contains("hint: pass --force"), "{text}");
        let text = render("locked");
        assert!(!text.contains("--force"), "{text}");
    }
}
