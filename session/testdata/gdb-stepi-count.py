# Counts the instructions of one round trip through the kernel with gdb
# alone, for comparison with sctrace's trace: a hardware breakpoint at SITE,
# then stepi until the CPU is back at CPL 3. ADDR (the gdbstub) and SITE are
# set with -ex "python ADDR=...; SITE=..." before this script runs; TIMES,
# when set, counts that many round trips in a row, one GDBCOUNT line each.
#
# SITE is either a user instruction that enters the kernel (a system call,
# a faulting store), whose stepi is the first one counted, or the first
# instruction of an interrupt handler, for an interrupt that arrives on its
# own: counting starts there, with the handler's first instruction. A stop
# at a handler is counted only when the interrupt came from CPL 3, as the
# CS the CPU saved in its frame says (an external interrupt pushes no error
# code: RIP at RSP, CS at RSP+8); others are let go, up to KERNEL_STOPS in
# a row. QEMU's gdbstub masks interrupts while it single-steps (its default
# sstep flags), so no other interrupt joins the path counted.
#
# A stop at a user SITE whose first stepi stays at CPL 3 is not counted:
# the breakpoint is waited for again, up to three times. Like sctrace, it
# does not count a stepi after which no register changed at all (QEMU now
# and then reports a single-step stop before the instruction ran), up to
# three in a row.
import gdb

KERNEL_STOPS = 1000

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


def cpl():
    return int(gdb.parse_and_eval("$cs")) & 3


def from_user():
    """At the breakpoint: a user instruction, or a handler entered by an
    interrupt that came from CPL 3."""
    if cpl() == 3:
        return True
    cs = int(gdb.parse_and_eval("*(unsigned long long *)($rsp + 8)"))
    return cs & 3 == 3


def count():
    """Counts from the breakpoint's stop until back at CPL 3; 0 when the
    first instruction stays in user mode: a store that no longer faults,
    run again after a fault that was under way when gdb attached (the
    guest runs freely between sctrace's session and this script)."""
    n = 0
    entered = cpl() != 3
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
        if cpl() != 3:
            entered = True
        elif entered:
            break
        else:
            return 0
    return n


def stop():
    """Runs to SITE; False after KERNEL_STOPS interrupts from kernel mode
    in a row."""
    for _ in range(KERNEL_STOPS):
        gdb.execute("hbreak *0x%x" % SITE)
        gdb.execute("continue")
        gdb.execute("delete")
        if from_user():
            return True
    return False


for _ in range(globals().get("TIMES", 1)):
    n = 0
    for _ in range(3):
        if not stop():
            break
        n = count()
        if n:
            break
    print("GDBCOUNT %d %#x" % (n, rip()))
gdb.execute("detach")
