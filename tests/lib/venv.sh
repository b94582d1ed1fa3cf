# Sourced by the scripts that need a Python virtualenv of pinned tools
# (tests/sdk/venv.sh, tests/k8s/validate.sh): one way to build and cache
# them. `cached_venv NAME REQUIREMENTS PYTHON [PIP ARGS...]` makes (once) a
# venv under ${CARGO_TARGET_DIR:-target}/NAME/<key>, where <key> hashes the
# requirements file and the interpreter's version, so editing the pins or
# upgrading python rebuilds it; concurrent runs are serialised with flock,
# an unfinished build is redone, older venvs of NAME are removed. It sets
# VENV to the venv's directory. The caller checks the tools it needs with
# `venv_check CMD...` before the venv is marked complete. Any failure is
# an error (exit 1, with the reason on stderr), never a skip.

venv_fail() {
    echo "$VENV_LOG: $*" >&2
    exit 1
}

# cached_venv NAME REQUIREMENTS PYTHON CHECK [PIP ARGS...]: CHECK is a
# command run with the venv's directory as its only argument once pip
# finished (a tool that does not run fails the build).
cached_venv() {
    local name="$1" requirements="$2" python3="$3" check="$4"
    shift 4
    local repo target cache version key marker
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    target="${CARGO_TARGET_DIR:-$repo/target}"
    case "$target" in /*) ;; *) target="$repo/$target" ;; esac
    cache="$target/$name"
    command -v "$python3" >/dev/null ||
        venv_fail "$python3 not found; install it with scripts/setup.sh (Debian: python3 python3-venv)"
    "$python3" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
        venv_fail "$python3 cannot create virtualenvs (no ensurepip); install python3-venv (scripts/setup.sh does, as root)"
    [ -f "$requirements" ] || venv_fail "missing $requirements"
    version="$("$python3" -c 'import sys; print(sys.executable, sys.version)')"
    key="$({
        cat "$requirements"
        printf '%s\n' "$version"
    } | sha256sum | cut -c1-16)"
    VENV="$cache/$key"
    marker="$VENV/.memtrace-complete"
    mkdir -p "$cache"
    exec 9>"$cache/.lock"
    flock -w 900 9 || venv_fail "timed out waiting for another run to finish building $cache"
    if [ ! -f "$marker" ]; then
        # anything here without the marker is a build that did not finish
        rm -rf "$VENV"
        echo "$VENV_LOG: creating $VENV with $python3 ($version): pip install -r ${requirements#"$repo"/}" >&2
        "$python3" -m venv "$VENV" >&2 || {
            rm -rf "$VENV"
            venv_fail "$python3 -m venv $VENV failed"
        }
        "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input \
            --timeout 60 --retries 3 "$@" -r "$requirements" >&2 || {
            rm -rf "$VENV"
            venv_fail "pip install -r $requirements failed (network, index or pins; output above)"
        }
        "$check" "$VENV" >&2 || {
            rm -rf "$VENV"
            venv_fail "the installed tools do not run (above)"
        }
        touch "$marker"
        local old
        for old in "$cache"/*/; do
            [ "${old%/}" = "$VENV" ] || rm -rf "${old%/}"
        done
    fi
    exec 9>&-
}
