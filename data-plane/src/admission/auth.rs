//! Agent authentication against the live snapshot: no I/O on the hot path.
//!
//! The credential comes from `x-api-key: …` or `Authorization: Bearer …`
//! (the original's two forms): an API key (`mtk_…`) or an agent token
//! (`v4.public.…`, [`memtrace_common::token`]), told apart by prefix.
//!
//! A token is verified offline against the token public keys in the
//! snapshot: signature under the key its footer names, expiry and issue
//! time (30 s leeway), then its org: the claims carry the org **id**, and a
//! deleted org keeps its tombstone in the snapshot under that id, so a
//! token of a deleted org is refused even once an org of the same name
//! exists again (it has another id); an org the snapshot does not know at
//! all is refused too. Token refusals have distinct messages (expired,
//! unknown key, bad signature, org deleted, wrong agent).
//!
//! An API key's format and checksum are checked offline,
//! its id is looked up in the snapshot in O(1), its hash compared in constant
//! time, then revocation, expiry (strict) and the org's liveness. The org is
//! pinned from the key: clients never choose it. Messages match the
//! original's 401 bodies so SDKs map them unchanged.

use crate::snapshot::{ApiKeyEntry, Snapshot};
use memtrace_common::credentials::{hashes_match, parse_api_key};
use memtrace_common::legacy_keys::parse_legacy_api_key;
use memtrace_common::token::{self, TokenError};

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

/// An authenticated agent: its org and what its key or token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub org_id: String,
    /// The API key's id, or the token's id (`tok_…`).
    pub key_id: String,
    pub read: bool,
    pub write: bool,
    pub admin: bool,
    /// Set for a token bound to one agent: the only agent it acts as.
    pub agent: Option<String>,
    /// Authenticated by a token (not an API key).
    pub token: bool,
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
        match (allowed, self.token) {
            (true, _) => Ok(()),
            (false, false) => Err(AuthError::MissingScope(scope)),
            (false, true) => Err(AuthError::TokenMissingScope(scope)),
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
    /// 401: a token refused (expired, unknown key, bad signature,
    /// malformed, bad claims): each with its own message.
    #[error("{0}")]
    Token(TokenError),
    /// 401: the token's org is deleted (or unknown to this worker).
    #[error("the org of this token was deleted")]
    TokenOrgDeleted,
    /// 403: the token lacks the scope.
    #[error("this token lacks the {0:?} scope")]
    TokenMissingScope(Scope),
    /// 403: an agent-bound token used as another agent.
    #[error("this token is bound to agent {bound:?}; it cannot act as agent {asked:?}")]
    WrongAgent { bound: String, asked: String },
    /// 403: tokens are minted with an org API key, never with a token.
    #[error("a token cannot mint tokens: use an org API key with the admin scope")]
    TokenCannotMint,
    /// 403: an agent-bound token used for what spans agents.
    #[error(
        "this token is bound to agent {bound:?}; {what} is not available to an agent-bound token"
    )]
    AgentBound { bound: String, what: &'static str },
}

impl AuthError {
    /// 401 (not authenticated) rather than 403 (not allowed).
    pub fn unauthenticated(&self) -> bool {
        matches!(
            self,
            Self::Missing | Self::Invalid(_) | Self::Token(_) | Self::TokenOrgDeleted
        )
    }
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

/// Authenticates `token` (an API key or an agent token) against
/// `snapshot` at `now_ms`.
pub fn authenticate(
    snapshot: &Snapshot,
    token: Option<&str>,
    now_ms: i64,
) -> Result<Principal, AuthError> {
    let token = token.ok_or(AuthError::Missing)?;
    if token::is_token(token) {
        return authenticate_token(snapshot, token, now_ms);
    }
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
        agent: None,
        token: false,
    })
}

/// Verifies an agent token (signature, time, org liveness) into its
/// principal; scopes and agent binding are checked where they apply.
fn authenticate_token(
    snapshot: &Snapshot,
    token: &str,
    now_ms: i64,
) -> Result<Principal, AuthError> {
    let now = jiff::Timestamp::from_millisecond(now_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let claims =
        token::verify(token, |kid| snapshot.token_keys.get(kid), now).map_err(AuthError::Token)?;
    match snapshot.orgs.get(&claims.org) {
        Some(org) if !org.deleted => {}
        _ => return Err(AuthError::TokenOrgDeleted),
    }
    Ok(Principal {
        read: claims.has_scope("read"),
        write: claims.has_scope("write"),
        admin: claims.has_scope("admin"),
        org_id: claims.org,
        key_id: claims.jti,
        agent: claims.agent,
        token: true,
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
    fn tokens_verify_offline_with_distinct_refusals() {
        use memtrace_common::signing::SigningKey;
        use memtrace_common::token::{Claims, mint};
        let key = SigningKey::from_seed("tk_1", &[5; 32]);
        let (mut snapshot, _) = snapshot_with((true, true, false), 0, false);
        snapshot.token_keys.insert("tk_1".into(), key.public_key());
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let claims = |org: &str| Claims {
            org: org.into(),
            agent: Some("planner".into()),
            scopes: vec!["read".into()],
            iat: at("2026-12-05T10:00:00Z"),
            exp: at("2026-12-05T11:00:00Z"),
            jti: "tok_1".into(),
        };
        let ms = |s: &str| at(s).as_millisecond();
        let token = mint(&key, &claims("org_a")).unwrap();
        let p = authenticate(&snapshot, Some(&token), ms("2026-12-05T10:30:00Z")).unwrap();
        assert_eq!(p.org_id, "org_a");
        assert_eq!(p.agent.as_deref(), Some("planner"));
        assert!(p.token && p.read && !p.write);
        assert_eq!(
            p.require(Scope::Write).unwrap_err().to_string(),
            "this token lacks the Write scope"
        );
        let expired = authenticate(&snapshot, Some(&token), ms("2026-12-05T11:01:00Z"));
        assert_eq!(
            expired.unwrap_err().to_string(),
            "token expired at 2026-12-05T11:00:00Z"
        );
        // an org the snapshot does not know, and a deleted one
        let stranger = mint(&key, &claims("org_b")).unwrap();
        assert_eq!(
            authenticate(&snapshot, Some(&stranger), ms("2026-12-05T10:30:00Z")),
            Err(AuthError::TokenOrgDeleted)
        );
        snapshot.orgs.get_mut("org_a").unwrap().deleted = true;
        assert_eq!(
            authenticate(&snapshot, Some(&token), ms("2026-12-05T10:30:00Z")),
            Err(AuthError::TokenOrgDeleted)
        );
        // the key withdrawn from the snapshot
        snapshot.token_keys.clear();
        assert_eq!(
            authenticate(&snapshot, Some(&token), ms("2026-12-05T10:30:00Z")),
            Err(AuthError::Token(TokenError::UnknownKey("tk_1".into())))
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
