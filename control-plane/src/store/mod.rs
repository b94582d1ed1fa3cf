//! The control plane's storage contract and its sqlx implementation.
//!
//! [`Store`] is everything the control plane persists. [`SqlStore`] implements
//! it over sqlx's `Any` driver for SQLite (default) and PostgreSQL (HA), with
//! one migration set per backend. The behaviour every backend must show is
//! pinned by one suite, [`conformance`], run against each.

mod audit_chain;
mod settings_audit;
mod sql;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance_admin;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance_audit;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance_config;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance_erasure;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance_signing_keys;

pub use audit_chain::{
    AuditEntry, AuditHead, AuditRecord, ChainBreak, ChainVerifier, GENESIS_HASH, KEYED_VERSION,
    UNKEYED_VERSION, Unverifiable, head_mac,
};
pub use settings_audit::{AuditFilter, SettingChange, SettingRow};
pub use sql::{Backend, SqlStore, redact_url as sql_redact_url};

use async_trait::async_trait;
use memtrace_common::envelope::AuditKey;

/// The audit entry of a change, appended in the change's own transaction so
/// the two commit or fail together: `record` builds it from what the change
/// did (`T`, known only inside the transaction), `key` chains it.
pub struct AuditWith<'a, T> {
    pub key: &'a AuditKey,
    pub record: &'a (dyn Fn(&T) -> AuditRecord + Send + Sync),
}

impl<'a, T> AuditWith<'a, T> {
    pub fn new(key: &'a AuditKey, record: &'a (dyn Fn(&T) -> AuditRecord + Send + Sync)) -> Self {
        Self { key, record }
    }
}

/// Storage failures. `Conflict` is the only one callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// An org with the counts the admin API shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgSummary {
    pub org: OrgRow,
    pub has_arc_binding: bool,
    pub active_api_keys: u32,
}

/// What deleting an org removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgDeletion {
    pub org: OrgRow,
    pub arc_binding_removed: bool,
    pub api_keys_removed: u32,
    /// Ids of the removed keys, so their published records can be deleted.
    pub api_key_ids: Vec<String>,
    /// The org's removed setting overrides, for the same reason.
    pub settings_removed: Vec<SettingRow>,
}

/// The Arc binding an erasure job runs against once the org's binding row
/// is gone (org deletion): the binding's id, where it points, and its API
/// key still sealed under the master key ring (bound to the org and this
/// binding id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedTarget {
    pub binding_id: String,
    pub url: String,
    pub database: String,
    pub measurement: String,
    pub api_key_envelope: Option<Vec<u8>>,
}

/// An erasure job (table `erasures`). Times are unix milliseconds unless
/// named `_micros`. `state` is one of `requested`, `running`, `blocked`,
/// `done`, `failed`. JSON columns are stored as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureJobRow {
    pub id: String,
    pub org_id: String,
    pub scope_json: String,
    pub memory_predicate: String,
    pub store: String,
    pub as_of_micros: i64,
    pub requested_by: String,
    pub requested_at_micros: i64,
    pub state: String,
    pub detail: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    /// The control-plane replica running it, until `claimed_until`.
    pub claimed_by: Option<String>,
    pub claimed_until: Option<i64>,
    /// Where it ran (URL host, database, measurement), never a credential.
    pub target_json: Option<String>,
    pub pinned: Option<PinnedTarget>,
    pub rows_removed_json: Option<String>,
    pub verification_json: Option<String>,
    pub receipt_json: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// What an erasure job is asked to do: the fields a new job is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewErasure {
    pub id: String,
    pub org_id: String,
    pub scope_json: String,
    pub memory_predicate: String,
    pub store: String,
    pub as_of_micros: i64,
    pub requested_by: String,
    pub requested_at_micros: i64,
}

impl NewErasure {
    /// The job, `requested` and due at `now_ms`, nothing run yet.
    pub fn into_job(self, now_ms: i64) -> ErasureJobRow {
        ErasureJobRow {
            id: self.id,
            org_id: self.org_id,
            scope_json: self.scope_json,
            memory_predicate: self.memory_predicate,
            store: self.store,
            as_of_micros: self.as_of_micros,
            requested_by: self.requested_by,
            requested_at_micros: self.requested_at_micros,
            state: "requested".into(),
            detail: String::new(),
            attempts: 0,
            next_attempt_at: now_ms,
            claimed_by: None,
            claimed_until: None,
            target_json: None,
            pinned: None,
            rows_removed_json: None,
            verification_json: None,
            receipt_json: None,
            created_at: now_ms,
            started_at: None,
            finished_at: None,
        }
    }
}

