//! `memtrace.admin.v1.MasterKeyService`: the master key ring and the
//! public halves of the erasure receipt signing keys.

use super::{Gate, actor};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use memtrace_common::receipt::PublicKeyInfo;
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct MasterKeyApi(pub Arc<Gate>);

fn timestamp(at: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}

fn receipt_key_to_pb(key: PublicKeyInfo) -> Result<pb::ReceiptKey, Status> {
    Ok(pb::ReceiptKey {
        public_key: STANDARD
            .decode(&key.public_key)
            .map_err(|_| Status::internal("internal error; see the server log"))?,
        key_id: key.key_id,
        algorithm: key.algorithm,
        fingerprint: key.fingerprint,
        created_at: key.created_at.map(timestamp),
        retired_at: key.retired_at.map(timestamp),
    })
}

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

    async fn list_receipt_keys(
        &self,
        _request: Request<pb::ListReceiptKeysRequest>,
    ) -> Result<Response<pb::ListReceiptKeysResponse>, Status> {
        let keys = self.0.service()?.receipt_signer().public_keys().await?;
        Ok(Response::new(pb::ListReceiptKeysResponse {
            keys: keys
                .into_iter()
                .map(receipt_key_to_pb)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn rotate_receipt_key(
        &self,
        request: Request<pb::RotateReceiptKeyRequest>,
    ) -> Result<Response<pb::ReceiptKey>, Status> {
        let key = self
            .0
            .service()?
            .receipt_signer()
            .rotate(&actor(&request))
            .await?;
        Ok(Response::new(receipt_key_to_pb(key)?))
    }

    async fn list_token_keys(
        &self,
        _request: Request<pb::ListReceiptKeysRequest>,
    ) -> Result<Response<pb::ListReceiptKeysResponse>, Status> {
        let keys = self.0.service()?.published_token_keys().await?;
        Ok(Response::new(pb::ListReceiptKeysResponse {
            keys: keys
                .into_iter()
                .map(receipt_key_to_pb)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn rotate_token_key(
        &self,
        request: Request<pb::RotateReceiptKeyRequest>,
    ) -> Result<Response<pb::ReceiptKey>, Status> {
        let key = self.0.service()?.rotate_token_key(&actor(&request)).await?;
        Ok(Response::new(receipt_key_to_pb(key)?))
    }
}
