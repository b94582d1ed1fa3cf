//! API keys imported from the Go memtrace, in its format: `mtk_` + the
//! padded URL-safe base64 of 32 bytes (`memtrace_common::legacy_keys`).
//!
//! Such a key's id is `key_` + the first 16 hex of the SHA-256 of the key
//! (the Go server's `key_prefix`), so it is found in the snapshot in O(1)
//! like our own keys. Its secret is checked with bcrypt against the Go
//! server's hash — tens of milliseconds at the Go default cost — once per
//! key per worker: a success is remembered in a bounded cache keyed by the
//! SHA-256 of the whole presented key, together with the bcrypt hash it was
//! checked against, so a later request costs one SHA-256 and a map lookup.
//! A failed check is never remembered (nor could a different secret hit a
//! remembered one: the cache key is the digest of the whole key). An
//! unknown id costs no bcrypt at all, so guessing keys cannot make a worker
//! burn CPU: reaching the bcrypt step needs a key whose SHA-256 starts with
//! a published prefix. Revocation, expiry, the org's deletion and the org's
//! `auth.legacy_keys_enabled` are read from the snapshot on every request,
//! cached or not.
//!
//! Every response to such a key carries [`DEPRECATION`] and [`WARNING`]
//! (REST headers, gRPC metadata), and [`LegacyRequests`] counts the
//! requests admitted with one per org (`memtrace_legacy_key_requests_total`).

use super::auth::{AuthError, InvalidKey, Principal, principal_of};
use crate::snapshot::Snapshot;
use memtrace_common::legacy_keys::{LEGACY_KEY_LEN, LegacyKey};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// The `Deprecation` header (value `true`) on every response to a legacy key.
pub const DEPRECATION: (&str, &str) = ("deprecation", "true");
/// The `Warning` header on every response to a legacy key.
pub const WARNING: (&str, &str) = (
    "warning",
    "299 - \"legacy memtrace API key; rotate with memtracectl key create\"",
);

/// Adds [`DEPRECATION`] and [`WARNING`] to `headers` (REST response
/// headers; gRPC response metadata and trailers).
pub fn mark(headers: &mut axum::http::HeaderMap) {
    for (name, value) in [DEPRECATION, WARNING] {
        headers.insert(
            axum::http::HeaderName::from_static(name),
            axum::http::HeaderValue::from_static(value),
        );
    }
}

/// Most verified keys one worker remembers.
pub const CACHE_CAPACITY: usize = 10_000;

/// A key whose secret bcrypt verified: the id and hash it matched.
#[derive(Clone, PartialEq, Eq)]
struct Verified {
    key_id: String,
    bcrypt_hash: String,
}

/// Verified keys by the SHA-256 of the whole key (bounded; see module docs).
#[derive(Default)]
pub struct VerifiedCache {
    entries: Mutex<HashMap<[u8; 32], Verified>>,
}

impl VerifiedCache {
    fn contains(&self, digest: &[u8; 32], key_id: &str, bcrypt_hash: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(digest)
            .is_some_and(|v| v.key_id == key_id && v.bcrypt_hash == bcrypt_hash)
    }

    fn insert(&self, digest: [u8; 32], verified: Verified) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_CAPACITY && !entries.contains_key(&digest) {
            // evict an arbitrary entry (hash order): its key pays one more bcrypt
            if let Some(evicted) = entries.keys().next().copied() {
                entries.remove(&evicted);
            }
        }
        entries.insert(digest, verified);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The worker's cache (one per process: authentication has no other state).
static CACHE: LazyLock<VerifiedCache> = LazyLock::new(VerifiedCache::default);

/// Whether `token` has the shape of a legacy key (cheap: no decoding), to
/// mark responses and count requests.
pub fn looks_legacy(token: &str) -> bool {
    token.len() == LEGACY_KEY_LEN && token.starts_with("mtk_") && token.ends_with('=')
}

/// Authenticates a presented legacy key against `snapshot` at `now_ms`.
pub fn authenticate(
    snapshot: &Snapshot,
    key: &LegacyKey,
    token: &str,
    now_ms: i64,
) -> Result<Principal, AuthError> {
    authenticate_with(&CACHE, snapshot, key, token, now_ms)
}

fn authenticate_with(
    cache: &VerifiedCache,
    snapshot: &Snapshot,
    key: &LegacyKey,
    token: &str,
    now_ms: i64,
) -> Result<Principal, AuthError> {
    let invalid = AuthError::Invalid;
    let entry = snapshot
        .api_key(&key.key_id)
        .ok_or(invalid(InvalidKey::Unknown))?;
    // one of our own keys with this id: a legacy key never matches it
    let bcrypt_hash = entry
        .legacy_bcrypt
        .as_deref()
        .ok_or(invalid(InvalidKey::WrongSecret))?;
    if !snapshot.settings().legacy_keys_enabled(&entry.org_id) {
        return Err(invalid(InvalidKey::LegacyDisabled));
    }
    if !cache.contains(&key.digest, &key.key_id, bcrypt_hash) {
        if !bcrypt::verify(token, bcrypt_hash).unwrap_or(false) {
            return Err(invalid(InvalidKey::WrongSecret));
        }
        cache.insert(
            key.digest,
            Verified {
                key_id: key.key_id.clone(),
                bcrypt_hash: bcrypt_hash.to_owned(),
            },
        );
    }
    principal_of(snapshot, key.key_id.clone(), entry, now_ms)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgLabels {
    org: String,
}

/// `memtrace_legacy_key_requests_total{org}`: requests admitted with a
/// legacy key, to watch their traffic drain before turning them off.
#[derive(Clone, Debug, Default)]
pub struct LegacyRequests {
    counts: Family<OrgLabels, Counter>,
}

impl LegacyRequests {
    /// Adds the family to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "memtrace_legacy_key_requests",
            "requests admitted with an API key imported from the Go memtrace, by org",
            self.counts.clone(),
        );
    }

