//! The runner's state machine with a fixed clock: what each outcome makes
//! of a job, the tables and predicates a job covers, and the record a job
//! is published as.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::ErasureSettings;
use super::arc::{contained, count_sql, host_of, where_clause};
use super::run::{NO_ARC, Outcome, plan, settle};
use super::scope::{record_of, scope_from_json, scope_to_json};
use crate::store::{ErasureJobRow, PinnedTarget};
use memtrace_proto::state::v1::ErasureState;
use std::time::Duration;

const NOW: i64 = 1_800_000_000_000;

fn settings() -> ErasureSettings {
    ErasureSettings {
        recheck_delay: Duration::from_secs(10),
        blocked_retry: Duration::from_secs(300),
        claim_ttl: Duration::from_secs(60),
        max_rounds: 3,
        ..ErasureSettings::default()
    }
}

fn job() -> ErasureJobRow {
    crate::store::conformance_erasure::job("org_a", NOW - 1000)
}

fn claimed() -> ErasureJobRow {
    let mut job = job();
    job.state = "running".into();
    job.attempts = 1;
    job.claimed_by = Some("cp-1".into());
    job.claimed_until = Some(NOW + 70_000);
    job.pinned = Some(PinnedTarget {
        binding_id: "arc_1".into(),
        url: "http://arc:8000".into(),
        database: "db".into(),
        measurement: "memories".into(),
        api_key_envelope: Some(vec![1]),
    });
    job
}

#[test]
fn done_finishes_releases_and_forgets_the_sealed_key() {
    let mut job = claimed();
    settle(&mut job, &Outcome::Done, NOW, &settings());
    assert_eq!(job.state, "done");
    assert_eq!(job.finished_at, Some(NOW));
    assert_eq!((job.claimed_by, job.claimed_until), (None, None));
    assert!(job.pinned.is_none(), "no sealed key kept once done");
    assert!(job.detail.is_empty());
}

#[test]
fn blocked_waits_the_blocked_retry_with_arcs_message() {
    let mut job = claimed();
    let detail = "POST /api/v1/delete answered 403: delete operations are disabled";
    settle(&mut job, &Outcome::Blocked(detail.into()), NOW, &settings());
    assert_eq!(job.state, "blocked");
    assert_eq!(job.detail, detail);
    assert_eq!(job.next_attempt_at, NOW + 300_000);
    assert!(job.claimed_by.is_none());
    assert!(job.pinned.is_some(), "kept until done");
}

#[test]
fn transient_errors_back_off_with_jitter_and_grow() {
    let mut first = claimed();
    settle(
        &mut first,
        &Outcome::Retry("connection refused".into()),
        NOW,
        &settings(),
    );
    assert_eq!(first.state, "running");
    assert!(first.detail.contains("connection refused"));
    let delay = first.next_attempt_at - NOW;
    assert!((1000..=2000).contains(&delay), "first retry ~2 s: {delay}");
    let mut later = claimed();
    later.attempts = 6;
    settle(&mut later, &Outcome::Retry("503".into()), NOW, &settings());
    let delay = later.next_attempt_at - NOW;
    assert!(
        (32_000..=64_000).contains(&delay),
        "sixth retry ~64 s: {delay}"
    );
    let mut capped = claimed();
    capped.attempts = 40;
    settle(&mut capped, &Outcome::Retry("503".into()), NOW, &settings());
    assert!(capped.next_attempt_at - NOW <= 300_000, "capped at 5 min");
}

#[test]
fn failed_is_kept_and_retried_later() {
    let mut job = claimed();
    settle(
        &mut job,
        &Outcome::Failed("3 covered rows still found".into()),
        NOW,
        &settings(),
    );
    assert_eq!(job.state, "failed");
    assert!(job.next_attempt_at >= NOW + 15_000);
    assert!(job.finished_at.is_none());
}

#[test]
fn stopped_releases_the_claim_for_an_immediate_resume() {
    let mut job = claimed();
    settle(&mut job, &Outcome::Stopped, NOW, &settings());
    assert_eq!(job.state, "running", "state unchanged");
    assert_eq!(job.next_attempt_at, NOW);
    assert!(job.claimed_by.is_none() && job.claimed_until.is_none());
}

#[test]
fn a_memory_erasure_covers_its_predicate_within_the_org() {
    let job = job();
    let tables = plan(&job, "memories").unwrap();
    let covered = "org_id = 'org_a' AND (id IN ('mem_1'))".to_owned();
    assert_eq!(
        tables,
        [
            ("memories".to_owned(), covered.clone()),
            ("memory_versions".to_owned(), covered.clone()),
        ],
        "a delete erases the memories' superseded versions too"
    );
    let mut superseded = job.clone();
    superseded.scope_json = r#"{"superseded_ids":["mem_1"]}"#.into();
    assert_eq!(
        plan(&superseded, "memories").unwrap(),
        [("memories".to_owned(), covered)],
        "an update's superseded rows leave the memory table only"
    );
    let mut empty = job.clone();
    empty.memory_predicate = "  ".into();
    assert!(
        plan(&empty, "memories").is_err(),
        "never the whole org by accident"
    );
}

