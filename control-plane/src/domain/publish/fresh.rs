//! Publishing an admin change when several replicas share the database and
//! the bus. The publication lock is per process, so publishing the row a
//! change wrote is not enough: another replica may commit a newer change of
//! the same record and publish it first, and the older row published after
//! it would stand until the next full pass — a revoked key usable again,
//! a setting back to a value the database no longer holds.
//!
//! So a publication names the keys a change touched and, like a
//! reconciliation pass (`reconcile`), reads each key's revision on the bus
//! first, then the key's current state from the database, and writes only
//! if the key is unchanged on the bus since that read. A write that lost
//! its guard was overtaken by another publication, which read the database
//! later; it starts over and publishes what the database holds now.

use crate::domain::ControlPlane;
use crate::domain::config::LOG_LEVEL;
use crate::error::{ControlPlaneError, Result};
use memtrace_common::bus::{Guard, Op};
use memtrace_common::state::StateKey;
use std::collections::HashMap;

/// Attempts before a publication that keeps losing its guards is left to
/// the reconciler.
const ATTEMPTS: usize = 5;

/// Up to this many keys, a publication reads each key from the bus; past
/// it, the published prefixes its keys are under.
const PER_KEY_READS: usize = 8;

/// What one key should hold according to the database.
enum Desired {
    Put(Op),
    Delete,
    /// Leave it as it is (a route whose key cannot be opened, a sensitive
    /// setting, a key the control plane does not publish).
    Keep,
}

impl ControlPlane {
    /// Publishes the database's current state of `keys` (see the module
    /// docs) under the publication lock; the revision, or `None` when
    /// nothing was written or the publication was left to the reconciler.
    pub(crate) async fn publish_fresh(&self, keys: &[String]) -> Option<i64> {
        let _guard = self.publisher.lock().await;
        self.publish_fresh_locked(keys).await
    }

    /// [`Self::publish_fresh`] with the publication lock held.
    pub(crate) async fn publish_fresh_locked(&self, keys: &[String]) -> Option<i64> {
        if keys.is_empty() {
            return None;
        }
        for attempt in 1..=ATTEMPTS {
            match self.publish_fresh_once(keys).await {
                Ok(Some(revision)) => {
                    self.publisher.metrics().published(true);
                    return revision;
                }
                Ok(None) => {
                    tracing::debug!(
                        attempt,
                        "publication overtaken by another replica's; reading again"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, keys = keys.len(), "publication deferred; the reconciler will republish");
                    self.publisher.defer();
                    self.publisher.metrics().published(false);
                    return None;
                }
            }
        }
        tracing::warn!(
            keys = keys.len(),
            "publication kept losing to other replicas' publications; the reconciler will republish"
        );
        self.publisher.defer();
        self.publisher.metrics().published(false);
        None
    }

    /// One try: `Ok(None)` when a guard failed.
    async fn publish_fresh_once(&self, keys: &[String]) -> Result<Option<Option<i64>>> {
        // the bus before the database (module docs)
        let revisions = self.bus_revisions(keys).await?;
        let guards = keys.iter().map(|key| Guard {
            key: key.clone(),
            mod_revision: revisions.get(key).copied().unwrap_or(0),
        });
        let mut ops = Vec::with_capacity(keys.len());
        for guard in guards {
            let op = match self.desired_at(&guard.key).await? {
                Desired::Put(op) => op,
                Desired::Delete => Op::Delete {
                    key: guard.key.clone(),
                },
                Desired::Keep => continue,
            };
            ops.push((guard, op));
        }
        if ops.is_empty() {
            return Ok(Some(None));
        }
        self.publisher
            .try_apply_guarded_locked(ops)
            .await
            .map_err(|e| {
                ControlPlaneError::Unavailable(format!("state bus refused the publication: {e}"))
            })
    }

