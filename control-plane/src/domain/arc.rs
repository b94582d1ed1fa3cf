//! Arc bindings: where each org's memories live. The Arc API key is stored
//! only as an envelope bound to (org, binding id, purpose).

use super::audit::{AuditOutcome, audit_record};
use super::types::{ArcSpec, OrgId};
use super::{ARC_KEY_PURPOSE, ControlPlane, Published};
use crate::auth::AdminActor;
use crate::error::{ControlPlaneError, Result};
use crate::store::{ArcBindingRow, AuditWith};
use memtrace_common::bus::Op;
use memtrace_common::clock::now_ms;
use memtrace_common::credentials::mask_secret;
use memtrace_common::envelope::Binding;
use memtrace_common::ids::new_id;
use serde_json::json;
use std::time::Instant;

/// A binding as the admin API shows it: the key masked, never in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcBindingView {
    pub row: ArcBindingRow,
    pub api_key_masked: String,
}

/// The result of probing an Arc's `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcProbe {
    pub reachable: bool,
    pub http_status: u16,
    pub latency_ms: u64,
    pub detail: String,
}

impl ControlPlane {
    pub async fn bind_arc(
        &self,
        actor: &AdminActor,
        org: &OrgId,
        spec: ArcSpec,
        replace: bool,
    ) -> Result<Published<ArcBindingView>> {
        self.get_org(org).await?;
        let now = now_ms();
        let id = new_id("arc");
        let api_key_envelope = spec.api_key.as_ref().map(|key| {
            self.keyring.seal(
                Binding {
                    org_id: org.as_str(),
                    record_id: &id,
                    purpose: ARC_KEY_PURPOSE,
                },
                key.as_bytes(),
            )
        });
        let row = ArcBindingRow {
            id,
            org_id: org.as_str().to_owned(),
            url: spec.url,
            database: spec.database,
            measurement: spec.measurement,
            api_key_envelope,
            created_at: now,
            updated_at: now,
        };
        let api_key_masked = spec
            .api_key
            .as_deref()
            .map(|k| mask_secret(k))
            .unwrap_or_default();
        let action = if replace {
            "arc.bind_replace"
        } else {
            "arc.bind"
        };
        let audit = |row: &ArcBindingRow| {
            let details = json!({
                "arc_id": row.id,
                "url": row.url,
                "database": row.database,
                "measurement": row.measurement,
                "api_key": api_key_masked,
            });
            audit_record(actor, action, &row.org_id, AuditOutcome::Ok, details)
        };
        let key = self.audit_key();
        self.store
            .put_arc_binding(&row, replace, AuditWith::new(&key, &audit))
            .await?;
        tracing::info!(org_id = %row.org_id, arc_id = %row.id, url = %row.url, "arc binding stored");
        let revision = match self.arc_route_put(&row) {
            Ok(op) => self.publish(vec![op]).await,
            Err(error) => {
                tracing::error!(org_id = %row.org_id, %error, "arc route not published");
                None
            }
        };
        Ok(Published {
            value: ArcBindingView {
                row,
                api_key_masked,
            },
            revision,
        })
    }

    async fn binding_row(&self, org: &OrgId) -> Result<ArcBindingRow> {
        self.store
            .get_arc_binding(org.as_str())
            .await?
            .ok_or_else(|| ControlPlaneError::ArcBindingNotFound(org.as_str().to_owned()))
    }

    fn open_api_key(&self, row: &ArcBindingRow) -> Result<Option<zeroize::Zeroizing<String>>> {
        let Some(envelope) = &row.api_key_envelope else {
            return Ok(None);
        };
        let plain = self.keyring.open(
            Binding {
                org_id: &row.org_id,
                record_id: &row.id,
                purpose: ARC_KEY_PURPOSE,
            },
            envelope,
        )?;
        let text = String::from_utf8(plain.to_vec())
            .map_err(|_| ControlPlaneError::Startup("stored arc api key is not utf-8".into()))?;
        Ok(Some(zeroize::Zeroizing::new(text)))
    }

    pub async fn get_arc_binding(&self, org: &OrgId) -> Result<ArcBindingView> {
        let row = self.binding_row(org).await?;
        let api_key_masked = self
            .open_api_key(&row)?
            .map(|k| mask_secret(&k))
            .unwrap_or_default();
        Ok(ArcBindingView {
            row,
            api_key_masked,
        })
    }

    pub async fn remove_arc_binding(
        &self,
        actor: &AdminActor,
        org: &OrgId,
    ) -> Result<Published<()>> {
        let audit = |row: &ArcBindingRow| {
            let details = json!({"arc_id": row.id, "url": row.url});
            audit_record(actor, "arc.remove", &row.org_id, AuditOutcome::Ok, details)
        };
        let key = self.audit_key();
        let audit = AuditWith::new(&key, &audit);
        if !self.store.delete_arc_binding(org.as_str(), audit).await? {
            return Err(ControlPlaneError::ArcBindingNotFound(
                org.as_str().to_owned(),
            ));
        }
        tracing::info!(org_id = %org.as_str(), "arc binding removed");
        let revision = self
            .publish(vec![Op::Delete {
                key: self.state_keys().arc_route(org.as_str()),
            }])
            .await;
        Ok(Published {
            value: (),
            revision,
        })
    }

    /// Calls `GET <url>/health` with the binding's credentials.
    pub async fn test_arc_binding(&self, org: &OrgId) -> Result<ArcProbe> {
        let row = self.binding_row(org).await?;
        let api_key = self.open_api_key(&row)?;
        let mut request = self
            .http
            .get(format!("{}/health", row.url))
            .header("x-arc-database", &row.database);
        if let Some(key) = api_key.as_ref() {
            request = request.bearer_auth(key.as_str());
        }
        let started = Instant::now();
        let outcome = request.send().await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(match outcome {
            Ok(response) => {
                let status = response.status();
                ArcProbe {
                    reachable: status.is_success(),
                    http_status: status.as_u16(),
                    latency_ms,
                    detail: format!("GET {}/health answered {status}", row.url),
                }
            }
            Err(error) => ArcProbe {
                reachable: false,
                http_status: 0,
                latency_ms,
                detail: format!("GET {}/health failed: {}", row.url, error_chain(&error)),
            },
        })
    }
}

/// An error and its sources, `: `-joined (the most specific cause last).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
