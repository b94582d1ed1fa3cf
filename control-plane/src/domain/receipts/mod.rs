//! The key that signs erasure receipts, and the signing.
//!
//! The control plane holds a versioned Ed25519 key (`rk_1`, `rk_2`, …) in
//! its database: the public key in clear, the private seed only as an
//! envelope under the master key (purpose [`RECEIPT_KEY_PURPOSE`], bound to
//! the key id), rewrapped by `master-key rotate` like every other envelope.
//! It is never logged, never published to the state bus and never returned
//! by any call. The first key is created on first need (and at start); a
//! rotation adds the next version and retires the older ones, which stay
//! listed so what they signed still verifies. Creations are audited
//! (`receipt_key.create`, `receipt_key.rotate`) in their own transaction,
//! which holds the audit lock: replicas sharing a database converge on one
//! key, the loser of a race re-reads the winner's.
//!
//! Every signature reads the newest key from the database, so a rotation on
//! another replica takes effect at its next receipt. A public key is listed
//! only after its sealed private key opened and matched it, so a row written
//! into the database without the master key is refused, not published.

use crate::auth::AdminActor;
use crate::error::{ControlPlaneError, Result};
use crate::store::{AuditRecord, AuditWith, ReceiptKeyRow, Store, StoreError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use memtrace_common::clock::now_ms;
use memtrace_common::envelope::{Binding, Keyring, envelope_kek_id};
use memtrace_common::receipt::{
    ALGORITHM, PublicKeyInfo, Receipt, ReceiptSigningKey, SignedReceipt, fingerprint,
};
use std::sync::Arc;

/// Purpose bound into the envelope of a receipt signing key.
pub const RECEIPT_KEY_PURPOSE: &str = "receipt.signing_key";

/// How many times a key creation that lost a race re-reads and retries.
const CREATE_ATTEMPTS: usize = 5;

/// Signs erasure receipts with the control plane's newest receipt key.
/// Cheap to clone; obtain it from [`super::ControlPlane::receipt_signer`].
#[derive(Clone)]
pub struct ReceiptSigner {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptSigner").finish_non_exhaustive()
    }
}

fn key_id(version: i64) -> String {
    format!("rk_{version}")
}

fn binding(key_id: &str) -> Binding<'_> {
    Binding {
        org_id: "",
        record_id: key_id,
        purpose: RECEIPT_KEY_PURPOSE,
    }
}

fn timestamp(ms: i64) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_millisecond(ms).ok()
}

fn public_key_info(row: &ReceiptKeyRow) -> PublicKeyInfo {
    PublicKeyInfo {
        key_id: row.key_id.clone(),
        algorithm: ALGORITHM.to_owned(),
        public_key: STANDARD.encode(&row.public_key),
        fingerprint: fingerprint(&row.public_key),
        created_at: timestamp(row.created_at),
        retired_at: row.retired_at.and_then(timestamp),
    }
}

