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
repo="$(cd "$here/../.." && pwd)"
requirements="$here/requirements.txt"
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
cache="$target/sdk-venv"

fail() {
    echo "sdk venv: $*" >&2
    exit 1
}

python3="${MEMTRACE_SDK_PYTHON3:-python3}"
command -v "$python3" >/dev/null ||
    fail "$python3 not found; install it with scripts/setup.sh (Debian: python3 python3-venv)"
"$python3" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
    fail "$python3 cannot create virtualenvs (no ensurepip); install python3-venv (scripts/setup.sh does, as root)"
[ -f "$requirements" ] || fail "missing $requirements"

version="$("$python3" -c 'import sys; print(sys.executable, sys.version)')"
key="$({
    cat "$requirements"
    printf '%s\n' "$version"
} | sha256sum | cut -c1-16)"
venv="$cache/$key"
marker="$venv/.memtrace-complete"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 900 9 || fail "timed out waiting for another run to finish building $cache"

if [ ! -f "$marker" ]; then
    # Anything here without the marker is a build that did not finish.
    rm -rf "$venv"
    echo "sdk venv: creating $venv with $python3 ($version)" >&2
    "$python3" -m venv "$venv" >&2 || {
        rm -rf "$venv"
        fail "python3 -m venv $venv failed"
    }
    echo "sdk venv: pip install -r tests/sdk/requirements.txt" >&2
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
        --timeout 60 --retries 3 --only-binary=:all: -r "$requirements" >&2 || {
        rm -rf "$venv"
        fail "pip install -r $requirements failed (network, index or pins; output above)"
    }
    "$venv/bin/python" -c 'import memtrace, httpx, pydantic' >&2 || {
        rm -rf "$venv"
        fail "the installed SDK does not import"
    }
    touch "$marker"
    # Venvs of older requirement sets are not needed any more.
    for old in "$cache"/*/; do
        [ "${old%/}" = "$venv" ] || rm -rf "${old%/}"
    done
fi

echo "$venv/bin/python"
