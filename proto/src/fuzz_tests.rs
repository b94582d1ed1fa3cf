//! Fuzzing the codec guard (property tests; `scripts/fuzz.sh` runs them
//! longer): whatever bytes arrive as a `memtrace.v1` request, the guard and
//! the decoder answer — accept or refuse — without panicking, and a message
//! the guard passes never decodes into more repeated items than its bounds
//! allow.

use crate::codec::{MAX_DECODED_MEMORIES, MAX_DECODED_TAGS, MAX_SMALL_REQUEST_BYTES, guard};
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

proptest! {
    #[test]
    fn any_bytes_are_answered_without_panicking(bytes in prop_oneof![
        wire(),
        prop::collection::vec(any::<u8>(), 0..512),
    ]) {
        let _ = check::<WriteBatch>(&bytes);
        let _ = check::<CreateMemoriesRequest>(&bytes);
        let _ = check::<CreateMemoryRequest>(&bytes);
        let _ = check::<SearchMemoriesRequest>(&bytes);
        let _ = check::<ListMemoriesRequest>(&bytes);
        let _ = check::<SessionContextRequest>(&bytes);
        let _ = check::<RegisterAgentRequest>(&bytes);
        let _ = check::<UpdateSessionRequest>(&bytes);
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
