package diff_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/diff"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
)

// recorded keeps the round trips the tests record, so that a kernel is
// booted once for every test that compares its trace.
var recorded struct {
	sync.Mutex
	traces map[string]*trace.Trace
}

// record returns a round trip recorded on a kernel booted by start, once
// per key.
func record(t *testing.T, key string, m mechanism.Mechanism, start func(context.Context) (*session.Session, error)) *trace.Trace {
	t.Helper()
	recorded.Lock()
	defer recorded.Unlock()
	if tr := recorded.traces[key]; tr != nil {
		return tr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Second)
	defer cancel()
	s, err := start(ctx)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	defer s.Close()
	tr, err := s.RoundTrip(ctx, m)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	if tr.Header.Stop != string(trace.StopUser) {
		t.Fatalf("%s: the round trip stopped: %s", key, tr.Header.Stop)
	}
	if recorded.traces == nil {
		recorded.traces = map[string]*trace.Trace{}
	}
	recorded.traces[key] = tr
	return tr
}

func linuxTrace(t *testing.T, series string, noPTI bool) *trace.Trace {
	t.Helper()
	kernel := testenv.LinuxKernel(t, series)
	return record(t, fmt.Sprintf("linux %s nopti=%v", series, noPTI), mechanism.Syscall, func(ctx context.Context) (*session.Session, error) {
		return session.StartLinux(ctx, session.LinuxOptions{
			Options: session.Options{Accel: "tcg", Mechanism: mechanism.Syscall},
			Kernel:  kernel, NoPTI: noPTI,
		})
	})
}

func fixtureTrace(t *testing.T, m mechanism.Mechanism, append string) *trace.Trace {
	t.Helper()
	testenv.NeedQEMU(t)
	return record(t, fmt.Sprintf("fixture %s %q", m, append), m, func(ctx context.Context) (*session.Session, error) {
		return session.StartFixture(ctx, session.Options{Accel: "tcg", Mechanism: m, Append: append})
	})
}

// hunk is a maximal run of pairs that are not Equal.
type hunk []diff.Pair

func hunks(r *diff.Result) []hunk {
	var out []hunk
	var cur hunk
	for _, p := range r.Pairs {
		if p.Op == diff.Equal {
			if cur != nil {
				out = append(out, cur)
				cur = nil
			}
			continue
		}
		cur = append(cur, p)
	}
	if cur != nil {
		out = append(out, cur)
	}
	return out
}

func (h hunk) side(a bool) []int {
	var out []int
	for _, p := range h {
		if a && p.A >= 0 {
			out = append(out, p.A)
		}
		if !a && p.B >= 0 {
			out = append(out, p.B)
		}
	}
	return out
}

func decode(t *testing.T, s *trace.Step) x86asm.Inst {
	t.Helper()
	inst, _, err := annotate.Decode(s.Bytes)
	if err != nil {
		t.Fatalf("step %d (%s): %v", s.Index, s.Where(), err)
	}
	return inst
}

// movCR3 says whether inst moves to CR3 (write) or from it (read).
func movCR3(inst x86asm.Inst) (write, read bool) {
	if inst.Op != x86asm.MOV {
		return false, false
	}
	return inst.Args[0] == x86asm.CR3, inst.Args[1] == x86asm.CR3
}

func fn(s *trace.Step) string { name, _, _ := strings.Cut(s.Symbol, "+"); return name }

// TestItself: a trace against itself is equal step for step, with no
// event on one side only, on the teaching kernel and on Linux.
func TestItself(t *testing.T) {
	for _, tt := range []struct {
		name string
		tr   func(t *testing.T) *trace.Trace
	}{
		{"teaching kernel int80", func(t *testing.T) *trace.Trace { return fixtureTrace(t, mechanism.Int80, "") }},
		{"linux 6.12", func(t *testing.T) *trace.Trace { return linuxTrace(t, "6.12", false) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := tt.tr(t)
			r := diff.Compare(tr, tr)
			if !r.Total.Same() || r.Total.Equal != tr.Len() || len(r.Events) != 0 || !r.SameBuild || !r.BySymbol {
				t.Errorf("a trace of %d steps against itself: %+v, events %v, same build %v, by symbol %v",
					tr.Len(), r.Total, r.Events, r.SameBuild, r.BySymbol)
			}
			for _, p := range r.Pairs {
				if p.A != p.B {
					t.Fatalf("step %d of A paired with step %d of B", p.A, p.B)
				}
			}
		})
	}
}

