//! The seven tools (the original `memtrace-mcp`'s names, parameters and
//! descriptions): their JSON Schemas for `tools/list`, the check of a call's
//! arguments against that schema (the one source of the rules), and the
//! worker request each call becomes.

use crate::worker::{Method, WorkerRequest};
use serde_json::{Map, Value, json};

/// The memory types the worker accepts.
const MEMORY_TYPES: [&str; 4] = ["episodic", "decision", "entity", "session"];
/// The largest page the worker serves.
const MAX_LIMIT: i64 = 1000;
/// `limit` when the call gives none (the original's).
const DEFAULT_LIMIT: i64 = 50;
/// `since` of a recall when the call gives none (the original's).
const DEFAULT_RECALL_SINCE: &str = "24h";

/// How a worker answer becomes the tool's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// The whole answer, pretty-printed JSON.
    Json,
    /// The `context` field (markdown ready for a prompt).
    Context,
}

/// A validated call: the request to send and how to show the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub request: WorkerRequest,
    pub render: Render,
}

fn string(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "description": description})
}

fn memory_type(description: &str) -> Value {
    json!({"type": "string", "enum": MEMORY_TYPES, "description": description})
}

fn memory_types(description: &str) -> Value {
    json!({"type": "array", "items": {"type": "string", "enum": MEMORY_TYPES}, "description": description})
}

fn strings(description: &str) -> Value {
    json!({"type": "array", "items": {"type": "string", "minLength": 1}, "description": description})
}

fn object(description: &str) -> Value {
    json!({"type": "object", "description": description})
}

fn fraction(description: &str) -> Value {
    json!({"type": "number", "minimum": 0.0, "maximum": 1.0, "description": description})
}

fn limit() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
           "description": format!("Max results. Default: {DEFAULT_LIMIT}")})
}

fn schema(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required,
           "additionalProperties": false})
}

/// Every tool: name, title, description, input schema, annotations.
pub fn definitions() -> Vec<Value> {
    let read_only = json!({"readOnlyHint": true, "openWorldHint": false});
    let writes = json!({"readOnlyHint": false, "destructiveHint": false, "idempotentHint": false,
                        "openWorldHint": false});
    let tool = |name: &str, title: &str, description: &str, input: Value, annotations: &Value| {
        json!({"name": name, "title": title, "description": description, "inputSchema": input,
               "annotations": annotations})
    };
    vec![
        tool(
            "memtrace_remember",
            "Remember",
            "Store a memory. Use this to record actions, observations, events, or any information the agent should remember later.",
            schema(
                json!({
                    "agent_id": string("Agent ID"),
                    "content": string("Memory content text"),
                    "memory_type": memory_type("Memory type: episodic (default), decision, entity, session"),
                    "event_type": string("Event type (e.g. page_crawled, error, api_call). Default: general"),
                    "session_id": string("Session ID to scope this memory to"),
                    "tags": strings("Tags for categorization"),
                    "importance": fraction("Importance score 0.0 to 1.0"),
                    "metadata": object("Arbitrary key-value metadata"),
                }),
                &["agent_id", "content"],
            ),
            &writes,
        ),
        tool(
            "memtrace_recall",
            "Recall",
            "Retrieve recent memories for an agent. Returns memories in reverse chronological order.",
            schema(
                json!({
                    "agent_id": string("Agent ID"),
                    "since": string("Time window (e.g. 2h, 24h, 7d). Default: 24h"),
                    "session_id": string("Filter by session ID"),
                    "memory_type": memory_type("Filter by memory type"),
                    "limit": limit(),
                }),
                &["agent_id"],
            ),
            &read_only,
        ),
        tool(
            "memtrace_search",
            "Search memories",
            "Search memories with structured filters: by content text, memory types, tags, importance, and time range.",
            schema(
                json!({
                    "agent_id": string("Filter by agent ID"),
                    "content_contains": string("Search text within memory content"),
                    "memory_types": memory_types("Filter by memory types (episodic, decision, entity, session)"),
                    "tags": strings("Filter by tags"),
                    "since": string("Time window (e.g. 2h, 24h)"),
                    "min_importance": fraction("Minimum importance score 0.0 to 1.0"),
                    "limit": limit(),
                }),
                &[],
            ),
            &read_only,
        ),
        tool(
            "memtrace_decide",
            "Log a decision",
            "Log a decision with reasoning. Creates an auditable record of what was decided and why.",
            schema(
                json!({
                    "agent_id": string("Agent ID"),
                    "decision": string("The decision that was made"),
                    "reasoning": string("Why this decision was made"),
                }),
                &["agent_id", "decision", "reasoning"],
            ),
            &writes,
        ),
        tool(
            "memtrace_session_create",
            "Start a session",
            "Start a new session — a bounded context for a unit of work. Memories can be scoped to sessions.",
            schema(
                json!({
                    "agent_id": string("Agent ID that owns this session"),
                    "metadata": object("Session metadata (e.g. goal, context)"),
                }),
                &["agent_id"],
            ),
            &writes,
        ),
        tool(
            "memtrace_session_context",
            "Session context",
            "Get LLM-ready session context as formatted markdown. Returns all memories for a session grouped by type, ready to inject into a prompt.",
            schema(
                json!({
                    "session_id": string("Session ID"),
                    "since": string("Time window (e.g. 4h). Default: 24h"),
                    "include_types": memory_types("Memory types to include (episodic, decision, entity, session)"),
                    "max_tokens": {"type": "integer", "minimum": 1,
                                   "description": "Approximate max token budget for context"},
                }),
                &["session_id"],
            ),
            &read_only,
        ),
        tool(
            "memtrace_agent_register",
            "Register an agent",
            "Register a new agent. Required before storing memories for that agent.",
            schema(
                json!({
                    "name": string("Agent name (used as the agent ID)"),
                    "description": string("What this agent does"),
                }),
                &["name"],
            ),
            &writes,
        ),
    ]
}

