//! Minting agent tokens on a worker (`POST /api/v1/tokens`,
//! `AgentService.CreateAgentToken`): an orchestrator holding its org's API
//! key with the `admin` scope gives each agent its own narrow, short-lived
//! token without a round trip to the control plane.
//!
//! The worker signs with the token key derived from the fleet key
//! (`FleetKey::token_key`, id `wk_<fingerprint>`), whose public half the
//! control plane publishes beside its own token keys (of its fleet keys,
//! the first, active one first, whose key is published: while a fleet key
//! rolls, the one every worker accepts); the control plane's
//! own signing keys never leave it. The rules are the control plane's:
//! the org is the caller's (never chosen), an agent-bound token cannot carry
//! `admin`, the lifetime defaults to 3600 s and is at most the org's
//! `tokens.max_ttl_seconds` (from the snapshot). Only an API key may mint:
//! a token cannot mint tokens (it would outlive or widen itself). The token
//! is returned once and never logged.

use super::{Admission, Principal, Scope};
use crate::service::ServiceError;
use memtrace_common::token::{
    self, Claims, DEFAULT_TTL_SECONDS, MAX_AGENT_LEN, MAX_TOKEN_LEN, SCOPES,
};
use serde::{Deserialize, Serialize};

/// Largest mint request body.
pub const MAX_MINT_BODY: usize = MAX_TOKEN_LEN;

/// What a caller asks for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    /// Bind the token to this agent (absent or empty: any agent).
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Any of read, write, admin; empty: read and write.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Lifetime in seconds; absent or 0: 3600.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// A minted token: `token` is shown here once.
#[derive(Debug, Clone, Serialize)]
pub struct MintedToken {
    pub token: String,
    pub token_id: String,
    pub org_id: String,
    pub agent_id: Option<String>,
    pub scopes: Vec<String>,
    pub issued_at: String,
    pub expires_at: String,
    pub key_id: String,
}

impl Admission {
    /// The principal of a mint request: an API key (not a token) with the
    /// `admin` scope. Checked before a body is read.
    pub fn minter(&self, credential: Option<&str>) -> Result<Principal, ServiceError> {
        let principal = self.authenticate(credential)?;
        if principal.token {
            return Err(super::auth::AuthError::TokenCannotMint.into());
        }
        principal.require(Scope::Admin)?;
        Ok(principal)
    }

    /// Mints a token for `principal`'s org (see the module docs).
    pub fn mint_token(
        &self,
        principal: &Principal,
        request: MintRequest,
    ) -> Result<MintedToken, ServiceError> {
        // the first of the fleet keys' token keys the control plane has
        // published: during a fleet-key rotation, the one workers accept
        let snapshot = self.snapshot.load();
        let key = self
            .token_minters
            .iter()
            .find(|k| snapshot.token_keys.contains_key(k.key_id()))
            .ok_or_else(|| {
                ServiceError::Unavailable(
                    "no token key of this worker is published yet; retry shortly".into(),
                )
            })?;
        let max = snapshot
            .settings()
            .token_max_ttl_seconds(Some(&principal.org_id));
        let asked = request.checked(max)?;
        let now = jiff::Timestamp::now().as_second();
        let iat = jiff::Timestamp::from_second(now)
            .map_err(|e| ServiceError::Internal(format!("clock: {e}")))?;
        let exp = jiff::Timestamp::from_second(now.saturating_add(asked.ttl_seconds))
            .map_err(|_| ServiceError::invalid("ttl_seconds", "is out of range"))?;
        let claims = Claims {
            org: principal.org_id.clone(),
            agent: asked.agent,
            scopes: asked.scopes,
            iat,
            exp,
            jti: token::new_token_id(),
        };
        let minted =
            token::mint(key, &claims).map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        tracing::info!(token_id = %claims.jti, org_id = %claims.org, agent = ?claims.agent, key_id = key.key_id(), by = %principal.key_id, "agent token minted");
        Ok(MintedToken {
            token: minted,
            token_id: claims.jti,
            org_id: claims.org,
            agent_id: claims.agent,
            scopes: claims.scopes,
            issued_at: claims.iat.to_string(),
            expires_at: claims.exp.to_string(),
            key_id: key.key_id().to_owned(),
        })
    }
}

/// A mint request once its rules held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedMint {
    pub agent: Option<String>,
    /// Non-empty, each of read, write, admin, once.
    pub scopes: Vec<String>,
    /// 1 ..= the org's max.
    pub ttl_seconds: i64,
}

impl MintRequest {
    /// Checks the request against the rules, `max_ttl` the org's
    /// `tokens.max_ttl_seconds`.
    pub fn checked(self, max_ttl: i64) -> Result<CheckedMint, ServiceError> {
        let agent = self.agent_id.filter(|a| !a.is_empty());
        if let Some(agent) = &agent
            && (agent.len() > MAX_AGENT_LEN || agent.chars().any(char::is_control))
        {
            return Err(ServiceError::invalid(
                "agent_id",
                "must be at most 256 bytes without control characters",
            ));
        }
        let mut scopes: Vec<String> = Vec::new();
        for scope in &self.scopes {
            let scope = scope.trim().to_ascii_lowercase();
            if !SCOPES.contains(&scope.as_str()) {
                return Err(ServiceError::invalid(
                    "scopes",
                    "each must be one of read, write, admin",
                ));
            }
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            scopes = vec!["read".into(), "write".into()];
        }
        if agent.is_some() && scopes.iter().any(|s| s == "admin") {
            return Err(ServiceError::invalid(
                "scopes",
                "an agent-bound token cannot carry admin",
            ));
        }
        let ttl_seconds = match self.ttl_seconds {
            None | Some(0) => DEFAULT_TTL_SECONDS.min(max_ttl),
            Some(n) => i64::try_from(n).unwrap_or(i64::MAX),
        };
        if ttl_seconds > max_ttl {
            return Err(ServiceError::BadRequest(format!(
                "invalid ttl_seconds: {ttl_seconds} exceeds tokens.max_ttl_seconds ({max_ttl}) for this org"
            )));
        }
        Ok(CheckedMint {
            agent,
            scopes,
            ttl_seconds,
        })
    }
}
