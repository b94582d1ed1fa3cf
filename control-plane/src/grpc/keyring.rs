use super::{Gate, actor};
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct MasterKeyApi(pub Arc<Gate>);

#[tonic::async_trait]
impl pb::master_key_service_server::MasterKeyService for MasterKeyApi {
    async fn get_keyring_status(
        &self,
        _request: Request<pb::GetKeyringStatusRequest>,
    ) -> Result<Response<pb::KeyringStatus>, Status> {
        let versions = self.0.service()?.keyring_status().await?;
        Ok(Response::new(pb::KeyringStatus {
            versions: versions
                .into_iter()
                .map(|v| pb::MasterKeyVersion {
                    kek_id: v.kek_id,
                    active: v.active,
                    loaded: v.loaded,
                    records: v.records,
                })
                .collect(),
        }))
    }

    async fn rotate_master(
        &self,
        request: Request<pb::RotateMasterRequest>,
    ) -> Result<Response<pb::RotateMasterResponse>, Status> {
        let report = self.0.service()?.rotate_master(&actor(&request)).await?;
        Ok(Response::new(pb::RotateMasterResponse {
            active_kek_id: report.active_kek_id,
            rewrapped: report.rewrapped,
            already_current: report.already_current,
        }))
    }
}
