//! Signed erasure receipts: what one finished erasure removed, signed by the
//! control plane with Ed25519 so anyone can check it offline.
//!
//! # Document
//!
//! ```json
//! {
//!   "format": "memtrace/erasure-receipt/v1",
//!   "receipt": {
//!     "receipt_id": "rcp_…", "erasure_id": "era_…", "org_id": "org_…",
//!     "target": {"store": "arc", "url_host": "arc.example:8000", "database": "tenant", "measurements": ["memories"]},
//!     "scope": {"kind": "memory_ids", "ids": ["…"]},
//!     "requested_by": "fp-…",
//!     "requested_at": "2026-12-05T06:40:10.123Z", "started_at": "…", "finished_at": "…",
//!     "rows_removed": {"memories": 3},
//!     "verification": {"memories": {"query": "SELECT COUNT(*) …", "result": 0}},
//!     "issued_at": "…"
//!   },
//!   "signature": {"algorithm": "ed25519", "key_id": "rk_1", "public_key": "<base64>", "value": "<base64>"}
//! }
//! ```
//!
//! `target` names where the rows were (for Arc: host and port only, never
//! userinfo, path or credentials; `{"store": "embedded"}` for the single-node
//! store); `scope` is a JSON value describing what was erased
//! (`{"kind":"memory_ids","ids":[…]}`, `{"kind":"filter",…}`,
//! `{"kind":"org"}`); times are RFC 3339 in UTC.
//!
//! # Signature
//!
//! The signed message is the **canonical serialization of the whole
//! document without `signature.value`**, that is of
//! `{"format": …, "receipt": …, "signature": {"algorithm", "key_id", "public_key"}}`,
//! so the receipt, the format and the key's id and public key are all
//! covered: editing any of them, or the signature, fails verification.
//! `public_key` is the standard base64 (with padding) of the 32-byte Ed25519
//! public key (RFC 8032), `value` that of the 64-byte signature.
//!
//! # Canonical serialization
//!
//! RFC 8785 (JSON Canonicalization Scheme) for documents holding integers
//! only; stated in full so a verifier needs no library:
//!
//! * no whitespace anywhere;
//! * object members sorted by their names compared as sequences of UTF-16
//!   code units (for ASCII names: byte order), each name once;
//! * strings in double quotes, escaping only `"` as `\"`, `\` as `\\`, the
//!   control characters U+0008, U+0009, U+000A, U+000C, U+000D as `\b`,
//!   `\t`, `\n`, `\f`, `\r` and every other character below U+0020 as
//!   `\u00xx` (lowercase hex); every other character as its UTF-8 bytes;
//! * numbers are integers within ±(2^53 − 1), in plain decimal (a document
//!   holding any other number is refused, so no float formatting is needed);
//! * `true`, `false`, `null` as such; arrays keep their order.
//!
//! To verify by hand: parse the document, remove `signature.value`,
//! canonicalize what remains, and check `value` over those bytes with the
//! Ed25519 key `public_key`; then check that key is one you trust (the
//! control plane lists its keys: `memtracectl erasure keys`).
//!
//! # Why `ring`
//!
//! Ed25519 comes from `ring`, already in the tree through rustls: no new
//! crate to build, audit or keep updated, and its verification follows RFC
//! 8032 strictly (a non-canonical `S` is refused). `ed25519-dalek` would
//! have added `curve25519-dalek` and its backends for the same two calls.

mod canonical;
#[cfg(test)]
mod tests;

pub use canonical::{CanonicalError, MAX_SAFE_INTEGER, canonical_json};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use jiff::Timestamp;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The `format` of every receipt this module writes and reads.
pub const RECEIPT_FORMAT: &str = "memtrace/erasure-receipt/v1";
/// The only signature algorithm.
pub const ALGORITHM: &str = "ed25519";
pub use crate::signing::PUBLIC_KEY_LEN;

/// Where the erased rows were. Names places, never credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "store", rename_all = "snake_case")]
pub enum ErasureTarget {
    /// The tenant's Arc: host (and port) of its URL, database, measurements.
    Arc {
        url_host: String,
        database: String,
        measurements: Vec<String>,
    },
    /// The single-node embedded store.
    Embedded,
}

impl ErasureTarget {
    /// An Arc target from the binding's URL: keeps only its host and port
    /// (no userinfo, path or query).
    pub fn arc(
        url: &str,
        database: impl Into<String>,
        measurements: Vec<String>,
    ) -> Result<Self, ReceiptError> {
        let parsed = url::Url::parse(url).map_err(|_| ReceiptError::BadTargetUrl)?;
        let host = parsed.host_str().ok_or(ReceiptError::BadTargetUrl)?;
        let url_host = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Self::Arc {
            url_host,
            database: database.into(),
            measurements,
        })
    }
}

/// The count query run after an erasure and what it returned (0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableVerification {
    pub query: String,
    pub result: u64,
}

