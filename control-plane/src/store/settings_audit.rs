//! Rows of the runtime settings and of the admin audit trail, and the audit
//! hash chain: its canonical encoding and its verification. Pure code; the
//! SQL lives in `sql/config.rs`.
//!
//! # Canonical encoding (version 1, pinned by a test vector)
//!
//! ```text
//! lp(x)     = u64 big-endian byte length of x || x
//! canonical = lp("memtrace/audit/v1")
//!          || i64 big-endian seq || i64 big-endian at_ms
//!          || lp(actor) || lp(action) || lp(target) || lp(outcome)
//!          || lp(details_json) || lp(prev_hash)
//! hash      = SHA-256(canonical)
//! ```
//!
//! Strings are their UTF-8 bytes as stored. The first entry (seq 1) links to
//! [`GENESIS_HASH`], 32 zero bytes. Length prefixes make the encoding
//! injective: no two different entries encode to the same bytes.

use sha2::{Digest, Sha256};

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Domain tag of the canonical encoding.
const DOMAIN: &[u8] = b"memtrace/audit/v1";

/// A stored runtime setting value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingRow {
    pub key: String,
    /// Empty for the global value.
    pub org_id: String,
    /// The typed value, JSON-encoded.
    pub value_json: String,
    pub updated_at: i64,
}

/// One change of a stored setting, applied only while the stored value is
/// still what the caller read (compare-and-swap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    pub key: String,
    /// Empty for the global value.
    pub org_id: String,
    /// The stored `value_json` the caller read; `None` when there was no row.
    pub expected: Option<String>,
    /// The new `value_json`; `None` deletes the row.
    pub new: Option<String>,
    pub at_ms: i64,
}

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
    pub hash: Vec<u8>,
}

impl AuditEntry {
    /// Chains `record` as entry `seq` after an entry whose hash is `prev_hash`.
    pub fn chain(seq: i64, prev_hash: Vec<u8>, record: &AuditRecord) -> Self {
        let mut entry = Self {
            seq,
            at_ms: record.at_ms,
            actor: record.actor.clone(),
            action: record.action.clone(),
            target: record.target.clone(),
            outcome: record.outcome.clone(),
            details_json: record.details_json.clone(),
            prev_hash,
            hash: Vec::new(),
        };
        entry.hash = entry.computed_hash().to_vec();
        entry
    }

    /// The canonical encoding of this entry (see the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.details_json.len());
        put(&mut out, DOMAIN);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.at_ms.to_be_bytes());
        for field in [
            &self.actor,
            &self.action,
            &self.target,
            &self.outcome,
            &self.details_json,
        ] {
            put(&mut out, field.as_bytes());
        }
        put(&mut out, &self.prev_hash);
        out
    }

    /// SHA-256 of the canonical encoding.
    pub fn computed_hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
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
}

/// Which entries to list (newest first). Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Actions starting with this, e.g. `config.`.
    pub action_prefix: Option<String>,
    /// A setting key: entries whose target is the key (global) or ends in
    /// `/<key>` (any org's override).
    pub key: Option<String>,
    /// Entries whose target is the org or one of its settings (`<org>/…`).
    pub org_id: Option<String>,
    pub actor: Option<String>,
    pub outcome: Option<String>,
    /// Only entries older than this (paging).
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// Where and why a chain stopped verifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at entry {seq}: {reason}")]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// Verifies a chain fed oldest first, page by page.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: Vec<u8>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_vec(),
        }
    }
}

