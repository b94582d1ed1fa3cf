//! The control-plane steps of an import: orgs, Arc bindings and API keys,
//! each through the admin API (which validates, audits and publishes).
//! ALREADY_EXISTS, or finding the thing first, is a skip; any other refusal
//! is a skip with the control plane's message; an unreachable control plane
//! stops the import (re-running it resumes: what exists is skipped).

use super::ImportReport;
use super::source::{LegacyApiKey, LegacyArc, LegacyOrg};
use crate::client::Admin;
use memtrace_common::legacy_keys::{legacy_key_id, open_legacy_secret};
use memtrace_data_plane::snapshot::ArcRoute;
use memtrace_proto::admin::v1 as pb;
use tonic::{Code, Status};
use zeroize::Zeroizing;

/// Whether `status` is a refusal of this one item (reported, the import
/// goes on) rather than a failure of the control plane (the import stops).
fn refusal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::AlreadyExists | Code::NotFound | Code::FailedPrecondition
    )
}

fn stop(admin: &Admin, status: Status) -> anyhow::Error {
    admin.fail(status, crate::error::Subject::Org)
}

/// Creates the org with its id; whether it exists afterwards (or, in a dry
/// run, would).
pub async fn org(
    admin: &Admin,
    org: &LegacyOrg,
    dry_run: bool,
    report: &mut ImportReport,
) -> anyhow::Result<bool> {
    let found = admin
        .orgs()
        .get_org(admin.request(pb::GetOrgRequest {
            org_id: org.id.clone(),
        }))
        .await;
    match found {
        Ok(_) => {
            report.skip("org", &org.id, "exists");
            return Ok(true);
        }
        Err(s) if s.code() == Code::NotFound => {}
        Err(s) if refusal(&s) => {
            report.skip("org", &org.id, s.message());
            return Ok(false);
        }
        Err(s) => return Err(stop(admin, s)),
    }
    // names are unique here, not in the Go memtrace: a taken one is mapped
    let listed = admin
        .orgs()
        .list_orgs(admin.request(pb::ListOrgsRequest {}))
        .await
        .map_err(|s| stop(admin, s))?;
    let name = if listed.get_ref().orgs.iter().any(|o| o.name == org.name) {
        let mapped = format!("{} ({})", org.name, org.id);
        report.note(
            "org",
            &org.id,
            format!("name {:?} is taken here: imported as {mapped:?}", org.name),
        );
        mapped
    } else {
        org.name.clone()
    };
    if dry_run {
        report.imported("org");
        return Ok(true);
    }
    let created = admin
        .orgs()
        .create_org(admin.request(pb::CreateOrgRequest {
            name,
            id: org.id.clone(),
        }))
        .await;
    match created {
        Ok(_) => {
            report.imported("org");
            Ok(true)
        }
        Err(s) if refusal(&s) => {
            report.skip("org", &org.id, s.message());
            Ok(false)
        }
        Err(s) => Err(stop(admin, s)),
    }
}

/// Binds the org to its Arc instance (the Arc key opened with the legacy
/// master key, sealed again by the control plane); the route the org's
/// agents and sessions are written to, when the Arc key opened.
pub async fn binding(
    admin: &Admin,
    arc: &LegacyArc,
    master: &[u8; 32],
    dry_run: bool,
    report: &mut ImportReport,
) -> anyhow::Result<Option<ArcRoute>> {
    let api_key: Option<Zeroizing<String>> = match (&arc.cipher, &arc.nonce) {
        (Some(cipher), Some(nonce)) if !cipher.is_empty() => {
            match open_legacy_secret(master, cipher, nonce) {
                Ok(key) => Some(key),
                Err(e) => {
                    report.skip("arc_binding", &arc.org_id, e.to_string());
                    return Ok(None);
                }
            }
        }
        _ => None,
    };
    let measurement = if arc.measurement.is_empty() {
        "events".to_owned()
    } else {
        arc.measurement.clone()
    };
    let route = ArcRoute {
        binding_id: String::new(),
        url: arc.url.clone(),
        database: arc.database.clone(),
        measurement: measurement.clone(),
        api_key: api_key.clone(),
    };
    let found = admin
        .arc_bindings()
        .get_arc_binding(admin.request(pb::GetArcBindingRequest {
            org_id: arc.org_id.clone(),
        }))
        .await;
    match found {
        Ok(_) => {
            report.skip("arc_binding", &arc.org_id, "exists");
            return Ok(Some(route));
        }
        Err(s) if s.code() == Code::NotFound => {}
        Err(s) if refusal(&s) => {
            report.skip("arc_binding", &arc.org_id, s.message());
            return Ok(Some(route));
        }
        Err(s) => return Err(stop(admin, s)),
    }
    if dry_run {
        report.imported("arc_binding");
        return Ok(Some(route));
    }
    let bound = admin
        .arc_bindings()
        .bind_arc(admin.request(pb::BindArcRequest {
            org_id: arc.org_id.clone(),
            url: arc.url.clone(),
            database: arc.database.clone(),
            api_key: api_key.as_deref().cloned().unwrap_or_default(),
            measurement,
            replace: false,
        }))
        .await;
    match bound {
        Ok(_) => report.imported("arc_binding"),
        Err(s) if refusal(&s) => report.skip("arc_binding", &arc.org_id, s.message()),
        Err(s) => return Err(stop(admin, s)),
    }
    Ok(Some(route))
}

