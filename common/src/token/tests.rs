use super::*;
use crate::signing::SigningKey;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn claims() -> Claims {
    Claims {
        org: "org_a1".into(),
        agent: Some("planner".into()),
        scopes: vec!["write".into(), "read".into()],
        iat: at("2026-12-05T10:00:00Z"),
        exp: at("2026-12-05T11:00:00Z"),
        jti: "tok_0123456789abcdef01234567".into(),
    }
}

fn key(id: &str, byte: u8) -> SigningKey {
    SigningKey::from_seed(id, &[byte; 32])
}

fn check(token: &str, k: &SigningKey, now: &str) -> Result<Claims, TokenError> {
    let public = k.public_key();
    let kid = k.key_id().to_owned();
    verify(token, |id| (id == kid).then_some(&public), at(now))
}

#[test]
fn round_trip_and_shape() {
    let k = key("tk_1", 7);
    let token = mint(&k, &claims()).unwrap();
    assert!(token.starts_with("v4.public."));
    assert!(is_token(&token));
    assert!(!is_token("mtk_abc"));
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 4, "v4 . public . payload . footer");
    assert_eq!(
        URL_SAFE_NO_PAD.decode(parts[3]).unwrap(),
        br#"{"kid":"tk_1"}"#
    );
    assert_eq!(check(&token, &k, "2026-12-05T10:30:00Z"), Ok(claims()));
    // Ed25519 is deterministic
    assert_eq!(mint(&k, &claims()).unwrap(), token);
}

#[test]
fn pae_matches_the_paseto_definition() {
    assert_eq!(pae(&[]), 0u64.to_le_bytes());
    assert_eq!(
        pae(&[b"test"]),
        [&1u64.to_le_bytes()[..], &4u64.to_le_bytes(), b"test"].concat()
    );
    assert_eq!(
        pae(&[b"", b""]),
        [2u64.to_le_bytes(), 0u64.to_le_bytes(), 0u64.to_le_bytes()].concat()
    );
}

#[test]
fn time_window_with_leeway() {
    let k = key("tk_1", 7);
    let token = mint(&k, &claims()).unwrap();
    assert!(check(&token, &k, "2026-12-05T11:00:29Z").is_ok(), "leeway");
    assert_eq!(
        check(&token, &k, "2026-12-05T11:00:30Z"),
        Err(TokenError::Expired(at("2026-12-05T11:00:00Z")))
    );
    assert!(check(&token, &k, "2026-12-05T09:59:31Z").is_ok());
    assert_eq!(
        check(&token, &k, "2026-12-05T09:59:00Z"),
        Err(TokenError::NotYetValid(at("2026-12-05T10:00:00Z")))
    );
    assert_eq!(
        TokenError::Expired(at("2026-12-05T11:00:00Z")).to_string(),
        "token expired at 2026-12-05T11:00:00Z"
    );
}

#[test]
fn wrong_key_and_unknown_key() {
    let signer = key("tk_1", 7);
    let token = mint(&signer, &claims()).unwrap();
    // the published tk_1 is another key: a forgery under a known id
    assert_eq!(
        check(&token, &key("tk_1", 8), "2026-12-05T10:30:00Z"),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        check(&token, &key("tk_2", 7), "2026-12-05T10:30:00Z"),
        Err(TokenError::UnknownKey("tk_1".into()))
    );
    assert_eq!(
        TokenError::UnknownKey("tk_9".into()).to_string(),
        "token signed by an unknown key \"tk_9\""
    );
}

