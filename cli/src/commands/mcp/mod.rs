//! `memtracectl mcp`: a Model Context Protocol server on stdio, so an agent
//! host (an MCP client) can give its model memtrace's memory: the seven
//! tools of the original `memtrace-mcp` ([`tools`]), each one call to a
//! worker's REST API ([`crate::worker`]) at `MEMTRACE_URL` with the API key of
//! `MEMTRACE_API_KEY`.
//!
//! Transport: newline-delimited JSON-RPC 2.0 on stdin/stdout ([`protocol`]);
//! stdout carries only protocol messages, notes go to stderr. Requests are
//! answered one at a time, in order. Errors: a message that is not JSON-RPC,
//! an unknown method or malformed params are JSON-RPC errors; a tool that
//! fails (bad arguments, the worker refusing or unreachable, no API key) is
//! a tool result with `isError: true` and the reason, for the model to read.

pub mod protocol;
pub mod tools;

use crate::args::GlobalArgs;
use crate::error::CliError;
use crate::worker::Worker;
use memtrace_common::config::Env;
use protocol::{INVALID_PARAMS, Incoming, Line, METHOD_NOT_FOUND, PARSE_ERROR};
use serde_json::{Map, Value, json};
use std::io::Write;
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tools::{CallError, Render};

/// The newest MCP revision spoken, answered when the client asks for one
/// this server does not know.
pub const LATEST_PROTOCOL_VERSION: &str = "2025-11-25";
/// Every revision spoken (the tools subset is the same in all of them).
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The original's guidance to the model.
const INSTRUCTIONS: &str = "Memtrace provides persistent memory for AI agents. Use these tools to \
    store, recall, and search memories. Memories are temporal — always specify time windows when \
    recalling.";

/// Runs the server until stdin ends. A missing key or a bad URL does not
/// stop it: tools are still listed, and each call answers with the error.
pub async fn run(global: &GlobalArgs, env: &Env, diag: &mut dyn Write) -> anyhow::Result<()> {
    let worker = Worker::from_env(env, global.timeout());
    match &worker {
        Ok(w) => writeln!(
            diag,
            "memtracectl mcp: MCP {LATEST_PROTOCOL_VERSION} on stdio, tools calling the worker at {}",
            w.base().trim_end_matches('/')
        )?,
        Err(e) => {
            write!(diag, "memtracectl mcp: warning: {e}; tool calls will fail")?;
            match e.hint() {
                Some(hint) => writeln!(diag, " ({hint})")?,
                None => writeln!(diag)?,
            }
        }
    }
    let server = Server::new(worker);
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    serve(&server, stdin, tokio::io::stdout()).await?;
    Ok(())
}

