//! Arc's MessagePack write body: decompression by magic bytes and a
//! bounds-checked decoder for the columnar (and legacy row) shapes.
//!
//! The decoder is hand-written over the byte slice so that every declared
//! length (string, binary, array, map) is checked against the bytes that are
//! actually left before anything is allocated: a 5-byte body claiming a
//! 4-billion-element array is an error, not an allocation.

use std::borrow::Cow;
use std::io::Read;

/// How many nested arrays/maps the decoder follows before giving up.
const MAX_DEPTH: usize = 16;
/// Columns per record (SQLite's default limit is 2000).
const MAX_COLUMNS: usize = 1000;
/// Bytes in a column name.
const MAX_COLUMN_NAME: usize = 256;

/// One cell of a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
}

/// One measurement's rows in columnar form, `time` already in microseconds.
#[derive(Debug, Clone)]
pub struct Batch {
    pub measurement: String,
    pub time: Vec<i64>,
    /// Value columns (every column but `time`), each as long as `time`.
    pub columns: Vec<(String, Vec<Cell>)>,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.time.len()
    }
}

/// A decoded request: the batches kept, and why batch items were skipped.
#[derive(Debug, Default)]
pub struct Decoded {
    pub batches: Vec<Batch>,
    pub skipped: Vec<String>,
}

/// Decompresses `body` by its first bytes (gzip `1f 8b`, zstd `28 b5 2f fd`
/// unless `zstd` is false — a gzip-only build reads it as raw —, else raw),
/// refusing output larger than `cap` bytes. Errors read like Arc's.
pub fn decompress(body: &[u8], cap: usize, zstd: bool) -> Result<Cow<'_, [u8]>, String> {
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    if body.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| format!("Invalid gzip compression: {e}"))?;
        if out.len() > cap {
            return Err(format!(
                "Invalid gzip compression: decompressed size exceeds {cap} bytes"
            ));
        }
        Ok(Cow::Owned(out))
    } else if zstd && body.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(body)
            .and_then(|d| d.take(limit).read_to_end(&mut out))
            .map_err(|e| format!("Invalid zstd compression: {e}"))?;
        if out.len() > cap {
            return Err(format!(
                "Invalid zstd compression: decompressed size exceeds {cap} bytes"
            ));
        }
        Ok(Cow::Owned(out))
    } else if body.len() > cap {
        Err(format!("payload exceeds {cap} bytes"))
    } else {
        Ok(Cow::Borrowed(body))
    }
}

/// Decodes ONE MessagePack value: a columnar or row record, a top-level array
/// of records, or `{"batch": [records]}`. A bad lone record is an error; in
/// the array/batch forms a bad item is skipped (as Arc does) unless no item
/// survives. `now_us` stamps records without a `time` column.
pub fn decode(payload: &[u8], now_us: i64) -> Result<Decoded, String> {
    let mut rd = Reader::new(payload);
    let top = rd.peek_kind()?;
    let mut out = Decoded::default();
    match top {
        Kind::Array => {
            let n = rd.array_len()?;
            items(&mut rd, n, now_us, &mut out)?;
        }
        Kind::Map => {
            let span = rd.skip_span(0)?;
            let mut item = Reader::new(span);
            if let Some(n) = find_batch(&mut item)? {
                items(&mut item, n, now_us, &mut out)?;
            } else {
                out.batches.push(record(span, now_us)?);
            }
        }
        _ => return Err("expected a map or an array at the top level".into()),
    }
    if !rd.is_empty() {
        return Err(format!(
            "{} trailing bytes after the MessagePack value",
            rd.remaining()
        ));
    }
    if out.batches.is_empty()
        && let Some(first) = out.skipped.first()
    {
        return Err(first.clone());
    }
    Ok(out)
}

