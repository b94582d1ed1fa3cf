//! Request bodies of the REST API, read the same way for every route:
//!
//! - within `server.read_timeout` from the moment the handler asks for it
//!   (a client trickling its body cannot hold a request, and its memory,
//!   open longer: 408);
//! - at most [`MAX_REQUEST_BYTES`] as sent (413);
//! - decoded from `Content-Encoding: gzip` (or `x-gzip`) or `zstd` when the
//!   client compressed it, the decoded size bounded by the same limit while
//!   decoding (a small compressed body cannot expand past it: 413; a
//!   truncated or corrupt one is a 400 naming the encoding); any other
//!   encoding is a 415 naming the ones accepted;
//! - then parsed as JSON whatever the `Content-Type` says: the original
//!   memtrace's SDKs send `application/json` on every request and its
//!   server parsed bodies as JSON regardless, so a body that is not JSON is
//!   a 400 from the parser, not a 415.
//!
//! The key is checked before the body is read (axum runs the `Reader` /
//! `Writer` extractors first), so an unauthenticated client never makes
//! the worker read or decode anything. A request answered without its body
//! read to the end (refused at admission, too large, too slow, in an
//! unknown encoding) leaves bytes on an HTTP/1.1 connection that cannot be
//! reused: [`close_if_unread`] says so with `Connection: close` on the
//! answer, so a pooled client does not send its next request on a
//! connection the worker is about to close.

use crate::admission::MAX_REQUEST_BYTES;
use crate::service::ServiceError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// How long a client may take to send its body (`server.read_timeout`);
/// the REST router carries it as an extension.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// A request body as read and decoded (or why it could not be).
pub(crate) struct Body(pub Result<Bytes, ServiceError>);

/// A body's `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    /// The encoding named by the request's headers: one value, case
    /// insensitive; none is identity.
    fn of(headers: &axum::http::HeaderMap) -> Result<Self, ServiceError> {
        let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
        let Some(value) = values.next() else {
            return Ok(Self::Identity);
        };
        let unsupported = |shown: &str| {
            ServiceError::Unsupported(format!(
                "unsupported Content-Encoding {shown:?}: send the body as is, or compressed with gzip or zstd (one encoding)"
            ))
        };
        if values.next().is_some() {
            return Err(unsupported("several headers"));
        }
        let text = value.to_str().map_err(|_| unsupported("non-ASCII"))?;
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(Self::Identity),
            "gzip" | "x-gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            // at most the first 64 characters of what was sent
            _ => Err(unsupported(&text.chars().take(64).collect::<String>())),
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let timeout = req
            .extensions()
            .get::<BodyTimeout>()
            .map_or(Duration::from_secs(30), |t| t.0);
        let encoding = match Encoding::of(req.headers()) {
            Ok(encoding) => encoding,
            Err(e) => return Ok(Self(Err(e))),
        };
        let read = tokio::time::timeout(timeout, Bytes::from_request(req, state)).await;
        let raw = match read {
            Err(_) => return Ok(Self(Err(ServiceError::BodyTimeout(timeout)))),
            Ok(Err(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Ok(Self(Err(ServiceError::TooLarge(format!(
                    "request body exceeds the limit of {MAX_REQUEST_BYTES} bytes"
                )))));
            }
            Ok(Err(e)) => {
                return Ok(Self(Err(ServiceError::BadRequest(format!(
                    "invalid request body: {}",
                    e.body_text()
                )))));
            }
            Ok(Ok(raw)) => raw,
        };
        if encoding == Encoding::Identity {
            return Ok(Self(Ok(raw)));
        }
        // decoding up to 32 MiB is CPU work: off the async threads
        let decoded =
            tokio::task::spawn_blocking(move || decode(encoding, &raw, MAX_REQUEST_BYTES))
                .await
                .unwrap_or_else(|e| Err(ServiceError::Internal(format!("body decoder: {e}"))));
        Ok(Self(decoded.map(Bytes::from)))
    }
}

