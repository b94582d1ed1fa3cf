//! Hostile REST requests against the real `memtrace-worker` (the second
//! half of the hostile-input suite; `hostile_input.rs` has the gRPC
//! amplification, tag lists and huge pages): each gets a clear 4xx naming
//! what was wrong within a bounded time, nothing is stored from a refused
//! request, the worker's peak memory stays bounded, and it serves on.
//!
//! - deeply nested JSON, invalid UTF-8 (body and query), NUL characters;
//! - huge `offset` and `limit`;
//! - bodies that are not JSON whatever their `Content-Type`;
//! - `Content-Encoding`: gzip and zstd decoded, truncated ones refused,
//!   a decompression bomb refused at the limit, unknown encodings 415,
//!   nothing decoded for a client without a valid key;
//! - slow clients: a trickled body answered 408 after `server.read_timeout`,
//!   hundreds of connections stalled inside their headers neither block
//!   others nor stay open past the header timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::{Api, error_of};
use memtrace_tests::cluster::Cluster;
use memtrace_tests::load::peak_rss_kib;
use memtrace_tests::worker::Worker;
use serde_json::{Value, json};
use std::io::Write;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFIX: &str = "/memtrace-hostile-bodies/v1/";
/// Longest any refusal may take (a stalled worker is a failure, not a slow
/// pass); generous for a debug build on a shared machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// The worker's `server.read_timeout` in these tests.
const READ_TIMEOUT_SECS: u64 = 2;

/// A cluster with one org served from the embedded store, a read+write
/// key, and a worker.
async fn start(name: &str) -> (Cluster, Worker, String, tempfile::TempDir) {
    let c = Cluster::start(PREFIX).await.unwrap();
    let org = c.org(name).await.unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let embedded = tempfile::tempdir().unwrap();
    let worker = c
        .worker(
            name,
            &[
                (
                    "MEMTRACE_WORKER_EMBEDDED_DIR",
                    embedded.path().to_str().unwrap(),
                ),
                (
                    "MEMTRACE_SERVER_READ_TIMEOUT",
                    &READ_TIMEOUT_SECS.to_string(),
                ),
            ],
        )
        .await
        .unwrap();
    (c, worker, key, embedded)
}

