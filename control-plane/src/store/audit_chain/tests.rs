use super::*;
use memtrace_common::envelope::MasterKey;

fn record(n: i64) -> AuditRecord {
    AuditRecord {
        at_ms: 1_700_000_000_000 + n,
        actor: "fp-0123456789abcdef".into(),
        action: "config.set".into(),
        target: "arc.write_batch_size".into(),
        outcome: "ok".into(),
        details_json: r#"{"key":"arc.write_batch_size","new":500,"old":null}"#.into(),
    }
}

fn ring(byte: u8) -> Keyring {
    Keyring::new(MasterKey::new(&[byte; 32]), Vec::new())
}

/// The fields both versions encode alike, for the test vectors.
fn expected_fields() -> Vec<u8> {
    let mut expected = Vec::new();
    expected.extend_from_slice(&1i64.to_be_bytes());
    expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    for s in [
        "fp-0123456789abcdef",
        "config.set",
        "arc.write_batch_size",
        "ok",
        r#"{"key":"arc.write_batch_size","new":500,"old":null}"#,
    ] {
        expected.extend_from_slice(&(s.len() as u64).to_be_bytes());
        expected.extend_from_slice(s.as_bytes());
    }
    expected.extend_from_slice(&32u64.to_be_bytes());
    expected.extend_from_slice(&[0u8; 32]);
    expected
}

/// Pins the canonical encoding: changing it breaks every stored chain.
#[test]
fn canonical_encoding_test_vector() {
    let entry = AuditEntry::chain_unkeyed(1, GENESIS_HASH.to_vec(), &record(0));
    let bytes = entry.canonical_v1();
    let mut expected = Vec::new();
    expected.extend_from_slice(&17u64.to_be_bytes());
    expected.extend_from_slice(b"memtrace/audit/v1");
    expected.extend_from_slice(&expected_fields());
    assert_eq!(bytes, expected);
    assert_eq!(
        hex::encode(&entry.hash),
        "01fa1377cacafc128ae90671fdaa0a5160d74e53633ee5bcfce35f6bb206025e",
        "the hash of the test vector"
    );
}

/// Pins the keyed (version 2) encoding, the key derivation and the head
/// MAC, with values computed independently of this code (Python's hmac).
#[test]
fn keyed_encoding_test_vector() {
    let keys = ring(7);
    let key = keys.audit_key();
    assert_eq!(key.kek_id(), "kek-be615e2467740789");
    let entry = AuditEntry::chain(1, GENESIS_HASH.to_vec(), &record(0), &key);
    assert_eq!(
        (entry.version, entry.kek_id.as_deref()),
        (KEYED_VERSION, Some("kek-be615e2467740789"))
    );
    let mut expected = Vec::new();
    expected.extend_from_slice(&17u64.to_be_bytes());
    expected.extend_from_slice(b"memtrace/audit/v2");
    expected.extend_from_slice(&20u64.to_be_bytes());
    expected.extend_from_slice(b"kek-be615e2467740789");
    expected.extend_from_slice(&expected_fields());
    assert_eq!(entry.canonical_v2("kek-be615e2467740789"), expected);
    assert_eq!(
        hex::encode(&entry.hash),
        "7963d029a7e1d2345c600460c8a9ecef940f3b8a48d258d638f923232a1904b4",
        "HMAC-SHA256 under HMAC-SHA256([7; 32], memtrace/audit-chain-key/v1)"
    );
    assert_eq!(
        hex::encode(head_mac(&key, 1, &entry.hash)),
        "847c51c0e9cd9b4813d84b085558478244ee96fd977c1251e925103452f68bb2"
    );
    assert_ne!(
        entry.hash,
        entry.unkeyed_hash().to_vec(),
        "the versions differ"
    );
}

#[test]
fn length_prefixes_keep_fields_apart() {
    let a = AuditEntry::chain_unkeyed(
        1,
        GENESIS_HASH.to_vec(),
        &AuditRecord {
            actor: "ab".into(),
            action: "c".into(),
            ..record(0)
        },
    );
    let b = AuditEntry::chain_unkeyed(
        1,
        GENESIS_HASH.to_vec(),
        &AuditRecord {
            actor: "a".into(),
            action: "bc".into(),
            ..record(0)
        },
    );
    assert_ne!(a.hash, b.hash);
}

