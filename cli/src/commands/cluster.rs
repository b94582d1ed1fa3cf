//! `memtracectl workers` and `memtracectl status`: the fleet as the state
//! bus sees it, and whether every worker applied the newest published change.

use crate::client::Admin;
use crate::error::Subject;
use crate::output::{Output, Render, cell, fields, rfc3339, table, yes_no};
use memtrace_proto::admin::v1 as pb;
use serde::Serialize;
use std::io::{self, Write};

async fn fetch(admin: &Admin) -> anyhow::Result<pb::ClusterStatus> {
    Ok(admin
        .cluster()
        .get_cluster_status(admin.request(pb::GetClusterStatusRequest {}))
        .await
        .map_err(|s| admin.fail(s, Subject::None))?
        .into_inner())
}

/// `memtracectl workers`
pub async fn workers(admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    let status = fetch(admin).await?;
    out.emit(&WorkersView {
        workers: status.workers.iter().map(WorkerView::from).collect(),
    })
}

/// `memtracectl status`
pub async fn status(admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    let status = fetch(admin).await?;
    let workers: Vec<WorkerView> = status.workers.iter().map(WorkerView::from).collect();
    let in_sync = workers.iter().filter(|w| w.in_sync).count();
    out.emit(&StatusView {
        bus: status.bus,
        bus_reachable: status.bus_reachable,
        bus_error: (!status.bus_error.is_empty()).then_some(status.bus_error),
        published_revision: status.published_revision,
        workers_total: workers.len(),
        workers_in_sync: in_sync,
        workers,
    })
}

/// One registered worker.
#[derive(Debug, Serialize)]
pub struct WorkerView {
    pub worker_id: String,
    pub address: String,
    pub version: String,
    pub started_at: Option<String>,
    pub applied_revision: i64,
    pub reported_at: Option<String>,
    pub rejected_records: u64,
    pub in_sync: bool,
}

impl From<&pb::Worker> for WorkerView {
    fn from(w: &pb::Worker) -> Self {
        Self {
            worker_id: w.worker_id.clone(),
            address: w.address.clone(),
            version: w.version.clone(),
            started_at: rfc3339(w.started_at.as_ref()),
            applied_revision: w.applied_revision,
            reported_at: rfc3339(w.reported_at.as_ref()),
            rejected_records: w.rejected_records,
            in_sync: w.in_sync,
        }
    }
}

fn worker_rows(workers: &[WorkerView]) -> Vec<Vec<String>> {
    workers
        .iter()
        .map(|w| {
            vec![
                w.worker_id.clone(),
                w.address.clone(),
                w.version.clone(),
                w.applied_revision.to_string(),
                yes_no(w.in_sync).to_owned(),
                w.rejected_records.to_string(),
                cell(&w.started_at, "-"),
            ]
        })
        .collect()
}

const WORKER_HEADERS: [&str; 7] = [
    "WORKER",
    "ADDRESS",
    "VERSION",
    "APPLIED REV",
    "IN SYNC",
    "REJECTED",
    "STARTED",
];

/// `workers` result.
#[derive(Debug, Serialize)]
pub struct WorkersView {
    pub workers: Vec<WorkerView>,
}

impl Render for WorkersView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.workers.is_empty() {
            return writeln!(w, "no workers registered");
        }
        table(w, &WORKER_HEADERS, &worker_rows(&self.workers))
    }
}

/// `status` result.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub bus: String,
    pub bus_reachable: bool,
    pub bus_error: Option<String>,
    pub published_revision: i64,
    pub workers_total: usize,
    pub workers_in_sync: usize,
    pub workers: Vec<WorkerView>,
}

impl Render for StatusView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut pairs = vec![
            ("state bus", self.bus.clone()),
            ("reachable", yes_no(self.bus_reachable).to_owned()),
            ("published revision", self.published_revision.to_string()),
            (
                "workers in sync",
                format!("{}/{}", self.workers_in_sync, self.workers_total),
            ),
        ];
        if let Some(error) = &self.bus_error {
            pairs.push(("bus error", error.clone()));
        }
        fields(w, &pairs)?;
        if !self.workers.is_empty() {
            writeln!(w)?;
            table(w, &WORKER_HEADERS, &worker_rows(&self.workers))?;
        }
        Ok(())
    }
}
