//! Secrets the control plane reads from its environment, validated before any
//! port is bound. Values are never logged; errors name the variable only.

use crate::error::ControlPlaneError;
use memtrace_common::config::Env;
use memtrace_common::credentials::MIN_ADMIN_TOKEN_LEN;
use memtrace_common::envelope::{Keyring, MasterKey};
use memtrace_common::fleet::{FLEET_KEY_VAR, FleetKeyring, PREVIOUS_FLEET_KEYS_VAR};
use memtrace_common::keys::{NamedKey, parse_key, parse_key_list};
use zeroize::Zeroizing;

pub const MASTER_KEY_VAR: &str = "MEMTRACE_MASTER_KEY";
pub const PREVIOUS_MASTER_KEYS_VAR: &str = "MEMTRACE_MASTER_KEYS_PREVIOUS";
pub const BOOTSTRAP_TOKEN_VAR: &str = "MEMTRACE_BOOTSTRAP_ADMIN_TOKEN";
pub const DATABASE_URL_VAR: &str = "MEMTRACE_DATABASE_URL";
pub const EXPECTED_MIGRATION_VAR: &str = "MEMTRACE_EXPECTED_MIGRATION";

/// Everything secret or deployment-specific the control plane needs.
pub struct Secrets {
    pub keyring: Keyring,
    pub bootstrap_admin_token: Option<Zeroizing<String>>,
    /// `MEMTRACE_DATABASE_URL`; `None` means SQLite at `[auth] db_path`.
    pub database_url: Option<Zeroizing<String>>,
    pub expected_migration: Option<i64>,
    /// `MEMTRACE_FLEET_KEY` (+ previous): seals what workers need. Required
    /// with etcd; a single node without it uses an ephemeral in-process key.
    pub fleet: Option<FleetKeyring>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("keyring", &self.keyring)
            .field(
                "bootstrap_admin_token",
                &self.bootstrap_admin_token.as_ref().map(|_| "***"),
            )
            .field("database_url", &self.database_url.as_ref().map(|_| "***"))
            .field("expected_migration", &self.expected_migration)
            .field("fleet", &self.fleet)
            .finish()
    }
}

impl Secrets {
    pub fn from_env(env: &Env) -> Result<Self, ControlPlaneError> {
        let startup =
            |e: memtrace_common::keys::KeyError| ControlPlaneError::Startup(e.to_string());
        let active = NamedKey {
            var: MASTER_KEY_VAR.to_owned(),
            key: parse_key(MASTER_KEY_VAR, env.get(MASTER_KEY_VAR)).map_err(startup)?,
        };
        let previous = parse_key_list(PREVIOUS_MASTER_KEYS_VAR, env.get(PREVIOUS_MASTER_KEYS_VAR))
            .map_err(startup)?;
        let bootstrap_admin_token = match env.get(BOOTSTRAP_TOKEN_VAR).map(str::trim) {
            None => None,
            Some(token) if token.chars().count() < MIN_ADMIN_TOKEN_LEN => {
                return Err(ControlPlaneError::Startup(format!(
                    "{BOOTSTRAP_TOKEN_VAR} must be at least {MIN_ADMIN_TOKEN_LEN} characters"
                )));
            }
            Some(token) if token.starts_with(memtrace_common::credentials::API_KEY_PREFIX) => {
                return Err(ControlPlaneError::Startup(format!(
                    "{BOOTSTRAP_TOKEN_VAR} must not start with mtk_ (that prefix is reserved for data-plane api keys)"
                )));
            }
            Some(token) => Some(Zeroizing::new(token.to_owned())),
        };
        let expected_migration = env
            .get(EXPECTED_MIGRATION_VAR)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    ControlPlaneError::Startup(format!(
                        "{EXPECTED_MIGRATION_VAR} must be an integer migration version"
                    ))
                })
            })
            .transpose()?;
        let fleet = match memtrace_common::fleet::keyring_from_env(env).map_err(startup)? {
            Some((ring, fleet_keys)) => {
                let master: Vec<&NamedKey> = std::iter::once(&active).chain(&previous).collect();
                refuse_shared_keys(&fleet_keys, &master)?;
                Some(ring)
            }
            None => None,
        };
        Ok(Self {
            fleet,
            keyring: Keyring::new(
                MasterKey::new(&active.key),
                previous.iter().map(|k| MasterKey::new(&k.key)).collect(),
            ),
            bootstrap_admin_token,
            database_url: env
                .get(DATABASE_URL_VAR)
                .map(|u| Zeroizing::new(u.to_owned())),
            expected_migration,
        })
    }
}

