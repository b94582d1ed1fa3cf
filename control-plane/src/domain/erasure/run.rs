//! Running one erasure job against the org's Arc, and the job's state
//! machine ([`settle`]: what a run's [`Outcome`] makes of the job, a pure
//! function of the job, the outcome and "now").

use super::ErasureSettings;
use super::arc::{self, ArcFailure, ArcTarget};
use super::embedded;
use super::receipt::{ErasureReport, ErasureTarget, TableVerification};
use super::scope::{is_superseded, is_whole_org};
use crate::auth::AdminActor;
use crate::domain::{ARC_KEY_PURPOSE, AuditOutcome, ControlPlane};
use crate::store::{ErasureJobRow, PinnedTarget};
use memtrace_common::backoff::{ceiling, jitter};
use memtrace_common::clock::now_ms;
use memtrace_common::envelope::Binding;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Detail of a job whose org has no Arc (single node, embedded store).
pub(crate) const NO_ARC: &str =
    "the org has no Arc binding: embedded store erasure not implemented yet";

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every covered row is gone and verified.
    Done,
    /// Arc (or the setup) refuses until an operator acts: blocked.
    Blocked(String),
    /// Arc unreachable or 5xx: retried soon, with backoff.
    Retry(String),
    /// Anything else, or rows still found after every round: failed,
    /// retried later with a longer backoff.
    Failed(String),
    /// The control plane is stopping: the claim is released, the job is
    /// resumed at the next start (or by another replica).
    Stopped,
}

