//! The stand-in's two ways of closing a connection unanswered, as a client
//! socket sees them: `drop_connection` is an orderly close (FIN: a read
//! ends with 0 bytes), `reset_connection` a reset (RST: a read fails with
//! ECONNRESET). Both answer nothing, and the next connection is served. A
//! write reset after processing is stored, but its client gets only the
//! reset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::arc::client::{RawArcClient, msgpack, zstd};
use memtrace_tests::arc::{ArcStandIn, CostModel, Fault, Target};
use serde_json::json;
use std::io::ErrorKind;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one query over a fresh connection; what a read of the answer
/// gives: the bytes read until the end, or the error.
async fn one_query(arc: &ArcStandIn) -> Result<Vec<u8>, std::io::Error> {
    let mut s = TcpStream::connect(arc.addr()).await?;
    let body = r#"{"sql": "SELECT 1 AS one"}"#;
    let req = format!(
        "POST /api/v1/query HTTP/1.1\r\nHost: arc\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "no end within 10 s"))??;
    Ok(out)
}

#[tokio::test]
async fn a_dropped_connection_ends_with_fin_and_a_reset_one_with_rst() {
    let arc = ArcStandIn::builder()
        .cost_model(CostModel::instant())
        .start()
        .await
        .unwrap();
    let faults = arc.faults();

    faults.inject(Fault::drop_connection().on(Target::Queries).times(1));
    let fin = one_query(&arc).await;
    assert_eq!(fin.unwrap(), b"", "FIN: nothing answered, an orderly end");

    faults.inject(Fault::reset_connection().on(Target::Queries).times(1));
    let rst = one_query(&arc).await;
    assert_eq!(
        rst.as_ref().map_err(std::io::Error::kind).err(),
        Some(ErrorKind::ConnectionReset),
        "RST: {rst:?}"
    );
    assert_eq!(faults.applied(), 2);

    // the switches are spent: the next query is answered
    let answered = one_query(&arc).await.unwrap();
    let text = String::from_utf8_lossy(&answered);
    assert!(text.starts_with("HTTP/1.1 "), "{text}");
}

#[tokio::test]
async fn a_write_reset_after_processing_is_stored_and_unanswered() {
    let arc = ArcStandIn::builder()
        .cost_model(CostModel::instant())
        .start()
        .await
        .unwrap();
    arc.faults()
        .inject(Fault::reset_after_processing().on(Target::Writes).times(1));
    let c = RawArcClient::new(arc.url());
    // 2025-01-01T00:00:00Z and 1 µs later
    let t0 = 1_735_689_600_000_000_i64;
    let body = || {
        zstd(&msgpack(
            &json!({"m": "bench", "columns": {"time": [t0, t0 + 1], "v": [1.5, 2.5]}}),
        ))
    };
    let err = c.write(Some("acme"), body()).await.unwrap_err();
    let reset = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::ConnectionReset)
    });
    assert!(reset, "a reset, not {err:#}");
    assert_eq!(arc.stats().db("acme").rows, 2, "stored before the reset");
    let (status, _) = c.write(Some("acme"), body()).await.unwrap();
    assert_eq!(status, 204);
    assert_eq!(arc.stats().db("acme").rows, 4);
}
