//! Admin authentication: every admin RPC carries `authorization: Bearer
//! <admin token>`. [`AdminAuth`] holds the admin tokens in memory, by their
//! public id (no I/O per request): a presented token is identified (its id
//! and hash, `memtrace_common::credentials::identify_admin_token`), looked up
//! by id, and its hash compared in constant time. Data-plane API keys are
//! refused outright.
//!
//! The table follows the database two ways: a change this replica makes
//! (create, revoke) is applied to it right after the commit, so a revoked
//! token is refused by the next call here; changes made by other replicas
//! arrive with the periodic reload (`domain::admin_tokens`, every
//! [`crate::domain::ADMIN_TOKEN_RELOAD_INTERVAL`]). A reload read before a
//! local change committed is discarded rather than applied over it.

use crate::domain::types::AdminRole;
use crate::error::ControlPlaneError;
use crate::store::AdminTokenRow;
use memtrace_common::credentials::{
    AdminTokenFormatError, credential_fingerprint, hashes_match, identify_admin_token,
    looks_like_api_key,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Who made an admin call, as a non-reversible fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminActor {
    pub fingerprint: String,
}

/// The token an admin call was authenticated with: its public id and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCaller {
    pub token_id: String,
    pub role: AdminRole,
}

/// Why a credential was refused. Only [`Refusal::Known`] comes from a
/// caller holding a real token's secret (worth an audit entry); the others
/// anyone can send, so they are not audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A data-plane api key.
    ApiKey,
    /// A mistyped generated token.
    Malformed(AdminTokenFormatError),
    /// No token with this id and secret.
    Unknown,
    /// A real token that is revoked or expired.
    Known(KnownRefusal),
}

/// Why a real token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRefusal {
    pub token_id: String,
    pub reason: &'static str,
}

impl From<Refusal> for ControlPlaneError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::ApiKey => Self::PermissionDenied(
                "api keys (mtk_…) are data-plane credentials and cannot call the admin api; use an admin token".into(),
            ),
            Refusal::Malformed(e) => Self::Unauthenticated(e.to_string()),
            Refusal::Unknown => Self::Unauthenticated("invalid admin token".into()),
            Refusal::Known(known) => Self::Unauthenticated(format!(
                "admin token {} is {}",
                known.token_id, known.reason
            )),
        }
    }
}

/// What the table keeps of a token.
#[derive(Debug, Clone)]
struct Entry {
    hash: [u8; 32],
    role: AdminRole,
    expires_at: Option<i64>,
    revoked: bool,
}

#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<String, Entry>,
    /// Bumped by every local change, so a reload read before it is dropped.
    local_changes: u64,
}

#[derive(Debug, Default)]
struct Inner {
    table: RwLock<Table>,
    /// Token id → when it was last used here, until the next flush.
    used: Mutex<HashMap<String, i64>>,
}

/// The admin tokens, shared by the guard of every service and the domain.
#[derive(Debug, Clone, Default)]
pub struct AdminAuth {
    inner: Arc<Inner>,
}

/// A row as the table keeps it; `None` (logged) for a row this build cannot
/// use (an unknown role, a hash of the wrong length): that token is refused.
fn entry(row: &AdminTokenRow) -> Option<(String, Entry)> {
    let role = AdminRole::parse(&row.role).ok();
    let hash = <[u8; 32]>::try_from(row.token_hash.as_slice()).ok();
    match (role, hash) {
        (Some(role), Some(hash)) => Some((
            row.id.clone(),
            Entry {
                hash,
                role,
                expires_at: row.expires_at,
                revoked: row.revoked_at.is_some(),
            },
        )),
        _ => {
            tracing::warn!(token_id = %row.id, role = %row.role, "stored admin token is unusable (unknown role or malformed hash); it is refused");
            None
        }
    }
}

impl AdminAuth {
    /// Replaces the table with `rows` (at start).
    pub fn load(&self, rows: &[AdminTokenRow]) {
        let mut table = self.write();
        table.by_id = rows.iter().filter_map(entry).collect();
    }

    /// A mark to pass to [`Self::reload`]: read it before reading the rows.
    pub fn mark(&self) -> u64 {
        self.read().local_changes
    }

    /// Replaces the table with `rows` read from the database after `mark`,
    /// unless a local change happened since (the rows may predate it).
    /// Returns whether it replaced.
    pub fn reload(&self, rows: &[AdminTokenRow], mark: u64) -> bool {
        let mut table = self.write();
        if table.local_changes != mark {
            return false;
        }
        table.by_id = rows.iter().filter_map(entry).collect();
        true
    }

    /// Applies a committed change of one token (created or revoked here).
    pub fn apply(&self, row: &AdminTokenRow) {
        let mut table = self.write();
        table.local_changes = table.local_changes.wrapping_add(1);
        match entry(row) {
            Some((id, entry)) => {
                table.by_id.insert(id, entry);
            }
            None => {
                table.by_id.remove(&row.id);
            }
        }
    }

    /// The tokens used since the last call, with when (for `last_used_at`).
    pub fn take_used(&self) -> Vec<(String, i64)> {
        let mut used = self
            .inner
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        used.drain().collect()
    }

