//! Sealing of the secrets workers need (Arc API keys) for transport through
//! the state bus: XChaCha20-Poly1305 under the fleet key
//! (`MEMTRACE_FLEET_KEY`), which the control plane and the workers hold. The
//! master key never leaves the control plane; etcd alone reveals nothing.
//!
//! Layout (format 1): `0x01 | nonce (24) | ciphertext+tag`. The associated data
//! binds the org, the record, the purpose, the fleet key's fingerprint and a
//! context the caller names (for an Arc key: the route's URL and database),
//! so a sealed value moved to another org or record, claimed for another
//! key, or sent to another Arc than the one it was sealed for, fails to open.
//!
//! The fleet key also authenticates every published record
//! ([`FleetKey::record_tag`], checked by [`FleetKeyring::verify_record`]):
//! an HMAC-SHA256, under a key derived from the fleet key, of the record's
//! key path and bytes. Write access to etcd then grants nothing: a record a
//! worker cannot verify is refused.
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
    record_key: Zeroizing<[u8; 32]>,
    /// Seed of the fleet's token key ([`FleetKey::token_key`]).
    token_seed: Zeroizing<[u8; 32]>,
}

/// HMAC-SHA256 of `label` under `key`: a key derived for one purpose.
fn derive(key: &[u8], label: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(label);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// Length-prefixed parts (4-byte big-endian lengths), so no two lists of
/// parts encode alike.
fn put_parts(out: &mut Vec<u8>, parts: &[&str]) {
    for part in parts {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
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
        let digest = derive(key, b"memtrace/fleet-key-id/v1");
        Self {
            id: format!("fleet-{}", hex::encode(&digest[..8])),
            cipher: XChaCha20Poly1305::new(key.into()),
            nonce_key: derive(key, b"memtrace/fleet-nonce-key/v1"),
            record_key: derive(key, b"memtrace/fleet-record-key/v1"),
            token_seed: derive(key, b"memtrace/fleet-token-key/v1"),
        }
    }

    /// The Ed25519 key workers mint agent tokens with (`POST
    /// /api/v1/tokens`), derived from the fleet key: every holder of the
    /// fleet key (the control plane, every worker) has the same one, and
    /// nobody else. Its id is `wk_<fingerprint>`; the control plane
    /// publishes its public half with its own token keys. It grants a
    /// worker nothing it lacks: the fleet key already authenticates every
    /// record workers trust (API keys, orgs, token keys).
    pub fn token_key(&self) -> crate::signing::SigningKey {
        let fingerprint = self.id.strip_prefix("fleet-").unwrap_or(&self.id);
        crate::signing::SigningKey::from_seed(format!("wk_{fingerprint}"), &self.token_seed)
    }

    /// Public fingerprint, written next to every sealed value.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aad(&self, binding: Binding<'_>, context: &[&str]) -> Vec<u8> {
        let mut aad = b"memtrace/fleet/v2".to_vec();
        put_parts(
            &mut aad,
            &[
                self.id.as_str(),
                binding.org_id,
                binding.record_id,
                binding.purpose,
            ],
        );
        aad.extend_from_slice(&(context.len() as u32).to_be_bytes());
        put_parts(&mut aad, context);
        aad
    }

    /// The authentication tag of the record stored at `path` (the key
    /// relative to the state prefix) with bytes `record`.
    pub fn record_tag(&self, path: &str, record: &[u8]) -> [u8; 32] {
        self.record_mac(path, record).finalize().into_bytes().into()
    }

    fn record_mac(&self, path: &str, record: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.record_key.as_ref())
            .expect("hmac accepts any key length");
        let mut head = b"memtrace/record/v1".to_vec();
        put_parts(&mut head, &[self.id.as_str(), path]);
        mac.update(&head);
        mac.update(&(record.len() as u64).to_be_bytes());
        mac.update(record);
        mac
    }

    /// Seals `plaintext` for `binding` and `context` (see the module docs).
    pub fn seal(&self, binding: Binding<'_>, context: &[&str], plaintext: &[u8]) -> Vec<u8> {
        let aad = self.aad(binding, context);
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
        context: &[&str],
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
                    aad: &self.aad(binding, context),
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

    /// Every key, the active one first.
    pub fn keys(&self) -> impl Iterator<Item = &FleetKey> {
        std::iter::once(&self.active).chain(&self.previous)
    }

    fn key(&self, key_id: &str) -> Result<&FleetKey, EnvelopeError> {
        std::iter::once(&self.active)
            .chain(&self.previous)
            .find(|k| k.id == key_id)
            .ok_or_else(|| EnvelopeError::UnknownKey(key_id.to_owned()))
    }

    /// Opens a value sealed by the key with fingerprint `key_id` for
    /// `binding` and `context`.
    pub fn open(
        &self,
        key_id: &str,
        binding: Binding<'_>,
        context: &[&str],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        self.key(key_id)?.open_with(binding, context, sealed)
    }

    /// Checks `tag` against the record at `path` with bytes `record`, under
    /// the key with fingerprint `key_id` (constant time).
    pub fn verify_record(
        &self,
        key_id: &str,
        path: &str,
        record: &[u8],
        tag: &[u8],
    ) -> Result<(), EnvelopeError> {
        self.key(key_id)?
            .record_mac(path, record)
            .verify_slice(tag)
            .map_err(|_| EnvelopeError::Authentication)
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
    /// The route a key was sealed for.
    const C: &[&str] = &["http://arc:8000", "acme"];

    #[test]
    fn seal_open_and_bindings() {
        let ring = FleetKeyring::new(FleetKey::new(&[7; 32]), vec![]);
        let id = ring.active().id().to_owned();
        let sealed = ring.active().seal(B, C, b"arc-key");
        assert!(!sealed.windows(7).any(|w| w == b"arc-key"));
        assert_eq!(
            ring.active().seal(B, C, b"arc-key"),
            sealed,
            "deterministic for the same record and value"
        );
        assert_ne!(
            ring.active().seal(B, C, b"arc-kez")[1..25],
            sealed[1..25],
            "another value gets another nonce"
        );
        assert_ne!(
            ring.active().seal(
                Binding {
                    record_id: "arc_9",
                    ..B
                },
                C,
                b"arc-key"
            )[1..25],
            sealed[1..25]
        );
        assert_eq!(
            ring.open(&id, B, C, &sealed).unwrap().as_slice(),
            b"arc-key"
        );
        // another Arc (URL or database) than the one the key was sealed for
        for context in [
            &["http://evil:8000", "acme"][..],
            &["http://arc:8000", "other"][..],
            &["http://arc:8000"][..],
            &[][..],
        ] {
            assert_eq!(
                ring.open(&id, B, context, &sealed).unwrap_err(),
                EnvelopeError::Authentication
            );
        }
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
                ring.open(&id, other, C, &sealed).unwrap_err(),
                EnvelopeError::Authentication
            );
        }
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(ring.open(&id, B, C, &tampered).is_err());
        assert!(matches!(
            ring.open("fleet-nope", B, C, &sealed),
            Err(EnvelopeError::UnknownKey(_))
        ));
    }

    #[test]
    fn previous_keys_open_and_claimed_ids_are_bound() {
        let old = FleetKey::new(&[1; 32]);
        let sealed = old.seal(B, C, b"v");
        let old_id = old.id().to_owned();
        let tag = old.record_tag("keys/key_1", b"record");
        let ring = FleetKeyring::new(FleetKey::new(&[2; 32]), vec![old]);
        assert_eq!(ring.open(&old_id, B, C, &sealed).unwrap().as_slice(), b"v");
        assert_eq!(
            ring.verify_record(&old_id, "keys/key_1", b"record", &tag),
            Ok(())
        );
        // claiming the active key for a value the old key sealed fails
        let active_id = ring.active().id().to_owned();
        assert!(ring.open(&active_id, B, C, &sealed).is_err());
        assert!(
            ring.verify_record(&active_id, "keys/key_1", b"record", &tag)
                .is_err()
        );
    }

    #[test]
    fn record_tags_bind_the_path_and_the_bytes() {
        let ring = FleetKeyring::new(FleetKey::new(&[3; 32]), vec![]);
        let key = ring.active();
        let id = key.id().to_owned();
        let tag = key.record_tag("keys/key_1", b"record");
        assert_eq!(
            tag,
            key.record_tag("keys/key_1", b"record"),
            "deterministic"
        );
        assert_eq!(
            ring.verify_record(&id, "keys/key_1", b"record", &tag),
            Ok(())
        );
        for (path, record) in [("keys/key_2", &b"record"[..]), ("keys/key_1", b"recorD")] {
            assert_eq!(
                ring.verify_record(&id, path, record, &tag),
                Err(EnvelopeError::Authentication)
            );
        }
        assert!(
            ring.verify_record(&id, "keys/key_1", b"record", &tag[..31])
                .is_err()
        );
        // another fleet key's tag does not verify
        let other = FleetKey::new(&[4; 32]).record_tag("keys/key_1", b"record");
        assert!(
            ring.verify_record(&id, "keys/key_1", b"record", &other)
                .is_err()
        );
    }
}
