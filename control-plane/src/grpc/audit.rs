//! `memtrace.admin.v1.AuditService`: list (filtered, newest first) and
//! verify the keyed admin audit chain (verification needs the master keys,
//! so it runs here, never in the CLI).

use super::Gate;
use crate::clock::to_timestamp;
use crate::error::ControlPlaneError;
use crate::store::{AuditEntry, AuditFilter};
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AuditApi(pub Arc<Gate>);

fn non_empty(value: String) -> Option<String> {
    let trimmed = value.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn seq(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub(crate) fn entry_to_pb(entry: AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        seq: seq(entry.seq),
        at: Some(to_timestamp(entry.at_ms)),
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        outcome: entry.outcome,
        details_json: entry.details_json,
        prev_hash: hex::encode(entry.prev_hash),
        hash: hex::encode(entry.hash),
        version: u32::try_from(entry.version).unwrap_or(0),
        kek_id: entry.kek_id.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let req = request.into_inner();
        let before_seq = match req.before_seq {
            0 => None,
            n => Some(i64::try_from(n).map_err(|_| {
                ControlPlaneError::invalid("before_seq", "must be a sequence number")
            })?),
        };
        let outcome = non_empty(req.outcome);
        if let Some(o) = &outcome
            && !matches!(o.as_str(), "ok" | "denied" | "failed")
        {
            return Err(
                ControlPlaneError::invalid("outcome", "must be ok, denied or failed").into(),
            );
        }
        let filter = AuditFilter {
            action_prefix: non_empty(req.action_prefix),
            key: non_empty(req.key),
            org_id: non_empty(req.org_id),
            actor: non_empty(req.actor),
            outcome,
            before_seq,
            limit: req.limit,
        };
        let entries = self.0.service()?.list_audit(filter).await?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries.into_iter().map(entry_to_pb).collect(),
        }))
    }

    async fn verify_audit(
        &self,
        _request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let report = self.0.service()?.verify_audit().await?;
        Ok(Response::new(pb::VerifyAuditResponse {
            ok: report.ok(),
            entries: report.entries,
            head_seq: seq(report.head_seq),
            head_hash: report.head_hash,
            broken_seq: report.broken.as_ref().map(|b| seq(b.seq)).unwrap_or(0),
            problem: report.broken.map(|b| b.reason).unwrap_or_default(),
            unkeyed_entries: report.unkeyed_entries,
            unverifiable: report
                .unverifiable
                .into_iter()
                .map(|u| pb::UnverifiableAuditEntries {
                    kek_id: u.kek_id,
                    entries: u.entries,
                    first_seq: seq(u.first_seq),
                    last_seq: seq(u.last_seq),
                })
                .collect(),
        }))
    }
}