/// What one finished erasure removed. Times are UTC instants, written as
/// RFC 3339 (`2026-12-05T06:40:10.123Z`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub receipt_id: String,
    pub erasure_id: String,
    pub org_id: String,
    pub target: ErasureTarget,
    /// What was erased: `{"kind":"memory_ids","ids":[…]}`,
    /// `{"kind":"filter",…}`, `{"kind":"org"}`. Integers only (no floats).
    pub scope: Value,
    /// Who asked (an admin credential fingerprint, or `system`).
    pub requested_by: String,
    pub requested_at: Timestamp,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// Rows removed per table.
    pub rows_removed: BTreeMap<String, u64>,
    /// The count query per table and its result.
    pub verification: BTreeMap<String, TableVerification>,
    /// When the receipt was signed.
    pub issued_at: Timestamp,
}

/// The `signature` member of a signed receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptSignature {
    pub algorithm: String,
    pub key_id: String,
    /// Standard base64 of the 32-byte public key.
    pub public_key: String,
    /// Standard base64 of the 64-byte signature.
    pub value: String,
}

/// A receipt with its signature: the document handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub format: String,
    pub receipt: Receipt,
    pub signature: ReceiptSignature,
}

impl SignedReceipt {
    /// The document as pretty JSON (what to store or hand out).
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a receipt serializes")
    }
}

/// Why a receipt could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt has no canonical form: {0}")]
    NotCanonical(#[from] CanonicalError),
    #[error("the Arc URL has no host")]
    BadTargetUrl,
}

pub use crate::signing::SigningKey as ReceiptSigningKey;

impl ReceiptSigningKey {
    /// Signs `receipt` as it is (the caller sets `issued_at`).
    pub fn sign(&self, receipt: Receipt) -> Result<SignedReceipt, ReceiptError> {
        let mut signed = SignedReceipt {
            format: RECEIPT_FORMAT.to_owned(),
            receipt,
            signature: ReceiptSignature {
                algorithm: ALGORITHM.to_owned(),
                key_id: self.key_id().to_owned(),
                public_key: self.public_key_base64(),
                value: String::new(),
            },
        };
        let document = serde_json::to_value(&signed).expect("a receipt serializes");
        let message = signed_message(&document)?;
        signed.signature.value = STANDARD.encode(self.sign_bytes(&message));
        Ok(signed)
    }
}

/// The bytes a signature covers: the canonical form of `document` without
/// `signature.value`.
pub fn signed_message(document: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut unsigned = document.clone();
    if let Some(signature) = unsigned.get_mut("signature").and_then(Value::as_object_mut) {
        signature.remove("value");
    }
    canonical_json(&unsigned)
}

/// The fingerprint shown for a public key: `SHA256:` and the unpadded
/// base64 of the key's SHA-256 (the style of SSH fingerprints).
pub fn fingerprint(public_key: &[u8]) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(Sha256::digest(public_key))
    )
}

/// One public key of the control plane, as listed by the admin API and
/// `memtracectl erasure keys --output json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyInfo {
    pub key_id: String,
    #[serde(default = "ed25519")]
    pub algorithm: String,
    /// Standard base64 of the 32-byte public key.
    pub public_key: String,
    /// [`fingerprint`] of the key; informative (recomputed when read).
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    /// Set once a newer key signs; a retired key still verifies what it signed.
    #[serde(default)]
    pub retired_at: Option<Timestamp>,
}

fn ed25519() -> String {
    ALGORITHM.to_owned()
}

/// A set of public keys: the document `memtracectl erasure keys --output
/// json` prints and `memtracectl erasure verify --keys` reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    pub keys: Vec<PublicKeyInfo>,
}

/// Why a key set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    #[error("not a key set: {0} (expected {{\"keys\": [{{\"key_id\": …, \"public_key\": …}}]}})")]
    NotKeySet(String),
    #[error("key {0}: algorithm {1:?} is not ed25519")]
    Algorithm(String, String),
    #[error("key {0}: public_key is not the base64 of 32 bytes")]
    PublicKey(String),
    #[error("key {0}: fingerprint {1} does not match its public key")]
    Fingerprint(String, String),
}

impl KeySet {
    /// Parses and checks a key set: every key Ed25519, 32 bytes, and its
    /// fingerprint (when present) that of its key.
    pub fn from_json(text: &str) -> Result<Self, KeySetError> {
        let set: KeySet =
            serde_json::from_str(text).map_err(|e| KeySetError::NotKeySet(e.to_string()))?;
        for key in &set.keys {
            if key.algorithm != ALGORITHM {
                return Err(KeySetError::Algorithm(
                    key.key_id.clone(),
                    key.algorithm.clone(),
                ));
            }
            let bytes = decode_public_key(&key.public_key)
                .ok_or_else(|| KeySetError::PublicKey(key.key_id.clone()))?;
            if !key.fingerprint.is_empty() && key.fingerprint != fingerprint(&bytes) {
                return Err(KeySetError::Fingerprint(
                    key.key_id.clone(),
                    key.fingerprint.clone(),
                ));
            }
        }
        Ok(set)
    }
}

