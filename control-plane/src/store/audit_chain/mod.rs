//! The admin audit chain: its entries, their canonical encodings, and
//! verification. Pure code; the SQL lives in `sql/config/`.
//!
//! # Canonical encodings (pinned by test vectors)
//!
//! ```text
//! lp(x)  = u64 big-endian byte length of x || x
//! fields = i64 big-endian seq || i64 big-endian at_ms
//!       || lp(actor) || lp(action) || lp(target) || lp(outcome)
//!       || lp(details_json) || lp(prev_hash)
//!
//! version 1 (unkeyed): hash = SHA-256(lp("memtrace/audit/v1") || fields)
//! version 2 (keyed):   hash = HMAC-SHA256(K, lp("memtrace/audit/v2") || lp(kek_id) || fields)
//!                      K    = HMAC-SHA256(master key kek_id, "memtrace/audit-chain-key/v1")
//! head (version 2):    mac  = HMAC-SHA256(K, lp("memtrace/audit-head/v2") || lp(kek_id)
//!                                            || i64 big-endian seq || lp(hash))
//! ```
//!
//! Strings are their UTF-8 bytes as stored. The first entry (seq 1) links to
//! [`GENESIS_HASH`], 32 zero bytes. Length prefixes make each encoding
//! injective, and the domain tags keep the two versions apart.
//!
//! Why two versions: version 1 is plain SHA-256, which anyone who can write
//! the database can recompute for a rewritten entry and every entry after
//! it. Version 2 is a MAC under a key only the control plane holds (derived
//! from a master key, see [`AuditKey`]); the entry records the master key's
//! id so entries from before a rotation verify while that key is held.
//! Databases from before version 2 keep their version 1 entries, verified
//! with the version 1 rule and reported as unkeyed; the chain continues
//! across the boundary (the first keyed entry links to the last unkeyed
//! one, so its MAC covers the whole unkeyed prefix), and an unkeyed entry
//! after a keyed one is a break.

use memtrace_common::envelope::{AuditKey, Keyring};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Version of unkeyed entries (SHA-256), written before the chain was keyed.
pub const UNKEYED_VERSION: i64 = 1;
/// Version of keyed entries (HMAC-SHA256 under a master key's audit key).
pub const KEYED_VERSION: i64 = 2;

const DOMAIN_V1: &[u8] = b"memtrace/audit/v1";
const DOMAIN_V2: &[u8] = b"memtrace/audit/v2";
const DOMAIN_HEAD_V2: &[u8] = b"memtrace/audit-head/v2";

/// An audit entry before it is chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub at_ms: i64,
    /// A credential fingerprint (`fp-…`) or `system`.
    pub actor: String,
    /// E.g. `config.set`, `org.create`.
    pub action: String,
    /// What the action was about: an org id, a key id, a setting key, or
    /// `<org_id>/<setting key>` for a per-org setting.
    pub target: String,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    /// Metadata only, never a secret (a JSON object).
    pub details_json: String,
}

/// A chained audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub details_json: String,
    pub prev_hash: Vec<u8>,
    /// The SHA-256 (version 1) or the MAC (version 2) of the entry.
    pub hash: Vec<u8>,
    /// [`UNKEYED_VERSION`] or [`KEYED_VERSION`], as stored.
    pub version: i64,
    /// The master key whose audit key made `hash` (version 2 only).
    pub kek_id: Option<String>,
}

impl AuditEntry {
    /// Chains `record` as entry `seq` after an entry whose hash is
    /// `prev_hash`, keyed under `key`.
    pub fn chain(seq: i64, prev_hash: Vec<u8>, record: &AuditRecord, key: &AuditKey) -> Self {
        let mut entry = Self::unsealed(seq, prev_hash, record);
        entry.version = KEYED_VERSION;
        entry.kek_id = Some(key.kek_id().to_owned());
        entry.hash = entry.keyed_hash(key).to_vec();
        entry
    }

    /// Chains `record` with the unkeyed version 1 rule, as control planes
    /// before version 2 did. The store never writes such entries any more;
    /// tests do, standing in for an old database or for a forger who
    /// recomputes SHA-256.
    pub fn chain_unkeyed(seq: i64, prev_hash: Vec<u8>, record: &AuditRecord) -> Self {
        let mut entry = Self::unsealed(seq, prev_hash, record);
        entry.hash = entry.unkeyed_hash().to_vec();
        entry
    }

