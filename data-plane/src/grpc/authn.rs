//! Authentication before decoding. tonic decodes a unary request message
//! before its handler runs, so a handler that authenticates would let any
//! caller make the worker read and allocate a whole message first.
//! [`AuthenticateFirst`] sits in front of each `memtrace.v1` service and
//! checks the call's API key from its metadata alone (the snapshot lookup
//! of [`Admission::authenticate`], no I/O): a call without a valid key is
//! answered UNAUTHENTICATED (UNAVAILABLE before the first snapshot) without
//! its body being read. The handler then admits the call in full (scope,
//! rate limit, store), as REST handlers do.

use super::token_of;
use crate::admission::Admission;
use crate::admission::legacy::looks_legacy;
use tonic::Status;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::server::NamedService;

/// A `memtrace.v1` service behind the metadata check (module docs).
#[derive(Clone)]
pub struct AuthenticateFirst<S> {
    inner: S,
    admission: Admission,
}

impl<S> AuthenticateFirst<S> {
    pub fn new(inner: S, admission: Admission) -> Self {
        Self { inner, admission }
    }
}

impl<S, B> Service<http::Request<B>> for AuthenticateFirst<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let token = token_of(header("x-api-key"), header("authorization"));
        let legacy = token.is_some_and(looks_legacy);
        let outcome = self.admission.authenticate(token);
        let answer: Self::Future = match outcome {
            Ok(_) => Box::pin(self.inner.call(request)),
            Err(e) => {
                // the body is dropped unread
                let refused = Status::from(e).into_http();
                Box::pin(async move { Ok(refused) })
            }
        };
        if !legacy {
            return answer;
        }
        // a Go memtrace key: the deprecation metadata on every answer
        Box::pin(async move {
            let mut response = answer.await?;
            crate::rest::mark_legacy(response.headers_mut());
            Ok(response)
        })
    }
}

impl<S: NamedService> NamedService for AuthenticateFirst<S> {
    const NAME: &'static str = S::NAME;
}
