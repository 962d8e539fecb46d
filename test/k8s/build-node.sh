#!/usr/bin/env bash
# Build (or reuse) what a real Kubernetes node needs in the node tests:
#   kubelet, kube-scheduler, kubectl   (k8s.io/kubernetes $K8S_VERSION, wrapper test/k8s-build/kubernetes)
#   containerd, containerd-shim-runc-v2, ctr,
#   CNI plugins bridge/host-local/loopback/ptp/portmap, cnitool   (wrapper test/k8s-build/node)
#   runc with seccomp (cgo; needs libseccomp-dev and pkg-config)   (wrapper test/k8s-build/runc)
# from the Go module proxy, into the same cache as build-control-plane.sh:
#   ${SIXBED4_K8S_CACHE:-$HOME/.cache/sixbed4/k8s}/<K8S_VERSION>/bin/ (CNI plugins in bin/cni/)
# Idempotent: when the stamp says the same versions and wrappers were built, nothing is done.
#
# Usage: bash test/k8s/build-node.sh [--force]
set -euo pipefail
name=build-node
# shellcheck source=build-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/build-lib.sh"

parse_args "$@"

CNI_PLUGINS=(bridge host-local loopback ptp portmap)
BINARIES=(kubelet kube-scheduler kubectl containerd containerd-shim-runc-v2 ctr cnitool runc "${CNI_PLUGINS[@]/#/cni/}")
stamp="$bin/.stamp-node"
wanted="k8s=$K8S_VERSION node=$(wrappers_hash kubernetes node runc)"

exit_if_built "$stamp" "$wanted" "${BINARIES[@]}"

command -v pkg-config >/dev/null && pkg-config --exists libseccomp \
  || die "runc needs cgo with libseccomp: apt-get install libseccomp-dev pkg-config"
log "go: $(cd "$wrappers/node" && go version) (GOTOOLCHAIN=$GOTOOLCHAIN)"
log "building into $bin: $wanted"
rm -f "$stamp"
new_staging
mkdir -p "$staging/cni" "$bin/cni"
start=$(date +%s)

log "downloading modules (Go module proxy; cached in $GOMODCACHE) ..."
for d in kubernetes node runc; do
  ( cd "$wrappers/$d" && go mod download ) || die "go mod download failed in test/k8s-build/$d (is the Go module proxy reachable? GOPROXY=$(go env GOPROXY))"
done

k8s_x="$(k8s_version_ldflags)"
build kubernetes k8s.io/kubernetes/cmd/kubelet kubelet "$k8s_x"
build kubernetes k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$k8s_x"
build kubernetes k8s.io/kubernetes/cmd/kubectl kubectl "$k8s_x"

ctrd_version="$(sed -n -E 's#^\s*github.com/containerd/containerd/v2 (v[^ ]+).*#\1#p' "$wrappers/node/go.mod" | head -1)"
ctrd_x="-X github.com/containerd/containerd/v2/version.Version=$ctrd_version"
for c in containerd containerd-shim-runc-v2 ctr; do
  build node "github.com/containerd/containerd/v2/cmd/$c" "$c" "$ctrd_x" -tags no_btrfs
done
build node github.com/containernetworking/cni/cnitool cnitool ""
for p in bridge host-local loopback ptp portmap; do
  case "$p" in host-local) pkg=ipam/host-local ;; portmap) pkg=meta/portmap ;; *) pkg="main/$p" ;; esac
  build node "github.com/containernetworking/plugins/plugins/$pkg" "cni/$p" ""
done

runc_version="$(sed -n -E 's#^require github.com/opencontainers/runc v([^ ]+).*#\1#p' "$wrappers/runc/go.mod")"
CGO_ENABLED=1 build runc github.com/opencontainers/runc runc "-X main.version=$runc_version" -tags seccomp

# Smoke-check, then publish.
"$staging/kubelet" --version >/dev/null || die "built kubelet does not run"
"$staging/containerd" --version >/dev/null || die "built containerd does not run"
"$staging/runc" --version | grep -q seccomp || die "built runc does not run or lacks seccomp"
publish "${BINARIES[@]}"
printf '%s\n' "$wanted" > "$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"

log "done in $(( $(date +%s) - start ))s"
log "versions: $("$bin/kubelet" --version) / $("$bin/containerd" --version | awk '{print $3}') / runc $("$bin/runc" --version | head -1 | awk '{print $3}')"
