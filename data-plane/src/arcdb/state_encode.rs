//! Rows of string columns (plus `time` and `id`) as Arc's columnar
//! MessagePack write body: the agent and session state rows of the tenant
//! store. Same shape as [`MemoryBatch`](super::MemoryBatch):
//!
//! ```text
//! {"m": <measurement>, "columns": {"time": [i64 µs, ...], "id": [str, ...], <column>: [str, ...], ...}}
//! ```
//!
//! Every value besides `time` is a MessagePack `str` (empty, never nil), so
//! Arc types each column as a string from its first value; `time` is in
//! microseconds (see the unit note in [`encode`](super::encode)).

use super::msgpack::{array_header, map_header, write_int, write_str};

/// Why a row does not fit a [`StringBatch`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateEncodeError {
    /// The row has another number of values than the batch has columns.
    #[error("row has {got} values for {want} columns")]
    Width { got: usize, want: usize },
    /// A column name repeats, or is `time` / `id` (always written).
    #[error("column {0:?} is repeated or reserved (time and id are always written)")]
    Column(String),
}

/// A batch of rows `time, id, <columns...>` with string values.
#[derive(Debug, Clone, PartialEq)]
pub struct StringBatch {
    names: Vec<String>,
    time: Vec<i64>,
    id: Vec<String>,
    columns: Vec<Vec<String>>,
}

impl StringBatch {
    /// An empty batch with these columns besides `time` and `id`.
    pub fn new<S: AsRef<str>>(columns: &[S]) -> Result<Self, StateEncodeError> {
        let mut names: Vec<String> = Vec::with_capacity(columns.len());
        for c in columns {
            let c = c.as_ref();
            if matches!(c, "time" | "id") || names.iter().any(|n| n == c) {
                return Err(StateEncodeError::Column(c.to_owned()));
            }
            names.push(c.to_owned());
        }
        Ok(Self {
            columns: vec![Vec::new(); names.len()],
            names,
            time: Vec::new(),
            id: Vec::new(),
        })
    }

    /// Appends one row; `values` follow the batch's columns in order.
    pub fn push(
        &mut self,
        time: i64,
        id: impl Into<String>,
        values: Vec<String>,
    ) -> Result<(), StateEncodeError> {
        if values.len() != self.names.len() {
            return Err(StateEncodeError::Width {
                got: values.len(),
                want: self.names.len(),
            });
        }
        self.time.push(time);
        self.id.push(id.into());
        for (col, v) in self.columns.iter_mut().zip(values) {
            col.push(v);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.time.is_empty()
    }

    /// The MessagePack body `{"m": measurement, "columns": {...}}`.
    pub fn encode(&self, measurement: &str) -> Vec<u8> {
        let n = self.len();
        let mut out = Vec::new();
        map_header(&mut out, 2);
        write_str(&mut out, "m");
        write_str(&mut out, measurement);
        write_str(&mut out, "columns");
        map_header(&mut out, 2 + self.names.len());
        write_str(&mut out, "time");
        array_header(&mut out, n);
        for t in &self.time {
            write_int(&mut out, *t);
        }
        let strings = std::iter::once(("id", &self.id))
            .chain(self.names.iter().map(String::as_str).zip(&self.columns));
        for (name, values) in strings {
            write_str(&mut out, name);
            array_header(&mut out, n);
            for v in values {
                write_str(&mut out, v);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn encodes_time_id_and_string_columns() {
        let mut b = StringBatch::new(&["org_id", "name"]).unwrap();
        b.push(
            1_795_608_000_000_000,
            "agent_1",
            vec!["org_a".into(), "".into()],
        )
        .unwrap();
        b.push(
            1_795_608_000_000_001,
            "agent_2",
            vec!["org_a".into(), "n".into()],
        )
        .unwrap();
        let v: Value = rmp_serde::from_slice(&b.encode("agents")).unwrap();
        assert_eq!(v["m"], "agents");
        assert_eq!(
            v["columns"],
            json!({
                "time": [1_795_608_000_000_000_i64, 1_795_608_000_000_001_i64],
                "id": ["agent_1", "agent_2"],
                "org_id": ["org_a", "org_a"],
                "name": ["", "n"],
            })
        );
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn matches_a_general_encoder_byte_for_byte() {
        // 20 columns (a map16 header) and 17 rows (array16 headers)
        let names: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
        let mut b = StringBatch::new(&names).unwrap();
        for r in 0..17 {
            let values = (0..20).map(|c| "v".repeat((r * c) % 40)).collect();
            b.push(1_795_608_000_000_000 + r as i64, format!("id_{r}"), values)
                .unwrap();
        }
        struct Columns<'a>(&'a StringBatch);
        impl serde::Serialize for Columns<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let b = self.0;
                let mut map = s.serialize_map(Some(2 + b.names.len()))?;
                map.serialize_entry("time", &b.time)?;
                map.serialize_entry("id", &b.id)?;
                for (name, col) in b.names.iter().zip(&b.columns) {
                    map.serialize_entry(name, col)?;
                }
                map.end()
            }
        }
        #[derive(serde::Serialize)]
        struct Body<'a> {
            m: &'a str,
            columns: Columns<'a>,
        }
        let mut want = Vec::new();
        let mut ser = rmp_serde::Serializer::new(&mut want).with_struct_map();
        serde::Serialize::serialize(
            &Body {
                m: "sessions",
                columns: Columns(&b),
            },
            &mut ser,
        )
        .unwrap();
        assert_eq!(b.encode("sessions"), want);
    }

    #[test]
    fn refuses_wrong_width_and_reserved_columns() {
        let mut b = StringBatch::new(&["a"]).unwrap();
        assert_eq!(
            b.push(1, "x", vec![]),
            Err(StateEncodeError::Width { got: 0, want: 1 })
        );
        assert!(b.is_empty());
        assert!(StringBatch::new(&["time"]).is_err());
        assert!(StringBatch::new(&["a", "a"]).is_err());
    }
}
