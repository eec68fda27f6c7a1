package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sctrace/sctrace/accel"
	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/qemu"
)

// TestRunFixtureTCG boots the teaching kernel for a short bench run and
// checks that every mechanism and path is reported, measured and parsed.
// It asserts no timing.
func TestRunFixtureTCG(t *testing.T) {
	testenv.NeedQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var progress []Progress
	rep, err := Run(ctx, Config{
		Targets: []string{TargetFixture}, Iters: 100, Kernel: kernel.ELF, Accel: "tcg",
		Progress: func(p Progress) { progress = append(progress, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != 1 || rep.Interrupted {
		t.Fatalf("%d targets, interrupted %v", len(rep.Targets), rep.Interrupted)
	}
	tr := rep.Targets[0]
	if tr.Error != "" {
		t.Fatal(tr.Error)
	}
	if len(tr.Series) != len(guestSeries) {
		t.Errorf("%d series, want %d", len(tr.Series), len(guestSeries))
	}
	for _, g := range guestSeries {
		s := tr.Find(g.mech, g.path)
		switch {
		case s == nil:
			t.Errorf("mech=%s path=%s missing", g.mech, g.path)
		case s.Status != StatusOK || !s.Measured() || s.Stats.N != 100 || len(s.Samples) != 100:
			t.Errorf("mech=%s path=%s: status %q (%s), %d samples", g.mech, g.path, s.Status, s.Reason, len(s.Samples))
		case s.GuestMismatch != "":
			t.Errorf("mech=%s path=%s: %s", g.mech, g.path, s.GuestMismatch)
		}
	}
	if rep.Env.Guest == nil || !rep.Env.Guest.TCG() || !tr.Emulated {
		t.Errorf("guest CPU %+v, emulated %v: want the TCG signature noticed", rep.Env.Guest, tr.Emulated)
	}
	if rep.Env.Accel != "tcg" || rep.Env.GuestCPUModel != qemu.DefaultCPU {
		t.Errorf("accel %q, cpu %q", rep.Env.Accel, rep.Env.GuestCPUModel)
	}
	if last := progress[len(progress)-1]; last.Done != last.Total || last.Total != len(guestSeries) {
		t.Errorf("last progress %+v, want %d of %d", last, len(guestSeries), len(guestSeries))
	}
}

// TestRunFixtureInterrupted cancels the run after the first series and
// checks that what was measured is kept and the rest is marked.
func TestRunFixtureInterrupted(t *testing.T) {
	testenv.NeedQEMU(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rep, err := Run(ctx, Config{
		Targets: []string{TargetFixture}, Iters: 5000, Kernel: kernel.ELF, Accel: "tcg",
		Progress: func(p Progress) {
			if p.Done >= 1 {
				cancel()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tr := rep.Targets[0]
	if !rep.Interrupted || !tr.Interrupted {
		t.Fatalf("interrupted %v/%v, want true", rep.Interrupted, tr.Interrupted)
	}
	if s := tr.Series[0]; !s.Measured() {
		t.Errorf("first series %s %s not kept: %s", s.Mech, s.Path, s.Reason)
	}
	last := tr.Series[len(tr.Series)-1]
	if last.Status != StatusNotMeasured || !strings.Contains(last.Reason, "interrupted") {
		t.Errorf("last series: status %q, reason %q", last.Status, last.Reason)
	}
}

func TestRunGuestErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  GuestConfig
		want string
	}{
		{"no kernel", GuestConfig{Iters: 10}, "no teaching kernel"},
		{"too many iterations", GuestConfig{Iters: MaxGuestIters + 1, Kernel: kernel.ELF}, "out of range"},
		{"zero iterations", GuestConfig{Kernel: kernel.ELF}, "out of range"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := RunGuest(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestRunConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{Targets: []string{"moon"}}, `unknown target "moon"`},
		{Config{Iters: -1}, "want at least 1"},
		{Config{Iters: MaxGuestIters + 1}, "at most"},
	} {
		if _, err := Run(context.Background(), tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Run(%+v) error %v, want one containing %q", tt.cfg, err, tt.want)
		}
	}
}

// reportFromCapture builds a report from the committed kernel capture,
// with no QEMU run.
func reportFromCapture(t *testing.T) *Report {
	t.Helper()
	b, err := os.ReadFile(captureFile)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseGuest(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	env := &Environment{
		HostCPU: "Test CPU", HostCPUs: 2, HostKernel: "Linux 6.1", PTI: "on", QEMU: "QEMU emulator version 7.2",
		Accel: "tcg", AccelNote: "tcg (requested)", KVM: "not usable: test", GuestCPUModel: qemu.DefaultCPU,
		Guest: out.CPU, TSC: TSCInfo{MHz: 2000, Source: "test"},
		Mitigations: []Vuln{{"meltdown", "Mitigation: PTI"}, {"mds", "Not affected"}},
	}
	tr := &TargetResult{Name: TargetFixture, Title: "Teaching kernel", Emulated: true, Series: fixtureSeries(out, false, "")}
	tr.Series = append(tr.Series, &Series{Mech: "int80", Path: "getpid", Status: StatusNotMeasured, Reason: "not allowed by this kernel"})
	return &Report{Version: ReportVersion, Iters: 100, Env: env, Targets: []*TargetResult{tr}}
}

func TestWriteText(t *testing.T) {
	rep := reportFromCapture(t)
	var buf bytes.Buffer
	if err := WriteText(&buf, rep); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	for _, want := range []string{
		"Environment", "Mitigation: PTI", "(1 more: Not affected)", "TCGTCGTCGTCG",
		"EMULATION COST (TCG), NOT HARDWARE", "Breakdown", "log scale",
		"int80 getpid", "not measured: not allowed by this kernel",
		"J. Stecklina", fmt.Sprintf("agrees for %d of %d series", len(guestSeries), len(guestSeries)),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text report lacks %q", want)
		}
	}
	for _, g := range guestSeries {
		if !strings.Contains(text, "\n  "+g.mech+" "+g.path+" ") {
			t.Errorf("text report has no table row for %s %s", g.mech, g.path)
		}
	}
}

func TestWriteJSONRoundTrip(t *testing.T) {
	rep := reportFromCapture(t)
	var buf bytes.Buffer
	if err := WriteJSON(&buf, rep); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	got, want := back.Targets[0].Find("syscall", "bare"), rep.Targets[0].Find("syscall", "bare")
	if got == nil || len(got.Samples) != len(want.Samples) || *got.Stats != *want.Stats || *got.Guest != *want.Guest {
		t.Errorf("syscall bare after a JSON round trip: %+v, want %+v", got, want)
	}
}

func TestWriteSVG(t *testing.T) {
	rep := reportFromCapture(t)
	var buf bytes.Buffer
	if err := WriteSVG(&buf, rep); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&buf)
	labels := map[string]bool{}
	var inText bool
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			inText = tok.Name.Local == "text"
		case xml.CharData:
			if inText {
				labels[string(tok)] = true
			}
		case xml.EndElement:
			inText = false
		}
	}
	for _, g := range guestSeries {
		if !labels[g.mech+" "+g.path] {
			t.Errorf("SVG has no row labelled %q", g.mech+" "+g.path)
		}
	}
}

func TestScale(t *testing.T) {
	lin := newScale(10, 100, 50)
	log := newScale(10, 100000, 40)
	for _, tt := range []struct {
		s    scale
		v    int64
		want int
	}{
		{lin, 0, 0}, {lin, 50, 25}, {lin, 100, 50}, {lin, 1000, 50},
		// The log scale starts a decade below half the smallest value: 1..100000.
		{log, 1, 0}, {log, 10, 8}, {log, 100, 16}, {log, 100000, 40}, {log, -5, 0},
	} {
		if got := tt.s.pos(tt.v); got != tt.want {
			t.Errorf("%s scale pos(%d) = %d, want %d", tt.s.kind(), tt.v, got, tt.want)
		}
	}
}

func BenchmarkSummarize2000(b *testing.B) {
	in := make([]int64, 2000)
	for i := range in {
		in[i] = int64(i*7919%2000) + 60
	}
	for b.Loop() {
		if _, err := Summarize(in); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRunFixtureAccelChoice runs the bench with an injected KVM check:
// auto falls back to TCG with the check's reason in the environment block
// when KVM does not work, and --accel kvm is then refused with that reason
// before any QEMU starts. Where KVM works (the check says so), auto would
// boot under KVM, which this host may not have: that case is covered by
// accel.TestChoose.
func TestRunFixtureAccelChoice(t *testing.T) {
	testenv.NeedQEMU(t)
	broken := accel.CheckerFunc(func(context.Context) accel.Verdict {
		return accel.Verdict{Reason: "kvm present but its selftest failed: unexpected exception #PF"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := Run(ctx, Config{Targets: []string{TargetFixture}, Iters: 20, Kernel: kernel.ELF, Accel: accel.Auto, KVMCheck: broken})
	if err != nil {
		t.Fatal(err)
	}
	if tr := rep.Targets[0]; tr.Error != "" || rep.Env.Accel != accel.TCG || !strings.Contains(rep.Env.AccelNote, "#PF") || !strings.Contains(rep.Env.KVM, "does not work") {
		t.Errorf("auto with a failing KVM: error %q, accel %q (%s), KVM %q; want TCG with the reason", tr.Error, rep.Env.Accel, rep.Env.AccelNote, rep.Env.KVM)
	}
	rep, err = Run(ctx, Config{Targets: []string{TargetFixture}, Iters: 20, Kernel: kernel.ELF, Accel: accel.KVM, KVMCheck: broken})
	if rep != nil || err == nil || !strings.Contains(err.Error(), "KVM does not work on this host") || !strings.Contains(err.Error(), "#PF") {
		t.Errorf("--accel kvm with a failing KVM: report %v, error %v; want no report and the reason", rep != nil, err)
	}
}

// TestWriteTextRatiosAnchorsNegatives checks three things a reader of the
// table relies on: each syscall row's ×syscall is 1.00, being its own
// base (bare against bare, a breakdown step against itself); every anchor
// in the legend says what its figure is, so no line ends in a dangling
// word; and a series with samples below zero (the capture's vdso full,
// less than one timer step above the empty window) is explained in a
// note with its count, not hidden.
func TestWriteTextRatiosAnchorsNegatives(t *testing.T) {
	rep := reportFromCapture(t)
	var buf bytes.Buffer
	if err := WriteText(&buf, rep); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	lines := strings.Split(text, "\n")
	// Columns right-aligned: a row's ×syscall ends where the header's does.
	end := -1
	for _, l := range lines {
		r := []rune(l)
		if h := strings.Index(l, "×syscall"); h >= 0 && strings.HasPrefix(strings.TrimSpace(l), "series") {
			end = utf8.RuneCountInString(l[:h]) + utf8.RuneCountInString("×syscall")
			continue
		}
		f := strings.Fields(l)
		if end < 0 || len(r) < end || len(f) < 2 || f[0] != "syscall" {
			continue
		}
		cell := strings.Fields(string(r[:end]))
		if got := cell[len(cell)-1]; got != "1.00" {
			t.Errorf("%s %s: ×syscall %s, want 1.00 (its own base)", f[0], f[1], got)
		}
	}
	if end < 0 {
		t.Fatal("no table header with ×syscall")
	}
	inLegend := false
	for _, l := range lines {
		if strings.Contains(l, "anchors (TSC ticks") {
			inLegend = true
			continue
		}
		if !inLegend || !strings.HasPrefix(strings.TrimSpace(l), "[") {
			inLegend = false
			continue
		}
		if w := strings.Fields(l); w[len(w)-1] == "about" {
			t.Errorf("anchor legend line %q ends in %q with no figure", l, "about")
		}
	}
	vdso := rep.Targets[0].Find("vdso", "full")
	neg := 0
	for _, v := range vdso.Samples {
		if v < 0 {
			neg++
		}
	}
	if neg == 0 {
		t.Fatal("the capture's vdso full has no sample below zero; the test needs one")
	}
	want := fmt.Sprintf("vdso full: %d of %d samples are below zero (min %d)", neg, len(vdso.Samples), vdso.Stats.Min)
	if !strings.Contains(strings.Join(strings.Fields(text), " "), want) {
		t.Errorf("text report lacks the note %q", want)
	}
}