    /// The bus's mod_revision of each of `keys` that exists: one read per
    /// key for a few, one read per published prefix for many (an org's
    /// deletion touches all its keys).
    async fn bus_revisions(&self, keys: &[String]) -> Result<HashMap<String, i64>> {
        let reads: Vec<String> = if keys.len() <= PER_KEY_READS {
            keys.to_vec()
        } else {
            self.state_keys()
                .published_prefixes()
                .into_iter()
                .filter(|prefix| keys.iter().any(|k| k.starts_with(prefix.as_str())))
                .collect()
        };
        let mut revisions = HashMap::new();
        for read in reads {
            let loaded = self
                .publisher
                .bus()
                .load(&read)
                .await
                .map_err(|e| self.publisher.unreadable(e))?;
            revisions.extend(loaded.kvs.into_iter().map(|kv| (kv.key, kv.mod_revision)));
        }
        Ok(revisions)
    }

    /// What `key` should hold according to the database now.
    async fn desired_at(&self, key: &str) -> Result<Desired> {
        let Some(parsed) = self.state_keys().parse(key) else {
            return Ok(Desired::Keep);
        };
        let op = match parsed {
            StateKey::ApiKey { key_id } => self
                .store
                .get_api_key(&key_id)
                .await?
                .map(|row| self.api_key_put(&row)),
            StateKey::Org { org_id } => match self.store.get_org(&org_id).await? {
                Some(summary) => Some(self.org_put(&summary.org)),
                None => self
                    .store
                    .list_tombstones()
                    .await?
                    .iter()
                    .find(|t| t.org_id == org_id)
                    .map(|t| self.tombstone_put(t)),
            },
            StateKey::ArcRoute { org_id } => match self.store.get_arc_binding(&org_id).await? {
                None => None,
                Some(row) => match self.arc_route_put(&row) {
                    Ok(op) => Some(op),
                    Err(error) => {
                        tracing::error!(%org_id, %error, "arc route not published: its key cannot be opened");
                        return Ok(Desired::Keep);
                    }
                },
            },
            StateKey::TokenKey { key_id } => match self.token_key_puts().await {
                Ok(mut ops) => {
                    ops.extend(self.fleet_token_key_puts());
                    let wanted = self.state_keys().token_key(&key_id);
                    ops.into_iter()
                        .find(|op| matches!(op, Op::Put { key, .. } if *key == wanted))
                }
                Err(error) => {
                    tracing::error!(%key_id, %error, "token key not published: it cannot be authenticated");
                    return Ok(Desired::Keep);
                }
            },
            StateKey::ReceiptKey { key_id } => match self.receipt_key_puts().await {
                Ok(ops) => {
                    let wanted = self.state_keys().receipt_key(&key_id);
                    ops.into_iter()
                        .find(|op| matches!(op, Op::Put { key, .. } if *key == wanted))
                }
                Err(error) => {
                    tracing::error!(%key_id, %error, "receipt key not published: it cannot be authenticated");
                    return Ok(Desired::Keep);
                }
            },
            StateKey::GlobalSetting { key } => return self.desired_setting(&key, "").await,
            StateKey::OrgSetting { org_id, key } => {
                return self.desired_setting(&key, &org_id).await;
            }
            StateKey::Worker { .. }
            | StateKey::Erasure { .. }
            | StateKey::PublishedMarker
            | StateKey::ReconciledMarker => {
                return Ok(Desired::Keep);
            }
        };
        Ok(op.map_or(Desired::Delete, Desired::Put))
    }

    async fn desired_setting(&self, key: &str, org_id: &str) -> Result<Desired> {
        let row = self.store.get_setting(key, org_id).await?;
        if key == LOG_LEVEL && org_id.is_empty() {
            crate::domain::config::apply_log_level(row.as_slice());
        }
        Ok(match row {
            None => Desired::Delete,
            Some(row) => self.setting_put(&row).map_or(Desired::Keep, Desired::Put),
        })
    }
}
