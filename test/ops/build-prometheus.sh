#!/usr/bin/env bash
# Build (or reuse) what the operations tests (test/ops) run:
#   prometheus, promtool   (github.com/prometheus/prometheus, pinned in test/k8s-build/prometheus/go.mod)
#   the prometheus-operator CRDs (example/prometheus-operator-crd of the Go module
#   github.com/prometheus-operator/prometheus-operator $PROMETHEUS_OPERATOR_VERSION,
#   copied out of the module cache)
# from the Go module proxy, into the same cache as the control plane
# (test/k8s/build-control-plane.sh): ${SIXBED4_K8S_CACHE:-$HOME/.cache/sixbed4/k8s}/<K8S_VERSION>/bin/
# and .../<K8S_VERSION>/prometheus-operator-crd/. Idempotent: when the stamp says
# the same wrapper module and operator version were built, nothing is done.
#
# Usage: bash test/ops/build-prometheus.sh [--force]
set -euo pipefail
name=build-prometheus
# shellcheck source=../k8s/build-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../k8s/build-lib.sh"

# The CRDs only (their YAML files): no Go package of this module is built.
PROMETHEUS_OPERATOR_VERSION=v0.85.0

parse_args "$@"

BINARIES=(prometheus promtool)
stamp="$bin/.stamp-prometheus"
crd_dir="$out/prometheus-operator-crd"
# Not wrappers_hash: that one includes versions.env, and a change there must not rebuild Prometheus (nor the
# reverse); this module's own files and the operator's version are all it depends on.
wanted="prometheus-operator=$PROMETHEUS_OPERATOR_VERSION wrapper=$(cat "$wrappers/prometheus/go.mod" "$wrappers/prometheus/go.sum" "$wrappers/prometheus/tools.go" | sha256sum | cut -c1-16)"

if [ "$force" = 0 ] && up_to_date "$stamp" "$wanted" "${BINARIES[@]}" && [ -f "$crd_dir/monitoring.coreos.com_podmonitors.yaml" ]; then
  log "up to date: $bin/prometheus, promtool, $crd_dir ($wanted)"
  exit 0
fi
lock_or_wait "$stamp" "$wanted" "${BINARIES[@]}" && [ "$force" = 0 ] && [ -f "$crd_dir/monitoring.coreos.com_podmonitors.yaml" ] && exit 0

log "go: $(cd "$wrappers/prometheus" && go version) (GOTOOLCHAIN=$GOTOOLCHAIN)"
log "building into $bin: $wanted"
rm -f "$stamp"
new_staging
start=$(date +%s)
log "downloading modules (Go module proxy; cached in $GOMODCACHE) ..."
( cd "$wrappers/prometheus" && go mod download ) || die "go mod download failed in test/k8s-build/prometheus (is the Go module proxy reachable? GOPROXY=$(go env GOPROXY))"
op_dir="$(cd "$wrappers/prometheus" && GOFLAGS= go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')"
[ -d "$op_dir/example/prometheus-operator-crd" ] || die "no example/prometheus-operator-crd in github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION ($op_dir)"

# The version shown by `prometheus --version` (Prometheus' Makefile sets these through promu).
# Module v0.MMNN.P is Prometheus M.NN.P (v0.316.0: 3.16.0).
mod="$(grep -oE 'github.com/prometheus/prometheus v0\.[0-9]+\.[0-9]+' "$wrappers/prometheus/go.mod" | head -1 | sed -E 's/.* v0\.//')"
version="$(( ${mod%%.*} / 100 )).$(( ${mod%%.*} % 100 )).${mod#*.}"
x="-X github.com/prometheus/common/version.Version=$version -X github.com/prometheus/common/version.Branch=HEAD -X github.com/prometheus/common/version.Revision=module"
build prometheus github.com/prometheus/prometheus/cmd/prometheus prometheus "$x"
build prometheus github.com/prometheus/prometheus/cmd/promtool promtool "$x"

"$staging/prometheus" --version >/dev/null 2>&1 || die "built prometheus does not run"
"$staging/promtool" --version >/dev/null 2>&1 || die "built promtool does not run"
rm -rf "$crd_dir.tmp" && mkdir -p "$crd_dir.tmp"
cp "$op_dir"/example/prometheus-operator-crd/*.yaml "$crd_dir.tmp/" && chmod -R u+w "$crd_dir.tmp"
rm -rf "$crd_dir" && mv "$crd_dir.tmp" "$crd_dir"
publish "${BINARIES[@]}"
printf '%s\n' "$wanted" > "$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
log "done in $(( $(date +%s) - start ))s: $("$bin/prometheus" --version 2>&1 | head -1); CRDs of prometheus-operator $PROMETHEUS_OPERATOR_VERSION in $crd_dir"