/// `unkeyed` version 1 entries, then keyed ones under `keys`' active key,
/// and the head that goes with them.
fn chain(unkeyed: i64, keyed: i64, keys: &Keyring) -> (Vec<AuditEntry>, AuditHead) {
    let key = keys.audit_key();
    let mut prev = GENESIS_HASH.to_vec();
    let entries: Vec<AuditEntry> = (1..=unkeyed + keyed)
        .map(|seq| {
            let entry = if seq <= unkeyed {
                AuditEntry::chain_unkeyed(seq, prev.clone(), &record(seq))
            } else {
                AuditEntry::chain(seq, prev.clone(), &record(seq), &key)
            };
            prev.clone_from(&entry.hash);
            entry
        })
        .collect();
    let head = head_of(&entries, keys);
    (entries, head)
}

/// The head an append of the last entry writes.
fn head_of(entries: &[AuditEntry], keys: &Keyring) -> AuditHead {
    let Some(last) = entries.last() else {
        return AuditHead {
            seq: 0,
            hash: GENESIS_HASH.to_vec(),
            kek_id: None,
            mac: None,
        };
    };
    let key = last
        .kek_id
        .as_deref()
        .and_then(|kek_id| keys.audit_key_for(kek_id));
    AuditHead {
        seq: last.seq,
        hash: last.hash.clone(),
        kek_id: last.kek_id.clone(),
        mac: key.map(|key| head_mac(&key, last.seq, &last.hash).to_vec()),
    }
}

fn verify(entries: &[AuditEntry], head: &AuditHead, keys: &Keyring) -> Result<u64, ChainBreak> {
    let mut verifier = ChainVerifier::new(keys);
    entries.iter().try_for_each(|e| verifier.push(e))?;
    verifier.finish(head)
}

#[test]
fn verification_finds_each_kind_of_tampering() {
    let keys = ring(1);
    let (entries, head) = chain(5, 0, &keys);
    assert_eq!(verify(&entries, &head, &keys), Ok(5));
    assert_eq!(verify(&[], &head_of(&[], &keys), &keys), Ok(0));

    let mut altered = entries.clone();
    altered[2].details_json = r#"{"key":"x"}"#.into();
    assert_eq!(verify(&altered, &head, &keys).unwrap_err().seq, 3);

    let mut rehashed = altered.clone();
    rehashed[2].hash = rehashed[2].unkeyed_hash().to_vec();
    let err = verify(&rehashed, &head, &keys).unwrap_err();
    assert_eq!(err.seq, 4, "re-hashing one entry breaks the next link");

    let mut missing = entries.clone();
    missing.remove(1);
    assert_eq!(verify(&missing, &head, &keys).unwrap_err().seq, 2);

    let truncated = &entries[..4];
    let err = verify(truncated, &head, &keys).unwrap_err();
    assert!(err.reason.contains("removed"), "{err}");
}

/// The forgery version 1 cannot see: rewrite an entry and recompute SHA-256
/// for it and every later entry and the head. Against keyed entries it
/// fails at the first forged entry, whether the forger keeps the entries'
/// version 2 labels or relabels them as version 1.
#[test]
fn recomputing_plain_sha256_does_not_forge_keyed_entries() {
    let keys = ring(1);
    let (entries, _) = chain(2, 4, &keys);
    for relabel in [false, true] {
        let mut forged = entries.clone();
        forged[3].outcome = "denied".into();
        let mut prev = forged[2].hash.clone();
        for entry in &mut forged[3..] {
            entry.prev_hash = prev;
            if relabel {
                entry.version = UNKEYED_VERSION;
                entry.kek_id = None;
            }
            entry.hash = entry.unkeyed_hash().to_vec();
            prev = entry.hash.clone();
        }
        let head = AuditHead {
            seq: 6,
            hash: prev,
            kek_id: None,
            mac: None,
        };
        let err = verify(&forged, &head, &keys).unwrap_err();
        assert_eq!(err.seq, 4, "relabelled {relabel}: {err}");
        let expected = if relabel { "unkeyed" } else { "MAC" };
        assert!(err.reason.contains(expected), "{err}");
    }
}

