//! `memtracectl mcp` end to end: the test, as an MCP client, starts the real
//! binary and speaks to it over stdio (newline-delimited JSON-RPC), against a
//! real `memtrace-worker`
//! on its embedded store, with an org and API key made by `memtracectl`.
//! The lifecycle (initialize, the initialized notification, ping), the seven
//! tools listed with their schemas and each called, what a write stores is
//! what recall, search and the session context read back; a refused key is a
//! tool result carrying the worker's message (not a protocol error), a
//! missing key is a tool result with a hint, and an unknown method is -32601.
//! An `https://` worker is reached trusting the CA of `MEMTRACE_CA_FILE`.
//! Every wait is bounded; the key never reaches the server's stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::cluster::Cluster;
use memtrace_tests::pki::TestPki;
use memtrace_tests::process::isolated_command;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

const PREFIX: &str = "/memtrace-mcp/v1/";
/// One answer (a tool call is one worker request on loopback).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// An MCP client speaking to one `memtracectl mcp` process.
struct Mcp {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: i64,
}

impl Mcp {
    /// Starts `memtracectl mcp` with only `env` (and PATH, HOME).
    fn spawn(dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = isolated_command("memtracectl", dir).unwrap();
        command
            .arg("mcp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            stdout,
            next_id: 0,
        }
    }

