//! The checker's own accounting, unit-tested (`History::check`).

use super::*;

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn all(n: usize, a: ItemAnswer) -> Outcome {
    Outcome::Answered(vec![a; n])
}

fn observed(reads: &[(&str, &[&str])], stored: &[&str]) -> Observed {
    Observed {
        api_reads: reads
            .iter()
            .map(|(w, ids)| {
                (
                    (*w).to_owned(),
                    ids.iter().map(|s| (*s).to_owned()).collect(),
                )
            })
            .collect(),
        stored_rows: stored.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[test]
fn a_clean_run_accounts_for_every_id() {
    let mut h = History::new();
    let b = h.batch(ids("a", 3));
    let at = h.invoke(b, 0, Transport::Rest);
    h.complete(at, all(3, ItemAnswer::Created));
    let r = h.check(&observed(
        &[("list", &["a0", "a1", "a2"])],
        &["a0", "a1", "a2"],
    ));
    assert!(r.is_clean(), "{r}");
    assert_eq!((r.sent, r.acknowledged, r.acknowledged_found), (3, 3, 3));
    assert_eq!((r.batches, r.attempts, r.retried_batches), (1, 1, 0));
    assert_eq!(r.outcomes["created"], 1);
    assert_eq!(h.acked_items(), 3);
}

#[test]
fn a_retry_after_a_lost_answer_is_stored_twice_and_must_be_seen_once() {
    let mut h = History::new();
    let b = h.batch(ids("r", 2));
    let first = h.invoke(b, 0, Transport::Grpc);
    h.complete(first, Outcome::Indeterminate("stream broken".into()));
    let second = h.invoke(b, 1, Transport::Grpc);
    h.complete(second, all(2, ItemAnswer::Created));
    // both attempts landed in Arc; the API shows each id once
    let seen = observed(&[("list w1", &["r0", "r1"])], &["r0", "r1", "r0", "r1"]);
    let r = h.check(&seen);
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.retried_batches, 1);
    assert_eq!(r.extra_stored_copies, 2);
    assert_eq!(r.outcomes["indeterminate: stream broken"], 1);
    assert_eq!(r.unfinished_batches, 0);

    // a read that shows one of them twice is a visible duplicate
    let twice = observed(&[("list w2", &["r0", "r1", "r0"])], &["r0", "r1", "r0"]);
    let r = h.check(&twice);
    assert!(!r.is_clean());
    assert_eq!(
        r.visible_duplicates,
        [("list w2".to_owned(), "r0".to_owned())]
    );
}

#[test]
fn acknowledged_but_missing_is_lost_wherever_it_is_missing() {
    let mut h = History::new();
    let b = h.batch(ids("l", 3));
    let at = h.invoke(b, 2, Transport::Rest);
    h.complete(at, all(3, ItemAnswer::Created));
    // l1 stored but not visible; l2 visible nowhere and not stored
    let r = h.check(&observed(&[("list", &["l0"])], &["l0", "l1"]));
    assert!(!r.is_clean());
    assert_eq!(r.acknowledged_lost, ["l1", "l2"]);
    assert_eq!((r.lost_in_store, r.acknowledged_found), (1, 1));
}

#[test]
fn unacknowledged_writes_may_or_may_not_be_stored() {
    let mut h = History::new();
    let b = h.batch(ids("u", 2));
    let at = h.invoke(b, 0, Transport::Rest);
    h.complete(
        at,
        Outcome::Refused {
            code: "rest 503".into(),
            retryable: true,
        },
    );
    let never = h.batch(ids("n", 1));
    h.invoke(never, 1, Transport::Grpc); // no completion: the run ended
    let r = h.check(&observed(&[("list", &["u0"])], &["u0"]));
    assert!(r.is_clean(), "{r}");
    assert_eq!((r.sent, r.acknowledged), (3, 0));
    assert_eq!((r.unacknowledged_stored, r.unacknowledged_absent), (1, 2));
    assert_eq!(r.unfinished_batches, 2);
    assert_eq!(r.outcomes["rest 503"], 1);
    assert_eq!(r.outcomes["never completed"], 1);
    assert_eq!(h.open_attempts(), 1);
    assert_eq!(r.permanent_refusals, 0);
}

#[test]
fn a_duplicate_answer_is_a_claim_that_the_memory_is_stored() {
    let mut h = History::new();
    let b = h.batch(ids("d", 2));
    let first = h.invoke(b, 0, Transport::Rest);
    h.complete(first, Outcome::Indeterminate("timeout".into()));
    let second = h.invoke(b, 0, Transport::Rest);
    h.complete(
        second,
        Outcome::Answered(vec![ItemAnswer::Duplicate, ItemAnswer::Created]),
    );
    let r = h.check(&observed(&[("list", &["d1"])], &["d1"]));
    assert_eq!((r.acknowledged, r.acknowledged_as_duplicate), (2, 1));
    assert_eq!(r.acknowledged_lost, ["d0"], "claimed stored, not found");
    assert_eq!(r.outcomes["answered (not all created)"], 1);
}

#[test]
fn ids_nobody_sent_and_refusals_not_to_retry_are_reported() {
    let mut h = History::new();
    let b = h.batch(ids("k", 1));
    let at = h.invoke(b, 0, Transport::Rest);
    h.complete(
        at,
        Outcome::Refused {
            code: "rest 400".into(),
            retryable: false,
        },
    );
    // a batch recorded but never sent counts nowhere
    h.batch(ids("z", 4));
    let r = h.check(&observed(&[("list", &["x9"])], &["x9", "k0"]));
    assert!(!r.is_clean());
    assert_eq!(r.unknown_ids, ["x9"]);
    assert_eq!(r.permanent_refusals, 1);
    assert_eq!((r.sent, r.unacknowledged_stored), (1, 1));
}

#[test]
fn acknowledgements_are_timed() {
    let mut h = History::new();
    let start = Instant::now();
    let b = h.batch(ids("t", 4));
    let at = h.invoke(b, 0, Transport::Grpc);
    h.complete(at, all(4, ItemAnswer::Created));
    let end = Instant::now() + Duration::from_millis(1);
    assert_eq!(h.acked_between(start, end), 4);
    assert_eq!(h.acked_between(end, end + Duration::from_secs(1)), 0);
    assert!(h.first_ack_after(start).is_some());
    assert!(h.first_ack_after(end).is_none());
    assert_eq!(h.answered_latencies(Transport::Grpc, start, end).len(), 1);
    assert_eq!(h.attempts_on(0), 1);
    assert_eq!(h.attempts_on(1), 0);
    assert_eq!(h.retry_recovery(start), None, "nothing failed");

    let fault = Instant::now();
    let b = h.batch(ids("v", 1));
    let broken = h.invoke(b, 0, Transport::Grpc);
    h.complete(broken, Outcome::Indeterminate("stream broken".into()));
    let again = h.invoke(b, 1, Transport::Grpc);
    std::thread::sleep(Duration::from_millis(5));
    h.complete(again, all(1, ItemAnswer::Created));
    let took = h.retry_recovery(fault).unwrap();
    assert!(took >= Duration::from_millis(5), "{took:?}");
    assert_eq!(h.retry_recovery(Instant::now()), None);
}

#[test]
fn acked_ids_are_the_ids_answered_created_or_duplicate() {
    let mut h = History::new();
    let a = h.batch(ids("a", 2));
    let at = h.invoke(a, 0, Transport::Rest);
    h.complete(
        at,
        Outcome::Answered(vec![ItemAnswer::Created, ItemAnswer::Failed]),
    );
    let b = h.batch(ids("b", 1));
    let at = h.invoke(b, 0, Transport::Grpc);
    h.complete(at, Outcome::Indeterminate("timeout".into()));
    let at = h.invoke(b, 1, Transport::Grpc);
    h.complete(at, all(1, ItemAnswer::Duplicate));
    let c = h.batch(ids("c", 1));
    let at = h.invoke(c, 0, Transport::Rest);
    h.complete(
        at,
        Outcome::Refused {
            code: "rest 503".into(),
            retryable: true,
        },
    );
    let acked: Vec<String> = h.acked_ids().into_iter().collect();
    assert_eq!(acked, ["a0", "b0"]);
}
