//! An Ed25519 signing key with its id: what signs erasure receipts
//! (`rk_<version>`, [`crate::receipt`]) and agent tokens (`tk_<version>`,
//! [`crate::token`]). One type for both so the handling of the private
//! seed (zeroized, never in `Debug`) is written once; the two kinds of keys
//! are never the same key (each has its own versions, ids and envelope
//! purpose in the control plane).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 signing key with its id. The seed never appears in `Debug`.
pub struct SigningKey {
    key_id: String,
    seed: Zeroizing<[u8; 32]>,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from 32 random bytes.
    pub fn generate(key_id: impl Into<String>) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rng(), seed.as_mut());
        Self::from_seed(key_id, &seed)
    }

    /// The key of a stored 32-byte seed (RFC 8032 private key).
    pub fn from_seed(key_id: impl Into<String>, seed: &[u8; 32]) -> Self {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .expect("every 32-byte string is an Ed25519 seed");
        Self {
            key_id: key_id.into(),
            seed: Zeroizing::new(*seed),
            pair,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The private seed, to be sealed for storage. Never log it.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    pub fn public_key_base64(&self) -> String {
        STANDARD.encode(self.public_key())
    }

    /// The Ed25519 signature of `message`.
    pub fn sign_bytes(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}