    async fn send(&mut self, message: &Value) {
        let line = format!("{message}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The next message the server writes (one JSON line).
    async fn receive(&mut self) -> Value {
        let line = tokio::time::timeout(ANSWER_WITHIN, self.stdout.next_line())
            .await
            .expect("an answer within 30s")
            .unwrap()
            .expect("the server is still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Sends a request and returns the whole response (its id checked).
    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let response = self.receive().await;
        assert_eq!(response["jsonrpc"], "2.0", "{response}");
        assert_eq!(response["id"], id, "answers come in order: {response}");
        response
    }

    async fn notify(&mut self, method: &str) {
        self.send(&json!({"jsonrpc": "2.0", "method": method}))
            .await;
    }

    /// `tools/call`: the result (a protocol error fails the test).
    async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let response = self
            .request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await;
        assert!(response.get("error").is_none(), "{tool}: {response}");
        let result = response["result"].clone();
        assert_eq!(result["content"][0]["type"], "text", "{tool}: {result}");
        result
    }

    /// A call that must succeed: its text.
    async fn ok(&mut self, tool: &str, arguments: Value) -> String {
        let result = self.call(tool, arguments).await;
        assert_eq!(result["isError"], false, "{tool}: {result}");
        result["content"][0]["text"].as_str().unwrap().to_owned()
    }

    /// A call that must succeed with a JSON text: the document.
    async fn ok_json(&mut self, tool: &str, arguments: Value) -> Value {
        let text = self.ok(tool, arguments).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{tool}: not JSON ({e}): {text}"))
    }

    async fn initialize(&mut self) -> Value {
        let init = self
            .request(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "memtrace-tests", "version": "0"}}),
            )
            .await;
        self.notify("notifications/initialized").await;
        init
    }

    /// Closes stdin; the server must exit 0 within 15 s. Returns its stderr.
    async fn finish(mut self) -> String {
        drop(self.stdin);
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the server exits when its input ends")
            .unwrap();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).await.unwrap();
        }
        assert!(status.success(), "{status}: {stderr}");
        // nothing after the last answer
        let rest = tokio::time::timeout(Duration::from_secs(5), self.stdout.next_line())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest, None, "nothing unasked-for on stdout");
        stderr
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seven_tools_against_a_real_worker() {
    let c = Cluster::start(PREFIX).await.unwrap();
    let org = c.org("mcp").await.unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let embedded = tempfile::tempdir().unwrap();
    let worker = c
        .worker(
            "mcp",
            &[(
                "MEMTRACE_WORKER_EMBEDDED_DIR",
                embedded.path().to_str().unwrap(),
            )],
        )
        .await
        .unwrap();
    let url = worker.url();
    let home = tempfile::tempdir().unwrap();
    let mut mcp = Mcp::spawn(
        home.path(),
        &[("MEMTRACE_URL", &url), ("MEMTRACE_API_KEY", &key)],
    );

    // lifecycle: the notification is not answered (the ping's answer is next)
    let init = mcp.initialize().await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "memtrace", "{init}");
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    let ping = mcp.request("ping", json!({})).await;
    assert_eq!(ping["result"], json!({}), "{ping}");

    let listed = mcp.request("tools/list", json!({})).await;
    let tools = listed["result"]["tools"].as_array().unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "memtrace_agent_register",
            "memtrace_decide",
            "memtrace_recall",
            "memtrace_remember",
            "memtrace_search",
            "memtrace_session_context",
            "memtrace_session_create",
        ]
    );
    for tool in tools {
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
        assert!(tool["inputSchema"]["properties"].is_object(), "{tool}");
        assert!(!tool["description"].as_str().unwrap().is_empty(), "{tool}");
    }

    // register, open a session, remember in it, decide
    let agent = mcp
        .ok_json(
            "memtrace_agent_register",
            json!({"name": "deployer", "description": "ships builds"}),
        )
        .await;
    assert_eq!(agent["name"], "deployer", "{agent}");
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    assert!(agent_id.starts_with("agent_"), "{agent}");
    let session = mcp
        .ok_json(
            "memtrace_session_create",
            json!({"agent_id": agent_id, "metadata": {"goal": "release 42"}}),
        )
        .await;
    let session_id = session["id"].as_str().unwrap().to_owned();
    assert!(session_id.starts_with("sess_"), "{session}");
    assert_eq!(session["agent_id"], agent_id.as_str(), "{session}");
    assert_eq!(session["metadata"]["goal"], "release 42", "{session}");

    let remembered = mcp
        .ok_json(
            "memtrace_remember",
            json!({"agent_id": agent_id, "content": "build 42 deployed to staging",
                   "session_id": session_id, "event_type": "deploy", "tags": ["release"],
                   "importance": 0.8}),
        )
        .await;
    assert_eq!(remembered["memory_type"], "episodic", "{remembered}");
    assert_eq!(
        remembered["session_id"],
        session_id.as_str(),
        "{remembered}"
    );
    assert_eq!(remembered["tags"], json!(["release"]), "{remembered}");
    let decided = mcp
        .ok_json(
            "memtrace_decide",
            json!({"agent_id": agent_id, "decision": "promote build 42 to production",
                   "reasoning": "staging has been green for an hour"}),
        )
        .await;
    assert_eq!(decided["memory_type"], "decision", "{decided}");
    assert_eq!(decided["event_type"], "decision", "{decided}");
    assert_eq!(
        decided["metadata"]["reasoning"], "staging has been green for an hour",
        "{decided}"
    );

    // recall: both, newest first
    let recalled = mcp
        .ok_json(
            "memtrace_recall",
            json!({"agent_id": agent_id, "since": "1h"}),
        )
        .await;
    let contents: Vec<&str> = recalled["memories"]
        .as_array()
        .unwrap_or_else(|| panic!("{recalled}"))
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "promote build 42 to production",
            "build 42 deployed to staging"
        ],
        "{recalled}"
    );
    let only_in_session = mcp
        .ok_json(
            "memtrace_recall",
            json!({"agent_id": agent_id, "session_id": session_id}),
        )
        .await;
    assert_eq!(only_in_session["count"], 1, "{only_in_session}");

    // search by text, by type, by tag and importance
    let found = mcp
        .ok_json(
            "memtrace_search",
            json!({"agent_id": agent_id, "content_contains": "build 42", "since": "1h"}),
        )
        .await;
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "both mention build 42: {found}");
    let decisions = mcp
        .ok_json(
            "memtrace_search",
            json!({"agent_id": agent_id, "memory_types": ["decision"]}),
        )
        .await;
    assert_eq!(
        decisions["results"].as_array().unwrap().len(),
        1,
        "{decisions}"
    );
    assert_eq!(
        decisions["results"][0]["content"], "promote build 42 to production",
        "{decisions}"
    );
    let tagged = mcp
        .ok_json(
            "memtrace_search",
            json!({"tags": ["release"], "min_importance": 0.5}),
        )
        .await;
    assert_eq!(tagged["results"].as_array().unwrap().len(), 1, "{tagged}");
    let none = mcp
        .ok_json("memtrace_search", json!({"content_contains": "rollback"}))
        .await;
    assert_eq!(none["results"], json!([]), "{none}");

    // the session's context is the markdown itself
    let context = mcp
        .ok(
            "memtrace_session_context",
            json!({"session_id": session_id, "since": "1h"}),
        )
        .await;
    assert!(
        context.starts_with(&format!("## Session Context ({session_id})")),
        "{context}"
    );
    assert!(
        context.contains("deploy: build 42 deployed to staging"),
        "{context}"
    );
    assert!(
        !context.contains("promote"),
        "not in the session: {context}"
    );

    // the worker refusing is a tool error carrying its status and message
    let unknown = mcp
        .call(
            "memtrace_session_context",
            json!({"session_id": "sess_missing"}),
        )
        .await;
    assert_eq!(unknown["isError"], true, "{unknown}");
    let text = unknown["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("error: the worker answered 404: "),
        "{text}"
    );
    // bad arguments are a tool error naming the argument and the rule
    let bad = mcp
        .call(
            "memtrace_recall",
            json!({"agent_id": agent_id, "limit": 5000}),
        )
        .await;
    assert_eq!(bad["isError"], true, "{bad}");
    assert_eq!(
        bad["content"][0]["text"],
        "error: memtrace_recall: invalid argument limit: must be from 1 to 1000"
    );
    // an unknown method is a protocol error
    let unknown_method = mcp.request("prompts/list", json!({})).await;
    assert_eq!(unknown_method["error"]["code"], -32601, "{unknown_method}");

    let stderr = mcp.finish().await;
    assert!(!stderr.contains(&key), "the key is never printed: {stderr}");
    assert!(stderr.contains(&url), "stderr names the worker: {stderr}");

    // a key the worker refuses: a tool result with its message
    let mut wrong = Mcp::spawn(
        home.path(),
        &[
            ("MEMTRACE_URL", &url),
            ("MEMTRACE_API_KEY", "mtk_not_a_real_key_0123456789"),
        ],
    );
    wrong.initialize().await;
    let refused = wrong
        .call("memtrace_recall", json!({"agent_id": agent_id}))
        .await;
    assert_eq!(refused["isError"], true, "{refused}");
    let text = refused["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "error: the worker answered 401: invalid API key\nhint: check MEMTRACE_API_KEY"
        ),
        "{text}"
    );
    let stderr = wrong.finish().await;
    assert!(!stderr.contains("mtk_not_a_real_key"), "{stderr}");

    // no key: the server starts, lists its tools, and each call says why not
    let mut keyless = Mcp::spawn(home.path(), &[("MEMTRACE_URL", &url)]);
    keyless.initialize().await;
    let listed = keyless.request("tools/list", json!({})).await;
    assert_eq!(listed["result"]["tools"].as_array().unwrap().len(), 7);
    let refused = keyless
        .call("memtrace_search", json!({"content_contains": "build"}))
        .await;
    assert_eq!(refused["isError"], true, "{refused}");
    let text = refused["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("error: MEMTRACE_API_KEY is not set\nhint: set MEMTRACE_API_KEY"),
        "{text}"
    );
    let stderr = keyless.finish().await;
    assert!(stderr.contains("MEMTRACE_API_KEY is not set"), "{stderr}");
}

