#!/usr/bin/env bash
# Benchmarks that print figures (recorded in docs/PERFORMANCE.md). Release
# builds; every load is bounded and targets only 127.0.0.1.
#   scripts/bench.sh propagation [--changes N] [--watchers N]
#   scripts/bench.sh ingest [--seconds N] [--rows N] [--streams N] [--window N] [--concurrency N] [--dedup on|off]
#                           [--cost-model arc|instant] [--compression zstd|gzip|none] [--arc-url URL --arc-token-file FILE]
#   scripts/bench.sh reads  [--memories N] [--agents N] [--sessions N] [--requests N] [--seconds N]
#                           [--cost-model arc|instant] [--visibility-delay on|off] [--arc-url URL --arc-token-file FILE]
#   (each bench's --help lists every flag and its default)
#   scripts/bench.sh micro     (criterion: per-request auth cost, batch encoding)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
what="${1:-propagation}"
shift || true
case "$what" in
    propagation)
        cargo build --release -p memtrace-control-plane >&2
        cargo build --release -p memtrace-tests --bin propagation-bench >&2
        ./target/release/propagation-bench "$@"
        ;;
    ingest)
        cargo build --release -p memtrace-control-plane -p memtrace-data-plane -p memtrace-cli >&2
        cargo build --release -p memtrace-tests --bin ingest-bench >&2
        ./target/release/ingest-bench "$@"
        ;;
    reads)
        cargo build --release -p memtrace-control-plane -p memtrace-data-plane -p memtrace-cli >&2
        cargo build --release -p memtrace-tests --bin read-bench >&2
        ./target/release/read-bench "$@"
        ;;
    micro)
        cargo bench -p memtrace-data-plane --bench auth --bench encode -- --noplot "$@"
        ;;
    *)
        echo "usage: scripts/bench.sh propagation|ingest|reads|micro [flags]" >&2
        exit 2
        ;;
esac
