//! The gRPC codec of every generated service and client: prost's, with a
//! guard in front of the `memtrace.v1` requests, whose repeated fields
//! amplify memory. An empty `MemoryInput` is 2 bytes on the wire and ~250
//! bytes decoded, an empty string 2 bytes and 24, so one 32 MiB message of
//! empty items would decode into gigabytes before any rule of the service
//! could refuse it. So, before decoding and without allocating:
//!
//! - the messages that carry memories (`WriteBatch`,
//!   `CreateMemoriesRequest`, `CreateMemoryRequest`) are counted and
//!   refused with RESOURCE_EXHAUSTED past [`MAX_DECODED_MEMORIES`] memories
//!   or [`MAX_DECODED_TAGS`] tags (the service's own, smaller limits — 1,000
//!   memories a batch, 64 tags a memory — then apply with their usual
//!   answers);
//! - every other `memtrace.v1` request (reads, agents, sessions) is refused
//!   past [`MAX_SMALL_REQUEST_BYTES`], which bounds what all of its
//!   repeated fields together can decode into.
//!
//! Every `memtrace.v1` request type is listed in [`GUARDED`]; a test reads
//! the services' methods from [`crate::FILE_DESCRIPTOR_SET`] and fails for
//! an RPC whose input is missing there.
//!
//! The worker also checks the API key before a body is read at all.

use crate::v1::{
    AgentMemoriesRequest, AgentRef, CreateAgentTokenRequest, CreateMemoriesRequest,
    CreateMemoryRequest, CreateSessionRequest, DeleteMemoriesRequest, ExportMemoriesRequest,
    GetMemoryRequest, ListAgentsRequest, ListErasureReceiptsRequest, ListErasuresRequest,
    ListMemoriesRequest, ListSessionsRequest, RegisterAgentRequest, SearchMemoriesRequest,
    SessionContextRequest, SessionMemoriesRequest, SessionRef, UpdateMemoryRequest,
    UpdateSessionRequest, WriteBatch,
};
use prost::Message;
use prost::bytes::Buf as _;
use std::any::TypeId;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Most memories one message may carry into the decoder.
pub const MAX_DECODED_MEMORIES: usize = 10_000;
/// Most tags (over all its memories) one message may carry.
pub const MAX_DECODED_TAGS: usize = 100_000;
/// Largest encoded `memtrace.v1` request that carries no memories.
pub const MAX_SMALL_REQUEST_BYTES: usize = 256 * 1024;

/// `MemoryInput.tags` is field 8.
const TAGS_FIELD: u64 = 8;

/// prost's codec behind the guard (module docs).
#[derive(Debug, Clone)]
pub struct GuardedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for GuardedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for GuardedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = GuardedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        GuardedDecoder(PhantomData)
    }
}

/// Decodes `U` as prost does, after the guard for memory batches.
#[derive(Debug, Clone)]
pub struct GuardedDecoder<U>(PhantomData<U>);

impl<U> Decoder for GuardedDecoder<U>
where
    U: Message + Default + Send + 'static,
{
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        guard::<U>(buf.chunk())?;
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// The checks of the module docs for one encoded message of type `U`,
/// before it is decoded.
pub fn guard<U: 'static>(message: &[u8]) -> Result<(), Status> {
    match guard_of(TypeId::of::<U>()) {
        Guard::Memories { field } => {
            check_batch(message, field).map_err(Status::resource_exhausted)
        }
        Guard::Small if message.len() > MAX_SMALL_REQUEST_BYTES => {
            Err(Status::resource_exhausted(format!(
                "request of {} bytes is too large: at most {MAX_SMALL_REQUEST_BYTES} bytes \
                 for a request that carries no memories",
                message.len()
            )))
        }
        Guard::Small | Guard::None => Ok(()),
    }
}

/// What is checked before a message of some type is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Memories in field `field`: counted with their tags.
    Memories { field: u64 },
    /// A `memtrace.v1` request without memories: bounded in size.
    Small,
    /// Anything else (responses, the admin API): as prost decodes it.
    None,
}

/// `GUARDED` from one list of types: each entry's protobuf name is the
/// generated type's own (`memtrace.v1.` + its identifier), so a name and its
/// type cannot drift apart.
macro_rules! guarded {
    ($($guard:expr => [$($t:ident),* $(,)?]),* $(,)?) => {
        /// Every `memtrace.v1` request type, by full protobuf name, with its
        /// guard. A test checks it against the methods of every
        /// `memtrace.v1` service in [`crate::FILE_DESCRIPTOR_SET`]: an RPC
        /// whose input is not listed here fails it (it would otherwise be
        /// decoded unbounded, as [`Guard::None`]).
        pub const GUARDED: &[(&str, fn() -> TypeId, Guard)] = &[
            $($((concat!("memtrace.v1.", stringify!($t)), TypeId::of::<$t>, $guard),)*)*
        ];
    };
}

