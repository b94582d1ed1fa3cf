//! Unit tests of [`EtcdBus`](super::EtcdBus) that need no etcd server:
//! endpoint normalisation, error mapping, ttl rounding and connecting. The
//! behaviour against a real etcd is in `tests/tests/state_bus.rs`.

use super::convert::map_status;
use super::*;

#[test]
fn endpoints_are_normalised() {
    assert_eq!(
        normalize_endpoint("127.0.0.1:2379", false),
        Ok("http://127.0.0.1:2379".into())
    );
    assert_eq!(
        normalize_endpoint(" http://etcd:2379/ ", false),
        Ok("http://etcd:2379".into())
    );
    assert!(matches!(
        normalize_endpoint("https://etcd:2379", false),
        Err(BusError::Rejected(_))
    ));
    assert!(matches!(
        normalize_endpoint("", false),
        Err(BusError::Rejected(_))
    ));
    // with TLS every endpoint is https
    assert_eq!(
        normalize_endpoint("etcd:2379", true),
        Ok("https://etcd:2379".into())
    );
    assert_eq!(
        normalize_endpoint("https://etcd:2379", true),
        Ok("https://etcd:2379".into())
    );
    assert!(matches!(
        normalize_endpoint("http://etcd:2379", true),
        Err(BusError::Rejected(_))
    ));
}

#[test]
fn statuses_map_to_bus_errors() {
    let unavailable = tonic::Status::unavailable("etcdserver: no leader");
    assert!(matches!(map_status(&unavailable), BusError::Unavailable(_)));
    let compacted =
        tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
    assert!(matches!(map_status(&compacted), BusError::Compacted { .. }));
    let future =
        tonic::Status::out_of_range("etcdserver: mvcc: required revision is a future revision");
    assert!(matches!(map_status(&future), BusError::Rejected(_)));
    let too_large = tonic::Status::invalid_argument("etcdserver: request is too large");
    assert!(matches!(map_status(&too_large), BusError::Rejected(_)));
    let broken = tonic::Status::unknown("h2 protocol error: error reading a body from connection");
    assert!(matches!(map_status(&broken), BusError::Unavailable(_)));
}

#[test]
fn lease_ttls_round_up_to_seconds() {
    assert_eq!(ttl_seconds(Duration::from_millis(1)), Ok(1));
    assert_eq!(ttl_seconds(Duration::from_millis(2000)), Ok(2));
    assert_eq!(ttl_seconds(Duration::from_millis(2001)), Ok(3));
    assert!(ttl_seconds(Duration::ZERO).is_err());
}

#[tokio::test]
async fn connect_without_endpoints_is_rejected() {
    let err = EtcdBus::connect(&[], EtcdOptions::default()).await.err();
    assert!(matches!(err, Some(BusError::Rejected(_))), "{err:?}");
}

#[tokio::test]
async fn unreachable_etcd_is_unavailable() {
    // Port 1 on loopback: nothing listens, the connection is refused.
    let options = EtcdOptions {
        connect_timeout: Duration::from_secs(1),
        ..EtcdOptions::default()
    };
    let bus = EtcdBus::connect(&["127.0.0.1:1".to_string()], options)
        .await
        .expect("lazy connect");
    let err = bus.current_revision().await.err();
    assert!(matches!(err, Some(BusError::Unavailable(_))), "{err:?}");
}
