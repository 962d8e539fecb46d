# sixbed4: one image for the router, the peer, the host agent and the operator.
#
# Two ways to build it; both give the same image layout (/app, node, iproute2):
#
# 1. From the official Node.js 20 images (Debian bookworm), pinned by exact tag
#    below; needs Docker Hub (and the npm registry and Debian's mirror):
#
#      docker build --network host \
#        --build-arg VERSION="$(node -p "require('./package.json').version")" \
#        --build-arg REVISION="$(git rev-parse HEAD)" -t sixbed4:0.1.0 .
#
#    To pin by digest as well, append it to the tag, e.g.
#      --build-arg BASE_IMAGE=node:20.20.2-bookworm-slim@sha256:<digest>
#    (the digest: `docker buildx imagetools inspect node:20.20.2-bookworm-slim`,
#    or after a pull `docker image inspect -f '{{index .RepoDigests 0}}' IMAGE`).
#
# 2. With no registry at all, from base images made locally by
#    test/docker/base-image.sh (Debian bookworm via debootstrap + this host's
#    Node.js 20): test/docker/build-image.sh [TAG] does that and passes
#      --build-arg BUILD_IMAGE=sixbed4-build:bookworm --build-arg BASE_IMAGE=sixbed4-base:bookworm
#    and VERSION (package.json) and REVISION (git) itself. The tests build so.
#
# VERSION and REVISION become the OCI labels org.opencontainers.image.version
# and .revision; REVISION is also baked into the build (what `sixbed4
# --version` prints: .git is not in the build context). SOURCE sets
# org.opencontainers.image.source.
#
# Privileges: the agent/router must run as root inside the container (it
# creates a TUN device, sets addresses and routes), but it needs no
# --privileged: only CAP_NET_ADMIN and CAP_NET_RAW and the /dev/net/tun device:
#
#   docker run --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW \
#     --device /dev/net/tun --network host sixbed4 router --prefix P --listen IPV4
#
# Build stage: Node.js 20 with npm, make, g++ and python3 (node-gyp), the
# Node headers, and clang with libbpf's headers (the BPF programs). Runtime:
# Node.js 20 (iproute2 is added when missing).
ARG BUILD_IMAGE=node:20.20.2-bookworm
ARG BASE_IMAGE=node:20.20.2-bookworm-slim

# --- build: TypeScript and the native addon ----------------------------------
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
ENV npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
# Native addons (ours and raw-socket) build against the headers of the node
# that runs them, so nothing is downloaded by node-gyp: /usr/local/include/node
# in the official images, /usr/include/node in the local build image (which
# also sets npm_config_nodedir=/usr; that wins over this file).
RUN prefix="$(node -p 'require("path").resolve(process.execPath, "../..")')" \
 && for d in "$prefix" /usr; do if [ -f "$d/include/node/node.h" ]; then echo "nodedir=$d" >.npmrc; break; fi; done \
 && cat .npmrc
# clang and libbpf's headers compile the fast path's BPF programs (npm run
# build:bpf); the local build image has them, the official one gets them from
# Debian's mirror. The runtime needs neither: the agent loads the object with
# plain bpf(2) calls.
RUN { command -v clang >/dev/null && [ -f /usr/include/bpf/bpf_helpers.h ]; } || { apt-get update -qq \
   && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang libbpf-dev >/dev/null \
   && rm -rf /var/lib/apt/lists/*; } \
 && clang --version | head -n1
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
# The sources: what .dockerignore lets through (binding.gyp, tsconfig.json,
# lib/, kube/, agent/, operator/, lab/, cli/, crds/).
COPY . .
# Then only what runs: production dependencies, without type declarations,
# source maps and documentation (about 40 MB of @kubernetes/client-node).
# `npm run build` writes dist/lib/build-info.json with REVISION.
ARG REVISION=unknown
RUN SIXBED4_REVISION="$REVISION" npm run build \
 && npm prune --omit=dev --no-audit --no-fund \
 && find dist -name '*.map' -delete \
 && find node_modules -type f \( -name '*.d.ts' -o -name '*.d.cts' -o -name '*.d.mts' -o -name '*.map' -o -name '*.md' \) -delete \
 && rm -f node_modules/.package-lock.json \
 && mkdir -p crds

# --- runtime: node + iproute2 + the compiled agent ---------------------------
FROM ${BASE_IMAGE}
# The agent and the router run `ip`, the agent `nft` (slices' inbound filter):
# the local base has both, node:*-slim neither (then they come from Debian's
# mirror).
RUN { command -v ip >/dev/null && command -v nft >/dev/null; } || { apt-get update -qq \
   && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 nftables >/dev/null \
   && rm -rf /var/lib/apt/lists/*; } \
 && ip -V && nft --version && node --version
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/build/Release/sixbed4_native.node /src/build/Release/sixbed4-cni ./build/Release/
COPY --from=build /src/dist ./dist
COPY --from=build /src/crds ./crds
# Metrics (--metrics H:P, e.g. 0.0.0.0:9464) and the 6bed4 UDP port.
EXPOSE 9464 25790/udp
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["--help"]
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=unknown
# A VERSION given must be the package's.
RUN [ "$VERSION" = unknown ] || [ "$VERSION" = "$(node -p 'require("/app/package.json").version')" ] \
 || { echo "VERSION=$VERSION but package.json says $(node -p 'require("/app/package.json").version')" >&2; exit 1; }
LABEL org.opencontainers.image.title="sixbed4" \
      org.opencontainers.image.description="6bed4 router, peer, host networking, Kubernetes operator and node agent" \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.licenses="BSD-2-Clause"
