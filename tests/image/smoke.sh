#!/usr/bin/env bash
# Smoke test of the container image (scripts/test.sh runs it in CI, as root):
#
#  1. builds the image with scripts/image.sh from the release binaries the
#     host built (`--prebuilt`: no Rust toolchain image can be pulled here)
#     on a Debian base made locally by debootstrap (`--local-base`, cached in
#     the engine as memtrace-local-base:bookworm), and says which Dockerfile
#     stages it built;
#  2. checks the image: uid 65532, no HEALTHCHECK, OCI labels, no shell and
#     no package manager in its files;
#  3. runs, like a Kubernetes pod sharing one network namespace, etcd (the
#     host's binary in a container of the base image), the control plane and
#     a worker (serving orgs without Arc from its embedded store), each with
#     --read-only and uid 65532, the pod's ports published on 127.0.0.1 only;
#  4. creates an org and a key with memtracectl inside the control-plane
#     container (docker exec), writes memories through the worker container
#     and reads them back, checks /ready and /health, measures both
#     processes' RSS after that light load, and stops the worker with
#     SIGTERM (exit 0 within its drain timeout);
#  5. removes exactly what it started, by id: the containers, the image, and
#     dockerd if it had to start one.
#
# Needs root: installs docker.io, debootstrap and curl with apt-get when
# missing, starts dockerd when no engine answers. Expects the release
# binaries in ${CARGO_TARGET_DIR:-target}/release (cargo build --release -p
# memtrace-control-plane -p memtrace-data-plane -p memtrace-cli) and etcd on
# PATH (scripts/setup.sh installs it). Every failure exits non-zero, with
# the containers' logs; nothing is skipped.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac

started=$SECONDS
passed=0
say() { echo "image smoke: $*" >&2; }
ok() {
    passed=$((passed + 1))
    say "ok: $*"
}
containers=() # ids, in start order
image_id=""
dockerd_pid=""
work="$(mktemp -d)"

