//! JSON-RPC 2.0 over stdio as MCP frames it: one message per line (UTF-8
//! JSON without embedded newlines), requests and notifications in, responses
//! out. Lines are bounded ([`MAX_LINE_BYTES`]): a longer one is skipped up
//! to its newline and answered with a parse error, and reading goes on.
//! Nothing here panics on any input.

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest message line accepted, newline excluded.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Invalid JSON (or a line over [`MAX_LINE_BYTES`]).
pub const PARSE_ERROR: i64 = -32700;
/// JSON that is not a JSON-RPC 2.0 request or notification.
pub const INVALID_REQUEST: i64 = -32600;
/// A method this server does not implement.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// A known method with missing or malformed params.
pub const INVALID_PARAMS: i64 = -32602;

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The input ended (a last line without a newline is returned first).
    Eof,
    /// A line, its `\n` (and a `\r` before it) removed.
    Text(Vec<u8>),
    /// A line longer than the limit, skipped through its newline.
    TooLong,
}

/// Reads one line of at most `max` bytes. Memory stays bounded by `max`
/// whatever the input: the rest of an over-long line is consumed and dropped.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            // end of input
            return Ok(if too_long {
                Line::TooLong
            } else if line.is_empty() {
                Line::Eof
            } else {
                Line::Text(trim_cr(line))
            });
        }
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (&buf[..at], Some(at)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.map_or(buf.len(), |at| at + 1);
        reader.consume(used);
        if found.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Text(trim_cr(line))
            });
        }
    }
}

fn trim_cr(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line
}

/// A message from the client, as far as the server cares.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A request: answered with a result or an error carrying its id.
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    /// A notification: never answered.
    Notification { method: String },
    /// A response to a request of ours (this server sends none): ignored.
    Response,
    /// Not a message: answered with this error response.
    Invalid(Value),
}

/// Classifies one line (see [`Incoming`]).
pub fn parse(line: &[u8]) -> Incoming {
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(e) => {
            return Incoming::Invalid(error(
                &Value::Null,
                PARSE_ERROR,
                format!("parse error: not valid JSON ({e})"),
            ));
        }
    };
    let invalid = |id: &Value, why: &str| {
        Incoming::Invalid(error(
            id,
            INVALID_REQUEST,
            format!("invalid request: {why}"),
        ))
    };
    let object = match value {
        Value::Object(object) => object,
        Value::Array(_) => {
            return invalid(
                &Value::Null,
                "batches are not supported; send one message per line",
            );
        }
        _ => return invalid(&Value::Null, "expected a JSON object"),
    };
    // the id, when present and valid, goes into any error about the rest
    let id = object.get("id");
    let id_ok = match id {
        None => true,
        Some(Value::String(_)) => true,
        Some(Value::Number(n)) => n.is_i64() || n.is_u64(),
        Some(_) => false,
    };
    let reply_id = id.filter(|_| id_ok).cloned().unwrap_or(Value::Null);
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(&reply_id, "jsonrpc must be \"2.0\"");
    }
    let Some(method) = object.get("method") else {
        if id.is_some() && (object.contains_key("result") || object.contains_key("error")) {
            return Incoming::Response;
        }
        return invalid(&reply_id, "method is required");
    };
    let Some(method) = method.as_str() else {
        return invalid(&reply_id, "method must be a string");
    };
    if !id_ok {
        return invalid(&Value::Null, "id must be a string or an integer");
    }
    match id {
        None => Incoming::Notification {
            method: method.to_owned(),
        },
        Some(id) => Incoming::Request {
            id: id.clone(),
            method: method.to_owned(),
            params: object.get("params").cloned(),
        },
    }
}

/// A success response.
pub fn success(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response.
pub fn error(id: &Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// The params of a request as an object: absent is empty, anything but an
/// object is refused (`Err` is the -32602 message).
pub fn params_object(params: Option<Value>) -> Result<Map<String, Value>, String> {
    match params {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err("invalid params: params must be an object".into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut reader = tokio::io::BufReader::with_capacity(8, input);
        let mut out = Vec::new();
        loop {
            let line = read_line(&mut reader, max).await.unwrap();
            let end = line == Line::Eof;
            out.push(line);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn lines_are_split_on_newlines_and_bounded() {
        let got = lines(b"{\"a\":1}\r\n\nshort\n0123456789abcdef\nok\nlast", 10).await;
        assert_eq!(
            got,
            vec![
                Line::Text(b"{\"a\":1}".to_vec()),
                Line::Text(Vec::new()),
                Line::Text(b"short".to_vec()),
                Line::TooLong,
                Line::Text(b"ok".to_vec()),
                Line::Text(b"last".to_vec()),
                Line::Eof,
            ]
        );
        // exactly at the limit is accepted; one more byte is not
        assert_eq!(
            lines(b"0123456789\n", 10).await[0],
            Line::Text(b"0123456789".to_vec())
        );
        assert_eq!(lines(b"0123456789a\n", 10).await[0], Line::TooLong);
        assert_eq!(
            lines(b"0123456789abc", 10).await,
            vec![Line::TooLong, Line::Eof]
        );
        assert_eq!(lines(b"", 10).await, vec![Line::Eof]);
    }

    fn code(incoming: &Incoming) -> i64 {
        match incoming {
            Incoming::Invalid(reply) => reply["error"]["code"].as_i64().unwrap(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_a_parse_error_with_a_null_id() {
        for bad in [
            &b"{"[..],
            b"not json",
            b"\xff\xfe",
            b"{\"jsonrpc\":\"2.0\",}",
        ] {
            let parsed = parse(bad);
            assert_eq!(code(&parsed), PARSE_ERROR, "{bad:?}");
            let Incoming::Invalid(reply) = parsed else {
                unreachable!()
            };
            assert_eq!(reply["id"], Value::Null);
            assert_eq!(reply["jsonrpc"], "2.0");
        }
    }

    #[test]
    fn requests_notifications_and_responses_are_told_apart() {
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#),
            Incoming::Request {
                id: json!(7),
                method: "ping".into(),
                params: None
            }
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{}}"#),
            Incoming::Request {
                id: json!("a"),
                method: "tools/list".into(),
                params: Some(json!({}))
            }
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Incoming::Notification {
                method: "notifications/initialized".into()
            }
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Incoming::Response
        );
    }

    #[test]
    fn invalid_requests_keep_a_valid_id() {
        let no_version = parse(br#"{"id":3,"method":"ping"}"#);
        assert_eq!(code(&no_version), INVALID_REQUEST);
        let Incoming::Invalid(reply) = no_version else {
            unreachable!()
        };
        assert_eq!(reply["id"], 3);
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("jsonrpc must be \"2.0\"")
        );
        for bad in [
            &br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#[..],
            br#"42"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
        ] {
            assert_eq!(
                code(&parse(bad)),
                INVALID_REQUEST,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let Incoming::Invalid(reply) = parse(br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#)
        else {
            unreachable!()
        };
        assert_eq!(reply["id"], Value::Null, "an invalid id is not echoed");
    }

    #[test]
    fn params_must_be_an_object() {
        assert_eq!(params_object(None).unwrap(), Map::new());
        assert_eq!(params_object(Some(json!({"a": 1}))).unwrap()["a"], json!(1));
        assert!(
            params_object(Some(json!([1])))
                .unwrap_err()
                .contains("params must be an object")
        );
    }
}