    fn unsealed(seq: i64, prev_hash: Vec<u8>, record: &AuditRecord) -> Self {
        Self {
            seq,
            at_ms: record.at_ms,
            actor: record.actor.clone(),
            action: record.action.clone(),
            target: record.target.clone(),
            outcome: record.outcome.clone(),
            details_json: record.details_json.clone(),
            prev_hash,
            hash: Vec::new(),
            version: UNKEYED_VERSION,
            kek_id: None,
        }
    }

    /// The version 1 canonical encoding of this entry (see the module docs).
    pub fn canonical_v1(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.details_json.len());
        put(&mut out, DOMAIN_V1);
        self.put_fields(&mut out);
        out
    }

    /// The version 2 canonical encoding of this entry under master key `kek_id`.
    pub fn canonical_v2(&self, kek_id: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.details_json.len());
        put(&mut out, DOMAIN_V2);
        put(&mut out, kek_id.as_bytes());
        self.put_fields(&mut out);
        out
    }

    fn put_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.at_ms.to_be_bytes());
        for field in [
            &self.actor,
            &self.action,
            &self.target,
            &self.outcome,
            &self.details_json,
        ] {
            put(out, field.as_bytes());
        }
        put(out, &self.prev_hash);
    }

    /// SHA-256 of the version 1 encoding: what an unkeyed entry's hash must be.
    pub fn unkeyed_hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_v1()).into()
    }

    /// The MAC of the version 2 encoding under `key`.
    pub fn keyed_hash(&self, key: &AuditKey) -> [u8; 32] {
        key.mac(&self.canonical_v2(key.kek_id()))
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The last entry of the chain as recorded next to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    /// 0 when the trail is empty.
    pub seq: i64,
    pub hash: Vec<u8>,
    /// The master key of the head's MAC; `None` while the head is unkeyed
    /// (an empty trail, or a last entry from before version 2).
    pub kek_id: Option<String>,
    /// [`head_mac`] of (seq, hash), written with every keyed append, so the
    /// head cannot be moved back to an earlier entry to hide a truncation.
    pub mac: Option<Vec<u8>>,
}

/// The MAC of a head at `seq` whose last entry's hash is `hash`.
pub fn head_mac(key: &AuditKey, seq: i64, hash: &[u8]) -> [u8; 32] {
    let mut out = Vec::with_capacity(96);
    put(&mut out, DOMAIN_HEAD_V2);
    put(&mut out, key.kek_id().as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    put(&mut out, hash);
    key.mac(&out)
}

/// Where and why a chain stopped verifying: it was tampered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at entry {seq}: {reason}")]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// Keyed entries whose master key this process does not hold: they are
/// linked into the chain, but their own content cannot be checked. Not a
/// break: loading that master key as a previous key checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverifiable {
    pub kek_id: String,
    pub entries: u64,
    pub first_seq: i64,
    pub last_seq: i64,
}

impl std::fmt::Display for Unverifiable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unverifiable: key {} not held ({} entries, {}–{})",
            self.kek_id, self.entries, self.first_seq, self.last_seq
        )
    }
}

/// Verifies a chain fed oldest first, page by page, with the audit keys of
/// the master keys in `keys`.
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    keys: &'k Keyring,
    next_seq: i64,
    prev_hash: Vec<u8>,
    /// The last entry's master key (`None` while only unkeyed entries were seen).
    last_kek_id: Option<String>,
    unkeyed: u64,
    unverifiable: BTreeMap<String, Unverifiable>,
}

impl<'k> ChainVerifier<'k> {
    pub fn new(keys: &'k Keyring) -> Self {
        Self {
            keys,
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_vec(),
            last_kek_id: None,
            unkeyed: 0,
            unverifiable: BTreeMap::new(),
        }
    }

