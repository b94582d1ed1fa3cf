//! The layout of published state: which key under the `[etcd] prefix` holds
//! which record (see `proto/protos/memtrace/state/v1/state.proto`). Both the
//! control plane (writer) and the workers (readers) use these functions, so
//! the layout is written once.

/// Schema version of the records this build writes and understands.
pub const RECORD_SCHEMA: u32 = 1;

/// The default `[etcd] prefix`.
pub const DEFAULT_PREFIX: &str = "/memtrace/v1/";

/// A parsed state key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateKey {
    Org { org_id: String },
    ArcRoute { org_id: String },
    ApiKey { key_id: String },
    GlobalSetting { key: String },
    OrgSetting { org_id: String, key: String },
    Worker { worker_id: String },
    PublishedMarker,
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
    pub fn published_prefixes(&self) -> [String; 4] {
        [
            format!("{}orgs/", self.prefix),
            format!("{}arc/", self.prefix),
            format!("{}keys/", self.prefix),
            format!("{}config/", self.prefix),
        ]
    }

    /// Put in every publication transaction: its mod_revision is the
    /// revision of the newest published change, which `memtracectl status`
    /// compares with each worker's applied revision.
    pub fn published_marker(&self) -> String {
        format!("{}meta/published", self.prefix)
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

    pub fn global_setting(&self, key: &str) -> String {
        format!("{}config/global/{key}", self.prefix)
    }

    pub fn org_setting(&self, org_id: &str, key: &str) -> String {
        format!("{}config/org/{org_id}/{key}", self.prefix)
    }

    pub fn worker(&self, worker_id: &str) -> String {
        format!("{}workers/{worker_id}", self.prefix)
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
            "workers" => Some(StateKey::Worker {
                worker_id: nonempty(rest)?,
            }),
            "meta" if rest == "published" => Some(StateKey::PublishedMarker),
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
            (keys.published_marker(), StateKey::PublishedMarker),
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
        ] {
            assert_eq!(keys.parse(bad), None, "{bad}");
        }
    }
}
