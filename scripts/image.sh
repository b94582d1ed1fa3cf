#!/usr/bin/env bash
# Build memtrace's container image (deploy/docker/Dockerfile): one image with
# memtrace-control-plane, memtrace-worker and memtracectl, running as uid
# 65532 on a read-only root filesystem.
#
#   scripts/image.sh [--tag NAME] [--prebuilt DIR] [--base IMAGE]
#                    [--local-base] [--rust-image IMAGE]
#
#   --tag NAME         image name (default memtrace:<version>, version from Cargo.toml)
#   --prebuilt DIR     package the three release binaries found in DIR (e.g.
#                      target/release after `cargo build --release -p
#                      memtrace-control-plane -p memtrace-data-plane -p
#                      memtrace-cli`) instead of compiling in the `build`
#                      stage. They must be built for a glibc no newer than
#                      the base image's (Debian 12 "bookworm").
#   --base IMAGE       Debian image of the `rootfs` stage (default debian:bookworm-slim)
#   --local-base       make that Debian image here instead of pulling it:
#                      debootstrap --variant=minbase bookworm from the apt
#                      mirror, imported as memtrace-local-base:bookworm and
#                      reused by later runs (delete it to refresh it)
#   --rust-image IMAGE Rust toolchain image of the `build` stage (default rust:1-bookworm)
#
# Needs: a running Docker engine that builds with BuildKit — Docker 23 or
# newer with the buildx plugin, or an older client (e.g. Debian 12's
# docker.io 20.10, /usr/bin/docker) where DOCKER_BUILDKIT=1 selects the
# engine's built-in BuildKit; set DOCKER=/path/to/docker to choose the
# client. Without --prebuilt and --local-base the engine pulls
# rust:1-bookworm and debian:bookworm-slim (and the build stage reaches
# crates.io). --local-base needs root, debootstrap and the Debian mirror.
# The build log (--progress=plain) goes to stderr; the image name is the
# last line of stdout.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dockerfile="$repo/deploy/docker/Dockerfile"

fail() {
    echo "image.sh: $*" >&2
    exit 1
}

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)"
tag="memtrace:${version:-dev}"
prebuilt=""
base="debian:bookworm-slim"
local_base=0
rust_image="rust:1-bookworm"
while [ "$#" -gt 0 ]; do
    case "$1" in
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --prebuilt) prebuilt="${2:?--prebuilt needs a directory}"; shift 2 ;;
    --base) base="${2:?--base needs an image}"; shift 2 ;;
    --local-base) local_base=1; shift ;;
    --rust-image) rust_image="${2:?--rust-image needs an image}"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument: $1 (see --help)" ;;
    esac
done

# A client that builds with BuildKit: buildx if present, else a pre-23
# client with DOCKER_BUILDKIT=1 (newer clients without buildx refuse that).
docker="${DOCKER:-docker}"
client_major() { "$1" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1; }
build_cmd=()
if ! command -v "$docker" >/dev/null; then
    fail "$docker not found: install Docker (Debian: apt-get install docker.io)"
fi
if "$docker" buildx version >/dev/null 2>&1; then
    build_cmd=("$docker" buildx build --load)
else
    for candidate in "$docker" /usr/bin/docker; do
        major="$(client_major "$candidate" || true)"
        if [ -n "$major" ] && [ "$major" -lt 23 ]; then
            docker="$candidate"
            build_cmd=(env DOCKER_BUILDKIT=1 "$candidate" build)
            break
        fi
    done
fi
[ "${#build_cmd[@]}" -gt 0 ] ||
    fail "no BuildKit-capable docker client: install the buildx plugin, or set DOCKER to a client older than 23 (Debian 12's docker.io ships /usr/bin/docker 20.10)"
"$docker" info >/dev/null 2>&1 || fail "the Docker engine does not answer ($docker info failed): start dockerd"

if [ "$local_base" = 1 ]; then
    base="memtrace-local-base:bookworm"
    if "$docker" image inspect "$base" >/dev/null 2>&1; then
        echo "image.sh: reusing $base" >&2
    else
        [ "${EUID:-$(id -u)}" -eq 0 ] || fail "--local-base runs debootstrap, which needs root"
        command -v debootstrap >/dev/null || fail "debootstrap not found (Debian: apt-get install debootstrap)"
        rootfs="$(mktemp -d)"
        trap 'rm -rf "$rootfs"' EXIT
        echo "image.sh: debootstrap --variant=minbase bookworm (for $base)" >&2
        # ca-certificates: the runtime's CA bundle without a network in the build
        debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" \
            http://deb.debian.org/debian >&2 || fail "debootstrap failed (output above)"
        tar -C "$rootfs" -c . | "$docker" import - "$base" >&2 || fail "docker import failed"
        rm -rf "$rootfs"
        trap - EXIT
    fi
fi

revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
args=(
    -f "$dockerfile" --target runtime --progress=plain -t "$tag"
    --build-arg "BASE_IMAGE=$base" --build-arg "RUST_IMAGE=$rust_image"
    --build-arg "VERSION=${version:-unknown}" --build-arg "REVISION=$revision"
    --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
)
if [ -n "$prebuilt" ]; then
    # The context is a directory with just the three binaries: the
    # `prebuilt` stage copies them from its root.
    context="$(mktemp -d)"
    trap 'rm -rf "$context"' EXIT
    for bin in memtrace-control-plane memtrace-worker memtracectl; do
        [ -x "$prebuilt/$bin" ] || fail "$prebuilt/$bin missing: cargo build --release -p memtrace-control-plane -p memtrace-data-plane -p memtrace-cli"
        cp "$prebuilt/$bin" "$context/$bin"
    done
    "${build_cmd[@]}" "${args[@]}" --build-arg BINARIES=prebuilt "$context" >&2
else
    "${build_cmd[@]}" "${args[@]}" --build-arg BINARIES=build "$repo" >&2
fi
echo "$tag"
