//go:build tools

// Package tools pins the command that test/k8s/build-control-plane.sh builds
// from this wrapper module, so that `go mod tidy` keeps its dependencies.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
