use super::*;
use crate::config::{Env, FileSource, load};
use proptest::prelude::*;

#[test]
fn registry_is_sorted_unique_and_consistent() {
    let keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(keys, sorted, "keys are sorted and unique");
    for s in SETTINGS {
        assert!(
            s.validate(&s.default_value()).is_ok(),
            "{}: default in range",
            s.key
        );
        assert!(
            !s.per_org || s.category == Category::Hot,
            "{}: only hot settings per org",
            s.key
        );
        assert!(
            !(s.sensitive && s.per_org),
            "{}: sensitive settings are global",
            s.key
        );
        assert!(
            !s.description.is_empty() && s.key.contains('.'),
            "{}",
            s.key
        );
    }
    for required in [
        "arc.write_batch_size",
        "arc.write_flush_interval_ms",
        "arc.write_linger_ms",
        "arc.max_batch_bytes",
        "dedup.enabled",
        "dedup.window_hours",
        "log.level",
        "limits.requests_per_second",
        "limits.max_payload_bytes",
        "limits.max_queued_events",
    ] {
        assert!(lookup(required).is_ok(), "{required}");
    }
    for per_org in [
        "limits.requests_per_second",
        "limits.max_payload_bytes",
        "limits.max_queued_events",
    ] {
        assert!(lookup(per_org).unwrap().per_org, "{per_org}");
    }
    assert_eq!(
        locked_by_default(),
        vec!["dedup.key_content_bytes".to_owned()]
    );
}

#[test]
fn registry_defaults_match_static_defaults() {
    let config = load(&FileSource::None, &Env::default()).unwrap().config;
    let plan = seed::plan(&config).unwrap();
    assert_eq!(plan.values.len(), seed::SOURCES.len());
    assert_eq!(plan.non_default().count(), 0, "{:?}", plan.values);
    assert!(plan.skipped.is_empty());
}

#[test]
fn parses_operator_text() {
    let cases = [
        ("arc.write_batch_size", "500", SettingValue::Int(500)),
        ("arc.write_batch_size", " 1_000 ", SettingValue::Int(1000)),
        ("arc.max_batch_bytes", "4MiB", SettingValue::Int(4 * MIB)),
        (
            "limits.max_payload_bytes",
            "512 KiB",
            SettingValue::Int(512 * KIB),
        ),
        ("arc.write_flush_interval_ms", "2s", SettingValue::Int(2000)),
        ("arc.write_linger_ms", "250ms", SettingValue::Int(250)),
        ("arc.write_linger_ms", "0", SettingValue::Int(0)),
        ("dedup.enabled", "off", SettingValue::Bool(false)),
        ("dedup.enabled", "TRUE", SettingValue::Bool(true)),
        ("log.level", "DEBUG", SettingValue::String("debug".into())),
        (
            "telemetry.otlp_endpoint",
            "http://otel:4317",
            SettingValue::String("http://otel:4317".into()),
        ),
    ];
    for (key, text, want) in cases {
        assert_eq!(parse_value(key, text), Ok(want), "{key} {text}");
    }
}

#[test]
fn invalid_values_name_the_key_type_and_range() {
    let err = parse_value("arc.write_batch_size", "0")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("arc.write_batch_size") && err.contains("1..=100000"),
        "{err}"
    );
    let err = parse_value("arc.write_batch_size", "many")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("an integer") && err.contains("\"many\""),
        "{err}"
    );
    let err = parse_value("dedup.enabled", "maybe")
        .unwrap_err()
        .to_string();
    assert!(err.contains("boolean"), "{err}");
    let err = parse_value("log.level", "loud").unwrap_err().to_string();
    assert!(
        err.contains("one of trace, debug, info, warn, error"),
        "{err}"
    );
    let err = parse_value("arc.write_linger_ms", "5 fortnights")
        .unwrap_err()
        .to_string();
    assert!(err.contains("duration"), "{err}");
    let err = parse_value("arc.write_batch_size", "99999999999999999999").unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidValue);
    assert_eq!(ErrorCode::InvalidValue.http_status(), 422);
    let long = "x".repeat(5000);
    let err = parse_value("telemetry.otlp_headers", &long)
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("xxxx") && err.contains(MASK),
        "sensitive values are never echoed: {err}"
    );
}

