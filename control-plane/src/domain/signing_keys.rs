//! Versioned Ed25519 signing keys, one [`KeyFamily`] at a time: the keys
//! that sign erasure receipts (`rk_1`, `rk_2`, …) and the keys that sign
//! agent tokens (`tk_1`, …). Written once for both.
//!
//! The control plane holds each family's keys in its database: the public
//! key in clear, the private seed only as an envelope under the master key
//! (purpose [`RECEIPT_KEY_PURPOSE`] or [`TOKEN_KEY_PURPOSE`], bound to the
//! key id), rewrapped by `master-key rotate` like every other envelope. A
//! private seed is never logged, never published to the state bus and never
//! returned by any call. The first key is created on first need (and at
//! start); a rotation adds the next version and retires the older ones,
//! which stay listed so what they signed still verifies. Creations are
//! audited (`receipt_key.create`/`.rotate`, `token_key.create`/`.rotate`)
//! in their own transaction, which holds the audit lock: replicas sharing a
//! database converge on one key, the loser of a race re-reads the winner's.
//!
//! Every signature reads the newest key from the database, so a rotation on
//! another replica takes effect at its next signature. A public key is
//! listed only after its sealed private key opened and matched it, so a row
//! written into the database without the master key is refused, not
//! published.

use crate::auth::AdminActor;
use crate::error::{ControlPlaneError, Result};
use crate::store::{AuditRecord, AuditWith, KeyFamily, SigningKeyRow, Store, StoreError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use memtrace_common::clock::now_ms;
use memtrace_common::envelope::{Binding, Keyring, envelope_kek_id};
use memtrace_common::receipt::{ALGORITHM, PublicKeyInfo, fingerprint};
use memtrace_common::signing::SigningKey;
use std::sync::Arc;

/// Purpose bound into the envelope of a receipt signing key.
pub const RECEIPT_KEY_PURPOSE: &str = "receipt.signing_key";
/// Purpose bound into the envelope of a token signing key.
pub const TOKEN_KEY_PURPOSE: &str = "token.signing_key";

/// How many times a key creation that lost a race re-reads and retries.
const CREATE_ATTEMPTS: usize = 5;

fn prefix(family: KeyFamily) -> &'static str {
    match family {
        KeyFamily::Receipt => "rk",
        KeyFamily::Token => "tk",
    }
}

fn purpose(family: KeyFamily) -> &'static str {
    match family {
        KeyFamily::Receipt => RECEIPT_KEY_PURPOSE,
        KeyFamily::Token => TOKEN_KEY_PURPOSE,
    }
}

fn label(family: KeyFamily) -> &'static str {
    match family {
        KeyFamily::Receipt => "receipt signing key",
        KeyFamily::Token => "token signing key",
    }
}

/// One family's signing keys over the control plane's database and master
/// keys. Cheap to clone.
#[derive(Clone)]
pub struct SigningKeys {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    family: KeyFamily,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

fn timestamp(ms: i64) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_millisecond(ms).ok()
}

fn public_key_info(row: &SigningKeyRow) -> PublicKeyInfo {
    PublicKeyInfo {
        key_id: row.key_id.clone(),
        algorithm: ALGORITHM.to_owned(),
        public_key: STANDARD.encode(&row.public_key),
        fingerprint: fingerprint(&row.public_key),
        created_at: timestamp(row.created_at),
        retired_at: row.retired_at.and_then(timestamp),
    }
}

