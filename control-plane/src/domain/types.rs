//! Validated input types. Every value the admin API accepts passes through
//! one of these constructors; a failure names the field and the rule and
//! changes nothing.

use crate::error::{ControlPlaneError, Result};
use memtrace_common::credentials::ADMIN_TOKEN_ID_PREFIX;
use memtrace_common::ids::is_valid_id;
use std::time::Duration;
use zeroize::Zeroizing;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgId(String);

impl OrgId {
    pub fn parse(value: &str) -> Result<Self> {
        let value = value.trim();
        if !is_valid_id("org", value) {
            return Err(ControlPlaneError::invalid(
                "org_id",
                format!("{value:?} is not an org id (org_ followed by letters, digits or _)"),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgName(String);

impl OrgName {
    pub fn parse(value: &str) -> Result<Self> {
        let value = value.trim();
        let len = value.chars().count();
        if len == 0 || len > 128 {
            return Err(ControlPlaneError::invalid(
                "name",
                "must be 1 to 128 characters",
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(ControlPlaneError::invalid(
                "name",
                "must not contain control characters",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyId(String);

impl ApiKeyId {
    pub fn parse(value: &str) -> Result<Self> {
        let value = value.trim();
        let ok = value
            .strip_prefix("key_")
            .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err(ControlPlaneError::invalid(
                "key_id",
                format!("{value:?} is not an api key id (key_ followed by 16 hex digits)"),
            ));
        }
        Ok(Self(value.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The public id of an admin token (`adm_` and 16 hex digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenId(String);

impl AdminTokenId {
    pub fn parse(value: &str) -> Result<Self> {
        let value = value.trim();
        let ok = value
            .strip_prefix(ADMIN_TOKEN_ID_PREFIX)
            .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err(ControlPlaneError::invalid(
                "token_id",
                format!("{value:?} is not an admin token id (adm_ followed by 16 hex digits)"),
            ));
        }
        Ok(Self(value.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an admin token may do. Roles are ordered: a role may call whatever
/// a lower one may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdminRole {
    /// Calls that change nothing: lists, gets, status, export, audit.
    Reader,
    /// Everything.
    Admin,
}

impl AdminRole {
    pub const ALL: [AdminRole; 2] = [AdminRole::Admin, AdminRole::Reader];

    pub fn parse(value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "admin" => Ok(Self::Admin),
            "reader" => Ok(Self::Reader),
            "" => Err(ControlPlaneError::invalid(
                "role",
                "is required: admin or reader",
            )),
            other => Err(ControlPlaneError::invalid(
                "role",
                format!("unknown role {other:?}; allowed: admin, reader"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Reader => "reader",
        }
    }

    /// Whether a token of this role may make a call that needs `required`.
    pub fn allows(self, required: AdminRole) -> bool {
        self >= required
    }
}

impl std::fmt::Display for AdminRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated admin token request.
#[derive(Debug, Clone)]
pub struct AdminTokenSpec {
    pub name: String,
    pub role: AdminRole,
    pub expires_in: Option<Duration>,
}

impl AdminTokenSpec {
    pub fn parse(name: &str, role: &str, expires_in_seconds: u64) -> Result<Self> {
        Ok(Self {
            name: credential_name(name)?,
            role: AdminRole::parse(role)?,
            expires_in: expiry(expires_in_seconds)?,
        })
    }
}

/// Arc database and measurement names follow Arc's own rule.
/// An Arc database or measurement name, by the one rule the workers use
/// too (`memtrace_common::names`): a name every worker would refuse is
/// refused here, not accepted and then failing every request of the org.
fn arc_name(field: &'static str, value: &str) -> Result<String> {
    let value = value.trim();
    let check = if field == "database" {
        memtrace_common::names::check_arc_database
    } else {
        memtrace_common::names::check_memory_measurement
    };
    check(value).map_err(|e| {
        ControlPlaneError::invalid(
            e.field,
            format!(
                "{value:?} {} (names appear unquoted in memtrace's SQL)",
                e.rule
            ),
        )
    })?;
    Ok(value.to_owned())
}

/// A validated Arc binding request.
pub struct ArcSpec {
    pub url: String,
    pub database: String,
    pub measurement: String,
    pub api_key: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for ArcSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArcSpec")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("measurement", &self.measurement)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ArcSpec {
    pub fn parse(url: &str, database: &str, measurement: &str, api_key: &str) -> Result<Self> {
        let parsed = url::Url::parse(url.trim()).map_err(|e| {
            ControlPlaneError::invalid(
                "url",
                format!("{url:?} is not a URL ({e}); e.g. http://arc:8000"),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ControlPlaneError::invalid(
                "url",
                "scheme must be http or https",
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(ControlPlaneError::invalid("url", "must name a host"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ControlPlaneError::invalid(
                "url",
                "must not carry credentials; send the Arc token in the api_key field, which is stored encrypted",
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(ControlPlaneError::invalid(
                "url",
                "must not have a query or fragment",
            ));
        }
        let measurement = if measurement.trim().is_empty() {
            "events"
        } else {
            measurement
        };
        let api_key = api_key.trim();
        if api_key.len() > 4096 || api_key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ControlPlaneError::invalid(
                "api_key",
                "must be at most 4096 characters without whitespace",
            ));
        }
        Ok(Self {
            url: parsed.as_str().trim_end_matches('/').to_owned(),
            database: arc_name("database", database)?,
            measurement: arc_name("measurement", measurement)?,
            api_key: (!api_key.is_empty()).then(|| Zeroizing::new(api_key.to_owned())),
        })
    }
}

/// Scopes of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes {
    pub read: bool,
    pub write: bool,
    pub admin: bool,
}

impl Scopes {
    /// Parses names (each item may itself be comma-separated); empty means read+write.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self> {
        let mut scopes = Self::default();
        let mut any = false;
        for item in items {
            for name in item
                .as_ref()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                any = true;
                match name.to_ascii_lowercase().as_str() {
                    "read" => scopes.read = true,
                    "write" => scopes.write = true,
                    "admin" => scopes.admin = true,
                    other => {
                        return Err(ControlPlaneError::invalid(
                            "scopes",
                            format!("unknown scope {other:?}; allowed: read, write, admin"),
                        ));
                    }
                }
            }
        }
        if !any {
            scopes.read = true;
            scopes.write = true;
        }
        Ok(scopes)
    }

    pub fn names(&self) -> Vec<String> {
        [
            (self.admin, "admin"),
            (self.read, "read"),
            (self.write, "write"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name.to_owned())
        .collect()
    }

    pub fn to_csv(self) -> String {
        self.names().join(",")
    }
}

/// A validated API key request.
#[derive(Debug, Clone)]
pub struct ApiKeySpec {
    pub org_id: OrgId,
    pub name: String,
    pub scopes: Scopes,
    pub expires_in: Option<Duration>,
}

/// Ten years: the longest expiry accepted.
const MAX_EXPIRY: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

impl ApiKeySpec {
    pub fn parse<S: AsRef<str>>(
        org_id: &str,
        name: &str,
        scopes: &[S],
        expires_in_seconds: u64,
    ) -> Result<Self> {
        Ok(Self {
            org_id: OrgId::parse(org_id)?,
            name: credential_name(name)?,
            scopes: Scopes::parse(scopes)?,
            expires_in: expiry(expires_in_seconds)?,
        })
    }
}

/// The name of an api key or admin token.
fn credential_name(name: &str) -> Result<String> {
    let name = name.trim();
    let len = name.chars().count();
    if len == 0 || len > 64 || name.chars().any(char::is_control) {
        return Err(ControlPlaneError::invalid(
            "name",
            "must be 1 to 64 characters without control characters",
        ));
    }
    Ok(name.to_owned())
}

/// A lifetime in seconds; 0 means none.
fn expiry(expires_in_seconds: u64) -> Result<Option<Duration>> {
    match expires_in_seconds {
        0 => Ok(None),
        s if Duration::from_secs(s) > MAX_EXPIRY => Err(ControlPlaneError::invalid(
            "expires_in_seconds",
            "must be at most 10 years",
        )),
        s => Ok(Some(Duration::from_secs(s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(error: ControlPlaneError) -> &'static str {
        match error {
            ControlPlaneError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn ids_and_names() {
        assert!(OrgId::parse("org_0123456789abcdef01234567").is_ok());
        assert!(OrgId::parse("org_default").is_ok());
        assert_eq!(field_of(OrgId::parse("acme").unwrap_err()), "org_id");
        assert_eq!(field_of(OrgName::parse("  ").unwrap_err()), "name");
        assert_eq!(field_of(OrgName::parse("a\u{7}b").unwrap_err()), "name");
        assert_eq!(OrgName::parse(" Acme ").unwrap().as_str(), "Acme");
        assert!(ApiKeyId::parse("key_0123456789abcdef").is_ok());
        assert_eq!(field_of(ApiKeyId::parse("7").unwrap_err()), "key_id");
    }

    #[test]
    fn admin_token_ids_roles_and_specs() {
        assert_eq!(
            AdminTokenId::parse(" adm_0123456789ABCDEF ")
                .unwrap()
                .as_str(),
            "adm_0123456789abcdef"
        );
        for bad in [
            "",
            "adm_",
            "key_0123456789abcdef",
            "adm_0123456789abcdeg",
            "mta_x",
        ] {
            assert_eq!(
                field_of(AdminTokenId::parse(bad).unwrap_err()),
                "token_id",
                "{bad}"
            );
        }
        assert_eq!(AdminRole::parse(" Reader ").unwrap(), AdminRole::Reader);
        assert_eq!(AdminRole::parse("admin").unwrap().as_str(), "admin");
        assert_eq!(field_of(AdminRole::parse("").unwrap_err()), "role");
        assert_eq!(field_of(AdminRole::parse("root").unwrap_err()), "role");
        assert!(AdminRole::Admin.allows(AdminRole::Reader));
        assert!(AdminRole::Admin.allows(AdminRole::Admin));
        assert!(AdminRole::Reader.allows(AdminRole::Reader));
        assert!(!AdminRole::Reader.allows(AdminRole::Admin));
        let spec = AdminTokenSpec::parse(" ops ", "reader", 60).unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.role, spec.expires_in),
            ("ops", AdminRole::Reader, Some(Duration::from_secs(60)))
        );
        assert_eq!(
            AdminTokenSpec::parse("ops", "admin", 0).unwrap().expires_in,
            None
        );
        assert_eq!(
            field_of(AdminTokenSpec::parse("", "admin", 0).unwrap_err()),
            "name"
        );
        assert_eq!(
            field_of(AdminTokenSpec::parse("ops", "admin", u64::MAX).unwrap_err()),
            "expires_in_seconds"
        );
    }

    #[test]
    fn arc_specs() {
        let spec = ArcSpec::parse("http://arc:8000/", "tenant_a", "", "tok").unwrap();
        assert_eq!(
            (spec.url.as_str(), spec.measurement.as_str()),
            ("http://arc:8000", "events")
        );
        assert_eq!(spec.api_key.as_deref().map(String::as_str), Some("tok"));
        assert!(
            ArcSpec::parse("http://arc:8000", "db", "m", "")
                .unwrap()
                .api_key
                .is_none()
        );
        assert!(
            !format!("{spec:?}").contains("tok"),
            "debug output hides the key"
        );
        for (url, db, m, key, field) in [
            ("arc:8000", "db", "", "", "url"),
            ("ftp://arc", "db", "", "", "url"),
            ("http://u:p@arc", "db", "", "", "url"),
            ("http://arc", "1db", "", "", "database"),
            ("http://arc", "db;drop", "", "", "database"),
            ("http://arc", "db", "ev ents", "", "measurement"),
            ("http://arc", "db", "", "a b", "api_key"),
        ] {
            assert_eq!(
                field_of(ArcSpec::parse(url, db, m, key).unwrap_err()),
                field,
                "{url} {db} {m}"
            );
        }
    }

    #[test]
    fn scopes_and_key_specs() {
        let empty: [&str; 0] = [];
        assert_eq!(
            Scopes::parse(&empty).unwrap().names(),
            vec!["read", "write"]
        );
        assert_eq!(
            Scopes::parse(&["read,admin"]).unwrap().to_csv(),
            "admin,read"
        );
        assert_eq!(field_of(Scopes::parse(&["delete"]).unwrap_err()), "scopes");
        let spec = ApiKeySpec::parse("org_x", "ci", &["read"], 3600).unwrap();
        assert_eq!(spec.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(
            field_of(ApiKeySpec::parse("org_x", "", &["read"], 0).unwrap_err()),
            "name"
        );
        assert_eq!(
            field_of(ApiKeySpec::parse("org_x", "ci", &["read"], u64::MAX).unwrap_err()),
            "expires_in_seconds"
        );
    }

    #[test]
    fn arc_names_follow_the_workers_rule() {
        for bad in ["my-db", "1db", "", "a b", &"d".repeat(65)] {
            let e = ArcSpec::parse("http://arc:8000", bad, "", "").expect_err(bad);
            assert_eq!(field_of(e), "database", "{bad:?}");
        }
        let e = ArcSpec::parse("http://arc:8000", "acme", "ev-ents", "").expect_err("-");
        assert_eq!(field_of(e), "measurement");
        let ok = ArcSpec::parse("http://arc:8000", "acme_1", "", "").expect("valid");
        assert_eq!(
            (ok.database.as_str(), ok.measurement.as_str()),
            ("acme_1", "events")
        );
    }
}
