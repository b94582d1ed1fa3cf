//! What the benchmark binaries share: the Arc they run against — the
//! in-process stand-in, or an Arc already running on this machine given by
//! `--arc-url URL --arc-token-file FILE` (loopback only; the token is read
//! from the file, never taken from the command line) — and small flag
//! helpers.

use crate::arc::ArcStandIn;
use crate::arc::client::RawArcClient;
use crate::load::ensure_loopback;
use anyhow::{Context, bail};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `--arc-url` and `--arc-token-file`, as given.
#[derive(Debug, Default)]
pub struct ExternalArcFlags {
    url: Option<String>,
    token_file: Option<PathBuf>,
}

impl ExternalArcFlags {
    /// Takes `flag value` if it is one of the two; false otherwise.
    pub fn take(&mut self, flag: &str, value: &str) -> bool {
        match flag {
            "--arc-url" => self.url = Some(value.to_owned()),
            "--arc-token-file" => self.token_file = Some(PathBuf::from(value)),
            _ => return false,
        }
        true
    }

    /// The external Arc (url, token) when both flags were given; an error
    /// when only one was, the url is not loopback, or the file holds no
    /// token.
    pub fn resolve(self) -> anyhow::Result<Option<(String, String)>> {
        match (self.url, self.token_file) {
            (None, None) => Ok(None),
            (Some(url), Some(file)) => {
                ensure_loopback(&url)?;
                let token = std::fs::read_to_string(&file)
                    .with_context(|| format!("--arc-token-file {}", file.display()))?;
                let token = token.trim().to_owned();
                if token.is_empty() || token.contains(char::is_whitespace) {
                    bail!("--arc-token-file {}: expected one token", file.display());
                }
                Ok(Some((url.trim_end_matches('/').to_owned(), token)))
            }
            _ => bail!("--arc-url and --arc-token-file go together"),
        }
    }
}

/// The Arc a benchmark runs against, with one HTTP client for direct
/// calls (building a client loads the root certificates: tens of ms).
pub struct ArcUnderTest {
    kind: Kind,
    client: RawArcClient,
}

enum Kind {
    StandIn(ArcStandIn),
    External { token: String },
}

impl ArcUnderTest {
    pub fn stand_in(arc: ArcStandIn) -> Self {
        let client = RawArcClient::new(arc.url());
        Self {
            kind: Kind::StandIn(arc),
            client,
        }
    }

    /// An Arc already running at `url` (loopback), reached with `token`.
    pub fn external(url: &str, token: &str) -> anyhow::Result<Self> {
        ensure_loopback(url)?;
        let client = RawArcClient::new(url).with_auth("authorization", &format!("Bearer {token}"));
        Ok(Self {
            kind: Kind::External {
                token: token.to_owned(),
            },
            client,
        })
    }

    pub fn url(&self) -> String {
        self.client.url.clone()
    }

    /// The token to give the worker's binding and direct calls.
    pub fn token(&self) -> Option<&str> {
        match &self.kind {
            Kind::StandIn(_) => None,
            Kind::External { token } => Some(token),
        }
    }

    pub fn as_stand_in(&self) -> Option<&ArcStandIn> {
        match &self.kind {
            Kind::StandIn(a) => Some(a),
            Kind::External { .. } => None,
        }
    }

    /// A one-line description for the report (never the token).
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::StandIn(a) => format!(
                "in-process Arc stand-in at {} (cost model {}, ingest lanes {})",
                a.url(),
                a.cost_model().name(),
                match a.cost_model().write_lanes {
                    0 => "unbounded".to_owned(),
                    n => n.to_string(),
                }
            ),
            Kind::External { .. } => format!("external Arc at {}", self.client.url),
        }
    }

    /// The raw client, sending the token if any.
    pub fn client(&self) -> &RawArcClient {
        &self.client
    }

    /// `SELECT COUNT(*)` of `database`.`measurement` (0 while Arc has no
    /// file for it yet).
    pub async fn count(&self, database: &str, measurement: &str) -> anyhow::Result<u64> {
        let sql = format!("SELECT COUNT(*) AS n FROM {database}.{measurement}");
        let (status, out) = self.client().query(None, &sql).await?;
        if status != 200 {
            let error = out["error"].as_str().unwrap_or_default();
            if error.contains("No files found") {
                return Ok(0);
            }
            bail!("count of {database}.{measurement}: {status} {out}");
        }
        out["data"][0][0]
            .as_u64()
            .with_context(|| format!("count of {database}.{measurement}: {out}"))
    }

    /// Waits (at most `within`) until `database`.`measurement` holds at
    /// least `rows` readable rows; returns how long that took and the count.
    pub async fn wait_readable(
        &self,
        database: &str,
        measurement: &str,
        rows: u64,
        within: Duration,
    ) -> anyhow::Result<(Duration, u64)> {
        let started = Instant::now();
        loop {
            let n = self.count(database, measurement).await?;
            if n >= rows {
                return Ok((started.elapsed(), n));
            }
            if started.elapsed() > within {
                bail!("{database}.{measurement}: {n} of {rows} rows readable after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A JSON response's status and body, from a sent request.
pub async fn json_reply(resp: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

/// `n` KiB as MiB for reports (`n/a` when unknown).
pub fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_arc_flags_go_together_and_stay_on_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "secret-token\n").unwrap();
        let file = file.to_str().unwrap();
        let flags = |url: Option<&str>, f: Option<&str>| {
            let mut x = ExternalArcFlags::default();
            if let Some(u) = url {
                assert!(x.take("--arc-url", u));
            }
            if let Some(f) = f {
                assert!(x.take("--arc-token-file", f));
            }
            x.resolve()
        };
        assert!(flags(None, None).unwrap().is_none());
        let (url, token) = flags(Some("http://127.0.0.1:8000/"), Some(file))
            .unwrap()
            .unwrap();
        assert_eq!(
            (url.as_str(), token.as_str()),
            ("http://127.0.0.1:8000", "secret-token")
        );
        assert!(flags(Some("http://127.0.0.1:8000"), None).is_err());
        assert!(flags(Some("http://10.1.2.3:8000"), Some(file)).is_err());
        assert!(flags(Some("http://127.0.0.1:8000"), Some("/nonexistent/token")).is_err());
        assert!(!ExternalArcFlags::default().take("--arc-token", "x"));
    }
}
