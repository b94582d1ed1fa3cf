//! Sealing of the secrets workers need (Arc API keys) for transport through
//! the state bus: XChaCha20-Poly1305 under the fleet key
//! (`MEMTRACE_FLEET_KEY`), which the control plane and the workers hold. The
//! master key never leaves the control plane; etcd alone reveals nothing.
//!
//! Layout (format 1): `0x01 | nonce (24) | ciphertext+tag`. The associated data
//! binds the org, the record, the purpose and the fleet key's fingerprint, so a
//! sealed value moved to another org or record, or claimed for another key,
//! fails to open.
//!
//! The nonce is synthetic (SIV-style): an HMAC, under a key derived from the
//! fleet key, of the associated data and the plaintext. Sealing the same value
//! for the same record twice gives the same bytes, so the control plane's
//! reconciler can compare published state byte for byte; distinct values or
//! records never share a nonce. The only thing this reveals is equality of
//! (record, value) pairs, which the record's key already implies.

use crate::envelope::{Binding, EnvelopeError};
use crate::keys::{KeyError, NamedKey, parse_key, parse_key_list};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;

/// One fleet key.
pub struct FleetKey {
    id: String,
    cipher: XChaCha20Poly1305,
    nonce_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl FleetKey {
    pub fn new(key: &[u8; 32]) -> Self {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac accepts any key length");
        mac.update(b"memtrace/fleet-key-id/v1");
        let digest = mac.finalize().into_bytes();
        let mut nonce_mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac accepts any key length");
        nonce_mac.update(b"memtrace/fleet-nonce-key/v1");
        let mut nonce_key = Zeroizing::new([0u8; 32]);
        nonce_key.copy_from_slice(&nonce_mac.finalize().into_bytes());
        Self {
            id: format!("fleet-{}", hex::encode(&digest[..8])),
            cipher: XChaCha20Poly1305::new(key.into()),
            nonce_key,
        }
    }

    /// Public fingerprint, written next to every sealed value.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aad(&self, binding: Binding<'_>) -> Vec<u8> {
        let mut aad = b"memtrace/fleet/v1".to_vec();
        for part in [
            self.id.as_str(),
            binding.org_id,
            binding.record_id,
            binding.purpose,
        ] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }

    pub fn seal(&self, binding: Binding<'_>, plaintext: &[u8]) -> Vec<u8> {
        let aad = self.aad(binding);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.nonce_key.as_ref())
            .expect("hmac accepts any key length");
        mac.update(&(aad.len() as u64).to_be_bytes());
        mac.update(&aad);
        mac.update(plaintext);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&mac.finalize().into_bytes()[..NONCE_LEN]);
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("xchacha20-poly1305 seals any message shorter than 256 GiB");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    fn open_with(
        &self,
        binding: Binding<'_>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        if sealed.len() < 1 + NONCE_LEN + 16 {
            return Err(EnvelopeError::Malformed("sealed value too short"));
        }
        if sealed[0] != FORMAT_V1 {
            return Err(EnvelopeError::Malformed("unknown sealed format"));
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..=NONCE_LEN]
            .try_into()
            .map_err(|_| EnvelopeError::Malformed("bad nonce"))?;
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad: &self.aad(binding),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| EnvelopeError::Authentication)
    }
}

/// The fleet keys a process holds: the active one seals, all of them open.
#[derive(Debug)]
pub struct FleetKeyring {
    active: FleetKey,
    previous: Vec<FleetKey>,
}

impl FleetKeyring {
    pub fn new(active: FleetKey, previous: Vec<FleetKey>) -> Self {
        Self { active, previous }
    }

    pub fn active(&self) -> &FleetKey {
        &self.active
    }

    /// Opens a value sealed by the key with fingerprint `key_id`.
    pub fn open(
        &self,
        key_id: &str,
        binding: Binding<'_>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        std::iter::once(&self.active)
            .chain(&self.previous)
            .find(|k| k.id == key_id)
            .ok_or_else(|| EnvelopeError::UnknownKey(key_id.to_owned()))?
            .open_with(binding, sealed)
    }
}