dump_logs() {
    local id
    for id in "${containers[@]}"; do
        echo "---- logs of container ${id:0:12} ----" >&2
        docker logs --tail 60 "$id" >&2 2>&1 || true
    done
}
fail() {
    say "FAILED: $*"
    dump_logs
    exit 1
}
cleanup() {
    local rc=$? i
    for ((i = ${#containers[@]} - 1; i >= 0; i--)); do
        docker rm -f "${containers[i]}" >/dev/null 2>&1 || say "could not remove container ${containers[i]}"
    done
    if [ -n "$image_id" ]; then
        docker image rm -f "$image_id" >/dev/null 2>&1 || say "could not remove image $image_id"
    fi
    if [ -n "$dockerd_pid" ]; then
        kill -TERM "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$dockerd_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -0 "$dockerd_pid" 2>/dev/null && say "dockerd $dockerd_pid did not stop"
    fi
    rm -rf "$work"
    if [ "$rc" -eq 0 ]; then
        say "$passed passed, 0 failed in $((SECONDS - started)) s"
    fi
}
trap cleanup EXIT

# --- 0. what it needs -------------------------------------------------------
[ "${EUID:-$(id -u)}" -eq 0 ] || fail "must run as root (docker engine, debootstrap)"
pkgs=()
command -v dockerd >/dev/null || pkgs+=(docker.io)
command -v debootstrap >/dev/null || pkgs+=(debootstrap)
command -v curl >/dev/null || pkgs+=(curl)
if [ "${#pkgs[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null || fail "missing ${pkgs[*]} and no apt-get to install them"
    say "installing ${pkgs[*]} with apt-get"
    apt-get update -qq >&2 || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2 ||
        fail "apt-get install ${pkgs[*]} failed"
fi
for tool in docker dockerd debootstrap curl python3 etcd; do
    command -v "$tool" >/dev/null || fail "$tool not found after setup"
done
for bin in memtrace-control-plane memtrace-worker memtracectl; do
    [ -x "$target/release/$bin" ] ||
        fail "$target/release/$bin missing: cargo build --release -p memtrace-control-plane -p memtrace-data-plane -p memtrace-cli"
done

if ! docker info >/dev/null 2>&1; then
    say "no docker engine answers: starting dockerd"
    dockerd >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$dockerd_pid" 2>/dev/null || { cat "$work/dockerd.log" >&2; fail "dockerd exited"; }
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log" >&2; fail "dockerd did not answer within 60 s"; }
fi
ok "docker engine $(docker version --format '{{.Server.Version}}') answers"

# --- 1. build ---------------------------------------------------------------
tag="memtrace-smoke:$$-$RANDOM"
t0=$SECONDS
bash "$repo/scripts/image.sh" --prebuilt "$target/release" --local-base --tag "$tag" \
    >"$work/image.out" 2>"$work/build.log" || {
    tail -40 "$work/build.log" >&2
    fail "scripts/image.sh failed"
}
image_id="$(docker image inspect -f '{{.Id}}' "$tag")"
built="$(grep -oE '^#[0-9]+ \[[a-z-]+ [0-9]+/[0-9]+\]' "$work/build.log" | sed -E 's/^#[0-9]+ \[([a-z-]+) .*/\1/' | sort -u | tr '\n' ' ')"
say "Dockerfile stages built: ${built}(binaries = prebuilt via --build-arg BINARIES=prebuilt);" \
    "not built: build (Rust toolchain image; the binaries are the host's cargo build --release)." \
    "Image built in $((SECONDS - t0)) s"
for stage in prebuilt rootfs runtime; do
    [[ " $built" == *" $stage "* ]] || fail "stage $stage was not built (built: $built)"
done
[[ " $built" != *" build "* ]] || fail "the build stage ran although the binaries were prebuilt"
ok "image $tag built from stages: $built"

# --- 2. the image -----------------------------------------------------------
[ "$(docker image inspect -f '{{.Config.User}}' "$image_id")" = "65532:65532" ] || fail "image user is not 65532:65532"
ok "image runs as 65532:65532"
[ "$(docker image inspect -f '{{.Config.Healthcheck}}' "$image_id")" = "<nil>" ] || fail "image has a HEALTHCHECK"
ok "no HEALTHCHECK"
for label in title description licenses version revision created; do
    value="$(docker image inspect -f "{{index .Config.Labels \"org.opencontainers.image.$label\"}}" "$image_id")"
    [ -n "$value" ] && [ "$value" != "unknown" ] || fail "label org.opencontainers.image.$label missing"
done
ok "OCI labels set (revision $(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$image_id"))"
probe="$(docker create "$image_id")"
containers+=("$probe")
docker export "$probe" | tar -t >"$work/files" || fail "docker export failed"
docker rm "$probe" >/dev/null
unset 'containers[-1]'
for f in usr/local/bin/memtrace-control-plane usr/local/bin/memtrace-worker usr/local/bin/memtracectl \
    etc/ssl/certs/ca-certificates.crt etc/passwd; do
    grep -qx "$f" "$work/files" || fail "$f not in the image"
done
for f in bin/sh usr/bin/sh bin/bash usr/bin/bash usr/bin/apt-get usr/bin/dpkg bin/busybox; do
    if grep -qx "$f" "$work/files"; then fail "$f is in the image"; fi
done
ok "image holds the three binaries and no shell or package manager ($(wc -l <"$work/files") paths)"
if docker run --rm --entrypoint /bin/sh "$image_id" -c true >/dev/null 2>&1; then
    fail "/bin/sh ran in the image"
fi
ok "no /bin/sh to run"

# --- 3. the pod -------------------------------------------------------------
run() { # detached, read-only, non-root; prints the id
    docker run -d --read-only --user 65532:65532 "$@"
}
keygen() { docker run --rm --read-only --user 65532:65532 "$image_id" memtracectl keygen master 2>>"$work/keygen.err"; }
MEMTRACE_MASTER_KEY="$(keygen)" || fail "memtracectl keygen master failed in the image: $(cat "$work/keygen.err")"
MEMTRACE_FLEET_KEY="$(keygen)"
MEMTRACE_BOOTSTRAP_ADMIN_TOKEN="smoke-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
export MEMTRACE_MASTER_KEY MEMTRACE_FLEET_KEY MEMTRACE_BOOTSTRAP_ADMIN_TOKEN
MEMTRACE_ADMIN_TOKEN="$MEMTRACE_BOOTSTRAP_ADMIN_TOKEN"
ok "keys generated by memtracectl in the image"

# etcd holds the pod's network namespace and publishes its ports on loopback
etcd_id="$(run --tmpfs /var/lib/etcd:uid=65532,gid=65532,mode=0700 \
    -v "$(command -v etcd):/usr/local/bin/etcd:ro" \
    -p 127.0.0.1::9100 -p 127.0.0.1::9200 \
    memtrace-local-base:bookworm /usr/local/bin/etcd --name smoke --data-dir /var/lib/etcd/smoke \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster smoke=http://127.0.0.1:2380)" || fail "etcd container did not start"
containers+=("$etcd_id")
pod=(--network "container:$etcd_id" -e MEMTRACE_ETCD_ENDPOINTS=http://127.0.0.1:2379 -e MEMTRACE_LOG_FORMAT=json)
data_tmpfs=(--tmpfs /var/lib/memtrace/data:uid=65532,gid=65532,mode=0700)

cp_id="$(run "${pod[@]}" "${data_tmpfs[@]}" --tmpfs /tmp \
    -e MEMTRACE_MASTER_KEY -e MEMTRACE_FLEET_KEY -e MEMTRACE_BOOTSTRAP_ADMIN_TOKEN \
    "$image_id" memtrace-control-plane)" || fail "control-plane container did not start"
containers+=("$cp_id")
worker_id="$(run "${pod[@]}" "${data_tmpfs[@]}" \
    -e MEMTRACE_FLEET_KEY -e MEMTRACE_WORKER_ID=smoke-worker \
    -e MEMTRACE_WORKER_EMBEDDED_DIR=/var/lib/memtrace/data/embedded \
    -e MEMTRACE_SERVER_SHUTDOWN_TIMEOUT=10 -e MIMALLOC_ARENA_EAGER_COMMIT=0 \
    "$image_id" memtrace-worker)" || fail "worker container did not start"
containers+=("$worker_id")

published() { # container port -> host port, refusing anything but loopback
    local addr
    addr="$(docker port "$etcd_id" "$1/tcp" | head -n1)"
    [[ "$addr" == 127.0.0.1:* ]] || fail "port $1 published on '$addr', not 127.0.0.1"
    echo "${addr#127.0.0.1:}"
}
cp_port="$(published 9200)"
worker_port="$(published 9100)"
ok "pod ports published on 127.0.0.1 only (control plane :$cp_port, worker :$worker_port)"

for id in "$cp_id" "$worker_id"; do
    [ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$id")" = true ] || fail "${id:0:12} root is writable"
    pid="$(docker inspect -f '{{.State.Pid}}' "$id")"
    uid="$(ps -o uid= -p "$pid" | tr -d ' ')"
    [ "$uid" = 65532 ] || fail "${id:0:12}: process runs as uid '$uid'"
done
ok "control plane and worker run as uid 65532 on a read-only root"

wait_ready() { # name port seconds
    local code=""
    for _ in $(seq 1 $(($3 * 4))); do
        code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2/ready" || true)"
        [ "$code" = 200 ] && return 0
        for id in "${containers[@]}"; do
            [ "$(docker inspect -f '{{.State.Running}}' "$id")" = true ] || fail "container ${id:0:12} exited"
        done
        sleep 0.25
    done
    fail "$1 /ready answered '$code' after $3 s"
}
t0=$SECONDS
wait_ready control-plane "$cp_port" 60
ok "control plane /ready 200 after $((SECONDS - t0)) s"
wait_ready worker "$worker_port" 60
ok "worker /ready 200 after $((SECONDS - t0)) s"

# --- 4. use it --------------------------------------------------------------
# as docs/OPERATIONS.md does it with kubectl exec: the token on stdin, no shell
(umask 077 && printf '%s\n' "$MEMTRACE_ADMIN_TOKEN" >"$work/admin.token")
ctl() { docker exec -i "$cp_id" memtracectl --output json --token-file - "$@" <"$work/admin.token"; }
org_json="$(ctl org create smoke)" || fail "memtracectl org create failed"
org="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$org_json")"
key_json="$(ctl key create --org "$org" --name smoke --scopes read,write)" || fail "memtracectl key create failed"
MEMTRACE_SMOKE_KEY="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])' <<<"$key_json")"
export MEMTRACE_SMOKE_KEY
[ -n "$MEMTRACE_SMOKE_KEY" ] || fail "key create returned no key"
ok "memtracectl in the control-plane container (docker exec, token on stdin) created org $org and a key"

# writes (retried until the key reaches the worker through etcd) and reads
python3 - "$worker_port" >"$work/load.out" <<'EOF' || fail "writing/reading through the worker failed: $(cat "$work/load.out")"
import http.client, json, os, sys, time

port, key = int(sys.argv[1]), os.environ["MEMTRACE_SMOKE_KEY"]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
headers = {"x-api-key": key, "content-type": "application/json"}


def call(method, path, body=None):
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    r = conn.getresponse()
    return r.status, r.read()


deadline = time.monotonic() + 30
while True:
    status, body = call("POST", "/api/v1/memories", {"agent_id": "smoke-agent", "content": "first memory from the image smoke test"})
    if status in (200, 201) or time.monotonic() > deadline:
        break
    time.sleep(0.25)
if status not in (200, 201):
    sys.exit(f"first write: {status} {body[:300]!r}")
first = json.loads(body)["id"]
status, body = call("GET", f"/api/v1/memories/{first}")
if status != 200 or json.loads(body).get("content") != "first memory from the image smoke test":
    sys.exit(f"read back: {status} {body[:300]!r}")
# light load: sequential writes and reads on one connection
n = 300
t0 = time.monotonic()
ids = []
for i in range(n):
    status, body = call("POST", "/api/v1/memories", {"agent_id": f"agent-{i % 10}", "content": f"light load memory {i}", "tags": ["smoke"]})
    if status not in (200, 201):
        sys.exit(f"write {i}: {status} {body[:300]!r}")
    ids.append(json.loads(body)["id"])
for i, mid in enumerate(ids):
    status, body = call("GET", f"/api/v1/memories/{mid}")
    if status != 200 or json.loads(body).get("content") != f"light load memory {i}":
        sys.exit(f"read {i}: {status} {body[:300]!r}")
status, body = call("GET", "/api/v1/memories?agent_id=smoke-agent")
listed = json.loads(body)
if status != 200 or first not in json.dumps(listed):
    sys.exit(f"list: {status} {body[:300]!r}")
print(f"{1 + n} writes and {1 + n} reads in {time.monotonic() - t0:.1f} s")
EOF
ok "worker container: $(cat "$work/load.out") (first write acknowledged and read back by id and by agent)"

docker exec "$worker_id" memtracectl --version >/dev/null 2>&1 ||
    docker exec "$worker_id" memtracectl --help >/dev/null || fail "memtracectl does not run in the worker container"
ok "memtracectl runs in the worker container too"

for port in "$cp_port" "$worker_port"; do
    for path in /ready /health; do
        code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$path")"
        [ "$code" = 200 ] || fail "127.0.0.1:$port$path answered $code after the load"
    done
done
ok "/ready and /health 200 on both after the load"

rss() { # MiB of a container's main process
    local pid kib
    pid="$(docker inspect -f '{{.State.Pid}}' "$1")"
    kib="$(ps -o rss= -p "$pid" | tr -d ' ')"
    echo "$((kib / 1024))"
}
say "RSS after the light load: worker $(rss "$worker_id") MiB, control plane $(rss "$cp_id") MiB"

t0=$SECONDS
docker stop -t 30 "$worker_id" >/dev/null
stopped_in=$((SECONDS - t0))
code="$(docker inspect -f '{{.State.ExitCode}}' "$worker_id")"
[ "$code" = 0 ] || fail "worker exited $code on SIGTERM"
[ "$stopped_in" -le 15 ] || fail "worker took $stopped_in s to stop (drain timeout 10 s)"
ok "worker stopped on SIGTERM with exit 0 in ${stopped_in} s"