fn items(rd: &mut Reader<'_>, n: usize, now_us: i64, out: &mut Decoded) -> Result<(), String> {
    for i in 0..n {
        let span = rd.skip_span(1)?;
        match record(span, now_us) {
            Ok(b) => out.batches.push(b),
            Err(e) => out.skipped.push(format!("item {i}: {e}")),
        }
    }
    Ok(())
}

/// If the map at the reader holds a `batch` key, positions the reader on its
/// array and returns the length.
fn find_batch(rd: &mut Reader<'_>) -> Result<Option<usize>, String> {
    let n = rd.map_len()?;
    for _ in 0..n {
        let key = rd.key()?;
        if key == "batch" {
            return rd.array_len().map(Some);
        }
        rd.skip(1)?;
    }
    Ok(None)
}

/// Decodes one record (a map) from its own byte span.
fn record(span: &[u8], now_us: i64) -> Result<Batch, String> {
    let mut rd = Reader::new(span);
    let n = rd
        .map_len()
        .map_err(|_| "a record must be a map".to_string())?;
    let mut measurement = None;
    let mut columns: Option<Vec<(String, Vec<Cell>)>> = None;
    let (mut t, mut host, mut fields, mut tags) = (None, None, None, Vec::new());
    for _ in 0..n {
        let key = rd.key()?;
        match key.as_str() {
            "m" => {
                measurement = Some(match rd.scalar()? {
                    Cell::Str(s) => s,
                    Cell::Int(i) => format!("measurement_{i}"),
                    _ => return Err("`m` must be a string".into()),
                })
            }
            "columns" => columns = Some(column_map(&mut rd)?),
            "t" => t = Some(rd.scalar()?),
            "h" => host = Some(rd.scalar()?),
            "fields" => fields = Some(named_cells(&mut rd)?),
            "f" => {
                let len = rd.array_len()?;
                let mut v = Vec::with_capacity(len);
                for i in 0..len {
                    v.push((format!("field_{i}"), rd.scalar()?));
                }
                fields = Some(v);
            }
            "tags" => tags = named_cells(&mut rd)?,
            _ => rd.skip(1)?,
        }
    }
    let measurement = measurement.ok_or("record has no `m` (measurement)")?;
    if let Some(cols) = columns {
        return columnar(measurement, cols, now_us);
    }
    let fields = fields.ok_or("record has neither `columns` nor `fields`")?;
    // Row (legacy) form: one row; tags become string columns.
    let mut cols: Vec<(String, Vec<Cell>)> = Vec::new();
    if let Some(h) = host {
        cols.push(("host".into(), vec![stringify(h)]));
    }
    for (k, v) in tags {
        cols.push((k, vec![stringify(v)]));
    }
    for (k, v) in fields {
        cols.push((k, vec![v]));
    }
    if let Some(t) = t {
        cols.push(("time".into(), vec![t]));
    }
    columnar(measurement, cols, now_us)
}

fn stringify(c: Cell) -> Cell {
    match c {
        Cell::Int(i) => Cell::Str(i.to_string()),
        Cell::Float(f) => Cell::Str(f.to_string()),
        Cell::Bool(b) => Cell::Str(b.to_string()),
        other => other,
    }
}

/// Checks lengths and names, pulls out `time` (unit auto-detected from its
/// first element, stored as µs).
fn columnar(
    measurement: String,
    cols: Vec<(String, Vec<Cell>)>,
    now_us: i64,
) -> Result<Batch, String> {
    if cols.len() > MAX_COLUMNS {
        return Err(format!("too many columns (max {MAX_COLUMNS})"));
    }
    let rows = cols.first().map_or(0, |c| c.1.len());
    let mut seen = std::collections::HashSet::new();
    let mut time = None;
    let mut columns = Vec::with_capacity(cols.len());
    for (name, values) in cols {
        if values.len() != rows {
            return Err(format!(
                "array length mismatch: column {name:?} has {} values, expected {rows}",
                values.len()
            ));
        }
        if name.is_empty() || name.len() > MAX_COLUMN_NAME {
            return Err(format!("invalid column name {name:?}"));
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(format!("duplicate column {name:?}"));
        }
        if name.eq_ignore_ascii_case("time") {
            time = Some(time_column(&values)?);
        } else {
            columns.push((name, values));
        }
    }
    let time = time.unwrap_or_else(|| vec![now_us; rows]);
    if rows == 0 {
        return Err("record has no rows".into());
    }
    Ok(Batch {
        measurement,
        time,
        columns,
    })
}