/// Unkeyed entries before keyed ones verify (and are counted); the keyed
/// part covers the unkeyed prefix through its first link.
#[test]
fn the_chain_continues_across_the_unkeyed_boundary() {
    let keys = ring(1);
    let (entries, head) = chain(3, 3, &keys);
    let mut verifier = ChainVerifier::new(&keys);
    entries
        .iter()
        .try_for_each(|e| verifier.push(e))
        .expect("verifies");
    assert_eq!(verifier.finish(&head), Ok(6));
    assert_eq!(
        (verifier.unkeyed(), verifier.unverifiable()),
        (3, Vec::new())
    );

    // rewriting an unkeyed entry consistently up to the boundary breaks the
    // first keyed entry's link
    let mut forged = entries.clone();
    forged[1].target = "forged".into();
    forged[1].hash = forged[1].unkeyed_hash().to_vec();
    forged[2].prev_hash = forged[1].hash.clone();
    forged[2].hash = forged[2].unkeyed_hash().to_vec();
    let err = verify(&forged, &head, &keys).unwrap_err();
    assert_eq!(err.seq, 4, "{err}");
}

/// Entries under a master key no longer held are unverifiable, not broken;
/// they verify again once the key is loaded as a previous key.
#[test]
fn rotation_keeps_old_entries_verifiable_while_their_key_is_held() {
    let old = ring(1);
    let (mut entries, _) = chain(0, 2, &old);
    let rotated = Keyring::new(MasterKey::new(&[2; 32]), vec![MasterKey::new(&[1; 32])]);
    let new_key = rotated.audit_key();
    for seq in 3..=4 {
        let prev = entries.last().map(|e| e.hash.clone()).unwrap_or_default();
        entries.push(AuditEntry::chain(seq, prev, &record(seq), &new_key));
    }
    let head = head_of(&entries, &rotated);
    assert_eq!(verify(&entries, &head, &rotated), Ok(4));

    let retired = ring(2);
    let mut verifier = ChainVerifier::new(&retired);
    entries
        .iter()
        .try_for_each(|e| verifier.push(e))
        .expect("not broken");
    assert_eq!(verifier.finish(&head), Ok(4));
    let unverifiable = verifier.unverifiable();
    assert_eq!(
        unverifiable,
        vec![Unverifiable {
            kek_id: old.active_kek_id(),
            entries: 2,
            first_seq: 1,
            last_seq: 2,
        }]
    );
    assert_eq!(
        unverifiable[0].to_string(),
        format!(
            "unverifiable: key {} not held (2 entries, 1–2)",
            old.active_kek_id()
        )
    );

    // a held key still finds tampering, even next to unverifiable entries
    let mut altered = entries.clone();
    altered[3].actor = "fp-forged".into();
    assert_eq!(verify(&altered, &head, &retired).unwrap_err().seq, 4);
}

/// The keyed head finds a truncation that moved the head back to an
/// earlier entry, and an unkeyed head over keyed entries.
#[test]
fn the_keyed_head_cannot_be_moved_back() {
    let keys = ring(1);
    let (entries, head) = chain(0, 4, &keys);
    let moved = AuditHead {
        seq: 3,
        hash: entries[2].hash.clone(),
        ..head.clone()
    };
    let err = verify(&entries[..3], &moved, &keys).unwrap_err();
    assert!(err.reason.contains("head's MAC"), "{err}");
    let unkeyed = AuditHead {
        kek_id: None,
        mac: None,
        ..head.clone()
    };
    let err = verify(&entries, &unkeyed, &keys).unwrap_err();
    assert!(err.reason.contains("not keyed"), "{err}");
}

#[test]
fn an_invalid_seal_is_a_break() {
    let keys = ring(1);
    let (mut entries, head) = chain(0, 2, &keys);
    entries[1].version = 3;
    let err = verify(&entries, &head, &keys).unwrap_err();
    assert_eq!(err.seq, 2);
    assert!(err.reason.contains("version 3"), "{err}");
}
