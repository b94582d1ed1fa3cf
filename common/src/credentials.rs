//! Formats of the bearer credentials memtrace issues.
//!
//! * API keys (data plane): `mtk_<key id: 16 hex><secret: 64 hex><crc32: 8 hex>`.
//!   The key id is public and indexes the key in O(1); the 256-bit secret never
//!   leaves the response that created it; the CRC32 lets a malformed or
//!   mistyped key be refused without any lookup. Only a SHA-256 hash of the
//!   whole key is stored or distributed.
//! * Admin tokens (control plane): `mta_<token id: 16 hex><secret: 64 hex><crc32: 8 hex>`
//!   when generated, the same design as API keys: the id (`adm_<16 hex>`) is
//!   public and indexes the token, only a SHA-256 hash of the whole token is
//!   stored. Tokens of other shapes stay valid: an operator-chosen bootstrap
//!   string of at least 32 characters (`MEMTRACE_BOOTSTRAP_ADMIN_TOKEN`) and
//!   the earlier generated form `mta_<64 hex><8 hex>` carry no id, so theirs
//!   is derived from their hash (`adm_` + the first 8 bytes in hex), which is
//!   what the database migration gave the tokens stored before ids existed.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub const API_KEY_PREFIX: &str = "mtk_";
pub const ADMIN_TOKEN_PREFIX: &str = "mta_";
const KEY_ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;
const CRC_HEX: usize = 8;
const API_KEY_LEN: usize = API_KEY_PREFIX.len() + KEY_ID_HEX + SECRET_HEX + CRC_HEX;
const ADMIN_TOKEN_LEN: usize = ADMIN_TOKEN_PREFIX.len() + KEY_ID_HEX + SECRET_HEX + CRC_HEX;
/// Prefix of the public id of an admin token.
pub const ADMIN_TOKEN_ID_PREFIX: &str = "adm_";
/// The shortest admin token an operator may choose.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// Why a presented API key was refused before any lookup.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiKeyFormatError {
    #[error("api key must start with \"mtk_\"")]
    Prefix,
    #[error("api key must be {API_KEY_LEN} characters long")]
    Length,
    #[error("api key may only contain lowercase hex after \"mtk_\"")]
    Charset,
    #[error("api key checksum does not match (mistyped or truncated key)")]
    Checksum,
}

/// A freshly generated API key. `token` is the full secret, shown once.
pub struct NewApiKey {
    pub key_id: String,
    pub token: Zeroizing<String>,
    pub hash: [u8; 32],
}

/// A presented API key that passed the offline format checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedApiKey {
    pub key_id: String,
    pub hash: [u8; 32],
}

/// Generates a new API key.
pub fn generate_api_key() -> NewApiKey {
    let mut id = [0u8; KEY_ID_HEX / 2];
    let mut secret = Zeroizing::new([0u8; SECRET_HEX / 2]);
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(secret.as_mut());
    let id_hex = hex::encode(id);
    let body = Zeroizing::new(format!(
        "{API_KEY_PREFIX}{id_hex}{}",
        hex::encode(secret.as_ref())
    ));
    let token = Zeroizing::new(format!(
        "{}{:08x}",
        body.as_str(),
        crc32fast::hash(body.as_bytes())
    ));
    NewApiKey {
        key_id: format!("key_{id_hex}"),
        hash: hash_api_key(&token),
        token,
    }
}

/// Checks prefix, length, charset and checksum; returns the key id and hash.
pub fn parse_api_key(token: &str) -> Result<ParsedApiKey, ApiKeyFormatError> {
    let rest = token
        .strip_prefix(API_KEY_PREFIX)
        .ok_or(ApiKeyFormatError::Prefix)?;
    if token.len() != API_KEY_LEN {
        return Err(ApiKeyFormatError::Length);
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApiKeyFormatError::Charset);
    }
    let (body, crc) = token.split_at(API_KEY_LEN - CRC_HEX);
    if format!("{:08x}", crc32fast::hash(body.as_bytes())) != crc {
        return Err(ApiKeyFormatError::Checksum);
    }
    Ok(ParsedApiKey {
        key_id: format!("key_{}", &rest[..KEY_ID_HEX]),
        hash: hash_api_key(token),
    })
}

