//! Envelope encryption of stored secrets (Arc API keys) under the master key.
//!
//! Every record gets a fresh 256-bit data key (DEK). The payload is sealed with
//! AES-256-GCM under the DEK; the DEK is sealed with AES-256-GCM under a master
//! key (KEK). Both seals carry associated data that binds them to the org, the
//! record and the purpose, so a ciphertext copied to another row or org fails to
//! open. Master keys are identified by a public fingerprint (`kek_id`), so a
//! ring of several keys can open old records while new ones use the active key;
//! rotation rewraps DEKs only.
//!
//! Layout (format 1):
//! `0x01 | kek_id (8, BE) | dek nonce (12) | sealed dek (48) | nonce (12) | sealed payload`.
//!
//! Each master key also yields an [`AuditKey`], which keys the control
//! plane's admin audit chain: without the master key, nobody can write an
//! entry that verifies.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const SEALED_DEK_LEN: usize = 32 + 16;
const HEADER_LEN: usize = 1 + 8 + NONCE_LEN + SEALED_DEK_LEN + NONCE_LEN;

/// Why an envelope could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("envelope is malformed: {0}")]
    Malformed(&'static str),
    #[error(
        "envelope was sealed by master key {0}, which this process does not hold (retired or never configured)"
    )]
    UnknownKey(String),
    #[error(
        "envelope failed authentication (tampered, or bound to another org, record or purpose)"
    )]
    Authentication,
}

/// What a sealed value is bound to. Only immutable identifiers belong here.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub org_id: &'a str,
    pub record_id: &'a str,
    pub purpose: &'a str,
}

impl Binding<'_> {
    fn aad(&self, label: &[u8], kek_id: Option<u64>) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64);
        aad.extend_from_slice(label);
        if let Some(kek_id) = kek_id {
            aad.extend_from_slice(&kek_id.to_be_bytes());
        }
        for part in [self.org_id, self.record_id, self.purpose] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

/// One master key with its public fingerprint.
pub struct MasterKey {
    id: u64,
    cipher: Aes256Gcm,
    audit_key: Zeroizing<[u8; 32]>,
}

/// Label of the audit-chain key derived from a master key.
const AUDIT_KEY_LABEL: &[u8] = b"memtrace/audit-chain-key/v1";

impl MasterKey {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            id: fingerprint(key),
            cipher: Aes256Gcm::new(key.into()),
            audit_key: derive(key, AUDIT_KEY_LABEL),
        }
    }

    /// The public fingerprint, as shown to operators.
    pub fn kek_id(&self) -> String {
        format_kek_id(self.id)
    }
}

/// The key of the admin audit chain derived from one master key:
/// HMAC-SHA256(master key, `memtrace/audit-chain-key/v1`). It is a separate
/// key, not the master key itself, so a MAC can never be confused with an
/// envelope and the master key is used for one purpose only. It names the
/// master key it came from, so every entry records which key can check it
/// and entries written before a rotation verify while that key is held.
pub struct AuditKey {
    kek_id: String,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// The fingerprint of the master key this key was derived from.
    pub fn kek_id(&self) -> &str {
        &self.kek_id
    }