#[test]
fn tampering_anywhere_breaks_the_signature() {
    let k = key("tk_1", 7);
    let token = mint(&k, &claims()).unwrap();
    let rest = token.strip_prefix(TOKEN_PREFIX).unwrap();
    let (body, footer) = rest.split_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(body).unwrap();
    // the claims: another agent, same length
    let text = String::from_utf8_lossy(&raw[..raw.len() - 64]).replace("planner", "plannex");
    raw.splice(..raw.len() - 64, text.into_bytes());
    let forged = format!("{TOKEN_PREFIX}{}.{footer}", URL_SAFE_NO_PAD.encode(&raw));
    assert_eq!(
        check(&forged, &k, "2026-12-05T10:30:00Z"),
        Err(TokenError::BadSignature)
    );
    // every byte of the signature
    let raw = URL_SAFE_NO_PAD.decode(body).unwrap();
    for i in [raw.len() - 64, raw.len() - 1] {
        let mut bad = raw.clone();
        bad[i] ^= 1;
        let t = format!("{TOKEN_PREFIX}{}.{footer}", URL_SAFE_NO_PAD.encode(&bad));
        assert_eq!(
            check(&t, &k, "2026-12-05T10:30:00Z"),
            Err(TokenError::BadSignature)
        );
    }
    // the footer is signed too: a footer with extra space names tk_1 still
    let spaced = URL_SAFE_NO_PAD.encode(br#"{"kid": "tk_1"}"#);
    let t = format!("{TOKEN_PREFIX}{body}.{spaced}");
    assert_eq!(
        check(&t, &k, "2026-12-05T10:30:00Z"),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn other_formats_and_truncations_are_refused() {
    let k = key("tk_1", 7);
    let token = mint(&k, &claims()).unwrap();
    let now = "2026-12-05T10:30:00Z";
    let unsupported = [
        token.replacen("v4.public.", "v4.local.", 1),
        token.replacen("v4.public.", "v3.public.", 1),
        token.replacen("v4.public.", "V4.PUBLIC.", 1),
        // a JWT with alg none, and one with EdDSA: not this format
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJvcmciOiJvcmdfYTEifQ.".into(),
        "eyJhbGciOiJFZERTQSJ9.e30.c2ln".into(),
        String::new(),
    ];
    for t in unsupported {
        assert_eq!(check(&t, &k, now), Err(TokenError::Unsupported), "{t}");
    }
    let (body, footer) = token
        .strip_prefix(TOKEN_PREFIX)
        .unwrap()
        .split_once('.')
        .unwrap();
    let malformed = [
        format!("{TOKEN_PREFIX}{body}"),
        format!("{TOKEN_PREFIX}{body}="),
        format!("{TOKEN_PREFIX}{}.{footer}", &body[..40]),
        format!("{TOKEN_PREFIX}{body}.{footer}="),
        format!("{TOKEN_PREFIX}{body}.{}", URL_SAFE_NO_PAD.encode("{}")),
        format!("{TOKEN_PREFIX}{body}.{footer}.x"),
        format!("{TOKEN_PREFIX}{body}+.{footer}"),
    ];
    for t in malformed {
        assert!(
            matches!(check(&t, &k, now), Err(TokenError::Malformed(_))),
            "{t}: {:?}",
            check(&t, &k, now)
        );
    }
    // cut anywhere: refused, as malformed or as a bad signature
    for cut in 1..8 {
        let t = format!("{TOKEN_PREFIX}{}.{footer}", &body[..body.len() - cut]);
        assert!(matches!(
            check(&t, &k, now),
            Err(TokenError::Malformed(_) | TokenError::BadSignature)
        ));
    }
    let long = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
    assert_eq!(check(&long, &k, now), Err(TokenError::TooLong));
}

#[test]
fn claims_are_checked_when_minting_and_verifying() {
    let k = key("tk_1", 7);
    type Edit = fn(&mut Claims);
    let cases: [(&str, Edit); 6] = [
        ("org", |c| c.org = "acme".into()),
        ("agent", |c| c.agent = Some(String::new())),
        ("scopes", |c| c.scopes.clear()),
        ("scope", |c| c.scopes = vec!["root".into()]),
        ("exp", |c| c.exp = c.iat),
        ("jti", |c| c.jti = "x".into()),
    ];
    for (field, edit) in cases {
        let mut c = claims();
        edit(&mut c);
        match mint(&k, &c) {
            Err(TokenError::Claims(rule)) => assert!(rule.starts_with(field), "{rule}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    // a token whose claims carry an unknown field, validly signed
    let message = br#"{"org":"org_a1","scopes":["read"],"iat":"2026-12-05T10:00:00Z","exp":"2026-12-05T11:00:00Z","jti":"tok_1","admin":true}"#;
    let footer = br#"{"kid":"tk_1"}"#;
    let sig = k.sign_bytes(&pae(&[TOKEN_PREFIX.as_bytes(), message, footer, b""]));
    let t = format!(
        "{TOKEN_PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode([&message[..], &sig].concat()),
        URL_SAFE_NO_PAD.encode(footer)
    );
    assert!(matches!(
        check(&t, &k, "2026-12-05T10:30:00Z"),
        Err(TokenError::Claims(_))
    ));
    let mut unbound = claims();
    unbound.agent = None;
    let t = mint(&k, &unbound).unwrap();
    assert_eq!(check(&t, &k, "2026-12-05T10:30:00Z").unwrap().agent, None);
    assert!(!t.contains("agent"));
}