/// Integer (or float, truncated) times; the unit comes from the first value:
/// < 1e10 s, < 1e13 ms, < 1e16 µs, else ns.
pub fn time_column(values: &[Cell]) -> Result<Vec<i64>, String> {
    let raw: Vec<i64> = values
        .iter()
        .map(|c| match c {
            Cell::Int(i) => Ok(*i),
            // Truncation towards zero is what Arc does with float times.
            Cell::Float(f) if f.is_finite() => Ok(*f as i64),
            other => Err(format!("time column must hold integers, got {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    let Some(&first) = raw.first() else {
        return Ok(raw);
    };
    let scale = |v: i64| -> Option<i64> {
        if first < 10_000_000_000 {
            v.checked_mul(1_000_000)
        } else if first < 10_000_000_000_000 {
            v.checked_mul(1_000)
        } else if first < 10_000_000_000_000_000 {
            Some(v)
        } else {
            Some(v / 1_000)
        }
    };
    raw.into_iter()
        .map(|v| scale(v).ok_or_else(|| format!("time value {v} out of range")))
        .collect()
}

fn column_map(rd: &mut Reader<'_>) -> Result<Vec<(String, Vec<Cell>)>, String> {
    let n = rd.map_len()?;
    if n > MAX_COLUMNS {
        return Err(format!("too many columns (max {MAX_COLUMNS})"));
    }
    let mut cols = Vec::with_capacity(n);
    for _ in 0..n {
        let name = rd.key()?;
        let len = rd
            .array_len()
            .map_err(|e| format!("column {name:?}: {e}"))?;
        let mut values = Vec::with_capacity(len);
        for _ in 0..len {
            values.push(rd.scalar().map_err(|e| format!("column {name:?}: {e}"))?);
        }
        cols.push((name, values));
    }
    Ok(cols)
}

fn named_cells(rd: &mut Reader<'_>) -> Result<Vec<(String, Cell)>, String> {
    let n = rd.map_len()?;
    let mut v = Vec::with_capacity(n.min(MAX_COLUMNS));
    for _ in 0..n {
        let k = rd.key()?;
        v.push((k, rd.scalar()?));
    }
    Ok(v)
}

#[derive(Debug, PartialEq)]
enum Kind {
    Array,
    Map,
    Other,
}

/// A bounds-checked cursor over MessagePack bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated payload: need {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, String> {
        Ok(self
            .bytes(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// A declared element count, checked against the bytes left (every
    /// element takes at least `min_each` bytes).
    fn checked_len(&self, len: u64, min_each: usize) -> Result<usize, String> {
        let len = usize::try_from(len).map_err(|_| "length overflow".to_string())?;
        if len.saturating_mul(min_each) > self.remaining() {
            return Err(format!(
                "declared length {len} exceeds the {} bytes left",
                self.remaining()
            ));
        }
        Ok(len)
    }

    fn peek_kind(&self) -> Result<Kind, String> {
        let b = *self.buf.get(self.pos).ok_or("empty MessagePack payload")?;
        Ok(match b {
            0x80..=0x8f | 0xde | 0xdf => Kind::Map,
            0x90..=0x9f | 0xdc | 0xdd => Kind::Array,
            _ => Kind::Other,
        })
    }

    fn map_len(&mut self) -> Result<usize, String> {
        let len = match self.byte()? {
            b @ 0x80..=0x8f => u64::from(b & 0x0f),
            0xde => self.be(2)?,
            0xdf => self.be(4)?,
            b => return Err(format!("expected a map, found marker 0x{b:02x}")),
        };
        self.checked_len(len, 2)
    }

    fn array_len(&mut self) -> Result<usize, String> {
        let len = match self.byte()? {
            b @ 0x90..=0x9f => u64::from(b & 0x0f),
            0xdc => self.be(2)?,
            0xdd => self.be(4)?,
            b => return Err(format!("expected an array, found marker 0x{b:02x}")),
        };
        self.checked_len(len, 1)
    }

    fn str_len(&mut self, marker: u8) -> Result<Option<usize>, String> {
        let len = match marker {
            0xa0..=0xbf => u64::from(marker & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return Ok(None),
        };
        self.checked_len(len, 1).map(Some)
    }

    fn key(&mut self) -> Result<String, String> {
        match self.scalar()? {
            Cell::Str(s) => Ok(s),
            other => Err(format!("map keys must be strings, found {other:?}")),
        }
    }

    /// Reads a scalar; nested arrays/maps and ext types are refused.
    fn scalar(&mut self) -> Result<Cell, String> {
        let m = self.byte()?;
        if let Some(len) = self.str_len(m)? {
            let raw = self.bytes(len)?;
            // Arc sanitises invalid UTF-8 rather than failing.
            return Ok(Cell::Str(String::from_utf8_lossy(raw).into_owned()));
        }
        let cell = match m {
            0x00..=0x7f => Cell::Int(i64::from(m)),
            0xe0..=0xff => Cell::Int(i64::from(m as i8)),
            0xc0 => Cell::Null,
            0xc2 => Cell::Bool(false),
            0xc3 => Cell::Bool(true),
            0xcc => Cell::Int(self.be(1)? as i64),
            0xcd => Cell::Int(self.be(2)? as i64),
            0xce => Cell::Int(self.be(4)? as i64),
            0xcf => {
                let v = self.be(8)?;
                Cell::Int(i64::try_from(v).map_err(|_| format!("integer {v} exceeds i64"))?)
            }
            0xd0 => Cell::Int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Cell::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Cell::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Cell::Int(self.be(8)? as i64),
            0xca => Cell::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Cell::Float(f64::from_bits(self.be(8)?)),
            0xc4..=0xc6 => {
                let n = self.be(1 << (m - 0xc4))?;
                let n = self.checked_len(n, 1)?;
                Cell::Str(String::from_utf8_lossy(self.bytes(n)?).into_owned())
            }
            _ => return Err(format!("unsupported value (marker 0x{m:02x}) in a column")),
        };
        Ok(cell)
    }

    /// Skips one value of any type (with length and depth checks).
    fn skip(&mut self, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("MessagePack nesting too deep".into());
        }
        let m = *self.buf.get(self.pos).ok_or("truncated payload")?;
        match m {
            0x80..=0x8f | 0xde | 0xdf => {
                let n = self.map_len()?;
                for _ in 0..n * 2 {
                    self.skip(depth + 1)?;
                }
            }
            0x90..=0x9f | 0xdc | 0xdd => {
                let n = self.array_len()?;
                for _ in 0..n {
                    self.skip(depth + 1)?;
                }
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                self.pos += 1;
                let n = match m {
                    0xc7..=0xc9 => self.be(1 << (m - 0xc7))?,
                    _ => 1u64 << (m - 0xd4),
                };
                let n = self.checked_len(n, 1)?;
                self.bytes(1 + n)?;
            }
            0xc1 => return Err("invalid MessagePack marker 0xc1".into()),
            _ => {
                self.scalar()?;
            }
        }
        Ok(())
    }

    /// Skips one value and returns its bytes.
    fn skip_span(&mut self, depth: usize) -> Result<&'a [u8], String> {
        let start = self.pos;
        self.skip(depth)?;
        Ok(&self.buf[start..self.pos])
    }
}
