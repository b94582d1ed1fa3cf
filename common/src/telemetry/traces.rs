//! Trace export over OTLP/gRPC, and W3C trace context in and out.
//!
//! Off until [`start`] is called with an endpoint: the binaries call it at
//! start when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and otherwise with the
//! published `telemetry.otlp_endpoint` once it is known (a worker on its
//! first snapshot, the control plane on loading its settings). The setting
//! is restart-required: the first endpoint wins for the process's life.
//! While off, nothing creates a span ([`enabled`] is one atomic load on
//! the request path) and the subscriber's trace layer samples nothing.
//!
//! Spans: one per request (`request`, by the serve loop's request layer,
//! whose parent is the client's `traceparent` when it sent one), `arc.write`
//! and `arc.query` per Arc call (their `traceparent` sent to Arc), and
//! `ingest.batch` per group-commit batch (child of its first writer's
//! request, linked to the others'). Attributes carry the org (never a key),
//! the route template (never a path with ids), and sizes.

use super::TelemetryError;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanBuilder, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span memtrace exports; the log filter always
/// enables it at `info` while export is on, whatever `log.level` says.
pub const TARGET: &str = "memtrace::trace";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static ACTIVE: OnceLock<SdkTracer> = OnceLock::new();
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported (cheap: one atomic load).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The tracer of the subscriber's trace layer, installed by
/// [`super::init`] before any export is configured: it samples nothing
/// until [`start`] sets the exporting tracer, then delegates to it. (The
/// layer itself cannot be installed later: a reloadable layer hides the
/// span context the propagation helpers read.)
#[derive(Debug)]
pub struct LateTracer {
    off: SdkTracer,
}

impl LateTracer {
    fn new() -> Self {
        let off = SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOff)
            .build()
            .tracer("memtrace");
        Self { off }
    }
}

impl opentelemetry::trace::Tracer for LateTracer {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        ACTIVE
            .get()
            .unwrap_or(&self.off)
            .build_with_context(builder, parent_cx)
    }
}

/// The trace layer [`super::init`] installs.
pub(super) fn layer<S>() -> tracing_opentelemetry::OpenTelemetryLayer<S, LateTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(LateTracer::new())
}

/// Where and how to export.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// `http://host:4317` (OTLP over gRPC).
    pub endpoint: String,
    /// `k1=v1,k2=v2`, sent as gRPC metadata (e.g. an ingest token).
    pub headers: String,
    /// `service.name` of the spans (`memtrace-worker`, …).
    pub service: &'static str,
}

impl std::fmt::Debug for TraceExport {
    // the headers may hold a token
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceExport")
            .field("endpoint", &without_userinfo(&self.endpoint))
            .field("headers", &if self.headers.is_empty() { "" } else { "***" })
            .field("service", &self.service)
            .finish()
    }
}

fn metadata(headers: &str) -> Result<tonic::metadata::MetadataMap, TelemetryError> {
    let mut map = tonic::metadata::MetadataMap::new();
    for pair in headers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad =
            || TelemetryError::Traces("telemetry.otlp_headers: each entry is name=value".into());
        let (name, value) = pair.split_once('=').ok_or_else(bad)?;
        let name =
            tonic::metadata::MetadataKey::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                .map_err(|_| bad())?;
        let value = value.trim().parse().map_err(|_| bad())?;
        map.insert(name, value);
    }
    Ok(map)
}

/// Starts exporting to `export.endpoint` (must run inside the Tokio
/// runtime: the exporter's channel lives there). Once per process: returns
/// `false` (and changes nothing) when export already started.
pub fn start(export: &TraceExport) -> Result<bool, TelemetryError> {
    if PROVIDER.get().is_some() {
        return Ok(false);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(export.endpoint.clone())
        .with_timeout(Duration::from_secs(10))
        .with_metadata(metadata(&export.headers)?)
        .build()
        .map_err(|e| {
            // the builder's errors may quote the endpoint
            let text = e
                .to_string()
                .replace(&export.endpoint, &without_userinfo(&export.endpoint));
            TelemetryError::Traces(format!("OTLP exporter: {text}"))
        })?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(
            Resource::builder_empty()
                .with_service_name(export.service)
                .build(),
        )
        .build();
    let tracer = provider.tracer("memtrace");
    if PROVIDER.set(provider).is_err() || ACTIVE.set(tracer).is_err() {
        return Ok(false);
    }
    ENABLED.store(true, Ordering::Relaxed);
    super::refresh_filter();
    tracing::info!(endpoint = %without_userinfo(&export.endpoint), service = export.service, "exporting traces over OTLP");
    Ok(true)
}

/// `endpoint` as it may be logged: credentials in its authority
/// (`http://user:secret@host`) replaced by `***`.
fn without_userinfo(endpoint: &str) -> String {
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("", endpoint));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("***@{}", &rest[at + 1..]),
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => endpoint.to_owned(),
    }
}