/// Whether `token` looks like a data-plane API key (used to refuse it on the admin API).
pub fn looks_like_api_key(token: &str) -> bool {
    token.starts_with(API_KEY_PREFIX)
}

/// SHA-256 of the whole key, domain separated.
pub fn hash_api_key(token: &str) -> [u8; 32] {
    domain_hash(b"memtrace/api-key/v1", token)
}

/// Constant-time comparison of two hashes.
pub fn hashes_match(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A freshly generated admin token. `token` is the full secret, shown once.
pub struct NewAdminToken {
    pub token_id: String,
    pub token: Zeroizing<String>,
    pub hash: [u8; 32],
}

/// Why a presented admin token was refused before any lookup.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum AdminTokenFormatError {
    #[error("admin token checksum does not match (mistyped or truncated token)")]
    Checksum,
}

/// A presented admin token: the id to look it up by and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedAdminToken {
    pub token_id: String,
    pub hash: [u8; 32],
}

/// Generates a new admin token with its id.
pub fn new_admin_token() -> NewAdminToken {
    let mut id = [0u8; KEY_ID_HEX / 2];
    let mut secret = Zeroizing::new([0u8; SECRET_HEX / 2]);
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(secret.as_mut());
    let id_hex = hex::encode(id);
    let body = Zeroizing::new(format!(
        "{ADMIN_TOKEN_PREFIX}{id_hex}{}",
        hex::encode(secret.as_ref())
    ));
    let token = Zeroizing::new(format!(
        "{}{:08x}",
        body.as_str(),
        crc32fast::hash(body.as_bytes())
    ));
    NewAdminToken {
        token_id: format!("{ADMIN_TOKEN_ID_PREFIX}{id_hex}"),
        hash: hash_admin_token(&token),
        token,
    }
}

/// Generates a new admin token (the string only).
pub fn generate_admin_token() -> Zeroizing<String> {
    new_admin_token().token
}

