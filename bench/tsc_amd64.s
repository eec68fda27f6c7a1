//go:build amd64

#include "textflag.h"

// Each timed window is opened with LFENCE; RDTSC, so that earlier
// instructions have finished before the counter is read, and closed with
// RDTSCP; LFENCE (RDTSCP waits for the timed code; the LFENCE keeps later
// instructions out), or with LFENCE; RDTSC on a CPU without RDTSCP.
// The start value is kept in BX, which SYSCALL, INT and the SysV calling
// convention all preserve.

#define OPEN \
	LFENCE; \
	RDTSC; \
	SHLQ $32, DX; \
	ORQ DX, AX; \
	MOVQ AX, BX

#define CLOSE_RDTSCP \
	RDTSCP; \
	LFENCE; \
	SHLQ $32, DX; \
	ORQ DX, AX; \
	SUBQ BX, AX; \
	MOVQ AX, (DI); \
	ADDQ $8, DI

#define CLOSE_RDTSC \
	LFENCE; \
	RDTSC; \
	SHLQ $32, DX; \
	ORQ DX, AX; \
	SUBQ BX, AX; \
	MOVQ AX, (DI); \
	ADDQ $8, DI

// func cpuid(leaf, sub uint32) (a, b, c, d uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, a+8(FP)
	MOVL BX, b+12(FP)
	MOVL CX, c+16(FP)
	MOVL DX, d+20(FP)
	RET

// func rdtsc() uint64
TEXT ·rdtsc(SB), NOSPLIT, $0-8
	LFENCE
	RDTSC
	SHLQ $32, DX
	ORQ DX, AX
	MOVQ AX, ret+0(FP)
	RET

// func loopEmpty(out []int64, rdtscp bool)
// The baseline: an empty timed window.
TEXT ·loopEmpty(SB), NOSPLIT, $0-25
	MOVQ out_base+0(FP), DI
	MOVQ out_len+8(FP), R12
	MOVBLZX rdtscp+24(FP), R13
	TESTQ R12, R12
	JZ done
	TESTQ R13, R13
	JZ fenced
timed:
	OPEN
	CLOSE_RDTSCP
	DECQ R12
	JNZ timed
	RET
fenced:
	OPEN
	CLOSE_RDTSC
	DECQ R12
	JNZ fenced
done:
	RET

// func loopSyscall(nr uintptr, out []int64, rdtscp bool)
// SYSCALL with RAX = nr and no arguments; the kernel clobbers RAX, RCX
// and R11 only.
TEXT ·loopSyscall(SB), NOSPLIT, $0-33
	MOVQ nr+0(FP), SI
	MOVQ out_base+8(FP), DI
	MOVQ out_len+16(FP), R12
	MOVBLZX rdtscp+32(FP), R13
	TESTQ R12, R12
	JZ done
	TESTQ R13, R13
	JZ fenced
timed:
	OPEN
	MOVQ SI, AX
	SYSCALL
	CLOSE_RDTSCP
	DECQ R12
	JNZ timed
	RET
fenced:
	OPEN
	MOVQ SI, AX
	SYSCALL
	CLOSE_RDTSC
	DECQ R12
	JNZ fenced
done:
	RET

// func loopInt80(nr uintptr, out []int64, rdtscp bool)
// INT $0x80 with EAX = nr, the 32-bit system call ABI. Older kernels zero
// R8-R11 on this path, so none of them is used.
TEXT ·loopInt80(SB), NOSPLIT, $0-33
	MOVQ nr+0(FP), SI
	MOVQ out_base+8(FP), DI
	MOVQ out_len+16(FP), R12
	MOVBLZX rdtscp+32(FP), R13
	TESTQ R12, R12
	JZ done
	TESTQ R13, R13
	JZ fenced
timed:
	OPEN
	MOVQ SI, AX
	INT $0x80
	CLOSE_RDTSCP
	DECQ R12
	JNZ timed
	RET
fenced:
	OPEN
	MOVQ SI, AX
	INT $0x80
	CLOSE_RDTSC
	DECQ R12
	JNZ fenced
done:
	RET

// func int80Once(nr uintptr) uintptr
TEXT ·int80Once(SB), NOSPLIT, $0-16
	MOVQ nr+0(FP), AX
	INT $0x80
	MOVQ AX, ret+8(FP)
	RET

// func int81Once()
// INT $0x81 has no user-callable gate on Linux: it raises #GP, which the
// kernel delivers as SIGSEGV. Tests use it to check faultGuard.
TEXT ·int81Once(SB), NOSPLIT, $0-0
	INT $0x81
	RET

// func loopVDSO(fn uintptr, clock uintptr, out []int64, rdtscp bool)
// Calls the vDSO's clock_gettime(clock, &ts) in each window. The vDSO is
// C code: it gets a 16-byte aligned stack inside this function's own
// frame (so the goroutine stack has room for it) and keeps BX, R12-R15 as
// the SysV ABI requires. ts and the loop count live at the bottom of the
// frame, far below the stack the vDSO uses.
TEXT ·loopVDSO(SB), 0, $4096-41
	MOVQ fn+0(FP), R13
	MOVQ clock+8(FP), R15
	MOVQ out_base+16(FP), R14
	MOVQ out_len+24(FP), CX
	MOVBLZX rdtscp+40(FP), DX
	TESTQ CX, CX
	JZ done
	MOVQ SP, R12
	MOVQ CX, 16(R12)
	LEAQ 4032(R12), SP
	ANDQ $~15, SP
	TESTQ DX, DX
	JZ fenced
timed:
	OPEN
	MOVQ R15, DI
	MOVQ R12, SI
	CALL R13
	RDTSCP
	LFENCE
	SHLQ $32, DX
	ORQ DX, AX
	SUBQ BX, AX
	MOVQ AX, (R14)
	ADDQ $8, R14
	DECQ 16(R12)
	JNZ timed
	MOVQ R12, SP
	RET
fenced:
	OPEN
	MOVQ R15, DI
	MOVQ R12, SI
	CALL R13
	LFENCE
	RDTSC
	SHLQ $32, DX
	ORQ DX, AX
	SUBQ BX, AX
	MOVQ AX, (R14)
	ADDQ $8, R14
	DECQ 16(R12)
	JNZ fenced
	MOVQ R12, SP
done:
	RET