guarded! {
    Guard::Memories { field: 2 } => [WriteBatch],
    Guard::Memories { field: 1 } => [CreateMemoriesRequest, CreateMemoryRequest],
    Guard::Small => [
        ListMemoriesRequest,
        SearchMemoriesRequest,
        GetMemoryRequest,
        DeleteMemoriesRequest,
        ListErasuresRequest,
        ListErasureReceiptsRequest,
        UpdateMemoryRequest,
        ExportMemoriesRequest,
        RegisterAgentRequest,
        ListAgentsRequest,
        AgentRef,
        AgentMemoriesRequest,
        CreateAgentTokenRequest,
        CreateSessionRequest,
        ListSessionsRequest,
        SessionRef,
        UpdateSessionRequest,
        SessionContextRequest,
        SessionMemoriesRequest,
    ],
}

fn guard_of(t: TypeId) -> Guard {
    GUARDED
        .iter()
        .find(|(_, id, _)| id() == t)
        .map_or(Guard::None, |(_, _, guard)| *guard)
}

/// The guard of a message by its full protobuf name (`memtrace.v1.…`, no
/// leading dot); [`Guard::None`] for any type not in [`GUARDED`].
pub fn guard_of_name(full_name: &str) -> Guard {
    GUARDED
        .iter()
        .find(|(name, _, _)| *name == full_name)
        .map_or(Guard::None, |(_, _, guard)| *guard)
}

/// Refuses an encoded batch with too many memories or tags in its
/// `memories_field`; says which limit.
pub fn check_batch(bytes: &[u8], memories_field: u64) -> Result<(), String> {
    let mut memories = 0usize;
    let mut tags = 0usize;
    for (field, item) in delimited(bytes) {
        if field != memories_field {
            continue;
        }
        memories += 1;
        if memories > MAX_DECODED_MEMORIES {
            return Err(format!(
                "too many memories in one message: at most {MAX_DECODED_MEMORIES}"
            ));
        }
        tags += delimited(item).filter(|(f, _)| *f == TAGS_FIELD).count();
        if tags > MAX_DECODED_TAGS {
            return Err(format!(
                "too many tags in one message: at most {MAX_DECODED_TAGS}"
            ));
        }
    }
    Ok(())
}

/// Reads a varint at `*at`, advancing it; `None` past the end or when
/// malformed.
fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(value);
        }
    }
    None
}

/// The length-delimited fields at the top level of an encoded message, as
/// (field number, payload); stops at anything malformed (the real decode
/// then reports it).
fn delimited(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < bytes.len() {
            let key = varint(bytes, &mut at)?;
            let len = match key & 7 {
                0 => {
                    varint(bytes, &mut at)?;
                    0
                }
                1 => 8,
                2 => usize::try_from(varint(bytes, &mut at)?).ok()?,
                5 => 4,
                _ => return None,
            };
            let start = at;
            let end = start.checked_add(len).filter(|e| *e <= bytes.len())?;
            at = end;
            if key & 7 == 2 {
                return Some((key >> 3, &bytes[start..end]));
            }
        }
        None
    })
}

