#!/usr/bin/env bash
# Runs memtrace on its embedded default, on this machine, with no etcd,
# PostgreSQL or Arc: installs the build tools if missing, builds, and runs
# `memtracectl dev` in the foreground — the control plane (SQLite), an
# in-process state bus and a worker (embedded store) in one process, with
# everything under ./data. Stop it with ctrl-c.
#
# First start: generates development-only master/fleet keys
# (./data/dev-keys.env, 0600) and an admin token (./data/dev-admin.token),
# creates a demo org and prints its API key once, with curl and Python
# examples. Later starts reuse all of it.
#
# Ports (127.0.0.1): control plane 9200 (MEMTRACE_CONTROL_PLANE_LISTEN),
# worker 9100 (MEMTRACE_SERVER_HOST / MEMTRACE_SERVER_PORT). Extra arguments
# go to `memtracectl dev` (e.g. --data-dir DIR, --config FILE).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" = stop ]; then
    # the former background mode; a control plane it started may still run
    PIDFILE=./data/control-plane.pid
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        kill -TERM "$(cat "$PIDFILE")" && rm -f "$PIDFILE" && echo "old background control plane stopped"
    else
        echo "nothing to stop: scripts/dev.sh now runs in the foreground (stop it with ctrl-c)"
    fi
    exit 0
fi

MEMTRACE_SETUP_SCOPE=build . scripts/setup.sh
echo "==> building memtracectl (the first build takes a few minutes on 2 cores)" >&2
cargo build -p memtrace-cli >&2

exec ./target/debug/memtracectl dev "$@"