    /// HMAC-SHA256 of `message` under this key.
    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref())
            .expect("hmac accepts any key length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

/// The master keys this process holds: one active (seals), others open only.
pub struct Keyring {
    active: MasterKey,
    previous: Vec<MasterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active.kek_id())
            .field(
                "previous",
                &self
                    .previous
                    .iter()
                    .map(MasterKey::kek_id)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    pub fn new(active: MasterKey, previous: Vec<MasterKey>) -> Self {
        let previous = previous.into_iter().filter(|k| k.id != active.id).collect();
        Self { active, previous }
    }

    pub fn active_kek_id(&self) -> String {
        self.active.kek_id()
    }

    /// Fingerprints of every key held, active first.
    pub fn kek_ids(&self) -> Vec<String> {
        std::iter::once(&self.active)
            .chain(&self.previous)
            .map(MasterKey::kek_id)
            .collect()
    }

    /// The audit-chain key of the active master key: new entries use it.
    pub fn audit_key(&self) -> AuditKey {
        audit_key_of(&self.active)
    }

    /// The audit-chain key of the held master key `kek_id` (`kek-…`), to
    /// check entries written under it; `None` when that key is not held.
    pub fn audit_key_for(&self, kek_id: &str) -> Option<AuditKey> {
        std::iter::once(&self.active)
            .chain(&self.previous)
            .find(|k| k.kek_id() == kek_id)
            .map(audit_key_of)
    }

    fn find(&self, id: u64) -> Option<&MasterKey> {
        std::iter::once(&self.active)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }

    /// Seals `plaintext` under a fresh data key wrapped by the active master key.
    pub fn seal(&self, binding: Binding<'_>, plaintext: &[u8]) -> Vec<u8> {
        let mut dek = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(dek.as_mut());
        let dek_cipher = Aes256Gcm::new((&*dek).into());
        let payload_nonce = random_nonce();
        let sealed_payload = dek_cipher
            .encrypt(
                &Nonce::from(payload_nonce),
                Payload {
                    msg: plaintext,
                    aad: &binding.aad(b"memtrace/envelope/v1/payload", None),
                },
            )
            .expect("aes-gcm seals any message shorter than 64 GiB");
        let mut out = Vec::with_capacity(HEADER_LEN + sealed_payload.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.active.id.to_be_bytes());
        self.push_sealed_dek(&mut out, binding, &dek);
        out.extend_from_slice(&payload_nonce);
        out.extend_from_slice(&sealed_payload);
        out
    }

    /// Opens an envelope sealed by any key of the ring.
    pub fn open(
        &self,
        binding: Binding<'_>,
        envelope: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let parts = Parts::parse(envelope)?;
        let dek = self.open_dek(binding, &parts)?;
        let dek_cipher = Aes256Gcm::new((&*dek).into());
        dek_cipher
            .decrypt(
                &Nonce::from(parts.payload_nonce),
                Payload {
                    msg: parts.sealed_payload,
                    aad: &binding.aad(b"memtrace/envelope/v1/payload", None),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| EnvelopeError::Authentication)
    }

    /// Rewraps the data key under the active master key. Returns `None` when the
    /// envelope already uses the active key. The payload bytes are unchanged.
    pub fn rewrap(
        &self,
        binding: Binding<'_>,
        envelope: &[u8],
    ) -> Result<Option<Vec<u8>>, EnvelopeError> {
        let parts = Parts::parse(envelope)?;
        if parts.kek_id == self.active.id {
            return Ok(None);
        }
        let dek = self.open_dek(binding, &parts)?;
        let mut out = Vec::with_capacity(envelope.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.active.id.to_be_bytes());
        self.push_sealed_dek(&mut out, binding, &dek);
        out.extend_from_slice(&parts.payload_nonce);
        out.extend_from_slice(parts.sealed_payload);
        Ok(Some(out))
    }

    fn push_sealed_dek(&self, out: &mut Vec<u8>, binding: Binding<'_>, dek: &[u8; 32]) {
        let nonce = random_nonce();
        let sealed = self
            .active
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: dek,
                    aad: &binding.aad(b"memtrace/envelope/v1/dek", Some(self.active.id)),
                },
            )
            .expect("aes-gcm seals any message shorter than 64 GiB");
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
    }

    fn open_dek(
        &self,
        binding: Binding<'_>,
        parts: &Parts<'_>,
    ) -> Result<Zeroizing<[u8; 32]>, EnvelopeError> {
        let kek = self
            .find(parts.kek_id)
            .ok_or_else(|| EnvelopeError::UnknownKey(format_kek_id(parts.kek_id)))?;
        let dek = Zeroizing::new(
            kek.cipher
                .decrypt(
                    &Nonce::from(parts.dek_nonce),
                    Payload {
                        msg: parts.sealed_dek,
                        aad: &binding.aad(b"memtrace/envelope/v1/dek", Some(parts.kek_id)),
                    },
                )
                .map_err(|_| EnvelopeError::Authentication)?,
        );
        let dek: [u8; 32] = dek
            .as_slice()
            .try_into()
            .map_err(|_| EnvelopeError::Malformed("data key has the wrong length"))?;
        Ok(Zeroizing::new(dek))
    }
}

/// The fingerprint of the master key that sealed `envelope`.
pub fn envelope_kek_id(envelope: &[u8]) -> Result<String, EnvelopeError> {
    Parts::parse(envelope).map(|p| format_kek_id(p.kek_id))
}

struct Parts<'a> {
    kek_id: u64,
    dek_nonce: [u8; NONCE_LEN],
    sealed_dek: &'a [u8],
    payload_nonce: [u8; NONCE_LEN],
    sealed_payload: &'a [u8],
}

impl<'a> Parts<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() < HEADER_LEN + 16 {
            return Err(EnvelopeError::Malformed("too short"));
        }
        if bytes[0] != FORMAT_V1 {
            return Err(EnvelopeError::Malformed("unknown format version"));
        }
        let (kek_id, rest) = bytes[1..].split_at(8);
        let (dek_nonce, rest) = rest.split_at(NONCE_LEN);
        let (sealed_dek, rest) = rest.split_at(SEALED_DEK_LEN);
        let (payload_nonce, sealed_payload) = rest.split_at(NONCE_LEN);
        let malformed = |_| EnvelopeError::Malformed("bad header");
        Ok(Self {
            kek_id: u64::from_be_bytes(kek_id.try_into().map_err(malformed)?),
            dek_nonce: dek_nonce.try_into().map_err(malformed)?,
            sealed_dek,
            payload_nonce: payload_nonce.try_into().map_err(malformed)?,
            sealed_payload,
        })
    }
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

fn audit_key_of(master: &MasterKey) -> AuditKey {
    AuditKey {
        kek_id: master.kek_id(),
        key: master.audit_key.clone(),
    }
}