/// The id and hash of a presented admin token. A token of the generated
/// shape carries its id (and is refused offline when its checksum does not
/// match); any other string gets the id derived from its hash (module docs).
pub fn identify_admin_token(token: &str) -> Result<PresentedAdminToken, AdminTokenFormatError> {
    let hash = hash_admin_token(token);
    let generated_shape = token.len() == ADMIN_TOKEN_LEN
        && token.strip_prefix(ADMIN_TOKEN_PREFIX).is_some_and(|rest| {
            rest.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    let token_id = if generated_shape {
        let (body, crc) = token.split_at(ADMIN_TOKEN_LEN - CRC_HEX);
        if format!("{:08x}", crc32fast::hash(body.as_bytes())) != crc {
            return Err(AdminTokenFormatError::Checksum);
        }
        let start = ADMIN_TOKEN_PREFIX.len();
        format!(
            "{ADMIN_TOKEN_ID_PREFIX}{}",
            &token[start..start + KEY_ID_HEX]
        )
    } else {
        legacy_admin_token_id(&hash)
    };
    Ok(PresentedAdminToken { token_id, hash })
}

/// The id of a token that carries none: `adm_` + the first 8 bytes of its
/// hash in hex (the database migration computes the same in SQL).
pub fn legacy_admin_token_id(hash: &[u8; 32]) -> String {
    format!(
        "{ADMIN_TOKEN_ID_PREFIX}{}",
        hex::encode(&hash[..KEY_ID_HEX / 2])
    )
}

/// SHA-256 of an admin token, domain separated.
pub fn hash_admin_token(token: &str) -> [u8; 32] {
    domain_hash(b"memtrace/admin-token/v1", token)
}

/// A short, non-reversible fingerprint of a credential, for audit and logs.
pub fn credential_fingerprint(token: &str) -> String {
    let digest = domain_hash(b"memtrace/fingerprint/v1", token);
    format!("fp-{}", hex::encode(&digest[..8]))
}

/// Masks a secret for display: first four and last four characters.
pub fn mask_secret(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 8 {
        return "***".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}***{tail}")
}

fn domain_hash(domain: &[u8], value: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    hasher.update([0u8]);
    hasher.update(value.as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_parse_to_their_id_and_hash() {
        let key = generate_api_key();
        assert!(key.token.starts_with("mtk_"));
        assert_eq!(key.token.len(), API_KEY_LEN);
        let parsed = parse_api_key(&key.token).unwrap();
        assert_eq!(parsed.key_id, key.key_id);
        assert!(hashes_match(&parsed.hash, &key.hash));
        assert_ne!(generate_api_key().token.as_str(), key.token.as_str());
    }

    #[test]
    fn malformed_keys_are_refused_offline() {
        let key = generate_api_key();
        let token = key.token.as_str();
        assert_eq!(parse_api_key("abc"), Err(ApiKeyFormatError::Prefix));
        assert_eq!(
            parse_api_key(&token[..token.len() - 1]),
            Err(ApiKeyFormatError::Length)
        );
        let upper = format!("mtk_{}", token[4..].to_uppercase());
        assert!(parse_api_key(&upper).is_err());
        // flip one hex digit of the secret
        let mut chars: Vec<char> = token.chars().collect();
        chars[30] = if chars[30] == '0' { '1' } else { '0' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(parse_api_key(&typo), Err(ApiKeyFormatError::Checksum));
    }

    #[test]
    fn masking_and_fingerprints() {
        assert_eq!(mask_secret("abcd1234wxyz"), "abcd***wxyz");
        assert_eq!(mask_secret("short"), "***");
        let token = generate_admin_token();
        let fp = credential_fingerprint(&token);
        assert!(fp.starts_with("fp-") && !token.contains(&fp[3..]));
        assert_eq!(fp, credential_fingerprint(&token));
        assert_ne!(hash_admin_token(&token), hash_api_key(&token));
    }

    #[test]
    fn generated_admin_tokens_carry_their_id() {
        let new = new_admin_token();
        assert!(new.token.starts_with("mta_"));
        assert_eq!(new.token.len(), ADMIN_TOKEN_LEN);
        assert!(new.token_id.starts_with("adm_") && new.token_id.len() == 20);
        let presented = identify_admin_token(&new.token).unwrap();
        assert_eq!(presented.token_id, new.token_id);
        assert!(hashes_match(&presented.hash, &new.hash));
        assert_ne!(new_admin_token().token_id, new.token_id);
    }

    #[test]
    fn other_admin_tokens_get_an_id_from_their_hash() {
        // the earlier generated form and an operator-chosen bootstrap string
        let earlier = format!("mta_{}", "ab".repeat(32) + "0badc0de");
        let chosen = "operator-chosen-bootstrap-token-0123456789";
        for token in [earlier.as_str(), chosen] {
            let presented = identify_admin_token(token).unwrap();
            let hash = hash_admin_token(token);
            assert_eq!(presented.token_id, legacy_admin_token_id(&hash));
            assert_eq!(
                presented.token_id,
                format!("adm_{}", hex::encode(&hash[..8]))
            );
        }
        // a mistyped generated token is refused before any lookup
        let token = new_admin_token().token;
        let mut chars: Vec<char> = token.chars().collect();
        chars[40] = if chars[40] == '0' { '1' } else { '0' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(
            identify_admin_token(&typo),
            Err(AdminTokenFormatError::Checksum)
        );
    }

    proptest! {
        #[test]
        fn random_strings_never_parse(s in "mtk_[0-9a-f]{88}") {
            // a random body has a 2^-32 chance of a valid checksum
            prop_assume!(format!("{:08x}", crc32fast::hash(&s.as_bytes()[..s.len() - 8])) != s[s.len() - 8..]);
            prop_assert_eq!(parse_api_key(&s), Err(ApiKeyFormatError::Checksum));
        }
    }
}
