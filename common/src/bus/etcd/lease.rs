//! [`EtcdLeasedKey`]: a key under an etcd lease as a [`LeasedKey`] — lease
//! ttls in whole seconds, granting with the put, caller-driven renewal over a
//! keep-alive stream, re-granting a lease that expired, and revoking.

use super::convert::{is_lease_not_found, map_error};
use crate::bus::{BusError, LeasedKey, Op};
use async_trait::async_trait;
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use std::time::Duration;
use tokio::time::timeout;

pub(super) fn ttl_seconds(ttl: Duration) -> Result<i64, BusError> {
    if ttl.is_zero() {
        return Err(BusError::Rejected("lease ttl must be positive".into()));
    }
    Ok(i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX))
}

/// A key under an etcd lease, renewed by the caller.
pub(super) struct EtcdLeasedKey {
    pub(super) client: Client,
    pub(super) key: String,
    pub(super) value: Vec<u8>,
    pub(super) ttl: i64,
    pub(super) lease_id: i64,
    pub(super) keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    pub(super) revoked: bool,
    pub(super) request_timeout: Duration,
}

impl EtcdLeasedKey {
    fn check_not_revoked(&self) -> Result<(), BusError> {
        super::super::ensure_not_revoked(self.revoked, &self.key)
    }

    /// Grants a fresh lease and puts the current value under it.
    pub(super) async fn grant_and_put(&mut self) -> Result<(), BusError> {
        let granted = self
            .client
            .lease_client()
            .grant(self.ttl, None)
            .await
            .map_err(map_error)?;
        if !granted.error().is_empty() {
            return Err(BusError::Rejected(format!(
                "etcd lease grant: {}",
                granted.error()
            )));
        }
        let options = PutOptions::new().with_lease(granted.id());
        self.client
            .kv_client()
            .put(self.key.clone(), self.value.clone(), Some(options))
            .await
            .map_err(map_error)?;
        self.lease_id = granted.id();
        self.keeper = None;
        tracing::debug!(key = %self.key, lease_id = self.lease_id, ttl = self.ttl, "etcd lease granted");
        Ok(())
    }

    /// Sends one renewal; `Ok(false)` when the lease no longer exists.
    async fn renew(&mut self) -> Result<bool, BusError> {
        let limit = self.request_timeout;
        let slow = || {
            BusError::Unavailable(format!(
                "etcd did not answer the lease keep-alive within {limit:?}"
            ))
        };
        let Some((keeper, stream)) = self.keeper.as_mut() else {
            // Opening the stream renews once and fails for an unknown lease.
            let mut lease = self.client.lease_client();
            let opened = timeout(limit, lease.keep_alive(self.lease_id))
                .await
                .map_err(|_| slow())?;
            return match opened {
                Ok(pair) => {
                    self.keeper = Some(pair);
                    Ok(true)
                }
                Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                    Ok(false)
                }
                Err(e) => Err(map_error(e)),
            };
        };
        keeper.keep_alive().await.map_err(map_error)?;
        match timeout(limit, stream.message()).await.map_err(|_| slow())? {
            Ok(Some(response)) => Ok(response.ttl() > 0),
            Ok(None) => Err(BusError::Unavailable(
                "etcd closed the lease keep-alive stream".into(),
            )),
            Err(e) => Err(map_error(e)),
        }
    }
}

#[async_trait]
impl LeasedKey for EtcdLeasedKey {
    async fn keep_alive(&mut self) -> Result<(), BusError> {
        self.check_not_revoked()?;
        match self.renew().await {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::info!(key = %self.key, lease_id = self.lease_id, "etcd lease expired, granting a new one");
                self.grant_and_put().await
            }
            Err(e) => {
                // Start a fresh keep-alive stream next time.
                self.keeper = None;
                Err(e)
            }
        }
    }

    async fn update(&mut self, value: Vec<u8>) -> Result<(), BusError> {
        self.check_not_revoked()?;
        super::validate_ops(&[Op::Put {
            key: self.key.clone(),
            value: value.clone(),
        }])?;
        let options = PutOptions::new().with_lease(self.lease_id);
        match self
            .client
            .kv_client()
            .put(self.key.clone(), value.clone(), Some(options))
            .await
        {
            Ok(_) => {
                self.value = value;
                Ok(())
            }
            Err(e) if is_lease_not_found(&e) => {
                tracing::info!(key = %self.key, lease_id = self.lease_id, "etcd lease gone on update, granting a new one");
                self.value = value;
                self.grant_and_put().await
            }
            Err(e) => Err(map_error(e)),
        }
    }

    async fn revoke(&mut self) -> Result<(), BusError> {
        self.keeper = None;
        match self.client.lease_client().revoke(self.lease_id).await {
            Ok(_) => {}
            Err(e) if is_lease_not_found(&e) => {}
            Err(e) => return Err(map_error(e)),
        }
        self.revoked = true;
        Ok(())
    }
}
