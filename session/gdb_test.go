package session

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// gdbStepiCount runs gdb alone against the gdbstub at addr (left running
// by a session opened with Keep and closed): a hardware breakpoint at
// site, then stepi until the CPU is back at CPL 3
// (testdata/gdb-stepi-count.py), times round trips in a row. site is
// either the user instruction that enters the kernel, counted as the
// first instruction as sctrace counts it, or an interrupt handler's first
// instruction, where only an interrupt that came from CPL 3 is counted
// and the count starts with the handler's first instruction. It returns
// how many instructions gdb counted in each and the RIP each ended at.
func gdbStepiCount(ctx context.Context, t *testing.T, addr string, site uint64, times int) (counts []int, ends []uint64) {
	t.Helper()
	addr = strings.TrimPrefix(addr, "unix:") // gdb takes a socket's bare path
	out, err := exec.CommandContext(ctx, "gdb", "-q", "-batch", "-nx",
		"-ex", fmt.Sprintf("python ADDR=%q; SITE=%#x; TIMES=%d", addr, site, times),
		"-x", "testdata/gdb-stepi-count.py").CombinedOutput()
	ms := regexp.MustCompile(`GDBCOUNT (\d+) (0x[0-9a-f]+)`).FindAllSubmatch(out, -1)
	if err != nil || len(ms) != times {
		t.Fatalf("gdb stepi count: %v\n%s", err, out)
	}
	for _, m := range ms {
		n, _ := strconv.Atoi(string(m[1]))
		end, _ := strconv.ParseUint(string(m[2]), 0, 64)
		counts, ends = append(counts, n), append(ends, end)
	}
	return counts, ends
}
