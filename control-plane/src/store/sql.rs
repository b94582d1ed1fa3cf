//! [`Store`] over sqlx's `Any` driver: one implementation, two databases.
//! SQL here is the subset SQLite and PostgreSQL share (`$n` parameters,
//! BIGINT/TEXT/BLOB-or-BYTEA columns, no backend-specific functions).

use super::settings_audit::{
    AuditEntry, AuditFilter, AuditHead, AuditRecord, SettingChange, SettingRow,
};
use super::{
    AdminTokenRow, ApiKeyRow, ArcBindingRow, OrgDeletion, OrgRow, OrgSummary, Store, StoreError,
    StoreResult, TombstoneRow,
};
use crate::clock::now_ms;
use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};
use std::time::Duration;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a [`SqlStore`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> StoreResult<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }
}

/// The sqlx-backed store.
#[derive(Clone)]
pub struct SqlStore {
    pub(super) pool: AnyPool,
    pub(super) backend: Backend,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend)
            .finish()
    }
}

impl SqlStore {
    /// Connects without migrating. For SQLite the file and its directory are
    /// created with owner-only permissions when missing.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(5));
        let pool = match backend {
            Backend::Sqlite => {
                prepare_sqlite_file(url)?;
                options
                    .max_connections(4)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Backend::Postgres => options.max_connections(8).connect(url).await?,
        };
        Ok(Self { pool, backend })
    }

