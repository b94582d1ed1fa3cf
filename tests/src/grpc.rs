//! Small helpers for end-to-end tests that call a worker's `memtrace.v1`
//! gRPC API or scrape its endpoints.

use tonic::Request;
use tonic::transport::Channel;

/// `message` with `x-api-key` metadata (none when `key` is `None`).
pub fn with_key<T>(key: Option<&str>, message: T) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(key) = key {
        r.metadata_mut()
            .insert("x-api-key", key.parse().expect("an API key is ASCII"));
    }
    r
}

/// A connected channel to `url` (`http://127.0.0.1:<port>`).
pub async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("a valid url")
        .connect()
        .await
        .expect("the worker accepts connections")
}

/// The body of `GET {url}{path}` as text.
pub async fn get_text(url: &str, path: &str) -> String {
    crate::http_client()
        .get(format!("{url}{path}"))
        .send()
        .await
        .expect("the endpoint answers")
        .text()
        .await
        .expect("a text body")
}

/// The value of the first sample of `name` (no labels) in an OpenMetrics
/// text, `None` when absent.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}
