//! `MemoryService`, including the bidirectional streaming write.

use super::{Reply, admit, token};
use crate::admission::{Admission, Scope};
use crate::query::{ExportParams, ListParams, SearchParams};
use crate::service::{CreateMemoryRequest, DeleteRequest, MemoryPatch, NewMemory, ServiceError};
use memtrace_common::error::{CodedError, public_message, retry_after_ms};
use memtrace_proto::v1 as pb;
use pb::item_result::Outcome;
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Batches one stream may have in flight (read, not yet acknowledged);
/// beyond it the server stops reading the stream.
pub const MAX_UNACKED: usize = 16;

/// `memtrace.v1.MemoryService`.
pub struct MemoryApi {
    admission: Admission,
}

impl MemoryApi {
    pub fn new(admission: Admission) -> Self {
        Self { admission }
    }
}

/// Validates one input (the REST create's rules), naming the field.
fn validate(input: pb::MemoryInput) -> Result<NewMemory, ServiceError> {
    CreateMemoryRequest::try_from(input).and_then(NewMemory::try_from)
}

#[tonic::async_trait]
impl pb::memory_service_server::MemoryService for MemoryApi {
    async fn create_memory(
        &self,
        request: Request<pb::CreateMemoryRequest>,
    ) -> Reply<pb::CreateMemoryResponse> {
        let svc = admit(&self.admission, &request, Scope::Write).await?;
        let r = request.into_inner();
        svc.check_payload(r.encoded_len())?;
        let input = r
            .memory
            .ok_or_else(|| ServiceError::BadRequest("memory is required".into()))?;
        let new = validate(input)?;
        let memory = svc.create_memory(new).await?;
        Ok(Response::new(pb::CreateMemoryResponse {
            memory: Some(memory.into()),
        }))
    }

    async fn create_memories(
        &self,
        request: Request<pb::CreateMemoriesRequest>,
    ) -> Reply<pb::CreateMemoriesResponse> {
        let svc = admit(&self.admission, &request, Scope::Write).await?;
        let r = request.into_inner();
        svc.check_payload(r.encoded_len())?;
        let new = r
            .memories
            .into_iter()
            .map(validate)
            .collect::<Result<Vec<_>, _>>()?;
        let total = new.len();
        let created = svc.create_memories(new).await?;
        Ok(Response::new(pb::CreateMemoriesResponse {
            count: u32::try_from(created.len()).unwrap_or(u32::MAX),
            duplicates: u32::try_from(total - created.len()).unwrap_or(u32::MAX),
            memories: created.into_iter().map(Into::into).collect(),
        }))
    }

    type StreamMemoriesStream = Pin<Box<dyn Stream<Item = Result<pb::WriteAck, Status>> + Send>>;

    async fn stream_memories(
        &self,
        request: Request<Streaming<pb::WriteBatch>>,
    ) -> Reply<Self::StreamMemoriesStream> {
        // A bad key or scope fails the call at once.
        admit(&self.admission, &request, Scope::Write).await?;
        let key: Option<Arc<str>> = token(request.metadata()).map(Arc::from);
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(MAX_UNACKED);
        tokio::spawn(pump(self.admission.clone(), key, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_memories(
        &self,
        request: Request<pb::ListMemoriesRequest>,
    ) -> Reply<pb::MemoryList> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        let params = ListParams::from(request.into_inner());
        let list = svc.list_memories(&params).await?;
        Ok(Response::new(list.into()))
    }

    async fn search_memories(
        &self,
        request: Request<pb::SearchMemoriesRequest>,
    ) -> Reply<pb::SearchMemoriesResponse> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        let params = SearchParams::from(request.into_inner());
        let found = svc.search(&params).await?;
        Ok(Response::new(found.into()))
    }

    async fn get_memory(&self, request: Request<pb::GetMemoryRequest>) -> Reply<pb::Memory> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        let memory = svc.get_memory(&request.into_inner().id).await?;
        Ok(Response::new(memory.into()))
    }

    async fn delete_memories(
        &self,
        request: Request<pb::DeleteMemoriesRequest>,
    ) -> Reply<pb::DeleteMemoriesResponse> {
        let svc = admit(&self.admission, &request, Scope::Write).await?;
        let req = DeleteRequest::from(request.into_inner());
        let deletion = svc.delete_memories(&req).await?;
        Ok(Response::new(deletion.into()))
    }

    async fn update_memory(&self, request: Request<pb::UpdateMemoryRequest>) -> Reply<pb::Memory> {
        let svc = admit(&self.admission, &request, Scope::Write).await?;
        let r = request.into_inner();
        let id = r.id.clone();
        let memory = svc.update_memory(&id, MemoryPatch::try_from(r)?).await?;
        Ok(Response::new(memory.into()))
    }

