#!/usr/bin/env bash
# Build a local Debian bookworm base image with python3 (+ venv, pip) without pulling from any
# registry: debootstrap a root filesystem from the Debian mirror, then `docker import` it.
# Used by `make image-test` as the BASE_IMAGE build argument of images/Dockerfile.
#
#   images/build-base.sh [TAG]      (default fedprune-base:bookworm; needs root and dockerd)
set -euo pipefail

tag="${1:-fedprune-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$tag" >/dev/null 2>&1 && [ -z "${REBUILD_BASE:-}" ]; then
    echo "base image $tag exists (REBUILD_BASE=1 to rebuild)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install debootstrap" >&2; exit 1; }

root="$(mktemp -d /tmp/fedprune-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT

debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" "$mirror"

# Nothing the image needs at run time: package caches and lists, docs, man pages.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*

tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$tag"
docker image ls "$tag"
