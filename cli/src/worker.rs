//! The REST client of a memtrace worker (`/api/v1/...`, the routes the
//! original's SDKs use): `MEMTRACE_URL` (http or https; https trusts the
//! system's CAs, or only the CA of `MEMTRACE_CA_FILE`) and the API key of
//! `MEMTRACE_API_KEY` sent as `x-api-key`, a header marked sensitive. The key is read from the environment only,
//! never from the command line, and never appears in a message.

use crate::error::{CliError, one_line};
use memtrace_common::config::Env;
use reqwest::header::{HeaderValue, RETRY_AFTER};
use serde_json::Value;
use std::time::Duration;
use url::Url;
use zeroize::Zeroizing;

/// Variable with the worker's address.
pub const URL_ENV: &str = "MEMTRACE_URL";
/// Variable with the API key (`mtk_…`).
pub const API_KEY_ENV: &str = "MEMTRACE_API_KEY";
/// Variable with the PEM file of the CA that signed an `https://` worker's
/// certificate; when set, only that CA is trusted.
pub const CA_FILE_ENV: &str = "MEMTRACE_CA_FILE";
/// Address used when [`URL_ENV`] is unset (the original's).
pub const DEFAULT_URL: &str = "http://localhost:9100";
/// The largest worker answer read; a longer one is a tool error.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The HTTP method of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// One call: `/api/v1/` + the path segments (each percent-encoded), the
/// query pairs, and an optional JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRequest {
    pub method: Method,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

