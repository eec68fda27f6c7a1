# A tiny x86-64 object used by symbols_test.go: a sized function with a
# local label inside it, an unsized global label, and a sized data object.
# Regenerate tiny.elf with:
#   as -o /tmp/tiny.o tiny.S && ld --build-id=none -Ttext=0xffffffff81000000 -e entry -o tiny.elf /tmp/tiny.o
	.text
	.globl entry
	.type entry, @function
entry:
	nop
	nop
inner:
	nop
	ret
	.size entry, . - entry
	.globl after
after:
	nop
	.data
	.globl counter
	.type counter, @object
counter:
	.quad 0
	.size counter, 8
