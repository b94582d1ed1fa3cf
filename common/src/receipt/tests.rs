#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use serde_json::json;

fn receipt() -> Receipt {
    let at = |ms: i64| Timestamp::from_millisecond(ms).unwrap();
    Receipt {
        receipt_id: "rcp_0123".into(),
        erasure_id: "era_4567".into(),
        org_id: "org_89ab".into(),
        target: ErasureTarget::arc(
            "https://user:secret@arc.example:8000/path?token=x",
            "tenant_db",
            vec!["memories".into()],
        )
        .unwrap(),
        scope: json!({"kind": "memory_ids", "ids": ["m1", "m2", "m3"]}),
        requested_by: "fp-abc".into(),
        requested_at: at(1_764_900_000_000),
        started_at: at(1_764_900_000_500),
        finished_at: at(1_764_900_001_250),
        rows_removed: BTreeMap::from([("memories".into(), 3)]),
        verification: BTreeMap::from([(
            "memories".into(),
            TableVerification {
                query: "SELECT COUNT(*) FROM memories WHERE org_id = 'org_89ab' AND id IN ('m1','m2','m3')".into(),
                result: 0,
            },
        )]),
        issued_at: at(1_764_900_001_300),
    }
}

fn key(id: &str, byte: u8) -> ReceiptSigningKey {
    ReceiptSigningKey::from_seed(id, &[byte; 32])
}

fn signed_json() -> (ReceiptSigningKey, Value) {
    let key = key("rk_1", 7);
    let signed = key.sign(receipt()).unwrap();
    (key, serde_json::to_value(&signed).unwrap())
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap()
}

fn key_set(keys: &[&ReceiptSigningKey]) -> KeySet {
    KeySet {
        keys: keys
            .iter()
            .map(|k| PublicKeyInfo {
                key_id: k.key_id().into(),
                algorithm: ALGORITHM.into(),
                public_key: k.public_key_base64(),
                fingerprint: fingerprint(&k.public_key()),
                created_at: None,
                retired_at: None,
            })
            .collect(),
    }
}

#[test]
fn a_signed_receipt_verifies_and_reads_back() {
    let (key, doc) = signed_json();
    let verified = verify(&bytes(&doc), None).unwrap();
    assert_eq!(verified.receipt, receipt());
    assert_eq!(verified.key_id, "rk_1");
    assert_eq!(verified.public_key, key.public_key());
    assert_eq!(verified.fingerprint, fingerprint(&key.public_key()));
    assert!(!verified.trusted);
    let trusted = verify(&bytes(&doc), Some(&key_set(&[&key]))).unwrap();
    assert!(trusted.trusted);
    // compact, re-ordered or re-indented JSON verifies alike
    let compact = serde_json::to_vec(&doc).unwrap();
    verify(&compact, None).unwrap();
}

#[test]
fn the_document_has_the_documented_shape() {
    let (_, doc) = signed_json();
    assert_eq!(doc["format"], RECEIPT_FORMAT);
    assert_eq!(doc["signature"]["algorithm"], "ed25519");
    assert_eq!(doc["signature"]["key_id"], "rk_1");
    assert_eq!(doc["receipt"]["requested_at"], "2025-12-05T02:00:00Z");
    assert_eq!(doc["receipt"]["finished_at"], "2025-12-05T02:00:01.25Z");
    assert_eq!(
        doc["receipt"]["target"],
        json!({"store": "arc", "url_host": "arc.example:8000", "database": "tenant_db", "measurements": ["memories"]})
    );
    assert_eq!(doc["receipt"]["rows_removed"], json!({"memories": 3}));
    assert_eq!(doc["receipt"]["verification"]["memories"]["result"], 0);
    let embedded = serde_json::to_value(ErasureTarget::Embedded).unwrap();
    assert_eq!(embedded, json!({"store": "embedded"}));
}

