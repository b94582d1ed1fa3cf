//! Pieces of the two-replica scenario (`tests/tests/faults_two_control_planes.rs`):
//! a recorder of every published API-key record (an etcd watch on
//! `keys/` from revision 1, each record opened with the fleet key), the
//! check that no revoked key was published live again, and the log of
//! admin calls made against each replica with their outcomes.

use crate::watchers::{etcd_bus, fleet};
use memtrace_common::bus::{Event, StateBus, WatchMessage};
use memtrace_common::state::{StateKeys, open_record};
use memtrace_proto::state::v1 as state;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One change of `keys/<key_id>` seen by the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    pub revision: i64,
    pub key_id: String,
    /// `Some(revoked)` for a put, `None` for a delete.
    pub revoked: Option<bool>,
}

#[derive(Default)]
struct Seen {
    events: Vec<KeyEvent>,
    /// Every change up to this revision has been recorded.
    through: i64,
    /// A record that failed authentication or decoding.
    unreadable: Vec<String>,
}

/// Records every put and delete under the prefix's `keys/` (see the
/// module docs) until dropped, for at most `max`.
pub struct KeyEvents {
    seen: Arc<Mutex<Seen>>,
    bus: Arc<dyn StateBus>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl KeyEvents {
    pub async fn start(
        endpoint: &str,
        prefix: &str,
        fleet_key: &str,
        max: Duration,
    ) -> anyhow::Result<Self> {
        let bus = etcd_bus(endpoint).await?;
        let fleet = fleet(fleet_key)?;
        let keys = StateKeys::new(prefix);
        let watched = format!("{}keys/", keys.prefix());
        let mut watch = bus.watch(&watched, 1).await?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let deadline = Instant::now() + max;
            while Instant::now() < deadline {
                let message =
                    match tokio::time::timeout(Duration::from_millis(200), watch.next()).await {
                        Ok(message) => message?,
                        Err(_) => {
                            watch.request_progress().await?;
                            continue;
                        }
                    };
                let mut seen = record.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                match message {
                    WatchMessage::Progress { revision } => seen.through = revision,
                    WatchMessage::Events { revision, events } => {
                        for event in events {
                            let key_id = event
                                .key()
                                .strip_prefix(&watched)
                                .unwrap_or(event.key())
                                .to_owned();
                            let revoked = match &event {
                                Event::Delete { .. } => None,
                                Event::Put(kv) => {
                                    let path = keys.relative(&kv.key).unwrap_or(&kv.key);
                                    let decoded = open_record(&fleet, path, &kv.value)
                                        .map_err(anyhow::Error::from)
                                        .and_then(|r| Ok(state::ApiKeyRecord::decode(r)?));
                                    match decoded {
                                        Ok(r) => Some(r.revoked),
                                        Err(error) => {
                                            seen.unreadable.push(format!("{}: {error}", kv.key));
                                            continue;
                                        }
                                    }
                                }
                            };
                            seen.events.push(KeyEvent {
                                revision: event.mod_revision(),
                                key_id,
                                revoked,
                            });
                        }
                        seen.through = revision;
                    }
                }
            }
            Ok(())
        });
        Ok(Self { seen, bus, task })
    }

    /// Waits until every change up to etcd's current revision is recorded;
    /// returns the events so far.
    pub async fn caught_up(&self, within: Duration) -> anyhow::Result<Vec<KeyEvent>> {
        let target = self.bus.current_revision().await?;
        let deadline = Instant::now() + within;
        loop {
            {
                let seen = self.seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                anyhow::ensure!(
                    seen.unreadable.is_empty(),
                    "unreadable key records: {:?}",
                    seen.unreadable
                );
                if seen.through >= target {
                    return Ok(seen.events.clone());
                }
                anyhow::ensure!(
                    !self.task.is_finished(),
                    "the key watch ended at revision {} (target {target})",
                    seen.through
                );
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the key watch reached revision {} of {target} within {within:?}",
                    seen.through
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for KeyEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Key ids published live (a put with `revoked = false`) after a put of
/// the same key as revoked, or after its delete, with the revisions of
/// both: a revoked key published again.
pub fn republished_after_revocation(events: &[KeyEvent]) -> Vec<(String, i64, i64)> {
    let mut revoked_at: BTreeMap<&str, i64> = BTreeMap::new();
    let mut found = Vec::new();
    let mut ordered: Vec<&KeyEvent> = events.iter().collect();
    ordered.sort_by_key(|e| e.revision);
    for event in ordered {
        match event.revoked {
            Some(false) => {
                if let Some(&at) = revoked_at.get(event.key_id.as_str()) {
                    found.push((event.key_id.clone(), at, event.revision));
                }
            }
            Some(true) | None => {
                revoked_at.entry(&event.key_id).or_insert(event.revision);
            }
        }
    }
    found
}

/// What an admin call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome {
    Ok,
    /// Refused with an answer (a conflict, not found, …).
    Refused(String),
    /// No answer: the replica was down, or died with the call in flight
    /// (the change may or may not have committed).
    NoAnswer(String),
}

/// One admin call against a replica.
#[derive(Debug, Clone)]
pub struct AdminCall {
    pub replica: usize,
    pub op: &'static str,
    pub target: String,
    pub outcome: AdminOutcome,
    /// For an acknowledged key creation: (key id, secret).
    pub created_key: Option<(String, String)>,
    pub started: Instant,
    pub ended: Instant,
}

/// Counts of `calls` per (op, outcome kind), for the figures.
pub fn tally(calls: &[AdminCall]) -> serde_json::Value {
    let mut counts: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
    for call in calls {
        let kind = match call.outcome {
            AdminOutcome::Ok => "ok",
            AdminOutcome::Refused(_) => "refused",
            AdminOutcome::NoAnswer(_) => "no_answer",
        };
        *counts
            .entry(format!("r{}:{}", call.replica, call.op))
            .or_default()
            .entry(kind)
            .or_default() += 1;
    }
    serde_json::to_value(counts).unwrap_or_default()
}

/// `memtracectl`'s stderr says the call got no answer (rather than a refusal).
pub fn no_answer(stderr: &str) -> bool {
    let stderr = stderr.to_ascii_lowercase();
    [
        "cannot reach",
        "connection",
        "transport",
        "unavailable",
        "broken pipe",
        "timed out",
    ]
    .iter()
    .any(|s| stderr.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: i64, id: &str, revoked: bool) -> KeyEvent {
        KeyEvent {
            revision,
            key_id: id.into(),
            revoked: Some(revoked),
        }
    }

    #[test]
    fn a_live_put_after_a_revocation_is_found() {
        let clean = [put(2, "a", false), put(3, "b", false), put(5, "a", true)];
        assert!(republished_after_revocation(&clean).is_empty());
        let mut forked = clean.to_vec();
        forked.push(put(7, "a", false));
        forked.push(KeyEvent {
            revision: 8,
            key_id: "b".into(),
            revoked: None,
        });
        forked.push(put(9, "b", false));
        assert_eq!(
            republished_after_revocation(&forked),
            vec![("a".into(), 5, 7), ("b".into(), 8, 9)]
        );
        // revisions out of order in the log still count by revision
        let reordered = [put(6, "c", true), put(4, "c", false)];
        assert!(republished_after_revocation(&reordered).is_empty());
    }

    #[test]
    fn no_answer_is_told_from_a_refusal() {
        assert!(no_answer(
            "error: cannot reach the control plane at http://127.0.0.1:1"
        ));
        assert!(!no_answer("error: api key not found: key_x"));
    }
}