// TestPTI diffs Linux 6.12 booted with pti=on (A) and pti=off (B). With
// pti=off Linux patches each SWITCH_TO_*_CR3 block's ALTERNATIVE site into
// a jmp over the block; with pti=on the site is a NOP and the block runs:
// it reads CR3 into a scratch register, changes it, and writes it back.
// So every difference must be one such block: on B's side the one jmp, on
// A's side the steps from the same site up to the jmp's target, with
// exactly one CR3 read and one CR3 write; one block for each CR3 write of
// A, and nothing else.
func TestPTI(t *testing.T) {
	a, b := linuxTrace(t, "6.12", false), linuxTrace(t, "6.12", true)
	r := diff.Compare(a, b)
	if !r.SameBuild {
		t.Fatalf("the same kernel not taken for the same build: %q, %q", a.Header.Kernel, b.Header.Kernel)
	}
	var writes []int
	for i := range a.Len() {
		if w, _ := movCR3(decode(t, a.Step(i))); w {
			writes = append(writes, i)
		}
	}
	for i := range b.Len() {
		if w, _ := movCR3(decode(t, b.Step(i))); w {
			t.Fatalf("pti=off: step %d (%s) writes CR3", i, b.Step(i).Where())
		}
	}
	hs := hunks(r)
	if len(writes) < 2 || len(hs) != len(writes) {
		t.Fatalf("A writes CR3 at steps %v; the diff has %d differing runs: %v", writes, len(hs), hs)
	}
	inHunk := map[[2]int]bool{} // {side, step}
	for k, h := range hs {
		as, bs := h.side(true), h.side(false)
		if len(bs) != 1 {
			t.Fatalf("block %d: B has %d steps %v, want the one jmp over the block", k, len(bs), bs)
		}
		jmp := b.Step(bs[0])
		inst := decode(t, jmp)
		rel, ok := inst.Args[0].(x86asm.Rel)
		if inst.Op != x86asm.JMP || !ok {
			t.Fatalf("block %d: B's step %d (%s) is %s, want a direct jmp", k, jmp.Index, jmp.Where(), jmp.ATT)
		}
		site, target := uint64(jmp.RIP), uint64(jmp.RIP)+uint64(inst.Len)+uint64(int64(rel))
		if uint64(a.Step(as[0]).RIP) != site {
			t.Errorf("block %d: A's first step %s is not at the jmp's site %#x", k, a.Step(as[0]).Where(), site)
		}
		reads, wrote := 0, 0
		for _, i := range as {
			s := a.Step(i)
			if rip := uint64(s.RIP); rip < site || rip >= target || fn(s) != fn(jmp) {
				t.Errorf("block %d: A's step %d (%s, %#x) is not in %s between the site %#x and the jmp's target %#x",
					k, i, s.Where(), rip, fn(jmp), site, target)
			}
			w, rd := movCR3(decode(t, s))
			if w {
				wrote++
			}
			if rd {
				reads++
			}
			inHunk[[2]int{0, i}] = true
		}
		if reads != 1 || wrote != 1 {
			t.Errorf("block %d: A reads CR3 %d times and writes it %d times, want once each", k, reads, wrote)
		}
		inHunk[[2]int{1, bs[0]}] = true
		// After the block both continue where the jmp goes.
		last := as[len(as)-1]
		if last+1 < a.Len() && uint64(a.Step(last+1).RIP) != target || bs[0]+1 < b.Len() && uint64(b.Step(bs[0]+1).RIP) != target {
			t.Errorf("block %d: after it A is at %s, B at %s; the jmp goes to %#x", k, a.Step(last+1).Where(), b.Step(bs[0]+1).Where(), target)
		}
	}
	for _, e := range r.Events {
		side := 0
		if e.Side == diff.SideB {
			side = 1
		}
		if !inHunk[[2]int{side, e.Step}] {
			t.Errorf("event only in %s outside the CR3 blocks: %+v", e.Side, e)
		}
	}
	var cr3 diff.EventCount
	for _, c := range r.EventCounts {
		if c.Event == annotate.EventCR3Write {
			cr3 = c
		}
	}
	if cr3.A != len(writes) || cr3.B != 0 {
		t.Errorf("CR3 writes counted %d/%d, want %d/0", cr3.A, cr3.B, len(writes))
	}
}

