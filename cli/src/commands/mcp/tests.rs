//! The server over in-memory stdio: framing, lifecycle, errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::time::Duration;

/// Feeds `input` to a server and returns the answers, one per line.
async fn exchange(server: &Server, input: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), serve(server, input, &mut out))
        .await
        .expect("the server ends with its input")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{text}");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("each answer is one JSON line"))
        .collect()
}

fn no_key() -> Server {
    Server::new(Worker::from_env(&Env::default(), Duration::from_secs(1)))
}

/// A server whose worker address refuses connections.
fn unreachable_worker() -> Server {
    // bind then drop: a loopback port nothing listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::from_pairs([
        (crate::worker::URL_ENV, format!("http://127.0.0.1:{port}")),
        (crate::worker::API_KEY_ENV, "mtk_s3cret".to_owned()),
    ]);
    Server::new(Worker::from_env(&env, Duration::from_secs(5)))
}

fn line(value: Value) -> String {
    format!("{value}\n")
}

#[tokio::test]
async fn lifecycle_without_a_key_lists_tools_and_fails_calls_as_tool_errors() {
    let input = [
        line(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                               "clientInfo": {"name": "t", "version": "1"}}})),
        line(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
        line(json!({"jsonrpc": "2.0", "id": 2, "method": "ping"})),
        line(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})),
        line(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                    "params": {"name": "memtrace_recall", "arguments": {"agent_id": "a"}}})),
    ]
    .concat();
    let answers = exchange(&no_key(), input.as_bytes()).await;
    assert_eq!(
        answers.len(),
        4,
        "the notification gets no answer: {answers:?}"
    );
    let init = &answers[0];
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["serverInfo"]["name"], "memtrace");
    assert_eq!(init["result"]["capabilities"], json!({"tools": {}}));
    assert!(
        init["result"]["instructions"]
            .as_str()
            .unwrap()
            .contains("time windows")
    );
    assert_eq!(answers[1], json!({"jsonrpc": "2.0", "id": 2, "result": {}}));
    assert_eq!(answers[2]["result"]["tools"].as_array().unwrap().len(), 7);
    let call = &answers[3]["result"];
    assert_eq!(call["isError"], true, "{call}");
    let text = call["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("error: MEMTRACE_API_KEY is not set\nhint: set MEMTRACE_API_KEY"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_revisions_get_the_latest() {
    let server = no_key();
    for (asked, answered) in [
        (json!("2099-01-01"), LATEST_PROTOCOL_VERSION),
        (json!("2025-11-25"), "2025-11-25"),
        (json!("2024-11-05"), "2024-11-05"),
    ] {
        let answers = exchange(
            &server,
            line(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                        "params": {"protocolVersion": asked}}))
            .as_bytes(),
        )
        .await;
        assert_eq!(answers[0]["result"]["protocolVersion"], answered);
    }
    let answers = exchange(
        &server,
        line(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})).as_bytes(),
    )
    .await;
    assert_eq!(answers[0]["error"]["code"], INVALID_PARAMS);
    assert!(
        answers[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("protocolVersion is required")
    );
}

#[tokio::test]
async fn protocol_errors_are_answered_and_the_server_goes_on() {
    let huge = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\",\"params\":{{\"x\":\"{}\"}}}}\n",
        "a".repeat(protocol::MAX_LINE_BYTES)
    );
    let input = [
        "{not json\n".to_owned(),
        "\n   \n".to_owned(),
        huge,
        line(json!({"jsonrpc": "2.0", "id": "u", "method": "resources/list"})),
        line(json!({"jsonrpc": "2.0", "method": "notifications/unknown"})),
        line(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {}})),
        line(json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
                    "params": {"name": "memtrace_nope"}})),
        line(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                    "params": {"name": "memtrace_recall", "arguments": [1]}})),
        line(json!({"jsonrpc": "2.0", "id": 8, "method": "ping", "params": [1]})),
        line(json!({"jsonrpc": "2.0", "id": 1, "result": {}})),
        line(json!({"jsonrpc": "2.0", "id": 10, "method": "ping"})),
    ]
    .concat();
    let answers = exchange(&no_key(), input.as_bytes()).await;
    let codes: Vec<(Value, Value)> = answers
        .iter()
        .map(|a| (a["id"].clone(), a["error"]["code"].clone()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (Value::Null, json!(PARSE_ERROR)),
            (Value::Null, json!(PARSE_ERROR)),
            (json!("u"), json!(METHOD_NOT_FOUND)),
            (json!(5), json!(INVALID_PARAMS)),
            (json!(6), json!(INVALID_PARAMS)),
            (json!(7), json!(INVALID_PARAMS)),
            (json!(8), json!(INVALID_PARAMS)),
            (json!(10), Value::Null),
        ],
        "{answers:?}"
    );
    assert!(
        answers[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than 4 MiB")
    );
    assert!(
        answers[4]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown tool memtrace_nope")
    );
    assert_eq!(answers[7]["result"], json!({}));
}

#[tokio::test]
async fn bad_arguments_and_an_unreachable_worker_are_tool_errors() {
    let server = unreachable_worker();
    let input = [
        line(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "memtrace_remember", "arguments": {"agent_id": "a"}}})),
        line(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "memtrace_agent_register", "arguments": {"name": "n"}}})),
    ]
    .concat();
    let answers = exchange(&server, input.as_bytes()).await;
    assert_eq!(answers.len(), 2);
    let bad = &answers[0]["result"];
    assert_eq!(bad["isError"], true);
    assert_eq!(
        bad["content"][0]["text"],
        "error: memtrace_remember: missing argument content: it is required"
    );
    let down = &answers[1]["result"];
    assert_eq!(down["isError"], true, "{down}");
    let text = down["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("error: cannot reach the worker at http://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("MEMTRACE_URL"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}
