//! Two control-plane replicas on one database and one bus. Replica A runs a
//! reconciliation pass; it is held just before it reads the keys from the
//! bus while replica B revokes a key (database commit and publication).
//! Reading the database before the bus, the pass would then write the key
//! back as usable — the revocation undone until the next pass. Reading the
//! bus first and writing only keys unchanged since that read, it cannot.

use super::Publisher;
use crate::auth::AdminActor;
use crate::domain::ControlPlane;
use crate::domain::types::{ApiKeyId, ApiKeySpec, OrgName};
use crate::store::SqlStore;
use async_trait::async_trait;
use memtrace_common::bus::memory::MemoryBus;
use memtrace_common::bus::{BusError, Guard, LeasedKey, Op, PrefixRead, StateBus, Watch};
use memtrace_common::envelope::{Keyring, MasterKey};
use memtrace_common::fleet::{FleetKey, FleetKeyring};
use memtrace_common::state::{StateKeys, open_record};
use memtrace_proto::state::v1 as state;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// The shared bus, as replica A sees it: its next read of the `keys/`
/// prefix announces itself and waits to be let go.
struct HeldBus {
    inner: Arc<MemoryBus>,
    hold: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

#[async_trait]
impl StateBus for HeldBus {
    async fn load(&self, prefix: &str) -> Result<PrefixRead, BusError> {
        let hold = if prefix.ends_with("/keys/") {
            self.hold.lock().expect("hold").take()
        } else {
            None
        };
        if let Some((reached, resume)) = hold {
            let _ = reached.send(());
            let _ = resume.await;
        }
        self.inner.load(prefix).await
    }
    async fn watch(&self, prefix: &str, start: i64) -> Result<Box<dyn Watch>, BusError> {
        self.inner.watch(prefix, start).await
    }
    async fn apply(&self, ops: Vec<Op>) -> Result<i64, BusError> {
        self.inner.apply(ops).await
    }
    async fn apply_guarded(&self, guards: &[Guard], ops: Vec<Op>) -> Result<Option<i64>, BusError> {
        self.inner.apply_guarded(guards, ops).await
    }
    async fn current_revision(&self) -> Result<i64, BusError> {
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: i64) -> Result<(), BusError> {
        self.inner.compact(revision).await
    }
    async fn lease_put(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Box<dyn LeasedKey>, BusError> {
        self.inner.lease_put(key, value, ttl).await
    }
}

async fn replica(url: &str, bus: Arc<dyn StateBus>, fleet: &Arc<FleetKeyring>) -> ControlPlane {
    let store = SqlStore::connect(url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let publisher = Publisher::new(bus, StateKeys::default(), fleet.clone());
    ControlPlane::new(
        Arc::new(store),
        Arc::new(Keyring::new(MasterKey::new(&[7; 32]), Vec::new())),
        Arc::new(publisher),
        Duration::from_secs(1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciling_replica_never_undoes_another_replicas_revocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = SqlStore::sqlite_url(dir.path().join("cp.db").to_str().expect("utf-8"));
    let shared = Arc::new(MemoryBus::new());
    let held = Arc::new(HeldBus {
        inner: shared.clone(),
        hold: Mutex::new(None),
    });
    let fleet = Arc::new(FleetKeyring::new(FleetKey::new(&[5; 32]), vec![]));
    let a = Arc::new(replica(&url, held.clone(), &fleet).await);
    let b = replica(&url, shared.clone(), &fleet).await;
    let actor = AdminActor {
        fingerprint: "fp-test".into(),
    };
    let org = b
        .create_org(&actor, &OrgName::parse("race").expect("name"))
        .await
        .expect("org")
        .value;
    let spec = ApiKeySpec::parse(&org.org.id, "k", &["read"], 0).expect("spec");
    let (row, _) = b.create_api_key(&actor, &spec).await.expect("create").value;

    // A's pass stops at its read of the keys; B revokes meanwhile
    let (reached_tx, reached) = oneshot::channel();
    let (resume, resume_rx) = oneshot::channel();
    *held.hold.lock().expect("hold") = Some((reached_tx, resume_rx));
    let pass = {
        let a = a.clone();
        tokio::spawn(async move { a.reconcile().await })
    };
    tokio::time::timeout(Duration::from_secs(10), reached)
        .await
        .expect("the pass reads the keys")
        .expect("held");
    let id = ApiKeyId::parse(&row.id).expect("id");
    b.revoke_api_key(&actor, &id)
        .await
        .expect("revoke")
        .revision
        .expect("published");
    resume.send(()).expect("resume");
    // the pass either saw the revocation or lost its guard; both are fine
    let _ = tokio::time::timeout(Duration::from_secs(10), pass)
        .await
        .expect("the pass ends")
        .expect("no panic");

    let keys = StateKeys::default();
    let key = keys.api_key(&row.id);
    let read = shared.load(&key).await.expect("load");
    let kv = read.kvs.iter().find(|kv| kv.key == key).expect("published");
    let record =
        open_record(&fleet, keys.relative(&key).expect("path"), &kv.value).expect("signed");
    let record = state::ApiKeyRecord::decode(record).expect("record");
    assert!(record.revoked, "the revocation must stand");
    // and a later pass agrees with it
    a.reconcile().await.expect("pass");
    let read = shared.load(&key).await.expect("load");
    let kv = read.kvs.iter().find(|kv| kv.key == key).expect("published");
    let record =
        open_record(&fleet, keys.relative(&key).expect("path"), &kv.value).expect("signed");
    assert!(state::ApiKeyRecord::decode(record).expect("record").revoked);
}
