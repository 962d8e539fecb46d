//go:build tools

// Package tools pins runc, built by test/k8s/build-control-plane.sh with cgo
// and the seccomp tag (Debian's runc 1.1 cannot start containerd 2 sandboxes,
// and a runc without seccomp refuses every RuntimeDefault pod).
package tools

import (
	_ "github.com/opencontainers/runc"
)
