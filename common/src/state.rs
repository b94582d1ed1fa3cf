//! The layout of published state: which key under the `[etcd] prefix` holds
//! which record (see `proto/protos/memtrace/state/v1/state.proto`), and how
//! a record is stored there: authenticated under the fleet key
//! ([`sign_record`], [`open_record`]). Both the control plane (writer) and
//! the workers (readers) use these functions, so the layout is written once.
//!
//! A stored value is `0xA1 | n (1 byte) | fleet key id (n bytes) | tag (32
//! bytes) | record`, the tag being [`FleetKey::record_tag`] of the key's
//! path relative to the prefix (e.g. `keys/key_0123…`) and the record's
//! bytes. A record copied to another key, altered, or written by anyone
//! without the fleet key does not open. The markers (`meta/published`,
//! `meta/reconciled`) and worker registrations carry no authority and are
//! not signed.

use crate::envelope::EnvelopeError;
use crate::fleet::{FleetKey, FleetKeyring};

/// Schema version of the records this build writes and understands.
pub const RECORD_SCHEMA: u32 = 1;

/// The default `[etcd] prefix`.
pub const DEFAULT_PREFIX: &str = "/memtrace/v1/";

/// First byte of a stored record (format 1).
const SIGNED_V1: u8 = 0xA1;
const TAG_LEN: usize = 32;

/// Why a stored value does not open as a record.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordAuthError {
    #[error("not an authenticated record: {0}")]
    Malformed(&'static str),
    #[error("record failed authentication: {0}")]
    Unauthenticated(#[from] EnvelopeError),
}

/// The stored form of `record` at `path` (the key relative to the prefix),
/// authenticated under `fleet`.
pub fn sign_record(fleet: &FleetKey, path: &str, record: &[u8]) -> Vec<u8> {
    let id = fleet.id().as_bytes();
    let id_len = u8::try_from(id.len()).expect("fleet key ids are short");
    let mut out = Vec::with_capacity(2 + id.len() + TAG_LEN + record.len());
    out.push(SIGNED_V1);
    out.push(id_len);
    out.extend_from_slice(id);
    out.extend_from_slice(&fleet.record_tag(path, record));
    out.extend_from_slice(record);
    out
}

/// The record stored as `value` at `path`, once its tag verified under one
/// of `fleet`'s keys.
pub fn open_record<'a>(
    fleet: &FleetKeyring,
    path: &str,
    value: &'a [u8],
) -> Result<&'a [u8], RecordAuthError> {
    let (&format, rest) = value
        .split_first()
        .ok_or(RecordAuthError::Malformed("empty"))?;
    if format != SIGNED_V1 {
        return Err(RecordAuthError::Malformed("unknown format"));
    }
    let (&id_len, rest) = rest
        .split_first()
        .ok_or(RecordAuthError::Malformed("truncated"))?;
    let id_len = usize::from(id_len);
    if rest.len() < id_len + TAG_LEN {
        return Err(RecordAuthError::Malformed("truncated"));
    }
    let (id, rest) = rest.split_at(id_len);
    let (tag, record) = rest.split_at(TAG_LEN);
    let id = std::str::from_utf8(id).map_err(|_| RecordAuthError::Malformed("bad key id"))?;
    fleet.verify_record(id, path, record, tag)?;
    Ok(record)
}

/// A parsed state key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateKey {
    Org {
        org_id: String,
    },
    ArcRoute {
        org_id: String,
    },
    ApiKey {
        key_id: String,
    },
    /// A public key of the control plane's agent-token keys.
    TokenKey {
        key_id: String,
    },
    /// A public key of the control plane's erasure-receipt keys.
    ReceiptKey {
        key_id: String,
    },
    GlobalSetting {
        key: String,
    },
    OrgSetting {
        org_id: String,
        key: String,
    },
    Worker {
        worker_id: String,
    },
    Erasure {
        org_id: String,
        erasure_id: String,
    },
    PublishedMarker,
    ReconciledMarker,
}

/// Builds and parses keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKeys {
    prefix: String,
}

