#!/usr/bin/env bash
# Builds the two local base images the Dockerfile starts from, without any
# registry (none is reachable): a Debian bookworm root file system made with
# debootstrap, imported with `docker import`, plus this host's Node.js.
#
#   sixbed4-base:bookworm   minbase + iproute2 + nftables + ca-certificates + node   (runtime)
#   sixbed4-build:bookworm  the above + make, g++, python3 (node-gyp), npm and
#                           the Node headers in /usr/include/node           (build stage)
#
# Idempotent: an image whose sixbed4.base label matches what this script would
# build is kept; the debootstrap tarball is cached under
# ~/.cache/sixbed4/docker/ keyed by ROOTFS_VERSION. Needs root, dockerd running
# (see dockerd.sh), and Debian's package mirror.
#
# Env: BASE_IMAGE, BUILD_IMAGE (names), DEBIAN_MIRROR, SIXBED4_DOCKER_CACHE,
#      NODE_BIN (default: the node on PATH), FORCE=1 to rebuild everything.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BASE_IMAGE="${BASE_IMAGE:-sixbed4-base:bookworm}"
BUILD_IMAGE="${BUILD_IMAGE:-sixbed4-build:bookworm}"
SUITE=bookworm
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Bump when the root file system recipe below changes.
ROOTFS_VERSION="${SUITE}-minbase-2"
ROOTFS_PACKAGES=iproute2,nftables,ca-certificates
BUILD_PACKAGES="make g++ python3 clang libbpf-dev"

NODE_BIN="${NODE_BIN:-$(command -v node)}"
NODE_BIN="$(readlink -f "$NODE_BIN")"
NODE_VERSION="$("$NODE_BIN" --version)"
NODE_PREFIX="$(dirname "$(dirname "$NODE_BIN")")"    # /usr for /usr/bin/node
NODE_HEADERS="$NODE_PREFIX/include/node"
NPM_DIR="$NODE_PREFIX/lib/node_modules/npm"
SCRIPT_SUM="$(sha256sum "$0" | cut -c1-12)"
BASE_KEY="rootfs=$ROOTFS_VERSION node=$NODE_VERSION script=$SCRIPT_SUM"

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, docker)"
"$DOCKER" info >/dev/null 2>&1 || die "no Docker Engine answers (run test/docker/dockerd.sh)"
[[ -f "$NODE_HEADERS/node.h" ]] || die "no Node headers at $NODE_HEADERS"
[[ -f "$NPM_DIR/bin/npm-cli.js" ]] || die "no npm at $NPM_DIR"
# The node binary is copied into Debian $SUITE: it must need nothing newer.
ldd "$NODE_BIN" >/dev/null || die "$NODE_BIN is not a dynamically linked executable"

mkdir -p "$SIXBED4_DOCKER_CACHE"
WORK="$(mktemp -d "$SIXBED4_DOCKER_CACHE/work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

OLD_BASE_ID="$("$DOCKER" image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)"
OLD_BUILD_ID="$("$DOCKER" image inspect -f '{{.Id}}' "$BUILD_IMAGE" 2>/dev/null || true)"

# --- 1. root file system tarball (cached) -----------------------------------
ROOTFS_TAR="$SIXBED4_DOCKER_CACHE/rootfs-$ROOTFS_VERSION.tar"
if [[ -f "$ROOTFS_TAR" && "${FORCE:-0}" != 1 ]]; then
  log "rootfs: cached $ROOTFS_TAR"
else
  apt_ensure debootstrap
  start=$SECONDS
  log "rootfs: debootstrap --variant=minbase $SUITE ($DEBIAN_MIRROR), takes a minute or two"
  dir="$WORK/rootfs"
  debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" "$SUITE" "$dir" "$DEBIAN_MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -n 40 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  # Slim it the way Debian's own -slim images are: no docs, man pages or
  # translations now or in later apt installs; no package lists or caches.
  cat >"$dir/etc/dpkg/dpkg.cfg.d/sixbed4-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
CFG
  cat >"$dir/etc/apt/apt.conf.d/sixbed4-slim" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
