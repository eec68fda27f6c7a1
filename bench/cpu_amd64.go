//go:build amd64

package bench

// cpuidTSC reads the invariant-TSC bit (CPUID 0x80000007 EDX[8]) and the
// RDTSCP bit (CPUID 0x80000001 EDX[27]).
func cpuidTSC(t *TSCInfo) {
	maxExt, _, _, _ := cpuid(0x80000000, 0)
	if maxExt >= 0x80000001 {
		_, _, _, d := cpuid(0x80000001, 0)
		t.RDTSCP = d&(1<<27) != 0
	}
	if maxExt >= 0x80000007 {
		_, _, _, d := cpuid(0x80000007, 0)
		t.Invariant = d&(1<<8) != 0
		t.InvariantSource = "CPUID 0x80000007 EDX[8]"
	}
}
