#!/usr/bin/env bash
# Builds the sixbed4 image from this checkout, with everything local:
#   1. a Docker Engine (dockerd.sh: Debian's docker.io, started if needed),
#   2. the base images (base-image.sh: debootstrap + host node, cached),
#   3. docker build of the repository's Dockerfile (layer cache: npm ci is
#      only rerun when package.json or package-lock.json change).
#
#   build-image.sh [TAG [CONTEXT]]   defaults: sixbed4:dev, this checkout
#
# Build arguments: BASE_IMAGE and BUILD_IMAGE (the local bases, not the
# Dockerfile's official node:20 defaults), VERSION (CONTEXT's package.json),
# REVISION (`git rev-parse HEAD` of CONTEXT, else "unknown") and SOURCE (the
# git remote "origin" as an https URL, when there is one), for the image's OCI
# labels and `sixbed4 --version`.
#
# The build runs with --network host: only `npm ci` (npm registry) and the
# build image's apt-get (Debian mirror) reach out; nothing else does.
# Prints timings and the image size; the last line of stdout is the image id.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$here/lib.sh"

TAG="${1:-sixbed4:dev}"
CONTEXT="${2:-$root}"
BASE_IMAGE="${BASE_IMAGE:-sixbed4-base:bookworm}"
BUILD_IMAGE="${BUILD_IMAGE:-sixbed4-build:bookworm}"
export BASE_IMAGE BUILD_IMAGE
VERSION="$(node -p 'require(process.argv[1]).version' "$CONTEXT/package.json")"
REVISION="$(git -C "$CONTEXT" rev-parse HEAD 2>/dev/null || echo unknown)"
SOURCE="$(git -C "$CONTEXT" remote get-url origin 2>/dev/null || echo unknown)"
# git@host:owner/repo(.git) -> https://host/owner/repo; no credentials in a label
SOURCE="$(sed -E -e 's#^git@([^:]+):#https://\1/#' -e 's#^(https?://)[^/@]*@#\1#' -e 's#\.git$##' <<<"$SOURCE")"

[[ "$TAG" == *:* ]] || TAG="$TAG:latest"
# The build stage is tagged too, so that exactly one copy of it is kept as the
# layer cache (npm ci is the slow step) and older ones can be removed.
STAGE_TAG="$TAG-buildstage"

t0=$SECONDS
"$here/dockerd.sh" >/dev/null
old_id="$("$DOCKER" image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)"
old_stage_id="$("$DOCKER" image inspect -f '{{.Id}}' "$STAGE_TAG" 2>/dev/null || true)"
"$here/base-image.sh"
t1=$SECONDS
log "docker build -t $TAG $CONTEXT (version $VERSION, revision $REVISION)"
blog="$(mktemp /tmp/sixbed4-docker-build.XXXXXX.log)"
args=(--network host --force-rm --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "BUILD_IMAGE=$BUILD_IMAGE"
  --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "SOURCE=$SOURCE")
# Stage 1 alone (tagged), then the whole file, which finds stage 1 in the cache.
if ! { "$DOCKER" build "${args[@]}" --target build -t "$STAGE_TAG" "$CONTEXT" \
       && "$DOCKER" build "${args[@]}" -t "$TAG" "$CONTEXT"; } >"$blog" 2>&1; then
  tail -n 60 "$blog" >&2
  die "docker build failed (full log: $blog)"
fi
t2=$SECONDS
cached=$(grep -c -- '---> Using cache' "$blog" || true)
steps=$(grep -c '^Step ' "$blog" || true)
rm -f "$blog"
# What the tags named before, now untagged: remove them (and their layers that
# nothing else uses), so repeated builds do not pile up images.
for pair in "$TAG=$old_id" "$STAGE_TAG=$old_stage_id"; do
  tag="${pair%%=*}" old="${pair#*=}"
  new="$("$DOCKER" image inspect -f '{{.Id}}' "$tag")"
  if [[ -n "$old" && "$old" != "$new" ]]; then "$DOCKER" rmi "$old" >/dev/null 2>&1 || true; fi
done
size=$("$DOCKER" image inspect -f '{{.Size}}' "$TAG")
log "base images: $((t1 - t0)) s; docker build: $((t2 - t1)) s ($cached of $steps steps cached); total $((t2 - t0)) s"
log "$TAG: $((size / 1000000)) MB"
"$DOCKER" image inspect -f '{{.Id}}' "$TAG"
