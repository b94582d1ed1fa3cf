//! The Go memtrace's formats, for migrating from it and for serving its keys.
//!
//! * Legacy API keys: `mtk_` + the URL-safe base64 (with padding) of 32
//!   random bytes — 48 characters, ending in `=`. The Go server stored a
//!   bcrypt hash of the whole key and, to find it, `key_prefix`: the first 16
//!   hex characters of the SHA-256 of the whole key. memtrace keeps both: an
//!   imported key's id is `key_<prefix>` (the shape of our own key ids), so a
//!   worker finds it in O(1) from the presented key alone.
//! * Legacy Arc API keys: AES-256-GCM under the Go server's master key (the
//!   base64 of 32 bytes in `MEMTRACE_MASTER_KEY`), a 12-byte nonce stored
//!   apart from the ciphertext, no associated data.

use crate::credentials::API_KEY_PREFIX;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Length of a legacy API key: `mtk_` + 44 base64 characters.
pub const LEGACY_KEY_LEN: usize = API_KEY_PREFIX.len() + 44;
/// Hex characters of a legacy key's lookup prefix.
pub const LEGACY_PREFIX_HEX: usize = 16;

/// A presented key in the legacy format: its lookup id and the SHA-256 of
/// the whole key (what a verified key is remembered by; never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyKey {
    /// `key_<first 16 hex of sha256(key)>`.
    pub key_id: String,
    pub digest: [u8; 32],
}

/// Whether `token` has the legacy format (`mtk_` + the padded URL-safe
/// base64 of exactly 32 bytes); its id and digest if so.
pub fn parse_legacy_api_key(token: &str) -> Option<LegacyKey> {
    let body = token.strip_prefix(API_KEY_PREFIX)?;
    if token.len() != LEGACY_KEY_LEN || !body.ends_with('=') {
        return None;
    }
    let decoded = Zeroizing::new(URL_SAFE.decode(body).ok()?);
    if decoded.len() != 32 {
        return None;
    }
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    Some(LegacyKey {
        key_id: legacy_key_id(&hex::encode(&digest[..LEGACY_PREFIX_HEX / 2])),
        digest,
    })
}

/// The id memtrace gives an imported key of `prefix` (`key_<prefix>`).
pub fn legacy_key_id(prefix: &str) -> String {
    format!("key_{prefix}")
}

/// Whether `prefix` is a legacy lookup prefix: 16 lowercase hex characters.
pub fn is_legacy_prefix(prefix: &str) -> bool {
    prefix.len() == LEGACY_PREFIX_HEX
        && prefix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `hash` looks like a bcrypt hash (`$2a$`, `$2b$` or `$2y$`, a
/// two-digit cost, 53 characters of salt and hash): checked before a hash
/// is stored, so a worker never meets a hash it cannot use.
pub fn is_bcrypt_hash(hash: &str) -> bool {
    let b = hash.as_bytes();
    hash.len() == 60
        && (hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && b[6] == b'$'
        && b[7..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/')
}

/// Why a legacy Arc key could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacySecretError {
    #[error("api_key_nonce must be 12 bytes, it is {0}")]
    Nonce(usize),
    #[error(
        "api_key_cipher does not open under the legacy master key (wrong key, or the row was altered)"
    )]
    Open,
    #[error("the decrypted Arc API key is not UTF-8")]
    NotText,
}

/// Opens a legacy `api_key_cipher` with its `api_key_nonce` under the
/// legacy master key (AES-256-GCM, no associated data).
pub fn open_legacy_secret(
    master: &[u8; 32],
    cipher: &[u8],
    nonce: &[u8],
) -> Result<Zeroizing<String>, LegacySecretError> {
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| LegacySecretError::Nonce(nonce.len()))?;
    let plain = Zeroizing::new(
        Aes256Gcm::new(master.into())
            .decrypt(&Nonce::from(nonce), cipher)
            .map_err(|_| LegacySecretError::Open)?,
    );
    String::from_utf8(plain.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| LegacySecretError::NotText)
}

/// Seals `plain` as the Go server did (for tests that build a legacy
/// database): the ciphertext and the random nonce.
pub fn seal_legacy_secret(master: &[u8; 32], plain: &[u8]) -> (Vec<u8>, [u8; 12]) {
    let mut nonce = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
    let cipher = Aes256Gcm::new(master.into())
        .encrypt(&Nonce::from(nonce), plain)
        .expect("AES-GCM encryption of a short secret cannot fail");
    (cipher, nonce)
}

/// A fresh key in the legacy format (tests; the Go server's generator).
pub fn generate_legacy_api_key() -> Zeroizing<String> {
    let mut secret = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rng(), secret.as_mut());
    Zeroizing::new(format!(
        "{API_KEY_PREFIX}{}",
        URL_SAFE.encode(secret.as_ref())
    ))
}

/// The Go server's `key_prefix` of `token`.
pub fn legacy_prefix(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..LEGACY_PREFIX_HEX / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{generate_api_key, parse_api_key};

    #[test]
    fn legacy_keys_parse_and_ours_do_not() {
        let key = generate_legacy_api_key();
        assert_eq!(key.len(), LEGACY_KEY_LEN);
        assert!(key.ends_with('='));
        let parsed = parse_legacy_api_key(&key).expect("legacy key");
        assert_eq!(parsed.key_id, format!("key_{}", legacy_prefix(&key)));
        assert_eq!(
            parsed.digest,
            <[u8; 32]>::from(Sha256::digest(key.as_bytes()))
        );
        // the two formats never overlap
        assert!(parse_api_key(&key).is_err());
        let ours = generate_api_key();
        assert!(parse_legacy_api_key(&ours.token).is_none());
        // not 32 bytes, no padding, other alphabet, wrong prefix
        assert!(parse_legacy_api_key("mtk_AAAA").is_none());
        let unpadded = format!("mtk_{}", &key[4..47]);
        assert!(parse_legacy_api_key(&unpadded).is_none());
        let standard = format!("mtk_{}+{}", &key[4..20], &key[21..]);
        assert!(parse_legacy_api_key(&standard).is_none());
        assert!(parse_legacy_api_key(&format!("mta_{}", &key[4..])).is_none());
    }

    #[test]
    fn prefixes_and_bcrypt_shapes() {
        assert!(is_legacy_prefix("0123456789abcdef"));
        assert!(!is_legacy_prefix("0123456789ABCDEF"));
        assert!(!is_legacy_prefix("0123"));
        let hash = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";
        assert!(is_bcrypt_hash(hash));
        assert!(!is_bcrypt_hash(&hash.replace("$2a$", "$3a$")));
        assert!(!is_bcrypt_hash(&hash[..59]));
    }

    #[test]
    fn legacy_secrets_open_under_their_master_key_only() {
        let master = [7u8; 32];
        let (cipher, nonce) = seal_legacy_secret(&master, b"arc-token");
        let opened = open_legacy_secret(&master, &cipher, &nonce).unwrap();
        assert_eq!(opened.as_str(), "arc-token");
        assert_eq!(
            open_legacy_secret(&[8u8; 32], &cipher, &nonce),
            Err(LegacySecretError::Open)
        );
        assert_eq!(
            open_legacy_secret(&master, &cipher, &nonce[..11]),
            Err(LegacySecretError::Nonce(11))
        );
        let mut altered = cipher.clone();
        altered[0] ^= 1;
        assert_eq!(
            open_legacy_secret(&master, &altered, &nonce),
            Err(LegacySecretError::Open)
        );
    }
}
