//! The measured reads: each [`Case`] is one worker route and, beside it,
//! the plain query a user would send straight to the store for the same
//! filters and limit (`POST /api/v1/query`, no header, `db.measurement`).
//! Both sides get the same pick (agent, session, topic word, tag) on each
//! turn, alternating which goes first, one request at a time. Every answer
//! is reduced to what the other side must match (ids in order, a count, or
//! counts by memory type) and a difference is reported as a mismatch: the
//! plain query is checked to be the equivalent, not assumed to be.

use super::dataset::{Dataset, TAGS, TOPICS, mix, tag, topic};
use memtrace_tests::arc::{Stats, rfc3339_nano};
use memtrace_tests::bench::{ArcUnderTest, json_reply};
use memtrace_tests::load::{Bounds, Latencies, Sampler};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    List,
    Recall,
    SearchContent,
    SearchTags,
    SessionMemories,
    SessionContext,
    AgentStats,
}

impl Case {
    pub const ALL: [Case; 7] = [
        Case::List,
        Case::Recall,
        Case::SearchContent,
        Case::SearchTags,
        Case::SessionMemories,
        Case::SessionContext,
        Case::AgentStats,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Case::List => "list by agent (limit 20)",
            Case::Recall => "recall (24h, desc, limit 100)",
            Case::SearchContent => "search content_contains",
            Case::SearchTags => "search tags + agent",
            Case::SessionMemories => "session memories (limit 20)",
            Case::SessionContext => "session context",
            Case::AgentStats => "agent stats",
        }
    }
}

/// What both sides are asked about on one turn.
struct Pick {
    agent: String,
    session: String,
    topic: String,
    tag: String,
}

/// An answer reduced to what the other side must match.
#[derive(Debug, PartialEq)]
enum Answer {
    Ids(Vec<String>),
    Count(u64),
    Counts(BTreeMap<String, u64>),
}

/// One side's figures.
#[derive(Debug, Default)]
pub struct Side {
    pub lat: Latencies,
    /// Stand-in counters summed over this side's requests.
    pub statements: u64,
    pub rows_scanned: u64,
    pub modelled: Duration,
    pub engine: Duration,
    pub engine_bound: u64,
}

impl Side {
    fn add(&mut self, before: &Option<Stats>, after: &Option<Stats>) {
        if let (Some(b), Some(a)) = (before, after) {
            self.statements += a.statements - b.statements;
            self.rows_scanned += a.rows_scanned - b.rows_scanned;
            self.modelled += a.modelled_query_time - b.modelled_query_time;
            self.engine += a.engine_query_time - b.engine_query_time;
            self.engine_bound += a.engine_bound_statements - b.engine_bound_statements;
        }
    }
}

pub struct Outcome {
    pub case: Case,
    pub worker: Side,
    pub direct: Side,
    /// Failed requests and mismatches, described (the first few).
    pub problems: Vec<String>,
    pub problem_count: u64,
}

/// What the measurement needs to reach both sides.
pub struct Ctx<'a> {
    pub http: reqwest::Client,
    pub worker: String,
    pub key: String,
    pub arc: &'a ArcUnderTest,
    /// `<database>.<measurement>`.
    pub table: String,
    pub org: String,
    pub data: &'a Dataset,
}

