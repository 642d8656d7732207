#!/usr/bin/env bash
# Build the OCI image streams:<version> with buildah; no Docker engine is needed.
#
#   k8s/image/build.sh            (what `make image` runs)
#
# The image: Debian bookworm (minbase + python3 3.11), the streams wheel with its
# dependencies in the venv /opt/streams, user streams (uid/gid 10001), entrypoint
# `streams`, working directory /var/lib/streams. Steps and why:
#   1. `pip wheel` builds streams (schemas inside) and its dependencies on this host,
#      from the package index pip is configured with; the image needs no index.
#   2. The Debian root filesystem comes from debootstrap once, then from a tarball
#      cached in $CACHE (a minute saved per build); delete it to refresh Debian.
#   3. The venv is created and the wheels installed inside the image by
#      `buildah run --isolation chroot` (works without user namespaces).
#   4. The image carries the label io.streams.build, a hash of every wheel, the Debian
#      package list and this script: when the image under $TAG has the same hash, the
#      build stops early ("up to date").
# Environment: IMAGE_TAG (default streams:<version>), STORAGE_DRIVER (default vfs),
# DEBIAN_MIRROR, STREAMS_IMAGE_CACHE (default .streams/image), PYTHON.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
CACHE=${STREAMS_IMAGE_CACHE:-$ROOT/.streams/image}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
APP_UID=10001
# vfs needs no overlay support from the kernel (works inside containers and CI runners);
# buildah reads the driver from here.
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}

# The dependencies' binary wheels are built for the Python that runs pip: it must be
# the image's (Debian bookworm's CPython 3.11).
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "image: $PY is not CPython 3.11 (the image's Python); set PYTHON" >&2
  exit 2
fi

VERSION=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")
TAG=${IMAGE_TAG:-streams:$VERSION}
START=$SECONDS
step() { printf 'image: %-40s (%ds)\n' "$1" $((SECONDS - START)); }

mkdir -p "$CACHE"
# One build at a time per cache directory (a test and `make image` may overlap).
exec 9>"$CACHE/.lock"
flock 9

# 1. The wheels. The streams wheel is reproducible (hatch pins file dates), so its
#    hash changes only with its content.
rm -rf "$CACHE/dist" "$CACHE/wheels"
mkdir -p "$CACHE/dist" "$CACHE/wheels"
"$PY" -m pip wheel --no-deps -q -w "$CACHE/dist" "$ROOT" 2> >(grep -v 'is ignored' >&2)
WHEEL=$(ls "$CACHE"/dist/streams-*.whl)
"$PY" -m pip wheel -q -w "$CACHE/wheels" "$WHEEL" 2> >(grep -v 'is ignored' >&2)
# What the image is made of: the wheels, the Debian packages and this script's steps.
BUILD_KEY=$( (cd "$CACHE/wheels" && sha256sum ./*.whl; echo "$PACKAGES"; cat "$HERE/build.sh") |
  sha256sum | cut -c1-16)
step "wheels built ($(ls "$CACHE/wheels" | wc -l) files)"

if [ "$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "io.streams.build"}}' "$TAG" 2>/dev/null || true)" = "$BUILD_KEY" ]; then
  step "$TAG is up to date"
  exit 0
fi

# 2. The Debian root filesystem, cached as a tarball.
ROOTFS_TAR=$CACHE/rootfs-$SUITE-${PACKAGES//,/-}.tar
if [ ! -s "$ROOTFS_TAR" ]; then
  tmp=$CACHE/rootfs.tmp
  rm -rf "$tmp"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # Not needed at run time: package caches and lists, documentation, translations.
  rm -rf "$tmp"/var/cache/apt/* "$tmp"/var/lib/apt/lists/* "$tmp"/usr/share/doc/* \
    "$tmp"/usr/share/man/* "$tmp"/usr/share/info/* "$tmp"/usr/share/locale/*
  tar -C "$tmp" --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -cf "$ROOTFS_TAR.part" .
  mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
  rm -rf "$tmp"
  step "debootstrap $SUITE"
fi

# 3. The container: root filesystem, venv with the wheels, the user.
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$(buildah mount "$ctr")
tar -C "$mnt" -xf "$ROOTFS_TAR"
cp -r "$CACHE/wheels" "$mnt/tmp/wheels"
step "root filesystem unpacked"
buildah run --isolation chroot "$ctr" -- /bin/sh -ec "
  python3 -m venv /opt/streams
  /opt/streams/bin/pip install --quiet --no-index --no-cache-dir --disable-pip-version-check \
    --find-links /tmp/wheels streams
  rm -rf /tmp/wheels
  groupadd --gid $APP_UID streams
  useradd --uid $APP_UID --gid $APP_UID --home-dir /var/lib/streams --create-home \
    --shell /usr/sbin/nologin streams
"
step "streams installed in /opt/streams"
buildah umount "$ctr" >/dev/null

# 4. Configuration and commit.
buildah config \
  --user "$APP_UID:$APP_UID" \
  --workingdir /var/lib/streams \
  --entrypoint '["streams"]' \
  --cmd '["--help"]' \
  --env PATH=/opt/streams/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env PYTHONUNBUFFERED=1 \
  --env STREAMS_STATE_DIR=/var/lib/streams \
  --port 6066 --port 9300 --port 9308 \
  --label org.opencontainers.image.title=streams \
  --label org.opencontainers.image.version="$VERSION" \
  --label io.streams.build="$BUILD_KEY" \
  "$ctr"
previous=$(buildah inspect --type image --format '{{.FromImageID}}' "$TAG" 2>/dev/null || true)
buildah commit --quiet --rm "$ctr" "$TAG" >/dev/null
trap - EXIT
# The image the tag named before is garbage now (vfs keeps a full copy of each).
[ -z "$previous" ] || buildah rmi "$previous" >/dev/null 2>&1 || true
step "committed $TAG"
