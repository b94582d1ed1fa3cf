#!/usr/bin/env bash
# The fuzzing suites, run longer than CI runs them (CI: proptest's default
# 256 cases per property as part of `scripts/test.sh`). Property tests built
# on the stable toolchain: the codec guard (proto/src/fuzz_tests.rs), keys,
# signed records, seals and envelopes (common/src/fuzz_tests.rs), request
# bodies, query values and bus records into the worker
# (data-plane/src/fuzz_tests.rs), the MessagePack encoder against a general
# one (data-plane/src/arcdb/encode.rs) and the SQL builder's structure
# (data-plane/src/query/prop_tests.rs).
#   scripts/fuzz.sh [CASES]      (default 20000 cases per property)
# A failure is shrunk to a minimal input and saved under proptest-regressions/
# next to the test: commit that file, and the case is replayed by every run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
cases="${1:-20000}"
export PROPTEST_CASES="$cases"
echo "fuzzing with $cases cases per property" >&2
cargo nextest run --release -p memtrace-proto -p memtrace-common -p memtrace-data-plane \
    -E 'test(fuzz_tests) | test(prop_tests) | test(any_rows_encode)' --no-fail-fast
