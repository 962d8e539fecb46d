#!/usr/bin/env bash
# Build (or reuse) the Kubernetes control-plane binaries used by the k8s tests:
#   kube-apiserver, kube-controller-manager  (k8s.io/kubernetes  $K8S_VERSION)
#   etcd                                     (go.etcd.io/etcd/server/v3 $ETCD_VERSION)
#   helm                                     (helm.sh/helm/v3     $HELM_VERSION)
# from the Go module proxy, through the wrapper modules in test/k8s-build/.
#
# Output: ${SIXBED4_K8S_CACHE:-$HOME/.cache/sixbed4/k8s}/<K8S_VERSION>/bin/
# Go's module and build caches live under the same root so later runs (and CI
# on this machine) reuse them. Idempotent: when the stamp file says the same
# versions and wrapper modules were built, nothing is done.
#
# Usage: bash test/k8s/build-control-plane.sh [--force]
# Needs only `go` (>= the wrappers' `go` line) and the Go module proxy.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
wrappers="$repo/test/k8s-build"

log() { printf '[build-control-plane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[build-control-plane] ERROR: %s\n' "$*" >&2; exit 1; }

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
  *) die "unknown argument: $1 (usage: $0 [--force])" ;;
esac

# shellcheck source=../k8s-build/versions.env
. "$wrappers/versions.env"
: "${K8S_VERSION:?}" "${ETCD_VERSION:?}" "${HELM_VERSION:?}"

if ! command -v go >/dev/null 2>&1; then
  # Not on PATH (e.g. a non-login shell): try the usual install locations.
  for d in /usr/local/go/bin /usr/lib/go/bin; do
    if [ -x "$d/go" ]; then PATH="$d:$PATH"; export PATH; break; fi
  done
fi
command -v go >/dev/null 2>&1 || die "'go' was not found on PATH (nor in /usr/local/go/bin, /usr/lib/go/bin). Install Go >= 1.21 (this machine kind ships one in /usr/local/go; Debian bookworm's golang-go is 1.19, too old); a Go older than the wrappers' 'go $(sed -n 's/^go //p' "$wrappers/kubernetes/go.mod")' line fetches that toolchain from the Go module proxy (GOTOOLCHAIN=auto). Then re-run: bash test/k8s/build-control-plane.sh"

cache="${SIXBED4_K8S_CACHE:-$HOME/.cache/sixbed4/k8s}"
out="$cache/$K8S_VERSION"
bin="$out/bin"
stamp="$bin/.stamp"
mkdir -p "$cache" "$out"

export GOPATH="$cache/gopath"
export GOMODCACHE="$cache/gomod"
export GOCACHE="$cache/gocache"
export GOFLAGS="-mod=mod"
export CGO_ENABLED=0
# Let go fetch a newer toolchain from the proxy if a wrapper's `go` line needs
# one (e.g. GOTOOLCHAIN=go1.27.3 for Kubernetes 1.37); keep a caller's choice.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

# What the binaries depend on: pinned versions + wrapper modules (not the Go
# patch release: a Go upgrade alone does not trigger a ~8 minute full rebuild).
(cd "$wrappers/kubernetes" && go env GOVERSION >/dev/null) || die "'go env' failed in test/k8s-build/kubernetes (go toolchain unusable, or GOTOOLCHAIN cannot be fetched?)"
wanted="k8s=$K8S_VERSION etcd=$ETCD_VERSION helm=$HELM_VERSION wrappers=$(cat "$wrappers"/versions.env "$wrappers"/*/go.mod "$wrappers"/*/go.sum | sha256sum | cut -c1-16)"

all_present() {
  local b
  for b in kube-apiserver kube-controller-manager etcd helm; do
    [ -x "$bin/$b" ] || return 1
  done
}

