#!/usr/bin/env bash
# Benchmarks that print figures (recorded in docs/PERFORMANCE.md). Release
# builds; every load is bounded and targets only 127.0.0.1.
#   scripts/bench.sh propagation [--changes N] [--watchers N]
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
    *)
        echo "usage: scripts/bench.sh propagation [--changes N] [--watchers N]" >&2
        exit 2
        ;;
esac