impl Default for StateKeys {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl StateKeys {
    /// `prefix` gets a trailing `/` when it lacks one.
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Everything the control plane owns (all but worker registrations).
    pub fn published_prefixes(&self) -> [String; 6] {
        [
            format!("{}orgs/", self.prefix),
            format!("{}arc/", self.prefix),
            format!("{}keys/", self.prefix),
            format!("{}config/", self.prefix),
            format!("{}token_keys/", self.prefix),
            format!("{}receipt_keys/", self.prefix),
        ]
    }

    /// Put in every publication transaction: its mod_revision is the
    /// revision of the newest published change, which `memtracectl status`
    /// compares with each worker's applied revision.
    pub fn published_marker(&self) -> String {
        format!("{}meta/published", self.prefix)
    }

    /// Written only by a full reconciliation pass, in its last transaction:
    /// present, the bus holds the whole published state. A wiped etcd lacks
    /// it until the control plane has republished everything, even when an
    /// admin change reached the empty bus first (that publication carries
    /// only the published marker), so a worker does not take such a bus for
    /// the whole state.
    pub fn reconciled_marker(&self) -> String {
        format!("{}meta/reconciled", self.prefix)
    }

    /// Erasures in progress: written by a worker (a tenant's delete) or
    /// the control plane, removed by the control plane once verified. Not
    /// among the published prefixes: the reconciler leaves them alone.
    pub fn erasures_prefix(&self) -> String {
        format!("{}erasures/", self.prefix)
    }

    pub fn erasure(&self, org_id: &str, erasure_id: &str) -> String {
        format!("{}erasures/{org_id}/{erasure_id}", self.prefix)
    }

    pub fn workers_prefix(&self) -> String {
        format!("{}workers/", self.prefix)
    }

    pub fn org(&self, org_id: &str) -> String {
        format!("{}orgs/{org_id}", self.prefix)
    }

    pub fn arc_route(&self, org_id: &str) -> String {
        format!("{}arc/{org_id}", self.prefix)
    }

    pub fn api_key(&self, key_id: &str) -> String {
        format!("{}keys/{key_id}", self.prefix)
    }

    pub fn token_key(&self, key_id: &str) -> String {
        format!("{}token_keys/{key_id}", self.prefix)
    }

    pub fn receipt_key(&self, key_id: &str) -> String {
        format!("{}receipt_keys/{key_id}", self.prefix)
    }

    pub fn global_setting(&self, key: &str) -> String {
        format!("{}config/global/{key}", self.prefix)
    }

    pub fn org_setting(&self, org_id: &str, key: &str) -> String {
        format!("{}config/org/{org_id}/{key}", self.prefix)
    }

    pub fn worker(&self, worker_id: &str) -> String {
        format!("{}workers/{worker_id}", self.prefix)
    }

