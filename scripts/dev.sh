#!/usr/bin/env bash
# Runs memtrace on its embedded default, on this machine, with no etcd,
# PostgreSQL or Arc: builds, starts the control plane on SQLite under ./data
# (in the background; it keeps running after this script), creates a demo org
# and an API key, and shows them.
#
# Development only: the master key and admin token are generated once and
# kept in ./data with 0600 permissions. Stop with: scripts/dev.sh stop
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATA=./data
PIDFILE="$DATA/control-plane.pid"
LOG="$DATA/control-plane.log"
LISTEN="${MEMTRACE_CONTROL_PLANE_LISTEN:-127.0.0.1:9200}"
SERVER="http://$LISTEN"
CP=./target/debug/memtrace-control-plane
CTL=./target/debug/memtracectl

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

if [ "${1:-}" = stop ]; then
    if running; then
        kill -TERM "$(cat "$PIDFILE")" && rm -f "$PIDFILE" && echo "control plane stopped"
    else
        echo "control plane is not running"
    fi
    exit 0
fi

MEMTRACE_SETUP_SCOPE=build . scripts/setup.sh
echo "==> building (first build takes a few minutes on 2 cores)" >&2
cargo build -p memtrace-control-plane -p memtrace-cli >&2

mkdir -p "$DATA"
chmod 700 "$DATA"
umask 077
# Development-only secrets, generated once and kept private to this user.
[ -s "$DATA/dev-master.key" ] || "$CTL" keygen master > "$DATA/dev-master.key" 2>/dev/null
[ -s "$DATA/dev-admin.token" ] || printf 'mta_dev_%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$DATA/dev-admin.token"
MEMTRACE_ADMIN_TOKEN="$(cat "$DATA/dev-admin.token")"
export MEMTRACE_ADMIN_TOKEN MEMTRACE_CONTROL_PLANE_URL="$SERVER"

if running; then
    echo "==> control plane already running (pid $(cat "$PIDFILE"))" >&2
else
    echo "==> starting the control plane on $LISTEN (SQLite: $DATA/memtrace.db, log: $LOG)" >&2
    MEMTRACE_MASTER_KEY="$(cat "$DATA/dev-master.key")" \
    MEMTRACE_BOOTSTRAP_ADMIN_TOKEN="$MEMTRACE_ADMIN_TOKEN" \
    MEMTRACE_CONTROL_PLANE_LISTEN="$LISTEN" \
    MEMTRACE_AUTH_DB_PATH="$DATA/memtrace.db" \
        setsid "$CP" >>"$LOG" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    for _ in $(seq 1 100); do
        curl -fsS "$SERVER/ready" >/dev/null 2>&1 && break
        if ! running; then
            echo "error: the control plane exited; last log lines:" >&2
            tail -n 20 "$LOG" >&2
            exit 1
        fi
        sleep 0.1
    done
    curl -fsS "$SERVER/ready" >/dev/null || { echo "error: control plane not ready; see $LOG" >&2; exit 1; }
fi

ORG_ID="$("$CTL" org list --output json | python3 -c 'import json,sys; print(next((o["id"] for o in json.load(sys.stdin)["orgs"] if o["name"]=="demo"), ""))')"
if [ -z "$ORG_ID" ]; then
    ORG_ID="$("$CTL" org create demo --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
fi
echo
echo "== org"
"$CTL" org get "$ORG_ID"
echo
echo "== new api key (shown once)"
"$CTL" key create --org "$ORG_ID" --name "demo-$(date +%s)" --scopes read,write
echo
echo "== keys of the org"
"$CTL" key list --org "$ORG_ID"
cat <<MSG

The control plane keeps running (pid $(cat "$PIDFILE")). To use memtracectl:
  export MEMTRACE_CONTROL_PLANE_URL=$SERVER
  export MEMTRACE_ADMIN_TOKEN=\$(cat $DATA/dev-admin.token)
  $CTL org list
Stop it with: scripts/dev.sh stop
MSG
