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

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

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
        let mut out = Vec::new();
        let body = Body {
            m: measurement,
            columns: Columns(self),
        };
        let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
        // Plain strings and ints into a Vec cannot fail.
        if let Err(e) = body.serialize(&mut ser) {
            tracing::error!(error = %e, "arc state batch encoding failed");
        }
        out
    }
}

#[derive(Serialize)]
struct Body<'a> {
    m: &'a str,
    columns: Columns<'a>,
}

struct Columns<'a>(&'a StringBatch);

impl Serialize for Columns<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
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
