//! The `memtrace.v1` gRPC adapter: thin services over the memory service.
//! Each call authenticates from its metadata (`x-api-key` or `authorization:
//! Bearer`) exactly as the REST adapter does (same snapshot lookup, scope
//! check, per-org rate limit and store resolution: [`RestState`]), converts
//! with [`convert`], and maps failures once ([`status`]).
//!
//! The streaming write ([`memories`]) acknowledges each client batch once
//! the store accepted it, with a per-item outcome; a stream holds at most
//! [`memories::MAX_UNACKED`] batches in flight, after which it stops reading
//! (HTTP/2 flow control pushes back on the client).

mod convert;
pub mod memories;
mod registry;

pub use memories::MemoryApi;
pub use registry::{AgentApi, SessionApi};

use crate::auth::{Scope, credential};
use crate::rest::{RestState, org_service};
use crate::service::{OrgService, ServiceError};
use memtrace_proto::v1 as pb;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Status};

/// Largest message a client may send (the REST body limit).
pub const MAX_MESSAGE_BYTES: usize = crate::rest::MAX_BODY_BYTES;

/// A gRPC status for a service failure: its code, its message (which, for
/// the no-Arc case, contains "arc instance" as the REST body does) and, for
/// RESOURCE_EXHAUSTED with a wait, a `retry-after-ms` trailer.
pub fn status(e: &ServiceError) -> Status {
    let mut status = Status::new(e.grpc_code(), e.to_string());
    if let Some(ms) = e.retry_after_ms()
        && let Ok(v) = MetadataValue::try_from(ms.to_string())
    {
        status.metadata_mut().insert("retry-after-ms", v);
    }
    status
}

/// The API key of a call (`x-api-key` or `authorization: Bearer`
/// metadata), read in place.
fn token(metadata: &MetadataMap) -> Option<&str> {
    let value = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
    credential(value("x-api-key"), value("authorization"))
}

/// The calling org's service, for a request needing `scope`.
async fn service<T>(
    state: &RestState,
    request: &Request<T>,
    scope: Scope,
) -> Result<OrgService, Status> {
    org_service(state, token(request.metadata()), scope)
        .await
        .map_err(|e| status(&e))
}

/// The three services, ready to add to a tonic server.
pub fn services(
    state: RestState,
) -> (
    pb::memory_service_server::MemoryServiceServer<MemoryApi>,
    pb::agent_service_server::AgentServiceServer<AgentApi>,
    pb::session_service_server::SessionServiceServer<SessionApi>,
) {
    (
        pb::memory_service_server::MemoryServiceServer::new(MemoryApi::new(state.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        pb::agent_service_server::AgentServiceServer::new(AgentApi::new(state.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        pb::session_service_server::SessionServiceServer::new(SessionApi::new(state))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
    )
}