#[test]
fn json_round_trip_and_type_checks() {
    let setting = lookup("arc.write_batch_size").unwrap();
    assert_eq!(setting.from_json("250"), Ok(SettingValue::Int(250)));
    for bad in ["\"250\"", "2.5", "true", "null", "[1]", "not json", "0"] {
        assert!(setting.from_json(bad).is_err(), "{bad}");
    }
    assert_eq!(SettingValue::String("a\"b".into()).to_json(), r#""a\"b""#);
    assert_eq!(
        lookup("dedup.enabled").unwrap().from_json("false"),
        Ok(SettingValue::Bool(false))
    );
}

#[test]
fn unknown_keys_suggest_close_matches() {
    let err = lookup("arc.write_batch").unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    let SettingError::Unknown {
        close_matches: suggested,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(suggested.first(), Some(&"arc.write_batch_size"));
    assert!(
        err.to_string()
            .contains("did you mean arc.write_batch_size"),
        "{err}"
    );
    assert_eq!(
        close_matches("write_batch_size"),
        vec!["arc.write_batch_size"]
    );
    assert_eq!(
        close_matches("dedup.windw_hours"),
        vec!["dedup.window_hours"]
    );
    assert_eq!(close_matches("log.lvl"), vec!["log.level"]);
    assert!(close_matches("completely.unrelated.thing").is_empty());
    assert!(close_matches("").is_empty());
    assert!(validate_keys(&["log.level", "dedup.enabled"]).is_ok());
    assert!(validate_keys(&["log.levle"]).is_err());
}

#[test]
fn sensitive_values_are_masked_for_display() {
    let headers = lookup("telemetry.otlp_headers").unwrap();
    let value = SettingValue::String("authorization=Bearer abc".into());
    assert_eq!(headers.display(&value), MASK);
    assert_eq!(headers.display(&headers.default_value()), "");
    let level = lookup("log.level").unwrap();
    assert_eq!(level.display(&SettingValue::String("warn".into())), "warn");
}

#[test]
fn effective_values_layer_default_global_org() {
    let mut eff = EffectiveSettings::new();
    let key = "limits.requests_per_second";
    assert_eq!(
        eff.resolve(Some("org_a"), key).unwrap().source,
        Source::Default
    );
    eff.set(None, key, SettingValue::Int(50)).unwrap();
    eff.set(Some("org_a"), key, SettingValue::Int(5)).unwrap();
    assert_eq!(eff.limits(Some("org_a")).requests_per_second, 5);
    assert_eq!(eff.limits(Some("org_b")).requests_per_second, 50);
    assert_eq!(eff.limits(None).requests_per_second, 50);
    assert_eq!(
        eff.resolve(Some("org_b"), key).unwrap().source,
        Source::Global
    );
    assert_eq!(
        eff.resolve(Some(""), key).unwrap().value,
        SettingValue::Int(50)
    );

    // an invalid record changes nothing
    assert!(eff.apply_json(Some("org_a"), key, "-1").is_err());
    assert!(eff.apply_json(Some("org_a"), "no.such", "1").is_err());
    assert!(
        eff.apply_json(Some("org_a"), "log.level", "\"debug\"")
            .is_err(),
        "log.level is global"
    );
    assert_eq!(eff.limits(Some("org_a")).requests_per_second, 5);

    eff.apply_json(Some("org_a"), "dedup.window_hours", "48")
        .unwrap();
    assert_eq!(eff.dedup(Some("org_a")).window.as_secs(), 48 * 3600);
    assert!(eff.remove(Some("org_a"), key));
    assert!(!eff.remove(Some("org_a"), key));
    assert_eq!(eff.limits(Some("org_a")).requests_per_second, 50);
    assert!(eff.remove_org("org_a"));
    assert_eq!(eff.org_values("org_a").count(), 0);

    let defaults = EffectiveSettings::new();
    let write = defaults.write(None);
    assert_eq!(
        (
            write.batch_size,
            write.flush_interval.as_millis(),
            write.linger.as_millis()
        ),
        (100, 1000, 5)
    );
    assert_eq!(write.max_batch_bytes, 8 * MIB as u64);
    assert!(defaults.dedup(None).enabled);
    assert_eq!(defaults.dedup(None).key_content_bytes, 200);
    assert_eq!(defaults.log_level(), "info");
    assert_eq!(defaults.limits(None).max_queued_events, 10_000);
}

#[test]
fn seeding_takes_static_values_and_refuses_out_of_range() {
    let env = Env::from_pairs([
        ("MEMTRACE_ARC_WRITE_BATCH_SIZE", "250"),
        ("MEMTRACE_LOG_LEVEL", "WARN"),
        ("MEMTRACE_ARC_QUERY_TIMEOUT", "10"),
    ]);
    let config = load(&FileSource::None, &env).unwrap().config;
    let plan = seed::plan(&config).unwrap();
    let changed: Vec<(&str, SettingValue)> = plan
        .non_default()
        .map(|v| (v.setting.key, v.value.clone()))
        .collect();
    assert_eq!(
        changed,
        vec![
            ("arc.write_batch_size", SettingValue::Int(250)),
            ("arc.query_timeout_ms", SettingValue::Int(10_000)),
            ("log.level", SettingValue::String("warn".into())),
        ]
    );

    let env = Env::from_pairs([("MEMTRACE_ARC_WRITE_BATCH_SIZE", "0")]);
    let config = load(&FileSource::None, &env).unwrap().config;
    let err = seed::plan(&config).unwrap_err().to_string();
    assert!(
        err.contains("MEMTRACE_ARC_WRITE_BATCH_SIZE") && err.contains("1..=100000"),
        "{err}"
    );

    let env = Env::from_pairs([("MEMTRACE_LOG_LEVEL", "memtrace=debug,info")]);
    let config = load(&FileSource::None, &env).unwrap().config;
    let plan = seed::plan(&config).unwrap();
    assert_eq!(plan.skipped.len(), 1);
    assert!(plan.values.iter().all(|v| v.setting.key != "log.level"));
}

fn int_bounds(setting: &Setting) -> Option<(i64, i64)> {
    match setting.ty {
        SettingType::Integer { min, max, .. } | SettingType::DurationMs { min, max } => {
            Some((min, max))
        }
        _ => None,
    }
}

proptest! {
    #[test]
    fn in_range_values_round_trip(index in 0..SETTINGS.len(), seed in any::<i64>()) {
        let setting = &SETTINGS[index];
        if let Some((min, max)) = int_bounds(setting) {
            let span = u64::try_from(max - min).unwrap() + 1;
            let v = min + i64::try_from(seed.unsigned_abs() % span).unwrap();
            let value = SettingValue::Int(v);
            prop_assert_eq!(setting.from_json(&value.to_json()), Ok(value.clone()));
            prop_assert_eq!(setting.parse(&v.to_string()), Ok(value));
            prop_assert!(setting.parse(&(max.saturating_add(1 + (seed & 0xff).abs())).to_string()).is_err());
            prop_assert!(setting.parse(&(min.saturating_sub(1 + (seed & 0xff).abs())).to_string()).is_err());
        } else {
            let value = setting.default_value();
            prop_assert_eq!(setting.from_json(&value.to_json()), Ok(value));
        }
    }

    #[test]
    fn one_typo_still_finds_the_key(index in 0..SETTINGS.len(), at in any::<prop::sample::Index>()) {
        let key = SETTINGS[index].key;
        let mut chars: Vec<char> = key.chars().collect();
        chars.remove(at.index(chars.len()));
        let typo: String = chars.into_iter().collect();
        prop_assume!(typo != key);
        prop_assert!(close_matches(&typo).contains(&key), "{} -> {:?}", typo, close_matches(&typo));
    }

    #[test]
    fn arbitrary_text_never_panics(key in "[a-z._]{0,30}", text in "\\PC{0,40}") {
        let _ = parse_value(&key, &text);
        for setting in SETTINGS {
            if let Ok(value) = setting.parse(&text) {
                prop_assert!(setting.validate(&value).is_ok());
            }
        }
    }
}