// TestLinux61And612 diffs Linux 6.1 (A) and 6.12 (B): the counts per
// function add up to both totals; a function whose instructions
// (canonical mnemonics in order) differ between the two is marked as
// changed; one the summary calls unchanged runs the same mnemonics in both;
// a function run in one kernel only has only added or removed steps.
func TestLinux61And612(t *testing.T) {
	a, b := linuxTrace(t, "6.1", false), linuxTrace(t, "6.12", false)
	r := diff.Compare(a, b)
	if r.SameBuild || !r.BySymbol {
		t.Fatalf("same build %v, by symbol %v: want two builds, by symbol", r.SameBuild, r.BySymbol)
	}
	mnems := func(tr *trace.Trace) map[string][]string {
		out := map[string][]string{}
		for i := range tr.Len() {
			s := tr.Step(i)
			out[fn(s)] = append(out[fn(s)], s.Mnemonic)
		}
		return out
	}
	ma, mb := mnems(a), mnems(b)
	var sum diff.Counts
	seen := map[string]bool{}
	for _, f := range r.Functions {
		seen[f.Name] = true
		sum.Equal += f.Equal
		sum.Changed += f.Changed
		sum.Removed += f.Removed
		sum.Added += f.Added
		if f.InA() != len(ma[f.Name]) || f.InB() != len(mb[f.Name]) {
			t.Errorf("%s: counted %d in A and %d in B; the traces have %d and %d", f.Name, f.InA(), f.InB(), len(ma[f.Name]), len(mb[f.Name]))
		}
		differ := !slices.Equal(ma[f.Name], mb[f.Name])
		if differ && f.Same() {
			t.Errorf("%s runs %v in 6.1 and %v in 6.12 but is not marked as changed", f.Name, ma[f.Name], mb[f.Name])
		}
		if _, inA := ma[f.Name]; !inA && f.Added != f.InB() {
			t.Errorf("%s, only in 6.12: %+v", f.Name, f.Counts)
		}
		if _, inB := mb[f.Name]; !inB && f.Removed != f.InA() {
			t.Errorf("%s, only in 6.1: %+v", f.Name, f.Counts)
		}
	}
	for name := range ma {
		if !seen[name] {
			t.Errorf("%s (6.1) is not in the summary", name)
		}
	}
	for name := range mb {
		if !seen[name] {
			t.Errorf("%s (6.12) is not in the summary", name)
		}
	}
	if sum != r.Total || sum.InA() != a.Len() || sum.InB() != b.Len() {
		t.Errorf("functions add up to %+v (A %d, B %d); total %+v; the traces have %d and %d steps",
			sum, sum.InA(), sum.InB(), r.Total, a.Len(), b.Len())
	}
	var changed []string
	for _, f := range r.Functions {
		if !f.Same() {
			changed = append(changed, f.Name)
		}
	}
	if len(changed) == 0 {
		t.Error("6.1 and 6.12 differ in no function")
	}
	// The printed summary names each of them, marked.
	var text strings.Builder
	if err := diff.WriteText(&text, r, diff.Options{NameA: "6.1", NameB: "6.12", Syntax: trace.ATT}); err != nil {
		t.Fatal(err)
	}
	for _, name := range changed {
		if !regexp.MustCompile(`(?m)^  \* ` + regexp.QuoteMeta(trace.FitWhere(name, 44)) + ` +\d`).MatchString(text.String()) {
			t.Errorf("the summary does not mark %s as changed:\n%s", name, text.String())
		}
	}
	t.Logf("functions that changed: %s", strings.Join(changed, ", "))
}

// TestNoSwapgs diffs the teaching kernel's int $0x80 round trip (A) with
// the same kernel booted with bug=int80-noswapgs (B), which overwrites the
// swapgs of the way out with a NOP of the same length: the diff is that
// one step, changed in place from a swapgs to something that is not one,
// and the events one trace has alone are A's swapgs there and the finding
// B's return to user mode draws from it.
func TestNoSwapgs(t *testing.T) {
	a := fixtureTrace(t, mechanism.Int80, "")
	b := fixtureTrace(t, mechanism.Int80, "bug=int80-noswapgs")
	r := diff.Compare(a, b)
	hs := hunks(r)
	if len(hs) != 1 || len(hs[0]) != 1 || hs[0][0].Op != diff.Changed {
		t.Fatalf("differing runs %v, want one step changed in place", hs)
	}
	p := hs[0][0]
	sa, sb := a.Step(p.A), b.Step(p.B)
	if decode(t, sa).Op != x86asm.SWAPGS || decode(t, sb).Op == x86asm.SWAPGS || sa.RIP != sb.RIP || len(sa.Bytes) != len(sb.Bytes) {
		t.Errorf("changed: A %s at %#x (%d bytes), B %s at %#x (%d bytes); want swapgs and another instruction of its length at one place",
			sa.ATT, uint64(sa.RIP), len(sa.Bytes), sb.ATT, uint64(sb.RIP), len(sb.Bytes))
	}
	var findingsA int
	for i := range a.Len() {
		if slices.Contains(a.Step(i).Events, annotate.EventFinding) {
			findingsA++
		}
	}
	if findingsA != 0 {
		t.Fatalf("A has %d findings", findingsA)
	}
	var got []string
	for _, e := range r.Events {
		got = append(got, fmt.Sprintf("%s %s %d", e.Side, e.Event, e.Step))
	}
	// B's finding is on its return to user mode, the first step after
	// the missing swapgs that changes the privilege level.
	ret := -1
	for i := p.B + 1; i < b.Len(); i++ {
		if slices.Contains(b.Step(i).Events, annotate.EventCPLChange) {
			ret = i
			break
		}
	}
	want := []string{fmt.Sprintf("a swapgs %d", p.A), fmt.Sprintf("b finding %d", ret)}
	if !slices.Equal(got, want) {
		t.Errorf("events in one trace only %q, want %q", got, want)
	}
}
