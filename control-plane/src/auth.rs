//! Admin authentication: every admin RPC carries `authorization: Bearer
//! <admin token>`. Tokens are checked against the hashes loaded from the
//! store (no I/O per request). Data-plane API keys are refused outright.

use memtrace_common::credentials::{
    credential_fingerprint, hash_admin_token, hashes_match, looks_like_api_key,
};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use tonic::{Request, Status};

/// Who made an admin call, as a non-reversible fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminActor {
    pub fingerprint: String,
}

/// The set of valid admin-token hashes, shared by every service.
#[derive(Debug, Clone, Default)]
pub struct AdminAuth {
    hashes: Arc<RwLock<HashSet<[u8; 32]>>>,
}

impl AdminAuth {
    pub fn replace(&self, hashes: impl IntoIterator<Item = [u8; 32]>) {
        let set: HashSet<[u8; 32]> = hashes.into_iter().collect();
        match self.hashes.write() {
            Ok(mut guard) => *guard = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    /// Checks a bearer credential.
    pub fn authenticate(&self, token: &str) -> Result<AdminActor, Status> {
        if looks_like_api_key(token) {
            return Err(Status::permission_denied(
                "api keys (mtk_…) are data-plane credentials and cannot call the admin api; use an admin token",
            ));
        }
        let presented = hash_admin_token(token);
        let known = match self.hashes.read() {
            Ok(guard) => guard.iter().any(|h| hashes_match(h, &presented)),
            Err(poisoned) => poisoned
                .into_inner()
                .iter()
                .any(|h| hashes_match(h, &presented)),
        };
        if !known {
            return Err(Status::unauthenticated("invalid admin token"));
        }
        Ok(AdminActor {
            fingerprint: credential_fingerprint(token),
        })
    }
}

impl tonic::service::Interceptor for AdminAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated(
                "missing admin token: send metadata 'authorization: Bearer <admin token>'",
            )
        })?;
        let value = header
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization metadata is not ascii"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be 'Bearer <admin token>'")
            })?;
        let actor = self.authenticate(token)?;
        request.extensions_mut().insert(actor);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrace_common::credentials::{generate_admin_token, generate_api_key};

    #[test]
    fn tokens_keys_and_garbage() {
        let auth = AdminAuth::default();
        let token = generate_admin_token();
        auth.replace([hash_admin_token(&token)]);
        assert!(auth.authenticate(&token).is_ok());
        assert_eq!(
            auth.authenticate("nope").unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let key = generate_api_key();
        assert_eq!(
            auth.authenticate(&key.token).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }
}
