use super::Gate;
use crate::clock::to_timestamp;
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `bus_kind` is "etcd" or "in-process", fixed at startup.
pub struct ClusterApi(pub Arc<Gate>, pub &'static str);

#[tonic::async_trait]
impl pb::cluster_service_server::ClusterService for ClusterApi {
    async fn get_cluster_status(
        &self,
        _request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let status = self.0.service()?.cluster_status(self.1).await?;
        Ok(Response::new(pb::ClusterStatus {
            bus: status.bus.to_owned(),
            bus_reachable: status.bus_error.is_none(),
            bus_error: status.bus_error.unwrap_or_default(),
            published_revision: status.published_revision,
            workers: status
                .workers
                .into_iter()
                .map(|w| pb::Worker {
                    worker_id: w.record.worker_id,
                    address: w.record.address,
                    version: w.record.version,
                    started_at: Some(to_timestamp(w.record.started_at_ms)),
                    applied_revision: w.record.applied_revision,
                    reported_at: Some(to_timestamp(w.record.reported_at_ms)),
                    rejected_records: w.record.rejected_records,
                    in_sync: w.in_sync,
                })
                .collect(),
        }))
    }
}
