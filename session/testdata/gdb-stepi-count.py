# Counts the instructions of one system call round trip with gdb alone,
# for comparison with sctrace's trace: a hardware breakpoint on the user
# instruction that enters the kernel, then stepi until the CPU is back at
# CPL 3. ADDR (the gdbstub) and SITE (the instruction's address) are set
# with -ex "python ADDR=...; SITE=..." before this script runs.
import gdb

gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("target remote " + ADDR)
gdb.execute("hbreak *0x%x" % SITE)
gdb.execute("continue")
gdb.execute("delete")
n = 0
entered = False
while n < 100000:
    gdb.execute("stepi", to_string=True)
    n += 1
    if int(gdb.parse_and_eval("$cs")) & 3 != 3:
        entered = True
    elif entered:
        break
print("GDBCOUNT %d %#x" % (n, int(gdb.parse_and_eval("$rip"))))
gdb.execute("detach")