#[cfg(test)]
/// The input type of every method of every `memtrace.v1` service, as
/// the descriptor set names them (no leading dot).
pub(crate) fn memtrace_v1_inputs() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let mut inputs: Vec<String> = set
        .file
        .iter()
        .filter(|f| f.package() == "memtrace.v1")
        .flat_map(|f| f.service.iter())
        .flat_map(|s| s.method.iter())
        .map(|m| m.input_type().trim_start_matches('.').to_owned())
        .collect();
    inputs.sort();
    inputs.dedup();
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::MemoryInput;

    fn memory(tags: usize) -> MemoryInput {
        MemoryInput {
            content: "c".into(),
            tags: vec![String::new(); tags],
            importance: 0.5,
            ..MemoryInput::default()
        }
    }

    fn batch(n: usize, tags: usize) -> Vec<u8> {
        WriteBatch {
            sequence: 300,
            memories: (0..n).map(|_| memory(tags)).collect(),
        }
        .encode_to_vec()
    }

    #[test]
    fn batches_within_the_bounds_pass() {
        assert_eq!(check_batch(&batch(0, 0), 2), Ok(()));
        assert_eq!(check_batch(&batch(MAX_DECODED_MEMORIES, 10), 2), Ok(()));
        let unary = CreateMemoriesRequest {
            memories: vec![memory(3); 5],
        };
        assert_eq!(check_batch(&unary.encode_to_vec(), 1), Ok(()));
    }

    #[test]
    fn too_many_empty_memories_or_tags_are_refused_before_decoding() {
        let empty_items = WriteBatch {
            sequence: 1,
            memories: vec![MemoryInput::default(); MAX_DECODED_MEMORIES + 1],
        };
        let err = check_batch(&empty_items.encode_to_vec(), 2).unwrap_err();
        assert!(err.contains("too many memories"), "{err}");
        let err = check_batch(&batch(2, MAX_DECODED_TAGS / 2 + 1), 2).unwrap_err();
        assert!(err.contains("too many tags"), "{err}");
        let unary = CreateMemoriesRequest {
            memories: vec![MemoryInput::default(); MAX_DECODED_MEMORIES + 1],
        };
        assert!(check_batch(&unary.encode_to_vec(), 1).is_err());
    }

    /// What the decoder does: the guard, then prost.
    fn decode<U: Message + Default + 'static>(bytes: &[u8]) -> Result<U, Status> {
        guard::<U>(bytes)?;
        Ok(U::decode(bytes).unwrap())
    }

    #[test]
    fn requests_without_memories_are_bounded_in_size() {
        use crate::v1::{Memory, SearchMemoriesRequest, SessionContextRequest};
        let within = SearchMemoriesRequest {
            tags: vec![String::new(); MAX_SMALL_REQUEST_BYTES / 2],
            ..SearchMemoriesRequest::default()
        };
        assert!(within.encoded_len() <= MAX_SMALL_REQUEST_BYTES);
        assert!(decode::<SearchMemoriesRequest>(&within.encode_to_vec()).is_ok());
        let past = SessionContextRequest {
            include_types: vec![String::new(); MAX_SMALL_REQUEST_BYTES / 2 + 1],
            ..SessionContextRequest::default()
        };
        let err = decode::<SessionContextRequest>(&past.encode_to_vec()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("at most 262144 bytes"), "{err}");
        let export = crate::v1::ExportMemoriesRequest {
            cursor: "c".repeat(MAX_SMALL_REQUEST_BYTES + 1),
            ..crate::v1::ExportMemoriesRequest::default()
        };
        let err = decode::<crate::v1::ExportMemoriesRequest>(&export.encode_to_vec()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        // responses (and the admin API) are not bounded here
        let reply = Memory {
            tags: vec![String::new(); MAX_SMALL_REQUEST_BYTES],
            ..Memory::default()
        };
        assert!(decode::<Memory>(&reply.encode_to_vec()).is_ok());
    }

    #[test]
    fn one_memory_is_counted_like_a_batch() {
        let one = CreateMemoryRequest {
            memory: Some(memory(MAX_DECODED_TAGS + 1)),
        };
        let err = decode::<CreateMemoryRequest>(&one.encode_to_vec()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("too many tags"), "{err}");
        let fine = CreateMemoryRequest {
            memory: Some(memory(3)),
        };
        assert_eq!(
            decode::<CreateMemoryRequest>(&fine.encode_to_vec()).unwrap(),
            fine
        );
    }

    #[test]
    fn every_memtrace_v1_request_is_guarded() {
        let inputs = memtrace_v1_inputs();
        assert!(
            inputs.len() >= 20,
            "the descriptor set lists the services: {inputs:?}"
        );
        let unguarded: Vec<&String> = inputs
            .iter()
            .filter(|name| guard_of_name(name) == Guard::None)
            .collect();
        assert!(
            unguarded.is_empty(),
            "memtrace.v1 requests decoded without a guard (add them to GUARDED): {unguarded:?}"
        );
        // and every listed type is a request of some RPC, under its real name
        for (name, id, guard) in GUARDED {
            assert!(inputs.iter().any(|i| i == name), "{name} is no RPC's input");
            assert_eq!(guard_of(id()), *guard, "{name}");
        }
        // the counted field is the message's MemoryInput field
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        for (name, _, guard) in GUARDED {
            let Guard::Memories { field } = guard else {
                continue;
            };
            let message = set
                .file
                .iter()
                .filter(|f| f.package() == "memtrace.v1")
                .flat_map(|f| f.message_type.iter())
                .find(|m| format!("memtrace.v1.{}", m.name()) == *name)
                .unwrap();
            let counted = message
                .field
                .iter()
                .find(|f| i64::from(f.number()) == i64::try_from(*field).unwrap())
                .unwrap();
            assert_eq!(counted.type_name(), ".memtrace.v1.MemoryInput", "{name}");
        }
        // streamed writes are counted like batches
        assert_eq!(
            guard_of_name("memtrace.v1.WriteBatch"),
            Guard::Memories { field: 2 }
        );
        assert_eq!(guard_of(TypeId::of::<crate::v1::Memory>()), Guard::None);
    }

    #[test]
    fn malformed_input_is_left_to_the_decoder() {
        let bytes = batch(10, 2);
        for cut in 0..bytes.len() {
            assert_eq!(check_batch(&bytes[..cut], 2), Ok(()));
        }
        assert_eq!(check_batch(&[0xff; 12], 2), Ok(()));
        assert_eq!(
            check_batch(&[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f], 2),
            Ok(())
        );
    }
}
