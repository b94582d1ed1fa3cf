//! One async lock per org, for work that must not interleave within an org
//! but must never wait on another org: agent registration checks a name is
//! free and then appends the agent, two Arc round trips that a slow tenant
//! can stretch to its query timeout. A single lock for every org let one
//! slow Arc hold up every tenant's registrations.
//!
//! The map holds an org's lock only while someone holds or waits for it:
//! each caller is counted in before it waits and counted out when its
//! guard, or its wait, is dropped (a cancelled request included), and the
//! last one out removes the entry. So the map never holds more orgs than
//! there are registrations in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::OwnedMutexGuard;

/// An org's lock and how many callers hold or wait for it.
#[derive(Debug, Default)]
struct Entry {
    lock: Arc<tokio::sync::Mutex<()>>,
    users: usize,
}

/// Per-org async locks (see the module docs).
#[derive(Debug, Default)]
pub struct OrgLocks {
    entries: Mutex<HashMap<String, Entry>>,
}

/// Holds an org's lock until dropped.
#[derive(Debug)]
pub struct OrgGuard<'a> {
    // released before the caller is counted out (fields drop in order), so
    // a removed entry is never still held
    _held: OwnedMutexGuard<()>,
    _user: User<'a>,
}

/// One caller counted in on an org's entry; counts it out when dropped.
#[derive(Debug)]
struct User<'a> {
    locks: &'a OrgLocks,
    org: String,
}

impl Drop for User<'_> {
    fn drop(&mut self) {
        let mut entries = self.locks.entries();
        if let Some(entry) = entries.get_mut(&self.org) {
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0 {
                entries.remove(&self.org);
            }
        }
    }
}

impl OrgLocks {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for `org`'s lock; other orgs' locks are never waited on.
    pub async fn lock(&self, org: &str) -> OrgGuard<'_> {
        let lock = {
            let mut entries = self.entries();
            let entry = entries.entry(org.to_owned()).or_default();
            entry.users += 1;
            entry.lock.clone()
        };
        let user = User {
            locks: self,
            org: org.to_owned(),
        };
        OrgGuard {
            _held: lock.lock_owned().await,
            _user: user,
        }
    }

    /// Orgs whose lock is held or waited for.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    const A_WHILE: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn orgs_never_wait_on_each_other() {
        let locks = OrgLocks::default();
        let a = locks.lock("org_a").await;
        let b = tokio::time::timeout(A_WHILE, locks.lock("org_b")).await;
        assert!(b.is_ok(), "org_b waited on org_a's lock");
        let again = tokio::time::timeout(A_WHILE, locks.lock("org_a")).await;
        assert!(again.is_err(), "org_a's lock is exclusive");
        drop(a);
        drop(b);
        let after = tokio::time::timeout(A_WHILE, locks.lock("org_a")).await;
        assert!(after.is_ok(), "released");
    }

    #[tokio::test]
    async fn entries_live_only_while_held_or_awaited() {
        let locks = OrgLocks::default();
        let held = locks.lock("org_a").await;
        assert_eq!(locks.len(), 1);
        // a waiter that gives up (a cancelled request) is counted out too
        assert!(
            tokio::time::timeout(A_WHILE, locks.lock("org_a"))
                .await
                .is_err()
        );
        assert_eq!(locks.len(), 1);
        drop(held);
        assert_eq!(locks.len(), 0);
        // a waiter keeps the entry, and the lock, past the holder's release
        let held = locks.lock("org_a").await;
        let waiting = {
            let locks = &locks;
            async move {
                let _g = locks.lock("org_a").await;
                locks.len()
            }
        };
        let (len, ()) = tokio::join!(waiting, async move {
            tokio::time::sleep(A_WHILE).await;
            drop(held);
        });
        assert_eq!(len, 1, "one entry while the waiter holds it");
        assert_eq!(locks.len(), 0);
    }
}
