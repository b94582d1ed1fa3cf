//! `memtrace_admission_refusals_total{reason}`: the requests admission
//! refused, by why. Clients get one message for every invalid key (no
//! oracle); operators see here whether 401s are unknown keys (probing),
//! wrong secrets, revoked or expired keys still in use, or keys of deleted
//! orgs. Reasons form a fixed set (no org or key label).

use super::auth::AuthError;
use crate::service::ServiceError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The refusal counters (cheap to clone: shared).
#[derive(Clone, Debug, Default)]
pub struct Refusals {
    counts: Family<ReasonLabels, Counter>,
}

/// Every reason label [`reason`] gives.
const REASONS: [&str; 21] = [
    "key_missing",
    "malformed",
    "unknown",
    "wrong_secret",
    "revoked_or_expired",
    "org_deleted",
    "legacy_disabled",
    "scope",
    "token_malformed",
    "token_unknown_key",
    "token_bad_signature",
    "token_bad_claims",
    "token_expired",
    "token_not_yet_valid",
    "token_org_deleted",
    "agent",
    "rate_limited",
    "reads_busy",
    "no_arc_instance",
    "not_ready",
    "store",
];

/// The reason label of an admission refusal.
fn reason(error: &ServiceError) -> &'static str {
    match error {
        ServiceError::Auth(AuthError::Missing) => "key_missing",
        ServiceError::Auth(AuthError::Invalid(why)) => why.as_str(),
        ServiceError::Auth(AuthError::MissingScope(_) | AuthError::TokenMissingScope(_)) => "scope",
        ServiceError::Auth(AuthError::Token(why)) => why.as_str(),
        ServiceError::Auth(AuthError::TokenOrgDeleted) => "token_org_deleted",
        ServiceError::Auth(
            AuthError::WrongAgent { .. }
            | AuthError::AgentBound { .. }
            | AuthError::TokenCannotMint,
        ) => "agent",
        ServiceError::RateLimited { .. } => "rate_limited",
        ServiceError::ReadsBusy { .. } => "reads_busy",
        ServiceError::NoArcInstance => "no_arc_instance",
        ServiceError::Unavailable(_) => "not_ready",
        _ => "store",
    }
}

impl Refusals {
    /// Adds the family to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "memtrace_admission_refusals",
            "requests refused before the service ran, by reason",
            self.counts.clone(),
        );
        // every reason exported at 0 from the start, so a rate is defined
        for reason in REASONS {
            let _ = self.counts.get_or_create(&ReasonLabels { reason });
        }
    }

    /// Counts `error`, a refusal of admission.
    pub fn count(&self, error: &ServiceError) {
        self.counts
            .get_or_create(&ReasonLabels {
                reason: reason(error),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::auth::InvalidKey;
    use std::time::Duration;

    #[test]
    fn every_reason_is_exported_from_the_start() {
        use crate::admission::auth::InvalidKey::*;
        for why in [
            Malformed,
            Unknown,
            WrongSecret,
            NotUsable,
            OrgDeleted,
            LegacyDisabled,
        ] {
            assert!(REASONS.contains(&why.as_str()), "{why:?}");
        }
        let mut registry = Registry::default();
        Refusals::default().register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert_eq!(
            text.matches("memtrace_admission_refusals_total{").count(),
            REASONS.len()
        );
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let r = Refusals::default();
        r.count(&AuthError::Invalid(InvalidKey::Unknown).into());
        r.count(&AuthError::Invalid(InvalidKey::Unknown).into());
        r.count(&AuthError::Missing.into());
        r.count(&ServiceError::RateLimited {
            retry_after: Duration::from_secs(1),
        });
        let mut registry = Registry::default();
        r.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"memtrace_admission_refusals_total{reason="unknown"} 2"#,
            r#"memtrace_admission_refusals_total{reason="key_missing"} 1"#,
            r#"memtrace_admission_refusals_total{reason="rate_limited"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
