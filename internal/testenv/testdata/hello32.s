# An i386 program for the --exec tests: it writes a line, calls getppid
# through int $0x80, and exits 0. Build: as --32 -o hello32.o hello32.s &&
# ld -m elf_i386 -static -o hello32 hello32.o
	.text
	.globl	_start
_start:
	mov	$4, %eax		# write(1, msg, len), i386 number 4
	mov	$1, %ebx
	mov	$msg, %ecx
	mov	$len, %edx
	int	$0x80
	mov	$64, %eax		# getppid, i386 number 64
	.globl	hello32_getppid
hello32_getppid:
	int	$0x80
	mov	$1, %eax		# exit(0), i386 number 1
	xor	%ebx, %ebx
	int	$0x80

	.data
msg:	.ascii	"hello from i386\n"
	.set	len, . - msg