#[test]
fn the_target_keeps_no_credentials() {
    let (_, doc) = signed_json();
    let text = doc.to_string();
    for secret in ["secret", "user", "token", "/path"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(
        ErasureTarget::arc("not a url", "d", vec![]),
        Err(ReceiptError::BadTargetUrl)
    );
}

/// The signature covers the canonical form of everything but itself: a
/// fixed vector pins the message so a third party can check theirs.
#[test]
fn the_signed_message_is_the_canonical_document_without_the_value() {
    let (key, doc) = signed_json();
    let message = String::from_utf8(signed_message(&doc).unwrap()).unwrap();
    let expected = format!(
        concat!(
            r#"{{"format":"memtrace/erasure-receipt/v1","receipt":{{"erasure_id":"era_4567","finished_at":"2025-12-05T02:00:01.25Z","#,
            r#""issued_at":"2025-12-05T02:00:01.3Z","org_id":"org_89ab","receipt_id":"rcp_0123","requested_at":"2025-12-05T02:00:00Z","#,
            r#""requested_by":"fp-abc","rows_removed":{{"memories":3}},"scope":{{"ids":["m1","m2","m3"],"kind":"memory_ids"}},"#,
            r#""started_at":"2025-12-05T02:00:00.5Z","target":{{"database":"tenant_db","measurements":["memories"],"store":"arc","url_host":"arc.example:8000"}},"#,
            r#""verification":{{"memories":{{"query":"SELECT COUNT(*) FROM memories WHERE org_id = 'org_89ab' AND id IN ('m1','m2','m3')","result":0}}}}}},"#,
            r#""signature":{{"algorithm":"ed25519","key_id":"rk_1","public_key":"{}"}}}}"#
        ),
        key.public_key_base64()
    );
    assert_eq!(message, expected);
    // Ed25519 is deterministic: the same key and message, the same signature
    let again = key.sign(receipt()).unwrap();
    assert_eq!(doc["signature"]["value"], again.signature.value);
}

fn fails(doc: &Value, trusted: Option<&KeySet>) -> VerifyError {
    verify(&bytes(doc), trusted).expect_err("tampered receipt verified")
}

#[test]
fn editing_any_receipt_field_fails() {
    let (_, doc) = signed_json();
    let edits: Vec<(&str, Value)> = vec![
        ("receipt_id", json!("rcp_9999")),
        ("erasure_id", json!("era_0000")),
        ("org_id", json!("org_other")),
        ("target", json!({"store": "embedded"})),
        ("scope", json!({"kind": "org"})),
        ("requested_by", json!("fp-other")),
        ("requested_at", json!("2025-12-05T02:00:00.001Z")),
        ("started_at", json!("2025-12-05T02:00:00.6Z")),
        ("finished_at", json!("2025-12-05T02:00:01.2Z")),
        ("rows_removed", json!({"memories": 4})),
        (
            "verification",
            json!({"memories": {"query": "SELECT 0", "result": 0}}),
        ),
        ("issued_at", json!("2025-12-05T02:00:02Z")),
    ];
    for (field, value) in edits {
        let mut tampered = doc.clone();
        tampered["receipt"][field] = value;
        assert!(
            matches!(fails(&tampered, None), VerifyError::BadSignature { .. }),
            "{field}"
        );
    }
    // an added or removed member, too
    let mut added = doc.clone();
    added["receipt"]["note"] = json!("x");
    assert!(matches!(
        fails(&added, None),
        VerifyError::BadSignature { .. }
    ));
    let mut removed = doc.clone();
    removed["receipt"].as_object_mut().unwrap().remove("scope");
    assert!(matches!(
        fails(&removed, None),
        VerifyError::BadSignature { .. }
    ));
}

#[test]
fn editing_one_byte_of_the_file_fails() {
    let (_, doc) = signed_json();
    let original = bytes(&doc);
    let at = String::from_utf8(original.clone())
        .unwrap()
        .find("\"memories\": 3")
        .unwrap()
        + "\"memories\": ".len();
    let mut edited = original.clone();
    edited[at] = b'2';
    assert!(matches!(
        verify(&edited, None),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[test]
fn editing_the_signature_or_its_key_id_fails() {
    let (_, doc) = signed_json();
    let mut value = doc.clone();
    let mut sig = STANDARD
        .decode(value["signature"]["value"].as_str().unwrap())
        .unwrap();
    sig[10] ^= 1;
    value["signature"]["value"] = json!(STANDARD.encode(&sig));
    assert!(matches!(
        fails(&value, None),
        VerifyError::BadSignature { .. }
    ));

    let mut value = doc.clone();
    value["signature"]["value"] = json!("AAAA");
    assert_eq!(fails(&value, None), VerifyError::SignatureEncoding);

    let mut value = doc.clone();
    value["signature"]["key_id"] = json!("rk_2");
    assert!(matches!(
        fails(&value, None),
        VerifyError::BadSignature { .. }
    ));

    let mut value = doc.clone();
    value["signature"]["algorithm"] = json!("rsa");
    assert_eq!(fails(&value, None), VerifyError::Algorithm("rsa".into()));

    let mut value = doc.clone();
    value["format"] = json!("other/v9");
    assert_eq!(fails(&value, None), VerifyError::Format("other/v9".into()));
}

#[test]
fn swapping_the_public_key_fails() {
    let (_, doc) = signed_json();
    let other = key("rk_1", 8);
    let mut value = doc.clone();
    value["signature"]["public_key"] = json!(other.public_key_base64());
    assert!(matches!(
        fails(&value, None),
        VerifyError::BadSignature { .. }
    ));
    value["signature"]["public_key"] = json!("c2hvcnQ=");
    assert_eq!(fails(&value, None), VerifyError::PublicKeyEncoding);
}

#[test]
fn re_signing_with_another_key_is_caught_by_the_trusted_keys() {
    let trusted_key = key("rk_1", 7);
    let forger = key("rk_1", 9);
    let mut forged = receipt();
    forged.rows_removed.insert("memories".into(), 300);
    let doc = serde_json::to_value(forger.sign(forged).unwrap()).unwrap();
    // self-consistent: verifies against its own embedded key…
    verify(&bytes(&doc), None).unwrap();
    // …but not against the trusted set
    let trusted = key_set(&[&trusted_key]);
    assert!(matches!(
        fails(&doc, Some(&trusted)),
        VerifyError::UntrustedKey { .. }
    ));
    // a trusted key under another id is refused too
    let renamed = key("rk_5", 9);
    let trusted = key_set(&[&trusted_key, &renamed]);
    assert_eq!(
        fails(&doc, Some(&trusted)),
        VerifyError::KeyIdMismatch {
            key_id: "rk_1".into(),
            trusted_key_id: "rk_5".into()
        }
    );
}

#[test]
fn a_retired_key_still_verifies_what_it_signed() {
    let old = key("rk_1", 7);
    let new = key("rk_2", 8);
    let doc = serde_json::to_value(old.sign(receipt()).unwrap()).unwrap();
    let trusted = key_set(&[&new, &old]);
    assert_eq!(verify(&bytes(&doc), Some(&trusted)).unwrap().key_id, "rk_1");
}

#[test]
fn garbage_is_refused_with_a_reason() {
    assert!(matches!(verify(b"{", None), Err(VerifyError::NotJson(_))));
    assert!(matches!(
        verify(b"{}", None),
        Err(VerifyError::Malformed(_))
    ));
    let (_, doc) = signed_json();
    let mut value = doc.clone();
    value["receipt"] = json!([1]);
    assert!(matches!(fails(&value, None), VerifyError::Malformed(_)));
}

#[test]
fn scopes_with_floats_cannot_be_signed() {
    let mut r = receipt();
    r.scope = json!({"kind": "filter", "min_importance": 0.5});
    assert!(matches!(
        key("rk_1", 7).sign(r),
        Err(ReceiptError::NotCanonical(CanonicalError::NotInteger(_)))
    ));
}

#[test]
fn key_sets_are_checked_when_read() {
    let k = key("rk_1", 7);
    let text = serde_json::to_string(&key_set(&[&k])).unwrap();
    assert_eq!(KeySet::from_json(&text).unwrap(), key_set(&[&k]));
    // the minimal form: id and key
    let minimal = format!(
        r#"{{"keys":[{{"key_id":"rk_1","public_key":"{}"}}]}}"#,
        k.public_key_base64()
    );
    assert_eq!(KeySet::from_json(&minimal).unwrap().keys.len(), 1);
    let bad_fp = text.replace(&fingerprint(&k.public_key()), "SHA256:nope");
    assert!(matches!(
        KeySet::from_json(&bad_fp),
        Err(KeySetError::Fingerprint(..))
    ));
    assert!(matches!(
        KeySet::from_json(r#"{"keys":[{"key_id":"a","public_key":"AAAA"}]}"#),
        Err(KeySetError::PublicKey(_))
    ));
    assert!(matches!(
        KeySet::from_json("[]"),
        Err(KeySetError::NotKeySet(_))
    ));
}

#[test]
fn the_seed_is_not_in_debug_output() {
    let k = key("rk_1", 0xab);
    let shown = format!("{k:?}");
    assert!(shown.contains("rk_1"));
    assert!(
        !shown.contains("171") && !shown.contains("ab, ab"),
        "{shown}"
    );
    assert!(!shown.contains(&STANDARD.encode([0xab; 32])));
}

mod fuzz {
    //! Receipts cross a trust boundary (they are read by anyone, from
    //! anywhere): any input is answered without panicking, and an edited
    //! receipt verifies only if its signed content is unchanged.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_are_answered_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = verify(&bytes, None);
        }

        #[test]
        fn an_edited_byte_verifies_only_if_the_signed_content_is_unchanged(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            ids in prop::collection::vec("[a-zA-Z0-9é\"\\\\\n\u{1}\u{1f600}]{0,12}", 0..4),
            rows in 0u64..=MAX_SAFE_INTEGER,
        ) {
            let mut r = receipt();
            r.scope = json!({"kind": "memory_ids", "ids": ids});
            r.rows_removed.insert("memories".into(), rows);
            let original = key("rk_1", 7).sign(r).unwrap();
            let text = bytes(&serde_json::to_value(&original).unwrap());
            let verified = verify(&text, None).unwrap();
            prop_assert_eq!(&verified.receipt, &original.receipt);
            let mut edited = text.clone();
            let i = at.index(edited.len());
            edited[i] = byte;
            if let Ok(v) = verify(&edited, None) {
                let before: Value = serde_json::from_slice(&text).unwrap();
                let after: Value = serde_json::from_slice(&edited).unwrap();
                prop_assert_eq!(signed_message(&before).unwrap(), signed_message(&after).unwrap());
                prop_assert_eq!(v.receipt, original.receipt);
            }
        }
    }
}
