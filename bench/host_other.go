//go:build !(linux && amd64)

package bench

import (
	"context"
	"runtime"
)

func runHost(ctx context.Context, cfg Config, env *Environment) *TargetResult {
	return &TargetResult{
		Name:  TargetHost,
		Title: "This host, natively",
		Error: "the host bench needs linux/amd64, not " + runtime.GOOS + "/" + runtime.GOARCH,
	}
}
