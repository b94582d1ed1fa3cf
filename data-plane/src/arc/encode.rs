//! Memory rows as Arc's columnar MessagePack write body.
//!
//! A [`MemoryBatch`] keeps one vector per column and is filled row by row
//! ([`MemoryBatch::push`]); [`MemoryBatch::encode`] writes the single
//! top-level map Arc's fast typed-decode path takes:
//!
//! ```text
//! {"m": <measurement>, "columns": {"time": [i64 µs, ...], "id": [str, ...], ...}}
//! ```
//!
//! Every array has the batch's length (Arc answers 400 "array length
//! mismatch" otherwise), strings are MessagePack `str` (empty, never nil, as
//! the original memtrace wrote them), `time` and nothing else is an integer,
//! `importance` is always a float64 (Arc types a column by its first non-nil
//! value, so an integral `1.0` must not become an int). `time` is in
//! microseconds: Arc guesses the unit from the first element only, so every
//! value must be a plausible µs timestamp (≥ 1e13, i.e. after 1970-04-26).
//!
//! [`compress`] gzips (level 1) or zstd-compresses (level 1) the encoded
//! body; Arc Go picks the decoder from the magic bytes.

use serde::Serialize;
use std::io::Write as _;

/// The column names, in the order they are written (= `MEMORY_COLUMNS`).
pub const COLUMNS: [&str; 13] = crate::query::MEMORY_COLUMNS;

/// One memory as written to Arc. Strings are stored as given (empty for
/// "none"); `time` is microseconds since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryRow {
    pub time: i64,
    pub id: String,
    pub org_id: String,
    pub agent_id: String,
    pub session_id: String,
    pub memory_type: String,
    pub event_type: String,
    pub content: String,
    pub metadata_json: String,
    pub tags_csv: String,
    pub dedup_key: String,
    pub importance: f64,
    pub parent_id: String,
}

/// Columns of memory rows; field names are the Arc column names.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
struct Columns {
    time: Vec<i64>,
    id: Vec<String>,
    org_id: Vec<String>,
    agent_id: Vec<String>,
    session_id: Vec<String>,
    memory_type: Vec<String>,
    event_type: Vec<String>,
    content: Vec<String>,
    metadata_json: Vec<String>,
    tags_csv: Vec<String>,
    dedup_key: Vec<String>,
    importance: Vec<f64>,
    parent_id: Vec<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    m: &'a str,
    columns: &'a Columns,
}

/// Fixed bytes of an encoded body besides the measurement: the two maps'
/// headers, the keys `m`/`columns`, the 13 column names and array headers.
const FIXED_OVERHEAD: usize = 256;

/// Length of a MessagePack `str` header for a string of `len` bytes.
fn str_header(len: usize) -> usize {
    match len {
        0..32 => 1,
        32..256 => 2,
        256..65_536 => 3,
        _ => 5,
    }
}

/// A batch of memory rows for one measurement, in columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryBatch {
    cols: Columns,
    payload_bytes: usize,
}

impl MemoryBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        let s = || Vec::with_capacity(rows);
        Self {
            cols: Columns {
                time: Vec::with_capacity(rows),
                id: s(),
                org_id: s(),
                agent_id: s(),
                session_id: s(),
                memory_type: s(),
                event_type: s(),
                content: s(),
                metadata_json: s(),
                tags_csv: s(),
                dedup_key: s(),
                importance: Vec::with_capacity(rows),
                parent_id: s(),
            },
            payload_bytes: 0,
        }
    }

    /// Appends one row (its strings are moved in, not copied).
    pub fn push(&mut self, row: MemoryRow) {
        let c = &mut self.cols;
        let strings = [
            (&mut c.id, row.id),
            (&mut c.org_id, row.org_id),
            (&mut c.agent_id, row.agent_id),
            (&mut c.session_id, row.session_id),
            (&mut c.memory_type, row.memory_type),
            (&mut c.event_type, row.event_type),
            (&mut c.content, row.content),
            (&mut c.metadata_json, row.metadata_json),
            (&mut c.tags_csv, row.tags_csv),
            (&mut c.dedup_key, row.dedup_key),
            (&mut c.parent_id, row.parent_id),
        ];
        // int64 and float64 are at most 9 bytes each.
        let mut size = 18;
        for (col, value) in strings {
            size += value.len() + str_header(value.len());
            col.push(value);
        }
        c.time.push(row.time);
        c.importance.push(row.importance);
        self.payload_bytes += size;
    }

    pub fn len(&self) -> usize {
        self.cols.time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cols.time.is_empty()
    }

    /// An upper bound of [`encode`](Self::encode)'s output length for a
    /// measurement name of `measurement_len` bytes (before compression).
    pub fn encoded_size_estimate(&self, measurement_len: usize) -> usize {
        FIXED_OVERHEAD + measurement_len + self.payload_bytes
    }

    /// The MessagePack body `{"m": measurement, "columns": {...}}`.
    pub fn encode(&self, measurement: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_size_estimate(measurement.len()));
        let body = Body {
            m: measurement,
            columns: &self.cols,
        };
        let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
        // Writing plain strings, ints and floats into a Vec cannot fail.
        if let Err(e) = body.serialize(&mut ser) {
            tracing::error!(error = %e, "arc batch encoding failed");
        }
        out
    }

    /// Removes every row, keeping the allocations.
    pub fn clear(&mut self) {
        let c = &mut self.cols;
        c.time.clear();
        c.importance.clear();
        for col in [
            &mut c.id,
            &mut c.org_id,
            &mut c.agent_id,
            &mut c.session_id,
            &mut c.memory_type,
            &mut c.event_type,
            &mut c.content,
            &mut c.metadata_json,
            &mut c.tags_csv,
            &mut c.dedup_key,
            &mut c.parent_id,
        ] {
            col.clear();
        }
        self.payload_bytes = 0;
    }
}