/// Refuses a fleet key (active or previous) equal to any master key held
/// (active or previous). Every worker holds the fleet keys, and a retired
/// master key still opens the envelopes not yet re-wrapped (and every
/// backup made before the rotation), so it must not leave the control
/// plane as a fleet key any more than the active one.
fn refuse_shared_keys(fleet: &[NamedKey], master: &[&NamedKey]) -> Result<(), ControlPlaneError> {
    for f in fleet {
        if let Some(m) = master.iter().find(|m| m.key == f.key) {
            return Err(ControlPlaneError::Startup(format!(
                "{} must differ from {}: a fleet key ({FLEET_KEY_VAR} or {PREVIOUS_FLEET_KEYS_VAR}) must differ from every master key ({MASTER_KEY_VAR} and {PREVIOUS_MASTER_KEYS_VAR}); master keys never leave the control plane",
                f.var, m.var
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrace_common::keys::generate_key_b64;

    #[test]
    fn master_key_is_required_and_validated() {
        let err = Secrets::from_env(&Env::default()).unwrap_err().to_string();
        assert!(err.contains(MASTER_KEY_VAR), "{err}");
        let err = Secrets::from_env(&Env::from_pairs([(MASTER_KEY_VAR, "c2hvcnQ=")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("32 bytes"), "{err}");
        let ok =
            Secrets::from_env(&Env::from_pairs([(MASTER_KEY_VAR, generate_key_b64())])).unwrap();
        assert!(ok.bootstrap_admin_token.is_none() && ok.database_url.is_none());
    }

    #[test]
    fn fleet_key_must_differ_from_master_key() {
        let key = generate_key_b64();
        let same = Env::from_pairs([
            (MASTER_KEY_VAR, key.as_str()),
            (FLEET_KEY_VAR, key.as_str()),
        ]);
        let err = Secrets::from_env(&same).unwrap_err().to_string();
        assert!(err.contains("MEMTRACE_FLEET_KEY must differ"), "{err}");
        let bad = Env::from_pairs([(MASTER_KEY_VAR, key.as_str()), (FLEET_KEY_VAR, "short")]);
        assert!(
            Secrets::from_env(&bad)
                .unwrap_err()
                .to_string()
                .contains(FLEET_KEY_VAR)
        );
        let other = generate_key_b64();
        let ok = Env::from_pairs([
            (MASTER_KEY_VAR, key.as_str()),
            (FLEET_KEY_VAR, other.as_str()),
        ]);
        assert!(Secrets::from_env(&ok).unwrap().fleet.is_some());
    }

    #[test]
    fn no_fleet_key_may_be_a_master_key_active_or_retired() {
        let (master, retired, fleet, old_fleet) = (
            generate_key_b64(),
            generate_key_b64(),
            generate_key_b64(),
            generate_key_b64(),
        );
        let env = |fleet_key: &str, previous_fleet: &str| {
            Env::from_pairs([
                (MASTER_KEY_VAR, master.as_str()),
                (PREVIOUS_MASTER_KEYS_VAR, retired.as_str()),
                (FLEET_KEY_VAR, fleet_key),
                (PREVIOUS_FLEET_KEYS_VAR, previous_fleet),
            ])
        };
        let refused = |fleet_key: &str, previous_fleet: &str| {
            Secrets::from_env(&env(fleet_key, previous_fleet))
                .unwrap_err()
                .to_string()
        };
        // a retired master key as the fleet key
        let err = refused(&retired, "");
        assert!(
            err.starts_with(
                "MEMTRACE_FLEET_KEY must differ from MEMTRACE_MASTER_KEYS_PREVIOUS (entry 1)"
            ),
            "{err}"
        );
        // the active or a retired master key among the previous fleet keys
        let err = refused(&fleet, &format!("{old_fleet},{master}"));
        assert!(
            err.starts_with(
                "MEMTRACE_FLEET_KEYS_PREVIOUS (entry 2) must differ from MEMTRACE_MASTER_KEY:"
            ),
            "{err}"
        );
        let err = refused(&fleet, &retired);
        assert!(
            err.starts_with(
                "MEMTRACE_FLEET_KEYS_PREVIOUS (entry 1) must differ from MEMTRACE_MASTER_KEYS_PREVIOUS (entry 1)"
            ),
            "{err}"
        );
        for var in [
            FLEET_KEY_VAR,
            PREVIOUS_FLEET_KEYS_VAR,
            MASTER_KEY_VAR,
            PREVIOUS_MASTER_KEYS_VAR,
        ] {
            assert!(err.contains(var), "{var} named: {err}");
        }
        for key in [&master, &retired, &fleet] {
            assert!(!err.contains(key.as_str()), "no key value in {err}");
        }
        let ok = Secrets::from_env(&env(&fleet, &old_fleet)).unwrap();
        assert!(ok.fleet.is_some());
    }

    #[test]
    fn bootstrap_token_rules() {
        let key = generate_key_b64();
        let short = Env::from_pairs([
            (MASTER_KEY_VAR, key.as_str()),
            (BOOTSTRAP_TOKEN_VAR, "short"),
        ]);
        assert!(
            Secrets::from_env(&short)
                .unwrap_err()
                .to_string()
                .contains("at least 32")
        );
        let previous = Env::from_pairs([
            (MASTER_KEY_VAR, key.as_str()),
            (PREVIOUS_MASTER_KEYS_VAR, "bad"),
        ]);
        assert!(
            Secrets::from_env(&previous)
                .unwrap_err()
                .to_string()
                .contains("entry 1")
        );
        let secret_value = "x".repeat(40);
        let env = Env::from_pairs([
            (MASTER_KEY_VAR, key.as_str()),
            (BOOTSTRAP_TOKEN_VAR, secret_value.as_str()),
        ]);
        let secrets = Secrets::from_env(&env).unwrap();
        assert!(
            !format!("{secrets:?}").contains(&secret_value),
            "debug output hides secrets"
        );
    }
}