/// HMAC-SHA256 of `label` under `key`: a key derived for one purpose.
fn derive(key: &[u8; 32], label: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(label);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

fn fingerprint(key: &[u8; 32]) -> u64 {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(b"memtrace/master-key-id/v1");
    let digest = mac.finalize().into_bytes();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(id)
}

fn format_kek_id(id: u64) -> String {
    format!("kek-{id:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Binding<'static> = Binding {
        org_id: "org_a",
        record_id: "arc_1",
        purpose: "arc.api_key",
    };

    fn key(byte: u8) -> MasterKey {
        MasterKey::new(&[byte; 32])
    }

    #[test]
    fn round_trip() {
        let ring = Keyring::new(key(1), vec![]);
        let sealed = ring.seal(A, b"arc-secret-key");
        assert!(!sealed.windows(14).any(|w| w == b"arc-secret-key"));
        assert_eq!(ring.open(A, &sealed).unwrap().as_slice(), b"arc-secret-key");
        assert_ne!(
            ring.seal(A, b"arc-secret-key"),
            sealed,
            "fresh dek and nonces"
        );
    }

    #[test]
    fn tampering_any_byte_is_detected() {
        let ring = Keyring::new(key(1), vec![]);
        let sealed = ring.seal(A, b"secret");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                ring.open(A, &bad).is_err(),
                "byte {i} flipped and still opened"
            );
        }
        assert!(ring.open(A, &sealed[..sealed.len() - 1]).is_err());
    }

    #[test]
    fn row_swap_and_cross_org_swap_fail() {
        let ring = Keyring::new(key(1), vec![]);
        let sealed = ring.seal(A, b"secret");
        let other_record = Binding {
            record_id: "arc_2",
            ..A
        };
        let other_org = Binding {
            org_id: "org_b",
            ..A
        };
        let other_purpose = Binding {
            purpose: "other",
            ..A
        };
        for binding in [other_record, other_org, other_purpose] {
            assert_eq!(
                ring.open(binding, &sealed).unwrap_err(),
                EnvelopeError::Authentication
            );
        }
    }

    #[test]
    fn old_key_opens_until_retired_and_rewrap_moves_to_active() {
        let old = Keyring::new(key(1), vec![]);
        let sealed = old.seal(A, b"secret");
        let rotated = Keyring::new(key(2), vec![key(1)]);
        assert_eq!(rotated.open(A, &sealed).unwrap().as_slice(), b"secret");
        let rewrapped = rotated
            .rewrap(A, &sealed)
            .unwrap()
            .expect("old key is rewrapped");
        assert_eq!(envelope_kek_id(&rewrapped).unwrap(), key(2).kek_id());
        assert_eq!(rotated.rewrap(A, &rewrapped).unwrap(), None);
        // payload ciphertext unchanged by rewrap
        assert_eq!(
            rewrapped[HEADER_LEN - NONCE_LEN..],
            sealed[HEADER_LEN - NONCE_LEN..]
        );
        let retired = Keyring::new(key(2), vec![]);
        assert_eq!(retired.open(A, &rewrapped).unwrap().as_slice(), b"secret");
        assert_eq!(
            retired.open(A, &sealed).unwrap_err(),
            EnvelopeError::UnknownKey(key(1).kek_id())
        );
    }

    #[test]
    fn audit_keys_are_derived_per_master_key_and_found_by_id() {
        let ring = Keyring::new(key(2), vec![key(1)]);
        let active = ring.audit_key();
        assert_eq!(active.kek_id(), key(2).kek_id());
        let old = ring
            .audit_key_for(&key(1).kek_id())
            .expect("a previous key is held");
        assert_eq!(old.kek_id(), key(1).kek_id());
        assert_ne!(active.mac(b"m"), old.mac(b"m"), "one key per master key");
        assert_ne!(
            *active.key, [2u8; 32],
            "derived, never the master key itself"
        );
        assert!(ring.audit_key_for("kek-0000000000000000").is_none());
        // HMAC-SHA256(master, label): stable across processes
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[2u8; 32]).expect("key");
        mac.update(AUDIT_KEY_LABEL);
        assert_eq!(
            active.key.as_slice(),
            mac.finalize().into_bytes().as_slice()
        );
        assert!(!format!("{active:?}").contains("key: "), "{active:?}");
    }

    #[test]
    fn forged_key_version_fails() {
        let ring = Keyring::new(key(2), vec![key(1)]);
        let sealed = ring.seal(A, b"secret");
        // claim the envelope was sealed by the other held key
        let mut forged = sealed.clone();
        forged[1..9].copy_from_slice(&fingerprint(&[1; 32]).to_be_bytes());
        assert_eq!(
            ring.open(A, &forged).unwrap_err(),
            EnvelopeError::Authentication
        );
        // or by a key nobody holds
        forged[1..9].copy_from_slice(&99u64.to_be_bytes());
        assert!(matches!(
            ring.open(A, &forged),
            Err(EnvelopeError::UnknownKey(_))
        ));
    }
}
