#!/usr/bin/env bash
# The fault suite's long variant (figures in docs/RELIABILITY.md): the
# checker's own tests, then every tests/tests/faults_*.rs scenario with
# MEMTRACE_FAULTS_FULL=1, one at a time, against real etcd, control-plane
# and worker processes and the Arc stand-in, all on 127.0.0.1. Every load
# is bounded in count and time. Each scenario prints one FAULTS-FIGURES
# line; they are collected into <target dir>/faults-figures.jsonl.
#   scripts/faults.sh [FILTER]   long variant (minutes); FILTER is a nextest
#                                filterset, e.g. 'binary(faults_arc)'
#   MEMTRACE_FAULTS_FULL=0 scripts/faults.sh   the short variant CI runs
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/setup.sh
. scripts/setup.sh
export MEMTRACE_FAULTS_FULL="${MEMTRACE_FAULTS_FULL:-1}"
target="${CARGO_TARGET_DIR:-target}"
log="$target/faults.log"
figures="$target/faults-figures.jsonl"
cargo build --workspace --all-targets >&2
mkdir -p "$target"
status=0
if cargo nextest --version >/dev/null 2>&1; then
    filter="${1:-binary(/^faults_/) or test(/^faults::/)}"
    cargo nextest run -p memtrace-tests --profile faults --no-fail-fast --test-threads 1 \
        --no-capture -E "$filter" 2>&1 | tee "$log" || status=$?
else
    tests=()
    for f in tests/tests/faults_*.rs; do tests+=(--test "$(basename "$f" .rs)"); done
    cargo test -p memtrace-tests --lib faults:: -- --test-threads 1 2>&1 | tee "$log" || status=$?
    cargo test -p memtrace-tests "${tests[@]}" -- --test-threads 1 --nocapture 2>&1 | tee -a "$log" || status=$?
fi
grep -o 'FAULTS-FIGURES .*' "$log" | sed 's/^FAULTS-FIGURES //' > "$figures" || true
echo "faults.sh: $(wc -l < "$figures") scenario figure lines in $figures" >&2
exit "$status"
