//go:build amd64

package bench

// Implemented in tsc_amd64.s.

func cpuid(leaf, sub uint32) (a, b, c, d uint32)
func rdtsc() uint64
func loopEmpty(out []int64, rdtscp bool)
func loopSyscall(nr uintptr, out []int64, rdtscp bool)
func loopInt80(nr uintptr, out []int64, rdtscp bool)
func int80Once(nr uintptr) uintptr
func int81Once()
func loopVDSO(fn, clock uintptr, out []int64, rdtscp bool)
