//! Signed agent tokens: short-lived, narrow credentials the control plane
//! signs with Ed25519 and any worker verifies offline.
//!
//! # Format: PASETO v4.public
//!
//! `v4.public.` + base64url(message ‖ signature) + `.` + base64url(footer),
//! base64url without padding (a padded or non-canonical encoding is
//! refused). The signature (64 bytes, Ed25519, RFC 8032) covers
//! `PAE("v4.public.", message, footer, "")`, where `PAE(p₁…pₙ)` is `LE64(n)`
//! then, for each piece, `LE64(len) ‖ bytes`, each `LE64` with its top bit
//! cleared. The version and purpose are fixed by the prefix: there is no
//! algorithm field to switch, `v4.local.`, `v3.public.` and JWTs (`alg:
//! none` or any other) are refused before anything is decoded.
//!
//! The footer (authenticated, not encrypted) is `{"kid":"tk_<version>"}`:
//! the id of the control plane's token key that signed. The message is the
//! claims as JSON:
//!
//! ```json
//! {"org":"org_…","agent":"planner","scopes":["write"],
//!  "iat":"2026-12-05T10:00:00Z","exp":"2026-12-05T11:00:00Z","jti":"tok_…"}
//! ```
//!
//! `org` is the org's **id** (a new org of the same name has another id,
//! so a deleted org's tokens never act for it); `agent` (optional) binds
//! the token to one agent; `scopes` are `read`, `write`, `admin`; `iat`
//! and `exp` are RFC 3339 in UTC as PASETO registers them; `jti` names
//! the token (never a secret: the token is the secret). Unknown claims are
//! refused. Tokens are at most [`MAX_TOKEN_LEN`] bytes.
//!
//! # Time
//!
//! A token is accepted from `iat − LEEWAY` to `exp + LEEWAY`
//! ([`LEEWAY_SECONDS`], 30 s): workers' clocks may differ from the control
//! plane's by that much without refusing fresh tokens.

#[cfg(test)]
mod tests;

use crate::signing::{PUBLIC_KEY_LEN, SIGNATURE_LEN, SigningKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "v4.public.";
/// Longest token accepted (and minted).
pub const MAX_TOKEN_LEN: usize = 4096;
/// Clock leeway on `iat` and `exp`, in seconds.
pub const LEEWAY_SECONDS: i64 = 30;
/// Lifetime of a token when none is asked for.
pub const DEFAULT_TTL_SECONDS: i64 = 3600;
/// Longest agent id a token may be bound to.
pub const MAX_AGENT_LEN: usize = 256;
/// The scopes a token may carry.
pub const SCOPES: [&str; 3] = ["read", "write", "admin"];

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The org's id.
    pub org: String,
    /// The one agent this token may act as; `None`: any agent of the org.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub scopes: Vec<String>,
    pub iat: Timestamp,
    pub exp: Timestamp,
    pub jti: String,
}

impl Claims {
    /// Checks the claims' shape: org, agent, scopes, times.
    pub fn check(&self) -> Result<(), TokenError> {
        let bad = |rule: &str| Err(TokenError::Claims(rule.to_owned()));
        if !crate::ids::is_valid_id("org", &self.org) {
            return bad("org must be an org id (org_…)");
        }
        if let Some(agent) = &self.agent {
            if agent.is_empty() || agent.len() > MAX_AGENT_LEN {
                return bad("agent must be 1 to 256 bytes");
            }
            if agent.chars().any(char::is_control) {
                return bad("agent must not hold control characters");
            }
        }
        if self.scopes.is_empty() {
            return bad("scopes must name at least one of read, write, admin");
        }
        if let Some(s) = self.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
            return Err(TokenError::Claims(format!(
                "scope {s:?} is not one of read, write, admin"
            )));
        }
        if self.exp <= self.iat {
            return bad("exp must be after iat");
        }
        if !crate::ids::is_valid_id("tok", &self.jti) {
            return bad("jti must be a token id (tok_…)");
        }
        Ok(())
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Footer {
    kid: String,
}

/// Why a token was refused. Each variant is a distinct, stable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("unsupported token type: only v4.public. tokens are accepted")]
    Unsupported,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token signed by an unknown key {0:?}")]
    UnknownKey(String),
    #[error("token signature invalid")]
    BadSignature,
    #[error("token claims invalid: {0}")]
    Claims(String),
    #[error("token expired at {0}")]
    Expired(Timestamp),
    #[error("token issued in the future ({0}): check the clocks")]
    NotYetValid(Timestamp),
}