CFG
  find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$dir"/usr/share/{man,info,groff,lintian,linda,locale}/* \
         "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
         "$dir"/var/cache/debconf/*-old "$dir"/var/lib/dpkg/*-old "$dir"/var/log/* "$dir"/tmp/* \
         "$dir"/dev/*
  # Same sources the host uses for bookworm (only Debian's mirror is reachable).
  cat >"$dir/etc/apt/sources.list" <<SRC
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security $SUITE-security main
SRC
  : >"$dir/etc/resolv.conf"; : >"$dir/etc/hostname"
  tar --numeric-owner -C "$dir" -cf "$ROOTFS_TAR.tmp" .
  mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  rm -rf "$dir"
  log "rootfs: $(du -h "$ROOTFS_TAR" | cut -f1) in $((SECONDS - start)) s"
fi

# --- 2. runtime base: rootfs + node ------------------------------------------
if [[ "${FORCE:-0}" != 1 && "$(image_label "$BASE_IMAGE" sixbed4.base)" == "$BASE_KEY" ]]; then
  log "$BASE_IMAGE: up to date ($BASE_KEY)"
else
  start=$SECONDS
  ROOTFS_IMAGE="sixbed4-rootfs:$ROOTFS_VERSION"
  if ! image_exists "$ROOTFS_IMAGE" || [[ "${FORCE:-0}" == 1 ]]; then
    log "$ROOTFS_IMAGE: docker import"
    "$DOCKER" import --change 'CMD ["/bin/bash"]' "$ROOTFS_TAR" "$ROOTFS_IMAGE" >/dev/null
  fi
  ctx="$WORK/base"; mkdir -p "$ctx"
  # The host's node carries debug info and a symbol table (~12 MB); addons
  # resolve node's N-API functions through the dynamic symbols, which stay.
  if command -v strip >/dev/null; then strip --strip-all -o "$ctx/node" "$NODE_BIN"; else cp "$NODE_BIN" "$ctx/node"; fi
  cat >"$ctx/Dockerfile" <<DF
FROM $ROOTFS_IMAGE
COPY node /usr/local/bin/node
RUN node --version && ip -V
ENV LANG=C.UTF-8
LABEL sixbed4.base="$BASE_KEY"
CMD ["/bin/bash"]
DF
  log "$BASE_IMAGE: adding node $NODE_VERSION ($(du -h "$ctx/node" | cut -f1))"
  "$DOCKER" build --network none -q -t "$BASE_IMAGE" "$ctx" >/dev/null
  log "$BASE_IMAGE: built in $((SECONDS - start)) s"
fi

# --- 3. build image: base + compilers, npm, headers --------------------------
BASE_ID="$("$DOCKER" image inspect -f '{{.Id}}' "$BASE_IMAGE")"
BUILD_KEY="$BASE_KEY base=${BASE_ID#sha256:}"
BUILD_KEY="${BUILD_KEY:0:200}"
if [[ "${FORCE:-0}" != 1 && "$(image_label "$BUILD_IMAGE" sixbed4.build)" == "$BUILD_KEY" ]]; then
  log "$BUILD_IMAGE: up to date"
else
  start=$SECONDS
  ctx="$WORK/build"; mkdir -p "$ctx/certs"
  cp -a "$NODE_HEADERS" "$ctx/include-node"
  cp -a "$NPM_DIR" "$ctx/npm"
  # Local CAs this host trusts (e.g. an HTTPS proxy in front of the npm
  # registry) are trusted by the build stage too; the runtime image gets none.
  cp /usr/local/share/ca-certificates/*.crt "$ctx/certs/" 2>/dev/null || true
  cat >"$ctx/Dockerfile" <<DF
FROM $BASE_IMAGE
RUN apt-get update -qq && apt-get install -y -qq $BUILD_PACKAGES >/dev/null && rm -rf /var/lib/apt/lists/*
COPY include-node /usr/include/node
COPY npm /usr/local/lib/node_modules/npm
COPY certs /usr/local/share/ca-certificates/
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && update-ca-certificates >/dev/null \\
 && printf 'cafile=/etc/ssl/certs/ca-certificates.crt\nnodedir=/usr\naudit=false\nfund=false\nupdate-notifier=false\n' >/usr/local/etc/npmrc \\
 && npm --version && g++ --version | head -n1
ENV npm_config_nodedir=/usr
LABEL sixbed4.build="$BUILD_KEY"
DF
  log "$BUILD_IMAGE: apt-get install $BUILD_PACKAGES (host network for Debian's mirror)"
  "$DOCKER" build --network host -q -t "$BUILD_IMAGE" "$ctx" >/dev/null
  log "$BUILD_IMAGE: built in $((SECONDS - start)) s"
fi
# Images these names had before a rebuild (children first).
for old in "$OLD_BUILD_ID" "$OLD_BASE_ID"; do
  if [[ -n "$old" ]] && ! "$DOCKER" image inspect -f '{{.Id}}' "$BASE_IMAGE" "$BUILD_IMAGE" | grep -qx "$old"; then
    "$DOCKER" rmi "$old" >/dev/null 2>&1 || true
  fi
done
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^(${BASE_IMAGE}|${BUILD_IMAGE}) " >&2 || true
