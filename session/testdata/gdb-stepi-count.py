# Counts the instructions of one system call round trip with gdb alone,
# for comparison with sctrace's trace: a hardware breakpoint on the user
# instruction that enters the kernel, then stepi until the CPU is back at
# CPL 3. ADDR (the gdbstub) and SITE (the instruction's address) are set
# with -ex "python ADDR=...; SITE=..." before this script runs; TIMES, when
# set, counts that many round trips in a row, one GDBCOUNT line each. A stop
# at the breakpoint whose first stepi stays at CPL 3 is not counted: the
# breakpoint is waited for again, up to three times. Like
# sctrace, it does not count a stepi after which no register changed at all
# (QEMU now and then reports a single-step stop before the instruction ran),
# up to three in a row.
import gdb

gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("target remote " + ADDR)
REGS = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9",
        "r10", "r11", "r12", "r13", "r14", "r15", "rip", "eflags", "cs", "ss",
        "fs_base", "gs_base", "k_gs_base", "cr3"]


def snapshot():
    return tuple(int(gdb.parse_and_eval("$" + r)) for r in REGS)


def rip():
    return int(gdb.parse_and_eval("$rip"))


def count():
    """Counts from the breakpoint's stop until back at CPL 3; 0 when the
    first instruction stays in user mode: a store that no longer faults,
    run again after a fault that was under way when gdb attached (the
    guest runs freely between sctrace's session and this script)."""
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
        else:
            return 0
    return n


for _ in range(globals().get("TIMES", 1)):
    n = 0
    for _ in range(3):
        gdb.execute("hbreak *0x%x" % SITE)
        gdb.execute("continue")
        gdb.execute("delete")
        n = count()
        if n:
            break
    print("GDBCOUNT %d %#x" % (n, rip()))
gdb.execute("detach")
