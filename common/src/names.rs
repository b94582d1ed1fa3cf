//! Names both planes validate with one rule each: org ids, and the Arc
//! database and measurement an org's memories live in. The control plane
//! refuses a name here before it stores a binding, so every name a worker
//! receives is one it can use (workers write them unquoted as `db.table` in
//! SQL, which is why `-` is not allowed although Arc itself accepts it).

use std::fmt;

/// A name that broke its rule; `field` is the request field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {rule}")]
pub struct NameError {
    pub field: &'static str,
    pub rule: &'static str,
}

/// The rule of [`OrgId`].
pub const ORG_ID_RULE: &str = "must be org_ followed by 1 to 64 letters, digits or _";

/// The rule of Arc database and measurement names.
pub const ARC_NAME_RULE: &str =
    "must start with a letter, then letters, digits or _, at most 64 characters";

/// An org id: `org_` followed by 1 to 64 of `[A-Za-z0-9_]` (generated ids
/// `org_<24 hex>` and fixed ones such as `org_default`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(String);

impl OrgId {
    /// The request field org ids are read from, as errors name it.
    pub const FIELD: &'static str = "org_id";

    /// Validates `value` (not trimmed).
    pub fn parse(value: &str) -> Result<Self, NameError> {
        if crate::ids::is_valid_id("org", value) {
            Ok(Self(value.to_owned()))
        } else {
            Err(NameError {
                field: Self::FIELD,
                rule: ORG_ID_RULE,
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn arc_name(field: &'static str, value: &str) -> Result<(), NameError> {
    let mut bytes = value.bytes();
    let ok = value.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NameError {
            field,
            rule: ARC_NAME_RULE,
        })
    }
}

/// Checks an Arc database name (field `database`).
pub fn check_arc_database(value: &str) -> Result<(), NameError> {
    arc_name("database", value)
}

/// memtrace's own tables in an org's Arc database (agent and session state
/// rows, superseded memory versions): no binding may name one as its
/// memory measurement.
pub const RESERVED_MEASUREMENTS: [&str; 4] =
    ["agents", "sessions", "memory_versions", "erasure_receipts"];

/// Checks an Arc measurement name (field `measurement`).
pub fn check_arc_measurement(value: &str) -> Result<(), NameError> {
    arc_name("measurement", value)
}

/// Checks the memory measurement of a binding (field `measurement`): an
/// Arc name that is not one of memtrace's own tables.
pub fn check_memory_measurement(value: &str) -> Result<(), NameError> {
    check_arc_measurement(value)?;
    if RESERVED_MEASUREMENTS.contains(&value) {
        return Err(NameError {
            field: "measurement",
            rule: "must not be agents, sessions, memory_versions or erasure_receipts (memtrace's own tables)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids() {
        for ok in ["org_default", "org_5f1c0e9a4b7d2c8e1a3f6b90", "org_A_1"] {
            assert_eq!(OrgId::parse(ok).map(|o| o.to_string()), Ok(ok.to_owned()));
        }
        for bad in ["", "org_", "org-x", "acme", "org_a-b", " org_a", "org_a'b"] {
            let err = OrgId::parse(bad).unwrap_err();
            assert_eq!(err.field, "org_id", "{bad:?}");
            assert_eq!(err.to_string(), format!("invalid org_id: {ORG_ID_RULE}"));
        }
        assert!(OrgId::parse(&format!("org_{}", "a".repeat(64))).is_ok());
        assert!(OrgId::parse(&format!("org_{}", "a".repeat(65))).is_err());
    }

    #[test]
    fn arc_names() {
        for ok in ["acme", "a", "Acme_2", &"a".repeat(64)] {
            assert!(check_arc_database(ok).is_ok(), "{ok:?}");
            assert!(check_arc_measurement(ok).is_ok(), "{ok:?}");
        }
        for reserved in RESERVED_MEASUREMENTS {
            assert!(check_arc_measurement(reserved).is_ok());
            assert!(check_memory_measurement("events").is_ok());
            assert!(
                check_memory_measurement(reserved)
                    .unwrap_err()
                    .to_string()
                    .contains("memtrace's own tables")
            );
        }
        for bad in [
            "",
            "1acme",
            "_acme",
            "ac-me",
            "ac me",
            "acme.x",
            &"a".repeat(65),
        ] {
            assert_eq!(
                check_arc_database(bad),
                Err(NameError {
                    field: "database",
                    rule: ARC_NAME_RULE
                }),
                "{bad:?}"
            );
            assert_eq!(check_arc_measurement(bad).unwrap_err().field, "measurement");
        }
    }
}