if [ "$force" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && all_present; then
  log "up to date: $bin ($wanted)"
  exit 0
fi

# One build at a time per cache (parallel CI jobs / test runs on one machine).
exec 9>"$cache/.build.lock"
if ! flock -n 9; then
  log "another build holds $cache/.build.lock; waiting for it"
  flock 9
  if [ "$force" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && all_present; then
    log "up to date after waiting: $bin"
    exit 0
  fi
fi

log "go: $(cd "$wrappers/kubernetes" && go version) (GOTOOLCHAIN=$GOTOOLCHAIN)"
# A cold build needs ~5 GB (module + build caches ~4.6 GB, binaries ~280 MB).
free_kb="$(df -Pk "$cache" | awk 'NR==2 {print $4}')"
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((6 * 1024 * 1024)) ]; then
  log "WARNING: only $((free_kb / 1024)) MiB free under $cache; a cold build needs about 5 GiB"
fi
log "cache root: $cache"
log "building into $bin: $wanted"
rm -f "$stamp"
mkdir -p "$bin"
staging="$out/.staging.$$"
rm -rf "$staging"; mkdir -p "$staging"
trap 'rm -rf "$staging"' EXIT

builddate="$(date -u -d @"${SOURCE_DATE_EPOCH:-0}" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo 1970-01-01T00:00:00Z)"
k8s_major="$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')"
k8s_minor="$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')"
# Same -X flags as kubernetes' hack/lib/version.sh, so /version reports the real
# version (charts' kubeVersion constraints and clients look at it).
k8s_x=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_x="$k8s_x -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$k8s_major -X $pkg.gitMinor=$k8s_minor"
  k8s_x="$k8s_x -X $pkg.gitTreeState=clean -X $pkg.buildDate=$builddate"
done
# Helm's Makefile sets these (version shown by `helm version`, default
# Capabilities.KubeVersion for `helm template` without a cluster).
helm_client_minor="$(sed -n -E 's#^\s*k8s.io/client-go v0\.([0-9]+)\..*#\1#p' "$wrappers/helm/go.mod" | head -1)"
helm_x="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
if [ -n "$helm_client_minor" ]; then
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    helm_x="$helm_x -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_client_minor"
  done
fi

# build <wrapper dir> <package> <binary name> <extra ldflags>
build() {
  local dir="$1" pkg="$2" name="$3" x="$4" t0 t1
  t0=$(date +%s)
  log "building $name ($pkg) ..."
  ( cd "$wrappers/$dir" && go build -trimpath -ldflags="-s -w $x" -o "$staging/$name" "$pkg" ) \
    || die "go build of $pkg failed (wrapper module test/k8s-build/$dir)"
  t1=$(date +%s)
  log "built $name in $((t1 - t0))s ($(du -h "$staging/$name" | cut -f1))"
}

start=$(date +%s)
log "downloading modules (Go module proxy; cached in $GOMODCACHE) ..."
for d in kubernetes etcd helm; do
  ( cd "$wrappers/$d" && go mod download ) || die "go mod download failed in test/k8s-build/$d (is the Go module proxy reachable? GOPROXY=$(go env GOPROXY))"
done
build etcd go.etcd.io/etcd/server/v3 etcd ""
build kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$k8s_x"
build kubernetes k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$k8s_x"
build helm helm.sh/helm/v3/cmd/helm helm "$helm_x"

# Smoke-check, then publish atomically (rename within one filesystem).
"$staging/etcd" --version >/dev/null || die "built etcd does not run"
"$staging/kube-apiserver" --version >/dev/null || die "built kube-apiserver does not run"
"$staging/helm" version --short >/dev/null || die "built helm does not run"
for b in etcd kube-apiserver kube-controller-manager helm; do
  mv -f "$staging/$b" "$bin/$b"
done
printf '%s\n' "$wanted" > "$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"

end=$(date +%s)
log "done in $((end - start))s"
log "versions: $("$bin/kube-apiserver" --version) / etcd $("$bin/etcd" --version | sed -n 's/^etcd Version: //p') / helm $("$bin/helm" version --short)"
log "binaries: $(du -sh "$bin" | cut -f1) in $bin"
log "cache total (binaries + Go module and build caches): $(du -sh "$cache" | cut -f1) in $cache"
