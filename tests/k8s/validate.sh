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
VENV_LOG="k8s validate"
# shellcheck source=../lib/venv.sh
. "$here/../lib/venv.sh"
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
unshare --net true 2>/dev/null || fail "unshare --net failed: run as root"

tools_run() {
    "$1/bin/kubernetes-validate" --version >/dev/null && "$1/bin/checkov" --version >/dev/null
}
cached_venv k8s-venv "$here/requirements.txt" python3 tools_run -q
venv="$VENV"
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