/// The input schema of tool `name`, if there is such a tool.
fn input_schema(name: &str) -> Option<Value> {
    definitions()
        .into_iter()
        .find(|tool| tool["name"] == name)
        .map(|mut tool| tool["inputSchema"].take())
}

/// Checks `args` against `schema` (the subset of JSON Schema the
/// definitions use); the error names the argument and the rule.
fn check(schema: &Value, args: &Map<String, Value>) -> Result<(), String> {
    let properties = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let known = || properties.keys().cloned().collect::<Vec<_>>().join(", ");
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        if args.get(name).is_none_or(Value::is_null) {
            return Err(format!("missing argument {name}: it is required"));
        }
    }
    for (name, value) in args {
        let Some(rule) = properties.get(name) else {
            return Err(format!(
                "unknown argument {name}: the arguments are {}",
                known()
            ));
        };
        if !value.is_null() {
            check_value(name, rule, value)?;
        }
    }
    Ok(())
}

fn check_value(name: &str, rule: &Value, value: &Value) -> Result<(), String> {
    let fail = |why: String| Err(format!("invalid argument {name}: {why}"));
    match rule["type"].as_str().unwrap_or_default() {
        "string" => {
            let Some(text) = value.as_str() else {
                return fail("must be a string".into());
            };
            if rule["minLength"].as_u64().is_some_and(|min| min > 0) && text.trim().is_empty() {
                return fail("must not be empty".into());
            }
            if let Some(allowed) = rule["enum"].as_array()
                && !allowed.iter().any(|a| a == value)
            {
                return fail(format!("must be one of {}", list(allowed)));
            }
        }
        "number" | "integer" => {
            let integer = rule["type"] == "integer";
            let number = if integer {
                value.as_i64().map(|n| n as f64)
            } else {
                value.as_f64()
            };
            let Some(number) = number else {
                return fail(format!(
                    "must be {}",
                    if integer { "an integer" } else { "a number" }
                ));
            };
            let min = rule["minimum"].as_f64();
            let max = rule["maximum"].as_f64();
            if min.is_some_and(|min| number < min) || max.is_some_and(|max| number > max) {
                return fail(match (min, max) {
                    (Some(min), Some(max)) => format!("must be from {min} to {max}"),
                    (Some(min), None) => format!("must be at least {min}"),
                    _ => format!("must be at most {}", max.unwrap_or_default()),
                });
            }
        }
        "array" => {
            let Some(items) = value.as_array() else {
                return fail("must be an array of strings".into());
            };
            for (i, item) in items.iter().enumerate() {
                check_value(&format!("{name}[{i}]"), &rule["items"], item)?;
            }
        }
        "object" if !value.is_object() => return fail("must be an object".into()),
        _ => {}
    }
    Ok(())
}

