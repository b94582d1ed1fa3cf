//! [`MemoryWatch`]: the [`Watch`] handle of a [`MemoryBus`](super::MemoryBus),
//! popping its watcher's queue in the shared state and unregistering the
//! watcher when dropped.

use super::Inner;
use crate::bus::{BusError, Watch, WatchMessage};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::Notify;

/// A watch on a [`MemoryBus`]; removes itself from the bus when dropped.
pub(super) struct MemoryWatch {
    pub(super) inner: Arc<Inner>,
    pub(super) id: u64,
    pub(super) notify: Arc<Notify>,
}

#[async_trait]
impl Watch for MemoryWatch {
    async fn next(&mut self) -> Result<WatchMessage, BusError> {
        loop {
            {
                let mut state = self.inner.lock();
                let Some(watcher) = state.watchers.get_mut(&self.id) else {
                    return Err(BusError::WatchEnded("watch closed".into()));
                };
                if let Some((error, drain)) = &watcher.end
                    && (!*drain || watcher.queue.is_empty())
                {
                    let error = error.clone();
                    watcher.queue.clear();
                    return Err(error);
                }
                if let Some(message) = watcher.queue.pop_front() {
                    return Ok(message);
                }
            }
            // `notify_one` stores a permit, so a wake-up between the check
            // above and this await is not lost.
            self.notify.notified().await;
        }
    }

    async fn request_progress(&mut self) -> Result<(), BusError> {
        let mut state = self.inner.lock();
        let revision = state.revision;
        let Some(watcher) = state.watchers.get_mut(&self.id) else {
            return Err(BusError::WatchEnded("watch closed".into()));
        };
        if let Some((error, _)) = &watcher.end {
            return Err(error.clone());
        }
        // Repeated requests collapse into one pending notification.
        if let Some(WatchMessage::Progress { revision: pending }) = watcher.queue.back_mut() {
            *pending = revision;
        } else {
            watcher.queue.push_back(WatchMessage::Progress { revision });
        }
        watcher.notify.notify_one();
        Ok(())
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.inner.lock().watchers.remove(&self.id);
    }
}
