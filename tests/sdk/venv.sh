#!/usr/bin/env bash
# The Python virtualenv the SDK contract test runs in: created on first use
# and cached under ${CARGO_TARGET_DIR:-target}/sdk-venv/<key>, where <key>
# hashes tests/sdk/requirements.txt and the interpreter's version, so editing
# the requirements (or upgrading python3) rebuilds it. Prints the venv's
# python path as the last line of stdout; everything else goes to stderr.
#
# Used by scripts/test.sh (before the tests) and by the test itself
# (tests/src/python.rs), so `cargo nextest run -p memtrace-tests --test
# sdk_contract` works on its own. Concurrent runs are serialised with flock.
# A missing python3/venv module or a failed pip install is an error (non-zero
# exit, with the reason), never a skip. MEMTRACE_SDK_PYTHON3 names another
# interpreter than `python3` on PATH.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV_LOG="sdk venv"
# shellcheck source=../lib/venv.sh
. "$here/../lib/venv.sh"

sdk_imports() {
    "$1/bin/python" -c 'import memtrace, httpx, pydantic'
}

cached_venv sdk-venv "$here/requirements.txt" "${MEMTRACE_SDK_PYTHON3:-python3}" sdk_imports \
    --only-binary=:all:
echo "$VENV/bin/python"
