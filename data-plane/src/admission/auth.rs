//! Agent authentication against the live snapshot: no I/O on the hot path.
//!
//! The key comes from `x-api-key: mtk_…` or `Authorization: Bearer mtk_…`
//! (the original's two forms). Its format and checksum are checked offline,
//! its id is looked up in the snapshot in O(1), its hash compared in constant
//! time, then revocation, expiry (strict) and the org's liveness. The org is
//! pinned from the key: clients never choose it. Messages match the
//! original's 401 bodies so SDKs map them unchanged.

use crate::snapshot::{ApiKeyEntry, Snapshot};
use memtrace_common::credentials::{hashes_match, parse_api_key};
use memtrace_common::legacy_keys::parse_legacy_api_key;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

/// An authenticated agent: its org and what its key allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub org_id: String,
    pub key_id: String,
    pub read: bool,
    pub write: bool,
    pub admin: bool,
}

impl Principal {
    /// Checks a scope; `admin` implies the others.
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        let allowed = self.admin
            || match scope {
                Scope::Read => self.read,
                Scope::Write => self.write,
                Scope::Admin => false,
            };
        if allowed {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope))
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401 `{"error":"missing API key"}`
    #[error("missing API key")]
    Missing,
    /// 401 `{"error":"invalid API key"}`: malformed, unknown, revoked,
    /// expired, or its org deleted. Clients see one message whatever the
    /// reason (no oracle); the reason is for the worker's metrics.
    #[error("invalid API key")]
    Invalid(InvalidKey),
    /// 403: the key lacks the scope.
    #[error("this API key lacks the {0:?} scope")]
    MissingScope(Scope),
}

/// Why a presented key is invalid (never told to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKey {
    /// Not a memtrace API key (format or checksum).
    Malformed,
    /// Well-formed, but no published key has its id.
    Unknown,
    /// The id is known, the secret does not match.
    WrongSecret,
    /// Revoked or expired.
    NotUsable,
    /// Its org is deleted.
    OrgDeleted,
    /// A key imported from the Go memtrace, its org's
    /// `auth.legacy_keys_enabled` off.
    LegacyDisabled,
}

impl InvalidKey {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::WrongSecret => "wrong_secret",
            Self::NotUsable => "revoked_or_expired",
            Self::OrgDeleted => "org_deleted",
            Self::LegacyDisabled => "legacy_disabled",
        }
    }
}