/// An `https://` worker: trusted through `MEMTRACE_CA_FILE`; without it the
/// test CA is unknown to the system, and the call says which variable fixes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_worker_through_its_ca_file() {
    let c = Cluster::start(PREFIX).await.unwrap();
    let org = c.org("mcp-https").await.unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let pki = TestPki::create(c.dir.path(), "client").unwrap();
    let embedded = tempfile::tempdir().unwrap();
    let worker = c
        .worker_with_tls(
            "mcp-https",
            Some(&pki.served()),
            &[(
                "MEMTRACE_WORKER_EMBEDDED_DIR",
                embedded.path().to_str().unwrap(),
            )],
        )
        .await
        .unwrap();
    let url = worker.url();
    assert!(url.starts_with("https://"), "{url}");
    let home = tempfile::tempdir().unwrap();

    let ca = pki.ca.to_str().unwrap();
    let mut trusted = Mcp::spawn(
        home.path(),
        &[
            ("MEMTRACE_URL", &url),
            ("MEMTRACE_API_KEY", &key),
            ("MEMTRACE_CA_FILE", ca),
        ],
    );
    trusted.initialize().await;
    let agent = trusted
        .ok_json("memtrace_agent_register", json!({"name": "over-tls"}))
        .await;
    assert_eq!(agent["name"], "over-tls", "{agent}");
    let remembered = trusted
        .ok_json(
            "memtrace_remember",
            json!({"agent_id": "over-tls", "content": "sent over https"}),
        )
        .await;
    assert_eq!(remembered["content"], "sent over https", "{remembered}");
    trusted.finish().await;

    let mut untrusted = Mcp::spawn(
        home.path(),
        &[("MEMTRACE_URL", &url), ("MEMTRACE_API_KEY", &key)],
    );
    untrusted.initialize().await;
    let refused = untrusted
        .call("memtrace_recall", json!({"agent_id": "over-tls"}))
        .await;
    assert_eq!(refused["isError"], true, "{refused}");
    let text = refused["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("error: cannot reach the worker at {url}")),
        "{text}"
    );
    assert!(
        text.contains("hint: the worker's certificate is not trusted: set MEMTRACE_CA_FILE"),
        "{text}"
    );
    untrusted.finish().await;
}
