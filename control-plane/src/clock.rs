//! Conversions of the stored unit of time, unix milliseconds (read with
//! [`memtrace_common::clock::now_ms`]), to protobuf timestamps and back
//! from durations.

use std::time::Duration;

/// Converts stored milliseconds to a protobuf timestamp.
pub fn to_timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// Converts a protobuf timestamp to milliseconds (sub-millisecond parts dropped).
pub fn from_timestamp(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos.clamp(0, 999_999_999) / 1_000_000))
}

pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
