//! The admin audit trail: who changed what, when, with which outcome —
//! config changes, org/key/arc changes, and refused attempts. Append-only and
//! chained by the store under a MAC key derived from the active master key
//! (see `store::audit_chain` for the encodings); `verify_audit` walks the
//! chain with the keys of every master key held, which is why verification
//! happens here and not in the CLI. A change's entry is appended in the
//! change's own transaction (the store's `AuditWith`), so a change is never
//! committed without its entry. Entries hold metadata only: the actor is a
//! credential fingerprint, and details are scrubbed of anything that looks
//! like a secret before they are written.

pub mod monitor;

use super::ControlPlane;
use crate::auth::AdminActor;
use crate::error::{ControlPlaneError, Result};
use crate::store::{AuditEntry, AuditFilter, AuditRecord, ChainBreak, ChainVerifier, Unverifiable};
use memtrace_common::clock::now_ms;
use memtrace_common::envelope::AuditKey;
use serde_json::Value;

/// The actor of changes the control plane makes by itself (seeding).
pub const SYSTEM_ACTOR: &str = "system";

/// Entries returned when a listing names no limit, and the most it may ask.
pub const DEFAULT_AUDIT_LIMIT: u32 = 50;
pub const MAX_AUDIT_LIMIT: u32 = 1000;

/// Entries read per page while verifying.
const VERIFY_PAGE: u32 = 1000;

/// What became of an audited attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    /// The change was applied.
    Ok,
    /// The change was refused by policy (a locked setting, a missing permission).
    Denied,
    /// The change was attempted and failed.
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

impl AdminActor {
    /// The control plane itself.
    pub fn system() -> Self {
        Self {
            fingerprint: SYSTEM_ACTOR.to_owned(),
        }
    }
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked before the end or the break.
    pub entries: u64,
    pub head_seq: i64,
    /// Hex of the head hash; operators may record it to detect a rewritten
    /// chain later.
    pub head_hash: String,
    /// Where the chain broke (was tampered with), if it did.
    pub broken: Option<ChainBreak>,
    /// Entries 1..=this are unkeyed (written before the chain was keyed)
    /// and were checked with the weaker SHA-256 rule, which anyone who can
    /// write the database can recompute.
    pub unkeyed_entries: u64,
    /// Keyed entries whose master key this control plane does not hold:
    /// linked into the chain, their own content unchecked.
    pub unverifiable: Vec<Unverifiable>,
}

impl VerifyReport {
    /// Every entry checked, and none broken.
    pub fn ok(&self) -> bool {
        self.broken.is_none() && self.unverifiable.is_empty()
    }
}

/// Names of detail fields whose values are never written.
const SECRET_FIELDS: &[&str] = &[
    "secret",
    "token",
    "password",
    "api_key",
    "apikey",
    "credential",
    "master_key",
    "private",
];

