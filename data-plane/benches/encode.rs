//! Encoding cost of the write path: 1,000 memory rows into one columnar
//! MessagePack body, alone and with gzip / zstd compression. Rows vary in
//! content so compression is not flattered by repetition.
//! Run: `cargo bench -p memtrace-data-plane --bench encode`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memtrace_data_plane::arcdb::{Compression, MemoryBatch, compress};
use memtrace_data_plane::store::MemoryRow;
use std::hint::black_box;

const ROWS: usize = 1_000;

fn rows() -> Vec<MemoryRow> {
    (0..ROWS)
        .map(|i| MemoryRow {
            time: 1_795_000_000_000_000 + i as i64 * 1_000,
            id: format!("0194f3a2-7c1e-7d00-8000-{i:012x}"),
            org_id: "org_5f1c0e9a4b7d2c8e1a3f6b90".into(),
            agent_id: format!("agent_{:024x}", i % 7),
            session_id: format!("sess_{:024x}", i % 31),
            memory_type: ["episodic", "decision", "session", "entity"][i % 4].into(),
            event_type: "general".into(),
            content: format!(
                "step {i}: fetched https://example.test/item/{} and summarised {} paragraphs",
                i * 7919 % 10_007,
                i % 13
            ),
            metadata_json: format!("{{\"tool\":\"browser\",\"attempt\":{}}}", i % 3).into(),
            tags_csv: "research,web".into(),
            dedup_key: format!("{:032x}", (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            importance: (i % 10) as f64 / 10.0,
            parent_id: String::new(),
            expires_at: 0,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let template = rows();
    let mut group = c.benchmark_group("encode 1000 rows");
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, compression) in [
        ("msgpack", None),
        ("msgpack+gzip", Some(Compression::Gzip)),
        ("msgpack+zstd", Some(Compression::Zstd)),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut batch = MemoryBatch::with_capacity(ROWS);
                for row in &template {
                    batch.push(row);
                }
                let body = batch.encode("events");
                match compression {
                    Some(c) => compress(black_box(&body), c).map(|v| v.len()).unwrap_or(0),
                    None => body.len(),
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