fn decode_public_key(text: &str) -> Option<[u8; PUBLIC_KEY_LEN]> {
    STANDARD.decode(text).ok()?.as_slice().try_into().ok()
}

/// Why a receipt failed verification: each variant names the check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("malformed receipt: {0}")]
    Malformed(String),
    #[error("unknown format {0:?} (this verifier reads {RECEIPT_FORMAT})")]
    Format(String),
    #[error("unsupported signature algorithm {0:?} (expected ed25519)")]
    Algorithm(String),
    #[error("signature.public_key is not the base64 of a 32-byte Ed25519 key")]
    PublicKeyEncoding,
    #[error("signature.value is not the base64 of a 64-byte signature")]
    SignatureEncoding,
    #[error("receipt has no canonical form: {0}")]
    NotCanonical(#[from] CanonicalError),
    #[error(
        "signature does not verify: the receipt or its signature was altered, or it was signed by another key than {key_id}"
    )]
    BadSignature { key_id: String },
    #[error("key {key_id} ({fingerprint}) is not one of the trusted keys")]
    UntrustedKey { key_id: String, fingerprint: String },
    #[error("the receipt names key {key_id}, but its public key is trusted key {trusted_key_id}")]
    KeyIdMismatch {
        key_id: String,
        trusted_key_id: String,
    },
}

impl VerifyError {
    /// The check that failed, as a short stable name: `format`,
    /// `encoding`, `canonical_form`, `signature` or `trusted_key`.
    pub fn check(&self) -> &'static str {
        match self {
            Self::NotJson(_) | Self::Malformed(_) | Self::Format(_) => "format",
            Self::Algorithm(_) | Self::PublicKeyEncoding | Self::SignatureEncoding => "encoding",
            Self::NotCanonical(_) => "canonical_form",
            Self::BadSignature { .. } => "signature",
            Self::UntrustedKey { .. } | Self::KeyIdMismatch { .. } => "trusted_key",
        }
    }
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReceipt {
    pub receipt: Receipt,
    pub key_id: String,
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// [`fingerprint`] of the public key.
    pub fingerprint: String,
    /// Whether the key was checked against a trusted key set.
    pub trusted: bool,
}

/// Verifies a signed receipt document: its format, its signature under the
/// public key it embeds and, when `trusted` is given, that this key is one
/// of them (under the same id). Offline: nothing is fetched.
pub fn verify(document: &[u8], trusted: Option<&KeySet>) -> Result<VerifiedReceipt, VerifyError> {
    let value: Value =
        serde_json::from_slice(document).map_err(|e| VerifyError::NotJson(e.to_string()))?;
    let text = |path: &[&str]| -> Result<String, VerifyError> {
        let mut at = &value;
        for name in path {
            at = at
                .get(name)
                .ok_or_else(|| VerifyError::Malformed(format!("{} is missing", path.join("."))))?;
        }
        at.as_str()
            .map(str::to_owned)
            .ok_or_else(|| VerifyError::Malformed(format!("{} is not a string", path.join("."))))
    };
    let format = text(&["format"])?;
    if format != RECEIPT_FORMAT {
        return Err(VerifyError::Format(format));
    }
    let algorithm = text(&["signature", "algorithm"])?;
    if algorithm != ALGORITHM {
        return Err(VerifyError::Algorithm(algorithm));
    }
    let key_id = text(&["signature", "key_id"])?;
    let public_key = decode_public_key(&text(&["signature", "public_key"])?)
        .ok_or(VerifyError::PublicKeyEncoding)?;
    let signature = STANDARD
        .decode(text(&["signature", "value"])?)
        .ok()
        .filter(|s| s.len() == 64)
        .ok_or(VerifyError::SignatureEncoding)?;
    let receipt_value = value
        .get("receipt")
        .filter(|r| r.is_object())
        .ok_or_else(|| VerifyError::Malformed("receipt is missing or not an object".into()))?;
    let message = signed_message(&value)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&message, &signature)
        .map_err(|_| VerifyError::BadSignature {
            key_id: key_id.clone(),
        })?;
    let fingerprint = fingerprint(&public_key);
    if let Some(trusted) = trusted {
        let found = trusted
            .keys
            .iter()
            .find(|k| decode_public_key(&k.public_key) == Some(public_key))
            .ok_or_else(|| VerifyError::UntrustedKey {
                key_id: key_id.clone(),
                fingerprint: fingerprint.clone(),
            })?;
        if found.key_id != key_id {
            return Err(VerifyError::KeyIdMismatch {
                key_id,
                trusted_key_id: found.key_id.clone(),
            });
        }
    }
    let receipt: Receipt = serde_json::from_value(receipt_value.clone())
        .map_err(|e| VerifyError::Malformed(format!("receipt: {e}")))?;
    Ok(VerifiedReceipt {
        receipt,
        key_id,
        public_key,
        fingerprint,
        trusted: trusted.is_some(),
    })
}
