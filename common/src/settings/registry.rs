//! Every runtime setting, sorted by key. Adding one here is all it takes:
//! validation, listing, export/import, publication and the workers' typed
//! views follow from the entry.

use super::{Category, DefaultValue, Setting, SettingType};

pub(crate) const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];
pub(crate) const WRITE_COMPRESSIONS: &[&str] = &["zstd", "gzip", "none"];
pub(crate) const KIB: i64 = 1024;
pub(crate) const MIB: i64 = 1024 * 1024;

const fn hot(
    key: &'static str,
    description: &'static str,
    ty: SettingType,
    default: DefaultValue,
) -> Setting {
    Setting {
        key,
        description,
        ty,
        default,
        category: Category::Hot,
        per_org: true,
        locked_by_default: false,
        sensitive: false,
    }
}

/// Every setting, sorted by key.
pub static SETTINGS: &[Setting] = &[
    hot(
        "arc.max_batch_bytes",
        "a write batch closes when its encoded size would exceed this many bytes",
        SettingType::Integer {
            min: 64 * KIB,
            max: 256 * MIB,
            unit: "bytes",
        },
        DefaultValue::Int(8 * MIB),
    ),
    hot(
        "arc.max_inflight_writes",
        "arc writes one worker keeps outstanding for an org at once (group commit collects behind them); raise it for an arc with more ingest cores than the default suits",
        SettingType::Integer {
            min: 1,
            max: 16,
            unit: "writes",
        },
        DefaultValue::Int(2),
    ),
    Setting {
        per_org: false,
        ..hot(
            "arc.query_timeout_ms",
            "how long a worker waits for one arc read (retries included) before answering 503",
            SettingType::DurationMs {
                min: 100,
                max: 300_000,
            },
            DefaultValue::Int(30_000),
        )
    },
    Setting {
        per_org: false,
        ..hot(
            "arc.retry_max_attempts",
            "retries of a failed arc write (5xx or connection errors only), with jittered backoff",
            SettingType::Integer {
                min: 0,
                max: 10,
                unit: "retries",
            },
            DefaultValue::Int(3),
        )
    },
    hot(
        "arc.write_batch_size",
        "a write batch closes when it holds this many memories",
        SettingType::Integer {
            min: 1,
            max: 100_000,
            unit: "events",
        },
        DefaultValue::Int(100),
    ),
    hot(
        "arc.write_compression",
        "how write bodies to the org's arc are compressed: zstd, gzip (for arc builds that refuse zstd bodies with 'Invalid MessagePack payload') or none",
        SettingType::Enum {
            values: WRITE_COMPRESSIONS,
        },
        DefaultValue::Str("zstd"),
    ),
    hot(
        "arc.write_flush_interval_ms",
        "the longest a row waits in an open batch (the original's flush interval); a batch stays open for the smaller of this and arc.write_linger_ms",
        SettingType::DurationMs {
            min: 1,
            max: 60_000,
        },
        DefaultValue::Int(1000),
    ),
    hot(
        "arc.write_linger_ms",
        "group commit: the longest a batch stays open while every arc write slot of the org is busy (an idle org writes at once)",
        SettingType::DurationMs { min: 0, max: 1000 },
        DefaultValue::Int(5),
    ),
    hot(
        "auth.legacy_keys_enabled",
        "API keys imported from the Go memtrace (memtracectl import legacy) are accepted in their old format; false refuses them (401 invalid API key) once their traffic has drained",
        SettingType::Boolean,
        DefaultValue::Bool(true),
    ),
    hot(
        "dedup.enabled",
        "writes with the same dedup key within the window are duplicates: refused by the worker that knows the key (409), collapsed by every read",
        SettingType::Boolean,
        DefaultValue::Bool(true),
    ),
    Setting {
        per_org: false,
        locked_by_default: true,
        ..hot(
            "dedup.key_content_bytes",
            "bytes of content hashed into a generated dedup key; changing it stops retries across the change from collapsing",
            SettingType::Integer {
                min: 1,
                max: 65_536,
                unit: "bytes",
            },
            DefaultValue::Int(200),
        )
    },
    hot(
        "dedup.window_hours",
        "two writes with the same dedup key less than this apart are one memory (reads show the later)",
        SettingType::Integer {
            min: 1,
            max: 8760,
            unit: "hours",
        },
        DefaultValue::Int(24),
    ),
    hot(
        "limits.burst",
        "requests an org may send at once above its steady rate (fleet-wide, split across live workers)",
        SettingType::Integer {
            min: 1,
            max: 1_000_000,
            unit: "requests",
        },
        DefaultValue::Int(2000),
    ),
    hot(
        "limits.max_concurrent_reads",
        "reads of an org one worker serves at once; more get 429 with Retry-After (bounds what one tenant holds of a worker's memory and its Arc)",
        SettingType::Integer {
            min: 1,
            max: 1024,
            unit: "reads",
        },
        DefaultValue::Int(8),
    ),
    hot(
        "limits.max_payload_bytes",
        "largest request body a worker accepts for an org",
        SettingType::Integer {
            min: KIB,
            max: 64 * MIB,
            unit: "bytes",
        },
        DefaultValue::Int(4 * MIB),
    ),
    hot(
        "limits.max_queued_events",
        "memories an org may have waiting for arc per worker before writes get 429",
        SettingType::Integer {
            min: 1,
            max: 10_000_000,
            unit: "events",
        },
        DefaultValue::Int(10_000),
    ),
    hot(
        "limits.requests_per_second",
        "steady request rate of an org over the whole fleet, split evenly across live workers (0 = unlimited)",
        SettingType::Integer {
            min: 0,
            max: 1_000_000,
            unit: "requests/s",
        },
        DefaultValue::Int(1000),
    ),
    Setting {
        per_org: false,
        ..hot(
            "log.level",
            "log level of workers and the control plane (RUST_LOG, when set, wins)",
            SettingType::Enum { values: LOG_LEVELS },
            DefaultValue::Str("info"),
        )
    },
    hot(
        "memories.retention_days",
        "memories older than this are hidden from every read at once and erased by the control plane's hourly sweep (0 = kept until deleted)",
        SettingType::Integer {
            min: 0,
            max: 36_500,
            unit: "days",
        },
        DefaultValue::Int(0),
    ),
    Setting {
        per_org: false,
        category: Category::RestartRequired,
        ..hot(
            "telemetry.otlp_endpoint",
            "OTLP/gRPC endpoint (http://host:4317) every process exports traces to; the first endpoint a process sees starts export, a change needs a restart; OTEL_EXPORTER_OTLP_ENDPOINT wins",
            SettingType::Text { max_len: 2048 },
            DefaultValue::Str(""),
        )
    },
    Setting {
        per_org: false,
        category: Category::RestartRequired,
        sensitive: true,
        ..hot(
            "telemetry.otlp_headers",
            "headers of OTLP exports, e.g. an ingest token (k1=v1,k2=v2); control plane only (sensitive settings are never published): workers take OTEL_EXPORTER_OTLP_HEADERS",
            SettingType::Text { max_len: 4096 },
            DefaultValue::Str(""),
        )
    },
    hot(
        "tokens.max_ttl_seconds",
        "longest lifetime of an agent token the control plane mints for an org (memtracectl token create --ttl, POST /api/v1/tokens); tokens already minted keep theirs",
        SettingType::Integer {
            min: 60,
            max: 30 * 86_400,
            unit: "seconds",
        },
        DefaultValue::Int(86_400),
    ),
];