impl Ctx<'_> {
    fn pick(&self, turn: u64) -> Pick {
        let h = mix(0x5eed ^ turn);
        let a = (h % self.data.agents.len() as u64) as usize;
        let sessions = &self.data.sessions[a];
        Pick {
            agent: self.data.agents[a].clone(),
            session: sessions[((h >> 20) % sessions.len() as u64) as usize].clone(),
            topic: topic((h >> 32) % TOPICS),
            tag: tag((h >> 48) % TAGS),
        }
    }

    /// The worker's answer to `case` for `p`.
    async fn worker(&self, case: Case, p: &Pick) -> anyhow::Result<Answer> {
        let base = &self.worker;
        let req = match case {
            Case::List => self.http.get(format!(
                "{base}/api/v1/memories?agent_id={}&limit=20",
                p.agent
            )),
            Case::Recall => self.http.get(format!(
                "{base}/api/v1/memories?agent_id={}&since=24h&order=desc&limit=100",
                p.agent
            )),
            Case::SearchContent => self
                .http
                .post(format!("{base}/api/v1/search"))
                .json(&json!({"content_contains": p.topic, "limit": 20})),
            Case::SearchTags => self
                .http
                .post(format!("{base}/api/v1/search"))
                .json(&json!({"agent_id": p.agent, "tags": [p.tag], "limit": 20})),
            Case::SessionMemories => self.http.get(format!(
                "{base}/api/v1/sessions/{}/memories?limit=20",
                p.session
            )),
            Case::SessionContext => self
                .http
                .post(format!("{base}/api/v1/sessions/{}/context", p.session))
                .json(&json!({})),
            Case::AgentStats => self
                .http
                .get(format!("{base}/api/v1/agents/{}/stats", p.agent)),
        };
        let (status, body) = json_reply(req.header("x-api-key", &self.key).send().await?).await?;
        anyhow::ensure!(status == 200, "worker answered {status}: {body}");
        let ids = |list: &str| {
            let ids = body[list].as_array().map_or(Vec::new(), |items| {
                items
                    .iter()
                    .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
                    .collect()
            });
            Answer::Ids(ids)
        };
        Ok(match case {
            Case::List | Case::Recall | Case::SessionMemories => ids("memories"),
            Case::SearchContent | Case::SearchTags => ids("results"),
            Case::SessionContext => Answer::Count(body["memory_count"].as_u64().unwrap_or(0)),
            Case::AgentStats => Answer::Counts(
                body["memory_types"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
        })
    }

    /// The plain query for `case` and `p`.
    fn sql(&self, case: Case, p: &Pick) -> String {
        let (t, org) = (&self.table, &self.org);
        let day_ago = memtrace_data_plane::query::UnixMicros::now().0 - 86_400_000_000;
        // Arc's time literal form: 'YYYY-MM-DD HH:MM:SS.ffffff'
        let day_ago = rfc3339_nano(day_ago).replace('T', " ");
        let day_ago = day_ago.trim_end_matches('Z');
        let by_agent = format!("org_id = '{org}' AND agent_id = '{}'", p.agent);
        let by_session = format!("org_id = '{org}' AND session_id = '{}'", p.session);
        match case {
            Case::List => {
                format!("SELECT * FROM {t} WHERE {by_agent} ORDER BY time DESC LIMIT 20")
            }
            Case::Recall => format!(
                "SELECT * FROM {t} WHERE {by_agent} AND time > '{day_ago}' \
                 ORDER BY time DESC LIMIT 100"
            ),
            Case::SearchContent => format!(
                "SELECT * FROM {t} WHERE org_id = '{org}' AND lower(content) LIKE '%{}%' \
                 ORDER BY time DESC LIMIT 20",
                p.topic
            ),
            Case::SearchTags => format!(
                "SELECT * FROM {t} WHERE {by_agent} AND ',' || tags_csv || ',' LIKE '%,{},%' \
                 ORDER BY time DESC LIMIT 20",
                p.tag
            ),
            Case::SessionMemories => {
                format!("SELECT * FROM {t} WHERE {by_session} ORDER BY time DESC LIMIT 20")
            }
            Case::SessionContext => format!(
                "SELECT * FROM {t} WHERE {by_session} AND time > '{day_ago}' \
                 ORDER BY time DESC LIMIT 100"
            ),
            Case::AgentStats => format!(
                "SELECT memory_type, COUNT(*) AS n FROM {t} WHERE {by_agent} GROUP BY memory_type"
            ),
        }
    }

    /// The store's answer to the plain query.
    async fn direct(&self, case: Case, p: &Pick) -> anyhow::Result<Answer> {
        let sql = self.sql(case, p);
        let (status, out) = self.arc.client().query(None, &sql).await?;
        anyhow::ensure!(status == 200, "store answered {status}: {out}");
        let columns = out["columns"].as_array().cloned().unwrap_or_default();
        let data = out["data"].as_array().cloned().unwrap_or_default();
        let col = |name: &str| columns.iter().position(|c| c == name);
        Ok(match case {
            Case::SessionContext => Answer::Count(data.len() as u64),
            Case::AgentStats => Answer::Counts(
                data.iter()
                    .map(|r| {
                        let t = r[0].as_str().unwrap_or_default().to_owned();
                        (t, r[1].as_u64().unwrap_or(0))
                    })
                    .collect(),
            ),
            _ => {
                let id = col("id").unwrap_or(usize::MAX);
                Answer::Ids(
                    data.iter()
                        .map(|r| r[id].as_str().unwrap_or_default().to_owned())
                        .collect(),
                )
            }
        })
    }
}

/// Times one call, with the stand-in's counters around it.
async fn timed(
    arc: &ArcUnderTest,
    side: &mut Side,
    call: impl Future<Output = anyhow::Result<Answer>>,
) -> anyhow::Result<Answer> {
    let before = arc.as_stand_in().map(|a| a.stats());
    let started = Instant::now();
    let answer = call.await;
    let took = started.elapsed();
    side.add(&before, &arc.as_stand_in().map(|a| a.stats()));
    match &answer {
        Ok(_) => side.lat.push(took),
        Err(_) => side.lat.errors += 1,
    }
    answer
}

/// Measures `case` for at most `bounds` turns / time.
pub async fn measure(ctx: &Ctx<'_>, case: Case, bounds: Bounds) -> Outcome {
    let mut out = Outcome {
        case,
        worker: Side::default(),
        direct: Side::default(),
        problems: Vec::new(),
        problem_count: 0,
    };
    let mut sampler = Sampler::new(bounds);
    let mut turn = 0u64;
    while sampler.turn() {
        let p = ctx.pick(turn);
        let (w, d) = if turn.is_multiple_of(2) {
            let w = timed(ctx.arc, &mut out.worker, ctx.worker(case, &p)).await;
            (
                w,
                timed(ctx.arc, &mut out.direct, ctx.direct(case, &p)).await,
            )
        } else {
            let d = timed(ctx.arc, &mut out.direct, ctx.direct(case, &p)).await;
            (
                timed(ctx.arc, &mut out.worker, ctx.worker(case, &p)).await,
                d,
            )
        };
        turn += 1;
        match (w, d) {
            (Ok(w), Ok(d)) if w == d => {}
            (Ok(w), Ok(d)) => problem(
                &mut out,
                format!(
                    "answers differ (agent {}): worker {w:?}, direct {d:?}",
                    p.agent
                ),
            ),
            (w, d) => {
                for e in [w.err(), d.err()].into_iter().flatten() {
                    problem(&mut out, format!("{e:#}"));
                }
            }
        }
    }
    out
}

/// Counts a problem and keeps the first few, each cut to 400 bytes.
fn problem(out: &mut Outcome, mut what: String) {
    out.problem_count += 1;
    if out.problems.len() < 3 {
        if what.len() > 400 {
            let mut end = 400;
            while !what.is_char_boundary(end) {
                end -= 1;
            }
            what.truncate(end);
            what.push('…');
        }
        out.problems.push(what);
    }
}
