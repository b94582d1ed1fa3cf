//! Rows → published records (`memtrace.state.v1`), and the full desired
//! state the reconciler compares with what the bus holds.

use crate::domain::{ARC_KEY_PURPOSE, ControlPlane};
use crate::error::Result;
use crate::store::{ApiKeyRow, ArcBindingRow, KeyFamily, OrgRow, StoreError, TombstoneRow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use memtrace_common::bus::Op;
use memtrace_common::envelope::Binding;
use memtrace_common::state::RECORD_SCHEMA;
use memtrace_proto::state::v1 as state;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};

impl ControlPlane {
    pub(crate) fn org_put(&self, row: &OrgRow) -> Op {
        let record = state::OrgRecord {
            schema: RECORD_SCHEMA,
            org_id: row.id.clone(),
            name: row.name.clone(),
            deleted: false,
            changed_at_ms: row.created_at,
        };
        Op::Put {
            key: self.state_keys().org(&row.id),
            value: record.encode_to_vec(),
        }
    }

    pub(crate) fn tombstone_put(&self, row: &TombstoneRow) -> Op {
        let record = state::OrgRecord {
            schema: RECORD_SCHEMA,
            org_id: row.org_id.clone(),
            name: row.name.clone(),
            deleted: true,
            changed_at_ms: row.deleted_at,
        };
        Op::Put {
            key: self.state_keys().org(&row.org_id),
            value: record.encode_to_vec(),
        }
    }

    /// The route with its Arc key moved from the master-key envelope to a
    /// fleet-key seal; the plaintext only lives in memory for the move.
    pub(crate) fn arc_route_put(&self, row: &ArcBindingRow) -> Result<Op> {
        let binding = Binding {
            org_id: &row.org_id,
            record_id: &row.id,
            purpose: ARC_KEY_PURPOSE,
        };
        let fleet = self.publisher.fleet().active();
        // the seal names the Arc it is for: a route pointed elsewhere in the
        // bus cannot carry this key there
        let sealed_api_key = match &row.api_key_envelope {
            Some(envelope) => {
                let plain = self.keyring.open(binding, envelope)?;
                fleet.seal(binding, &[&row.url, &row.database], &plain)
            }
            None => Vec::new(),
        };
        let record = state::ArcRouteRecord {
            schema: RECORD_SCHEMA,
            org_id: row.org_id.clone(),
            binding_id: row.id.clone(),
            url: row.url.clone(),
            database: row.database.clone(),
            measurement: row.measurement.clone(),
            sealed_api_key,
            fleet_key_id: fleet.id().to_owned(),
        };
        Ok(Op::Put {
            key: self.state_keys().arc_route(&row.org_id),
            value: record.encode_to_vec(),
        })
    }

    pub(crate) fn api_key_put(&self, row: &ApiKeyRow) -> Op {
        let record = state::ApiKeyRecord {
            schema: RECORD_SCHEMA,
            key_id: row.id.clone(),
            org_id: row.org_id.clone(),
            key_hash: row.key_hash.clone(),
            scopes: row
                .scopes
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            expires_at_ms: row.expires_at.unwrap_or(0),
            revoked: row.revoked_at.is_some(),
            legacy_bcrypt_hash: row
                .legacy
                .as_ref()
                .map(|l| l.bcrypt_hash.clone())
                .unwrap_or_default(),
            legacy_prefix: row
                .legacy
                .as_ref()
                .map(|l| l.prefix.clone())
                .unwrap_or_default(),
        };
        Op::Put {
            key: self.state_keys().api_key(&row.id),
            value: record.encode_to_vec(),
        }
    }

    fn token_key_put(&self, key_id: &str, public_key: Vec<u8>, created: i64, retired: i64) -> Op {
        self.signing_key_put(
            self.state_keys().token_key(key_id),
            key_id,
            public_key,
            created,
            retired,
        )
    }

    fn signing_key_put(
        &self,
        key: String,
        key_id: &str,
        public_key: Vec<u8>,
        created: i64,
        retired: i64,
    ) -> Op {
        let record = state::TokenKeyRecord {
            schema: RECORD_SCHEMA,
            key_id: key_id.to_owned(),
            public_key,
            created_at_ms: created,
            retired_at_ms: retired,
        };
        Op::Put {
            key,
            value: record.encode_to_vec(),
        }
    }

