# sixbed4: one image for the router, the peer, the host agent and the operator.
#
# No registry is needed: the two base images are made locally by
# test/docker/base-image.sh (Debian bookworm via debootstrap + this host's
# Node.js 20, which bookworm does not package). Build with the host network,
# because `npm ci` fetches from the npm registry:
#
#   test/docker/base-image.sh
#   docker build --network host -t sixbed4 .
#
# or simply test/docker/build-image.sh [TAG].
#
# Privileges: the agent/router must run as root inside the container (it
# creates a TUN device, sets addresses and routes), but it needs no
# --privileged: only CAP_NET_ADMIN and CAP_NET_RAW and the /dev/net/tun device:
#
#   docker run --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW \
#     --device /dev/net/tun --network host sixbed4 router --prefix P --listen IPV4
ARG BUILD_IMAGE=sixbed4-build:bookworm
ARG BASE_IMAGE=sixbed4-base:bookworm

# --- build: TypeScript and the native addon ----------------------------------
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# Native addons (ours and raw-socket) build against the headers in
# /usr/include/node: nothing is downloaded by node-gyp.
ENV npm_config_nodedir=/usr npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
# The sources: what .dockerignore lets through (binding.gyp, tsconfig.json,
# agent/, operator/, crds/).
COPY . .
# Then only what runs: production dependencies, without type declarations,
# source maps and documentation (about 40 MB of @kubernetes/client-node).
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund \
 && find dist -name '*.map' -delete \
 && find node_modules -type f \( -name '*.d.ts' -o -name '*.d.cts' -o -name '*.d.mts' -o -name '*.map' -o -name '*.md' \) -delete \
 && rm -f node_modules/.package-lock.json \
 && mkdir -p crds

# --- runtime: node + iproute2 + the compiled agent ---------------------------
FROM ${BASE_IMAGE}
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/build/Release/sixbed4_native.node ./build/Release/
COPY --from=build /src/dist ./dist
COPY --from=build /src/crds ./crds
# Metrics (--metrics H:P, e.g. 0.0.0.0:9464) and the 6bed4 UDP port.
EXPOSE 9464 25790/udp
ENTRYPOINT ["node", "/app/dist/agent/cli/main.js"]
CMD ["--help"]