/// Reads messages from `input` until it ends and writes the answers to
/// `output`, one line each. A closed `output` (the client left) ends it too.
pub async fn serve<R, W>(server: &Server, mut input: R, mut output: W) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let reply = match protocol::read_line(&mut input, protocol::MAX_LINE_BYTES).await? {
            Line::Eof => return Ok(()),
            Line::TooLong => Some(protocol::error(
                &Value::Null,
                PARSE_ERROR,
                format!(
                    "parse error: message longer than {} MiB, skipped",
                    protocol::MAX_LINE_BYTES / (1024 * 1024)
                ),
            )),
            Line::Text(line) if line.iter().all(u8::is_ascii_whitespace) => None,
            Line::Text(line) => server.handle(&line).await,
        };
        if let Some(reply) = reply {
            let mut bytes = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            let written = match output.write_all(&bytes).await {
                Ok(()) => output.flush().await,
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// The MCP server: stateless between messages but for its worker client.
pub struct Server {
    worker: Result<Worker, CliError>,
}

impl Server {
    /// A server whose tools call `worker` (or answer with its error).
    pub fn new(worker: Result<Worker, CliError>) -> Self {
        Self { worker }
    }

    /// The answer to one message line; `None` for notifications and
    /// responses, which are never answered.
    pub async fn handle(&self, line: &[u8]) -> Option<Value> {
        match protocol::parse(line) {
            Incoming::Invalid(reply) => Some(reply),
            Incoming::Notification { .. } | Incoming::Response => None,
            Incoming::Request { id, method, params } => {
                Some(match self.request(&method, params).await {
                    Ok(result) => protocol::success(&id, result),
                    Err((code, message)) => protocol::error(&id, code, message),
                })
            }
        }
    }

    async fn request(&self, method: &str, params: Option<Value>) -> Result<Value, (i64, String)> {
        let params = protocol::params_object(params).map_err(|m| (INVALID_PARAMS, m))?;
        match method {
            "initialize" => initialize(&params),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({"tools": tools::definitions()})),
            "tools/call" => self.call_tool(&params).await,
            _ => Err((METHOD_NOT_FOUND, format!("method not found: {method}"))),
        }
    }

    async fn call_tool(&self, params: &Map<String, Value>) -> Result<Value, (i64, String)> {
        let invalid = |why: &str| (INVALID_PARAMS, format!("invalid params: {why}"));
        let name = match params.get("name") {
            Some(Value::String(name)) => name,
            Some(_) => return Err(invalid("name must be a string")),
            None => return Err(invalid("name is required (the tool to call)")),
        };
        let empty = Map::new();
        let args = match params.get("arguments") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(args)) => args,
            Some(_) => return Err(invalid("arguments must be an object")),
        };
        let prepared = match tools::prepare(name, args) {
            Ok(prepared) => prepared,
            Err(CallError::UnknownTool(name)) => {
                return Err(invalid(&format!(
                    "unknown tool {name}; tools/list names the tools"
                )));
            }
            Err(CallError::Arguments(why)) => {
                return Ok(tool_error(&CliError::new(format!("{name}: {why}"))));
            }
        };
        let worker = match &self.worker {
            Ok(worker) => worker,
            Err(e) => return Ok(tool_error(e)),
        };
        Ok(match worker.call(&prepared.request).await {
            Ok(answer) => tool_text(render(prepared.render, &answer), false),
            Err(e) => tool_error(&e),
        })
    }
}

/// The `initialize` result: the client's revision when it is one of ours,
/// else the newest.
fn initialize(params: &Map<String, Value>) -> Result<Value, (i64, String)> {
    let requested = match params.get("protocolVersion") {
        Some(Value::String(version)) => version.as_str(),
        Some(_) => {
            return Err((
                INVALID_PARAMS,
                "invalid params: protocolVersion must be a string".into(),
            ));
        }
        None => {
            return Err((
                INVALID_PARAMS,
                format!(
                    "invalid params: protocolVersion is required (e.g. \"{LATEST_PROTOCOL_VERSION}\")"
                ),
            ));
        }
    };
    let version = PROTOCOL_VERSIONS
        .into_iter()
        .find(|v| *v == requested)
        .unwrap_or(LATEST_PROTOCOL_VERSION);
    Ok(json!({
        "protocolVersion": version,
        "capabilities": {"tools": {}},
        "serverInfo": {
            "name": "memtrace",
            "title": "memtrace: memory for AI agents",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "instructions": INSTRUCTIONS,
    }))
}

fn render(how: Render, answer: &Value) -> String {
    if how == Render::Context
        && let Some(context) = answer.get("context").and_then(Value::as_str)
    {
        return context.to_owned();
    }
    serde_json::to_string_pretty(answer).unwrap_or_else(|_| answer.to_string())
}

fn tool_text(text: String, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

/// A failed tool call: the reason and, when known, what to do.
fn tool_error(err: &CliError) -> Value {
    let mut text = format!("error: {}", err.message());
    if let Some(hint) = err.hint() {
        text.push_str("\nhint: ");
        text.push_str(hint);
    }
    tool_text(text, true)
}

#[cfg(test)]
mod tests;
