//! Translation from `etcd-client` to bus types: client errors and gRPC
//! statuses to [`BusError`] (see the parent module's **Errors**), response
//! headers to revisions, and etcd kvs and watch events to [`KeyValue`] and
//! [`Event`].

use crate::bus::{BusError, Event, KeyValue};
use etcd_client::ResponseHeader;
use tonic::Code;

/// Maps a client error (see the module docs).
pub(super) fn map_error(error: etcd_client::Error) -> BusError {
    use etcd_client::Error as E;
    match error {
        E::GRpcStatus(status) => map_status(&status),
        E::TransportError(e) => BusError::Unavailable(format!("etcd transport error: {e}")),
        E::IoError(e) => BusError::Unavailable(format!("etcd io error: {e}")),
        E::WatchError(m) => BusError::Unavailable(format!("etcd watch request failed: {m}")),
        E::LeaseKeepAliveError(m) => {
            BusError::Unavailable(format!("etcd lease keep-alive failed: {m}"))
        }
        other => BusError::Rejected(other.to_string()),
    }
}

pub(super) fn map_status(status: &tonic::Status) -> BusError {
    let message = status.message();
    let text = format!("etcd: {message} ({:?})", status.code());
    let lower = message.to_ascii_lowercase();
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
            BusError::Unavailable(text)
        }
        Code::ResourceExhausted if lower.contains("too many requests") => {
            BusError::Unavailable(text)
        }
        // etcd's error carries no revisions; the watch path reports them.
        Code::OutOfRange if lower.contains("compacted") => BusError::Compacted {
            requested: 0,
            compact_revision: 0,
        },
        Code::Unknown | Code::Internal if looks_like_transport(&lower) => {
            BusError::Unavailable(text)
        }
        _ => BusError::Rejected(text),
    }
}

/// tonic reports broken connections as `Unknown`/`Internal` with the cause.
fn looks_like_transport(lower: &str) -> bool {
    [
        "transport",
        "connect",
        "connection",
        "h2 protocol",
        "broken pipe",
        "reset",
        "timed out",
        "body",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

pub(super) fn is_lease_not_found(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(s) if s.code() == Code::NotFound)
}

pub(super) fn header_revision(header: Option<&ResponseHeader>) -> Result<i64, BusError> {
    header
        .map(ResponseHeader::revision)
        .ok_or_else(|| BusError::Rejected("etcd response without a header".into()))
}

fn key_string(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(key) => key.to_string(),
        Err(_) => {
            tracing::warn!(key = ?bytes, "etcd key is not utf-8, replacing invalid bytes");
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

pub(super) fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: key_string(kv.key()),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    }
}

/// A watch event. `Event::event_type` panics on unknown type numbers, so the
/// kind is read from the kv instead: etcd's delete tombstones carry version
/// 0, every live key version ≥ 1. An event without a kv is a protocol error.
pub(super) fn convert_event(event: &etcd_client::Event) -> Result<Event, BusError> {
    let Some(kv) = event.kv() else {
        return Err(BusError::WatchEnded(
            "etcd sent a watch event without a key".into(),
        ));
    };
    if kv.version() == 0 {
        Ok(Event::Delete {
            key: key_string(kv.key()),
            mod_revision: kv.mod_revision(),
        })
    } else {
        Ok(Event::Put(convert_kv(kv)))
    }
}