    async fn get_memory_history(
        &self,
        request: Request<pb::GetMemoryRequest>,
    ) -> Reply<pb::MemoryHistory> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        let versions = svc.memory_history(&request.into_inner().id).await?;
        Ok(Response::new(pb::MemoryHistory {
            versions: versions.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_erasures(
        &self,
        request: Request<pb::ListErasuresRequest>,
    ) -> Reply<pb::ListErasuresResponse> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        Ok(Response::new(pb::ListErasuresResponse {
            erasures: svc.erasures()?.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_erasure_receipts(
        &self,
        request: Request<pb::ListErasureReceiptsRequest>,
    ) -> Reply<pb::ListErasureReceiptsResponse> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        let q = request.into_inner();
        let limit = (q.limit != 0).then_some(q.limit);
        let receipts = svc.erasure_receipts(Some(&q.erasure_id), limit).await?;
        let keys = serde_json::to_string(&self.admission.receipt_key_set())
            .map_err(|e| ServiceError::Internal(format!("key set: {e}")))?;
        Ok(Response::new(pb::ListErasureReceiptsResponse {
            receipts: receipts.into_iter().map(Into::into).collect(),
            key_set_json: keys,
        }))
    }

    async fn export_memories(
        &self,
        request: Request<pb::ExportMemoriesRequest>,
    ) -> Reply<pb::ExportMemoriesResponse> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        let params = ExportParams::from(request.into_inner());
        let page = svc.export_memories(&params).await?;
        Ok(Response::new(page.into()))
    }
}

/// Reads batches while fewer than [`MAX_UNACKED`] are in flight, writes
/// each concurrently and sends its ack when done. Ends when the client
/// half-closes (after the last ack), the client goes away, or a read fails.
async fn pump(
    admission: Admission,
    key: Option<Arc<str>>,
    mut inbound: Streaming<pb::WriteBatch>,
    tx: mpsc::Sender<Result<pb::WriteAck, Status>>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_UNACKED));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let batch = match inbound.message().await {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "write stream ended by the client");
                break;
            }
        };
        let (admission, key, tx) = (admission.clone(), key.clone(), tx.clone());
        tokio::spawn(async move {
            let ack = write_batch(&admission, key.as_deref(), batch).await;
            // the client may be gone: nothing else to do with the ack
            let _ = tx.send(Ok(ack)).await;
            drop(permit);
        });
    }
    // every spawned batch holds a permit until its ack is sent
    let _ = in_flight.acquire_many(MAX_UNACKED as u32).await;
}

/// Writes one streamed batch and says what happened to each item.
async fn write_batch(
    admission: &Admission,
    key: Option<&str>,
    batch: pb::WriteBatch,
) -> pb::WriteAck {
    let sequence = batch.sequence;
    let size = batch.encoded_len();
    let n = batch.memories.len();
    let mut results: Vec<pb::ItemResult> = (0..n)
        .map(|i| pb::ItemResult {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            outcome: Outcome::Failed as i32,
            ..pb::ItemResult::default()
        })
        .collect();
    // per batch, so a key revoked mid-stream stops the next batch
    let svc = match admission.admit(key, Scope::Write).await {
        Ok(svc) => svc,
        Err(e) => return failed(sequence, results, &e),
    };
    if let Err(e) = svc.check_payload(size) {
        return failed(sequence, results, &e);
    }
    let mut valid = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    for (i, input) in batch.memories.into_iter().enumerate() {
        match validate(input) {
            Ok(m) => {
                valid.push(m);
                positions.push(i);
            }
            Err(e) => {
                results[i].outcome = Outcome::Invalid as i32;
                results[i].error = e.to_string();
            }
        }
    }
    match svc.create_memories_each(valid).await {
        Ok(each) => {
            for (i, outcome) in positions.into_iter().zip(each) {
                match outcome {
                    Some(id) => {
                        results[i].outcome = Outcome::Created as i32;
                        results[i].id = id;
                    }
                    None => results[i].outcome = Outcome::Duplicate as i32,
                }
            }
            pb::WriteAck {
                sequence,
                results,
                error: None,
            }
        }
        Err(e) => failed(sequence, results, &e),
    }
}

/// A batch-level failure: the error, and FAILED for what was not refused
/// individually.
fn failed(sequence: u64, results: Vec<pb::ItemResult>, e: &ServiceError) -> pb::WriteAck {
    pb::WriteAck {
        sequence,
        results,
        error: Some(pb::BatchError {
            code: e.code().grpc() as i32,
            message: public_message(e).into_owned(),
            retry_after_ms: e.retry_after().map(retry_after_ms).unwrap_or(0),
        }),
    }
}
