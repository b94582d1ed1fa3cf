//! Parsing of 32-byte symmetric keys given as base64 in environment variables
//! (`MEMTRACE_MASTER_KEY`, `MEMTRACE_FLEET_KEY`). Errors name the variable and
//! the rule, never the value.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use zeroize::Zeroizing;

/// Why a key variable was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{var} is not set; generate one with `memtracectl keygen master` and export it")]
    Missing { var: String },
    #[error("{var} is not valid base64 (expected the base64 encoding of 32 random bytes)")]
    NotBase64 { var: String },
    #[error("{var} must decode to exactly 32 bytes, it decodes to {len}")]
    WrongLength { var: String, len: usize },
}

/// Decodes `value` (standard or URL-safe base64, padding optional) into 32 bytes.
pub fn parse_key(var: &str, value: Option<&str>) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let value = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| KeyError::Missing {
            var: var.to_owned(),
        })?;
    let padded = Zeroizing::new(pad(value));
    let decoded = Zeroizing::new(
        STANDARD
            .decode(padded.as_bytes())
            .or_else(|_| URL_SAFE.decode(padded.as_bytes()))
            .map_err(|_| KeyError::NotBase64 {
                var: var.to_owned(),
            })?,
    );
    let key: [u8; 32] = decoded
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::WrongLength {
            var: var.to_owned(),
            len: decoded.len(),
        })?;
    Ok(Zeroizing::new(key))
}

/// A key read from the environment, with the variable (and entry) it came
/// from, so a rule broken by two keys can name both.
pub struct NamedKey {
    /// `MEMTRACE_…`, or `MEMTRACE_…_PREVIOUS (entry n)` for a list entry.
    pub var: String,
    pub key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedKey")
            .field("var", &self.var)
            .finish_non_exhaustive()
    }
}

/// Parses `value`, a comma-separated list of keys (blank entries skipped),
/// each named `{var} (entry n)`, n counted from 1.
pub fn parse_key_list(var: &str, value: Option<&str>) -> Result<Vec<NamedKey>, KeyError> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, item)| {
            let var = format!("{var} (entry {})", i + 1);
            let key = parse_key(&var, Some(item))?;
            Ok(NamedKey { var, key })
        })
        .collect()
}

/// A fresh random 32-byte key, base64 (standard alphabet, padded).
pub fn generate_key_b64() -> String {
    use rand::RngCore;
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(key.as_mut());
    STANDARD.encode(key.as_ref())
}

fn pad(value: &str) -> String {
    let mut padded = value.to_owned();
    while !padded.len().is_multiple_of(4) {
        padded.push('=');
    }
    padded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse() {
        let key = generate_key_b64();
        assert_eq!(parse_key("K", Some(&key)).map(|k| k.len()), Ok(32));
        let unpadded = key.trim_end_matches('=');
        assert!(parse_key("K", Some(unpadded)).is_ok());
    }

    #[test]
    fn key_lists_name_each_entry() {
        let (a, b) = (generate_key_b64(), generate_key_b64());
        assert!(parse_key_list("K", None).unwrap().is_empty());
        let keys = parse_key_list("K", Some(&format!(" {a}, ,{b} "))).unwrap();
        let vars: Vec<&str> = keys.iter().map(|k| k.var.as_str()).collect();
        assert_eq!(vars, ["K (entry 1)", "K (entry 2)"]);
        assert_eq!(keys[0].key, parse_key("K", Some(&a)).unwrap());
        let bad = parse_key_list("K", Some(&format!("{a},not base64 !!"))).unwrap_err();
        assert_eq!(
            bad,
            KeyError::NotBase64 {
                var: "K (entry 2)".into()
            }
        );
    }

    #[test]
    fn errors_name_the_variable_and_rule() {
        let missing = parse_key("MEMTRACE_MASTER_KEY", None).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("MEMTRACE_MASTER_KEY is not set")
        );
        let bad = parse_key("MEMTRACE_MASTER_KEY", Some("not base64 !!")).unwrap_err();
        assert_eq!(
            bad,
            KeyError::NotBase64 {
                var: "MEMTRACE_MASTER_KEY".into()
            }
        );
        let short =
            parse_key("MEMTRACE_MASTER_KEY", Some(&STANDARD.encode([1u8; 16]))).unwrap_err();
        assert!(
            short
                .to_string()
                .contains("exactly 32 bytes, it decodes to 16")
        );
    }
}
