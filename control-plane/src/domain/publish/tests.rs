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
    hold: Mutex<Option<Hold>>,
    /// Held: the next write (guarded or not) of a `keys/` or `config/` record.
    hold_write: Mutex<Option<Hold>>,
}

/// Announces that the hold was reached, then waits to be let go.
type Hold = (oneshot::Sender<()>, oneshot::Receiver<()>);

impl HeldBus {
    fn new(inner: Arc<MemoryBus>) -> Self {
        Self {
            inner,
            hold: Mutex::new(None),
            hold_write: Mutex::new(None),
        }
    }

    async fn write_held(&self, ops: &[Op]) {
        let touches = ops.iter().any(|op| {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            };
            key.contains("/keys/") || key.contains("/config/")
        });
        let hold = if touches {
            self.hold_write.lock().expect("hold").take()
        } else {
            None
        };
        if let Some((reached, resume)) = hold {
            let _ = reached.send(());
            let _ = resume.await;
        }
    }
}

/// Sets `slot` and returns (reached, resume).
fn arm(slot: &Mutex<Option<Hold>>) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
    let (reached_tx, reached) = oneshot::channel();
    let (resume, resume_rx) = oneshot::channel();
    *slot.lock().expect("hold") = Some((reached_tx, resume_rx));
    (reached, resume)
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
        self.write_held(&ops).await;
        self.inner.apply(ops).await
    }
    async fn apply_guarded(&self, guards: &[Guard], ops: Vec<Op>) -> Result<Option<i64>, BusError> {
        self.write_held(&ops).await;
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
    let held = Arc::new(HeldBus::new(shared.clone()));
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
    let (reached, resume) = arm(&held.hold);
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

/// The record published at `key` (verified under `fleet`), if any.
async fn published(bus: &MemoryBus, fleet: &FleetKeyring, key: &str) -> Option<Vec<u8>> {
    let keys = StateKeys::default();
    let read = bus.load(key).await.expect("load");
    let kv = read.kvs.iter().find(|kv| kv.key == key)?;
    let path = keys.relative(key).expect("path");
    Some(
        open_record(fleet, path, &kv.value)
            .expect("signed")
            .to_vec(),
    )
}

/// Two replicas on one database and bus; A's bus holds writes on demand.
async fn two_replicas(
    dir: &tempfile::TempDir,
) -> (
    Arc<ControlPlane>,
    ControlPlane,
    Arc<HeldBus>,
    Arc<MemoryBus>,
    Arc<FleetKeyring>,
) {
    let url = SqlStore::sqlite_url(dir.path().join("cp.db").to_str().expect("utf-8"));
    let shared = Arc::new(MemoryBus::new());
    let held = Arc::new(HeldBus::new(shared.clone()));
    let fleet = Arc::new(FleetKeyring::new(FleetKey::new(&[5; 32]), vec![]));
    let a = Arc::new(replica(&url, held.clone(), &fleet).await);
    let b = replica(&url, shared.clone(), &fleet).await;
    (a, b, held, shared, fleet)
}

/// Replica A creates a key and is held between its commit and its
/// publication; meanwhile replica B lists the org's keys, revokes the new
/// one and publishes that. A publishing the row it wrote would put the key
/// back as usable after its revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_creation_publication_never_undoes_another_replicas_revocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, held, shared, fleet) = two_replicas(&dir).await;
    let actor = AdminActor {
        fingerprint: "fp-test".into(),
    };
    let org = b
        .create_org(&actor, &OrgName::parse("late").expect("name"))
        .await
        .expect("org")
        .value;
    let (reached, resume) = arm(&held.hold_write);
    let create = {
        let (a, actor) = (a.clone(), actor.clone());
        let spec = ApiKeySpec::parse(&org.org.id, "k", &["read"], 0).expect("spec");
        tokio::spawn(async move { a.create_api_key(&actor, &spec).await })
    };
    tokio::time::timeout(Duration::from_secs(10), reached)
        .await
        .expect("A publishes the key")
        .expect("held");
    let org_id = crate::domain::types::OrgId::parse(&org.org.id).expect("org id");
    let listed = b.list_api_keys(&org_id, false).await.expect("list");
    let row = listed.first().expect("the committed key is listed").clone();
    let id = ApiKeyId::parse(&row.id).expect("id");
    b.revoke_api_key(&actor, &id)
        .await
        .expect("revoke")
        .revision
        .expect("published");
    resume.send(()).expect("resume");
    tokio::time::timeout(Duration::from_secs(10), create)
        .await
        .expect("the creation ends")
        .expect("no panic")
        .expect("created");

    let key = StateKeys::default().api_key(&row.id);
    let record = published(&shared, &fleet, &key).await.expect("published");
    let record = state::ApiKeyRecord::decode(record.as_slice()).expect("record");
    assert!(record.revoked, "the revocation must stand");
}

