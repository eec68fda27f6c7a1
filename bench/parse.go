package bench

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// GuestCPU is what the teaching kernel's bench mode reports about the CPU
// it runs on: the CPUID vendor string, the hypervisor signature from CPUID
// leaf 0x40000000 ("none" when CPUID.1:ECX[31] is clear) and the
// instruction that closes each timed window (rdtscp, or lfence+rdtsc when
// the CPU has no RDTSCP).
type GuestCPU struct {
	Vendor     string `json:"vendor"`
	Hypervisor string `json:"hypervisor"`
	Timer      string `json:"timer"`
}

// TCG reports whether the hypervisor signature is QEMU's TCG emulator.
func (c GuestCPU) TCG() bool { return c.Hypervisor == "TCGTCGTCGTCG" }

// GuestSummary is the summary line the guest printed for one series: its
// own statistics (nearest-rank percentiles, integer mean) and the median of
// the empty-call baseline it subtracted from every sample.
type GuestSummary struct {
	N        int   `json:"n"`
	Min      int64 `json:"min"`
	Median   int64 `json:"median"`
	P90      int64 `json:"p90"`
	P99      int64 `json:"p99"`
	Mean     int64 `json:"mean"`
	Baseline int64 `json:"baseline"`
}

// GuestSeries is one mechanism and entry path as the guest reported it.
type GuestSeries struct {
	Mech string // vdso, syscall, int80, sysenter, callgate, ud2
	Path string // full, bare, +swapgs, +cr3, +stack, +regs
	// Status is empty when the series was measured, otherwise the guest's
	// status word (unsupported, error).
	Status  string
	Summary GuestSummary
	// Samples are the raw per-call times in TSC ticks, baseline already
	// subtracted by the guest, in the order they were taken.
	Samples []int64

	parts, partsSeen int
}

// Complete reports whether every sample announced in the summary line has
// arrived.
func (s *GuestSeries) Complete() bool {
	return s.Status != "" || len(s.Samples) == s.Summary.N
}

// GuestOutput is the parsed bench output of one run of the teaching kernel.
type GuestOutput struct {
	CPU    *GuestCPU
	Series []*GuestSeries
	// Done is true when the guest printed its final "bench done" line.
	Done bool
}

// Find returns the series for mech and path, or nil.
func (o *GuestOutput) Find(mech, path string) *GuestSeries {
	for _, s := range o.Series {
		if s.Mech == mech && s.Path == path {
			return s
		}
	}
	return nil
}

// Parser reads the teaching kernel's bench output line by line. Lines that
// start with neither "bench " nor "samples " (boot messages) are ignored;
// those that do must be well formed.
//
// The format, one line each:
//
//	bench cpu vendor=V hypervisor=H tsc=rdtscp|rdtsc
//	bench mech=M path=P n=N min=.. median=.. p90=.. p99=.. mean=.. baseline=..
//	bench mech=M path=P status=unsupported|error
//	samples mech=M path=P part=I/K v1 v2 ...
//	bench done
type Parser struct {
	out  GuestOutput
	line int
	// OnSeries, when set, is called each time a series is complete.
	OnSeries func(*GuestSeries)
}

// Output returns what has been parsed so far.
func (p *Parser) Output() *GuestOutput { return &p.out }

// Line parses one line of serial output (without its newline).
func (p *Parser) Line(text string) error {
	p.line++
	text = strings.TrimRight(text, "\r")
	var err error
	switch {
	case strings.HasPrefix(text, "bench "):
		err = p.bench(strings.Fields(text)[1:])
	case strings.HasPrefix(text, "samples "):
		err = p.samples(strings.Fields(text)[1:])
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("bench output line %d %q: %w", p.line, clip(text, 80), err)
	}
	return nil
}

func (p *Parser) bench(f []string) error {
	if len(f) == 0 {
		return fmt.Errorf("empty bench line")
	}
	if p.out.Done {
		return fmt.Errorf("bench line after \"bench done\"")
	}
	switch f[0] {
	case "done":
		if len(f) != 1 {
			return fmt.Errorf("unexpected fields after \"bench done\"")
		}
		for _, s := range p.out.Series {
			if !s.Complete() {
				return fmt.Errorf("bench done, but mech=%s path=%s has %d of %d samples",
					s.Mech, s.Path, len(s.Samples), s.Summary.N)
			}
		}
		p.out.Done = true
		return nil
	case "cpu":
		kv, err := fields(f[1:], "vendor", "hypervisor", "tsc")
		if err != nil {
			return err
		}
		p.out.CPU = &GuestCPU{Vendor: kv["vendor"], Hypervisor: kv["hypervisor"], Timer: kv["tsc"]}
		return nil
	}
	if _, ok := strings.CutPrefix(f[0], "mech="); !ok {
		return fmt.Errorf("unknown bench line")
	}
	s := &GuestSeries{}
	if len(f) == 3 {
		kv, err := fields(f, "mech", "path", "status")
		if err != nil {
			return err
		}
		s.Mech, s.Path, s.Status = kv["mech"], kv["path"], kv["status"]
	} else {
		kv, err := fields(f, "mech", "path", "n", "min", "median", "p90", "p99", "mean", "baseline")
		if err != nil {
			return err
		}
		s.Mech, s.Path = kv["mech"], kv["path"]
		n, err := strconv.Atoi(kv["n"])
		if err != nil || n <= 0 {
			return fmt.Errorf("n=%q: want a positive integer", kv["n"])
		}
		s.Summary.N = n
		for _, d := range []struct {
			key string
			dst *int64
		}{
			{"min", &s.Summary.Min}, {"median", &s.Summary.Median}, {"p90", &s.Summary.P90},
			{"p99", &s.Summary.P99}, {"mean", &s.Summary.Mean}, {"baseline", &s.Summary.Baseline},
		} {
			v, err := strconv.ParseInt(kv[d.key], 10, 64)
			if err != nil {
				return fmt.Errorf("%s=%q: not an integer", d.key, kv[d.key])
			}
			*d.dst = v
		}
		s.Samples = make([]int64, 0, n)
	}
	if s.Mech == "" || s.Path == "" {
		return fmt.Errorf("empty mech or path")
	}
	if p.out.Find(s.Mech, s.Path) != nil {
		return fmt.Errorf("mech=%s path=%s reported twice", s.Mech, s.Path)
	}
	for _, old := range p.out.Series {
		if !old.Complete() {
			return fmt.Errorf("mech=%s path=%s starts before mech=%s path=%s has all its samples (%d of %d)",
				s.Mech, s.Path, old.Mech, old.Path, len(old.Samples), old.Summary.N)
		}
	}
	p.out.Series = append(p.out.Series, s)
	if s.Status != "" && p.OnSeries != nil {
		p.OnSeries(s)
	}
	return nil
}