/// A worker at one address with one key.
pub struct Worker {
    http: reqwest::Client,
    base: Url,
    key: HeaderValue,
    timeout: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("base", &self.base.as_str())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The worker address from the environment, checked: http or https, a
/// host, no credentials (the key goes in `MEMTRACE_API_KEY`).
pub fn resolve_url(env: &Env) -> Result<Url, CliError> {
    let (text, origin) = match env.get(URL_ENV).map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) => (url, URL_ENV),
        None => (DEFAULT_URL, "the default url"),
    };
    let invalid = |why: &str| {
        CliError::new(format!("invalid {origin}: {why}")).with_hint(format!(
            "set {URL_ENV} to the worker's address, e.g. {DEFAULT_URL}"
        ))
    };
    let url = Url::parse(text).map_err(|e| invalid(&format!("{e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("a host is required"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(&format!(
            "must not carry credentials; set the API key in {API_KEY_ENV}"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or a fragment"));
    }
    Ok(url)
}

/// The CA of `MEMTRACE_CA_FILE`, if set: a PEM certificate, for an
/// `https://` worker only.
fn resolve_ca(env: &Env, url: &Url) -> Result<Option<reqwest::Certificate>, CliError> {
    let Some(path) = env
        .get(CA_FILE_ENV)
        .map(str::trim)
        .filter(|p| !p.is_empty())
    else {
        return Ok(None);
    };
    let invalid = |why: String| {
        CliError::new(format!("invalid {CA_FILE_ENV} {path}: {why}"))
            .with_hint("expected the PEM file of the CA that signed the worker's certificate")
    };
    if url.scheme() != "https" {
        return Err(CliError::new(format!(
            "{CA_FILE_ENV} is set but {URL_ENV} is not https://"
        ))
        .with_hint(format!(
            "use https:// in {URL_ENV}, or unset {CA_FILE_ENV} for a plaintext worker"
        )));
    }
    let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot read it: {e}")))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(invalid(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
    reqwest::Certificate::from_pem(&pem)
        .map(Some)
        .map_err(|e| invalid(format!("not a PEM certificate ({e})")))
}

/// The API key from the environment, as a sensitive header value.
fn resolve_key(env: &Env) -> Result<HeaderValue, CliError> {
    let Some(key) = env
        .get(API_KEY_ENV)
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Err(
            CliError::new(format!("{API_KEY_ENV} is not set")).with_hint(format!(
                "set {API_KEY_ENV} in this MCP server's env to an API key of your org (mtk_…; an \
                 operator creates one with 'memtracectl key create --org ORG_ID --name NAME \
                 --scopes read,write'); the key is never taken on the command line"
            )),
        );
    };
    let key = Zeroizing::new(key.to_owned());
    let mut value = HeaderValue::from_str(&key).map_err(|_| {
        CliError::new(format!(
            "invalid {API_KEY_ENV}: must be printable ASCII on one line"
        ))
        .with_hint("copy the key (mtk_…) exactly as 'memtracectl key create' printed it")
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl Worker {
    /// The worker of `MEMTRACE_URL` with the key of `MEMTRACE_API_KEY`;
    /// each call may take `timeout` (connection included).
    pub fn from_env(env: &Env, timeout: Duration) -> Result<Self, CliError> {
        let key = resolve_key(env)?;
        Self::with_key(env, key, timeout)
    }

    /// The worker of `MEMTRACE_URL` (and `MEMTRACE_CA_FILE`) with `key`, a
    /// key this process obtained itself (`org export` mints one).
    pub fn with_key(env: &Env, key: HeaderValue, timeout: Duration) -> Result<Self, CliError> {
        let base = resolve_url(env)?;
        let ca = resolve_ca(env, &base)?;
        let mut key = key;
        key.set_sensitive(true);
        memtrace_common::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("memtracectl/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca {
            // a private CA is the only one that may vouch for the worker
            builder = builder.tls_certs_only([ca]);
        }
        let http = builder
            .build()
            .map_err(|e| CliError::new(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            key,
            timeout,
        })
    }

    /// The worker's address.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// The URL of a call: `/api/v1/<segments>?<query>` under the base.
    pub fn url(&self, request: &WorkerRequest) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("api").push("v1");
            for segment in &request.segments {
                path.push(segment);
            }
        }
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.query);
        }
        url
    }

    /// Sends the call; the worker's JSON answer, or what went wrong.
    pub async fn call(&self, request: &WorkerRequest) -> Result<Value, CliError> {
        let (status, headers, body) = self.send(request).await?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return match json {
                Some(value) => Ok(value),
                None if body.is_empty() => Ok(Value::Null),
                None => Err(CliError::new(format!(
                    "the worker answered {status} with a body that is not JSON"
                ))),
            };
        }
        Err(self.refused(status, &body, headers.get(RETRY_AFTER)))
    }

    /// Sends the call; on success the body as bytes and the value of the
    /// answer's `header` (for answers that are not JSON, e.g. the JSONL of
    /// an export and its `x-memtrace-next-cursor`).
    pub async fn call_raw(
        &self,
        request: &WorkerRequest,
        header: &str,
    ) -> Result<(Vec<u8>, Option<String>), CliError> {
        let (status, headers, body) = self.send(request).await?;
        if status.is_success() {
            let value = headers
                .get(header)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Ok((body, value));
        }
        Err(self.refused(status, &body, headers.get(RETRY_AFTER)))
    }

    fn refused(
        &self,
        status: reqwest::StatusCode,
        body: &[u8],
        retry_after: Option<&HeaderValue>,
    ) -> CliError {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        refusal(
            status,
            json.as_ref(),
            body,
            retry_after.and_then(|v| v.to_str().ok()),
        )
    }

    /// One request and its whole answer, at most [`MAX_RESPONSE_BYTES`].
    async fn send(
        &self,
        request: &WorkerRequest,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>), CliError> {
        let url = self.url(request);
        let builder = match request.method {
            Method::Get => self.http.get(url),
            Method::Post => self.http.post(url),
        };
        let mut builder = builder.header("x-api-key", self.key.clone());
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let mut response = builder.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(CliError::new(format!(
                    "the worker's answer is larger than {} MiB",
                    MAX_RESPONSE_BYTES / (1024 * 1024)
                ))
                .with_hint("narrow the call: a smaller limit or a shorter time window"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body))
    }

    fn unreachable(&self, err: &reqwest::Error) -> CliError {
        let base = self.base.as_str().trim_end_matches('/');
        if err.is_timeout() {
            return CliError::new(format!(
                "the worker at {base} did not answer within {}s",
                self.timeout.as_secs()
            ))
            .with_hint("raise --timeout, or check the worker's log");
        }
        let cause = cause(err);
        let hint = if self.base.scheme() == "https" && cause.contains("certificate") {
            format!(
                "the worker's certificate is not trusted: set {CA_FILE_ENV} to the PEM file of \
                 the CA that signed it (without it, the system's CAs are trusted)"
            )
        } else {
            format!("is memtrace-worker running there? set {URL_ENV} (default {DEFAULT_URL})")
        };
        CliError::new(format!("cannot reach the worker at {base} ({cause})")).with_hint(hint)
    }
}

/// The most specific message of an error's chain (e.g. `connection refused`).
fn cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut best = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() {
            best = text;
        }
        current = e.source();
    }
    let best = one_line(&best);
    let mut chars = best.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => best,
    }
}

