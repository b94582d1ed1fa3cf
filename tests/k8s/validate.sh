#!/usr/bin/env bash
# Validates the Kubernetes manifests as CI does (scripts/test.sh runs it):
# for each overlay under deploy/kubernetes/overlays, `kubectl kustomize`
# renders it, kubernetes-validate checks the output against the API schemas
# (strict: unknown fields fail) of the oldest and the newest Kubernetes
# version supported, checkov runs every Kubernetes check but the justified
# skips in deploy/kubernetes/.checkov.yaml, and check_manifests.py makes the
# structural checks the two tools do not.
#
# The tools run from a venv cached under ${CARGO_TARGET_DIR:-target}/k8s-venv/
# <key> (key: hash of tests/k8s/requirements.txt and the interpreter), made
# with pip from PyPI on first use; checkov and kubernetes-validate run in an
# empty network namespace (`unshare --net`, so root), so nothing they do
# leaves the machine. Anything missing is an error, never a skip.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
requirements="$here/requirements.txt"
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
cache="$target/k8s-venv"
# Oldest: lifecycle.preStop.sleep (the hooks' only way to wait without a
# shell in the image) is on by default from 1.30.
versions=(1.30.0 1.37.0)

fail() {
    echo "k8s validate: $*" >&2
    exit 1
}

started=$SECONDS
command -v kubectl >/dev/null || fail "kubectl not found (it renders the overlays with its built-in kustomize)"
command -v unshare >/dev/null || fail "unshare not found (Debian: util-linux)"
command -v python3 >/dev/null || fail "python3 not found; scripts/setup.sh installs it"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 ||
    fail "python3 cannot create virtualenvs; install python3-venv (scripts/setup.sh does, as root)"
unshare --net true 2>/dev/null || fail "unshare --net failed: run as root"

version="$(python3 -c 'import sys; print(sys.executable, sys.version)')"
key="$({
    cat "$requirements"
    printf '%s\n' "$version"
} | sha256sum | cut -c1-16)"
venv="$cache/$key"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 900 9 || fail "timed out waiting for another run to finish building $cache"
if [ ! -f "$venv/.memtrace-complete" ]; then
    rm -rf "$venv"
    echo "k8s validate: creating $venv (pip install -r tests/k8s/requirements.txt)" >&2
    python3 -m venv "$venv" >&2 || fail "python3 -m venv $venv failed"
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
        --timeout 60 --retries 3 -q -r "$requirements" >&2 || {
        rm -rf "$venv"
        fail "pip install -r $requirements failed (output above)"
    }
    "$venv/bin/kubernetes-validate" --version >/dev/null || fail "kubernetes-validate does not run"
    "$venv/bin/checkov" --version >/dev/null || fail "checkov does not run"
    touch "$venv/.memtrace-complete"
    for old in "$cache"/*/; do
        [ "${old%/}" = "$venv" ] || rm -rf "${old%/}"
    done
fi
echo "k8s validate: tools ready after $((SECONDS - started)) s" >&2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
overlays=()
for dir in "$repo"/deploy/kubernetes/overlays/*/; do
    overlays+=("$(basename "$dir")")
done
[ "${#overlays[@]}" -ge 2 ] || fail "expected the overlays single-node and ha, found: ${overlays[*]}"

for overlay in "${overlays[@]}"; do
    rendered="$work/$overlay.yaml"
    kubectl kustomize "$repo/deploy/kubernetes/overlays/$overlay" >"$rendered" ||
        fail "$overlay: kubectl kustomize failed"
    echo "k8s validate: $overlay: rendered $(grep -c '^kind:' "$rendered") objects" >&2
    for v in "${versions[@]}"; do
        (cd "$work" && unshare --net "$venv/bin/kubernetes-validate" --strict --quiet \
            -k "$v" "$rendered") >&2 || fail "$overlay: kubernetes-validate -k $v failed (above)"
        echo "k8s validate: $overlay: kubernetes-validate --strict -k $v passed" >&2
    done
    (cd "$work" && unshare --net "$venv/bin/checkov" \
        --config-file "$repo/deploy/kubernetes/.checkov.yaml" -f "$rendered") >"$work/checkov.out" 2>&1 || {
        cat "$work/checkov.out" >&2
        fail "$overlay: checkov failed (above)"
    }
    grep -E '^Passed checks' "$work/checkov.out" | sed "s/^/k8s validate: $overlay: checkov: /" >&2
    "$venv/bin/python" "$here/check_manifests.py" "$overlay" "$rendered" >&2 ||
        fail "$overlay: check_manifests.py failed (above)"
done
echo "k8s validate: ${#overlays[@]} overlays passed in $((SECONDS - started)) s" >&2
