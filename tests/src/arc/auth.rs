//! Arc's token check: which header carries the token, 401 vs 403, and the
//! database-name rule shared by writes and queries.

use super::server::Failure;
use super::{Shared, TokenGrant};
use axum::http::{HeaderMap, StatusCode};

/// Arc's token lookup order: `Bearer`, `Token`, bare `Authorization`,
/// `x-api-key`.
pub(super) fn presented_token(headers: &HeaderMap) -> Option<String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("Token "))
        .unwrap_or(auth);
    if !token.is_empty() {
        return Some(token.to_string());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_string)
}

/// `Ok(None)`: auth is off (no token configured).
pub(super) fn authenticate(s: &Shared, headers: &HeaderMap) -> Result<Option<TokenGrant>, Failure> {
    let unauthorized = |m: &str| Err((StatusCode::UNAUTHORIZED, m.to_string()));
    let Ok(tokens) = s.tokens.read() else {
        return Err((StatusCode::INTERNAL_SERVER_ERROR, "auth state".into()));
    };
    if tokens.is_empty() {
        return Ok(None);
    }
    let Some(token) = presented_token(headers) else {
        return unauthorized("Authentication required");
    };
    match tokens.get(&token) {
        Some(grant) => Ok(Some(grant.clone())),
        None => unauthorized("Invalid or expired token"),
    }
}

/// The permission a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Permission {
    Read,
    Write,
    Delete,
}

pub(super) fn authorize<'a>(
    grant: Option<&TokenGrant>,
    permission: Permission,
    databases: impl IntoIterator<Item = &'a str>,
) -> Result<(), Failure> {
    let Some(grant) = grant else { return Ok(()) };
    let (allowed, perm) = match permission {
        Permission::Read => (grant.read, "read"),
        Permission::Write => (grant.write, "write"),
        Permission::Delete => (grant.delete, "delete"),
    };
    if !allowed {
        let msg = format!("Permission denied: {perm} required");
        return Err((StatusCode::FORBIDDEN, msg));
    }
    for db in databases {
        if !grant.allows(db) {
            let msg = format!("access denied: no {perm} permission for database '{db}'");
            return Err((StatusCode::FORBIDDEN, msg));
        }
    }
    Ok(())
}

/// The `x-arc-database` header: `Ok(None)` if absent or empty.
pub(super) fn header_db(headers: &HeaderMap) -> Result<Option<String>, Failure> {
    match headers.get("x-arc-database").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok("")) => Ok(None),
        Some(Ok(db)) if valid_name(db, 64) => Ok(Some(db.to_string())),
        Some(_) => Err((StatusCode::BAD_REQUEST, INVALID_DB.into())),
    }
}

pub(super) const INVALID_DB: &str = "invalid database name: must start with a letter and contain only \
     alphanumeric characters, underscores, or hyphens (max 64 characters)";

/// Arc's rule: a letter, then letters, digits, `_` or `-`.
pub(super) fn valid_name(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    name.len() <= max
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