impl TokenError {
    /// A short stable name of the reason (metrics, logs).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TooLong | Self::Unsupported | Self::Malformed(_) => "token_malformed",
            Self::UnknownKey(_) => "token_unknown_key",
            Self::BadSignature => "token_bad_signature",
            Self::Claims(_) => "token_bad_claims",
            Self::Expired(_) => "token_expired",
            Self::NotYetValid(_) => "token_not_yet_valid",
        }
    }
}

/// Whether `credential` is presented as a token (and not an API key).
pub fn is_token(credential: &str) -> bool {
    credential.starts_with(TOKEN_PREFIX)
}

/// A fresh token id (`tok_<24 hex>`).
pub fn new_token_id() -> String {
    crate::ids::new_id("tok")
}

/// Pre-authentication encoding (PASETO's PAE).
fn pae(pieces: &[&[u8]]) -> Vec<u8> {
    let le64 = |n: usize| ((n as u64) & (u64::MAX >> 1)).to_le_bytes();
    let len = 8 + pieces.iter().map(|p| 8 + p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&le64(pieces.len()));
    for piece in pieces {
        out.extend_from_slice(&le64(piece.len()));
        out.extend_from_slice(piece);
    }
    out
}

/// Signs `claims` with `key`: the token, to be shown once.
pub fn mint(key: &SigningKey, claims: &Claims) -> Result<String, TokenError> {
    claims.check()?;
    let message = serde_json::to_vec(claims).expect("claims serialize");
    let footer = serde_json::to_vec(&Footer {
        kid: key.key_id().to_owned(),
    })
    .expect("a footer serializes");
    let signature = key.sign_bytes(&pae(&[TOKEN_PREFIX.as_bytes(), &message, &footer, b""]));
    let mut body = message;
    body.extend_from_slice(&signature);
    let token = format!(
        "{TOKEN_PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(body),
        URL_SAFE_NO_PAD.encode(footer)
    );
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    Ok(token)
}

/// A token's payload, footer and the key id its footer names (read before
/// verification, to pick the key: it says nothing of authenticity).
fn split(token: &str) -> Result<(Vec<u8>, Vec<u8>, String), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(TokenError::Unsupported)?;
    let (body, footer) = rest
        .split_once('.')
        .ok_or(TokenError::Malformed("no footer naming the key (kid)"))?;
    let body = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed("payload is not unpadded base64url"))?;
    let footer = URL_SAFE_NO_PAD
        .decode(footer)
        .map_err(|_| TokenError::Malformed("footer is not unpadded base64url"))?;
    if body.len() <= SIGNATURE_LEN {
        return Err(TokenError::Malformed("payload shorter than a signature"));
    }
    let kid = serde_json::from_slice::<Footer>(&footer)
        .map_err(|_| TokenError::Malformed("footer is not {\"kid\": …}"))?
        .kid;
    Ok((body, footer, kid))
}

/// Verifies `token` at `now`: its form, its signature under the key its
/// footer names (looked up with `key`), its claims and its time window.
/// Authorization (org liveness, scopes, agent) is the caller's.
pub fn verify<'k>(
    token: &str,
    key: impl FnOnce(&str) -> Option<&'k [u8; PUBLIC_KEY_LEN]>,
    now: Timestamp,
) -> Result<Claims, TokenError> {
    let (body, footer, kid) = split(token)?;
    let public_key = key(&kid).ok_or(TokenError::UnknownKey(kid))?;
    let (message, signature) = body.split_at(body.len() - SIGNATURE_LEN);
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(
            &pae(&[TOKEN_PREFIX.as_bytes(), message, &footer, b""]),
            signature,
        )
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(message)
        .map_err(|e| TokenError::Claims(format!("not the claims JSON: {e}")))?;
    claims.check()?;
    let leeway = jiff::SignedDuration::from_secs(LEEWAY_SECONDS);
    if now >= claims.exp.saturating_add(leeway).unwrap_or(claims.exp) {
        return Err(TokenError::Expired(claims.exp));
    }
    if now < claims.iat.saturating_sub(leeway).unwrap_or(claims.iat) {
        return Err(TokenError::NotYetValid(claims.iat));
    }
    Ok(claims)
}