impl ChainVerifier {
    /// Checks the next entry: contiguous seq, link to the previous hash, and
    /// its own hash over its content.
    pub fn push(&mut self, entry: &AuditEntry) -> Result<(), ChainBreak> {
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
            return Err(ChainBreak {
                seq: entry.seq,
                reason: format!(
                    "its prev_hash does not match the hash of entry {}",
                    entry.seq - 1
                ),
            });
        }
        if entry.hash != entry.computed_hash() {
            return Err(ChainBreak {
                seq: entry.seq,
                reason: "its content does not match its hash (the entry was altered)".into(),
            });
        }
        self.next_seq += 1;
        self.prev_hash.clone_from(&entry.hash);
        Ok(())
    }

    /// Entries verified so far.
    pub fn verified(&self) -> u64 {
        u64::try_from(self.next_seq - 1).unwrap_or(0)
    }

    /// Checks that the chain ends where the head says it does (entries
    /// removed from the end are found here).
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
        if head.hash != self.prev_hash {
            return Err(ChainBreak {
                seq: last,
                reason: "the head hash does not match the last entry".into(),
            });
        }
        Ok(self.verified())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64) -> AuditRecord {
        AuditRecord {
            at_ms: 1_700_000_000_000 + n,
            actor: "fp-0123456789abcdef".into(),
            action: "config.set".into(),
            target: "arc.write_batch_size".into(),
            outcome: "ok".into(),
            details_json: r#"{"key":"arc.write_batch_size","new":500,"old":null}"#.into(),
        }
    }

    /// Pins the canonical encoding: changing it breaks every stored chain.
    #[test]
    fn canonical_encoding_test_vector() {
        let entry = AuditEntry::chain(1, GENESIS_HASH.to_vec(), &record(0));
        let bytes = entry.canonical_bytes();
        let mut expected = Vec::new();
        expected.extend_from_slice(&17u64.to_be_bytes());
        expected.extend_from_slice(b"memtrace/audit/v1");
        expected.extend_from_slice(&1i64.to_be_bytes());
        expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        for s in [
            "fp-0123456789abcdef",
            "config.set",
            "arc.write_batch_size",
            "ok",
            r#"{"key":"arc.write_batch_size","new":500,"old":null}"#,
        ] {
            expected.extend_from_slice(&(s.len() as u64).to_be_bytes());
            expected.extend_from_slice(s.as_bytes());
        }
        expected.extend_from_slice(&32u64.to_be_bytes());
        expected.extend_from_slice(&[0u8; 32]);
        assert_eq!(bytes, expected);
        assert_eq!(
            hex::encode(&entry.hash),
            "01fa1377cacafc128ae90671fdaa0a5160d74e53633ee5bcfce35f6bb206025e",
            "the hash of the test vector"
        );
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        let a = AuditEntry::chain(
            1,
            GENESIS_HASH.to_vec(),
            &AuditRecord {
                actor: "ab".into(),
                action: "c".into(),
                ..record(0)
            },
        );
        let b = AuditEntry::chain(
            1,
            GENESIS_HASH.to_vec(),
            &AuditRecord {
                actor: "a".into(),
                action: "bc".into(),
                ..record(0)
            },
        );
        assert_ne!(a.hash, b.hash);
    }

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_vec();
        (1..=n)
            .map(|seq| {
                let entry = AuditEntry::chain(seq, prev.clone(), &record(seq));
                prev.clone_from(&entry.hash);
                entry
            })
            .collect()
    }

    fn verify(entries: &[AuditEntry], head: &AuditHead) -> Result<u64, ChainBreak> {
        let mut verifier = ChainVerifier::default();
        entries.iter().try_for_each(|e| verifier.push(e))?;
        verifier.finish(head)
    }

    #[test]
    fn verification_finds_each_kind_of_tampering() {
        let entries = chain(5);
        let head = AuditHead {
            seq: 5,
            hash: entries[4].hash.clone(),
        };
        assert_eq!(verify(&entries, &head), Ok(5));
        assert_eq!(
            verify(
                &[],
                &AuditHead {
                    seq: 0,
                    hash: GENESIS_HASH.to_vec()
                }
            ),
            Ok(0)
        );

        let mut altered = entries.clone();
        altered[2].details_json = r#"{"key":"x"}"#.into();
        assert_eq!(verify(&altered, &head).unwrap_err().seq, 3);

        let mut rehashed = altered.clone();
        rehashed[2].hash = rehashed[2].computed_hash().to_vec();
        let err = verify(&rehashed, &head).unwrap_err();
        assert_eq!(err.seq, 4, "re-hashing one entry breaks the next link");

        let mut missing = entries.clone();
        missing.remove(1);
        assert_eq!(verify(&missing, &head).unwrap_err().seq, 2);

        let truncated = &entries[..4];
        let err = verify(truncated, &head).unwrap_err();
        assert!(err.reason.contains("removed"), "{err}");
    }
}