    /// The sqlite URL for a file path.
    pub fn sqlite_url(path: &str) -> String {
        format!("sqlite://{path}?mode=rwc")
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations (serialised across replicas by sqlx's
    /// migration lock on PostgreSQL).
    pub async fn migrate(&self) -> StoreResult<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// The newest migration this binary knows.
    pub fn latest_known_migration(&self) -> i64 {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.iter().map(|m| m.version).max().unwrap_or(0)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn prepare_sqlite_file(url: &str) -> StoreResult<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    let path = std::path::Path::new(path);
    let io = |e: std::io::Error| StoreError::Database(sqlx::Error::Io(e));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
        restrict(dir, 0o700).map_err(io)?;
    }
    if !path.exists() {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io)?;
        restrict(path, 0o600).map_err(io)?;
    }
    Ok(())
}

#[cfg(unix)]
fn restrict(path: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_path: &std::path::Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// The URL without its password, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

fn org_summary(row: &AnyRow) -> StoreResult<OrgSummary> {
    let keys: i64 = row.try_get("key_count")?;
    Ok(OrgSummary {
        org: OrgRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        },
        has_arc_binding: row.try_get::<i64, _>("arc_count")? > 0,
        active_api_keys: u32::try_from(keys)
            .map_err(|_| StoreError::Corrupt("key count".into()))?,
    })
}

fn arc_binding(row: &AnyRow) -> StoreResult<ArcBindingRow> {
    Ok(ArcBindingRow {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        url: row.try_get("url")?,
        database: row.try_get("database_name")?,
        measurement: row.try_get("measurement")?,
        api_key_envelope: row.try_get("api_key_envelope")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn api_key(row: &AnyRow) -> StoreResult<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        key_hash: row.try_get("key_hash")?,
        scopes: row.try_get("scopes")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const ORG_SUMMARY_SELECT: &str = "SELECT o.id, o.name, o.created_at, \
     (SELECT COUNT(*) FROM arc_bindings a WHERE a.org_id = o.id) AS arc_count, \
     (SELECT COUNT(*) FROM api_keys k WHERE k.org_id = o.id AND k.revoked_at IS NULL \
        AND (k.expires_at IS NULL OR k.expires_at > $1)) AS key_count \
     FROM orgs o";

const API_KEY_COLUMNS: &str =
    "id, org_id, name, key_hash, scopes, created_at, expires_at, last_used_at, revoked_at";

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn applied_migration(&self) -> StoreResult<Option<i64>> {
        let row = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("v")?)
    }

    async fn meta_get(&self, key: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn meta_put(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn admin_token_count(&self) -> StoreResult<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM admin_tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or_default())
    }

    async fn insert_admin_token(&self, row: &AdminTokenRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO admin_tokens (token_hash, fingerprint, label, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(row.token_hash.clone())
        .bind(row.fingerprint.clone())
        .bind(row.label.clone())
        .bind(row.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict("admin token already registered".into())
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    async fn admin_token_hashes(&self) -> StoreResult<Vec<AdminTokenRow>> {
        let rows =
            sqlx::query("SELECT token_hash, fingerprint, label, created_at FROM admin_tokens")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(AdminTokenRow {
                    token_hash: r.try_get("token_hash")?,
                    fingerprint: r.try_get("fingerprint")?,
                    label: r.try_get("label")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn insert_org(&self, row: &OrgRow) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(row.id.clone())
            .bind(row.name.clone())
            .bind(row.created_at)
            .execute(&mut *tx)
            .await;
        match result {
            Ok(_) => {
                sqlx::query("DELETE FROM org_tombstones WHERE org_id = $1")
                    .bind(row.id.clone())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "an org with id {:?} or name {:?} already exists",
                row.id, row.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_org(&self, id: &str) -> StoreResult<Option<OrgSummary>> {
        let sql = format!("{ORG_SUMMARY_SELECT} WHERE o.id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(org_summary).transpose()
    }

    async fn list_orgs(&self) -> StoreResult<Vec<OrgSummary>> {
        let sql = format!("{ORG_SUMMARY_SELECT} ORDER BY o.created_at, o.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(org_summary).collect()
    }

    async fn delete_org(&self, id: &str, deleted_at: i64) -> StoreResult<Option<OrgDeletion>> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query("SELECT id, name, created_at FROM orgs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let org = OrgRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        };
        let arc = sqlx::query("DELETE FROM arc_bindings WHERE org_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let key_rows = sqlx::query("SELECT id FROM api_keys WHERE org_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        let api_key_ids = key_rows
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query("DELETE FROM api_keys WHERE org_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM orgs WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO org_tombstones (org_id, name, deleted_at) VALUES ($1, $2, $3) \
             ON CONFLICT (org_id) DO UPDATE SET name = excluded.name, deleted_at = excluded.deleted_at",
        )
        .bind(org.id.clone())
        .bind(org.name.clone())
        .bind(deleted_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(OrgDeletion {
            org,
            arc_binding_removed: arc > 0,
            api_keys_removed: u32::try_from(api_key_ids.len()).unwrap_or(u32::MAX),
            api_key_ids,
        }))
    }

    async fn list_tombstones(&self) -> StoreResult<Vec<TombstoneRow>> {
        let rows =
            sqlx::query("SELECT org_id, name, deleted_at FROM org_tombstones ORDER BY org_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(TombstoneRow {
                    org_id: r.try_get("org_id")?,
                    name: r.try_get("name")?,
                    deleted_at: r.try_get("deleted_at")?,
                })
            })
            .collect()
    }

    async fn list_all_api_keys(&self) -> StoreResult<Vec<ApiKeyRow>> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api_key).collect()
    }

    async fn put_arc_binding(&self, row: &ArcBindingRow, replace: bool) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let org_exists: i64 = sqlx::query("SELECT COUNT(*) AS n FROM orgs WHERE id = $1")
            .bind(row.org_id.clone())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if org_exists == 0 {
            return Err(StoreError::Conflict(format!(
                "org {:?} does not exist",
                row.org_id
            )));
        }
        let existing = sqlx::query("SELECT id FROM arc_bindings WHERE org_id = $1")
            .bind(row.org_id.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if existing.is_some() {
            if !replace {
                return Err(StoreError::Conflict(format!(
                    "org {:?} already has an arc binding",
                    row.org_id
                )));
            }
            sqlx::query("DELETE FROM arc_bindings WHERE org_id = $1")
                .bind(row.org_id.clone())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO arc_bindings (id, org_id, url, database_name, measurement, api_key_envelope, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(row.id.clone())
        .bind(row.org_id.clone())
        .bind(row.url.clone())
        .bind(row.database.clone())
        .bind(row.measurement.clone())
        .bind(row.api_key_envelope.clone())
        .bind(row.created_at)
        .bind(row.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_arc_binding(&self, org_id: &str) -> StoreResult<Option<ArcBindingRow>> {
        let row = sqlx::query(
            "SELECT id, org_id, url, database_name, measurement, api_key_envelope, created_at, updated_at \
             FROM arc_bindings WHERE org_id = $1",
        )
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(arc_binding).transpose()
    }

    async fn delete_arc_binding(&self, org_id: &str) -> StoreResult<bool> {
        let n = sqlx::query("DELETE FROM arc_bindings WHERE org_id = $1")
            .bind(org_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn list_arc_bindings(&self) -> StoreResult<Vec<ArcBindingRow>> {
        let rows = sqlx::query(
            "SELECT id, org_id, url, database_name, measurement, api_key_envelope, created_at, updated_at \
             FROM arc_bindings ORDER BY org_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(arc_binding).collect()
    }

    async fn swap_arc_envelope(
        &self,
        id: &str,
        old: &[u8],
        new: &[u8],
        updated_at: i64,
    ) -> StoreResult<bool> {
        let n = sqlx::query(
            "UPDATE arc_bindings SET api_key_envelope = $1, updated_at = $2 \
             WHERE id = $3 AND api_key_envelope = $4",
        )
        .bind(new.to_vec())
        .bind(updated_at)
        .bind(id)
        .bind(old.to_vec())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn insert_api_key(&self, row: &ApiKeyRow) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let org_exists: i64 = sqlx::query("SELECT COUNT(*) AS n FROM orgs WHERE id = $1")
            .bind(row.org_id.clone())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if org_exists == 0 {
            return Err(StoreError::Conflict(format!(
                "org {:?} does not exist",
                row.org_id
            )));
        }
        let same_name: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_keys WHERE org_id = $1 AND name = $2 AND revoked_at IS NULL",
        )
        .bind(row.org_id.clone())
        .bind(row.name.clone())
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if same_name > 0 {
            return Err(StoreError::Conflict(format!(
                "org {:?} already has an active api key named {:?}",
                row.org_id, row.name
            )));
        }
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, name, key_hash, scopes, created_at, expires_at, last_used_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(row.id.clone())
        .bind(row.org_id.clone())
        .bind(row.name.clone())
        .bind(row.key_hash.clone())
        .bind(row.scopes.clone())
        .bind(row.created_at)
        .bind(row.expires_at)
        .bind(row.last_used_at)
        .bind(row.revoked_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRow>> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key).transpose()
    }

    async fn list_api_keys(
        &self,
        org_id: &str,
        include_revoked: bool,
    ) -> StoreResult<Vec<ApiKeyRow>> {
        let sql = if include_revoked {
            format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE org_id = $1 ORDER BY created_at, id"
            )
        } else {
            format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE org_id = $1 AND revoked_at IS NULL ORDER BY created_at, id"
            )
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api_key).collect()
    }

    async fn revoke_api_key(&self, id: &str, revoked_at: i64) -> StoreResult<Option<ApiKeyRow>> {
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(revoked_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.get_api_key(id).await
    }

    async fn list_settings(&self) -> StoreResult<Vec<SettingRow>> {
        self.cfg_list_settings().await
    }

    async fn get_setting(&self, key: &str, org_id: &str) -> StoreResult<Option<SettingRow>> {
        self.cfg_get_setting(key, org_id).await
    }

    async fn apply_setting_changes(
        &self,
        changes: &[SettingChange],
        audit: &[AuditRecord],
    ) -> StoreResult<Vec<AuditEntry>> {
        self.cfg_apply_setting_changes(changes, audit).await
    }

    async fn seed_settings(
        &self,
        marker: &str,
        changes: &[SettingChange],
        audit: &[AuditRecord],
    ) -> StoreResult<bool> {
        self.cfg_seed_settings(marker, changes, audit).await
    }

    async fn delete_org_settings(&self, org_id: &str) -> StoreResult<Vec<SettingRow>> {
        self.cfg_delete_org_settings(org_id).await
    }

    async fn append_audit(&self, record: &AuditRecord) -> StoreResult<AuditEntry> {
        self.cfg_append_audit(record).await
    }

    async fn get_audit(&self, seq: i64) -> StoreResult<Option<AuditEntry>> {
        self.cfg_get_audit(seq).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        self.cfg_list_audit(filter).await
    }

    async fn audit_range(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        self.cfg_audit_range(after_seq, limit).await
    }

    async fn audit_head(&self) -> StoreResult<AuditHead> {
        self.cfg_audit_head().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_detection_and_redaction() {
        assert_eq!(Backend::from_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::from_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        let err = Backend::from_url("mysql://u:hunter2@h/db")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mysql://u:***@h/db") && !err.contains("hunter2"),
            "{err}"
        );
    }
}
