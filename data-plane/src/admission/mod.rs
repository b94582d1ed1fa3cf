//! Admission: what every agent request passes before the memory service
//! sees it, whichever adapter it came through (REST or gRPC) — the worker
//! has a snapshot, the API key or agent token authenticates against it
//! ([`auth`]; an agent-bound token's service acts only as its agent), the key
//! carries the route's scope, the org is under its request rate
//! ([`limits`]), and the org's store is resolved ([`stores`]). The result is
//! the org's [`OrgService`]. Transport-neutral: adapters hand in the
//! credential they read from headers or metadata.

pub mod auth;
pub mod legacy;
pub mod limits;
pub mod refusals;
pub mod stores;
pub mod tokens;

pub use auth::{Principal, Scope, credential};
pub use stores::{OrgStores, StoreResolver};

use crate::service::{OrgService, ServiceError, ServiceShared};
use crate::snapshot::SnapshotHandle;
use limits::{RateLimiter, ReadSlots};
use std::sync::Arc;
use std::time::Instant;

/// Largest request accepted at all, REST body or gRPC message (an org's
/// `max_payload_bytes` may be lower; it is checked once the org is known).
pub const MAX_REQUEST_BYTES: usize = 32 << 20;

/// What admission needs, shared by both adapters (cheap to clone).
#[derive(Clone)]
pub struct Admission {
    pub snapshot: Arc<SnapshotHandle>,
    /// Per-org request rate limits (this worker's share of the org's).
    pub limiter: Arc<RateLimiter>,
    /// Per-org reads in flight on this worker.
    pub reads: Arc<ReadSlots>,
    pub stores: Arc<dyn StoreResolver>,
    pub shared: Arc<ServiceShared>,
    /// What admission refused, by reason (`/metrics`).
    pub refusals: refusals::Refusals,
    /// Requests admitted with a Go memtrace key, by org (`/metrics`).
    pub legacy_requests: legacy::LegacyRequests,
    /// Where tenants' deletes are recorded (none: deletes answer 503).
    pub erasures: Option<Arc<crate::erasure::ErasureRequests>>,
    /// The keys `POST /api/v1/tokens` may sign with, one per fleet key, the
    /// active one first (none: minting answers 503).
    pub token_minters: Arc<[memtrace_common::signing::SigningKey]>,
}

impl Admission {
    /// Admission over `snapshot`, with fresh rate limiters and shared
    /// service state.
    pub fn new(snapshot: Arc<SnapshotHandle>, stores: Arc<dyn StoreResolver>) -> Self {
        Self {
            snapshot,
            limiter: Arc::new(RateLimiter::default()),
            reads: Arc::new(ReadSlots::default()),
            stores,
            shared: Arc::new(ServiceShared::default()),
            refusals: refusals::Refusals::default(),
            legacy_requests: legacy::LegacyRequests::default(),
            erasures: None,
            token_minters: Arc::new([]),
        }
    }

    /// This admission minting agent tokens with the first of `keys` whose
    /// public half is published ([`tokens`]).
    pub fn with_token_minters(mut self, keys: Vec<memtrace_common::signing::SigningKey>) -> Self {
        self.token_minters = keys.into();
        self
    }

    /// This admission recording tenants' deletes through `requests`.
    pub fn with_erasures(mut self, requests: Arc<crate::erasure::ErasureRequests>) -> Self {
        self.erasures = Some(requests);
        self
    }

    /// Authenticates `token` against the current snapshot (no I/O): what
    /// a transport can check before it reads a request's body.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, ServiceError> {
        self.authenticate_now(token)
            .inspect_err(|e| self.refusals.count(e))
    }

    fn authenticate_now(&self, token: Option<&str>) -> Result<Principal, ServiceError> {
        if !self.snapshot.is_ready() {
            return Err(not_ready());
        }
        Ok(auth::authenticate(
            &self.snapshot.load(),
            token,
            memtrace_common::clock::now_ms(),
        )?)
    }

    /// Authenticates `token`, checks `scope` and the org's rate limit, and
    /// opens the org's service.
    pub async fn admit(
        &self,
        token: Option<&str>,
        scope: Scope,
    ) -> Result<OrgService, ServiceError> {
        self.admit_now(token, scope)
            .await
            .inspect_err(|e| self.refusals.count(e))
    }

    async fn admit_now(
        &self,
        token: Option<&str>,
        scope: Scope,
    ) -> Result<OrgService, ServiceError> {
        if !self.snapshot.is_ready() {
            return Err(not_ready());
        }
        let snapshot = self.snapshot.load();
        let principal = auth::authenticate(&snapshot, token, memtrace_common::clock::now_ms())?;
        record_org(&principal);
        if token.is_some_and(legacy::looks_legacy) {
            self.legacy_requests.count(&principal.org_id);
        }
        principal.require(scope)?;
        let limits = snapshot.settings().limits(Some(&principal.org_id));
        self.limiter
            .check(
                &principal.org_id,
                &limits,
                snapshot.worker_count(),
                1.0,
                Instant::now(),
            )
            .map_err(|retry_after| ServiceError::RateLimited { retry_after })?;
        // a read holds one of the org's read slots for as long as it runs
        let slot = match scope {
            Scope::Read => Some(
                self.reads
                    .try_take(&principal.org_id, limits.max_concurrent_reads)
                    .ok_or(ServiceError::ReadsBusy {
                        max: limits.max_concurrent_reads,
                    })?,
            ),
            _ => None,
        };
        let store = self.stores.store(&snapshot, &principal.org_id).await?;
        let svc = OrgService::with_limits(
            store,
            &principal.org_id,
            snapshot.settings(),
            limits,
            self.shared.clone(),
        )?
        .with_erasures(
            snapshot.erasures(&principal.org_id),
            self.erasures.clone(),
            &principal.key_id,
        )
        .bound_to(principal.agent);
        Ok(match slot {
            Some(slot) => svc.holding(slot),
            None => svc,
        })
    }
}

impl Admission {
    /// The erasure-receipt public keys the control plane published, as the
    /// key set `memtracectl erasure verify --keys` reads (empty before the
    /// first snapshot).
    pub fn receipt_key_set(&self) -> memtrace_common::receipt::KeySet {
        use base64::Engine as _;
        use memtrace_common::receipt::{ALGORITHM, PublicKeyInfo, fingerprint};
        let at = |ms: i64| {
            (ms > 0)
                .then(|| jiff::Timestamp::from_millisecond(ms).ok())
                .flatten()
        };
        let snapshot = self.snapshot.load();
        let keys = snapshot
            .receipt_keys
            .iter()
            .map(|(key_id, k)| PublicKeyInfo {
                key_id: key_id.clone(),
                algorithm: ALGORITHM.into(),
                public_key: base64::engine::general_purpose::STANDARD.encode(k.public_key),
                fingerprint: fingerprint(&k.public_key),
                created_at: at(k.created_at_ms),
                retired_at: at(k.retired_at_ms),
            })
            .collect();
        memtrace_common::receipt::KeySet { keys }
    }
}

/// The org on the request's span (traces carry the org, never the key).
fn record_org(principal: &Principal) {
    if memtrace_common::telemetry::traces::enabled() {
        tracing::Span::current().record("memtrace.org", principal.org_id.as_str());
    }
}

fn not_ready() -> ServiceError {
    ServiceError::Unavailable("worker not ready: no snapshot of published state yet".into())
}
