//! Memory rows as Arc's columnar MessagePack write body.
//!
//! A [`MemoryBatch`] keeps one buffer per column holding that column's
//! values already encoded as MessagePack, filled row by row
//! ([`MemoryBatch::push`]) or by appending another batch
//! ([`MemoryBatch::append`], a copy per column); [`MemoryBatch::encode`]
//! writes the single top-level map Arc's fast typed-decode path takes:
//!
//! ```text
//! {"m": <measurement>, "columns": {"time": [i64 µs, ...], "id": [str, ...], ...}}
//! ```
//!
//! Every array has the batch's length (Arc answers 400 "array length
//! mismatch" otherwise), strings are MessagePack `str` (empty, never nil, as
//! the original memtrace wrote them), `time` and `expires_at` (0: never) are
//! integers (the most compact MessagePack integer, as every MessagePack
//! encoder writes it), `importance` is always a float64 (Arc types a column by its
//! first non-nil value, so an integral `1.0` must not become an int). `time`
//! is in microseconds: Arc guesses the unit from the first element only, so
//! every value must be a plausible µs timestamp (≥ 1e13, i.e. after
//! 1970-04-26).
//!
//! Keeping values encoded means a row's strings are copied once, where the
//! row is pushed, and freed there; a batch of any size is a fixed number of
//! allocations, and encoding it is one copy per column.
//!
//! [`compress`] gzips (level 1) or zstd-compresses (level 1) the encoded
//! body; Arc Go picks the decoder from the magic bytes.

use crate::store::MemoryRow;

use super::msgpack::{array_header, int_len, map_header, str_len, write_f64, write_int, write_str};
use std::io::Write as _;

/// The column names, in the order they are written (= `MEMORY_COLUMNS`).
pub const COLUMNS: [&str; 14] = crate::query::MEMORY_COLUMNS;

/// Index of each column's buffer (the order of [`COLUMNS`]).
mod col {
    pub const TIME: usize = 0;
    pub const ID: usize = 1;
    pub const ORG_ID: usize = 2;
    pub const AGENT_ID: usize = 3;
    pub const SESSION_ID: usize = 4;
    pub const MEMORY_TYPE: usize = 5;
    pub const EVENT_TYPE: usize = 6;
    pub const CONTENT: usize = 7;
    pub const METADATA_JSON: usize = 8;
    pub const TAGS_CSV: usize = 9;
    pub const DEDUP_KEY: usize = 10;
    pub const IMPORTANCE: usize = 11;
    pub const PARENT_ID: usize = 12;
    pub const EXPIRES_AT: usize = 13;
}

/// Encoded length of each of `r`'s values, in column order.
fn encoded_lens(r: &MemoryRow) -> [usize; 14] {
    [
        int_len(r.time),
        str_len(r.id.len()),
        str_len(r.org_id.len()),
        str_len(r.agent_id.len()),
        str_len(r.session_id.len()),
        str_len(r.memory_type.len()),
        str_len(r.event_type.len()),
        str_len(r.content.len()),
        str_len(r.metadata_json.len()),
        str_len(r.tags_csv.len()),
        str_len(r.dedup_key.len()),
        9,
        str_len(r.parent_id.len()),
        int_len(r.expires_at),
    ]
}

/// Bytes of the body's map headers and keys besides the columns' contents:
/// `{"m": <measurement>, "columns": {<14 names>: <array header>...}}`.
fn framing_len(measurement_len: usize, rows: usize) -> usize {
    let array = match rows {
        0..16 => 1,
        16..65_536 => 3,
        _ => 5,
    };
    let names: usize = COLUMNS.iter().map(|c| str_len(c.len()) + array).sum();
    1 + str_len(1) + str_len(measurement_len) + str_len(7) + 1 + names
}

/// A batch of memory rows for one measurement, as encoded columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryBatch {
    rows: usize,
    cols: [Vec<u8>; 14],
}