impl ReceiptSigner {
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>) -> Self {
        Self { store, keyring }
    }

    /// Signs `receipt` with the newest key, creating the first key when
    /// there is none. Sets `issued_at` to now.
    pub async fn sign(&self, mut receipt: Receipt) -> Result<SignedReceipt> {
        let key = self.current_key().await?;
        receipt.issued_at = jiff::Timestamp::now();
        key.sign(receipt)
            .map_err(|e| ControlPlaneError::invalid("receipt", e.to_string()))
    }

    /// Every receipt key's public half, oldest first (retired ones
    /// included: they verify what they signed). Each is listed only once
    /// its sealed private key opened under the master keys held and
    /// matched it: the database is not trusted to name the public keys
    /// (a row written without the master key fails the whole listing
    /// rather than being vouched for).
    pub async fn public_keys(&self) -> Result<Vec<PublicKeyInfo>> {
        let rows = self.store.list_receipt_keys().await?;
        for row in &rows {
            self.open(row).map_err(|error| {
                tracing::error!(key_id = %row.key_id, %error, "receipt signing key cannot be authenticated");
                match error {
                    ControlPlaneError::Secret(e) => ControlPlaneError::FailedPrecondition(format!(
                        "receipt signing key {} cannot be authenticated: {e}; configure the master key that sealed it (MEMTRACE_MASTER_KEY or MEMTRACE_MASTER_KEYS_PREVIOUS)",
                        row.key_id
                    )),
                    ControlPlaneError::Store(StoreError::Corrupt(e)) => {
                        ControlPlaneError::FailedPrecondition(format!(
                            "receipt signing key cannot be authenticated: {e}"
                        ))
                    }
                    other => other,
                }
            })?;
        }
        Ok(rows.iter().map(public_key_info).collect())
    }

    /// The newest key's public half, creating the first key when there is
    /// none (run at start, so `erasure keys` lists a key from the outset).
    pub async fn ensure_key(&self) -> Result<PublicKeyInfo> {
        if let Some(row) = self.store.list_receipt_keys().await?.pop() {
            return Ok(public_key_info(&row));
        }
        self.add_key(&AdminActor::system(), false).await
    }

    /// Adds the next key version, which signs from now on; the older ones
    /// are retired and still listed.
    pub async fn rotate(&self, actor: &AdminActor) -> Result<PublicKeyInfo> {
        self.add_key(actor, true).await
    }

    /// The newest key, opened (created first when there is none).
    async fn current_key(&self) -> Result<ReceiptSigningKey> {
        for _ in 0..CREATE_ATTEMPTS {
            if let Some(row) = self.store.list_receipt_keys().await?.pop() {
                return self.open(&row);
            }
            self.add_key(&AdminActor::system(), false).await?;
        }
        Err(ControlPlaneError::Unavailable(
            "no receipt signing key could be created; retry".into(),
        ))
    }

    fn open(&self, row: &ReceiptKeyRow) -> Result<ReceiptSigningKey> {
        let seed = self
            .keyring
            .open(binding(&row.key_id), &row.private_envelope)?;
        let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| {
            StoreError::Corrupt(format!("receipt key {} has no 32-byte seed", row.key_id))
        })?;
        let key = ReceiptSigningKey::from_seed(row.key_id.clone(), seed);
        if key.public_key().as_slice() != row.public_key.as_slice() {
            return Err(StoreError::Corrupt(format!(
                "receipt key {}: the sealed seed does not match the stored public key",
                row.key_id
            ))
            .into());
        }
        Ok(key)
    }

    /// Inserts the next version. With `always` unset (first key), stops as
    /// soon as any key exists; otherwise adds exactly one version above
    /// the highest seen, retrying on a lost race.
    async fn add_key(&self, actor: &AdminActor, always: bool) -> Result<PublicKeyInfo> {
        let action = if always {
            "receipt_key.rotate"
        } else {
            "receipt_key.create"
        };
        for _ in 0..CREATE_ATTEMPTS {
            let rows = self.store.list_receipt_keys().await?;
            if let (false, Some(row)) = (always, rows.last()) {
                return Ok(public_key_info(row));
            }
            let version = rows.last().map_or(1, |row| row.version + 1);
            let id = key_id(version);
            let key = ReceiptSigningKey::generate(id.clone());
            let row = ReceiptKeyRow {
                version,
                key_id: id.clone(),
                public_key: key.public_key().to_vec(),
                private_envelope: self.keyring.seal(binding(&id), key.seed()),
                created_at: now_ms(),
                retired_at: None,
            };
            let audit_key = self.keyring.audit_key();
            let fingerprint = fingerprint(&row.public_key);
            let record = |row: &ReceiptKeyRow| AuditRecord {
                at_ms: now_ms(),
                actor: actor.fingerprint.clone(),
                action: action.to_owned(),
                target: row.key_id.clone(),
                outcome: "ok".into(),
                details_json:
                    serde_json::json!({"fingerprint": fingerprint, "version": row.version})
                        .to_string(),
            };
            if self
                .store
                .insert_receipt_key(&row, AuditWith::new(&audit_key, &record))
                .await?
            {
                tracing::info!(key_id = %row.key_id, %fingerprint, action, "receipt signing key added");
                return Ok(public_key_info(&row));
            }
            // another writer added a version first: re-read
        }
        Err(ControlPlaneError::Unavailable(
            "the receipt signing key changed concurrently on every attempt; retry".into(),
        ))
    }

    /// Master-key fingerprints of the stored private keys (keyring status).
    pub(crate) async fn kek_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for row in self.store.list_receipt_keys().await? {
            ids.push(envelope_kek_id(&row.private_envelope)?);
        }
        Ok(ids)
    }

    /// Rewraps private keys still sealed by an older master key (part of
    /// master-key rotation). Returns `(rewrapped, already_current)`.
    pub(crate) async fn rewrap(&self) -> Result<(u64, u64)> {
        let (mut rewrapped, mut current) = (0, 0);
        for row in self.store.list_receipt_keys().await? {
            match self
                .keyring
                .rewrap(binding(&row.key_id), &row.private_envelope)?
            {
                None => current += 1,
                Some(new) => {
                    if self
                        .store
                        .swap_receipt_key_envelope(row.version, &row.private_envelope, &new)
                        .await?
                    {
                        rewrapped += 1;
                    }
                }
            }
        }
        Ok((rewrapped, current))
    }
}

#[cfg(test)]
mod tests;