fn list(values: &[Value]) -> String {
    values
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a call cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No tool has this name (a protocol error).
    UnknownTool(String),
    /// The arguments break the tool's schema (a tool error, for the model
    /// to correct).
    Arguments(String),
}

/// Validates a call of tool `name` and builds its worker request.
pub fn prepare(name: &str, args: &Map<String, Value>) -> Result<Prepared, CallError> {
    let schema = input_schema(name).ok_or_else(|| CallError::UnknownTool(name.to_owned()))?;
    check(&schema, args).map_err(CallError::Arguments)?;
    // nulls mean absent
    let mut args: Map<String, Value> = args
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let text = |args: &Map<String, Value>, key: &str| {
        args.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let post = |segments: &[&str], body: Value| WorkerRequest {
        method: Method::Post,
        segments: segments.iter().map(|s| (*s).to_owned()).collect(),
        query: Vec::new(),
        body: Some(body),
    };
    let json_of = |request| Prepared {
        request,
        render: Render::Json,
    };
    Ok(match name {
        "memtrace_remember" => {
            args.entry("memory_type")
                .or_insert_with(|| json!("episodic"));
            args.entry("event_type").or_insert_with(|| json!("general"));
            json_of(post(&["memories"], Value::Object(args)))
        }
        "memtrace_recall" => {
            let mut query = vec![
                ("agent_id".to_owned(), text(&args, "agent_id")),
                (
                    "since".to_owned(),
                    args.get("since")
                        .and_then(Value::as_str)
                        .unwrap_or(DEFAULT_RECALL_SINCE)
                        .to_owned(),
                ),
            ];
            for key in ["session_id", "memory_type"] {
                if args.contains_key(key) {
                    query.push((key.to_owned(), text(&args, key)));
                }
            }
            let limit = args
                .get("limit")
                .and_then(Value::as_i64)
                .unwrap_or(DEFAULT_LIMIT);
            query.push(("limit".to_owned(), limit.to_string()));
            query.push(("order".to_owned(), "desc".to_owned()));
            json_of(WorkerRequest {
                method: Method::Get,
                segments: vec!["memories".to_owned()],
                query,
                body: None,
            })
        }
        "memtrace_search" => {
            args.entry("limit").or_insert_with(|| json!(DEFAULT_LIMIT));
            args.insert("order".to_owned(), json!("desc"));
            json_of(post(&["search"], Value::Object(args)))
        }
        "memtrace_decide" => json_of(post(
            &["memories"],
            json!({
                "agent_id": text(&args, "agent_id"),
                "content": text(&args, "decision"),
                "memory_type": "decision",
                "event_type": "decision",
                "metadata": {"reasoning": text(&args, "reasoning")},
            }),
        )),
        "memtrace_session_create" => json_of(post(&["sessions"], Value::Object(args))),
        "memtrace_session_context" => {
            let session = text(&args, "session_id");
            args.remove("session_id");
            Prepared {
                request: post(&["sessions", &session, "context"], Value::Object(args)),
                render: Render::Context,
            }
        }
        "memtrace_agent_register" => json_of(post(&["agents"], Value::Object(args))),
        other => return Err(CallError::UnknownTool(other.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn refused(name: &str, value: Value) -> String {
        match prepare(name, &args(value)) {
            Err(CallError::Arguments(why)) => why,
            other => panic!("expected an argument error, got {other:?}"),
        }
    }

    #[test]
    fn seven_tools_each_with_an_object_schema() {
        let tools = definitions();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "memtrace_remember",
                "memtrace_recall",
                "memtrace_search",
                "memtrace_decide",
                "memtrace_session_create",
                "memtrace_session_context",
                "memtrace_agent_register"
            ]
        );
        for tool in &tools {
            let schema = &tool["inputSchema"];
            assert_eq!(schema["type"], "object", "{tool}");
            assert!(!tool["description"].as_str().unwrap().is_empty());
            for required in schema["required"].as_array().unwrap() {
                assert!(
                    schema["properties"]
                        .get(required.as_str().unwrap())
                        .is_some(),
                    "{tool}: required {required} is a property"
                );
            }
        }
    }

    #[test]
    fn arguments_are_checked_naming_the_argument_and_the_rule() {
        assert_eq!(
            refused("memtrace_remember", json!({"agent_id": "a"})),
            "missing argument content: it is required"
        );
        assert_eq!(
            refused("memtrace_remember", json!({"agent_id": "a", "content": 5})),
            "invalid argument content: must be a string"
        );
        assert_eq!(
            refused(
                "memtrace_remember",
                json!({"agent_id": " ", "content": "x"})
            ),
            "invalid argument agent_id: must not be empty"
        );
        assert_eq!(
            refused(
                "memtrace_remember",
                json!({"agent_id": "a", "content": "x", "memory_type": "fact"})
            ),
            "invalid argument memory_type: must be one of episodic, decision, entity, session"
        );
        assert_eq!(
            refused(
                "memtrace_remember",
                json!({"agent_id": "a", "content": "x", "importance": 2})
            ),
            "invalid argument importance: must be from 0 to 1"
        );
        assert_eq!(
            refused(
                "memtrace_remember",
                json!({"agent_id": "a", "content": "x", "tags": ["ok", 3]})
            ),
            "invalid argument tags[1]: must be a string"
        );
        assert_eq!(
            refused("memtrace_recall", json!({"agent_id": "a", "limit": 0})),
            "invalid argument limit: must be from 1 to 1000"
        );
        assert_eq!(
            refused("memtrace_recall", json!({"agent_id": "a", "limit": 2.5})),
            "invalid argument limit: must be an integer"
        );
        assert_eq!(
            refused(
                "memtrace_session_create",
                json!({"agent_id": "a", "metadata": []})
            ),
            "invalid argument metadata: must be an object"
        );
        assert!(
            refused(
                "memtrace_decide",
                json!({"agent_id": "a", "decision": "d", "reasoning": "r", "why": 1})
            )
            .starts_with("unknown argument why: the arguments are ")
        );
        assert_eq!(
            prepare("memtrace_nope", &Map::new()),
            Err(CallError::UnknownTool("memtrace_nope".into()))
        );
    }

    #[test]
    fn calls_become_the_original_requests() {
        let remember = prepare(
            "memtrace_remember",
            &args(json!({"agent_id": "a", "content": "c", "session_id": null})),
        )
        .unwrap();
        assert_eq!(remember.request.method, Method::Post);
        assert_eq!(remember.request.segments, ["memories"]);
        assert_eq!(
            remember.request.body.unwrap(),
            json!({"agent_id": "a", "content": "c", "memory_type": "episodic", "event_type": "general"})
        );

        let recall = prepare("memtrace_recall", &args(json!({"agent_id": "a"}))).unwrap();
        assert_eq!(recall.request.method, Method::Get);
        let query: Vec<(&str, &str)> = recall
            .request
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            query,
            [
                ("agent_id", "a"),
                ("since", "24h"),
                ("limit", "50"),
                ("order", "desc")
            ]
        );

        let search = prepare("memtrace_search", &args(json!({"tags": ["t"]}))).unwrap();
        assert_eq!(
            search.request.body.unwrap(),
            json!({"tags": ["t"], "limit": 50, "order": "desc"})
        );

        let decide = prepare(
            "memtrace_decide",
            &args(json!({"agent_id": "a", "decision": "ship", "reasoning": "green"})),
        )
        .unwrap();
        let body = decide.request.body.unwrap();
        assert_eq!(body["memory_type"], "decision");
        assert_eq!(body["content"], "ship");
        assert_eq!(body["metadata"]["reasoning"], "green");

        let context = prepare(
            "memtrace_session_context",
            &args(json!({"session_id": "sess/1", "max_tokens": 100})),
        )
        .unwrap();
        assert_eq!(context.render, Render::Context);
        assert_eq!(context.request.segments, ["sessions", "sess/1", "context"]);
        assert_eq!(context.request.body.unwrap(), json!({"max_tokens": 100}));
    }
}
