//! [`EtcdBus`]: the state bus on etcd v3, through `etcd-client`.
//!
//! - **Connection.** [`EtcdBus::connect`] accepts `http://host:port` or bare
//!   `host:port` endpoints (no TLS: the workspace builds `etcd-client`
//!   without a TLS feature). Without credentials it does not touch the
//!   network: the first call reports [`BusError::Unavailable`] if etcd is
//!   down, and the same client reconnects by itself once etcd is back.
//!   HTTP/2 keepalive is always on (also while idle): without it a frozen or
//!   black-holed etcd leaves a watch hanging forever. etcd enforces
//!   `--grpc-keepalive-min-time` (5 s by default) and answers faster pings
//!   with `GOAWAY too_many_pings`, so keep [`EtcdOptions::keep_alive_interval`]
//!   at 5 s or more unless the server is configured otherwise (measured on
//!   3.4.23: 1 s pings broke an idle watch after 4 s; 5 s pings kept one open
//!   for 45 s; the defaults notice a frozen etcd in about 7 s).
//! - **Watches** are one etcd watch per gRPC stream (progress requests are
//!   only answered when every watcher on a stream is synced). The client never
//!   re-creates a broken stream: every stream error, server-side cancel or end
//!   is `WatchEnded` and the caller re-watches from its last revision + 1; a
//!   cancel carrying a compaction revision is [`BusError::Compacted`].
//! - **Writes.** [`StateBus::apply`] is one transaction without compares.
//!   etcd's defaults allow [`MAX_TXN_OPS`] ops and [`MAX_REQUEST_BYTES`] per
//!   request: more ops are refused here as `Rejected` before sending, a too
//!   large request is refused by etcd as `Rejected`; the caller chunks.
//! - **Leases.** The caller ticks [`LeasedKey::keep_alive`] (every ttl/3);
//!   nothing renews in the background. Lease ttls are whole seconds (rounded
//!   up), and etcd raises ttls below its minimum (about 2 s).
//! - **Errors.** Connection refused, timeouts, no leader, broken transport →
//!   `Unavailable`; anything else etcd refuses → `Rejected`.
//!
//! Layout: this module holds the options, the client and the [`StateBus`]
//! impl; `convert` maps etcd-client errors and messages onto bus types,
//! `watch` is the [`Watch`] handle, `lease` the [`LeasedKey`] handle.

mod convert;
mod lease;
mod watch;

#[cfg(test)]
mod tests;

use super::{BusError, Guard, LeasedKey, Op, PrefixRead, StateBus, Watch};
use async_trait::async_trait;
use convert::{convert_kv, header_revision, map_error};
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, GetOptions, ResponseHeader, Txn,
    TxnOp, WatchOptions,
};
use lease::{EtcdLeasedKey, ttl_seconds};
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::timeout;
use watch::{EtcdWatch, cancel_error};

/// etcd's default `--max-txn-ops`: the most ops one [`StateBus::apply`] may carry.
pub const MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// etcd's default `--grpc-keepalive-min-time`: faster pings get a GOAWAY.
const ETCD_MIN_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Largest response accepted from a load or a watch (tonic's default is 4 MiB).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// How [`EtcdBus`] talks to etcd.
#[derive(Clone)]
pub struct EtcdOptions {
    /// Bound on establishing a connection (default 5 s).
    pub connect_timeout: Duration,
    /// Bound on every unary request and on opening a watch (default 5 s).
    pub request_timeout: Duration,
    /// HTTP/2 ping interval (default 5 s; see the module docs).
    pub keep_alive_interval: Duration,
    /// How long a ping may stay unanswered before the connection is
    /// declared dead and open watches fail (default 3 s).
    pub keep_alive_timeout: Duration,
    /// Fail calls (and cancel watches) on a member without a leader instead
    /// of serving possibly stale data (default true).
    pub require_leader: bool,
    /// etcd user and password, when etcd authentication is enabled.
    pub user: Option<(String, String)>,
    /// TLS to etcd (`https://` endpoints), when set.
    pub tls: Option<EtcdTls>,
}

/// TLS material for the etcd connection, as PEM.
#[derive(Clone, Default)]
pub struct EtcdTls {
    /// The CA that signed etcd's certificate (else the TLS stack's defaults).
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, for etcd's `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(5),
            keep_alive_timeout: Duration::from_secs(3),
            require_leader: true,
            user: None,
            tls: None,
        }
    }
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("require_leader", &self.require_leader)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field(
                "tls",
                &self.tls.as_ref().map(|t| {
                    (
                        t.ca_pem.as_ref().map(|_| "ca"),
                        t.identity.as_ref().map(|_| "client certificate"),
                    )
                }),
            )
            .finish()
    }
}

