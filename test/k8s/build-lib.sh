# Shared by build-control-plane.sh and build-node.sh (sourced, not run): the Go
# environment rooted in the cache, one build at a time per cache, and `build`.
# Callers set `name` (for log lines) before sourcing.

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
wrappers="$repo/test/k8s-build"

log() { printf '[%s %s] %s\n' "$name" "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$name" "$*" >&2; exit 1; }

# shellcheck source=../k8s-build/versions.env
. "$wrappers/versions.env"
: "${K8S_VERSION:?}"

if ! command -v go >/dev/null 2>&1; then
  # Not on PATH (e.g. a non-login shell): try the usual install locations.
  for d in /usr/local/go/bin /usr/lib/go/bin; do
    if [ -x "$d/go" ]; then PATH="$d:$PATH"; export PATH; break; fi
  done
fi
command -v go >/dev/null 2>&1 || die "'go' was not found on PATH (nor in /usr/local/go/bin, /usr/lib/go/bin). Install Go >= 1.21 (this machine kind ships one in /usr/local/go; Debian bookworm's golang-go is 1.19, too old); a Go older than the wrappers' 'go' line fetches that toolchain from the Go module proxy (GOTOOLCHAIN=auto). Then re-run $0"

cache="${SIXBED4_K8S_CACHE:-$HOME/.cache/sixbed4/k8s}"
out="$cache/$K8S_VERSION"
bin="$out/bin"
mkdir -p "$cache" "$out" "$bin"

export GOPATH="$cache/gopath"
export GOMODCACHE="$cache/gomod"
export GOCACHE="$cache/gocache"
export GOFLAGS="-mod=mod"
export CGO_ENABLED=0
# Let go fetch a newer toolchain from the proxy if a wrapper's `go` line needs
# one (e.g. GOTOOLCHAIN=go1.27.3 for Kubernetes 1.37); keep a caller's choice.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

# wrappers_hash DIR... : what the binaries depend on (pinned versions + wrapper
# modules; not the Go patch release, so a Go upgrade alone rebuilds nothing).
wrappers_hash() {
  local d files=("$wrappers/versions.env")
  for d in "$@"; do files+=("$wrappers/$d/go.mod" "$wrappers/$d/go.sum" "$wrappers/$d/tools.go"); done
  cat "${files[@]}" | sha256sum | cut -c1-16
}

# up_to_date STAMP WANTED BINARY... : the stamp says WANTED and every binary is there.
up_to_date() {
  local stamp="$1" wanted="$2" b
  shift 2
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] || return 1
  for b in "$@"; do [ -x "$bin/$b" ] || return 1; done
}

# parse_args "$@": sets force (0/1); --help prints the script's header comment.
parse_args() {
  force=0
  case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown argument: $1 (usage: $0 [--force])" ;;
  esac
}

# exit_if_built STAMP WANTED BINARY... : exits 0 when there is nothing to build (also after waiting for another
# build of the same cache); otherwise returns holding the build lock. With --force, always builds.
exit_if_built() {
  local stamp="$1" wanted="$2"
  shift 2
  if [ "$force" = 0 ] && up_to_date "$stamp" "$wanted" "$@"; then
    log "up to date: $bin ($wanted)"
    exit 0
  fi
  if [ "$force" = 0 ]; then lock_or_wait "$stamp" "$wanted" "$@" && exit 0; return 0; fi
  lock_or_wait "$stamp" "" || true
}

# One build at a time per cache (parallel CI jobs / test runs on one machine).
# Returns 0 when another build finished what we wanted while we waited.
lock_or_wait() {
  local stamp="$1" wanted="$2"
  shift 2
  exec 9>"$cache/.build.lock"
  if ! flock -n 9; then
    log "another build holds $cache/.build.lock; waiting for it"
    flock 9
    if up_to_date "$stamp" "$wanted" "$@"; then log "up to date after waiting: $bin"; return 0; fi
  fi
  return 1
}

new_staging() {
  staging="$out/.staging.$$"
  rm -rf "$staging"; mkdir -p "$staging"
  trap 'rm -rf "$staging"' EXIT
}

# build <wrapper dir> <package> <binary name> <extra ldflags> [go build flags...]
build() {
  local dir="$1" pkg="$2" out_name="$3" x="$4" t0 t1
  shift 4
  t0=$(date +%s)
  log "building $out_name ($pkg) ..."
  ( cd "$wrappers/$dir" && go build -trimpath "$@" -ldflags="-s -w $x" -o "$staging/$out_name" "$pkg" ) \
    || die "go build of $pkg failed (wrapper module test/k8s-build/$dir)"
  t1=$(date +%s)
  log "built $out_name in $((t1 - t0))s ($(du -h "$staging/$out_name" | cut -f1))"
}

# The -X flags of kubernetes' hack/lib/version.sh, so that /version and
# `kubelet --version` report the real version (the API server shows the
# kubelet's in Node status; charts' kubeVersion constraints look at it).
k8s_version_ldflags() {
  local major minor builddate pkg x=""
  builddate="$(date -u -d @"${SOURCE_DATE_EPOCH:-0}" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo 1970-01-01T00:00:00Z)"
  major="$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')"
  minor="$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x="$x -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    x="$x -X $pkg.gitTreeState=clean -X $pkg.buildDate=$builddate"
  done
  echo "$x"
}

# publish NAME... : move the staged binaries into $bin (rename within one filesystem).
publish() {
  local b
  for b in "$@"; do mv -f "$staging/$b" "$bin/$b"; done
}