/// Most jobs one listing returns, newest first.
pub const MAX_ERASURES_LISTED: u32 = 1000;

/// Which erasure jobs [`Store::list_erasures`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasureFilter {
    pub org_id: Option<String>,
    pub state: Option<String>,
}

/// A deleted org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TombstoneRow {
    pub org_id: String,
    pub name: String,
    pub deleted_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcBindingRow {
    pub id: String,
    pub org_id: String,
    pub url: String,
    pub database: String,
    pub measurement: String,
    /// Envelope of the Arc API key; `None` when the binding has no key.
    pub api_key_envelope: Option<Vec<u8>>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub key_hash: Vec<u8>,
    /// Comma-separated, sorted, from {admin, read, write}.
    pub scopes: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Set for a key imported from the Go memtrace.
    pub legacy: Option<LegacyKeyHash>,
}

/// How an imported Go memtrace key is checked and found: its bcrypt hash
/// (of the whole key) and its lookup prefix (the key id is `key_<prefix>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyKeyHash {
    pub bcrypt_hash: String,
    pub prefix: String,
}

/// An admin token: its public id, the hash of the whole token (never the
/// token), and its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenRow {
    /// `adm_<16 hex>` (see `memtrace_common::credentials`).
    pub id: String,
    pub token_hash: Vec<u8>,
    pub fingerprint: String,
    pub name: String,
    /// `admin` or `reader`.
    pub role: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Which signing keys: each family has its own versions, ids and table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    /// Erasure receipts (`rk_<version>`, table `receipt_keys`).
    Receipt,
    /// Agent tokens (`tk_<version>`, table `token_keys`).
    Token,
}

impl KeyFamily {
    pub fn table(self) -> &'static str {
        match self {
            Self::Receipt => "receipt_keys",
            Self::Token => "token_keys",
        }
    }
}

/// A version of a signing key (erasure receipts, agent tokens): the public
/// key in clear, the private seed only as an envelope under the master key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    /// 1, 2, …: the newest signs.
    pub version: i64,
    /// `rk_<version>` or `tk_<version>`.
    pub key_id: String,
    /// The 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// The 32-byte seed sealed with `memtrace_common::envelope`.
    pub private_envelope: Vec<u8>,
    pub created_at: i64,
    /// When a newer version replaced it.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("version", &self.version)
            .field("key_id", &self.key_id)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// What [`Store::revoke_admin_token`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTokenRevocation {
    /// Revoked now; the row after the change.
    Revoked(AdminTokenRow),
    /// It was revoked before; nothing changed.
    AlreadyRevoked(AdminTokenRow),
    /// Refused: it is the last active admin-role token and `force` was not
    /// set; nothing changed.
    LastAdmin(AdminTokenRow),
    NotFound,
}

