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

use super::{BusError, Event, KeyValue, LeasedKey, Op, Snapshot, StateBus, Watch, WatchMessage};
use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, ResponseHeader, Txn, TxnOp, WatchOptions, WatchResponse, WatchStream,
};
use std::time::Duration;
use tokio::time::timeout;
use tonic::Code;

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
            .map(|e| normalize_endpoint(e))
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

/// `host:port` → `http://host:port`; `http://` kept; other schemes refused.
fn normalize_endpoint(endpoint: &str) -> Result<String, BusError> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.is_empty() {
        return Err(BusError::Rejected("empty etcd endpoint".into()));
    }
    if endpoint.starts_with("http://") {
        return Ok(endpoint.to_string());
    }
    if endpoint.contains("://") {
        return Err(BusError::Rejected(format!(
            "unsupported etcd endpoint {endpoint:?}: use http://host:port (TLS is not built in)"
        )));
    }
    Ok(format!("http://{endpoint}"))
}

/// Maps a client error (see the module docs).
fn map_error(error: etcd_client::Error) -> BusError {
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

fn map_status(status: &tonic::Status) -> BusError {
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

fn is_lease_not_found(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(s) if s.code() == Code::NotFound)
}

fn header_revision(header: Option<&ResponseHeader>) -> Result<i64, BusError> {
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

fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: key_string(kv.key()),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    }
}

/// A watch event. `Event::event_type` panics on unknown type numbers, so the
/// kind is read from the kv instead: etcd's delete tombstones carry version
/// 0, every live key version ≥ 1. An event without a kv is a protocol error.
fn convert_event(event: &etcd_client::Event) -> Result<Event, BusError> {
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

fn ttl_seconds(ttl: Duration) -> Result<i64, BusError> {
    if ttl.is_zero() {
        return Err(BusError::Rejected("lease ttl must be positive".into()));
    }
    Ok(i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX))
}

#[async_trait]
impl StateBus for EtcdBus {
    async fn load(&self, prefix: &str) -> Result<Snapshot, BusError> {
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
        Ok(Snapshot { kvs, revision })
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
        if ops.len() > MAX_TXN_OPS {
            return Err(BusError::Rejected(format!(
                "{} ops in one transaction, etcd allows at most {MAX_TXN_OPS} by default; split the write",
                ops.len()
            )));
        }
        let ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(key, value, None),
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let response = self
            .client
            .kv_client()
            .txn(Txn::new().and_then(ops))
            .await
            .map_err(map_error)?;
        header_revision(response.header())
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

/// The error a canceled watch response stands for.
fn cancel_error(response: &WatchResponse, requested: i64) -> BusError {
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
struct EtcdWatch {
    stream: WatchStream,
    /// The revision a resumed watch would start from (for `Compacted`).
    next_revision: i64,
    /// Set once the stream failed: every later call returns it again.
    ended: Option<BusError>,
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

/// A key under an etcd lease, renewed by the caller.
struct EtcdLeasedKey {
    client: Client,
    key: String,
    value: Vec<u8>,
    ttl: i64,
    lease_id: i64,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    revoked: bool,
    request_timeout: Duration,
}

impl EtcdLeasedKey {
    fn check_not_revoked(&self) -> Result<(), BusError> {
        if self.revoked {
            Err(BusError::Rejected(format!(
                "lease of {:?} was revoked",
                self.key
            )))
        } else {
            Ok(())
        }
    }

    /// Grants a fresh lease and puts the current value under it.
    async fn grant_and_put(&mut self) -> Result<(), BusError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379"),
            Ok("http://127.0.0.1:2379".into())
        );
        assert_eq!(
            normalize_endpoint(" http://etcd:2379/ "),
            Ok("http://etcd:2379".into())
        );
        assert!(matches!(
            normalize_endpoint("https://etcd:2379"),
            Err(BusError::Rejected(_))
        ));
        assert!(matches!(normalize_endpoint(""), Err(BusError::Rejected(_))));
    }

    #[test]
    fn statuses_map_to_bus_errors() {
        let unavailable = tonic::Status::unavailable("etcdserver: no leader");
        assert!(matches!(map_status(&unavailable), BusError::Unavailable(_)));
        let compacted =
            tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert!(matches!(map_status(&compacted), BusError::Compacted { .. }));
        let future =
            tonic::Status::out_of_range("etcdserver: mvcc: required revision is a future revision");
        assert!(matches!(map_status(&future), BusError::Rejected(_)));
        let too_large = tonic::Status::invalid_argument("etcdserver: request is too large");
        assert!(matches!(map_status(&too_large), BusError::Rejected(_)));
        let broken =
            tonic::Status::unknown("h2 protocol error: error reading a body from connection");
        assert!(matches!(map_status(&broken), BusError::Unavailable(_)));
    }

    #[test]
    fn lease_ttls_round_up_to_seconds() {
        assert_eq!(ttl_seconds(Duration::from_millis(1)), Ok(1));
        assert_eq!(ttl_seconds(Duration::from_millis(2000)), Ok(2));
        assert_eq!(ttl_seconds(Duration::from_millis(2001)), Ok(3));
        assert!(ttl_seconds(Duration::ZERO).is_err());
    }

    #[tokio::test]
    async fn connect_without_endpoints_is_rejected() {
        let err = EtcdBus::connect(&[], EtcdOptions::default()).await.err();
        assert!(matches!(err, Some(BusError::Rejected(_))), "{err:?}");
    }

    #[tokio::test]
    async fn unreachable_etcd_is_unavailable() {
        // Port 1 on loopback: nothing listens, the connection is refused.
        let options = EtcdOptions {
            connect_timeout: Duration::from_secs(1),
            ..EtcdOptions::default()
        };
        let bus = EtcdBus::connect(&["127.0.0.1:1".to_string()], options)
            .await
            .expect("lazy connect");
        let err = bus.current_revision().await.err();
        assert!(matches!(err, Some(BusError::Unavailable(_))), "{err:?}");
    }
}
