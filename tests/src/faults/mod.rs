//! Fault runs with a recorded history and a checker (the scenarios are
//! `tests/tests/faults_*.rs`; `scripts/faults.sh` runs their long variant).
//!
//! A run drives writes with client-chosen ids over REST and gRPC
//! streaming ([`driver`], `stream.rs`), records every attempt as invoked and then
//! answered, refused or left without an answer ([`history`]), retries what
//! was not acknowledged on another worker with the same ids, and afterwards
//! reads everything back through the API of every worker and straight from
//! the Arc stand-in ([`readback`]). [`History::check`] then accounts for
//! every id: sent, acknowledged, acknowledged and found, acknowledged and
//! lost, shown twice by a read, stored without an acknowledgement (allowed).
//! [`Rig`] is the cluster a scenario runs on: a real etcd and control
//! plane, N real workers, one org bound to the stand-in.
//!
//! Length: each scenario is seconds long by default (CI);
//! `MEMTRACE_FAULTS_FULL=1` selects the long variant ([`scaled`]).
//! Every scenario prints its figures on one `FAULTS-FIGURES {json}` line.

pub mod driver;
pub mod history;
pub mod readback;
pub mod replicas;
mod rig;
pub mod skew;
mod stream;

pub use driver::{Endpoints, Load, LoadSpec, content_of};
pub use history::{History, ItemAnswer, Observed, Outcome, Report, Transport};
pub use rig::{Rig, RigSpec};

use std::time::Duration;

/// The variable that selects the long variant of every scenario.
pub const FULL_ENV: &str = "MEMTRACE_FAULTS_FULL";

/// Whether the long variant was asked for (`MEMTRACE_FAULTS_FULL=1`).
pub fn full() -> bool {
    std::env::var(FULL_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// `ci` normally, `long` in the long variant.
pub fn scaled(ci: Duration, long: Duration) -> Duration {
    if full() { long } else { ci }
}

/// Prints a scenario's figures on one line for `scripts/faults.sh`.
pub fn print_figures(scenario: &str, figures: serde_json::Value) {
    let line = serde_json::json!({ "scenario": scenario, "full": full(), "figures": figures });
    eprintln!("FAULTS-FIGURES {line}");
}

/// The report's counts as JSON (for [`print_figures`]).
pub fn report_json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "sent": r.sent,
        "batches": r.batches,
        "attempts": r.attempts,
        "retried_batches": r.retried_batches,
        "acknowledged": r.acknowledged,
        "acknowledged_found": r.acknowledged_found,
        "acknowledged_lost": r.acknowledged_lost.len(),
        "visible_duplicates": r.visible_duplicates.len(),
        "unacknowledged_stored": r.unacknowledged_stored,
        "unacknowledged_absent": r.unacknowledged_absent,
        "extra_stored_copies": r.extra_stored_copies,
        "outcomes": r.outcomes,
    })
}
