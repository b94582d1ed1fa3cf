//! Leased keys on a [`MemoryBus`]: granting a lease with its key, the
//! per-lease tokio timer that expires it, and [`MemoryLeasedKey`], the
//! [`LeasedKey`] handle that renews, updates and revokes it.

use super::state::State;
use super::{Inner, MemoryBus};
use crate::bus::etcd::validate_ops;
use crate::bus::{BusError, LeasedKey, Op};
use async_trait::async_trait;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

impl MemoryBus {
    /// Grants a lease, puts `key` under it and starts its expiry timer.
    pub(super) fn put_leased(
        &self,
        state: &mut State,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> i64 {
        let (id, deadline) = state.grant(ttl);
        state.commit(vec![(key.to_string(), Some((value, Some(id))))]);
        spawn_expiry(Arc::downgrade(&self.inner), id, deadline);
        id
    }
}

/// Sleeps until the lease's deadline and expires it, following renewals;
/// stops once the lease is gone or the bus was dropped. Without a tokio
/// runtime only the lazy expiry on each operation applies.
fn spawn_expiry(inner: Weak<Inner>, id: i64, deadline: Instant) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let mut deadline = deadline;
        loop {
            tokio::time::sleep_until(deadline).await;
            let Some(inner) = inner.upgrade() else { return };
            let mut state = inner.lock();
            state.expire_due(Instant::now());
            match state.leases.get(&id) {
                Some(lease) => deadline = lease.deadline,
                None => return,
            }
        }
    });
}

/// A key under a lease on a [`MemoryBus`].
pub(super) struct MemoryLeasedKey {
    pub(super) bus: MemoryBus,
    pub(super) key: String,
    pub(super) value: Vec<u8>,
    pub(super) ttl: Duration,
    pub(super) lease_id: i64,
    pub(super) revoked: bool,
}

impl MemoryLeasedKey {
    fn check_not_revoked(&self) -> Result<(), BusError> {
        super::super::ensure_not_revoked(self.revoked, &self.key)
    }
}

#[async_trait]
impl LeasedKey for MemoryLeasedKey {
    async fn keep_alive(&mut self) -> Result<(), BusError> {
        self.check_not_revoked()?;
        let mut state = self.bus.available()?;
        if let Some(lease) = state.leases.get_mut(&self.lease_id) {
            lease.deadline = super::state::lease_deadline(lease.ttl);
            return Ok(());
        }
        tracing::info!(key = %self.key, "memory bus lease had expired, granting a new one");
        self.lease_id = self
            .bus
            .put_leased(&mut state, &self.key, self.value.clone(), self.ttl);
        Ok(())
    }

    async fn update(&mut self, value: Vec<u8>) -> Result<(), BusError> {
        self.check_not_revoked()?;
        validate_ops(&[Op::Put {
            key: self.key.clone(),
            value: value.clone(),
        }])?;
        let mut state = self.bus.available()?;
        if state.leases.contains_key(&self.lease_id) {
            state.commit(vec![(
                self.key.clone(),
                Some((value.clone(), Some(self.lease_id))),
            )]);
        } else {
            self.lease_id = self
                .bus
                .put_leased(&mut state, &self.key, value.clone(), self.ttl);
        }
        self.value = value;
        Ok(())
    }

    async fn revoke(&mut self) -> Result<(), BusError> {
        let mut state = self.bus.available()?;
        state.drop_lease(self.lease_id);
        self.revoked = true;
        Ok(())
    }
}