    /// `key` relative to the prefix (what a record's tag binds), `None`
    /// outside it.
    pub fn relative<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.prefix)
    }

    /// Parses a full key; `None` for keys outside the layout.
    pub fn parse(&self, key: &str) -> Option<StateKey> {
        let rest = key.strip_prefix(&self.prefix)?;
        let (kind, rest) = rest.split_once('/')?;
        let nonempty = |s: &str| (!s.is_empty() && !s.contains('/')).then(|| s.to_owned());
        match kind {
            "orgs" => Some(StateKey::Org {
                org_id: nonempty(rest)?,
            }),
            "arc" => Some(StateKey::ArcRoute {
                org_id: nonempty(rest)?,
            }),
            "keys" => Some(StateKey::ApiKey {
                key_id: nonempty(rest)?,
            }),
            "token_keys" => Some(StateKey::TokenKey {
                key_id: nonempty(rest)?,
            }),
            "receipt_keys" => Some(StateKey::ReceiptKey {
                key_id: nonempty(rest)?,
            }),
            "workers" => Some(StateKey::Worker {
                worker_id: nonempty(rest)?,
            }),
            "erasures" => {
                let (org_id, erasure_id) = rest.split_once('/')?;
                Some(StateKey::Erasure {
                    org_id: nonempty(org_id)?,
                    erasure_id: nonempty(erasure_id)?,
                })
            }
            "meta" if rest == "published" => Some(StateKey::PublishedMarker),
            "meta" if rest == "reconciled" => Some(StateKey::ReconciledMarker),
            "config" => {
                let (scope, rest) = rest.split_once('/')?;
                match scope {
                    "global" => Some(StateKey::GlobalSetting {
                        key: nonempty(rest)?,
                    }),
                    "org" => {
                        let (org_id, key) = rest.split_once('/')?;
                        Some(StateKey::OrgSetting {
                            org_id: nonempty(org_id)?,
                            key: nonempty(key)?,
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let keys = StateKeys::new("/mt/v1");
        assert_eq!(keys.prefix(), "/mt/v1/");
        let cases = [
            (
                keys.org("org_a"),
                StateKey::Org {
                    org_id: "org_a".into(),
                },
            ),
            (
                keys.arc_route("org_a"),
                StateKey::ArcRoute {
                    org_id: "org_a".into(),
                },
            ),
            (
                keys.api_key("key_1"),
                StateKey::ApiKey {
                    key_id: "key_1".into(),
                },
            ),
            (
                keys.token_key("tk_1"),
                StateKey::TokenKey {
                    key_id: "tk_1".into(),
                },
            ),
            (
                keys.receipt_key("rk_1"),
                StateKey::ReceiptKey {
                    key_id: "rk_1".into(),
                },
            ),
            (
                keys.global_setting("arc.write_batch_size"),
                StateKey::GlobalSetting {
                    key: "arc.write_batch_size".into(),
                },
            ),
            (
                keys.org_setting("org_a", "limits.requests_per_second"),
                StateKey::OrgSetting {
                    org_id: "org_a".into(),
                    key: "limits.requests_per_second".into(),
                },
            ),
            (
                keys.worker("w1"),
                StateKey::Worker {
                    worker_id: "w1".into(),
                },
            ),
            (
                keys.erasure("org_a", "era_1"),
                StateKey::Erasure {
                    org_id: "org_a".into(),
                    erasure_id: "era_1".into(),
                },
            ),
            (keys.published_marker(), StateKey::PublishedMarker),
            (keys.reconciled_marker(), StateKey::ReconciledMarker),
        ];
        for (key, parsed) in cases {
            assert_eq!(keys.parse(&key), Some(parsed), "{key}");
        }
        for bad in [
            "/other/orgs/x",
            "/mt/v1/orgs/",
            "/mt/v1/orgs/a/b",
            "/mt/v1/nope/x",
            "/mt/v1/config/org/a",
            "/mt/v1/erasures/org_a",
            "/mt/v1/erasures/org_a/e/x",
        ] {
            assert_eq!(keys.parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn records_open_only_where_and_as_they_were_signed() {
        use crate::fleet::{FleetKey, FleetKeyring};
        let ring = FleetKeyring::new(FleetKey::new(&[9; 32]), vec![]);
        let value = sign_record(ring.active(), "keys/key_1", b"record bytes");
        assert_eq!(
            open_record(&ring, "keys/key_1", &value),
            Ok(&b"record bytes"[..])
        );
        // moved to another key
        assert!(matches!(
            open_record(&ring, "keys/key_2", &value),
            Err(RecordAuthError::Unauthenticated(_))
        ));
        // altered
        let mut altered = value.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(open_record(&ring, "keys/key_1", &altered).is_err());
        // written by someone with another key, or unsigned
        let forged = sign_record(&FleetKey::new(&[8; 32]), "keys/key_1", b"record bytes");
        assert!(open_record(&ring, "keys/key_1", &forged).is_err());
        for raw in [&b""[..], b"record bytes", &[0xA1], &[0xA1, 40, b'x']] {
            assert!(matches!(
                open_record(&ring, "keys/key_1", raw),
                Err(RecordAuthError::Malformed(_))
            ));
        }
        let keys = StateKeys::new("/mt/v1");
        assert_eq!(keys.relative("/mt/v1/keys/key_1"), Some("keys/key_1"));
        assert_eq!(keys.relative("/other/keys/key_1"), None);
    }
}