/// Everything the control plane persists.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Round trip to the database.
    async fn ping(&self) -> StoreResult<()>;
    /// Highest applied migration version, `None` before any.
    async fn applied_migration(&self) -> StoreResult<Option<i64>>;

    async fn meta_get(&self, key: &str) -> StoreResult<Option<String>>;
    async fn meta_put(&self, key: &str, value: &str) -> StoreResult<()>;

    /// Admin-role tokens neither revoked nor expired at `now`.
    async fn active_admin_count(&self, now: i64) -> StoreResult<u64>;
    /// `Conflict` when the id or the hash is taken (also by a revoked token).
    /// `audit` is appended in the same transaction (as for every audited
    /// change below); `None` only for the first-start token, which no admin
    /// created.
    async fn insert_admin_token(
        &self,
        row: &AdminTokenRow,
        audit: Option<AuditWith<'_, AdminTokenRow>>,
    ) -> StoreResult<()>;
    async fn get_admin_token(&self, id: &str) -> StoreResult<Option<AdminTokenRow>>;
    /// Every admin token, revoked ones included, oldest first.
    async fn list_admin_tokens(&self) -> StoreResult<Vec<AdminTokenRow>>;
    /// Sets `revoked_at` if not yet revoked, unless the token is the last
    /// active admin-role token and `force` is not set. Revocations are
    /// serialised across connections and replicas, so two revoking the last
    /// two admin tokens at once cannot both succeed. `audit` (built from the
    /// revoked row) is appended in the same transaction, and only when the
    /// token is revoked now: the other outcomes change nothing and append
    /// nothing.
    async fn revoke_admin_token(
        &self,
        id: &str,
        revoked_at: i64,
        force: bool,
        audit: AuditWith<'_, AdminTokenRow>,
    ) -> StoreResult<AdminTokenRevocation>;
    /// Raises each token's `last_used_at` to the given time (never lowers it).
    async fn touch_admin_tokens(&self, used: &[(String, i64)]) -> StoreResult<()>;

    // Audited changes (`audit: AuditWith`) append their entry in their own
    // transaction: a change that fails appends nothing, an entry that cannot
    // be appended undoes its change.

    /// Fails with `Conflict` when the id or the name is taken.
    async fn insert_org(&self, row: &OrgRow, audit: AuditWith<'_, OrgRow>) -> StoreResult<()>;
    async fn get_org(&self, id: &str) -> StoreResult<Option<OrgSummary>>;
    async fn list_orgs(&self) -> StoreResult<Vec<OrgSummary>>;
    /// Deletes the org, its Arc binding, its API keys and its setting
    /// overrides, and records a tombstone, in one transaction. `None` (and
    /// no entry) when the org does not exist. With `erasure`, the same
    /// transaction inserts that job (a whole-org erasure) and pins the
    /// org's Arc binding (id, URL, database, measurement, sealed key) into
    /// it and into every unfinished job of the org without a pinned target,
    /// so they still reach the org's Arc once the binding row is gone.
    async fn delete_org(
        &self,
        id: &str,
        deleted_at: i64,
        erasure: Option<&ErasureJobRow>,
        audit: AuditWith<'_, OrgDeletion>,
    ) -> StoreResult<Option<OrgDeletion>>;
    /// Deleted orgs (a re-created id removes its tombstone).
    async fn list_tombstones(&self) -> StoreResult<Vec<TombstoneRow>>;
    /// Every API key of every org, revoked ones included.
    async fn list_all_api_keys(&self) -> StoreResult<Vec<ApiKeyRow>>;

    /// Inserts, or replaces when `replace` is set; `Conflict` when a binding
    /// exists and `replace` is not set. The org must exist (`Conflict` otherwise).
    async fn put_arc_binding(
        &self,
        row: &ArcBindingRow,
        replace: bool,
        audit: AuditWith<'_, ArcBindingRow>,
    ) -> StoreResult<()>;
    async fn get_arc_binding(&self, org_id: &str) -> StoreResult<Option<ArcBindingRow>>;
    /// Removes the org's binding; `false` (and no entry) when it had none.
    async fn delete_arc_binding(
        &self,
        org_id: &str,
        audit: AuditWith<'_, ArcBindingRow>,
    ) -> StoreResult<bool>;
    async fn list_arc_bindings(&self) -> StoreResult<Vec<ArcBindingRow>>;
    /// Compare-and-swap of the envelope: writes `new` only if the stored
    /// envelope is still `old`. Returns whether it wrote.
    async fn swap_arc_envelope(
        &self,
        id: &str,
        old: &[u8],
        new: &[u8],
        updated_at: i64,
    ) -> StoreResult<bool>;

    /// `Conflict` when the org is missing or an active key of the org has the same name.
    async fn insert_api_key(
        &self,
        row: &ApiKeyRow,
        audit: AuditWith<'_, ApiKeyRow>,
    ) -> StoreResult<()>;
    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRow>>;
    async fn list_api_keys(
        &self,
        org_id: &str,
        include_revoked: bool,
    ) -> StoreResult<Vec<ApiKeyRow>>;
    /// Sets `revoked_at` if not yet revoked; returns the row after the change
    /// (audited also when it was revoked already). `None` (and no entry)
    /// when the key does not exist.
    async fn revoke_api_key(
        &self,
        id: &str,
        revoked_at: i64,
        audit: AuditWith<'_, ApiKeyRow>,
    ) -> StoreResult<Option<ApiKeyRow>>;

    /// Every stored setting value, global (`org_id` empty) and per org,
    /// ordered by key, then org.
    async fn list_settings(&self) -> StoreResult<Vec<SettingRow>>;
    /// One stored value; `org_id` empty for the global value.
    async fn get_setting(&self, key: &str, org_id: &str) -> StoreResult<Option<SettingRow>>;
    /// Applies `changes` and appends `audit` to the chain (in order, keyed
    /// under `key`), in one transaction serialised with every other audit
    /// append. When a stored value is no longer a change's `expected`, fails
    /// with `Conflict` and writes nothing. Returns the chained entries.
    async fn apply_setting_changes(
        &self,
        changes: &[SettingChange],
        audit: &[AuditRecord],
        key: &AuditKey,
    ) -> StoreResult<Vec<AuditEntry>>;
    /// First-start seeding, at most once per database: when the meta key
    /// `marker` is absent, sets it, applies `changes` and appends `audit` in
    /// one transaction and returns `true`; otherwise writes nothing and
    /// returns `false`.
    async fn seed_settings(
        &self,
        marker: &str,
        changes: &[SettingChange],
        audit: &[AuditRecord],
        key: &AuditKey,
    ) -> StoreResult<bool>;
    /// Deletes every override of an org; returns the removed rows.
    async fn delete_org_settings(&self, org_id: &str) -> StoreResult<Vec<SettingRow>>;

    /// Inserts a job unless its id exists (then changes nothing); whether
    /// it inserted.
    async fn insert_erasure(&self, row: &ErasureJobRow) -> StoreResult<bool>;
    async fn get_erasure(&self, id: &str) -> StoreResult<Option<ErasureJobRow>>;
    /// Jobs matching `filter`, newest request first, at most
    /// [`MAX_ERASURES_LISTED`] (the sweeps add jobs for as long as an org
    /// lives: a listing stays bounded).
    async fn list_erasures(&self, filter: &ErasureFilter) -> StoreResult<Vec<ErasureJobRow>>;
    /// Whether `org_id` has a job requested by `requested_by` that is not
    /// done (a sweep requests one at a time per org): one statement on the
    /// org's index answering a yes or no, not the org's history sent back.
    async fn has_unfinished_erasure(&self, org_id: &str, requested_by: &str) -> StoreResult<bool>;
    /// How many jobs are in each state (states without jobs left out).
    async fn count_erasures(&self) -> StoreResult<Vec<(String, i64)>>;
    /// Unfinished jobs (not `done`) whose `next_attempt_at` is at most
    /// `now` and that no replica holds a claim on at `now`, oldest first,
    /// at most `limit`.
    async fn due_erasures(&self, now: i64, limit: u32) -> StoreResult<Vec<ErasureJobRow>>;
    /// Claims an unfinished job for `owner` until `until`, if no other
    /// replica's claim on it is live at `now` (compare-and-set, so two
    /// replicas never hold one job at once); the row after the claim.
    async fn claim_erasure(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> StoreResult<Option<ErasureJobRow>>;
    /// Writes a job's progress (everything but its identity, its request
    /// and its pinned target) if `owner` still holds its claim; whether it
    /// wrote. Saving a `done` job drops its pinned target (and sealed key).
    async fn save_erasure(&self, row: &ErasureJobRow, owner: &str) -> StoreResult<bool>;
    /// Compare-and-swap of a job's pinned key envelope (master-key
    /// rotation); whether it wrote.
    async fn swap_erasure_envelope(&self, id: &str, old: &[u8], new: &[u8]) -> StoreResult<bool>;

    /// Appends one entry to the audit chain, keyed under `key`. Appends are
    /// serialised across connections and replicas (advisory lock on
    /// PostgreSQL, the write lock on SQLite), so the chain never forks.
    async fn append_audit(&self, record: &AuditRecord, key: &AuditKey) -> StoreResult<AuditEntry>;
    /// One entry by sequence number.
    async fn get_audit(&self, seq: i64) -> StoreResult<Option<AuditEntry>>;
    /// Entries matching `filter`, newest first, at most `filter.limit`.
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>>;
    /// Entries with `seq > after_seq`, oldest first, at most `limit`.
    async fn audit_range(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEntry>>;
    /// The recorded head of the chain (seq 0, [`GENESIS_HASH`] and no MAC
    /// when empty).
    async fn audit_head(&self) -> StoreResult<AuditHead>;

    /// Every signing key of `family`, oldest version first.
    async fn list_signing_keys(&self, family: KeyFamily) -> StoreResult<Vec<SigningKeyRow>>;
    /// Adds the next key version: inserts `row` only when its version is
    /// one above the highest stored (1 when none), retires every older
    /// unretired version at `row.created_at` and appends the audit entry,
    /// in one transaction serialised with every other audited change (so
    /// two replicas adding a key at once store one). Returns `false`, and
    /// writes nothing, when the version is not the next one: another
    /// writer got there first, re-read.
    async fn insert_signing_key(
        &self,
        family: KeyFamily,
        row: &SigningKeyRow,
        audit: AuditWith<'_, SigningKeyRow>,
    ) -> StoreResult<bool>;
    /// Compare-and-swap of a key's envelope (master-key rotation): writes
    /// `new` only if the stored envelope is still `old`. Returns whether it wrote.
    async fn swap_signing_key_envelope(
        &self,
        family: KeyFamily,
        version: i64,
        old: &[u8],
        new: &[u8],
    ) -> StoreResult<bool>;
}
