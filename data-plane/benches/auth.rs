//! Per-request authentication cost: an `mtk_` key checked against a snapshot
//! of 10,000 keys (format + checksum, O(1) lookup by id, SHA-256, constant-time
//! compare, revocation/expiry/org checks). Baseline in the same run: the
//! SHA-256 of the key alone, the floor any hash-based check pays. And an
//! agent token (PASETO v4.public) verified against the same snapshot (3
//! token keys): base64url, footer, Ed25519 signature, claims JSON, RFC 3339
//! times, org liveness — beside the API key in the same run. And a key
//! imported from the Go memtrace (`mtk_` + base64, bcrypt-hashed) in the same
//! snapshot, on its cached path: its first check ran bcrypt once, every later
//! one is a base64 decode, a SHA-256 and a cache lookup.
//! Run: `cargo bench -p memtrace-data-plane --bench auth`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use memtrace_common::credentials::{generate_api_key, hash_api_key};
use memtrace_common::legacy_keys::{generate_legacy_api_key, parse_legacy_api_key};
use memtrace_data_plane::admission::auth::authenticate;
use memtrace_data_plane::snapshot::{ApiKeyEntry, OrgEntry, Snapshot};
use std::hint::black_box;
use std::sync::Arc;

fn snapshot(keys: usize) -> (Snapshot, String) {
    let mut snapshot = Snapshot::default();
    snapshot.orgs.insert(
        "org_bench".into(),
        OrgEntry {
            name: "bench".into(),
            deleted: false,
        },
    );
    let mut last = String::new();
    for _ in 0..keys {
        let key = generate_api_key();
        snapshot.api_keys.insert(
            key.key_id.clone(),
            Arc::new(ApiKeyEntry {
                org_id: "org_bench".into(),
                hash: key.hash,
                read: true,
                write: true,
                admin: false,
                expires_at_ms: 0,
                revoked: false,
                legacy_bcrypt: None,
            }),
        );
        last = key.token.to_string();
    }
    (snapshot, last)
}

/// Adds an imported Go memtrace key (bcrypt cost 10, the Go default) to
/// `snapshot`; returns the key.
fn with_legacy_key(snapshot: &mut Snapshot) -> String {
    let token = generate_legacy_api_key();
    let parsed = parse_legacy_api_key(&token).expect("a legacy key");
    snapshot.api_keys.insert(
        parsed.key_id,
        Arc::new(ApiKeyEntry::imported(
            "org_bench",
            bcrypt::hash(token.as_str(), 10).expect("bcrypt"),
        )),
    );
    token.to_string()
}

const NOW_MS: i64 = 1_796_000_000_000;

/// `snapshot` with three token keys and a token signed by the newest.
fn with_token(mut snapshot: Snapshot) -> (Snapshot, String) {
    use memtrace_common::signing::SigningKey;
    use memtrace_common::token::{Claims, mint, new_token_id};
    let mut newest = None;
    for v in 1..=3u8 {
        let key = SigningKey::from_seed(format!("tk_{v}"), &[v; 32]);
        snapshot
            .token_keys
            .insert(key.key_id().to_owned(), key.public_key());
        newest = Some(key);
    }
    let iat = jiff::Timestamp::from_millisecond(NOW_MS).unwrap();
    let claims = Claims {
        org: "org_bench".into(),
        agent: Some("planner".into()),
        scopes: vec!["read".into(), "write".into()],
        iat,
        exp: iat + jiff::SignedDuration::from_secs(3600),
        jti: new_token_id(),
    };
    let token = mint(&newest.unwrap(), &claims).unwrap();
    (snapshot, token)
}

fn bench(c: &mut Criterion) {
    let (mut snapshot, token) = snapshot(10_000);
    let legacy = with_legacy_key(&mut snapshot);
    let first = std::time::Instant::now();
    authenticate(&snapshot, Some(legacy.as_str()), 1).expect("the legacy key");
    println!(
        "legacy key, first check (bcrypt cost 10): {:?}",
        first.elapsed()
    );
    c.bench_function("authenticate legacy key, cached (10k keys)", |b| {
        b.iter(|| authenticate(black_box(&snapshot), black_box(Some(legacy.as_str())), 1))
    });
    c.bench_function("authenticate (10k keys)", |b| {
        b.iter(|| authenticate(black_box(&snapshot), black_box(Some(token.as_str())), 1))
    });
    let (snapshot, token) = with_token(snapshot);
    c.bench_function("authenticate token (agent-bound)", |b| {
        b.iter(|| {
            authenticate(
                black_box(&snapshot),
                black_box(Some(token.as_str())),
                NOW_MS,
            )
        })
    });
    // the same token with its last signature byte changed: everything up to
    // and including the Ed25519 check, no claims parsed (where the time goes)
    let mut tampered = token.clone().into_bytes();
    let i = token.rfind('.').unwrap() - 10;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(authenticate(&snapshot, Some(&tampered), NOW_MS).is_err());
    c.bench_function("token refused at its signature", |b| {
        b.iter(|| {
            authenticate(
                black_box(&snapshot),
                black_box(Some(tampered.as_str())),
                NOW_MS,
            )
        })
    });
    c.bench_function("baseline: sha256 of the key", |b| {
        b.iter(|| hash_api_key(black_box(token.as_str())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
