//! The stand-in's HTTP side: an accept loop that can drop a connection on
//! demand (each connection gets a kill switch the handlers can pull, with
//! an orderly close or a reset), the router, and the handlers for writes,
//! queries, health and readiness.

use super::faults::{FaultKind, Target};
use super::timefmt::rfc3339_now;
use super::{MAX_HEALTH_CALLS, RecordedRequest, Shared, read, write};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub(super) const WRITE_PATH: &str = "/api/v1/write/msgpack";
pub(super) const QUERY_PATH: &str = "/api/v1/query";

pub(super) type Failure = (StatusCode, String);

/// Pulled by a handler to close its connection without answering; with
/// `reset` set first, the close is a reset.
#[derive(Clone)]
pub(super) struct ConnKill {
    notify: Arc<Notify>,
    reset: Arc<AtomicBool>,
}

impl ConnKill {
    /// Resets the connection now (the handler calling this never answers).
    pub(super) async fn reset(&self) -> ! {
        self.reset.store(true, Ordering::SeqCst);
        self.notify.notify_one();
        std::future::pending().await
    }
}

/// What a request processed despite a fault ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    /// This status instead of the answer.
    Status(u16),
    /// A reset instead of the answer.
    Reset,
}

/// A connection's socket that, when its `reset` flag is set, is closed with
/// SO_LINGER 0: the kernel answers the close with an RST instead of a FIN.
struct ResetOnDrop {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            // A zero linger never blocks the close (the reason tokio
            // deprecates set_linger is a non-zero one): it discards what is
            // unsent and resets the connection.
            #[allow(deprecated)]
            let _ = self.inner.set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for ResetOnDrop {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResetOnDrop {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route(WRITE_PATH, post(write::write))
        .route(QUERY_PATH, post(read::query_route))
        .route(
            super::delete::DELETE_PATH,
            post(super::delete::delete_route),
        )
        .with_state(shared)
}

/// Serves until the task is aborted; aborting drops every connection too.
pub(crate) async fn serve(listener: TcpListener, router: Router) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(connection(stream, router.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn connection(stream: TcpStream, router: Router) {
    let _ = stream.set_nodelay(true);
    let kill = ConnKill {
        notify: Arc::new(Notify::new()),
        reset: Arc::new(AtomicBool::new(false)),
    };
    let stream = ResetOnDrop {
        inner: stream,
        reset: kill.reset.clone(),
    };
    let handle = kill.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(handle.clone());
        tower::ServiceExt::oneshot(router.clone(), req)
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        () = kill.notify.notified() => {}
    }
    // the connection (and with it the socket) is dropped here
}

impl Shared {
    pub(super) fn record(&self, method: &str, path: &str, headers: &HeaderMap) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(RecordedRequest {
                method: method.into(),
                path: path.into(),
                headers: headers.clone(),
            });
        }
    }

    pub(super) fn finish(&self, resp: Response) -> Response {
        let code = resp.status().as_u16();
        self.stats_mut(|s| *s.statuses.entry(code).or_default() += 1);
        resp
    }
}

pub(super) fn json_reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Arc's write-path error body.
pub(super) fn write_error((status, msg): Failure) -> Response {
    json_reply(status, json!({ "error": msg }))
}

/// Arc's query error envelope.
pub(super) fn query_error((status, msg): Failure) -> Response {
    json_reply(
        status,
        json!({ "success": false, "error": msg, "timestamp": rfc3339_now() }),
    )
}

/// Arc's auth-middleware body.
pub(super) fn auth_error(status: StatusCode, msg: &str) -> Response {
    json_reply(status, json!({ "success": false, "error": msg }))
}

pub(super) fn auth_failure((status, msg): Failure) -> Response {
    auth_error(status, &msg)
}

pub(super) fn injected(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_reply(
        status,
        json!({ "success": false, "error": format!("stand-in fault: injected HTTP {code}") }),
    )
}

/// Applies the faults aimed at this request. `Ok(Some(after))`: process,
/// then end as `after` says; `Err`: answer this now. A dropped or reset connection
/// never returns.
pub(super) async fn apply_faults(
    s: &Shared,
    conn: &ConnKill,
    target: Target,
) -> Result<Option<After>, Response> {
    let plan = s.faults.take(target);
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    match plan.action {
        None | Some(FaultKind::Slow(_)) => Ok(None),
        Some(FaultKind::Status(code)) => Err(injected(code)),
        Some(FaultKind::StatusAfterProcessing(code)) => Ok(Some(After::Status(code))),
        Some(FaultKind::ResetAfterProcessing) => Ok(Some(After::Reset)),
        Some(FaultKind::Unauthorized) => Err(auth_error(
            StatusCode::UNAUTHORIZED,
            "Invalid or expired token",
        )),
        Some(FaultKind::Stall) => {
            if s.faults.stall(s.limits.stall_max).await {
                Ok(None)
            } else {
                Err(injected(503))
            }
        }
        Some(FaultKind::DropConnection) => {
            conn.notify.notify_one();
            std::future::pending().await
        }
        Some(FaultKind::ResetConnection) => conn.reset().await,
    }
}

/// Reads a body of at most `max` bytes (413 beyond, as Arc).
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<axum::body::Bytes, Failure> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Payload too large (max {max} bytes). Consider batching into smaller requests."
            ),
        )
    };
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, max).await.map_err(|e| {
        if e.to_string().contains("length limit") {
            too_large()
        } else {
            (StatusCode::BAD_REQUEST, format!("failed to read body: {e}"))
        }
    })
}

async fn health(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    s.record("GET", "/health", &headers);
    if let Ok(mut calls) = s.health_calls.lock() {
        if calls.len() >= MAX_HEALTH_CALLS {
            calls.remove(0);
        }
        calls.push(headers);
    }
    let up = s.started.elapsed().as_secs();
    s.finish(json_reply(
        StatusCode::OK,
        json!({ "status": "ok", "time": rfc3339_now(), "uptime": format!("{up}s"),
                "uptime_sec": up, "service": "arc-standin" }),
    ))
}

async fn ready(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    s.record("GET", "/ready", &headers);
    let resp = if s.ready.load(std::sync::atomic::Ordering::SeqCst) {
        json_reply(
            StatusCode::OK,
            json!({ "status": "ready", "time": rfc3339_now() }),
        )
    } else {
        json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "not_ready", "reason": "stand-in switched to not ready" }),
        )
    };
    s.finish(resp)
}
