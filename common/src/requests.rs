//! Request metrics of a memtrace port, one tower layer for both planes and
//! both protocols:
//!
//! - `memtrace_requests_total{protocol, route, code}` and
//!   `memtrace_request_duration_seconds{protocol, route}` (a histogram).
//! - `protocol` is `grpc` or `http`. A gRPC call's `route` is its method
//!   path (`/memtrace.v1.MemoryService/CreateMemory`) and its `code` the
//!   `grpc-status` name (`OK`, `UNAUTHENTICATED`, …) from the trailers, or
//!   `CANCELLED` when the client went away first; an HTTP request's `route`
//!   is the axum route template it matched (`/api/v1/agents/{id}`, tagged
//!   by [`tag_route`]) and its `code` the status.
//! - Cardinality is bounded by construction: a gRPC path that is not one
//!   of the process's methods (given at construction, from its descriptors)
//!   and an HTTP path no route matched are counted as `route="unmatched"`,
//!   whatever they were answered; no label carries an org, key or id.
//! - A gRPC call is timed to its trailers (a streaming call's whole life),
//!   an HTTP request to its response head.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tracing::Instrument;

use crate::telemetry::traces;

/// The route label of requests no route or method matched.
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    protocol: &'static str,
    route: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    protocol: &'static str,
    route: String,
}

fn new_histogram() -> Histogram {
    // 1 ms … ~33 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// The families, shared by every clone of the layer.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    calls: Family<CallLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// The gRPC method paths the process implements.
    grpc_methods: Arc<std::collections::HashSet<String>>,
}

impl Default for RequestMetrics {
    /// Metrics for a process with no gRPC methods.
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl RequestMetrics {
    /// Metrics for a process implementing `grpc_methods`
    /// (`/package.Service/Method`, see [`crate::reflection::method_paths`]).
    pub fn new(grpc_methods: Vec<String>) -> Self {
        Self {
            calls: Family::default(),
            durations: Family::new_with_constructor(new_histogram),
            grpc_methods: Arc::new(grpc_methods.into_iter().collect()),
        }
    }

    /// The route label of a gRPC path.
    fn grpc_route(&self, path: String) -> String {
        if self.grpc_methods.contains(&path) {
            path
        } else {
            UNMATCHED.to_owned()
        }
    }

    /// Registers both families under `memtrace_`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("memtrace");
        sub.register(
            "requests",
            "requests answered, by protocol, route and code",
            self.calls.clone(),
        );
        sub.register(
            "request_duration_seconds",
            "time to answer (gRPC: to the trailers), by protocol and route",
            self.durations.clone(),
        );
    }

