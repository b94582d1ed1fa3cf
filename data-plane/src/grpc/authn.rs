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
        // a Go memtrace key: the deprecation metadata on every answer, in
        // its headers and its trailers (a refusal is trailers-only: headers)
        Box::pin(async move {
            let response = answer.await?;
            let (mut parts, body) = response.into_parts();
            crate::admission::legacy::mark(&mut parts.headers);
            let body = tonic::body::Body::new(LegacyTrailers { inner: body });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// A response body whose trailers get the legacy key's deprecation metadata.
struct LegacyTrailers {
    inner: tonic::body::Body,
}

impl http_body::Body for LegacyTrailers {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(mut frame))) = polled {
            if let Some(trailers) = frame.trailers_mut() {
                crate::admission::legacy::mark(trailers);
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<S: NamedService> NamedService for AuthenticateFirst<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::{Body as _, Frame};
    use std::pin::Pin;

    /// A body of one data frame then trailers.
    struct Answer(u8);

    impl http_body::Body for Answer {
        type Data = tonic::codegen::Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Status>>> {
            self.0 += 1;
            Poll::Ready(match self.0 {
                1 => Some(Ok(Frame::data(tonic::codegen::Bytes::from_static(b"x")))),
                2 => Some(Ok(Frame::trailers(http::HeaderMap::new()))),
                _ => None,
            })
        }
    }

    #[tokio::test]
    async fn legacy_trailers_carry_the_deprecation() {
        let mut body = LegacyTrailers {
            inner: tonic::body::Body::new(Answer(0)),
        };
        let mut frames = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            frames.push(frame.unwrap());
        }
        assert_eq!(frames.len(), 2);
        assert!(frames[0].is_data(), "data passes through");
        let trailers = frames[1].trailers_ref().expect("trailers");
        assert_eq!(trailers["deprecation"], "true");
        assert!(trailers["warning"].to_str().unwrap().starts_with("299 - "));
    }
}
