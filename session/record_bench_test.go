package session

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// startExecve boots Linux 6.1 with /init looping on execve, as `run linux
// --init execve --record auto` does (so QEMU runs with ICountArgs), and
// keeps QEMU when the session is closed, for gdb; cleanup ends it.
func startExecve(b *testing.B) (*Session, mechanism.Mechanism) {
	b.Helper()
	kernel := testenv.LinuxKernel(b, "6.1")
	o := LinuxOptions{Options: Options{Accel: "tcg", Record: RecordAuto, Syscall: "execve", Keep: true}, Kernel: kernel, Mode: linuxinit.Execve}
	m, err := o.ChooseMechanism("", false)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	s, err := StartLinux(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		s.Close()
		s.QEMU.Stop()
		os.RemoveAll(s.tmp)
	})
	return s, m
}

// stepCap bounds the instructions the stepping ways record of each execve
// in BenchmarkRecordersExecve: its whole path (about 2×10⁵ instructions)
// takes minutes at their rate, and the rate is what is measured.
const stepCap = 3000

// BenchmarkRecordersExecve compares, on one Linux 6.1 guest and the path
// of /init's execve of itself (from its syscall instruction), gdb's
// `stepi` (a script that steps from a hardware breakpoint on the syscall,
// as a user at gdb's prompt would), the stub's raw `s`+`g`, the stepping
// recorder, and the log recorder, in instructions per second. The stepping
// ways record the first stepCap instructions of each execve; the log
// recorder the whole call. It reports the log recorder's rate over gdb's.
func BenchmarkRecordersExecve(b *testing.B) {
	testenv.NeedTools(b, "gdb")
	s, m := startExecve(b)
	ctx := context.Background()
	// The execve's syscall instruction: the next execve's entry.
	if err := s.ToEntry(ctx, m); err != nil {
		b.Fatal(err)
	}
	site := s.Recorder.Current().Val(x86.RIP)
	addr := s.QEMU.GDBAddr
	if err := s.Close(); err != nil { // detach: gdb takes the stub
		b.Fatal(err)
	}
	var gdbRate float64
	b.Run("gdb-stepi", func(b *testing.B) {
		n, secs := 0, 0.0
		for range b.N {
			k, d := gdbStepi(b, strings.TrimPrefix(addr, "unix:"), site, stepCap)
			n += k
			secs += d
		}
		gdbRate = float64(n) / secs
		b.ReportMetric(gdbRate, "insns/s")
		b.ReportMetric(float64(n)/float64(b.N), "insns/op")
	})
	a, err := Attach(ctx, addr, Options{Syscall: "execve", StackWords: 0})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	stepper := a.Recorder
	toEntry := func(b *testing.B) {
		b.StopTimer()
		if err := a.ToEntry(ctx, m); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.Run("raw-s+g", func(b *testing.B) {
		n := 0
		for range b.N {
			toEntry(b)
			for range stepCap {
				if _, err := a.Target.Step(ctx); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.StopTimer()
			if err := stepper.Init(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "insns/s")
	})
	b.Run("step", func(b *testing.B) {
		a.rec = stepper
		stepper.Budget = stepCap
		n := 0
		for range b.N {
			toEntry(b)
			tr, err := a.Record(ctx)
			if err != nil {
				b.Fatal(err)
			}
			n += tr.Len()
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "insns/s")
	})
	qemuPid := s.QEMU.Pid()
	b.Run("log", func(b *testing.B) {
		l := trace.NewLogRecorder(stepper)
		stepper.Budget = DefaultLogBudget
		a.rec = l
		n, lastDetail := 0, ""
		var cpu, qcpu time.Duration
		for range b.N {
			toEntry(b)
			c0, q0 := cpuTime(), procCPU(b, qemuPid)
			tr, err := a.Record(ctx)
			cpu += cpuTime() - c0
			qcpu += procCPU(b, qemuPid) - q0
			if err != nil {
				b.Fatal(err)
			}
			if tr.Header.Stop != string(trace.StopUser) {
				b.Fatalf("stopped: %s after %d steps", tr.Header.Stop, tr.Len())
			}
			if sp := tr.Header.Recorders; len(sp) > 0 {
				lastDetail = sp[len(sp)-1].Detail
			}
			n += tr.Len()
		}
		rate := float64(n) / b.Elapsed().Seconds()
		b.ReportMetric(rate, "insns/s")
		// Where the time went, as the log's span says it.
		if m := logTimes.FindStringSubmatch(lastDetail); m != nil {
			run, _ := strconv.ParseFloat(m[1], 64)
			pauses, _ := strconv.ParseFloat(m[2], 64)
			paused, _ := strconv.ParseFloat(m[3], 64)
			after, _ := strconv.ParseFloat(m[4], 64)
			b.ReportMetric(run, "last-logged-run-s")
			b.ReportMetric(pauses, "last-pauses")
			b.ReportMetric(paused, "last-paused-s")
			b.ReportMetric(after, "last-convert-after-run-s")
		}
		b.ReportMetric(float64(n)/float64(b.N), "insns/op")
		b.ReportMetric(cpu.Seconds()/float64(b.N), "sctrace-cpu-s/op")
		b.ReportMetric(qcpu.Seconds()/float64(b.N), "qemu-cpu-s/op")
		b.ReportMetric(loadAvg(b), "load1")
		if gdbRate > 0 {
			b.ReportMetric(rate/gdbRate, "x-gdb-stepi")
		}
	})
}

// logTimes finds, in a log span's Detail, how long the guest ran logged,
// how often it was paused to read memory, and how long the log took to
// turn into steps after the run.
var logTimes = regexp.MustCompile(`logged instructions in ([0-9.]+)s, paused ([0-9]+) times to read memory \(([0-9.]+)s\), the last steps made ([0-9.]+)s after it stopped`)

// gdbStepi runs gdb on the stub at addr: a hardware breakpoint at site,
// continue, then n stepi commands, timed in gdb's Python. It returns the
// steps taken and their time in seconds.
func gdbStepi(b *testing.B, addr string, site uint64, n int) (int, float64) {
	b.Helper()
	script := filepath.Join(b.TempDir(), "stepi.py")
	src := fmt.Sprintf(`import gdb, time
gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("target remote %s")
gdb.execute("hbreak *%#x")
gdb.execute("continue")
gdb.execute("delete")
t0 = time.monotonic()
for i in range(%d):
    gdb.execute("stepi", to_string=True)
print("GDBSTEPI %%d %%.6f" %% (%d, time.monotonic() - t0))
gdb.execute("detach")
`, addr, site, n, n)
	if err := os.WriteFile(script, []byte(src), 0o600); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "gdb", "-q", "-batch", "-nx", "-x", script).CombinedOutput()
	m := regexp.MustCompile(`GDBSTEPI (\d+) ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		b.Fatalf("gdb stepi: %v\n%s", err, out)
	}
	k, _ := strconv.Atoi(string(m[1]))
	secs, _ := strconv.ParseFloat(string(m[2]), 64)
	return k, secs
}

// BenchmarkLogMillion records execve round trips of Linux 6.1's /init
// with the log recorder into one trace until it holds 10⁶ steps, saves it,
// and reports the recording time (wall, with this process's CPU time and
// QEMU's: the Record calls alone, not the runs to each execve's entry nor
// the joining of each round trip's steps into the long trace, reported
// apart), the file's size and the process's peak resident size, against
// the budgets: 15 s, 100 MB, 500 MB.
func BenchmarkLogMillion(b *testing.B) {
	s, m := startExecve(b)
	ctx := context.Background()
	l := trace.NewLogRecorder(s.Recorder)
	s.Recorder.Budget = DefaultLogBudget
	s.rec = l
	const want = 1_000_000
	for range b.N {
		var all *trace.Trace
		var rec, cpu, qcpu, join time.Duration
		trips := 0
		for all == nil || all.Len() < want {
			if err := s.ToEntry(ctx, m); err != nil {
				b.Fatal(err)
			}
			t0, c0, q0 := time.Now(), cpuTime(), procCPU(b, s.QEMU.Pid())
			tr, err := s.Record(ctx)
			rec += time.Since(t0)
			cpu += cpuTime() - c0
			qcpu += procCPU(b, s.QEMU.Pid()) - q0
			if err != nil {
				b.Fatal(err)
			}
			trips++
			// The recorder starts the next round trip afresh: its
			// steps join the one long trace.
			t0 = time.Now()
			if all == nil {
				all = &trace.Trace{Header: tr.Header}
			}
			for _, st := range tr.All() {
				all.Append(*st)
			}
			all.Final = tr.Final
			join += time.Since(t0)
		}
		out := filepath.Join(b.TempDir(), "million.sctrace")
		t0 := time.Now()
		f, err := os.Create(out)
		if err != nil {
			b.Fatal(err)
		}
		if err := all.Write(f); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		save := time.Since(t0)
		fi, err := os.Stat(out)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(all.Len()), "steps")
		b.ReportMetric(rec.Seconds(), "record-s")
		b.ReportMetric(cpu.Seconds(), "record-cpu-s")
		b.ReportMetric(float64(trips), "round-trips")
		b.ReportMetric(join.Seconds(), "join-s")
		b.ReportMetric(qcpu.Seconds(), "qemu-cpu-s")
		b.ReportMetric(loadAvg(b), "load1")
		b.ReportMetric(save.Seconds(), "save-s")
		b.ReportMetric(float64(fi.Size())/1e6, "file-MB")
		b.ReportMetric(peakRSS(b)/1e6, "peak-RSS-MB")
	}
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS reads the process's peak resident set size (VmHWM), in bytes.
func peakRSS(b *testing.B) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// procCPU is the user and system CPU time process pid has used, from
// /proc/PID/stat (in clock ticks of 1/100 s, as on every Linux
// architecture Go supports).
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name may hold spaces: the fields follow its ')'.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// loadAvg is the one-minute load average, which says how much other work
// the figures shared the machine with.
func loadAvg(b *testing.B) float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		b.Fatal(err)
	}
	v, _ := strconv.ParseFloat(strings.Fields(string(raw))[0], 64)
	return v
}
