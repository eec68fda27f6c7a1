# An i386 program for the compatibility-mode tests: with argv[1] "int80"
# it calls getppid by int $0x80 and exits; otherwise it writes a line, then
# calls getppid the way the 32-bit vDSO's __kernel_vsyscall does on the
# CPU it runs on (arch/x86/entry/vdso/vdso32/system_call.S): ecx, edx and
# ebp pushed, then "mov %esp, %ebp; sysenter" (Intel) or
# "mov %ecx, %ebp; syscall" (AMD), as argv[1] says (sysenter when it is
# missing). Linux returns from either to the vDSO's int80_landing_pad,
# which pops ebp, edx and ecx and returns here. It exits 0.
# Build: as --32 -o compat32.o compat32.s && ld -m elf_i386 -static -o compat32 compat32.o
	.text
	.globl	_start
_start:
	cmpl	$2, (%esp)		# argc
	jb	0f
	mov	8(%esp), %esi		# argv[1]: "int80" makes getppid by int $0x80 alone
	cmpb	$'8', 3(%esi)
	jne	0f
	mov	$64, %eax		# getppid, i386 number 64
	int	$0x80
	jmp	2f
0:	mov	$4, %eax		# write(1, msg, len), i386 number 4
	mov	$1, %ebx
	mov	$msg, %ecx
	mov	$len, %edx
	int	$0x80
	mov	$64, %eax		# getppid, i386 number 64
	cmpl	$2, (%esp)		# argc
	jb	1f
	mov	8(%esp), %esi		# argv[1]: "sysenter" or "syscall"
	cmpb	$'c', 3(%esi)
	jne	1f
	call	vsyscall_syscall
	jmp	2f
1:	call	vsyscall_sysenter
2:	mov	$1, %eax		# exit(0), i386 number 1
	xor	%ebx, %ebx
	int	$0x80

vsyscall_sysenter:
	push	%ecx
	push	%edx
	push	%ebp
	mov	%esp, %ebp		# the kernel reads the user stack from ebp
	.globl	compat32_sysenter
compat32_sysenter:
	sysenter
	ud2				# never reached: the kernel returns to the vDSO

vsyscall_syscall:
	push	%ecx
	push	%edx
	push	%ebp
	mov	%ecx, %ebp		# syscall overwrites ecx: the kernel takes it from ebp
	.globl	compat32_syscall
compat32_syscall:
	syscall
	ud2				# never reached: the kernel returns to the vDSO

	.data
msg:	.ascii	"hello from compat mode\n"
	.set	len, . - msg
