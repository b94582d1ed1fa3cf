#!/usr/bin/env bash
# The project's test command (CI runs it via .ci/run): system dependencies,
# formatting, lints, build, then every test in the workspace. Any failure fails
# the script with a non-zero status.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

on_exit() {
    local rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "test.sh: ALL CHECKS PASSED" >&2
    else
        echo "test.sh: FAILED (exit $rc)" >&2
    fi
}
trap on_exit EXIT

step "system dependencies (scripts/setup.sh)"
# Sourced so that it can export PROTOC for prost-build.
# shellcheck source=scripts/setup.sh
. scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build"
cargo build --workspace --all-targets

# The SDK contract test (tests/tests/sdk_contract.rs) runs the pinned PyPI
# memtrace-sdk from a venv cached under target/sdk-venv/, keyed by the hash of
# tests/sdk/requirements.txt; built here (pip from PyPI) so a missing Python or
# a failed install fails this step loudly instead of a test.
step "python sdk venv (tests/sdk/venv.sh)"
bash tests/sdk/venv.sh >/dev/null

if cargo nextest --version >/dev/null 2>&1; then
    step "cargo nextest run"
    cargo nextest run --workspace --no-fail-fast
    # nextest does not run doctests.
    step "cargo test --doc"
    cargo test --workspace --doc
else
    step "cargo test (cargo-nextest not installed)"
    cargo test --workspace --no-fail-fast
fi

# The Kubernetes overlays: rendered with kubectl kustomize, validated with
# kubernetes-validate and checkov (a venv cached under target/k8s-venv/) and
# checked for what those do not cover (tests/k8s/check_manifests.py).
step "kubernetes manifests (tests/k8s/validate.sh)"
t=$SECONDS
timeout 900 bash tests/k8s/validate.sh
echo "test.sh: manifests validated in $((SECONDS - t)) s" >&2

# The container image is built from release binaries (no Rust toolchain
# image can be pulled in CI), then smoke-tested in docker as root
# (tests/image/smoke.sh: installs docker.io/debootstrap if missing, starts
# dockerd if none answers, removes what it started).
step "cargo build --release (the image's binaries)"
t=$SECONDS
cargo build --release -p memtrace-control-plane -p memtrace-data-plane -p memtrace-cli
echo "test.sh: release build in $((SECONDS - t)) s" >&2
step "container image smoke test (tests/image/smoke.sh)"
t=$SECONDS
timeout 900 bash tests/image/smoke.sh
echo "test.sh: image smoke test in $((SECONDS - t)) s" >&2