func (p *Parser) samples(f []string) error {
	if len(f) < 2 {
		return fmt.Errorf("want mech=, path= and values")
	}
	kv, err := fields(f[:2], "mech", "path")
	if err != nil {
		return err
	}
	s := p.out.Find(kv["mech"], kv["path"])
	switch {
	case s == nil:
		return fmt.Errorf("samples for mech=%s path=%s before its bench line", kv["mech"], kv["path"])
	case s.Status != "":
		return fmt.Errorf("samples for mech=%s path=%s, reported %s", s.Mech, s.Path, s.Status)
	}
	vals := f[2:]
	if len(vals) > 0 {
		if part, ok := strings.CutPrefix(vals[0], "part="); ok {
			vals = vals[1:]
			i, k, err := parsePart(part)
			if err != nil {
				return err
			}
			if s.parts == 0 {
				s.parts = k
			}
			if k != s.parts || i != s.partsSeen+1 {
				return fmt.Errorf("part %d/%d out of order (after part %d/%d)", i, k, s.partsSeen, s.parts)
			}
			s.partsSeen = i
		}
	}
	for _, v := range vals {
		x, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("sample %q: not an integer", v)
		}
		s.Samples = append(s.Samples, x)
	}
	if len(s.Samples) > s.Summary.N {
		return fmt.Errorf("mech=%s path=%s: %d samples, more than n=%d", s.Mech, s.Path, len(s.Samples), s.Summary.N)
	}
	if s.Complete() && p.OnSeries != nil {
		p.OnSeries(s)
	}
	return nil
}

func parsePart(part string) (i, k int, err error) {
	a, b, ok := strings.Cut(part, "/")
	if ok {
		i, err = strconv.Atoi(a)
		if err == nil {
			k, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil || i < 1 || k < i {
		return 0, 0, fmt.Errorf("part=%q: want I/K with 1 <= I <= K", part)
	}
	return i, k, nil
}

// fields parses key=value words, which must be exactly the keys given,
// in that order.
func fields(words []string, keys ...string) (map[string]string, error) {
	if len(words) != len(keys) {
		return nil, fmt.Errorf("want %d fields (%s), got %d", len(keys), strings.Join(keys, " "), len(words))
	}
	kv := make(map[string]string, len(keys))
	for i, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok || k != keys[i] {
			return nil, fmt.Errorf("field %d is %q, want %s=...", i+1, w, keys[i])
		}
		kv[k] = v
	}
	return kv, nil
}

// ParseGuest reads a whole capture of the teaching kernel's serial output.
// A capture that ends before "bench done" is not an error: Done is false
// and the last series may be partial.
func ParseGuest(r io.Reader) (*GuestOutput, error) {
	var p Parser
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if err := p.Line(sc.Text()); err != nil {
			return p.Output(), err
		}
	}
	if err := sc.Err(); err != nil {
		return p.Output(), fmt.Errorf("read bench output: %w", err)
	}
	return p.Output(), nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Check compares the guest's summary line with statistics computed here
// from the raw samples, and says where they differ. A difference means a
// lost or garbled sample line, or a statistics bug on one side.
func (s *GuestSeries) Check() error {
	if s.Status != "" || len(s.Samples) == 0 {
		return nil
	}
	st, err := Summarize(s.Samples)
	if err != nil {
		return fmt.Errorf("mech=%s path=%s: %w", s.Mech, s.Path, err)
	}
	var sum int64
	for _, v := range s.Samples {
		sum += v
	}
	g := s.Summary
	ours := GuestSummary{N: st.N, Min: st.Min, Median: st.Median, P90: st.P90, P99: st.P99,
		Mean: sum / int64(len(s.Samples)), Baseline: g.Baseline}
	if ours != g {
		return fmt.Errorf("mech=%s path=%s: the guest printed %+v, the samples give %+v", s.Mech, s.Path, g, ours)
	}
	return nil
}
