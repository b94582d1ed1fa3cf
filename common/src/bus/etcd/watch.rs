//! [`EtcdWatch`]: one etcd watch on its own gRPC stream as a [`Watch`],
//! turning watch responses into [`WatchMessage`]s and cancels into errors.

use super::convert::convert_event;
use crate::bus::{BusError, Event, Watch, WatchMessage};
use async_trait::async_trait;
use etcd_client::{ResponseHeader, WatchResponse, WatchStream};

/// The error a canceled watch response stands for.
pub(super) fn cancel_error(response: &WatchResponse, requested: i64) -> BusError {
    if response.compact_revision() > 0 {
        return BusError::Compacted {
            requested,
            compact_revision: response.compact_revision(),
        };
    }
    let reason = match response.cancel_reason() {
        "" => "no reason given",
        reason => reason,
    };
    BusError::WatchEnded(format!("etcd canceled the watch: {reason}"))
}

/// One etcd watch on its own gRPC stream.
pub(super) struct EtcdWatch {
    pub(super) stream: WatchStream,
    /// The revision a resumed watch would start from (for `Compacted`).
    pub(super) next_revision: i64,
    /// Set once the stream failed: every later call returns it again.
    pub(super) ended: Option<BusError>,
}

impl EtcdWatch {
    fn end(&mut self, error: BusError) -> BusError {
        tracing::debug!(error = %error, "etcd watch ended");
        self.ended = Some(error.clone());
        error
    }
}

#[async_trait]
impl Watch for EtcdWatch {
    async fn next(&mut self) -> Result<WatchMessage, BusError> {
        if let Some(error) = &self.ended {
            return Err(error.clone());
        }
        loop {
            let response = match self.stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Err(
                        self.end(BusError::WatchEnded("etcd closed the watch stream".into()))
                    );
                }
                Err(e) => {
                    return Err(self.end(BusError::WatchEnded(format!(
                        "etcd watch stream failed: {e}"
                    ))));
                }
            };
            if response.canceled() {
                let error = cancel_error(&response, self.next_revision);
                return Err(self.end(error));
            }
            let header = response.header().map(ResponseHeader::revision);
            let converted = response.events().iter().map(convert_event);
            let events = match converted.collect::<Result<Vec<_>, _>>() {
                Ok(events) => events,
                Err(error) => return Err(self.end(error)),
            };
            let Some(last) = events.last().map(Event::mod_revision) else {
                match header {
                    // A repeated create response carries nothing to deliver.
                    _ if response.created() => continue,
                    Some(revision) => return Ok(WatchMessage::Progress { revision }),
                    None => continue,
                }
            };
            self.next_revision = last + 1;
            return Ok(WatchMessage::Events {
                revision: header.unwrap_or(last).max(last),
                events,
            });
        }
    }

    async fn request_progress(&mut self) -> Result<(), BusError> {
        if let Some(error) = &self.ended {
            return Err(error.clone());
        }
        match self.stream.request_progress().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.end(BusError::WatchEnded(format!(
                "etcd watch stream closed: {e}"
            )))),
        }
    }
}