/// `MEMTRACE_FLEET_KEY`: the fleet key (base64 of 32 bytes).
pub const FLEET_KEY_VAR: &str = "MEMTRACE_FLEET_KEY";
/// `MEMTRACE_FLEET_KEYS_PREVIOUS`: comma-separated older fleet keys (open only).
pub const PREVIOUS_FLEET_KEYS_VAR: &str = "MEMTRACE_FLEET_KEYS_PREVIOUS";

/// A fleet keyring read from the environment, with every raw key in it
/// (the active one first), so the control plane can refuse a fleet key
/// that is also one of its master keys.
pub type FromEnv = (FleetKeyring, Vec<NamedKey>);

/// The fleet keyring from the environment, `None` when `MEMTRACE_FLEET_KEY`
/// is unset.
pub fn keyring_from_env(env: &crate::config::Env) -> Result<Option<FromEnv>, KeyError> {
    let Some(value) = env.get(FLEET_KEY_VAR) else {
        return Ok(None);
    };
    let active = NamedKey {
        var: FLEET_KEY_VAR.to_owned(),
        key: parse_key(FLEET_KEY_VAR, Some(value))?,
    };
    let previous = parse_key_list(PREVIOUS_FLEET_KEYS_VAR, env.get(PREVIOUS_FLEET_KEYS_VAR))?;
    let ring = FleetKeyring::new(
        FleetKey::new(&active.key),
        previous.iter().map(|k| FleetKey::new(&k.key)).collect(),
    );
    Ok(Some((
        ring,
        std::iter::once(active).chain(previous).collect(),
    )))
}

/// A fleet keyring with a random key, for a single process that both
/// publishes and consumes (single-node mode without etcd).
pub fn ephemeral_keyring() -> FleetKeyring {
    use rand::RngCore;
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(key.as_mut());
    FleetKeyring::new(FleetKey::new(&key), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Binding<'static> = Binding {
        org_id: "org_a",
        record_id: "arc_1",
        purpose: "arc.api_key",
    };

    #[test]
    fn seal_open_and_bindings() {
        let ring = FleetKeyring::new(FleetKey::new(&[7; 32]), vec![]);
        let id = ring.active().id().to_owned();
        let sealed = ring.active().seal(B, b"arc-key");
        assert!(!sealed.windows(7).any(|w| w == b"arc-key"));
        assert_eq!(
            ring.active().seal(B, b"arc-key"),
            sealed,
            "deterministic for the same record and value"
        );
        assert_ne!(
            ring.active().seal(B, b"arc-kez")[1..25],
            sealed[1..25],
            "another value gets another nonce"
        );
        assert_ne!(
            ring.active().seal(
                Binding {
                    record_id: "arc_9",
                    ..B
                },
                b"arc-key"
            )[1..25],
            sealed[1..25]
        );
        assert_eq!(ring.open(&id, B, &sealed).unwrap().as_slice(), b"arc-key");
        for other in [
            Binding {
                org_id: "org_b",
                ..B
            },
            Binding {
                record_id: "arc_2",
                ..B
            },
            Binding { purpose: "x", ..B },
        ] {
            assert_eq!(
                ring.open(&id, other, &sealed).unwrap_err(),
                EnvelopeError::Authentication
            );
        }
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(ring.open(&id, B, &tampered).is_err());
        assert!(matches!(
            ring.open("fleet-nope", B, &sealed),
            Err(EnvelopeError::UnknownKey(_))
        ));
    }

    #[test]
    fn previous_keys_open_and_claimed_ids_are_bound() {
        let old = FleetKey::new(&[1; 32]);
        let sealed = old.seal(B, b"v");
        let old_id = old.id().to_owned();
        let ring = FleetKeyring::new(FleetKey::new(&[2; 32]), vec![old]);
        assert_eq!(ring.open(&old_id, B, &sealed).unwrap().as_slice(), b"v");
        // claiming the active key for a value the old key sealed fails
        let active_id = ring.active().id().to_owned();
        assert!(ring.open(&active_id, B, &sealed).is_err());
    }
}