impl From<ArcFailure> for Outcome {
    fn from(failure: ArcFailure) -> Self {
        match failure {
            ArcFailure::Refused(d) => Self::Blocked(d),
            ArcFailure::Transient(d) => Self::Retry(d),
            ArcFailure::Failed(d) => Self::Failed(d),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The job after a run that ended with `outcome` at `now` (the claim is
/// released in every case).
pub(crate) fn settle(
    job: &mut ErasureJobRow,
    outcome: &Outcome,
    now: i64,
    settings: &ErasureSettings,
) {
    let failures = u32::try_from(job.attempts.max(1)).unwrap_or(u32::MAX);
    job.claimed_by = None;
    job.claimed_until = None;
    match outcome {
        Outcome::Done => {
            job.state = "done".into();
            job.detail = String::new();
            job.next_attempt_at = now;
            job.finished_at = Some(now);
            // the sealed key is kept only while it is needed
            job.pinned = None;
        }
        Outcome::Blocked(detail) => {
            job.state = "blocked".into();
            job.detail = detail.clone();
            job.next_attempt_at = now.saturating_add(ms(settings.blocked_retry));
        }
        Outcome::Retry(detail) => {
            job.state = "running".into();
            job.detail = format!("retrying: {detail}");
            let delay = jitter(ceiling(
                Duration::from_secs(2),
                Duration::from_secs(300),
                failures,
            ));
            job.next_attempt_at = now.saturating_add(ms(delay));
        }
        Outcome::Failed(detail) => {
            job.state = "failed".into();
            job.detail = detail.clone();
            let delay = jitter(ceiling(
                Duration::from_secs(30),
                Duration::from_secs(3600),
                failures,
            ));
            job.next_attempt_at = now.saturating_add(ms(delay));
        }
        Outcome::Stopped => {
            job.next_attempt_at = now;
        }
    }
}

/// The tables a job erases from and the rows it covers in each.
pub(crate) fn plan(
    job: &ErasureJobRow,
    measurement: &str,
) -> Result<Vec<(String, String)>, String> {
    if is_whole_org(&job.scope_json) {
        let where_ = arc::where_clause(&job.org_id, None);
        return Ok([
            measurement,
            VERSIONS_TABLE,
            "agents",
            "sessions",
            super::deliver::RECEIPTS_TABLE,
        ]
        .into_iter()
        .map(|t| (t.to_owned(), where_.clone()))
        .collect());
    }
    let predicate = job.memory_predicate.trim();
    if predicate.is_empty() {
        return Err("the erasure has no memory predicate".into());
    }
    if !arc::contained(predicate) {
        return Err(format!(
            "memory predicate refused: it would not stay within the org filter: {predicate}"
        ));
    }
    let where_ = arc::where_clause(&job.org_id, Some(predicate));
    // a delete erases the memories' superseded versions too; an update's
    // superseded rows leave the memory table only (history keeps them)
    if is_superseded(&job.scope_json) {
        return Ok(vec![(measurement.to_owned(), where_)]);
    }
    Ok(vec![
        (measurement.to_owned(), where_.clone()),
        (VERSIONS_TABLE.to_owned(), where_),
    ])
}

/// On Arc, the rows of the original memtrace a job's ids cover (derived
/// `lg_…` ids): a delete of their own, written on the columns the
/// original's Parquet files have — the job's `id IN (…)` predicate names a
/// column those files lack, and Arc's delete rewrites file by file.
pub(crate) fn legacy_rows(job: &ErasureJobRow, measurement: &str) -> Option<(String, String)> {
    let ids = super::scope::legacy_ids(&job.scope_json);
    if ids.is_empty() {
        return None;
    }
    let lits: Vec<String> = ids.iter().map(|id| arc::quote(id)).collect();
    let predicate = format!(
        "{} IN ({}) AND epoch_us(time) <= {}",
        memtrace_common::legacy::arc_legacy_id(""),
        lits.join(", "),
        job.as_of_micros
    );
    Some((
        measurement.to_owned(),
        arc::where_clause(&job.org_id, Some(&predicate)),
    ))
}

/// The verification of `tables`' deletes: one count per table, the wheres
/// of a table's deletes joined with OR (a count reads every file at once,
/// so it may name columns some files lack).
pub(crate) fn checks(tables: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (table, where_) in tables {
        match out.iter_mut().find(|(t, _)| t == table) {
            Some((_, w)) => *w = format!("({w}) OR ({where_})"),
            None => out.push((table.clone(), where_.clone())),
        }
    }
    out
}

/// The table of superseded memory versions in an org's store.
const VERSIONS_TABLE: &str = "memory_versions";

fn counts(json: Option<&str>) -> BTreeMap<String, u64> {
    json.and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

impl ControlPlane {
    /// Claims at most `limit` due jobs for this replica.
    pub(crate) async fn claim_due_erasures(&self, limit: usize) -> Vec<ErasureJobRow> {
        let limit32 = u32::try_from(limit).unwrap_or(u32::MAX);
        let due = match self.store.due_erasures(now_ms(), limit32).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "cannot read due erasure jobs; retrying");
                return Vec::new();
            }
        };
        let mut claimed = Vec::new();
        for job in due {
            let now = now_ms();
            match self
                .store
                .claim_erasure(&job.id, &self.erasure.owner, now, self.claim_until(now))
                .await
            {
                Ok(Some(job)) => claimed.push(job),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(erasure_id = %job.id, %error, "cannot claim erasure job");
                }
            }
        }
        claimed
    }

    fn claim_until(&self, now: i64) -> i64 {
        let s = &self.erasure.settings;
        now.saturating_add(ms(s.recheck_delay + s.claim_ttl))
    }

    /// Extends this replica's claim on `job`; false when it was lost.
    async fn renew_claim(&self, job: &mut ErasureJobRow) -> bool {
        let now = now_ms();
        let until = self.claim_until(now);
        match self
            .store
            .claim_erasure(&job.id, &self.erasure.owner, now, until)
            .await
        {
            Ok(Some(_)) => {
                job.claimed_until = Some(until);
                true
            }
            _ => false,
        }
    }

    /// Saves progress; false (logged) when the claim was lost.
    async fn save(&self, job: &ErasureJobRow) -> bool {
        match self.store.save_erasure(job, &self.erasure.owner).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(erasure_id = %job.id, "erasure job claimed by another replica; leaving it");
                false
            }
            Err(error) => {
                tracing::warn!(erasure_id = %job.id, %error, "cannot save erasure job progress");
                false
            }
        }
    }

    pub(crate) async fn run_erasure(&self, mut job: ErasureJobRow, stop: &CancellationToken) {
        job.attempts += 1;
        let before = job.state.clone();
        let outcome = self.erase(&mut job, stop).await;
        let now = now_ms();
        let mut outcome = outcome;
        if outcome == Outcome::Done
            && let Err(error) = self.seal_receipt(&mut job, now).await
        {
            outcome = Outcome::Failed(error);
        }
        if outcome == Outcome::Done
            && let Err(undelivered) = self.deliver_receipt(&job).await
        {
            outcome = undelivered;
        }
        settle(&mut job, &outcome, now, &self.erasure.settings);
        match &outcome {
            Outcome::Done => self.erasure.metrics.outcome("done"),
            Outcome::Blocked(_) => self.erasure.metrics.outcome("blocked"),
            Outcome::Retry(_) => self.erasure.metrics.outcome("retry"),
            Outcome::Failed(_) => self.erasure.metrics.outcome("failed"),
            Outcome::Stopped => {}
        }
        if !self.save(&job).await {
            return;
        }
        match &outcome {
            Outcome::Done => {
                tracing::info!(erasure_id = %job.id, org_id = %job.org_id, rows_removed = job.rows_removed_json.as_deref().unwrap_or("{}"), "erasure done");
                let details = json!({
                    "org_id": job.org_id,
                    "scope": serde_json::from_str::<serde_json::Value>(&job.scope_json).unwrap_or_default(),
                    "requested_by": job.requested_by,
                    "target": serde_json::from_str::<serde_json::Value>(job.target_json.as_deref().unwrap_or("null")).unwrap_or_default(),
                    "rows_removed": serde_json::from_str::<serde_json::Value>(job.rows_removed_json.as_deref().unwrap_or("{}")).unwrap_or_default(),
                });
                if let Err(error) = self
                    .record_audit(
                        &AdminActor::system(),
                        "erasure.done",
                        &job.id,
                        AuditOutcome::Ok,
                        details,
                    )
                    .await
                {
                    tracing::error!(erasure_id = %job.id, %error, "erasure done but its audit entry failed");
                }
            }
            Outcome::Blocked(detail) => {
                tracing::warn!(erasure_id = %job.id, org_id = %job.org_id, %detail, "erasure blocked; retried later");
                if before != "blocked" {
                    let details = json!({"org_id": job.org_id, "detail": detail});
                    if let Err(error) = self
                        .record_audit(
                            &AdminActor::system(),
                            "erasure.blocked",
                            &job.id,
                            AuditOutcome::Failed,
                            details,
                        )
                        .await
                    {
                        tracing::error!(erasure_id = %job.id, %error, "erasure audit entry failed");
                    }
                }
            }
            Outcome::Retry(detail) => {
                tracing::warn!(erasure_id = %job.id, %detail, "erasure interrupted; retrying with backoff");
            }
            Outcome::Failed(detail) => {
                tracing::error!(erasure_id = %job.id, org_id = %job.org_id, %detail, "erasure failed; retried later");
            }
            Outcome::Stopped => {
                tracing::info!(erasure_id = %job.id, "erasure paused by shutdown; resumed at next start");
                return;
            }
        }
        if let Err(error) = self.publish_erasure(&job).await {
            tracing::warn!(erasure_id = %job.id, %error, "erasure record not updated; the next pass retries");
        }
    }

    /// Where the job runs: its pinned binding (org deleted), else the org's
    /// binding; `None` when the org has no Arc.
    pub(super) async fn erasure_target(
        &self,
        job: &ErasureJobRow,
    ) -> Result<Option<ArcTarget>, Outcome> {
        let pinned = match &job.pinned {
            Some(pinned) => pinned.clone(),
            None => match self.store.get_arc_binding(&job.org_id).await {
                Ok(Some(b)) => PinnedTarget {
                    binding_id: b.id,
                    url: b.url,
                    database: b.database,
                    measurement: b.measurement,
                    api_key_envelope: b.api_key_envelope,
                },
                Ok(None) => return Ok(None),
                Err(error) => return Err(Outcome::Retry(format!("database: {error}"))),
            },
        };
        let api_key = match &pinned.api_key_envelope {
            None => None,
            Some(envelope) => {
                let plain = self
                    .keyring
                    .open(
                        Binding {
                            org_id: &job.org_id,
                            record_id: &pinned.binding_id,
                            purpose: ARC_KEY_PURPOSE,
                        },
                        envelope,
                    )
                    .map_err(|e| {
                        Outcome::Blocked(format!(
                            "the Arc API key cannot be opened ({e}); configure the master key that sealed it"
                        ))
                    })?;
                let text = String::from_utf8(plain.to_vec())
                    .map_err(|_| Outcome::Blocked("the stored Arc API key is not UTF-8".into()))?;
                Some(zeroize::Zeroizing::new(text))
            }
        };
        Ok(Some(ArcTarget {
            url: pinned.url,
            database: pinned.database,
            measurement: pinned.measurement,
            api_key,
        }))
    }

    /// Marks `job` running against `shown` (saved, and published on its
    /// record); false when the claim was lost.
    async fn start_run(&self, job: &mut ErasureJobRow, shown: &ErasureTarget) -> bool {
        job.target_json = serde_json::to_string(shown).ok();
        job.started_at.get_or_insert_with(now_ms);
        if job.state != "running" {
            job.state = "running".into();
            job.detail = String::new();
        }
        if !self.save(job).await {
            return false;
        }
        if let Err(error) = self.publish_erasure(job).await {
            tracing::warn!(erasure_id = %job.id, %error, "erasure record not updated; the next pass retries");
        }
        true
    }

    /// The deletes and the verification; progress saved on `job`.
    async fn erase(&self, job: &mut ErasureJobRow, stop: &CancellationToken) -> Outcome {
        let target = match self.erasure_target(job).await {
            Ok(Some(target)) => target,
            Ok(None) => {
                let dir = self.erasure.settings.embedded_dir.clone();
                return match dir.filter(|d| d.is_dir()) {
                    Some(dir) => self.erase_embedded(job, &dir).await,
                    None => Outcome::Blocked(NO_ARC.into()),
                };
            }
            Err(outcome) => return outcome,
        };
        let mut tables = match plan(job, &target.measurement) {
            Ok(tables) => tables,
            Err(detail) => return Outcome::Failed(detail),
        };
        tables.extend(legacy_rows(job, &target.measurement));
        let shown = ErasureTarget {
            host: arc::host_of(&target.url),
            database: target.database.clone(),
            measurement: target.measurement.clone(),
        };
        if !self.start_run(job, &shown).await {
            return Outcome::Stopped;
        }
        let http = &self.erasure.http;
        let mut removed = counts(job.rows_removed_json.as_deref());
        let rounds = self.erasure.settings.max_rounds.max(1);
        let mut remaining_total = 0;
        for _round in 0..rounds {
            for pass in 0..2 {
                if pass == 1 {
                    if !self.renew_claim(job).await {
                        return Outcome::Stopped;
                    }
                    tokio::select! {
                        () = stop.cancelled() => return Outcome::Stopped,
                        () = tokio::time::sleep(self.erasure.settings.recheck_delay) => {}
                    }
                }
                for (table, where_) in &tables {
                    match arc::delete(http, &target, table, where_).await {
                        Ok(n) => *removed.entry(table.clone()).or_default() += n,
                        Err(failure) => {
                            job.rows_removed_json = serde_json::to_string(&removed).ok();
                            return failure.into();
                        }
                    }
                }
                job.rows_removed_json = serde_json::to_string(&removed).ok();
                if !self.save(job).await {
                    return Outcome::Stopped;
                }
            }
            let mut verification = BTreeMap::new();
            remaining_total = 0;
            for (table, where_) in &checks(&tables) {
                let sql = arc::count_sql(&target.database, table, where_);
                match arc::count(http, &target, &sql).await {
                    Ok(n) => {
                        remaining_total += n;
                        verification.insert(
                            table.clone(),
                            TableVerification {
                                query: sql,
                                remaining: n,
                            },
                        );
                    }
                    Err(failure) => return failure.into(),
                }
            }
            job.verification_json = serde_json::to_string(&verification).ok();
            if !self.renew_claim(job).await || !self.save(job).await {
                return Outcome::Stopped;
            }
            if remaining_total == 0 {
                return Outcome::Done;
            }
        }
        Outcome::Failed(format!(
            "{remaining_total} covered rows still found after {rounds} delete rounds"
        ))
    }

    /// [`Self::erase`] in the embedded store under `dir`.
    async fn erase_embedded(&self, job: &mut ErasureJobRow, dir: &std::path::Path) -> Outcome {
        let measurement = self.erasure.settings.embedded_measurement.clone();
        let tables = match plan(job, &measurement) {
            Ok(tables) => tables,
            Err(detail) => return Outcome::Failed(detail),
        };
        let file = embedded::org_file(dir, &job.org_id);
        let shown = ErasureTarget {
            host: "embedded".into(),
            database: file.display().to_string(),
            measurement,
        };
        if !self.start_run(job, &shown).await {
            return Outcome::Stopped;
        }
        let mut removed = counts(job.rows_removed_json.as_deref());
        let rounds = self.erasure.settings.max_rounds.max(1);
        let mut remaining = 0;
        for _round in 0..rounds {
            let done = match embedded::erase(&file, &tables).await {
                Ok(done) => done,
                Err(detail) => return Outcome::Retry(detail),
            };
            for (table, n) in done.removed {
                *removed.entry(table).or_default() += n;
            }
            remaining = done.verification.values().map(|v| v.remaining).sum();
            job.rows_removed_json = serde_json::to_string(&removed).ok();
            job.verification_json = serde_json::to_string(&done.verification).ok();
            if !self.renew_claim(job).await || !self.save(job).await {
                return Outcome::Stopped;
            }
            if remaining == 0 {
                // an org's deletion leaves no file of it behind
                if is_whole_org(&job.scope_json)
                    && let Err(detail) = embedded::remove_files(&file)
                {
                    return Outcome::Retry(detail);
                }
                return Outcome::Done;
            }
        }
        Outcome::Failed(format!(
            "{remaining} covered rows still found after {rounds} deletes"
        ))
    }

    /// Builds and signs the receipt of a done job.
    async fn seal_receipt(&self, job: &mut ErasureJobRow, finished_at: i64) -> Result<(), String> {
        let target: ErasureTarget = job
            .target_json
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .ok_or("the job has no target")?;
        let verification: BTreeMap<String, TableVerification> = job
            .verification_json
            .as_deref()
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        let report = ErasureReport {
            erasure_id: job.id.clone(),
            org_id: job.org_id.clone(),
            target,
            scope: serde_json::from_str(&job.scope_json).unwrap_or_default(),
            requested_by: job.requested_by.clone(),
            requested_at_micros: job.requested_at_micros,
            started_at_ms: job.started_at.unwrap_or(finished_at),
            finished_at_ms: finished_at,
            rows_removed: counts(job.rows_removed_json.as_deref()),
            verification,
        };
        let receipt = self
            .erasure
            .signer
            .sign(&report)
            .await
            .map_err(|e| e.to_string())?;
        job.receipt_json = Some(receipt.to_string());
        Ok(())
    }
}
