//! Identifier generation: `<prefix>_<24 lowercase hex>` from 12 random bytes,
//! the shape the original memtrace uses (`org_`, `arc_`, `agent_`, `sess_`).

use rand::RngCore;

/// A fresh random id such as `org_5f1c0e9a4b7d2c8e1a3f6b90`.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// Whether `value` is `<prefix>_` followed by 1 to 64 characters of
/// `[A-Za-z0-9_]` (covers generated ids and fixed ones like `org_default`).
pub fn is_valid_id(prefix: &str, value: &str) -> bool {
    let Some(rest) = value
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
    else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 64
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_prefix_and_24_hex() {
        let id = new_id("org");
        assert!(id.starts_with("org_"));
        assert_eq!(id.len(), 4 + 24);
        assert!(id[4..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(is_valid_id("org", &id));
        assert_ne!(new_id("org"), id);
    }

    #[test]
    fn id_validation() {
        assert!(is_valid_id("org", "org_default"));
        assert!(!is_valid_id("org", "org_"));
        assert!(!is_valid_id("org", "arc_123"));
        assert!(!is_valid_id("org", "org_a'b"));
        assert!(!is_valid_id("org", "orgx_abc"));
    }
}