    fn record(&self, protocol: &'static str, route: String, code: String, started: Instant) {
        self.durations
            .get_or_create(&RouteLabels {
                protocol,
                route: route.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.calls
            .get_or_create(&CallLabels {
                protocol,
                route,
                code,
            })
            .inc();
    }
}

/// `registry` as an OpenMetrics text response (the `/metrics` endpoint of
/// both planes).
pub fn openmetrics(registry: &Registry) -> Response {
    use axum::response::IntoResponse;
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (
            [(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics encoding failed: {error}"),
        )
            .into_response(),
    }
}

/// The matched route template, carried from the axum router to the layer
/// on the response.
#[derive(Clone, Debug)]
struct RouteTemplate(String);

/// axum middleware (`Router::route_layer(axum::middleware::from_fn(tag_route))`)
/// that tags each response with the route template it matched.
pub async fn tag_route(request: Request, next: Next) -> Response {
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(template) = template {
        response.extensions_mut().insert(RouteTemplate(template));
    }
    response
}

/// The tower layer (`tonic::transport::Server::builder().layer(...)`).
#[derive(Clone, Debug)]
pub struct RequestMetricsLayer(pub Arc<RequestMetrics>);

impl<S> tower::Layer<S> for RequestMetricsLayer {
    type Service = RequestMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RequestMetricsService<S> {
    inner: S,
    metrics: Arc<RequestMetrics>,
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The name of a `grpc-status` value (`"2"` → `UNKNOWN`).
fn grpc_code_name(value: Option<&http::HeaderValue>) -> Option<String> {
    let code = value?.to_str().ok()?.trim().parse::<i32>().ok()?;
    let name = format!("{:?}", tonic::Code::from_i32(code));
    // `tonic::Code`'s Debug names are CamelCase (`Unauthenticated`)
    Some(screaming_snake(&name))
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RequestMetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<Recorded<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        // only a gRPC call's path becomes a label (REST's comes from the
        // matched template on the response)
        let grpc_path = is_grpc(request.headers()).then(|| request.uri().path().to_owned());
        let metrics = self.metrics.clone();
        let span = request_span(&request, grpc_path.is_some());
        let method = request.method().clone();
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let in_span = span.clone();
        Box::pin(
            async move {
                let response = future.await?;
                let (parts, body) = response.into_parts();
                let pending = if let Some(path) = grpc_path {
                    // trailers-only answers carry the status in the head
                    let route = metrics.grpc_route(path);
                    traces::rename(&span, route.clone());
                    match grpc_code_name(parts.headers.get("grpc-status")) {
                        Some(code) => {
                            record_grpc_code(&span, &code);
                            metrics.record("grpc", route, code, started);
                            None
                        }
                        None => Some(Pending {
                            metrics,
                            route,
                            started,
                        }),
                    }
                } else {
                    let route = parts
                        .extensions
                        .get::<RouteTemplate>()
                        .map_or_else(|| UNMATCHED.to_owned(), |t| t.0.clone());
                    if !span.is_none() {
                        traces::rename(&span, format!("{method} {route}"));
                        span.record("http.route", route.as_str());
                        span.record("http.response.status_code", parts.status.as_u16());
                        if parts.status.is_server_error() {
                            span.record("otel.status_code", "ERROR");
                        }
                    }
                    metrics.record("http", route, parts.status.as_u16().to_string(), started);
                    None
                };
                Ok(http::Response::from_parts(
                    parts,
                    Recorded {
                        inner: body,
                        pending,
                        span,
                    },
                ))
            }
            .instrument(in_span),
        )
    }
}

/// The `request` span of a call ([`tracing::Span::none`] while trace
/// export is off): its parent is the client's `traceparent`, if any; the
/// route and outcome are recorded when the answer is known, the org by
/// admission.
fn request_span<B>(request: &http::Request<B>, grpc: bool) -> tracing::Span {
    // probes and scrapes (every few seconds from the orchestrator) are not traced
    if !traces::enabled() || matches!(request.uri().path(), "/health" | "/ready" | "/metrics") {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: traces::TARGET,
        "request",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = if grpc { "grpc" } else { "" },
        http.request.method = request.method().as_str(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        rpc.grpc.status_code = tracing::field::Empty,
        memtrace.org = tracing::field::Empty,
    );
    traces::adopt_parent(&span, request.headers());
    span
}

fn record_grpc_code(span: &tracing::Span, code: &str) {
    if span.is_none() {
        return;
    }
    span.record("rpc.grpc.status_code", code);
    if code != "OK" {
        span.record("otel.status_code", "ERROR");
    }
}

/// A gRPC call waiting for its trailers.
#[derive(Debug)]
struct Pending {
    metrics: Arc<RequestMetrics>,
    route: String,
    started: Instant,
}

impl Pending {
    fn finish(self, code: String) {
        self.metrics.record("grpc", self.route, code, self.started);
    }
}

/// A response body that records a gRPC call when its trailers pass (or,
/// dropped before them, as CANCELLED).
#[derive(Debug)]
pub struct Recorded<B> {
    inner: B,
    pending: Option<Pending>,
    /// The call's span: entered while the body is polled (a streaming
    /// call's work happens there), closed with the body.
    span: tracing::Span,
}

impl<B> Recorded<B> {
    fn finish(&mut self, code: String) {
        if let Some(pending) = self.pending.take() {
            record_grpc_code(&self.span, &code);
            pending.finish(code);
        }
    }
}

impl<B> Drop for Recorded<B> {
    fn drop(&mut self) {
        self.finish("CANCELLED".to_owned());
    }
}

impl<B: Body + Unpin> Body for Recorded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let span = self.span.clone();
        let _entered = span.enter();
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && self.pending.is_some()
                {
                    let code = grpc_code_name(trailers.get("grpc-status"))
                        .unwrap_or_else(|| "UNKNOWN".to_owned());
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish("INTERNAL".to_owned()),
            Poll::Ready(None) => self.finish("UNKNOWN".to_owned()),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_implemented_grpc_paths_are_routes() {
        let m = RequestMetrics::new(vec!["/memtrace.v1.MemoryService/GetMemory".into()]);
        assert_eq!(
            m.grpc_route("/memtrace.v1.MemoryService/GetMemory".into()),
            "/memtrace.v1.MemoryService/GetMemory"
        );
        assert_eq!(
            m.grpc_route("/memtrace.v1.MemoryService/Nope".into()),
            UNMATCHED
        );
        assert_eq!(m.grpc_route("/x".into()), UNMATCHED);
    }

    #[test]
    fn grpc_status_names() {
        let v = |s: &str| http::HeaderValue::from_str(s).ok();
        assert_eq!(grpc_code_name(v("0").as_ref()).as_deref(), Some("OK"));
        assert_eq!(
            grpc_code_name(v("16").as_ref()).as_deref(),
            Some("UNAUTHENTICATED")
        );
        assert_eq!(
            grpc_code_name(v("8").as_ref()).as_deref(),
            Some("RESOURCE_EXHAUSTED")
        );
        assert_eq!(grpc_code_name(v("x").as_ref()), None);
        assert_eq!(grpc_code_name(None), None);
    }
}