/// Starts export from the published `telemetry.otlp_*` settings, if
/// `endpoint` is set and export is not on yet; a different endpoint after
/// that is logged as needing a restart.
pub fn apply_settings(endpoint: &str, headers: &str, service: &'static str) {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        return;
    }
    if enabled() {
        return;
    }
    // an endpoint that failed is not retried (nor logged) on every snapshot
    static FAILED: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    let Ok(mut failed) = FAILED.lock() else {
        return;
    };
    if *failed == endpoint {
        return;
    }
    let export = TraceExport {
        endpoint: endpoint.to_owned(),
        headers: headers.to_owned(),
        service,
    };
    if let Err(error) = start(&export) {
        tracing::warn!(%error, "telemetry.otlp_endpoint: trace export not started; set another endpoint or restart");
        *failed = endpoint.to_owned();
    }
}

/// Starts export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set in `env` (it
/// takes precedence over the published setting; the exporter adds
/// `OTEL_EXPORTER_OTLP_HEADERS` itself). Call inside the runtime.
pub fn start_from_env(
    env: &crate::config::Env,
    service: &'static str,
) -> Result<(), TelemetryError> {
    let Some(endpoint) = env
        .get("OTEL_EXPORTER_OTLP_ENDPOINT")
        .map(str::trim)
        .filter(|v| !v.is_empty())
    else {
        return Ok(());
    };
    start(&TraceExport {
        endpoint: endpoint.to_owned(),
        headers: String::new(),
        service,
    })
    .map(|_| ())
}

/// Exports what is buffered and stops (at process exit; bounded).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(%error, "trace export did not flush");
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes the client's W3C trace context (`traceparent`, `tracestate`), if
/// it sent one, the parent of `span`.
pub fn adopt_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent: Context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

/// Names `span` (a request's name is known once it was routed: a span
/// already started keeps its fields but takes a new name this way).
pub fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt;
    if !span.is_none() {
        span.context().span().update_name(name);
    }
}

/// Adds `span`'s W3C trace context to outgoing `headers` (for Arc).
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if span.is_none() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// Makes `span` a child of `parent` (when it is a span), e.g. a batch of
/// its first writer's request.
pub fn set_parent(span: &tracing::Span, parent: &tracing::Span) {
    if !span.is_none() && !parent.is_none() {
        let _ = span.set_parent(parent.context());
    }
}

/// Links `span` to `other` (a request whose rows share a batch).
pub fn add_link(span: &tracing::Span, other: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt;
    if !span.is_none() && !other.is_none() {
        span.add_link(other.context().span().span_context().clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_into_metadata_and_refuse_what_is_not_a_pair() {
        let map = metadata("authorization=Bearer x, x-team = core").unwrap();
        assert_eq!(map.get("authorization").unwrap(), "Bearer x");
        assert_eq!(map.get("x-team").unwrap(), "core");
        assert!(metadata("").unwrap().is_empty());
        assert!(metadata("no-equals-sign").is_err());
        assert!(metadata("bad name=v").is_err());
    }

    #[test]
    fn logged_endpoints_lose_their_credentials() {
        assert_eq!(
            without_userinfo("http://user:sekrit@collector:4317/x@y"),
            "http://***@collector:4317/x@y"
        );
        assert_eq!(
            without_userinfo("http://collector:4317"),
            "http://collector:4317"
        );
        assert_eq!(without_userinfo("u:p@host:4317"), "***@host:4317");
    }

    #[test]
    fn the_debug_form_hides_the_headers() {
        let export = TraceExport {
            endpoint: "http://127.0.0.1:4317".into(),
            headers: "authorization=Bearer sekrit".into(),
            service: "memtrace-worker",
        };
        assert!(!format!("{export:?}").contains("sekrit"));
    }
}