impl MemoryBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `rows` rows of typical size.
    pub fn with_capacity(rows: usize) -> Self {
        let mut b = Self::new();
        for (i, c) in b.cols.iter_mut().enumerate() {
            let per_row = match i {
                col::TIME | col::IMPORTANCE | col::EXPIRES_AT => 9,
                col::CONTENT => 128,
                col::ID | col::ORG_ID | col::AGENT_ID | col::DEDUP_KEY => 32,
                _ => 8,
            };
            c.reserve(rows.saturating_mul(per_row));
        }
        b
    }

    /// A batch of `rows`, in order; each column is sized once, exactly.
    pub fn from_rows(rows: &[MemoryRow]) -> Self {
        let mut sizes = [0usize; 14];
        for r in rows {
            for (size, len) in sizes.iter_mut().zip(encoded_lens(r)) {
                *size += len;
            }
        }
        let mut b = Self::new();
        for (col, size) in b.cols.iter_mut().zip(sizes) {
            col.reserve_exact(size);
        }
        for r in rows {
            b.push(r);
        }
        b
    }

    /// Appends one row (its values are copied into the columns).
    pub fn push(&mut self, row: &MemoryRow) {
        let c = &mut self.cols;
        write_int(&mut c[col::TIME], row.time);
        write_str(&mut c[col::ID], &row.id);
        write_str(&mut c[col::ORG_ID], &row.org_id);
        write_str(&mut c[col::AGENT_ID], &row.agent_id);
        write_str(&mut c[col::SESSION_ID], &row.session_id);
        write_str(&mut c[col::MEMORY_TYPE], &row.memory_type);
        write_str(&mut c[col::EVENT_TYPE], &row.event_type);
        write_str(&mut c[col::CONTENT], &row.content);
        write_str(&mut c[col::METADATA_JSON], &row.metadata_json);
        write_str(&mut c[col::TAGS_CSV], &row.tags_csv);
        write_str(&mut c[col::DEDUP_KEY], &row.dedup_key);
        write_f64(&mut c[col::IMPORTANCE], row.importance);
        write_str(&mut c[col::PARENT_ID], &row.parent_id);
        write_int(&mut c[col::EXPIRES_AT], row.expires_at);
        self.rows += 1;
    }

    /// Appends every row of `other` after this batch's rows.
    pub fn append(&mut self, other: MemoryBatch) {
        for (mine, theirs) in self.cols.iter_mut().zip(&other.cols) {
            mine.extend_from_slice(theirs);
        }
        self.rows += other.rows;
    }

    /// Makes room for `more` rows the size of this batch's average row, so
    /// appending them does not reallocate.
    pub fn reserve_rows(&mut self, more: usize) {
        if self.rows == 0 {
            return;
        }
        for c in &mut self.cols {
            let per_row = c.len().div_ceil(self.rows);
            c.reserve(per_row.saturating_mul(more));
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The encoded values' bytes (the body without its framing).
    pub fn payload_len(&self) -> usize {
        self.cols.iter().map(Vec::len).sum()
    }

    /// The exact length of [`encode`](Self::encode)'s output for a
    /// measurement name of `measurement_len` bytes (before compression).
    pub fn encoded_len(&self, measurement_len: usize) -> usize {
        framing_len(measurement_len, self.rows) + self.payload_len()
    }

    /// The MessagePack body `{"m": measurement, "columns": {...}}`.
    pub fn encode(&self, measurement: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len(measurement.len()));
        map_header(&mut out, 2);
        write_str(&mut out, "m");
        write_str(&mut out, measurement);
        write_str(&mut out, "columns");
        map_header(&mut out, COLUMNS.len());
        for (name, values) in COLUMNS.iter().zip(&self.cols) {
            write_str(&mut out, name);
            array_header(&mut out, self.rows);
            out.extend_from_slice(values);
        }
        out
    }
}

impl FromIterator<MemoryRow> for MemoryBatch {
    fn from_iter<I: IntoIterator<Item = MemoryRow>>(rows: I) -> Self {
        let mut b = Self::new();
        for r in rows {
            b.push(&r);
        }
        b
    }
}

impl From<Vec<MemoryRow>> for MemoryBatch {
    fn from(rows: Vec<MemoryRow>) -> Self {
        Self::from_rows(&rows)
    }
}

