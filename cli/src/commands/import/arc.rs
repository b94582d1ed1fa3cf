//! Agents and sessions of one org, written to the org's Arc (the Go
//! memtrace's instance, opened with its decrypted key) through the worker's
//! own memory service (`OrgService::import_agent` / `import_session`): the
//! same state rows and encoding a worker writes, each id once.

use super::ImportReport;
use super::source::LegacyDb;
use memtrace_common::settings::EffectiveSettings;
use memtrace_data_plane::arcdb::{ArcClient, RetryPolicy};
use memtrace_data_plane::ingest::Batcher;
use memtrace_data_plane::service::import::ImportOutcome;
use memtrace_data_plane::service::{OrgService, ServiceShared};
use memtrace_data_plane::snapshot::ArcRoute;
use memtrace_data_plane::store::ArcStore;
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use std::time::Duration;

/// The org's memory service on `route`.
fn service(org_id: &str, route: ArcRoute) -> anyhow::Result<OrgService> {
    let client = ArcClient::new(Duration::from_secs(5), Duration::from_secs(30))
        .map_err(|e| anyhow::anyhow!("arc client: {e}"))?;
    let settings = EffectiveSettings::default();
    let batcher = Batcher::new(
        client.clone(),
        move |org: &str| (settings.write(Some(org)), settings.limits(Some(org))),
        RetryPolicy::default(),
    );
    let store = ArcStore::new(
        org_id,
        Arc::new(route),
        batcher,
        client,
        RetryPolicy::default(),
    )
    .map_err(|e| anyhow::anyhow!("org {org_id}: {e}"))?;
    OrgService::new(
        Arc::new(store),
        org_id,
        &EffectiveSettings::default(),
        Arc::new(ServiceShared::default()),
    )
    .map_err(|e| anyhow::anyhow!("org {org_id}: {e}"))
}

/// Imports the org's agents, then its sessions; without a usable route
/// every one is skipped. Returns what it wrote and skipped, for the audit
/// trail (`RecordLegacyImport`).
pub async fn agents_and_sessions(
    db: &LegacyDb,
    org_id: &str,
    route: Option<ArcRoute>,
    dry_run: bool,
    report: &mut ImportReport,
) -> anyhow::Result<pb::RecordLegacyImportRequest> {
    let before = |r: &ImportReport, kind: &str| (r.counts[kind].imported, r.counts[kind].skipped);
    let (agents_before, sessions_before) = (before(report, "agent"), before(report, "session"));
    let agents = db.agents.iter().filter(|a| a.org_id == org_id);
    let sessions = db.sessions.iter().filter(|s| s.org_id == org_id);
    let Some(route) = route else {
        for a in agents {
            report.skip("agent", &a.agent.id, "the org has no usable Arc instance");
        }
        for s in sessions {
            report.skip(
                "session",
                &s.session.id,
                "the org has no usable Arc instance",
            );
        }
        return Ok(done(org_id, report, agents_before, sessions_before));
    };
    let svc = service(org_id, route)?;
    let record = |kind: &'static str, id: &str, r: ImportOutcome, report: &mut ImportReport| match r
    {
        ImportOutcome::Imported => report.imported(kind),
        ImportOutcome::Skipped(why) => report.skip(kind, id, why),
    };
    for a in agents {
        let r = svc
            .import_agent(&a.agent, dry_run)
            .await
            .map_err(|e| anyhow::anyhow!("agent {} of org {org_id}: {e}", a.agent.id))?;
        record("agent", &a.agent.id, r, report);
    }
    for s in sessions {
        let r = svc
            .import_session(&s.session, dry_run)
            .await
            .map_err(|e| anyhow::anyhow!("session {} of org {org_id}: {e}", s.session.id))?;
        record("session", &s.session.id, r, report);
    }
    Ok(done(org_id, report, agents_before, sessions_before))
}

/// The counts since `agents` and `sessions` (imported, skipped) were taken.
fn done(
    org_id: &str,
    report: &ImportReport,
    agents: (u64, u64),
    sessions: (u64, u64),
) -> pb::RecordLegacyImportRequest {
    let delta = |now: u64, then: u64| u32::try_from(now - then).unwrap_or(u32::MAX);
    let (a, s) = (&report.counts["agent"], &report.counts["session"]);
    pb::RecordLegacyImportRequest {
        org_id: org_id.to_owned(),
        agents_imported: delta(a.imported, agents.0),
        sessions_imported: delta(s.imported, sessions.0),
        agents_skipped: delta(a.skipped, agents.1),
        sessions_skipped: delta(s.skipped, sessions.1),
    }
}
