//! `memtracectl import legacy`: moves a Go memtrace's metadata (its SQLite
//! file) into this memtrace.
//!
//! * orgs keep their ids (`org_<24 hex>`, `org_default`: both valid here);
//! * Arc bindings: the Arc key is opened with the Go server's master key
//!   (read from a file, never argv) and sent to the control plane's
//!   `BindArc`, which seals it under this memtrace's envelope;
//! * API keys: their bcrypt hash and prefix go to `ImportLegacyApiKey` (the
//!   tool never has a key); the keys keep working in their old format;
//! * agents and sessions: written to the org's Arc as the worker's own state
//!   rows, with their original ids and times ([`arc`]).
//!
//! Idempotent: whatever exists is skipped and reported; `--dry-run` reads
//! both sides and changes nothing. The control plane audits every org,
//! binding and key it creates; agents and sessions go straight to Arc, and
//! their counts per org are audited through `RecordLegacyImport`.

mod arc;
mod control;
pub mod source;

use crate::client::Admin;
use crate::error::CliError;
use crate::output::{Output, Render, table};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// import a Go memtrace (v0.2) SQLite file: orgs, arc bindings, api keys (which keep working), agents, sessions
    Legacy(LegacyArgs),
}

#[derive(Debug, Args)]
pub struct LegacyArgs {
    /// the Go memtrace's metadata file (auth.db_path, e.g. ./data/memtrace.db), opened read-only
    #[arg(long, value_name = "PATH")]
    pub db: PathBuf,
    /// file holding the Go memtrace's MEMTRACE_MASTER_KEY (base64 of 32 bytes); must not be readable by group or others
    #[arg(long, value_name = "FILE")]
    pub legacy_master_key_file: PathBuf,
    /// print what would be imported and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Kinds, in the order the report lists them.
pub const KINDS: [&str; 5] = ["org", "arc_binding", "api_key", "agent", "session"];

/// One thing left alone, and why.
#[derive(Debug, Serialize)]
pub struct Skipped {
    pub kind: &'static str,
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Counts {
    /// Imported (in a dry run: would be).
    pub imported: u64,
    pub skipped: u64,
}

/// Something imported differently from the original, and how.
#[derive(Debug, Serialize)]
pub struct Note {
    pub kind: &'static str,
    pub id: String,
    pub note: String,
}

/// The report printed at the end.
#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub dry_run: bool,
    pub counts: BTreeMap<&'static str, Counts>,
    pub skipped: Vec<Skipped>,
    pub notes: Vec<Note>,
}

impl ImportReport {
    fn new(dry_run: bool) -> Self {
        Self {
            dry_run,
            counts: KINDS.iter().map(|k| (*k, Counts::default())).collect(),
            skipped: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn note(&mut self, kind: &'static str, id: &str, note: impl Into<String>) {
        self.notes.push(Note {
            kind,
            id: id.to_owned(),
            note: note.into(),
        });
    }

    fn imported(&mut self, kind: &'static str) {
        self.counts.entry(kind).or_default().imported += 1;
    }

    fn skip(&mut self, kind: &'static str, id: &str, reason: impl Into<String>) {
        self.counts.entry(kind).or_default().skipped += 1;
        self.skipped.push(Skipped {
            kind,
            id: id.to_owned(),
            reason: reason.into(),
        });
    }
}

impl Render for ImportReport {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        let done = if self.dry_run {
            "would import"
        } else {
            "imported"
        };
        let rows: Vec<Vec<String>> = KINDS
            .iter()
            .map(|k| {
                let c = &self.counts[k];
                vec![
                    (*k).to_owned(),
                    c.imported.to_string(),
                    c.skipped.to_string(),
                ]
            })
            .collect();
        table(w, &["kind", done, "skipped"], &rows)?;
        if !self.skipped.is_empty() {
            writeln!(w)?;
            let rows: Vec<Vec<String>> = self
                .skipped
                .iter()
                .map(|s| vec![s.kind.to_owned(), s.id.clone(), s.reason.clone()])
                .collect();
            table(w, &["skipped", "id", "why"], &rows)?;
        }
        if !self.notes.is_empty() {
            writeln!(w)?;
            let rows: Vec<Vec<String>> = self
                .notes
                .iter()
                .map(|n| vec![n.kind.to_owned(), n.id.clone(), n.note.clone()])
                .collect();
            table(w, &["mapped", "id", "how"], &rows)?;
        }
        if self.dry_run {
            writeln!(w, "\ndry run: nothing was changed")?;
        }
        Ok(())
    }
}

/// Imports the binding, keys, agents and sessions of an org that exists.
async fn org_contents(
    admin: &Admin,
    db: &source::LegacyDb,
    org_id: &str,
    master: &[u8; 32],
    dry_run: bool,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    let route = match db.arcs.iter().find(|a| a.org_id == org_id) {
        Some(arc) => control::binding(admin, arc, master, dry_run, report).await?,
        None => None,
    };
    for key in db.keys.iter().filter(|k| k.org_id == org_id) {
        control::key(admin, key, dry_run, report).await?;
    }
    let written = arc::agents_and_sessions(db, org_id, route, dry_run, report).await?;
    if !dry_run && written.agents_imported + written.sessions_imported > 0 {
        control::audit_arc_writes(admin, written).await?;
    }
    Ok(())
}

/// Reads the legacy master key: the file must be owner-only (like every
/// key file memtrace reads) and hold the base64 of 32 bytes.
pub fn read_master_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, CliError> {
    use std::os::unix::fs::PermissionsExt;
    let flag = "--legacy-master-key-file";
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::new(format!("{flag} {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CliError::new(format!(
            "{flag} {}: readable by group or others (mode {mode:o}); the key opens every Arc key of the Go memtrace",
            path.display()
        ))
        .with_hint(format!("chmod 600 {}", path.display())));
    }
    let text = crate::secret::read(flag, path, &mut io::empty())?;
    memtrace_common::keys::parse_key(flag, Some(text.as_str()))
        .map_err(|e| CliError::new(format!("{} ({})", e, path.display())))
}

pub async fn run(
    command: ImportCommand,
    admin: &Admin,
    out: &mut Output<'_>,
) -> anyhow::Result<()> {
    let ImportCommand::Legacy(args) = command;
    let master = read_master_key(&args.legacy_master_key_file)?;
    let db = source::read(&args.db)?;
    let mut report = ImportReport::new(args.dry_run);
    let orgs: Vec<&str> = db.orgs.iter().map(|o| o.id.as_str()).collect();
    for org in &db.orgs {
        if control::org(admin, org, args.dry_run, &mut report).await? {
            org_contents(admin, &db, &org.id, &master, args.dry_run, &mut report).await?;
        } else {
            for (kind, id, _) in db.owned().filter(|(_, _, o)| *o == org.id) {
                report.skip(kind, &id, "its org was not imported");
            }
        }
    }
    // rows whose org the file does not have (its foreign keys were off)
    for (kind, id, org) in db.owned().filter(|(_, _, o)| !orgs.contains(o)) {
        report.skip(kind, &id, format!("org {org} is not in organizations"));
    }
    out.emit(&report)
}