/// Replicas A and B set one setting at once: A commits first and is held
/// before its publication lands; B commits and publishes after it. The bus
/// must end with the value the database holds (B's), not A's older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_setting_publication_never_overwrites_a_newer_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, held, shared, fleet) = two_replicas(&dir).await;
    let actor = AdminActor {
        fingerprint: "fp-test".into(),
    };
    let setting = memtrace_common::settings::lookup("arc.write_batch_size").expect("setting");
    let (reached, resume) = arm(&held.hold_write);
    let first = {
        let (a, actor) = (a.clone(), actor.clone());
        tokio::spawn(async move { a.set_setting(&actor, setting, None, "300").await })
    };
    tokio::time::timeout(Duration::from_secs(10), reached)
        .await
        .expect("A publishes the setting")
        .expect("held");
    b.set_setting(&actor, setting, None, "400")
        .await
        .expect("set")
        .revision
        .expect("published");
    resume.send(()).expect("resume");
    tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("A's set ends")
        .expect("no panic")
        .expect("set");

    let stored = b.get_setting(setting, None).await.expect("get");
    assert_eq!(
        stored.value.to_string(),
        "400",
        "the database holds B's value"
    );
    let key = StateKeys::default().global_setting("arc.write_batch_size");
    let record = published(&shared, &fleet, &key).await.expect("published");
    let record = state::SettingRecord::decode(record.as_slice()).expect("record");
    assert_eq!(
        record.value_json, "400",
        "the bus holds the database's value"
    );
}

/// An org deleted on one replica with more keys than a publication reads
/// one by one: the tombstone is published and every key is gone from the
/// bus (the guards read per prefix), the other org's keys untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_deletion_publishes_its_tombstone_and_removes_all_its_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, _held, shared, fleet) = two_replicas(&dir).await;
    let actor = AdminActor {
        fingerprint: "fp-test".into(),
    };
    let mut ids = Vec::new();
    let mut orgs = Vec::new();
    for name in ["gone", "kept"] {
        let org = b
            .create_org(&actor, &OrgName::parse(name).expect("name"))
            .await
            .expect("org")
            .value;
        for i in 0..12 {
            let spec =
                ApiKeySpec::parse(&org.org.id, &format!("k{i}"), &["read"], 0).expect("spec");
            let (row, _) = b.create_api_key(&actor, &spec).await.expect("create").value;
            ids.push((name, row.id));
        }
        orgs.push(org.org.id);
    }
    let gone = crate::domain::types::OrgId::parse(&orgs[0]).expect("org id");
    a.delete_org(&actor, &gone)
        .await
        .expect("delete")
        .revision
        .expect("published");
    let keys = StateKeys::default();
    for (org, id) in &ids {
        let record = published(&shared, &fleet, &keys.api_key(id)).await;
        assert_eq!(record.is_some(), *org == "kept", "key {id} of org {org}");
    }
    let tombstone = published(&shared, &fleet, &keys.org(&orgs[0]))
        .await
        .expect("tombstone");
    assert!(
        state::OrgRecord::decode(tombstone.as_slice())
            .expect("record")
            .deleted
    );
}
