#!/usr/bin/env bash
# Ensure the system tools memtrace's build and tests need are installed:
#   cc                   (Debian: gcc libc6-dev)      linker; C parts of sqlite, zstd, mimalloc, ring
#   protoc               (Debian: protobuf-compiler)  tonic/prost code generation
#   google/protobuf/*.proto (Debian: libprotobuf-dev) well-known types etcd-client imports
#   etcd                 (Debian: etcd-server)        coordination tests
#   openssl              (Debian: openssl)            certificates for the TLS tests
#   initdb, pg_ctl, psql (Debian: postgresql)         real PostgreSQL in tests
#   python3 -m venv      (Debian: python3-venv)       Python tooling
#   faketime             (Debian: faketime)           a worker with a skewed wall clock (faults_clock_skew)
#
# Quiet and idempotent when everything is present. When something is missing:
# as root, installs it with apt-get; otherwise prints the sudo command to run
# and fails. Run it (`bash scripts/setup.sh`) or source it (`. scripts/setup.sh`,
# which also exports PROTOC); sourcing never changes the caller's shell options
# and never exits the caller's shell.

# Postgres binaries live on PATH or under /usr/lib/postgresql/<version>/bin.
_memtrace_have_pg() { # usage: _memtrace_have_pg TOOL...
    local d t ok
    for d in "" /usr/lib/postgresql/*/bin; do
        ok=1
        for t in "$@"; do
            if [ -z "$d" ]; then
                command -v "$t" >/dev/null || ok=0
            else
                [ -x "$d/$t" ] || ok=0
            fi
        done
        [ "$ok" = 1 ] && return 0
    done
    return 1
}

# `python3 -m venv --help` works even without Debian's python3-venv; creating a
# venv needs ensurepip, which that package provides. Importing it is fast.
_memtrace_have_venv() {
    command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' >/dev/null 2>&1
}

# Sets _memtrace_missing (tool names) and _memtrace_pkgs (Debian packages).
_memtrace_detect() {
    _memtrace_missing=()
    _memtrace_pkgs=()
    # rustup does not install a linker; Debian's gcc only recommends libc6-dev
    # (crt1.o, libc.so), which --no-install-recommends would leave out.
    if ! command -v cc >/dev/null || [ ! -e /usr/include/stdio.h ]; then
        _memtrace_missing+=("C compiler and libc headers (cc)")
        _memtrace_pkgs+=(gcc libc6-dev)
    fi
    if [ ! -x "${PROTOC:-}" ] && ! command -v protoc >/dev/null; then
        _memtrace_missing+=(protoc)
        _memtrace_pkgs+=(protobuf-compiler)
    fi
    # etcd-client's protos import google/protobuf/*.proto: Debian ships them in
    # libprotobuf-dev, only a Recommends of protobuf-compiler.
    # A protoc release zip keeps them in <prefix>/include next to bin/protoc.
    local _protoc
    _protoc="$(if [ -x "${PROTOC:-}" ]; then echo "$PROTOC"; else command -v protoc || true; fi)"
    if [ -z "${PROTOC_INCLUDE:-}" ] && [ ! -f /usr/include/google/protobuf/descriptor.proto ] &&
        ! { [ -n "$_protoc" ] && [ -f "$(dirname "$_protoc")/../include/google/protobuf/descriptor.proto" ]; }; then
        _memtrace_missing+=("google/protobuf well-known .proto files")
        _memtrace_pkgs+=(libprotobuf-dev)
    fi
    # MEMTRACE_SETUP_SCOPE=build: only what building needs (scripts/dev.sh).
    [ "${MEMTRACE_SETUP_SCOPE:-all}" = build ] && return 0
    if ! command -v etcd >/dev/null; then
        _memtrace_missing+=(etcd)
        _memtrace_pkgs+=(etcd-server)
    fi
    if ! command -v openssl >/dev/null; then
        _memtrace_missing+=("openssl (test certificates)")
        _memtrace_pkgs+=(openssl)
    fi
    if ! _memtrace_have_pg initdb pg_ctl postgres; then
        _memtrace_missing+=("postgres server (initdb, pg_ctl, postgres)")
        _memtrace_pkgs+=(postgresql) # depends on postgresql-client (psql)
    elif ! _memtrace_have_pg psql; then
        _memtrace_missing+=(psql)
        _memtrace_pkgs+=(postgresql-client)
    fi
    # libfaketime's wrapper: the clock-skew fault scenario runs a worker
    # whose wall clock is minutes off (tests/src/faults/skew.rs).
    if ! command -v faketime >/dev/null; then
        _memtrace_missing+=("faketime (skewed worker clock)")
        _memtrace_pkgs+=(faketime)
    fi
    if ! _memtrace_have_venv; then
        _memtrace_missing+=("python3 -m venv")
        command -v python3 >/dev/null || _memtrace_pkgs+=(python3)
        _memtrace_pkgs+=(python3-venv)
    fi
}

_memtrace_setup() {
    _memtrace_detect
    if [ "${#_memtrace_pkgs[@]}" -gt 0 ]; then
        echo "setup: missing: ${_memtrace_missing[*]}" >&2
        if [ "${EUID:-$(id -u)}" -ne 0 ]; then
            echo "setup: not root; install them with:" >&2
            echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${_memtrace_pkgs[*]}" >&2
            return 1
        fi
        if ! command -v apt-get >/dev/null; then
            echo "setup: apt-get not found; install the equivalent of: ${_memtrace_pkgs[*]}" >&2
            return 1
        fi
        echo "setup: installing ${_memtrace_pkgs[*]}" >&2
        apt-get update -qq >&2 || return 1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${_memtrace_pkgs[@]}" >&2 || return 1
        _memtrace_detect
        if [ "${#_memtrace_pkgs[@]}" -gt 0 ]; then
            echo "setup: still missing after apt-get install: ${_memtrace_missing[*]}" >&2
            return 1
        fi
    fi
    # prost-build finds protoc via $PROTOC, else PATH; pin it for callers.
    if [ ! -x "${PROTOC:-}" ]; then
        PROTOC="$(command -v protoc)"
        export PROTOC
    fi
    return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail # executed: strict mode only affects this process
    _memtrace_setup
else
    _memtrace_setup
    _memtrace_rc=$?
    unset -f _memtrace_have_pg _memtrace_have_venv _memtrace_detect _memtrace_setup
    unset _memtrace_missing _memtrace_pkgs
    # `return` in a sourced file sets the status of the `.` command.
    return "$_memtrace_rc" 2>/dev/null || true
fi