/// The scopes of the Go server's `permissions` (it stored them and never
/// enforced them); an unknown one refuses the key.
fn scopes(permissions: &str) -> Result<Vec<String>, String> {
    let mut scopes = Vec::new();
    for p in permissions
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if !matches!(p, "read" | "write" | "admin") {
            return Err(format!("unknown permission {p:?} (read, write or admin)"));
        }
        scopes.push(p.to_owned());
    }
    Ok(scopes)
}

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// Imports one key by its bcrypt hash and prefix.
pub async fn key(
    admin: &Admin,
    key: &LegacyApiKey,
    dry_run: bool,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    let label = format!("{} ({})", key.id, key.name);
    if !key.enabled {
        report.skip("api_key", &label, "disabled in the Go memtrace");
        return Ok(());
    }
    let scopes = match scopes(&key.permissions) {
        Ok(s) => s,
        Err(why) => {
            report.skip("api_key", &label, why);
            return Ok(());
        }
    };
    if dry_run {
        let listed = admin
            .api_keys()
            .list_api_keys(admin.request(pb::ListApiKeysRequest {
                org_id: key.org_id.clone(),
                include_revoked: true,
            }))
            .await;
        let id = legacy_key_id(&key.prefix);
        match listed {
            Ok(list) if list.get_ref().keys.iter().any(|k| k.id == id) => {
                report.skip("api_key", &label, "exists");
            }
            Ok(_) => report.imported("api_key"),
            Err(s) if s.code() == Code::NotFound => report.imported("api_key"),
            Err(s) => return Err(stop(admin, s)),
        }
        return Ok(());
    }
    let imported = admin
        .api_keys()
        .import_legacy_api_key(admin.request(pb::ImportLegacyApiKeyRequest {
            org_id: key.org_id.clone(),
            name: key.name.clone(),
            scopes,
            bcrypt_hash: key.bcrypt_hash.clone(),
            key_prefix: key.prefix.clone(),
            created_at: key.created_us.map(timestamp),
            expires_at: key.expires_us.map(timestamp),
        }))
        .await;
    match imported {
        Ok(_) => report.imported("api_key"),
        Err(s) if s.code() == Code::AlreadyExists && s.message().contains("imported before") => {
            report.skip("api_key", &label, "exists");
        }
        Err(s) if refusal(&s) => report.skip("api_key", &label, s.message()),
        Err(s) => return Err(stop(admin, s)),
    }
    Ok(())
}

/// Audits what was written straight to an org's Arc.
pub async fn audit_arc_writes(
    admin: &Admin,
    written: pb::RecordLegacyImportRequest,
) -> anyhow::Result<()> {
    admin
        .orgs()
        .record_legacy_import(admin.request(written))
        .await
        .map_err(|s| stop(admin, s))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_map_to_scopes() {
        assert_eq!(scopes("read,write").unwrap(), vec!["read", "write"]);
        assert_eq!(scopes("read, write,admin").unwrap().len(), 3);
        assert!(scopes("read,delete").unwrap_err().contains("delete"));
    }
}
