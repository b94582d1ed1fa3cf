//! `memtrace.admin.v1.ErasureService`: list and get erasure jobs (both
//! read-only, open to readers).

use super::Gate;
use crate::clock::to_timestamp;
use crate::store::ErasureJobRow;
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ErasureApi(pub Arc<Gate>);

fn non_empty(value: String) -> Option<String> {
    let trimmed = value.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

pub(crate) fn erasure_to_pb(job: ErasureJobRow) -> pb::Erasure {
    pb::Erasure {
        erasure_id: job.id,
        org_id: job.org_id,
        scope_json: job.scope_json,
        memory_predicate: job.memory_predicate,
        state: job.state,
        detail: job.detail,
        requested_by: job.requested_by,
        requested_at: Some(to_timestamp(job.requested_at_micros.div_euclid(1000))),
        attempts: u32::try_from(job.attempts).unwrap_or(u32::MAX),
        next_attempt_at: Some(to_timestamp(job.next_attempt_at)),
        target_json: job.target_json.unwrap_or_default(),
        rows_removed_json: job.rows_removed_json.unwrap_or_default(),
        verification_json: job.verification_json.unwrap_or_default(),
        receipt_json: job.receipt_json.unwrap_or_default(),
        started_at: job.started_at.map(to_timestamp),
        finished_at: job.finished_at.map(to_timestamp),
        as_of_micros: job.as_of_micros,
    }
}

#[tonic::async_trait]
impl pb::erasure_service_server::ErasureService for ErasureApi {
    async fn list_erasures(
        &self,
        request: Request<pb::ListErasuresRequest>,
    ) -> Result<Response<pb::ListErasuresResponse>, Status> {
        let req = request.into_inner();
        let jobs = self
            .0
            .service()?
            .list_erasures(non_empty(req.org_id), non_empty(req.state))
            .await?;
        Ok(Response::new(pb::ListErasuresResponse {
            erasures: jobs.into_iter().map(erasure_to_pb).collect(),
        }))
    }

    async fn get_erasure(
        &self,
        request: Request<pb::GetErasureRequest>,
    ) -> Result<Response<pb::Erasure>, Status> {
        let id = request.into_inner().erasure_id;
        let job = self.0.service()?.get_erasure(id.trim()).await?;
        Ok(Response::new(erasure_to_pb(job)))
    }
}
