//! A worker with a skewed wall clock: the real `memtrace-worker` run under
//! libfaketime (Debian's `faketime` package, installed by
//! `scripts/setup.sh`) with a relative offset. Only the wall clock
//! (`CLOCK_REALTIME`, what memory times, ids, key expiry and registration
//! times read) is off: `FAKETIME_DONT_FAKE_MONOTONIC=1` leaves the
//! monotonic clock (timers, timeouts, backoff) true, as NTP trouble would.
//! Nothing in the worker is changed for this; the preload is test wiring.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where Debian and others put the preload library.
const LIBFAKETIME: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
];

/// The libfaketime preload library; an error naming the package when it is
/// not installed (the scenario must not pass without a skewed clock).
pub fn libfaketime() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("MEMTRACE_LIBFAKETIME") {
        return Ok(PathBuf::from(p));
    }
    LIBFAKETIME
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context(
            "libfaketime not found (install Debian's faketime package: scripts/setup.sh \
             does; or set MEMTRACE_LIBFAKETIME to libfaketime.so.1)",
        )
}

/// The environment that runs a process with its wall clock `offset_secs`
/// off (positive: ahead) and its monotonic clock true.
pub fn skewed_clock_env(offset_secs: i64) -> anyhow::Result<Vec<(String, String)>> {
    let lib = libfaketime()?;
    Ok(vec![
        ("LD_PRELOAD".into(), lib.to_string_lossy().into_owned()),
        ("FAKETIME".into(), format!("{offset_secs:+}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ])
}

/// The environment that runs a process with the wall-clock offset written
/// in `file` (`+0`, `-300`, …: seconds), read again at most every second,
/// so a test can step the clock while the process runs; the monotonic
/// clock stays true.
pub fn stepping_clock_env(file: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let lib = libfaketime()?;
    Ok(vec![
        ("LD_PRELOAD".into(), lib.to_string_lossy().into_owned()),
        (
            "FAKETIME_TIMESTAMP_FILE".into(),
            file.to_string_lossy().into_owned(),
        ),
        ("FAKETIME_CACHE_DURATION".into(), "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ])
}

/// This process's wall clock in µs.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The µs time a server-made memory id carries (`mem_` + 14 hex digits of
/// the writing worker's clock + 12 random hex digits).
pub fn id_micros(id: &str) -> anyhow::Result<i64> {
    let hex = id
        .strip_prefix("mem_")
        .and_then(|rest| rest.get(..14))
        .with_context(|| format!("not a server-made memory id: {id}"))?;
    Ok(i64::from_str_radix(hex, 16)?)
}

/// The µs time of an RFC 3339 timestamp.
pub fn rfc3339_micros(ts: &str) -> anyhow::Result<i64> {
    let t: jiff::Timestamp = ts.parse().with_context(|| format!("timestamp {ts:?}"))?;
    Ok(t.as_microsecond())
}

/// How far the wall clock of the worker at `url` is off ours, in seconds:
/// the `created_at` of an agent it registers as `name` (a state row: no
/// memory is written) minus our clock around the call.
pub async fn clock_offset_secs(url: &str, key: &str, name: &str) -> anyhow::Result<f64> {
    let before = now_micros();
    let resp = crate::http_client()
        .post(format!("{url}/api/v1/agents"))
        .header("x-api-key", key)
        .json(&json!({"name": name}))
        .send()
        .await?;
    let after = now_micros();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await?;
    if status != 201 {
        bail!("register {name} through {url}: {status} {v}");
    }
    let created = rfc3339_micros(v["created_at"].as_str().context("created_at")?)?;
    Ok((created - (before + after) / 2) as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_time() {
        let t = 0x0006_2d3a_1b2c_3d4e_i64;
        let id = format!("mem_{t:014x}0123456789ab");
        assert_eq!(id_micros(&id).unwrap(), t);
        assert!(id_micros("custom_id").is_err());
        assert_eq!(
            rfc3339_micros("2026-12-05T00:00:00.000001Z").unwrap(),
            1_796_428_800_000_001
        );
        if let Ok(env) = skewed_clock_env(-300) {
            assert!(env.contains(&("FAKETIME".into(), "-300".into())), "{env:?}");
        }
    }
}
