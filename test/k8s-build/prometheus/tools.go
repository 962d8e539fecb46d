//go:build tools

// Package tools pins the commands that test/ops/build-prometheus.sh builds
// from this wrapper module, so that `go mod tidy` keeps their dependencies.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
