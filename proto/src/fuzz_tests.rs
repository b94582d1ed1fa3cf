//! Fuzzing the codec guard (property tests; `scripts/fuzz.sh` runs them
//! longer), for every `memtrace.v1` request type (the input of every method
//! of every `memtrace.v1` service; a test checks the list against the
//! descriptor set): whatever bytes arrive as a request, the guard and the
//! decoder answer — accept or refuse — without panicking; a request without
//! memories passes the guard exactly when it is at most
//! [`MAX_SMALL_REQUEST_BYTES`] long; and a memory batch the guard passes
//! never decodes into more memories or tags than its bounds allow.

use crate::codec::{
    Guard, MAX_DECODED_MEMORIES, MAX_DECODED_TAGS, MAX_SMALL_REQUEST_BYTES, guard, guard_of_name,
    memtrace_v1_inputs,
};
use crate::v1::*;
use proptest::prelude::*;
use prost::Message;

/// Bytes that look like protobuf: random fields (varint, length-delimited
/// with nested random content, fixed), sometimes truncated.
fn wire() -> impl Strategy<Value = Vec<u8>> {
    let field = (1u8..16, 0u8..4, prop::collection::vec(any::<u8>(), 0..24));
    prop::collection::vec(field, 0..40).prop_map(|fields| {
        let mut out = Vec::new();
        for (number, kind, payload) in fields {
            match kind {
                0 => {
                    out.push(number << 3);
                    out.push(payload.first().copied().unwrap_or(0) & 0x7f);
                }
                1 => {
                    out.push((number << 3) | 2);
                    out.push(payload.len() as u8);
                    out.extend_from_slice(&payload);
                }
                2 => {
                    out.push((number << 3) | 5);
                    out.extend_from_slice(&[1, 2, 3, 4]);
                }
                _ => out.extend_from_slice(&payload),
            }
        }
        out
    })
}

/// Guard, then decode, as the server's decoder does.
fn check<U: Message + Default + 'static>(bytes: &[u8]) -> Option<U> {
    guard::<U>(bytes).ok()?;
    U::decode(bytes).ok()
}

/// What the server's decoder did with some bytes: whether the guard passed
/// them, and whether they then decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    guard_passed: bool,
    decoded: bool,
}

fn answer<U: Message + Default + 'static>(bytes: &[u8]) -> Answer {
    let guard_passed = guard::<U>(bytes).is_ok();
    Answer {
        guard_passed,
        decoded: guard_passed && U::decode(bytes).is_ok(),
    }
}

/// Every `memtrace.v1` request type: full protobuf name, and the decoder's
/// answer for bytes arriving as that type.
macro_rules! requests {
    ($($t:ident),* $(,)?) => {
        &[$((concat!("memtrace.v1.", stringify!($t)), answer::<$t> as Decode)),*]
    };
}

/// What the server's decoder does with bytes arriving as one type.
type Decode = fn(&[u8]) -> Answer;

const REQUESTS: &[(&str, Decode)] = requests![
    WriteBatch,
    CreateMemoriesRequest,
    CreateMemoryRequest,
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
];

#[test]
fn every_memtrace_v1_request_is_fuzzed() {
    let mut fuzzed: Vec<String> = REQUESTS.iter().map(|(n, _)| (*n).to_owned()).collect();
    fuzzed.sort();
    assert_eq!(
        fuzzed,
        memtrace_v1_inputs(),
        "REQUESTS must list the input of every memtrace.v1 RPC"
    );
}

proptest! {
    #[test]
    fn any_bytes_are_answered_without_panicking(bytes in prop_oneof![
        wire(),
        prop::collection::vec(any::<u8>(), 0..512),
    ]) {
        for (_, answer) in REQUESTS {
            let _ = answer(&bytes);
        }
    }

    #[test]
    fn requests_without_memories_pass_exactly_within_the_size_bound(
        len in (MAX_SMALL_REQUEST_BYTES - 64)..(MAX_SMALL_REQUEST_BYTES + 64),
        head in wire(),
    ) {
        // protobuf-looking bytes, then zeros (field 0: malformed, so the
        // decoder refuses quickly what the guard lets through)
        let mut bytes = head;
        bytes.resize(len, 0);
        for (name, answer) in REQUESTS {
            let answer = answer(&bytes);
            match guard_of_name(name) {
                Guard::Small => prop_assert_eq!(
                    answer.guard_passed,
                    len <= MAX_SMALL_REQUEST_BYTES,
                    "{} of {} bytes", name, len
                ),
                Guard::Memories { .. } => {}
                Guard::None => prop_assert!(false, "{} is not guarded", name),
            }
        }
    }

    #[test]
    fn what_the_guard_passes_stays_within_its_bounds(
        memories in 0usize..50,
        tags in 0usize..50,
        extra in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let batch = WriteBatch {
            sequence: 1,
            memories: vec![
                MemoryInput { tags: vec![String::new(); tags], ..MemoryInput::default() };
                memories
            ],
        };
        let mut bytes = batch.encode_to_vec();
        bytes.extend_from_slice(&extra);
        if let Some(decoded) = check::<WriteBatch>(&bytes) {
            prop_assert!(decoded.memories.len() <= MAX_DECODED_MEMORIES);
            let all_tags: usize = decoded.memories.iter().map(|m| m.tags.len()).sum();
            prop_assert!(all_tags <= MAX_DECODED_TAGS);
        }
        let search = SearchMemoriesRequest {
            tags: vec![String::new(); tags * 1000],
            ..SearchMemoriesRequest::default()
        }
        .encode_to_vec();
        let passed = check::<SearchMemoriesRequest>(&search).is_some();
        prop_assert_eq!(passed, search.len() <= MAX_SMALL_REQUEST_BYTES);
    }
}