/// The credential of a request from its `x-api-key` and `authorization` headers.
pub fn credential<'a>(
    x_api_key: Option<&'a str>,
    authorization: Option<&'a str>,
) -> Option<&'a str> {
    x_api_key
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .or_else(|| {
            authorization
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

/// Authenticates `token` against `snapshot` at `now_ms`.
pub fn authenticate(
    snapshot: &Snapshot,
    token: Option<&str>,
    now_ms: i64,
) -> Result<Principal, AuthError> {
    let token = token.ok_or(AuthError::Missing)?;
    let invalid = AuthError::Invalid;
    let parsed = match parse_api_key(token) {
        Ok(parsed) => parsed,
        // a key imported from the Go memtrace, in its format
        Err(_) => {
            return match parse_legacy_api_key(token) {
                Some(legacy) => super::legacy::authenticate(snapshot, &legacy, token, now_ms),
                None => Err(invalid(InvalidKey::Malformed)),
            };
        }
    };
    let entry = snapshot
        .api_key(&parsed.key_id)
        .ok_or(invalid(InvalidKey::Unknown))?;
    if entry.legacy_bcrypt.is_some() || !hashes_match(&entry.hash, &parsed.hash) {
        return Err(invalid(InvalidKey::WrongSecret));
    }
    principal_of(snapshot, parsed.key_id, entry, now_ms)
}

/// The principal of a key whose secret matched: refused when it is revoked
/// or expired or its org is deleted.
pub(super) fn principal_of(
    snapshot: &Snapshot,
    key_id: String,
    entry: &ApiKeyEntry,
    now_ms: i64,
) -> Result<Principal, AuthError> {
    let invalid = AuthError::Invalid;
    if !entry.usable_at(now_ms) {
        return Err(invalid(InvalidKey::NotUsable));
    }
    match snapshot.orgs.get(&entry.org_id) {
        Some(org) if !org.deleted => {}
        _ => return Err(invalid(InvalidKey::OrgDeleted)),
    }
    Ok(Principal {
        org_id: entry.org_id.clone(),
        key_id,
        read: entry.read,
        write: entry.write,
        admin: entry.admin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ApiKeyEntry, OrgEntry};
    use memtrace_common::credentials::generate_api_key;
    use std::sync::Arc;

    fn snapshot_with(
        token_scopes: (bool, bool, bool),
        expires_at_ms: i64,
        revoked: bool,
    ) -> (Snapshot, String) {
        let key = generate_api_key();
        let mut snapshot = Snapshot::default();
        snapshot.orgs.insert(
            "org_a".into(),
            OrgEntry {
                name: "a".into(),
                deleted: false,
            },
        );
        snapshot.api_keys.insert(
            key.key_id.clone(),
            Arc::new(ApiKeyEntry {
                org_id: "org_a".into(),
                hash: key.hash,
                read: token_scopes.0,
                write: token_scopes.1,
                admin: token_scopes.2,
                expires_at_ms,
                revoked,
                legacy_bcrypt: None,
            }),
        );
        (snapshot, key.token.to_string())
    }

    #[test]
    fn valid_key_pins_the_org_and_scopes_are_enforced() {
        let (snapshot, token) = snapshot_with((true, false, false), 0, false);
        let principal = authenticate(&snapshot, Some(&token), 1).unwrap();
        assert_eq!(principal.org_id, "org_a");
        assert!(principal.require(Scope::Read).is_ok());
        assert_eq!(
            principal.require(Scope::Write),
            Err(AuthError::MissingScope(Scope::Write))
        );
        let (admin, token) = snapshot_with((false, false, true), 0, false);
        let principal = authenticate(&admin, Some(&token), 1).unwrap();
        assert!(
            principal.require(Scope::Write).is_ok(),
            "admin implies write"
        );
    }

    #[test]
    fn refusals() {
        let (snapshot, token) = snapshot_with((true, true, false), 1_000, false);
        assert_eq!(authenticate(&snapshot, None, 1), Err(AuthError::Missing));
        assert_eq!(
            authenticate(&snapshot, Some("mtk_nope"), 1),
            Err(AuthError::Invalid(InvalidKey::Malformed))
        );
        assert!(authenticate(&snapshot, Some(&token), 999).is_ok());
        assert_eq!(
            authenticate(&snapshot, Some(&token), 1_000),
            Err(AuthError::Invalid(InvalidKey::NotUsable)),
            "expiry is strict"
        );
        let (revoked, token) = snapshot_with((true, true, false), 0, true);
        assert_eq!(
            authenticate(&revoked, Some(&token), 1),
            Err(AuthError::Invalid(InvalidKey::NotUsable))
        );
        let (mut deleted, token) = snapshot_with((true, true, false), 0, false);
        deleted.orgs.get_mut("org_a").unwrap().deleted = true;
        assert_eq!(
            authenticate(&deleted, Some(&token), 1),
            Err(AuthError::Invalid(InvalidKey::OrgDeleted))
        );
        // a well-formed key no published key has the id of
        let (snapshot, token) = snapshot_with((true, true, false), 0, false);
        let other = generate_api_key();
        assert_eq!(
            authenticate(&snapshot, Some(&other.token), 1),
            Err(AuthError::Invalid(InvalidKey::Unknown))
        );
        // the published id with another secret
        let mut forged = snapshot.clone();
        let id = forged.api_keys.keys().next().unwrap().clone();
        let mut entry = (**forged.api_keys.get(&id).unwrap()).clone();
        entry.hash = other.hash;
        forged.api_keys.insert(id, Arc::new(entry));
        assert_eq!(
            authenticate(&forged, Some(&token), 1),
            Err(AuthError::Invalid(InvalidKey::WrongSecret))
        );
    }

    #[test]
    fn credential_headers() {
        assert_eq!(credential(Some("mtk_a"), None), Some("mtk_a"));
        assert_eq!(credential(None, Some("Bearer mtk_b")), Some("mtk_b"));
        assert_eq!(credential(Some(" "), Some("Bearer mtk_b")), Some("mtk_b"));
        assert_eq!(credential(None, Some("Basic x")), None);
        assert_eq!(credential(None, None), None);
    }
}