/// How a write body is compressed. Arc Go detects the format from the
/// body's magic bytes; the header from [`Compression::content_encoding`] is
/// for the Python build and proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Gzip, fastest level.
    Gzip,
    /// Zstandard, level 1 (what Arc's own docs recommend).
    #[default]
    Zstd,
    /// Raw MessagePack.
    None,
}

impl Compression {
    /// The `Content-Encoding` value, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Self::Gzip => Some("gzip"),
            Self::Zstd => Some("zstd"),
            Self::None => None,
        }
    }
}

/// Compresses an encoded body (in memory; cannot fail short of OOM).
pub fn compress(body: &[u8], compression: Compression) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::None => Ok(body.to_vec()),
        Compression::Zstd => zstd::bulk::compress(body, 1),
        Compression::Gzip => {
            let out = Vec::with_capacity(body.len() / 4 + 64);
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            enc.write_all(body)?;
            enc.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{Value, json};
    use std::io::Read as _;

    fn row(i: i64) -> MemoryRow {
        MemoryRow {
            time: 1_735_689_600_000_000 + i,
            id: format!("mem_{i}"),
            org_id: "org_a".into(),
            agent_id: "agent_1".into(),
            session_id: String::new(),
            memory_type: "episodic".into(),
            event_type: "general".into(),
            content: format!("héllo \"{i}\" ✓"),
            metadata_json: "{}".into(),
            tags_csv: "a,b".into(),
            dedup_key: String::new(),
            importance: 1.0,
            parent_id: String::new(),
        }
    }

    fn decode(bytes: &[u8]) -> Value {
        rmp_serde::from_slice(bytes).unwrap()
    }

    #[test]
    fn encodes_one_columnar_map_with_typed_columns() {
        let mut b = MemoryBatch::new();
        b.push(row(0));
        b.push(row(1));
        let bytes = b.encode("memories");
        let v = decode(&bytes);
        assert_eq!(v["m"], "memories");
        let cols = v["columns"].as_object().unwrap();
        let names: Vec<&str> = cols.keys().map(String::as_str).collect();
        let mut want = COLUMNS.to_vec();
        want.sort_unstable();
        assert_eq!(names, want);
        assert_eq!(
            cols["time"],
            json!([1_735_689_600_000_000_i64, 1_735_689_600_000_001_i64])
        );
        assert_eq!(cols["id"], json!(["mem_0", "mem_1"]));
        assert_eq!(cols["session_id"], json!(["", ""]));
        assert_eq!(cols["content"][1], "héllo \"1\" ✓");
        assert!(cols.values().all(|c| c.as_array().unwrap().len() == 2));
        assert!(bytes.len() <= b.encoded_size_estimate("memories".len()));
    }

    #[test]
    fn importance_is_always_float64_and_time_an_int() {
        let mut b = MemoryBatch::new();
        b.push(row(0));
        let bytes = b.encode("m");
        // float64 marker 0xcb followed by 1.0; int64 marker 0xd3 or uint 0xcf.
        let one = 1.0_f64.to_be_bytes();
        let f64_at = bytes.windows(9).position(|w| w[0] == 0xcb && w[1..] == one);
        assert!(f64_at.is_some(), "importance 1.0 must be a float64");
        let v = decode(&bytes);
        assert!(v["columns"]["time"][0].is_i64() || v["columns"]["time"][0].is_u64());
        assert!(v["columns"]["importance"][0].is_f64());
    }

    #[test]
    fn compressions_round_trip_and_carry_magic_bytes() {
        let mut b = MemoryBatch::with_capacity(100);
        for i in 0..100 {
            b.push(row(i));
        }
        let raw = b.encode("memories");
        let gz = compress(&raw, Compression::Gzip).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, raw);
        let zs = compress(&raw, Compression::Zstd).unwrap();
        assert_eq!(&zs[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        assert_eq!(zstd::decode_all(&zs[..]).unwrap(), raw);
        assert_eq!(compress(&raw, Compression::None).unwrap(), raw);
        assert!(zs.len() < raw.len() && gz.len() < raw.len());
    }

    #[test]
    fn estimate_bounds_the_encoding_and_clear_resets() {
        let mut b = MemoryBatch::new();
        for i in 0..1000 {
            let mut r = row(i);
            r.content = "x".repeat((i as usize * 37) % 70_000);
            b.push(r);
        }
        let n = b.encode("memories").len();
        let est = b.encoded_size_estimate(8);
        assert!(n <= est && est - n <= FIXED_OVERHEAD, "n={n} est={est}");
        b.clear();
        assert!(b.is_empty());
        let v = decode(&b.encode("memories"));
        assert_eq!(v["columns"]["id"], json!([]));
    }
}
