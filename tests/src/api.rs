//! A small client of a worker's REST API for end-to-end tests: every call
//! returns the status and the JSON body (`Null` when the body is not JSON).

use crate::worker::Worker;
use serde_json::Value;

/// Calls one worker with one API key (or none).
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Api {
    pub fn new(worker: &Worker, key: Option<&str>) -> Self {
        Self {
            http: worker.client(),
            base: worker.url(),
            key: key.map(str::to_owned),
        }
    }

    /// `method path` with an optional JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            req = req.header("x-api-key", key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("the worker answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("a readable body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `method path` with `headers` and a body of raw bytes (for bodies a
    /// well-behaved client would not send).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            req = req.header("x-api-key", key);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.body(body).send().await.expect("the worker answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("a readable body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    /// `GET path`, the body as text (JSONL exports).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            req = req.header("x-api-key", key);
        }
        let resp = req.send().await.expect("the worker answers");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("a readable body"))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }
}

/// The `error` text of an error body.
pub fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}