    /// Checks the next entry: contiguous seq, link to the previous hash, and
    /// its own hash over its content by the rule of its version.
    pub fn push(&mut self, entry: &AuditEntry) -> Result<(), ChainBreak> {
        let broken = |reason: String| ChainBreak {
            seq: entry.seq,
            reason,
        };
        if entry.seq != self.next_seq {
            return Err(ChainBreak {
                seq: self.next_seq,
                reason: format!(
                    "entry {} is missing (the next entry found is {})",
                    self.next_seq, entry.seq
                ),
            });
        }
        if entry.prev_hash != self.prev_hash {
            return Err(broken(format!(
                "its prev_hash does not match the hash of entry {}",
                entry.seq - 1
            )));
        }
        match (entry.version, entry.kek_id.as_deref()) {
            (UNKEYED_VERSION, None) => {
                if let Some(kek_id) = &self.last_kek_id {
                    return Err(broken(format!(
                        "it is unkeyed (version 1) but follows entries keyed under {kek_id}: \
                         unkeyed entries only come before the first keyed one (rewritten with \
                         the unkeyed rule)"
                    )));
                }
                if entry.hash != entry.unkeyed_hash() {
                    return Err(broken(
                        "its content does not match its hash (the entry was altered)".into(),
                    ));
                }
                self.unkeyed += 1;
            }
            (KEYED_VERSION, Some(kek_id)) => {
                match self.keys.audit_key_for(kek_id) {
                    Some(key) if entry.hash != entry.keyed_hash(&key) => {
                        return Err(broken(format!(
                            "its content does not match its MAC under master key {kek_id} \
                             (the entry was altered or forged)"
                        )));
                    }
                    Some(_) => {}
                    None => {
                        self.unverifiable
                            .entry(kek_id.to_owned())
                            .and_modify(|u| {
                                u.entries += 1;
                                u.last_seq = entry.seq;
                            })
                            .or_insert_with(|| Unverifiable {
                                kek_id: kek_id.to_owned(),
                                entries: 1,
                                first_seq: entry.seq,
                                last_seq: entry.seq,
                            });
                    }
                }
                self.last_kek_id = Some(kek_id.to_owned());
            }
            (version, kek_id) => {
                return Err(broken(format!(
                    "version {version} with master key {kek_id:?} is no valid seal \
                     (version 1 has no master key, version 2 names one)"
                )));
            }
        }
        self.next_seq += 1;
        self.prev_hash.clone_from(&entry.hash);
        Ok(())
    }

    /// Entries checked so far (verified, or linked but unverifiable).
    pub fn verified(&self) -> u64 {
        u64::try_from(self.next_seq - 1).unwrap_or(0)
    }

    /// Unkeyed (version 1) entries checked so far; they are entries
    /// 1..=this, verified with the weaker SHA-256 rule.
    pub fn unkeyed(&self) -> u64 {
        self.unkeyed
    }

    /// Keyed entries that could not be checked, by master key.
    pub fn unverifiable(&self) -> Vec<Unverifiable> {
        self.unverifiable.values().cloned().collect()
    }

    /// Checks that the chain ends where the head says it does (entries
    /// removed from the end are found here), and the head's own MAC.
    pub fn finish(&self, head: &AuditHead) -> Result<u64, ChainBreak> {
        let last = self.next_seq - 1;
        if head.seq != last {
            return Err(ChainBreak {
                seq: last + 1,
                reason: format!(
                    "the chain ends at entry {last} but its head records entry {} (entries were removed)",
                    head.seq
                ),
            });
        }
        let broken = |reason: &str| ChainBreak {
            seq: last,
            reason: reason.to_owned(),
        };
        if head.hash != self.prev_hash {
            return Err(broken("the head hash does not match the last entry"));
        }
        if head.kek_id != self.last_kek_id {
            return Err(broken(
                "the head is not keyed under the master key of the last entry (the head was rewritten)",
            ));
        }
        if let Some(kek_id) = &head.kek_id
            && let Some(key) = self.keys.audit_key_for(kek_id)
            && head.mac.as_deref() != Some(&head_mac(&key, head.seq, &head.hash)[..])
        {
            return Err(broken(&format!(
                "the head's MAC under master key {kek_id} does not match (the head was moved or rewritten)"
            )));
        }
        Ok(self.verified())
    }
}

#[cfg(test)]
mod tests;