#[test]
fn a_whole_org_erasure_covers_memories_agents_sessions_and_receipts() {
    let mut job = job();
    job.scope_json = r#"{"whole_org":true}"#.into();
    job.memory_predicate = String::new();
    let tables = plan(&job, "events").unwrap();
    let names: Vec<&str> = tables.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "events",
            "memory_versions",
            "agents",
            "sessions",
            "erasure_receipts"
        ]
    );
    assert!(tables.iter().all(|(_, w)| w == "org_id = 'org_a'"));
}

#[test]
fn sql_quotes_org_ids_and_names_the_table() {
    assert_eq!(where_clause("o'x", None), "org_id = 'o''x'");
    assert_eq!(
        count_sql("db", "memories", "org_id = 'a'"),
        "SELECT COUNT(*) AS n FROM db.memories WHERE org_id = 'a'"
    );
    assert_eq!(
        host_of("https://user:pw@arc.example:8443/x"),
        "arc.example:8443"
    );
    assert_eq!(host_of("http://arc"), "arc");
}

#[test]
fn scopes_round_trip_through_json() {
    for text in [
        r#"{"memory_ids":["mem_1","mem_2"]}"#,
        r#"{"whole_org":true}"#,
        r#"{"filter":{"agent_id":"a","event_types":[],"memory_types":["fact"],"session_id":"","since_micros":5,"tags":["x"],"until_micros":0}}"#,
    ] {
        let scope = scope_from_json(text).unwrap();
        let back = scope_to_json(Some(&scope));
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
    }
    assert!(scope_from_json("{}").is_none());
}

#[test]
fn records_show_the_jobs_state_and_vanish_when_done() {
    let mut job = job();
    job.state = "blocked".into();
    job.detail = "no".into();
    let record = record_of(&job).unwrap();
    assert_eq!(record.state, ErasureState::Blocked as i32);
    assert_eq!(record.detail, "no");
    assert_eq!(record.memory_predicate, job.memory_predicate);
    job.state = "failed".into();
    assert_eq!(record_of(&job).unwrap().state, ErasureState::Running as i32);
    job.state = "done".into();
    assert!(record_of(&job).is_none());
    assert!(NO_ARC.contains("embedded store erasure not implemented yet"));
}

#[test]
fn predicates_that_would_escape_the_org_filter_are_refused() {
    for ok in [
        "id IN ('mem_1', 'mem_2')",
        "id = 'it''s (not) closed'",
        "(agent_id = 'a' AND (tags LIKE '%x%'))",
        "content = ')'",
    ] {
        assert!(contained(ok), "{ok}");
    }
    for bad in [
        "1=1) OR (1=1",
        "id = 'a')",
        "(id = 'a'",
        "id = 'a'; DROP TABLE x",
        "id = 'a' -- ",
        "id = 'a' /* x */",
        "id = 'unterminated",
    ] {
        assert!(!contained(bad), "{bad}");
    }
    let mut job = job();
    job.memory_predicate = "1=1) OR (1=1".into();
    assert!(plan(&job, "memories").unwrap_err().contains("refused"));
}

#[test]
fn derived_ids_get_a_delete_of_their_own_and_one_count_per_table() {
    let mut job = job();
    job.scope_json = r#"{"memory_ids":["mem_1","lg_0123456789abcdef0123456789abcdef"]}"#.into();
    job.memory_predicate =
        "id IN ('mem_1', 'lg_0123456789abcdef0123456789abcdef') AND epoch_us(time) <= 5".into();
    job.as_of_micros = 5;
    let (table, where_) = super::run::legacy_rows(&job, "events").unwrap();
    assert_eq!(table, "events");
    assert_eq!(
        where_,
        format!(
            "org_id = 'org_a' AND ({} IN ('lg_0123456789abcdef0123456789abcdef') AND \
             epoch_us(time) <= 5)",
            memtrace_common::legacy::arc_legacy_id("")
        )
    );
    let words = where_.split(|c: char| !(c.is_alphanumeric() || c == '_'));
    assert!(
        !words.clone().any(|w| w == "id"),
        "names no id column: {where_}"
    );
    let mut tables = plan(&job, "events").unwrap();
    tables.push((table, where_.clone()));
    let checks = super::run::checks(&tables);
    assert_eq!(checks.len(), 2, "one count per table: {checks:?}");
    assert_eq!(checks[0].0, "events");
    assert!(
        checks[0].1.ends_with(&format!(" OR ({where_})")),
        "{checks:?}"
    );
    job.scope_json = r#"{"memory_ids":["mem_1"]}"#.into();
    assert!(super::run::legacy_rows(&job, "events").is_none());
}