    /// Checks a bearer credential at `now` (unix ms).
    pub fn authenticate(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(AdminActor, AdminCaller), Refusal> {
        if looks_like_api_key(token) {
            return Err(Refusal::ApiKey);
        }
        let presented = identify_admin_token(token).map_err(Refusal::Malformed)?;
        let (role, refused) = {
            let table = self.read();
            let entry = table
                .by_id
                .get(&presented.token_id)
                .ok_or(Refusal::Unknown)?;
            if !hashes_match(&entry.hash, &presented.hash) {
                return Err(Refusal::Unknown);
            }
            let refused = if entry.revoked {
                Some("revoked")
            } else if entry.expires_at.is_some_and(|at| at <= now) {
                Some("expired")
            } else {
                None
            };
            (entry.role, refused)
        };
        if let Some(reason) = refused {
            return Err(Refusal::Known(KnownRefusal {
                token_id: presented.token_id,
                reason,
            }));
        }
        self.inner
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(presented.token_id.clone(), now);
        Ok((
            AdminActor {
                fingerprint: credential_fingerprint(token),
            },
            AdminCaller {
                token_id: presented.token_id,
                role,
            },
        ))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.inner
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.inner
            .table
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrace_common::credentials::{generate_api_key, hash_admin_token, new_admin_token};
    use zeroize::Zeroizing;

    fn row(role: &str) -> (Zeroizing<String>, AdminTokenRow) {
        let new = new_admin_token();
        let row = AdminTokenRow {
            id: new.token_id,
            token_hash: new.hash.to_vec(),
            fingerprint: credential_fingerprint(&new.token),
            name: "t".into(),
            role: role.into(),
            created_at: 1,
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
        };
        (new.token, row)
    }

    fn code(refusal: Refusal) -> tonic::Code {
        tonic::Status::from(ControlPlaneError::from(refusal)).code()
    }

    #[test]
    fn tokens_keys_and_garbage() {
        let auth = AdminAuth::default();
        let (token, admin) = row("admin");
        let (reader_token, reader) = row("reader");
        auth.load(&[admin.clone(), reader.clone()]);
        let (actor, caller) = auth.authenticate(&token, 5).unwrap();
        assert_eq!(actor.fingerprint, admin.fingerprint);
        assert_eq!(
            (caller.token_id.as_str(), caller.role),
            (admin.id.as_str(), AdminRole::Admin)
        );
        assert_eq!(
            auth.authenticate(&reader_token, 5).unwrap().1.role,
            AdminRole::Reader
        );
        assert_eq!(
            code(auth.authenticate("nope", 5).unwrap_err()),
            tonic::Code::Unauthenticated
        );
        // the id is known but the secret is not the stored one
        let other = AdminAuth::default();
        let mut swapped = admin.clone();
        swapped.token_hash = reader.token_hash.clone();
        other.load(&[swapped]);
        assert_eq!(
            code(other.authenticate(&token, 5).unwrap_err()),
            tonic::Code::Unauthenticated
        );
        let key = generate_api_key();
        assert_eq!(
            code(auth.authenticate(&key.token, 5).unwrap_err()),
            tonic::Code::PermissionDenied
        );
        let used = auth.take_used();
        assert_eq!(used.len(), 2, "{used:?}");
        assert!(auth.take_used().is_empty());
    }

    #[test]
    fn tokens_without_an_id_work_by_their_hash() {
        let auth = AdminAuth::default();
        let chosen = "operator-chosen-bootstrap-token-0123456789";
        let hash = hash_admin_token(chosen);
        let (_, mut stored) = row("admin");
        stored.id = memtrace_common::credentials::legacy_admin_token_id(&hash);
        stored.token_hash = hash.to_vec();
        auth.load(&[stored.clone()]);
        assert_eq!(auth.authenticate(chosen, 1).unwrap().1.token_id, stored.id);
    }

    #[test]
    fn revoked_and_expired_tokens_are_refused_by_name() {
        let auth = AdminAuth::default();
        let (token, mut admin) = row("admin");
        admin.expires_at = Some(100);
        auth.load(&[admin.clone()]);
        assert!(auth.authenticate(&token, 99).is_ok());
        let expired = auth.authenticate(&token, 100).unwrap_err();
        assert_eq!(
            expired,
            Refusal::Known(KnownRefusal {
                token_id: admin.id.clone(),
                reason: "expired"
            })
        );
        assert_eq!(
            ControlPlaneError::from(expired).to_string(),
            format!("admin token {} is expired", admin.id)
        );
        admin.expires_at = None;
        admin.revoked_at = Some(50);
        auth.apply(&admin);
        let revoked = auth.authenticate(&token, 60).unwrap_err();
        assert_eq!(code(revoked), tonic::Code::Unauthenticated);
        assert_eq!(
            auth.authenticate(&token, 60).unwrap_err(),
            Refusal::Known(KnownRefusal {
                token_id: admin.id.clone(),
                reason: "revoked"
            })
        );
    }

    #[test]
    fn a_reload_read_before_a_local_change_is_dropped() {
        let auth = AdminAuth::default();
        let (token, mut admin) = row("admin");
        auth.load(&[admin.clone()]);
        let mark = auth.mark();
        let stale = vec![admin.clone()];
        admin.revoked_at = Some(2);
        auth.apply(&admin);
        assert!(!auth.reload(&stale, mark), "the stale read is not applied");
        assert!(auth.authenticate(&token, 3).is_err(), "still revoked");
        let mark = auth.mark();
        assert!(auth.reload(&[admin], mark));
        assert!(auth.authenticate(&token, 3).is_err());
    }

    #[test]
    fn unusable_rows_are_refused() {
        let auth = AdminAuth::default();
        let (token, mut admin) = row("admin");
        admin.role = "superuser".into();
        auth.load(&[admin]);
        assert!(auth.authenticate(&token, 1).is_err());
    }
}
