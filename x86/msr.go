package x86

import "fmt"

// Indices of the model-specific registers sctrace names, for RDMSR and
// WRMSR's ECX.
const (
	MSRSpecCtrl     uint32 = 0x48       // IA32_SPEC_CTRL: IBRS, STIBP, SSBD
	MSRPredCmd      uint32 = 0x49       // IA32_PRED_CMD: write 1 for an IBPB
	MSRSysenterCS   uint32 = 0x174      // IA32_SYSENTER_CS
	MSRSysenterESP  uint32 = 0x175      // IA32_SYSENTER_ESP
	MSRSysenterEIP  uint32 = 0x176      // IA32_SYSENTER_EIP
	MSREFER         uint32 = 0xC0000080 // IA32_EFER
	MSRSTAR         uint32 = 0xC0000081 // STAR: SYSCALL/SYSRET selectors
	MSRLSTAR        uint32 = 0xC0000082 // LSTAR: 64-bit SYSCALL entry point
	MSRCSTAR        uint32 = 0xC0000083 // CSTAR: compatibility-mode SYSCALL entry point
	MSRFMASK        uint32 = 0xC0000084 // FMASK (IA32_SYSCALL_MASK): RFLAGS bits SYSCALL clears
	MSRFSBase       uint32 = 0xC0000100 // IA32_FS_BASE
	MSRGSBase       uint32 = 0xC0000101 // IA32_GS_BASE
	MSRKernelGSBase uint32 = 0xC0000102 // IA32_KERNEL_GS_BASE: what SWAPGS exchanges with GS base
	MSRTSCAux       uint32 = 0xC0000103 // IA32_TSC_AUX: what rdtscp/rdpid return
)

var msrNames = map[uint32]string{
	MSRSpecCtrl:     "IA32_SPEC_CTRL",
	MSRPredCmd:      "IA32_PRED_CMD",
	MSRSysenterCS:   "IA32_SYSENTER_CS",
	MSRSysenterESP:  "IA32_SYSENTER_ESP",
	MSRSysenterEIP:  "IA32_SYSENTER_EIP",
	MSREFER:         "IA32_EFER",
	MSRSTAR:         "IA32_STAR",
	MSRLSTAR:        "IA32_LSTAR",
	MSRCSTAR:        "IA32_CSTAR",
	MSRFMASK:        "IA32_FMASK",
	MSRFSBase:       "IA32_FS_BASE",
	MSRGSBase:       "IA32_GS_BASE",
	MSRKernelGSBase: "IA32_KERNEL_GS_BASE",
	MSRTSCAux:       "IA32_TSC_AUX",
}

// MSRName returns an MSR's architectural name, or "MSR 0x..." for one sctrace
// does not name.
func MSRName(index uint32) string {
	if n, ok := msrNames[index]; ok {
		return n
	}
	return fmt.Sprintf("MSR %#x", index)
}
