#!/usr/bin/env bash
# Build (or reuse) the Kubernetes control-plane binaries used by the k8s tests:
#   kube-apiserver, kube-controller-manager  (k8s.io/kubernetes  $K8S_VERSION)
#   etcd                                     (go.etcd.io/etcd/server/v3 $ETCD_VERSION)
#   helm                                     (helm.sh/helm/v3     $HELM_VERSION)
# from the Go module proxy, through the wrapper modules in test/k8s-build/.
# (The node's binaries, kubelet and containerd among them: build-node.sh.)
#
# Output: ${SIXBED4_K8S_CACHE:-$HOME/.cache/sixbed4/k8s}/<K8S_VERSION>/bin/
# Go's module and build caches live under the same root so later runs (and CI
# on this machine) reuse them. Idempotent: when the stamp file says the same
# versions and wrapper modules were built, nothing is done.
#
# Usage: bash test/k8s/build-control-plane.sh [--force]
# Needs only `go` (>= the wrappers' `go` line) and the Go module proxy.
set -euo pipefail
name=build-control-plane
# shellcheck source=build-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/build-lib.sh"
: "${ETCD_VERSION:?}" "${HELM_VERSION:?}"

parse_args "$@"

BINARIES=(kube-apiserver kube-controller-manager etcd helm)
stamp="$bin/.stamp"
wanted="k8s=$K8S_VERSION etcd=$ETCD_VERSION helm=$HELM_VERSION wrappers=$(wrappers_hash kubernetes etcd helm)"

exit_if_built "$stamp" "$wanted" "${BINARIES[@]}"

log "go: $(cd "$wrappers/kubernetes" && go version) (GOTOOLCHAIN=$GOTOOLCHAIN)"
# A cold build needs ~5 GB (module + build caches ~4.6 GB, binaries ~280 MB).
free_kb="$(df -Pk "$cache" | awk 'NR==2 {print $4}')"
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((6 * 1024 * 1024)) ]; then
  log "WARNING: only $((free_kb / 1024)) MiB free under $cache; a cold build needs about 5 GiB"
fi
log "cache root: $cache"
log "building into $bin: $wanted"
rm -f "$stamp"
new_staging

# Helm's Makefile sets these (version shown by `helm version`, default
# Capabilities.KubeVersion for `helm template` without a cluster).
helm_client_minor="$(sed -n -E 's#^\s*k8s.io/client-go v0\.([0-9]+)\..*#\1#p' "$wrappers/helm/go.mod" | head -1)"
helm_x="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
if [ -n "$helm_client_minor" ]; then
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    helm_x="$helm_x -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_client_minor"
  done
fi

start=$(date +%s)
log "downloading modules (Go module proxy; cached in $GOMODCACHE) ..."
for d in kubernetes etcd helm; do
  ( cd "$wrappers/$d" && go mod download ) || die "go mod download failed in test/k8s-build/$d (is the Go module proxy reachable? GOPROXY=$(go env GOPROXY))"
done
k8s_x="$(k8s_version_ldflags)"
build etcd go.etcd.io/etcd/server/v3 etcd ""
build kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$k8s_x"
build kubernetes k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$k8s_x"
build helm helm.sh/helm/v3/cmd/helm helm "$helm_x"

# Smoke-check, then publish.
"$staging/etcd" --version >/dev/null || die "built etcd does not run"
"$staging/kube-apiserver" --version >/dev/null || die "built kube-apiserver does not run"
"$staging/helm" version --short >/dev/null || die "built helm does not run"
publish "${BINARIES[@]}"
printf '%s\n' "$wanted" > "$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"

log "done in $(( $(date +%s) - start ))s"
log "versions: $("$bin/kube-apiserver" --version) / etcd $("$bin/etcd" --version | sed -n 's/^etcd Version: //p') / helm $("$bin/helm" version --short)"
log "binaries: $(du -sh "$bin" | cut -f1) in $bin"
log "cache total (binaries + Go module and build caches): $(du -sh "$cache" | cut -f1) in $cache"