    /// The control plane's token keys (`tk_N`) to publish, each
    /// authenticated by its sealed private key; `Err` when they cannot be
    /// (the master key that sealed them is missing).
    pub(crate) async fn token_key_puts(&self) -> Result<Vec<Op>> {
        self.signing_key_puts(KeyFamily::Token).await
    }

    /// The control plane's erasure-receipt keys (`rk_N`) to publish, as
    /// [`Self::token_key_puts`]: workers serve them to tenants
    /// (`GET /api/v1/erasures/keys`) to check receipts against.
    pub(crate) async fn receipt_key_puts(&self) -> Result<Vec<Op>> {
        self.signing_key_puts(KeyFamily::Receipt).await
    }

    async fn signing_key_puts(&self, family: KeyFamily) -> Result<Vec<Op>> {
        let ms = |t: Option<jiff::Timestamp>| t.map_or(0, |t| t.as_millisecond());
        let keys = crate::domain::signing_keys::SigningKeys::new(
            self.store.clone(),
            self.keyring.clone(),
            family,
        );
        let mut ops = Vec::new();
        for key in keys.public_keys().await? {
            let public_key = STANDARD.decode(&key.public_key).map_err(|_| {
                StoreError::Corrupt(format!("signing key {} is not base64", key.key_id))
            })?;
            let state_key = match family {
                KeyFamily::Token => self.state_keys().token_key(&key.key_id),
                KeyFamily::Receipt => self.state_keys().receipt_key(&key.key_id),
            };
            ops.push(self.signing_key_put(
                state_key,
                &key.key_id,
                public_key,
                ms(key.created_at),
                ms(key.retired_at),
            ));
        }
        Ok(ops)
    }

    /// The workers' token keys (`wk_…`), derived from each fleet key held
    /// (`FleetKey::token_key`): what `POST /api/v1/tokens` signs with.
    pub(crate) fn fleet_token_key_puts(&self) -> Vec<Op> {
        self.publisher
            .fleet()
            .keys()
            .map(|fleet| {
                let key = fleet.token_key();
                self.token_key_put(key.key_id(), key.public_key().to_vec(), 0, 0)
            })
            .collect()
    }

    /// Everything the bus should hold under the published prefixes, from the
    /// database, and the keys to leave alone: a binding whose key cannot be
    /// opened is logged and its previously published route is kept.
    pub(crate) async fn desired_state(
        &self,
    ) -> Result<(BTreeMap<String, Vec<u8>>, BTreeSet<String>)> {
        let mut desired = BTreeMap::new();
        let mut keep = BTreeSet::new();
        let mut put = |op: Op| {
            if let Op::Put { key, value } = op {
                desired.insert(key, value);
            }
        };
        for tombstone in self.store.list_tombstones().await? {
            put(self.tombstone_put(&tombstone));
        }
        for org in self.store.list_orgs().await? {
            put(self.org_put(&org.org));
        }
        for row in self.store.list_arc_bindings().await? {
            match self.arc_route_put(&row) {
                Ok(op) => put(op),
                Err(error) => {
                    tracing::error!(org_id = %row.org_id, arc_id = %row.id, %error, "arc route not published: its key cannot be opened");
                    keep.insert(self.state_keys().arc_route(&row.org_id));
                }
            }
        }
        for row in self.store.list_all_api_keys().await? {
            put(self.api_key_put(&row));
        }
        for op in self.desired_settings().await? {
            put(op);
        }
        self.fleet_token_key_puts().into_iter().for_each(&mut put);
        match self.token_key_puts().await {
            Ok(ops) => ops.into_iter().for_each(&mut put),
            Err(error) => {
                tracing::error!(%error, "token keys not published: they cannot be authenticated");
                for row in self.store.list_signing_keys(KeyFamily::Token).await? {
                    keep.insert(self.state_keys().token_key(&row.key_id));
                }
            }
        }
        match self.receipt_key_puts().await {
            Ok(ops) => ops.into_iter().for_each(&mut put),
            Err(error) => {
                tracing::error!(%error, "receipt keys not published: they cannot be authenticated");
                for row in self.store.list_signing_keys(KeyFamily::Receipt).await? {
                    keep.insert(self.state_keys().receipt_key(&row.key_id));
                }
            }
        }
        Ok((desired, keep))
    }
}
