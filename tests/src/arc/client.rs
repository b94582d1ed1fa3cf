//! Helpers for tests that talk to an Arc (the stand-in or a real one): body
//! encoders and a raw HTTP client that reports status and body as they come,
//! with no retry or interpretation.

use serde_json::{Value, json};
use std::io::Write;

/// MessagePack of a JSON value (maps stay maps, as Arc's columnar shape
/// needs). Panics only if the value cannot be serialised, which a
/// `serde_json::Value` always can.
pub fn msgpack(v: &Value) -> Vec<u8> {
    rmp_serde::to_vec(v).expect("a JSON value serialises to MessagePack")
}

/// Gzip (level 6, like Arc's Python SDK).
pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(b).expect("writing to a Vec cannot fail");
    e.finish().expect("finishing into a Vec cannot fail")
}

/// Zstd (level 3).
pub fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).expect("compressing from a slice into a Vec cannot fail")
}

/// Plain calls on Arc's write, query and delete endpoints.
#[derive(Clone)]
pub struct RawArcClient {
    pub http: reqwest::Client,
    pub url: String,
    /// One header sent with every call, e.g. `("authorization", "Bearer t")`.
    pub auth: Option<(String, String)>,
}

impl RawArcClient {
    /// `url` like `http://127.0.0.1:8000`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            http: crate::http_client(),
            url: url.into(),
            auth: None,
        }
    }

    /// The same client, sending `name: value` (an auth header) on every call.
    pub fn with_auth(&self, name: &str, value: &str) -> Self {
        Self {
            auth: Some((name.into(), value.into())),
            ..self.clone()
        }
    }

    /// `POST /api/v1/write/msgpack` with optional `x-arc-database`; returns
    /// status and body text.
    pub async fn write(&self, db: Option<&str>, body: Vec<u8>) -> anyhow::Result<(u16, String)> {
        let mut req = self
            .http
            .post(format!("{}/api/v1/write/msgpack", self.url))
            .header("content-type", "application/msgpack")
            .body(body);
        if let Some(db) = db {
            req = req.header("x-arc-database", db);
        }
        if let Some((name, value)) = &self.auth {
            req = req.header(name, value);
        }
        let resp = req.send().await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// `POST /api/v1/delete` with `body` as JSON; returns status and JSON.
    pub async fn delete(&self, body: &Value) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}/api/v1/delete", self.url))
            .json(body);
        if let Some((name, value)) = &self.auth {
            req = req.header(name, value);
        }
        let resp = req.send().await?;
        Ok((resp.status().as_u16(), resp.json().await?))
    }

    /// `POST /api/v1/query` with `{"sql": sql}`; returns status and JSON.
    pub async fn query(&self, db: Option<&str>, sql: &str) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}/api/v1/query", self.url))
            .json(&json!({ "sql": sql }));
        if let Some(db) = db {
            req = req.header("x-arc-database", db);
        }
        if let Some((name, value)) = &self.auth {
            req = req.header(name, value);
        }
        let resp = req.send().await?;
        Ok((resp.status().as_u16(), resp.json().await?))
    }
}