/// A refusal: the status and the worker's `error` (and its `hint`, or one
/// of ours for the statuses a caller can fix).
fn refusal(
    status: reqwest::StatusCode,
    json: Option<&Value>,
    body: &[u8],
    retry_after: Option<&str>,
) -> CliError {
    let field = |name: &str| {
        json.and_then(|j| j.get(name))
            .and_then(Value::as_str)
            .map(one_line)
    };
    let message = field("error").unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text: String = one_line(&text).chars().take(200).collect();
        if text.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no message")
                .to_lowercase()
        } else {
            text
        }
    });
    let error = CliError::new(format!(
        "the worker answered {}: {message}",
        status.as_u16()
    ));
    if let Some(hint) = field("hint") {
        return error.with_hint(hint);
    }
    match status.as_u16() {
        401 => error.with_hint(format!(
            "check {API_KEY_ENV}: an active API key (mtk_…) of your org"
        )),
        403 => error.with_hint(
            "the key lacks the scope this call needs; writes need a key with --scopes read,write",
        ),
        429 => error.with_hint(match retry_after {
            Some(secs) => format!("retry in {secs}s"),
            None => "retry later".to_owned(),
        }),
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn the_url_defaults_and_is_checked() {
        assert_eq!(
            resolve_url(&env(&[])).unwrap().as_str(),
            "http://localhost:9100/"
        );
        for (bad, rule) in [
            ("localhost:9100", "scheme must be http or https"),
            ("ftp://h", "scheme must be http or https"),
            ("http://u:p@h:1", "must not carry credentials"),
            ("http://h/?k=v", "query"),
            ("not a url", "invalid MEMTRACE_URL"),
        ] {
            let err = resolve_url(&env(&[(URL_ENV, bad)])).unwrap_err();
            assert!(err.message().contains(rule), "{bad}: {err:?}");
            assert!(err.message().starts_with("invalid MEMTRACE_URL"), "{err:?}");
        }
    }

    #[test]
    fn the_key_comes_from_the_environment_and_is_never_shown() {
        let err = Worker::from_env(&env(&[]), Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.message(), "MEMTRACE_API_KEY is not set");
        assert!(err.hint().unwrap().contains("memtracectl key create"));
        let err = Worker::from_env(
            &env(&[(API_KEY_ENV, "mtk_s3cret\u{7f}x")]),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");
        let worker =
            Worker::from_env(&env(&[(API_KEY_ENV, "mtk_s3cret")]), Duration::from_secs(1)).unwrap();
        assert!(!format!("{worker:?}").contains("s3cret"));
        assert!(worker.key.is_sensitive());
    }

    #[test]
    fn the_ca_file_is_for_https_and_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        let not_pem = not_pem.to_str().unwrap();
        let with = |url: &str, ca: &str| {
            Worker::from_env(
                &env(&[(URL_ENV, url), (API_KEY_ENV, "k"), (CA_FILE_ENV, ca)]),
                Duration::from_secs(1),
            )
            .unwrap_err()
        };
        let err = with("http://h:1", not_pem);
        assert_eq!(
            err.message(),
            "MEMTRACE_CA_FILE is set but MEMTRACE_URL is not https://"
        );
        let err = with("https://h:1", not_pem);
        assert!(
            err.message().starts_with("invalid MEMTRACE_CA_FILE ")
                && err.message().contains("no PEM certificate"),
            "{err:?}"
        );
        let err = with("https://h:1", "/nonexistent/ca.pem");
        assert!(err.message().contains("cannot read it"), "{err:?}");
    }

    #[test]
    fn path_segments_are_encoded_under_the_base_path() {
        let worker = Worker::from_env(
            &env(&[
                (API_KEY_ENV, "k"),
                (URL_ENV, "https://proxy.example/memtrace/"),
            ]),
            Duration::from_secs(1),
        )
        .unwrap();
        let url = worker.url(&WorkerRequest {
            method: Method::Get,
            segments: vec!["sessions".into(), "a/b c".into(), "context".into()],
            query: vec![("since".into(), "2h".into()), ("tags".into(), "a&b".into())],
            body: None,
        });
        assert_eq!(
            url.as_str(),
            "https://proxy.example/memtrace/api/v1/sessions/a%2Fb%20c/context?since=2h&tags=a%26b"
        );
    }

    #[test]
    fn refusals_carry_the_status_and_the_workers_error() {
        let err = refusal(
            reqwest::StatusCode::UNAUTHORIZED,
            Some(&json!({"error": "invalid api key"})),
            b"",
            None,
        );
        assert_eq!(err.message(), "the worker answered 401: invalid api key");
        assert!(err.hint().unwrap().contains(API_KEY_ENV));
        let err = refusal(
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            Some(
                &json!({"error": "no arc instance configured for this org", "hint": "ask an admin"}),
            ),
            b"",
            None,
        );
        assert_eq!(err.hint(), Some("ask an admin"));
        let err = refusal(
            reqwest::StatusCode::BAD_GATEWAY,
            None,
            b"<html>\nbad\n</html>",
            None,
        );
        assert_eq!(err.message(), "the worker answered 502: <html> bad </html>");
        let err = refusal(reqwest::StatusCode::TOO_MANY_REQUESTS, None, b"", Some("3"));
        assert_eq!(err.message(), "the worker answered 429: too many requests");
        assert_eq!(err.hint(), Some("retry in 3s"));
    }
}