    /// Counts one request of `org_id`.
    pub fn count(&self, org_id: &str) {
        self.counts
            .get_or_create(&OrgLabels {
                org: org_id.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ApiKeyEntry, OrgEntry};
    use memtrace_common::legacy_keys::{generate_legacy_api_key, parse_legacy_api_key};
    use std::sync::Arc;

    /// A snapshot holding one imported key (bcrypt cost 4) of `org_a`.
    fn snapshot_with_legacy() -> (Snapshot, String) {
        let token = generate_legacy_api_key();
        let parsed = parse_legacy_api_key(&token).unwrap();
        let mut snapshot = Snapshot::default();
        snapshot.orgs.insert(
            "org_a".into(),
            OrgEntry {
                name: "a".into(),
                deleted: false,
            },
        );
        snapshot.api_keys.insert(
            parsed.key_id,
            Arc::new(ApiKeyEntry::imported(
                "org_a",
                bcrypt::hash(token.as_str(), 4).unwrap(),
            )),
        );
        (snapshot, token.to_string())
    }

    fn auth(
        cache: &VerifiedCache,
        snapshot: &Snapshot,
        token: &str,
    ) -> Result<Principal, AuthError> {
        let key = parse_legacy_api_key(token).expect("legacy format");
        authenticate_with(cache, snapshot, &key, token, 1)
    }

    #[test]
    fn a_verified_key_is_cached_and_a_wrong_secret_never_is() {
        let cache = VerifiedCache::default();
        let (snapshot, token) = snapshot_with_legacy();
        assert!(looks_legacy(&token));
        let principal = auth(&cache, &snapshot, &token).unwrap();
        assert_eq!(principal.org_id, "org_a");
        assert_eq!(cache.len(), 1, "verified once, remembered");
        assert!(auth(&cache, &snapshot, &token).is_ok());

        // the published id with another secret: same prefix, other key
        let other = generate_legacy_api_key();
        let mut forged = parse_legacy_api_key(&other).unwrap();
        forged.key_id = parse_legacy_api_key(&token).unwrap().key_id;
        for _ in 0..2 {
            assert_eq!(
                authenticate_with(&cache, &snapshot, &forged, &other, 1),
                Err(AuthError::Invalid(InvalidKey::WrongSecret))
            );
        }
        assert_eq!(cache.len(), 1, "a failed check is not remembered");

        // the key re-imported with another hash: the cached verdict no longer applies
        let mut rehashed = snapshot.clone();
        let id = forged.key_id.clone();
        let mut entry = (**rehashed.api_keys.get(&id).unwrap()).clone();
        entry.legacy_bcrypt = Some(bcrypt::hash(other.as_str(), 4).unwrap());
        rehashed.api_keys.insert(id, Arc::new(entry));
        assert_eq!(
            auth(&cache, &rehashed, &token),
            Err(AuthError::Invalid(InvalidKey::WrongSecret))
        );
    }

    #[test]
    fn revocation_deletion_and_the_setting_apply_to_cached_keys() {
        let cache = VerifiedCache::default();
        let (snapshot, token) = snapshot_with_legacy();
        auth(&cache, &snapshot, &token).unwrap();
        let id = parse_legacy_api_key(&token).unwrap().key_id;

        let mut revoked = snapshot.clone();
        let mut entry = (**revoked.api_keys.get(&id).unwrap()).clone();
        entry.revoked = true;
        revoked.api_keys.insert(id.clone(), Arc::new(entry));
        assert_eq!(
            auth(&cache, &revoked, &token),
            Err(AuthError::Invalid(InvalidKey::NotUsable))
        );

        let mut deleted = snapshot.clone();
        deleted.orgs.get_mut("org_a").unwrap().deleted = true;
        assert_eq!(
            auth(&cache, &deleted, &token),
            Err(AuthError::Invalid(InvalidKey::OrgDeleted))
        );

        let mut off = snapshot.clone();
        off.settings
            .apply_json(Some("org_a"), "auth.legacy_keys_enabled", "false")
            .unwrap();
        assert_eq!(
            auth(&cache, &off, &token),
            Err(AuthError::Invalid(InvalidKey::LegacyDisabled))
        );
        // an unknown id: refused without bcrypt
        let stranger = generate_legacy_api_key();
        assert_eq!(
            auth(&cache, &snapshot, &stranger),
            Err(AuthError::Invalid(InvalidKey::Unknown))
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = VerifiedCache::default();
        for i in 0..CACHE_CAPACITY + 10 {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.insert(
                digest,
                Verified {
                    key_id: format!("key_{i}"),
                    bcrypt_hash: String::new(),
                },
            );
        }
        assert_eq!(cache.len(), CACHE_CAPACITY);
    }
}