/// `call` answered within [`ANSWER_WITHIN`] with `status`; its body.
async fn answered(what: &str, status: u16, call: impl Future<Output = (u16, Value)>) -> Value {
    let (s, b) = tokio::time::timeout(ANSWER_WITHIN, call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {ANSWER_WITHIN:?}"));
    assert_eq!(s, status, "{what}: {b}");
    b
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The contents of `agent`'s memories, as listed.
async fn contents(api: &Api, agent: &str) -> Vec<String> {
    let (s, b) = api
        .get(&format!("/api/v1/memories?agent_id={agent}&limit=100"))
        .await;
    assert_eq!(s, 200, "{b}");
    b["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_and_values_are_refused_naming_the_rule() {
    let (_c, worker, key, _dir) = start("hostile-bodies").await;
    let api = Api::new(&worker, Some(&key));
    let post = "/api/v1/memories";
    let json_ct = [("content-type", "application/json")];

    // 100,000 levels of nesting: the parser's depth bound, not the stack
    let deep = format!(
        r#"{{"agent_id":"deep","content":"x","metadata":{{"a":{}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let b = answered(
        "deep json",
        400,
        api.raw("POST", post, &json_ct, deep.into_bytes()),
    )
    .await;
    assert!(error_of(&b).contains("recursion limit"), "{b}");

    // invalid UTF-8 inside a string of the body, and in a query value
    let mut bad = br#"{"agent_id":"utf","content":""#.to_vec();
    bad.extend([0xff, 0xfe, 0xfd]);
    bad.extend(br#""}"#);
    let b = answered(
        "invalid utf-8 body",
        400,
        api.raw("POST", post, &json_ct, bad),
    )
    .await;
    assert!(error_of(&b).starts_with("invalid request body"), "{b}");
    let b = answered(
        "invalid utf-8 query",
        400,
        api.get("/api/v1/memories?agent_id=%FF%FE"),
    )
    .await;
    // percent-decoded lossily, then refused by the field's rule
    assert!(error_of(&b).contains("invalid agent_id"), "{b}");

    // NUL: refused in an id; removed from content (Arc's SQL cannot carry
    // it), so content of NULs alone is missing content
    let b = answered(
        "nul in agent_id",
        400,
        api.post(post, json!({"agent_id": "a\u{0}b", "content": "x"})),
    )
    .await;
    assert!(error_of(&b).contains("agent_id"), "{b}");
    answered(
        "nul in content",
        201,
        api.post(
            post,
            json!({"agent_id": "nul", "content": "before\u{0}after"}),
        ),
    )
    .await;
    assert_eq!(contents(&api, "nul").await, vec!["beforeafter"]);
    let b = answered(
        "only nul in content",
        400,
        api.post(post, json!({"agent_id": "nul", "content": "\u{0}\u{0}"})),
    )
    .await;
    assert_eq!(error_of(&b), "invalid content: is required", "{b}");

    // huge offset: 400 naming the bound; huge limit: clamped, answered
    let b = answered(
        "huge offset",
        400,
        api.get("/api/v1/memories?agent_id=nul&offset=1000000000000"),
    )
    .await;
    assert!(error_of(&b).contains("offset"), "{b}");
    let b = answered(
        "offset past i64",
        400,
        api.get("/api/v1/memories?agent_id=nul&offset=99999999999999999999999"),
    )
    .await;
    assert!(error_of(&b).contains("offset"), "{b}");
    let b = answered(
        "huge limit",
        200,
        api.get("/api/v1/memories?agent_id=nul&limit=1000000000000"),
    )
    .await;
    assert_eq!(b["memories"].as_array().unwrap().len(), 1, "{b}");

    // not JSON, whatever the content type says; JSON under another type is
    // parsed as the original server did
    for (ct, body) in [
        ("application/xml", "<memory><content>x</content></memory>"),
        (
            "application/x-www-form-urlencoded",
            "agent_id=form&content=x",
        ),
        ("application/json", ""),
        ("application/json", "\u{feff}{\"agent_id\":\"bom\"}"),
    ] {
        let b = answered(
            &format!("{ct} {body:?}"),
            400,
            api.raw("POST", post, &[("content-type", ct)], body.into()),
        )
        .await;
        assert!(error_of(&b).starts_with("invalid request body"), "{b}");
    }
    answered(
        "json as text/plain",
        201,
        api.raw(
            "POST",
            post,
            &[("content-type", "text/plain")],
            br#"{"agent_id":"plain","content":"typed as text"}"#.to_vec(),
        ),
    )
    .await;
    assert_eq!(contents(&api, "plain").await, vec!["typed as text"]);
    // nothing of the refused requests was stored
    for agent in ["deep", "utf", "form", "bom"] {
        assert!(contents(&api, agent).await.is_empty(), "{agent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_are_decoded_within_the_limit() {
    let (_c, worker, key, _dir) = start("hostile-encodings").await;
    let api = Api::new(&worker, Some(&key));
    let post = "/api/v1/memories";
    let memory = |content: &str| {
        serde_json::to_vec(&json!({"agent_id": "packed", "content": content})).unwrap()
    };

    answered(
        "gzip",
        201,
        api.raw(
            "POST",
            post,
            &[("content-encoding", "gzip")],
            gzip(&memory("sent as gzip")),
        ),
    )
    .await;
    answered(
        "zstd",
        201,
        api.raw(
            "POST",
            post,
            &[("content-encoding", "zstd")],
            zstd::encode_all(&memory("sent as zstd")[..], 1).unwrap(),
        ),
    )
    .await;
    let mut got = contents(&api, "packed").await;
    got.sort();
    assert_eq!(got, vec!["sent as gzip", "sent as zstd"]);

    // truncated: 400 naming the encoding
    let packed = gzip(&memory(&"a memory cut short ".repeat(100)));
    let b = answered(
        "truncated gzip",
        400,
        api.raw(
            "POST",
            post,
            &[("content-encoding", "gzip")],
            packed[..packed.len() / 2].to_vec(),
        ),
    )
    .await;
    assert!(error_of(&b).contains("gzip"), "{b}");
    // plain JSON labelled zstd
    let b = answered(
        "json labelled zstd",
        400,
        api.raw(
            "POST",
            post,
            &[("content-encoding", "zstd")],
            memory("not compressed"),
        ),
    )
    .await;
    assert!(error_of(&b).contains("zstd"), "{b}");
    // an encoding the worker does not decode: 415 naming the accepted ones
    let b = answered(
        "brotli",
        415,
        api.raw("POST", post, &[("content-encoding", "br")], vec![1, 2, 3]),
    )
    .await;
    assert!(error_of(&b).contains("gzip or zstd"), "{b}");

    // a bomb: 256 MiB of spaces in a few KB of zstd, refused at the 32 MiB
    // limit without the worker ever holding more than that
    let pid = worker.pid().unwrap();
    let spaces = std::io::Read::take(std::io::repeat(b' '), 256 << 20);
    let bomb = zstd::encode_all(spaces, 3).unwrap();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let before = peak_rss_kib(pid).unwrap();
    // a refusal before the body is read tells HTTP/1.1 clients not to reuse
    // the connection (its unread bytes make it unusable); an answer after
    // the body was read keeps it
    let http1 = reqwest::Client::builder().http1_only().build().unwrap();
    let connection = |r: &reqwest::Response| {
        r.headers()
            .get("connection")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let refused = http1
        .post(format!("{}{post}", worker.url()))
        .header("x-api-key", "mtk_not_a_real_key")
        .body(memory("never read"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(connection(&refused).as_deref(), Some("close"));
    let stored = http1
        .post(format!("{}{post}", worker.url()))
        .header("x-api-key", &key)
        .body(memory("read to the end"))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 201);
    assert_eq!(connection(&stored), None);
    // without a valid key nothing is read or decoded
    let stranger = Api::new(&worker, Some("mtk_not_a_real_key"));
    answered(
        "bomb without a key",
        401,
        stranger.raw("POST", post, &[("content-encoding", "zstd")], bomb.clone()),
    )
    .await;
    let b = answered(
        "bomb",
        413,
        api.raw("POST", post, &[("content-encoding", "zstd")], bomb),
    )
    .await;
    assert!(error_of(&b).contains("decodes"), "{b}");
    let grown_mib = (peak_rss_kib(pid).unwrap().saturating_sub(before)) / 1024;
    // the decoder stops at 32 MiB + 1 byte; the Vec may double once past it
    assert!(grown_mib < 160, "peak RSS grew by {grown_mib} MiB");
    assert_eq!(contents(&api, "packed").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_do_not_block_others() {
    let (_c, worker, key, _dir) = start("hostile-slow").await;
    let api = Api::new(&worker, Some(&key));
    let addr = worker.url().trim_start_matches("http://").to_owned();

    // a body trickled: headers promise 1,000 bytes, 10 arrive, then nothing
    let mut trickle = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/memories HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {key}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"agent_id"
    );
    trickle.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut reply = Vec::new();
    tokio::time::timeout(ANSWER_WITHIN, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&reply).contains("\r\n\r\n{") {
            match trickle.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the worker answers a trickled body");
    let waited = started.elapsed();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("server.read_timeout"), "{reply}");
    assert!(
        waited >= Duration::from_secs(READ_TIMEOUT_SECS - 1),
        "answered after {waited:?}"
    );

    // 300 connections stalled inside their headers
    let mut stalled = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            format!("GET /api/v1/memories?agent_id=s{i} HTTP/1.1\r\nhost: x\r\nx-api-").as_bytes(),
        )
        .await
        .unwrap();
        stalled.push(s);
    }
    // others are served at once meanwhile
    for n in 0..5 {
        answered(
            "a request beside stalled connections",
            201,
            api.post(
                "/api/v1/memories",
                json!({"agent_id": "patient", "content": format!("m{n}")}),
            ),
        )
        .await;
    }
    assert_eq!(contents(&api, "patient").await.len(), 5);
    // and the stalled connections are closed by the worker (its header
    // read timeout is 30 s), never answered with anything but an error
    let deadline = Duration::from_secs(45);
    let closed = tokio::time::timeout(deadline, async {
        for s in &mut stalled {
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        assert!(!text.starts_with("HTTP/1.1 2"), "{text}");
                    }
                }
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "stalled connections still open after {deadline:?}"
    );
    let (s, _) = api.get("/api/v1/memories?agent_id=patient").await;
    assert_eq!(s, 200);
}