impl SigningKeys {
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>, family: KeyFamily) -> Self {
        Self {
            store,
            keyring,
            family,
        }
    }

    pub fn family(&self) -> KeyFamily {
        self.family
    }

    fn key_id(&self, version: i64) -> String {
        format!("{}_{version}", prefix(self.family))
    }

    fn binding<'a>(&self, key_id: &'a str) -> Binding<'a> {
        Binding {
            org_id: "",
            record_id: key_id,
            purpose: purpose(self.family),
        }
    }

    /// Every key's public half, oldest first (retired ones
    /// included: they verify what they signed). Each is listed only once
    /// its sealed private key opened under the master keys held and
    /// matched it: the database is not trusted to name the public keys
    /// (a row written without the master key fails the whole listing
    /// rather than being vouched for).
    pub async fn public_keys(&self) -> Result<Vec<PublicKeyInfo>> {
        let rows = self.store.list_signing_keys(self.family).await?;
        for row in &rows {
            self.open(row).map_err(|error| {
                tracing::error!(key_id = %row.key_id, %error, "signing key cannot be authenticated");
                match error {
                    ControlPlaneError::Secret(e) => ControlPlaneError::FailedPrecondition(format!(
                        "{} {} cannot be authenticated: {e}; configure the master key that sealed it (MEMTRACE_MASTER_KEY or MEMTRACE_MASTER_KEYS_PREVIOUS)",
                        label(self.family), row.key_id
                    )),
                    ControlPlaneError::Store(StoreError::Corrupt(e)) => {
                        ControlPlaneError::FailedPrecondition(format!(
                            "{} cannot be authenticated: {e}", label(self.family)
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
        if let Some(row) = self.store.list_signing_keys(self.family).await?.pop() {
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
    pub(crate) async fn current_key(&self) -> Result<SigningKey> {
        for _ in 0..CREATE_ATTEMPTS {
            if let Some(row) = self.store.list_signing_keys(self.family).await?.pop() {
                return self.open(&row);
            }
            self.add_key(&AdminActor::system(), false).await?;
        }
        Err(ControlPlaneError::Unavailable(format!(
            "no {} could be created; retry",
            label(self.family)
        )))
    }

    fn open(&self, row: &SigningKeyRow) -> Result<SigningKey> {
        let seed = self
            .keyring
            .open(self.binding(&row.key_id), &row.private_envelope)?;
        let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| {
            StoreError::Corrupt(format!(
                "{} {} has no 32-byte seed",
                label(self.family),
                row.key_id
            ))
        })?;
        let key = SigningKey::from_seed(row.key_id.clone(), seed);
        if key.public_key().as_slice() != row.public_key.as_slice() {
            return Err(StoreError::Corrupt(format!(
                "{} {}: the sealed seed does not match the stored public key",
                label(self.family),
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
        let action = match (self.family, always) {
            (KeyFamily::Receipt, false) => "receipt_key.create",
            (KeyFamily::Receipt, true) => "receipt_key.rotate",
            (KeyFamily::Token, false) => "token_key.create",
            (KeyFamily::Token, true) => "token_key.rotate",
        };
        for _ in 0..CREATE_ATTEMPTS {
            let rows = self.store.list_signing_keys(self.family).await?;
            if let (false, Some(row)) = (always, rows.last()) {
                return Ok(public_key_info(row));
            }
            let version = rows.last().map_or(1, |row| row.version + 1);
            let id = self.key_id(version);
            let key = SigningKey::generate(id.clone());
            let row = SigningKeyRow {
                version,
                key_id: id.clone(),
                public_key: key.public_key().to_vec(),
                private_envelope: self.keyring.seal(self.binding(&id), key.seed()),
                created_at: now_ms(),
                retired_at: None,
            };
            let audit_key = self.keyring.audit_key();
            let fingerprint = fingerprint(&row.public_key);
            let record = |row: &SigningKeyRow| AuditRecord {
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
                .insert_signing_key(self.family, &row, AuditWith::new(&audit_key, &record))
                .await?
            {
                tracing::info!(key_id = %row.key_id, %fingerprint, action, "signing key added");
                return Ok(public_key_info(&row));
            }
            // another writer added a version first: re-read
        }
        Err(ControlPlaneError::Unavailable(format!(
            "the {} changed concurrently on every attempt; retry",
            label(self.family)
        )))
    }

    /// Master-key fingerprints of the stored private keys (keyring status).
    pub(crate) async fn kek_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for row in self.store.list_signing_keys(self.family).await? {
            ids.push(envelope_kek_id(&row.private_envelope)?);
        }
        Ok(ids)
    }

    /// Rewraps private keys still sealed by an older master key (part of
    /// master-key rotation). Returns `(rewrapped, already_current)`.
    pub(crate) async fn rewrap(&self) -> Result<(u64, u64)> {
        let (mut rewrapped, mut current) = (0, 0);
        for row in self.store.list_signing_keys(self.family).await? {
            match self
                .keyring
                .rewrap(self.binding(&row.key_id), &row.private_envelope)?
            {
                None => current += 1,
                Some(new) => {
                    if self
                        .store
                        .swap_signing_key_envelope(
                            self.family,
                            row.version,
                            &row.private_envelope,
                            &new,
                        )
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
