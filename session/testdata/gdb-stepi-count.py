# Counts the instructions of one system call round trip with gdb alone,
# for comparison with sctrace's trace: a hardware breakpoint on the user
# instruction that enters the kernel, then stepi until the CPU is back at
# CPL 3. ADDR (the gdbstub) and SITE (the instruction's address) are set
# with -ex "python ADDR=...; SITE=..." before this script runs. Like
# sctrace, it does not count a stepi after which no register changed at all
# (QEMU now and then reports a single-step stop before the instruction ran),
# up to three in a row.
import gdb

gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("target remote " + ADDR)
gdb.execute("hbreak *0x%x" % SITE)
gdb.execute("continue")
gdb.execute("delete")
REGS = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9",
        "r10", "r11", "r12", "r13", "r14", "r15", "rip", "eflags", "cs", "ss",
        "fs_base", "gs_base", "k_gs_base", "cr3"]


def snapshot():
    return tuple(int(gdb.parse_and_eval("$" + r)) for r in REGS)


n = 0
entered = False
prev = snapshot()
same = 0
while n < 100000:
    gdb.execute("stepi", to_string=True)
    now = snapshot()
    if now == prev and same < 3:
        same += 1
        continue
    same = 0
    prev = now
    n += 1
    if int(gdb.parse_and_eval("$cs")) & 3 != 3:
        entered = True
    elif entered:
        break
print("GDBCOUNT %d %#x" % (n, int(gdb.parse_and_eval("$rip"))))
gdb.execute("detach")