/// How a write body is compressed: the org's `arc.write_compression`
/// (gzip at the fastest level, zstd at level 1, or raw MessagePack). Arc Go
/// detects the format from the body's magic bytes; the header from
/// [`Compression::content_encoding`] is for the Python build and proxies.
pub use memtrace_common::settings::WriteCompression as Compression;

/// Compresses an encoded body (in memory; cannot fail short of OOM).
pub fn compress(body: &[u8], compression: Compression) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::None => Ok(body.to_vec()),
        Compression::Zstd => zstd_compress(body),
        Compression::Gzip => {
            let out = Vec::with_capacity(body.len() / 4 + 64);
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            enc.write_all(body)?;
            enc.finish()
        }
    }
}

thread_local! {
    /// One zstd context per thread, reused: creating one costs more than
    /// compressing a small batch (a REST write's).
    static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Zstandard level 1 (what Arc's own docs recommend).
fn zstd_compress(body: &[u8]) -> std::io::Result<Vec<u8>> {
    ZSTD.with(|cell| {
        let mut slot = cell.try_borrow_mut().map_err(std::io::Error::other)?;
        let compressor = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(zstd::bulk::Compressor::new(1)?),
        };
        compressor.compress(body)
    })
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
            expires_at: if i % 2 == 0 {
                0
            } else {
                1_735_693_200_000_000 + i
            },
        }
    }

    fn decode(bytes: &[u8]) -> Value {
        rmp_serde::from_slice(bytes).unwrap()
    }

    /// The same body written by a general MessagePack encoder (rmp-serde,
    /// struct as map): the hand-written columns must match it byte for byte.
    fn reference(rows: &[MemoryRow], measurement: &str) -> Vec<u8> {
        #[derive(serde::Serialize)]
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
            expires_at: Vec<i64>,
        }
        #[derive(serde::Serialize)]
        struct Body<'a> {
            m: &'a str,
            columns: Columns,
        }
        let s = |f: fn(&MemoryRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
        let body = Body {
            m: measurement,
            columns: Columns {
                time: rows.iter().map(|r| r.time).collect(),
                id: s(|r| r.id.clone()),
                org_id: s(|r| r.org_id.to_string()),
                agent_id: s(|r| r.agent_id.clone()),
                session_id: s(|r| r.session_id.clone()),
                memory_type: s(|r| r.memory_type.to_string()),
                event_type: s(|r| r.event_type.clone()),
                content: s(|r| r.content.clone()),
                metadata_json: s(|r| r.metadata_json.to_string()),
                tags_csv: s(|r| r.tags_csv.clone()),
                dedup_key: s(|r| r.dedup_key.clone()),
                importance: rows.iter().map(|r| r.importance).collect(),
                parent_id: s(|r| r.parent_id.clone()),
                expires_at: rows.iter().map(|r| r.expires_at).collect(),
            },
        };
        let mut out = Vec::new();
        let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
        serde::Serialize::serialize(&body, &mut ser).unwrap();
        out
    }

    #[test]
    fn encodes_one_columnar_map_with_typed_columns() {
        let mut b = MemoryBatch::new();
        b.push(&row(0));
        b.push(&row(1));
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
        assert_eq!(bytes.len(), b.encoded_len("memories".len()));
    }

    #[test]
    fn matches_a_general_encoder_byte_for_byte_at_every_header_size() {
        // string lengths and row counts crossing each header width, and
        // integers of every width (negative ones included)
        let lens = [0, 1, 31, 32, 255, 256, 65_535, 65_536];
        let times = [
            0,
            5,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            4_294_967_295,
            4_294_967_296,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32_768,
            -32_769,
            -2_147_483_648,
            -2_147_483_649,
            i64::MIN,
            i64::MAX,
        ];
        for n in [0usize, 1, 15, 16, 17, 300] {
            let rows: Vec<MemoryRow> = (0..n)
                .map(|i| {
                    let mut r = row(i as i64);
                    r.content = "c".repeat(lens[i % lens.len()]);
                    r.parent_id = "p".repeat(lens[(i + 3) % lens.len()]);
                    r.time = times[i % times.len()];
                    r.importance = i as f64 / 7.0;
                    r
                })
                .collect();
            let b = MemoryBatch::from_rows(&rows);
            for c in &b.cols {
                assert_eq!(c.capacity(), c.len(), "{n} rows: sized exactly up front");
            }
            let bytes = b.encode("events");
            assert_eq!(bytes, reference(&rows, "events"), "{n} rows");
            assert_eq!(bytes.len(), b.encoded_len(6), "{n} rows");
            let long = "x".repeat(40);
            assert_eq!(b.encode(&long), reference(&rows, &long), "{n} rows");
        }
    }

    #[test]
    fn importance_is_always_float64_and_time_an_int() {
        let mut b = MemoryBatch::new();
        b.push(&row(0));
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
    fn appended_batches_equal_one_batch_of_all_rows() {
        let rows: Vec<MemoryRow> = (0..50).map(row).collect();
        let whole = MemoryBatch::from_rows(&rows);
        let mut parts = MemoryBatch::new();
        for chunk in rows.chunks(7) {
            parts.append(MemoryBatch::from_rows(chunk));
        }
        assert_eq!(parts.len(), 50);
        assert_eq!(parts.encode("memories"), whole.encode("memories"));
        // an empty batch with room appends by copying, and reserve_rows
        // keeps a large append from reallocating
        let mut roomy = MemoryBatch::with_capacity(100);
        roomy.append(MemoryBatch::from_rows(&rows[..1]));
        roomy.reserve_rows(49);
        let caps: Vec<usize> = roomy.cols.iter().map(Vec::capacity).collect();
        roomy.append(MemoryBatch::from_rows(&rows[1..]));
        assert_eq!(roomy.encode("memories"), whole.encode("memories"));
        let after: Vec<usize> = roomy.cols.iter().map(Vec::capacity).collect();
        assert_eq!(caps, after, "reserved room was enough");
    }

    #[test]
    fn compressions_round_trip_and_carry_magic_bytes() {
        let rows: Vec<MemoryRow> = (0..100).map(row).collect();
        let raw = MemoryBatch::from_rows(&rows).encode("memories");
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
        // the thread's reused context: later bodies (smaller, larger) still
        // round-trip on their own
        for n in [1usize, 2_000, 3] {
            let rows: Vec<MemoryRow> = (0..n as i64).map(row).collect();
            let raw = MemoryBatch::from_rows(&rows).encode("m");
            let zs = compress(&raw, Compression::Zstd).unwrap();
            assert_eq!(zstd::decode_all(&zs[..]).unwrap(), raw, "{n} rows");
        }
    }

    #[test]
    fn an_empty_batch_encodes_empty_columns() {
        let b = MemoryBatch::from_rows(&[]);
        assert!(b.is_empty());
        let v = decode(&b.encode("memories"));
        assert_eq!(v["columns"]["id"], json!([]));
        assert_eq!(b.encode("memories").len(), b.encoded_len(8));
    }

    proptest::proptest! {
        /// Fuzzing the hand-written encoder against the general one: any
        /// rows (any text, any time, any finite importance) encode to the
        /// same bytes.
        #[test]
        fn any_rows_encode_as_a_general_encoder_does(
            rows in proptest::collection::vec(
                (
                    proptest::prelude::any::<i64>(),
                    ".{0,40}",
                    ".{0,300}",
                    "[a-z,]{0,20}",
                    -1.0e9f64..1.0e9,
                ),
                0..12,
            ),
        ) {
            let rows: Vec<MemoryRow> = rows
                .into_iter()
                .enumerate()
                .map(|(i, (time, text, content, tags, importance))| MemoryRow {
                    time,
                    id: format!("mem_{i}"),
                    agent_id: text.clone(),
                    session_id: text.clone(),
                    event_type: text.clone(),
                    content,
                    tags_csv: tags,
                    dedup_key: text,
                    importance,
                    ..row(i as i64)
                })
                .collect();
            let mut batch = MemoryBatch::new();
            for r in &rows {
                batch.push(r);
            }
            let bytes = batch.encode("memories");
            proptest::prop_assert_eq!(bytes.len(), batch.encoded_len("memories".len()));
            proptest::prop_assert_eq!(bytes, reference(&rows, "memories"));
        }
    }
}
