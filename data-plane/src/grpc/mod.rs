//! The `memtrace.v1` gRPC adapter: thin services over the memory service.
//! Each call reads its credential from metadata (`x-api-key` or
//! `authorization: Bearer`), passes [`Admission`] exactly as REST calls do,
//! converts with [`convert`], and fails with the one conversion of a
//! [`ServiceError`] into a [`Status`] (`impl From<ServiceError> for Status`).
//!
//! The streaming write ([`memories`]) acknowledges each client batch once
//! the store accepted it, with a per-item outcome; a stream holds at most
//! [`memories::MAX_UNACKED`] batches in flight, after which it stops reading
//! (HTTP/2 flow control pushes back on the client).

mod agents;
pub mod authn;
mod convert;
pub mod memories;
mod sessions;

pub use agents::AgentApi;
pub use memories::MemoryApi;
pub use sessions::SessionApi;

use crate::admission::{Admission, MAX_REQUEST_BYTES, Scope, credential};
use crate::service::{OrgService, ServiceError};
pub use authn::AuthenticateFirst;
use memtrace_proto::v1 as pb;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

/// A unary call's result.
type Reply<T> = Result<Response<T>, Status>;

/// A failure's code (from its [`ErrorCode`](memtrace_common::error::ErrorCode)),
/// its public message (for the no-Arc case it contains "arc instance", as the
/// REST body does) and, for RESOURCE_EXHAUSTED with a wait, a
/// `retry-after-ms` trailer.
impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        memtrace_common::error::to_status(&e)
    }
}

/// The API key of a call (`x-api-key` or `authorization: Bearer`
/// metadata), read in place.
fn token(metadata: &MetadataMap) -> Option<&str> {
    let value = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
    token_of(value("x-api-key"), value("authorization"))
}

/// The API key among a call's `x-api-key` and `authorization` values.
fn token_of<'a>(api_key: Option<&'a str>, authorization: Option<&'a str>) -> Option<&'a str> {
    credential(api_key, authorization)
}

/// The calling org's service, for a request needing `scope`.
async fn admit<T>(
    admission: &Admission,
    request: &Request<T>,
    scope: Scope,
) -> Result<OrgService, Status> {
    Ok(admission.admit(token(request.metadata()), scope).await?)
}

/// A service answer as a response of its protobuf form.
fn reply<T, U: From<T>>(result: Result<T, ServiceError>) -> Reply<U> {
    Ok(Response::new(U::from(result?)))
}

/// The memory service as served.
pub type MemoryGrpc = AuthenticateFirst<pb::memory_service_server::MemoryServiceServer<MemoryApi>>;
/// The agent service as served.
pub type AgentGrpc = AuthenticateFirst<pb::agent_service_server::AgentServiceServer<AgentApi>>;
/// The session service as served.
pub type SessionGrpc =
    AuthenticateFirst<pb::session_service_server::SessionServiceServer<SessionApi>>;

/// The services [`services`] returns, by their gRPC names (what reflection
/// lists, with health and reflection).
pub const SERVICES: [&str; 3] = [
    <MemoryGrpc as NamedService>::NAME,
    <AgentGrpc as NamedService>::NAME,
    <SessionGrpc as NamedService>::NAME,
];

/// The three services, each behind [`AuthenticateFirst`], ready to add to
/// a tonic server. Messages are bounded by [`MAX_REQUEST_BYTES`] here and,
/// per message type, by the codec (`memtrace_proto::codec`).
pub fn services(admission: Admission) -> (MemoryGrpc, AgentGrpc, SessionGrpc) {
    (
        AuthenticateFirst::new(
            pb::memory_service_server::MemoryServiceServer::new(MemoryApi::new(admission.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            admission.clone(),
        ),
        AuthenticateFirst::new(
            pb::agent_service_server::AgentServiceServer::new(AgentApi::new(admission.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            admission.clone(),
        ),
        AuthenticateFirst::new(
            pb::session_service_server::SessionServiceServer::new(SessionApi::new(
                admission.clone(),
            ))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
            admission,
        ),
    )
}
