//! Fuzzing what crosses a trust boundary into memtrace-common (property
//! tests; `scripts/fuzz.sh` runs them longer): API keys and agent tokens as presented,
//! records read from the bus, fleet seals and master-key envelopes read from
//! the bus or the database. Any input is answered without panicking; only
//! what was made with the key, for that place, opens.

use crate::credentials::{generate_api_key, parse_api_key};
use crate::envelope::{Binding, Keyring, MasterKey};
use crate::fleet::{FleetKey, FleetKeyring};
use crate::state::{open_record, sign_record};
use proptest::prelude::*;

const B: Binding<'static> = Binding {
    org_id: "org_a",
    record_id: "arc_1",
    purpose: "arc.api_key",
};

fn fleet() -> FleetKeyring {
    FleetKeyring::new(FleetKey::new(&[11; 32]), vec![])
}

proptest! {
    #[test]
    fn presented_tokens_never_panic_and_only_signed_ones_verify(
        s in ".{0,200}",
        body in "[A-Za-z0-9_-]{0,300}",
        footer in "[A-Za-z0-9_-]{0,40}",
        flip in 0usize..400,
    ) {
        use crate::token::{Claims, mint, verify};
        let key = crate::signing::SigningKey::from_seed("tk_1", &[3; 32]);
        let public = key.public_key();
        let now: jiff::Timestamp = "2026-12-05T10:30:00Z".parse().unwrap();
        let lookup = |kid: &str| (kid == "tk_1").then_some(&public);
        prop_assert!(verify(&s, lookup, now).is_err());
        let forged = format!("v4.public.{body}.{footer}");
        prop_assert!(verify(&forged, lookup, now).is_err());
        let claims = Claims {
            org: "org_a".into(),
            agent: Some("a".into()),
            scopes: vec!["read".into()],
            iat: "2026-12-05T10:00:00Z".parse().unwrap(),
            exp: "2026-12-05T11:00:00Z".parse().unwrap(),
            jti: "tok_1".into(),
        };
        let token = mint(&key, &claims).unwrap();
        prop_assert_eq!(verify(&token, lookup, now).unwrap(), claims);
        // one character changed anywhere: refused
        let mut bytes = token.into_bytes();
        let i = flip % bytes.len();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).unwrap();
        prop_assert!(verify(&altered, lookup, now).is_err());
    }

    #[test]
    fn presented_api_keys_never_panic(s in ".{0,120}", tail in "[0-9a-f]{0,100}") {
        let _ = parse_api_key(&s);
        let _ = parse_api_key(&format!("mtk_{tail}"));
    }

    #[test]
    fn generated_api_keys_always_parse_to_their_id_and_hash(_i in 0u8..8) {
        let key = generate_api_key();
        let parsed = parse_api_key(&key.token).expect("a generated key parses");
        prop_assert_eq!(parsed.key_id, key.key_id);
        prop_assert_eq!(parsed.hash, key.hash);
    }

    #[test]
    fn bus_values_open_only_as_signed(
        value in prop::collection::vec(any::<u8>(), 0..200),
        path in "[a-z/_0-9]{0,30}",
        record in prop::collection::vec(any::<u8>(), 0..100),
        flip in any::<prop::sample::Index>(),
    ) {
        let ring = fleet();
        let _ = open_record(&ring, &path, &value);
        let signed = sign_record(ring.active(), &path, &record);
        prop_assert_eq!(open_record(&ring, &path, &signed).ok(), Some(&record[..]));
        let mut altered = signed.clone();
        let i = flip.index(altered.len());
        altered[i] ^= 0x01;
        prop_assert!(open_record(&ring, &path, &altered).is_err(), "a flipped byte {} opened", i);
        let other_path = format!("{path}x");
        prop_assert!(open_record(&ring, &other_path, &signed).is_err());
    }

    #[test]
    fn sealed_values_open_only_as_sealed(
        sealed in prop::collection::vec(any::<u8>(), 0..120),
        secret in prop::collection::vec(any::<u8>(), 0..64),
        url in "[a-z:/.0-9]{0,24}",
    ) {
        let ring = fleet();
        let id = ring.active().id().to_owned();
        let _ = ring.open(&id, B, &[&url], &sealed);
        let good = ring.active().seal(B, &[&url, "db"], &secret);
        prop_assert_eq!(
            ring.open(&id, B, &[&url, "db"], &good).map(|p| p.to_vec()).ok(),
            Some(secret.clone())
        );
        prop_assert!(ring.open(&id, B, &[&url, "db2"], &good).is_err());
        let keyring = Keyring::new(MasterKey::new(&[12; 32]), Vec::new());
        let _ = keyring.open(B, &sealed);
        let envelope = keyring.seal(B, &secret);
        prop_assert_eq!(
            keyring.open(B, &envelope).map(|p| p.to_vec()).ok(),
            Some(secret)
        );
    }
}
