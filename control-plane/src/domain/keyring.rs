//! Master-key rotation: rewrap every data key still wrapped by an older
//! master key with the active one, record by record, while serving (Arc
//! bindings, sensitive settings, and the Arc keys unfinished erasure jobs
//! keep for deleted orgs).

use super::{ARC_KEY_PURPOSE, ControlPlane};
use crate::auth::AdminActor;
use crate::error::Result;
use crate::store::{ErasureFilter, ErasureJobRow};
use memtrace_common::clock::now_ms;
use memtrace_common::envelope::{Binding, envelope_kek_id};
use serde_json::json;
use std::collections::BTreeMap;

/// How many stored envelopes one master key wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekStatus {
    pub kek_id: String,
    pub active: bool,
    pub loaded: bool,
    pub records: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub active_kek_id: String,
    pub rewrapped: u64,
    pub already_current: u64,
}

impl ControlPlane {
    /// The sealed Arc keys unfinished erasure jobs hold for deleted orgs'
    /// bindings: (job, binding id, envelope).
    async fn pinned_erasure_keys(&self) -> Result<Vec<(ErasureJobRow, String, Vec<u8>)>> {
        let mut keys = Vec::new();
        for state in ["requested", "running", "blocked", "failed"] {
            let filter = ErasureFilter {
                org_id: None,
                state: Some(state.into()),
            };
            for job in self.store.list_erasures(&filter).await? {
                if let Some(pinned) = &job.pinned
                    && let Some(envelope) = pinned.api_key_envelope.clone()
                {
                    let binding_id = pinned.binding_id.clone();
                    keys.push((job, binding_id, envelope));
                }
            }
        }
        Ok(keys)
    }

    pub async fn keyring_status(&self) -> Result<Vec<KekStatus>> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for row in self.store.list_arc_bindings().await? {
            if let Some(envelope) = &row.api_key_envelope {
                *counts.entry(envelope_kek_id(envelope)?).or_default() += 1;
            }
        }
        for keys in [self.receipt_signer().keys(), self.token_keys()] {
            for kek_id in keys.kek_ids().await? {
                *counts.entry(kek_id).or_default() += 1;
            }
        }
        for (_, _, envelope) in self.pinned_erasure_keys().await? {
            *counts.entry(envelope_kek_id(&envelope)?).or_default() += 1;
        }
        for kek_id in self.sealed_setting_kek_ids().await? {
            *counts.entry(kek_id).or_default() += 1;
        }
        let active = self.keyring.active_kek_id();
        let mut status: Vec<KekStatus> = self
            .keyring
            .kek_ids()
            .into_iter()
            .map(|kek_id| KekStatus {
                active: kek_id == active,
                loaded: true,
                records: counts.remove(&kek_id).unwrap_or(0),
                kek_id,
            })
            .collect();
        status.extend(counts.into_iter().map(|(kek_id, records)| KekStatus {
            kek_id,
            active: false,
            loaded: false,
            records,
        }));
        Ok(status)
    }

    /// Rewraps data keys to the active master key. A record changed
    /// concurrently is skipped by the compare-and-swap and counted on the next run.
    pub async fn rotate_master(&self, actor: &AdminActor) -> Result<RotationReport> {
        let mut report = RotationReport {
            active_kek_id: self.keyring.active_kek_id(),
            rewrapped: 0,
            already_current: 0,
        };
        for row in self.store.list_arc_bindings().await? {
            let Some(envelope) = &row.api_key_envelope else {
                continue;
            };
            let binding = Binding {
                org_id: &row.org_id,
                record_id: &row.id,
                purpose: ARC_KEY_PURPOSE,
            };
            match self.keyring.rewrap(binding, envelope)? {
                None => report.already_current += 1,
                Some(new) => {
                    if self
                        .store
                        .swap_arc_envelope(&row.id, envelope, &new, now_ms())
                        .await?
                    {
                        report.rewrapped += 1;
                    }
                }
            }
        }
        for (job, binding_id, envelope) in self.pinned_erasure_keys().await? {
            let binding = Binding {
                org_id: &job.org_id,
                record_id: &binding_id,
                purpose: ARC_KEY_PURPOSE,
            };
            match self.keyring.rewrap(binding, &envelope)? {
                None => report.already_current += 1,
                Some(new) => {
                    if self
                        .store
                        .swap_erasure_envelope(&job.id, &envelope, &new)
                        .await?
                    {
                        report.rewrapped += 1;
                    }
                }
            }
        }
        let (settings_rewrapped, settings_current) = self.rewrap_sensitive_settings().await?;
        report.rewrapped += settings_rewrapped;
        report.already_current += settings_current;
        for keys in [self.receipt_signer().keys(), self.token_keys()] {
            let (rewrapped, current) = keys.rewrap().await?;
            report.rewrapped += rewrapped;
            report.already_current += current;
        }
        tracing::info!(
            active_kek_id = %report.active_kek_id,
            rewrapped = report.rewrapped,
            already_current = report.already_current,
            "master key rotation finished"
        );
        self.audit_change(
            actor,
            "master_key.rotate",
            &report.active_kek_id,
            json!({"rewrapped": report.rewrapped, "already_current": report.already_current}),
        )
        .await;
        Ok(report)
    }
}
