//! [`AdminGuard`] sits in front of every `memtrace.admin.v1` service and
//! decides each call from its path and metadata alone, before the body is
//! read (tonic decodes a message before its handler runs):
//!
//! 1. UNAVAILABLE until startup has opened the [`Gate`];
//! 2. the bearer admin token is authenticated ([`AdminAuth`]):
//!    UNAUTHENTICATED when missing, unknown, revoked or expired (a revoked
//!    or expired real token is audited), PERMISSION_DENIED for an api key;
//! 3. the token's role must allow the method ([`required_role`]), else
//!    PERMISSION_DENIED naming the role, and the attempt is audited.
//!
//! An admitted call carries the [`AdminActor`] (audit fingerprint) and the
//! [`AdminCaller`] (token id and role) as request extensions. Unknown or
//! malformed credentials are not audited: anyone can send them, and they
//! would let anyone fill the trail.

use super::Gate;
use super::roles::required_role;
use crate::auth::{AdminActor, AdminAuth, AdminCaller, Refusal};
use crate::error::ControlPlaneError;
use memtrace_common::clock::now_ms;
use memtrace_common::credentials::credential_fingerprint;
use std::sync::Arc;
use tonic::Status;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::server::NamedService;
use zeroize::Zeroizing;

/// An admin service behind authentication and the role check (module docs).
#[derive(Clone)]
pub struct AdminGuard<S> {
    inner: S,
    gate: Arc<Gate>,
    auth: AdminAuth,
}

impl<S> AdminGuard<S> {
    pub fn new(inner: S, gate: Arc<Gate>, auth: AdminAuth) -> Self {
        Self { inner, gate, auth }
    }
}

impl<S, B> Service<http::Request<B>> for AdminGuard<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // the service that was polled ready handles this call
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let (gate, auth) = (self.gate.clone(), self.auth.clone());
        let path = request.uri().path().to_owned();
        let bearer = bearer_token(request.headers());
        Box::pin(async move {
            match admit(&gate, &auth, &path, bearer).await {
                Ok((actor, caller)) => {
                    request.extensions_mut().insert(actor);
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                // the body is dropped unread
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

impl<S: NamedService> NamedService for AdminGuard<S> {
    const NAME: &'static str = S::NAME;
}

/// The token of `authorization: Bearer <token>`.
fn bearer_token(headers: &http::HeaderMap) -> Result<Zeroizing<String>, ControlPlaneError> {
    let value = headers
        .get("authorization")
        .ok_or_else(|| {
            ControlPlaneError::Unauthenticated(
                "missing admin token: send metadata 'authorization: Bearer <admin token>'".into(),
            )
        })?
        .to_str()
        .map_err(|_| {
            ControlPlaneError::Unauthenticated("authorization metadata is not ascii".into())
        })?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| Zeroizing::new(t.to_owned()))
        .ok_or_else(|| {
            ControlPlaneError::Unauthenticated(
                "authorization metadata must be 'Bearer <admin token>'".into(),
            )
        })
}

/// Steps 1 to 3 of the module docs.
async fn admit(
    gate: &Gate,
    auth: &AdminAuth,
    path: &str,
    bearer: Result<Zeroizing<String>, ControlPlaneError>,
) -> Result<(AdminActor, AdminCaller), Status> {
    let service = gate.service()?;
    let token = bearer?;
    let method = path.trim_start_matches('/');
    let (actor, caller) = match auth.authenticate(&token, now_ms()) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            if let Refusal::Known(known) = &refusal {
                tracing::warn!(token_id = %known.token_id, reason = known.reason, method, "admin call with a refused token");
                let actor = AdminActor {
                    fingerprint: credential_fingerprint(&token),
                };
                service.audit_refused_token(&actor, known, method).await;
            }
            return Err(ControlPlaneError::from(refusal).into());
        }
    };
    let required = required_role(path);
    if !caller.role.allows(required) {
        tracing::warn!(token_id = %caller.token_id, role = %caller.role, method, "admin call refused: role too low");
        service
            .audit_denied_call(&actor, &caller, method, required)
            .await;
        return Err(ControlPlaneError::RoleDenied {
            token_id: caller.token_id,
            role: caller.role.as_str(),
            method: method.to_owned(),
            required: required.as_str(),
        }
        .into());
    }
    Ok((actor, caller))
}