/// A [`StateBus`] on an etcd cluster; clones share the connection.
#[derive(Clone)]
pub struct EtcdBus {
    client: Client,
    request_timeout: Duration,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBus")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdBus {
    /// A client for `endpoints` (`http://host:port` or `host:port`). Only
    /// authenticates (and so only fails for an unreachable etcd) when
    /// `options.user` is set; see the module docs.
    pub async fn connect(endpoints: &[String], options: EtcdOptions) -> Result<Self, BusError> {
        if endpoints.is_empty() {
            return Err(BusError::Rejected("no etcd endpoints given".into()));
        }
        let endpoints = endpoints
            .iter()
            .map(|e| normalize_endpoint(e, options.tls.is_some()))
            .collect::<Result<Vec<_>, _>>()?;
        if options.keep_alive_interval < ETCD_MIN_PING_INTERVAL {
            tracing::warn!(
                interval = ?options.keep_alive_interval,
                "etcd keepalive interval below etcd's default grpc-keepalive-min-time of 5s; \
                 etcd may answer with goaway too_many_pings and break every watch"
            );
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(options.keep_alive_interval, options.keep_alive_timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(options.require_leader);
        if let Some((name, password)) = &options.user {
            connect = connect
                .with_user(name.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &options.tls {
            crate::tls::install_crypto_provider();
            let mut config = etcd_client::TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                config = config.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(etcd_client::Identity::from_pem(cert, key));
            }
            connect = connect.with_tls(config);
        }
        let client = Client::connect(&endpoints, Some(connect))
            .await
            .map_err(map_error)?;
        tracing::debug!(?endpoints, "etcd client created");
        Ok(Self {
            client,
            request_timeout: options.request_timeout,
            endpoints,
        })
    }

    /// The endpoints in use, normalised to `http://host:port`.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The underlying client, for what the bus does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The cheapest read etcd answers with a full header (count-only get).
    async fn probe(&self) -> Result<etcd_client::GetResponse, BusError> {
        self.client
            .kv_client()
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(map_error)
    }
}

/// Our ops as etcd transaction ops.
fn txn_ops(ops: Vec<Op>) -> Vec<TxnOp> {
    ops.into_iter()
        .map(|op| match op {
            Op::Put { key, value } => TxnOp::put(key, value, None),
            Op::Delete { key } => TxnOp::delete(key, None),
        })
        .collect()
}

/// `host:port` → `http://host:port` (`https://` with `tls`); a scheme
/// that does not match `tls` is refused (no endpoint silently skips TLS).
fn normalize_endpoint(endpoint: &str, tls: bool) -> Result<String, BusError> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.is_empty() {
        return Err(BusError::Rejected("empty etcd endpoint".into()));
    }
    let scheme = if tls { "https://" } else { "http://" };
    if endpoint.starts_with(scheme) {
        return Ok(endpoint.to_string());
    }
    if endpoint.contains("://") {
        return Err(BusError::Rejected(format!(
            "unsupported etcd endpoint {endpoint:?}: use {scheme}host:port{}",
            if tls {
                " (TLS is configured: every endpoint uses it)"
            } else {
                " (https:// needs [etcd] TLS settings)"
            }
        )));
    }
    Ok(format!("{scheme}{endpoint}"))
}

#[async_trait]
impl StateBus for EtcdBus {
    async fn load(&self, prefix: &str) -> Result<PrefixRead, BusError> {
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let response = kv
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(map_error)?;
        let revision = header_revision(response.header())?;
        let kvs = response.kvs().iter().map(convert_kv).collect();
        Ok(PrefixRead { kvs, revision })
    }

    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Box<dyn Watch>, BusError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start_revision)
            .with_progress_notify();
        let mut client = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let limit = self.request_timeout;
        let slow =
            || BusError::Unavailable(format!("etcd did not open the watch within {limit:?}"));
        let mut stream = timeout(limit, client.watch(prefix, Some(options)))
            .await
            .map_err(|_| slow())?
            .map_err(map_error)?;
        let first = timeout(limit, stream.message())
            .await
            .map_err(|_| slow())?
            .map_err(map_error)?;
        match first {
            Some(response) if response.canceled() => Err(cancel_error(&response, start_revision)),
            Some(response) if response.created() => {
                tracing::debug!(prefix, start_revision, "etcd watch created");
                Ok(Box::new(EtcdWatch {
                    stream,
                    next_revision: start_revision,
                    ended: None,
                }))
            }
            Some(_) => Err(BusError::WatchEnded(
                "etcd watch did not start with a create response".into(),
            )),
            None => Err(BusError::WatchEnded(
                "etcd closed the watch stream before creating it".into(),
            )),
        }
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<i64, BusError> {
        if ops.is_empty() {
            return self.current_revision().await;
        }
        validate_ops(&ops)?;
        let ops = txn_ops(ops);
        let response = self
            .client
            .kv_client()
            .txn(Txn::new().and_then(ops))
            .await
            .map_err(map_error)?;
        header_revision(response.header())
    }

    async fn apply_guarded(&self, guards: &[Guard], ops: Vec<Op>) -> Result<Option<i64>, BusError> {
        if guards.len() + ops.len() > MAX_TXN_OPS {
            return Err(BusError::Rejected(format!(
                "{} guards and {} ops exceed etcd's {MAX_TXN_OPS} per transaction",
                guards.len(),
                ops.len()
            )));
        }
        validate_ops(&ops)?;
        let compares: Vec<Compare> = guards
            .iter()
            .map(|g| Compare::mod_revision(g.key.clone(), CompareOp::Equal, g.mod_revision))
            .collect();
        let ops = txn_ops(ops);
        let response = self
            .client
            .kv_client()
            .txn(Txn::new().when(compares).and_then(ops))
            .await
            .map_err(map_error)?;
        if !response.succeeded() {
            return Ok(None);
        }
        header_revision(response.header()).map(Some)
    }

    async fn current_revision(&self) -> Result<i64, BusError> {
        header_revision(self.probe().await?.header())
    }

    async fn incarnation(&self) -> Result<u64, BusError> {
        Ok(self
            .probe()
            .await?
            .header()
            .map(ResponseHeader::cluster_id)
            .unwrap_or(0))
    }

    async fn compact(&self, revision: i64) -> Result<(), BusError> {
        let options = CompactionOptions::new().with_physical();
        match self
            .client
            .kv_client()
            .compact(revision, Some(options))
            .await
            .map_err(map_error)
        {
            Ok(_) => Ok(()),
            // Already compacted at or past `revision`: nothing to do.
            Err(BusError::Compacted { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn lease_put(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Box<dyn LeasedKey>, BusError> {
        validate_ops(&[Op::Put {
            key: key.to_owned(),
            value: value.clone(),
        }])?;
        let mut leased = EtcdLeasedKey {
            client: self.client.clone(),
            key: key.to_string(),
            value,
            ttl: ttl_seconds(ttl)?,
            lease_id: 0,
            keeper: None,
            revoked: false,
            request_timeout: self.request_timeout,
        };
        leased.grant_and_put().await?;
        Ok(Box::new(leased))
    }
}

/// Rejects what etcd would reject with its default limits (both buses
/// check it, so a write refused by one is refused by the other).
pub(crate) fn validate_ops(ops: &[Op]) -> Result<(), BusError> {
    if ops.len() > MAX_TXN_OPS {
        return Err(BusError::Rejected(format!(
            "{} ops in one transaction, at most {MAX_TXN_OPS} allowed; split the write",
            ops.len()
        )));
    }
    let mut keys = HashSet::with_capacity(ops.len());
    let mut bytes = 0usize;
    for op in ops {
        let key = match op {
            Op::Put { key, value } => {
                bytes += key.len() + value.len();
                key
            }
            Op::Delete { key } => {
                bytes += key.len();
                key
            }
        };
        if key.is_empty() {
            return Err(BusError::Rejected("empty key".into()));
        }
        if !keys.insert(key.as_str()) {
            return Err(BusError::Rejected(format!(
                "duplicate key {key:?} in one transaction"
            )));
        }
    }
    if bytes > MAX_REQUEST_BYTES {
        return Err(BusError::Rejected(format!(
            "transaction of {bytes} bytes exceeds the {MAX_REQUEST_BYTES}-byte request limit"
        )));
    }
    Ok(())
}
