//! The role every admin RPC needs, declared once, keyed by the gRPC method
//! path. The guard looks each call up here before its body is read. A
//! `reader` may make the calls that change nothing (lists, gets, status,
//! workers, settings export, the audit trail and its verification, the Arc
//! health probe); everything else needs `admin`.
//!
//! The tests hold the table to the compiled protos: every method of every
//! `memtrace.admin.v1` service is listed exactly once and every entry names
//! a real method, so a new RPC cannot be served without a decision here. A
//! path that is not listed (which those tests rule out) needs `admin`.

use crate::domain::types::AdminRole::{self, Admin, Reader};

/// Method path → the lowest role that may call it.
pub const METHOD_ROLES: &[(&str, AdminRole)] = &[
    ("/memtrace.admin.v1.OrgService/CreateOrg", Admin),
    ("/memtrace.admin.v1.OrgService/ListOrgs", Reader),
    ("/memtrace.admin.v1.OrgService/GetOrg", Reader),
    ("/memtrace.admin.v1.OrgService/DeleteOrg", Admin),
    ("/memtrace.admin.v1.ArcBindingService/BindArc", Admin),
    ("/memtrace.admin.v1.ArcBindingService/GetArcBinding", Reader),
    (
        "/memtrace.admin.v1.ArcBindingService/RemoveArcBinding",
        Admin,
    ),
    // a health probe of the bound Arc: it reads, changes nothing
    (
        "/memtrace.admin.v1.ArcBindingService/TestArcBinding",
        Reader,
    ),
    ("/memtrace.admin.v1.OrgService/RecordLegacyImport", Admin),
    ("/memtrace.admin.v1.ApiKeyService/CreateApiKey", Admin),
    ("/memtrace.admin.v1.ApiKeyService/ListApiKeys", Reader),
    ("/memtrace.admin.v1.ApiKeyService/RevokeApiKey", Admin),
    ("/memtrace.admin.v1.ApiKeyService/ImportLegacyApiKey", Admin),
    // a token is a credential, like an API key
    ("/memtrace.admin.v1.ApiKeyService/CreateToken", Admin),
    (
        "/memtrace.admin.v1.AdminTokenService/CreateAdminToken",
        Admin,
    ),
    (
        "/memtrace.admin.v1.AdminTokenService/ListAdminTokens",
        Reader,
    ),
    (
        "/memtrace.admin.v1.AdminTokenService/RevokeAdminToken",
        Admin,
    ),
    (
        "/memtrace.admin.v1.MasterKeyService/GetKeyringStatus",
        Reader,
    ),
    ("/memtrace.admin.v1.MasterKeyService/RotateMaster", Admin),
    // public keys only: anyone checking a receipt may know them
    (
        "/memtrace.admin.v1.MasterKeyService/ListReceiptKeys",
        Reader,
    ),
    (
        "/memtrace.admin.v1.MasterKeyService/RotateReceiptKey",
        Admin,
    ),
    ("/memtrace.admin.v1.MasterKeyService/ListTokenKeys", Reader),
    ("/memtrace.admin.v1.MasterKeyService/RotateTokenKey", Admin),
    ("/memtrace.admin.v1.ClusterService/GetClusterStatus", Reader),
    ("/memtrace.admin.v1.ConfigService/ListSettings", Reader),
    ("/memtrace.admin.v1.ConfigService/GetSetting", Reader),
    ("/memtrace.admin.v1.ConfigService/SetSetting", Admin),
    ("/memtrace.admin.v1.ConfigService/ResetSetting", Admin),
    // sensitive values are left out of an export
    ("/memtrace.admin.v1.ConfigService/ExportSettings", Reader),
    // also a dry run: the guard decides before the body (and its dry_run
    // flag) is read
    ("/memtrace.admin.v1.ConfigService/ImportSettings", Admin),
    ("/memtrace.admin.v1.ConfigService/RollbackSetting", Admin),
    ("/memtrace.admin.v1.AuditService/ListAudit", Reader),
    ("/memtrace.admin.v1.AuditService/VerifyAudit", Reader),
    ("/memtrace.admin.v1.ErasureService/ListErasures", Reader),
    ("/memtrace.admin.v1.ErasureService/GetErasure", Reader),
];

/// The role a call to `path` needs; `admin` for a path not in the table.
pub fn required_role(path: &str) -> AdminRole {
    METHOD_ROLES
        .iter()
        .find(|(listed, _)| *listed == path)
        .map_or(Admin, |(_, role)| *role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::SERVICES;
    use prost::Message;
    use std::collections::BTreeSet;

    const PACKAGE: &str = "memtrace.admin.v1";

    /// (service, method) of every RPC in the admin protos.
    fn admin_methods() -> Vec<(String, String)> {
        let set = prost_types::FileDescriptorSet::decode(memtrace_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        set.file
            .iter()
            .filter(|file| file.package() == PACKAGE)
            .flat_map(|file| &file.service)
            .flat_map(|service| {
                let name = format!("{PACKAGE}.{}", service.name());
                service
                    .method
                    .iter()
                    .map(move |method| (name.clone(), method.name().to_owned()))
            })
            .collect()
    }

    #[test]
    fn every_admin_method_is_in_the_table_once_and_nothing_else_is() {
        let methods: BTreeSet<String> = admin_methods()
            .into_iter()
            .map(|(service, method)| format!("/{service}/{method}"))
            .collect();
        assert!(methods.len() > 20, "descriptors found: {methods:?}");
        let table: BTreeSet<String> = METHOD_ROLES.iter().map(|(p, _)| (*p).to_owned()).collect();
        assert_eq!(table.len(), METHOD_ROLES.len(), "a path is listed twice");
        let missing: Vec<&String> = methods.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "admin RPCs without a role in METHOD_ROLES: {missing:?}"
        );
        let stale: Vec<&String> = table.difference(&methods).collect();
        assert!(
            stale.is_empty(),
            "METHOD_ROLES names RPCs that do not exist: {stale:?}"
        );
    }

    #[test]
    fn every_admin_service_is_served_behind_the_guard() {
        let declared: BTreeSet<String> = admin_methods().into_iter().map(|(s, _)| s).collect();
        let served: BTreeSet<String> = SERVICES.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(declared, served);
    }

    #[test]
    fn readers_change_nothing() {
        const CHANGES: [&str; 10] = [
            "Create", "Delete", "Bind", "Remove", "Revoke", "Rotate", "Set", "Reset", "Import",
            "Rollback",
        ];
        for (path, role) in METHOD_ROLES {
            let method = path.rsplit('/').next().unwrap_or_default();
            if CHANGES.iter().any(|verb| method.starts_with(verb)) {
                assert_eq!(*role, Admin, "{path} changes state and must need admin");
            }
        }
        assert_eq!(
            required_role("/memtrace.admin.v1.OrgService/ListOrgs"),
            Reader
        );
        assert_eq!(
            required_role("/memtrace.admin.v1.OrgService/CreateOrg"),
            Admin
        );
        assert_eq!(
            required_role("/memtrace.admin.v1.NewService/Anything"),
            Admin
        );
        assert_eq!(required_role(""), Admin);
    }
}