/// axum middleware: marks the answer `Connection: close` when an HTTP/1
/// request's body was not read to its end (see the module docs).
pub async fn close_if_unread(
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let has_body = request.method() != axum::http::Method::GET
        && !http_body::Body::is_end_stream(request.body());
    let http1 = request.version() < axum::http::Version::HTTP_2;
    if !(has_body && http1) {
        return next.run(request).await;
    }
    let finished = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        axum::body::Body::new(Tracked {
            inner,
            finished: finished.clone(),
        })
    });
    let mut response = next.run(request).await;
    if !finished.load(Ordering::Acquire) {
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A request body that records when it has been read to its end.
struct Tracked {
    inner: axum::body::Body,
    finished: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished.store(true, Ordering::Release);
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

/// `raw` decoded from `encoding`, refused once it would exceed `limit`
/// bytes (the decoder is never asked for more than `limit + 1`).
fn decode(encoding: Encoding, raw: &[u8], limit: usize) -> Result<Vec<u8>, ServiceError> {
    let name = encoding.name();
    let invalid = |e: std::io::Error| {
        ServiceError::BadRequest(format!(
            "invalid request body: not valid {name} (Content-Encoding: {name}): {e}"
        ))
    };
    let reader: Box<dyn Read> = match encoding {
        Encoding::Identity => Box::new(raw),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Encoding::Zstd => Box::new(zstd::stream::read::Decoder::new(raw).map_err(invalid)?),
    };
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).map_err(invalid)?;
    if out.len() > limit {
        return Err(ServiceError::TooLarge(format!(
            "request body decodes ({name}) to more than the limit of {limit} bytes"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 1).unwrap()
    }

    fn encoding(values: &[&str]) -> Result<Encoding, ServiceError> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        Encoding::of(&h)
    }

    #[test]
    fn encodings_accepted_and_refused() {
        assert_eq!(encoding(&[]).unwrap(), Encoding::Identity);
        assert_eq!(encoding(&["identity"]).unwrap(), Encoding::Identity);
        assert_eq!(encoding(&[" GZIP "]).unwrap(), Encoding::Gzip);
        assert_eq!(encoding(&["x-gzip"]).unwrap(), Encoding::Gzip);
        assert_eq!(encoding(&["zstd"]).unwrap(), Encoding::Zstd);
        for refused in [&["br"][..], &["gzip, zstd"], &["gzip", "zstd"]] {
            let e = encoding(refused).unwrap_err();
            assert!(matches!(e, ServiceError::Unsupported(_)), "{refused:?}");
            assert!(e.to_string().contains("gzip or zstd"), "{e}");
        }
    }

    #[test]
    fn round_trips_and_bounds_the_decoded_size() {
        let body = br#"{"agent_id":"a","content":"hello"}"#.repeat(100);
        for (enc, packed) in [(Encoding::Gzip, gzip(&body)), (Encoding::Zstd, zstd(&body))] {
            assert_eq!(decode(enc, &packed, body.len()).unwrap(), body);
            // one byte under the decoded size: refused, never decoded whole
            let e = decode(enc, &packed, body.len() - 1).unwrap_err();
            assert!(matches!(e, ServiceError::TooLarge(_)), "{e}");
        }
        // 64 MiB of zeros packs into a few KB; the bound stops it at 1 MiB
        let bomb = zstd(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 64 << 10);
        let e = decode(Encoding::Zstd, &bomb, 1 << 20).unwrap_err();
        assert!(matches!(e, ServiceError::TooLarge(_)), "{e}");
    }

    #[test]
    fn truncated_and_corrupt_bodies_are_400_naming_the_encoding() {
        let body = b"{\"content\":\"a memory worth compressing\"}".repeat(50);
        for (enc, packed) in [(Encoding::Gzip, gzip(&body)), (Encoding::Zstd, zstd(&body))] {
            let name = enc.name();
            let truncated = &packed[..packed.len() / 2];
            let e = decode(enc, truncated, 1 << 20).unwrap_err();
            assert!(matches!(e, ServiceError::BadRequest(_)), "{name}: {e}");
            assert!(e.to_string().contains(name), "{e}");
            let e = decode(enc, b"{\"plain\": \"json\"}", 1 << 20).unwrap_err();
            assert!(matches!(e, ServiceError::BadRequest(_)), "{name}: {e}");
        }
    }
}
