//! The canonical JSON serialization receipts are signed over: RFC 8785
//! (JSON Canonicalization Scheme) restricted to integers. See the parent
//! module's documentation for the rules.

use serde_json::Value;

/// The largest integer a canonical document may hold (2^53 − 1): beyond it
/// an IEEE double, which RFC 8785 serializes numbers as, loses precision,
/// so another implementation would print a different number.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("number {0} is not an integer (receipts hold integers only)")]
    NotInteger(String),
    #[error("integer {0} is beyond ±(2^53 − 1)")]
    IntegerOutOfRange(String),
}

/// The canonical bytes of `value`: no whitespace, object members sorted by
/// the UTF-16 code units of their names, strings with the minimal escapes,
/// integers in plain decimal.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(512);
    write_value(&mut out, value)?;
    Ok(out)
}

fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u > MAX_SAFE_INTEGER {
                    return Err(CanonicalError::IntegerOutOfRange(n.to_string()));
                }
                out.extend_from_slice(u.to_string().as_bytes());
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_SAFE_INTEGER {
                    return Err(CanonicalError::IntegerOutOfRange(n.to_string()));
                }
                out.extend_from_slice(i.to_string().as_bytes());
            } else {
                return Err(CanonicalError::NotInteger(n.to_string()));
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, (name, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, name);
                out.push(b':');
                write_value(out, member)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 => {
                let b = c as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: Value) -> String {
        String::from_utf8(canonical_json(&v).unwrap()).unwrap()
    }

    #[test]
    fn sorts_members_and_drops_whitespace() {
        assert_eq!(
            canon(json!({"b": [1, {"z": null, "a": true}], "a": "x", "A": -5})),
            r#"{"A":-5,"a":"x","b":[1,{"a":true,"z":null}]}"#
        );
    }

    #[test]
    fn sorts_by_utf16_code_units_like_rfc8785() {
        // U+1F600 (surrogates D83D DE00) sorts before U+FB01 in UTF-16,
        // after it by code point: RFC 8785 uses UTF-16.
        assert_eq!(
            canon(json!({"\u{fb01}": 1, "\u{1f600}": 2, "\u{80}": 3})),
            "{\"\u{80}\":3,\"\u{1f600}\":2,\"\u{fb01}\":1}"
        );
    }

    #[test]
    fn escapes_minimally() {
        assert_eq!(
            canon(json!("q\"b\\n\nt\tc\u{1}\u{1f}/é\u{7f}")),
            "\"q\\\"b\\\\n\\nt\\tc\\u0001\\u001f/é\u{7f}\""
        );
    }

    #[test]
    fn integers_only_within_double_precision() {
        assert_eq!(canon(json!(MAX_SAFE_INTEGER)), "9007199254740991");
        assert_eq!(
            canon(json!(-(MAX_SAFE_INTEGER as i64))),
            "-9007199254740991"
        );
        assert!(matches!(
            canonical_json(&json!(MAX_SAFE_INTEGER + 1)),
            Err(CanonicalError::IntegerOutOfRange(_))
        ));
        assert!(matches!(
            canonical_json(&json!({"a": [1.5]})),
            Err(CanonicalError::NotInteger(_))
        ));
    }
}
