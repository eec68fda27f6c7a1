//go:build !amd64

package bench

// cpuidTSC does nothing off amd64: there is no TSC to describe.
func cpuidTSC(t *TSCInfo) {}
