//! `GET /api/v1/export`: one page of the org's memories as JSONL
//! (`application/x-ndjson`), oldest first, one memory per line in the shape
//! `GET /api/v1/memories/{id}` returns. When more memories follow, the
//! response carries the next page's cursor twice: in the
//! `x-memtrace-next-cursor` header and as the body's last line,
//! `{"next_cursor":"..."}` — that line is a cursor object, not a memory
//! (it has no `id`). A page without a cursor ends the export. Query
//! parameters: `agent_id`, `session_id`, `limit` (memories per page,
//! default 1000, 1 to 10000), `cursor` (a previous page's `next_cursor`).
//!
//! Each page is a fresh read: a memory updated or deleted while an export
//! runs may show its versions at different positions (one already exported
//! shows again, in its new version, on a later page; a deleted one is
//! missing from later pages). A complete export loops until a page has no
//! cursor.

use super::{ApiResult, Pairs, Reader, int_param, pairs};
use crate::query::ExportParams;
use crate::service::{ExportPage, ServiceError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;

/// The response header carrying the next page's cursor.
pub const NEXT_CURSOR_HEADER: &str = "x-memtrace-next-cursor";

pub(super) async fn export(query: Pairs, Reader(svc): Reader) -> ApiResult {
    let params = export_params(query)?;
    let page = svc.export_memories(&params).await?;
    let body = jsonl(&page)?;
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response();
    if let Some(cursor) = &page.next_cursor {
        let value = HeaderValue::from_str(cursor)
            .map_err(|_| ServiceError::Internal("cursor is not a header value".into()))?;
        response.headers_mut().insert(NEXT_CURSOR_HEADER, value);
    }
    Ok(response)
}

/// The export's query parameters (last value of a repeated key wins).
fn export_params(q: Pairs) -> Result<ExportParams, ServiceError> {
    let mut p = ExportParams::default();
    for (k, v) in pairs(q)? {
        match k.as_str() {
            "agent_id" => p.agent_id = Some(v),
            "session_id" => p.session_id = Some(v),
            "cursor" => p.cursor = Some(v),
            "limit" if !v.is_empty() => p.limit = Some(int_param(&v, "limit")?),
            _ => {}
        }
    }
    Ok(p)
}

/// The page as JSONL: a line per memory, then the cursor line if any.
fn jsonl(page: &ExportPage) -> Result<Vec<u8>, ServiceError> {
    let encode = |e: serde_json::Error| ServiceError::Internal(format!("export encoding: {e}"));
    let mut body = Vec::new();
    for memory in &page.memories {
        serde_json::to_writer(&mut body, memory).map_err(encode)?;
        body.push(b'\n');
    }
    if let Some(cursor) = &page.next_cursor {
        serde_json::to_writer(&mut body, &serde_json::json!({ "next_cursor": cursor }))
            .map_err(encode)?;
        body.push(b'\n');
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::service::Memory;

    fn memory(id: &str) -> Memory {
        Memory {
            id: id.into(),
            time: "2026-11-25T12:00:00Z".into(),
            org_id: "org_a".into(),
            agent_id: "a1".into(),
            session_id: String::new(),
            memory_type: "episodic".into(),
            event_type: "note".into(),
            content: "line\nbreak".into(),
            metadata: None,
            tags: Vec::new(),
            dedup_key: String::new(),
            importance: 0.0,
            parent_id: String::new(),
            expires_at: None,
        }
    }

    #[test]
    fn a_page_is_a_line_per_memory_then_the_cursor_line() {
        let page = ExportPage {
            memories: vec![memory("m1"), memory("m2")],
            next_cursor: Some("abc".into()),
        };
        let body = String::from_utf8(jsonl(&page).unwrap()).unwrap();
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 3, "{body}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["id"], "m1");
        assert_eq!(first["content"], "line\nbreak");
        assert_eq!(lines[2], r#"{"next_cursor":"abc"}"#);
        let last = ExportPage {
            memories: vec![memory("m3")],
            next_cursor: None,
        };
        let body = String::from_utf8(jsonl(&last).unwrap()).unwrap();
        assert_eq!(body.lines().count(), 1);
        assert!(body.ends_with('\n'));
    }
}