/// Replaces anything that looks like a secret with `***`: values of fields
/// named like secrets, and strings shaped like memtrace credentials.
fn scrub(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, field) in map.iter_mut() {
                let lower = name.to_ascii_lowercase();
                if SECRET_FIELDS.iter().any(|s| lower.contains(s)) && !lower.ends_with("_masked") {
                    *field = Value::String("***".into());
                } else {
                    scrub(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::String(text) if text.starts_with("mtk_") || text.starts_with("mta_") => {
            *text = "***".into();
        }
        _ => {}
    }
}

impl ControlPlane {
    /// Appends one entry to the audit trail. `action` is dotted
    /// (`org.create`, `key.revoke`, `arc.bind`), `target` the id it concerns;
    /// `details` is a JSON object of metadata (secrets are scrubbed).
    pub async fn record_audit(
        &self,
        actor: &AdminActor,
        action: &str,
        target: &str,
        outcome: AuditOutcome,
        details: Value,
    ) -> Result<()> {
        self.append_audit_entry(actor, action, target, outcome, details)
            .await
            .map(|_| ())
    }

    /// The key new audit entries are chained under: the active master
    /// key's audit key.
    pub(crate) fn audit_key(&self) -> AuditKey {
        self.keyring.audit_key()
    }

    /// Records the summary of changes that each committed in their own
    /// transaction (a master-key rotation rewraps record by record), so no
    /// one transaction could carry the entry. A failed append cannot undo
    /// them: it is logged as an error (with the action and target) instead
    /// of failing the caller's request. A change of one org, key, binding,
    /// admin token or setting appends its entry in its own transaction
    /// instead.
    pub(crate) async fn audit_change(
        &self,
        actor: &AdminActor,
        action: &str,
        target: &str,
        details: Value,
    ) {
        if let Err(error) = self
            .record_audit(actor, action, target, AuditOutcome::Ok, details)
            .await
        {
            tracing::error!(%error, action, target, "audit entry could not be appended for a committed change");
        }
    }

    /// Like [`Self::record_audit`], returning the chained entry.
    pub(crate) async fn append_audit_entry(
        &self,
        actor: &AdminActor,
        action: &str,
        target: &str,
        outcome: AuditOutcome,
        details: Value,
    ) -> Result<AuditEntry> {
        let record = audit_record(actor, action, target, outcome, details);
        let entry = self.store.append_audit(&record, &self.audit_key()).await?;
        tracing::debug!(
            seq = entry.seq,
            action,
            target,
            outcome = outcome.as_str(),
            "audit entry appended"
        );
        Ok(entry)
    }

    /// Entries matching `filter`, newest first; the limit is clamped to
    /// 1..=[`MAX_AUDIT_LIMIT`] (0 means [`DEFAULT_AUDIT_LIMIT`]).
    pub async fn list_audit(&self, mut filter: AuditFilter) -> Result<Vec<AuditEntry>> {
        filter.limit = match filter.limit {
            0 => DEFAULT_AUDIT_LIMIT,
            n => n.min(MAX_AUDIT_LIMIT),
        };
        Ok(self.store.list_audit(&filter).await?)
    }

    /// Walks the whole chain from the first entry, checking each entry with
    /// the rule of its version under the master keys held, and checks it
    /// ends at the recorded head. A broken or unverifiable chain is a
    /// report, not an error.
    pub async fn verify_audit(&self) -> Result<VerifyReport> {
        let report = self.walk_audit().await;
        match &report {
            Ok(report) => self.audit_metrics.record(report, now_ms()),
            Err(_) => self.audit_metrics.failed(),
        }
        report
    }

    async fn walk_audit(&self) -> Result<VerifyReport> {
        let head = self.store.audit_head().await?;
        let mut verifier = ChainVerifier::new(&self.keyring);
        let mut after = 0;
        let broken = 'walk: loop {
            let page = self.store.audit_range(after, VERIFY_PAGE).await?;
            let Some(last) = page.last() else {
                break 'walk verifier.finish(&head).err();
            };
            after = last.seq;
            for entry in &page {
                if let Err(error) = verifier.push(entry) {
                    break 'walk Some(error);
                }
            }
        };
        let unverifiable = verifier.unverifiable();
        match &broken {
            Some(error) => {
                tracing::error!(seq = error.seq, reason = %error.reason, "audit chain verification failed")
            }
            None if !unverifiable.is_empty() => {
                for range in &unverifiable {
                    tracing::warn!(kek_id = %range.kek_id, entries = range.entries, first_seq = range.first_seq, last_seq = range.last_seq, "audit entries unverifiable: their master key is not held");
                }
            }
            None => tracing::info!(
                entries = verifier.verified(),
                unkeyed_entries = verifier.unkeyed(),
                head_seq = head.seq,
                "audit chain verified"
            ),
        }
        Ok(VerifyReport {
            entries: verifier.verified(),
            head_seq: head.seq,
            head_hash: hex::encode(&head.hash),
            broken,
            unkeyed_entries: verifier.unkeyed(),
            unverifiable,
        })
    }

    /// One entry by sequence number.
    pub async fn get_audit(&self, seq: i64) -> Result<AuditEntry> {
        self.store
            .get_audit(seq)
            .await?
            .ok_or(ControlPlaneError::AuditEntryNotFound(seq))
    }
}

/// Builds a record stamped now, with scrubbed details.
pub(crate) fn audit_record(
    actor: &AdminActor,
    action: &str,
    target: &str,
    outcome: AuditOutcome,
    mut details: Value,
) -> AuditRecord {
    scrub(&mut details);
    if !details.is_object() {
        details = serde_json::json!({ "value": details });
    }
    AuditRecord {
        at_ms: now_ms(),
        actor: actor.fingerprint.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        outcome: outcome.as_str().to_owned(),
        details_json: details.to_string(),
    }
}

#[cfg(test)]
mod chain_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn details_are_scrubbed_of_secrets() {
        let record = audit_record(
            &AdminActor::system(),
            "arc.bind",
            "org_1",
            AuditOutcome::Ok,
            json!({
                "url": "http://arc:8000",
                "api_key": "arc-secret",
                "api_key_masked": "arc-***cret",
                "nested": [{"Token": "t"}, "mtk_0123", "plain"],
            }),
        );
        let details: Value = serde_json::from_str(&record.details_json).unwrap();
        assert_eq!(details["api_key"], "***");
        assert_eq!(details["api_key_masked"], "arc-***cret");
        assert_eq!(details["nested"], json!([{"Token": "***"}, "***", "plain"]));
        assert_eq!(details["url"], "http://arc:8000");
        assert_eq!(
            (record.actor.as_str(), record.outcome.as_str()),
            ("system", "ok")
        );

        let wrapped = audit_record(
            &AdminActor::system(),
            "x",
            "y",
            AuditOutcome::Denied,
            json!(5),
        );
        assert_eq!(wrapped.details_json, r#"{"value":5}"#);
    }
}
