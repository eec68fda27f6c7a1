package trace

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sctrace/sctrace/annotate"
)

var update = flag.Bool("update", false, "rewrite testdata/hostile.json")

// hostile is what testdata/hostile.json puts in every string of a trace:
// an OSC sequence that retitles the terminal.
const hostile = "\x1b]0;pwned\x07"

// poison prefixes every settable string reachable from v with hostile,
// map keys included; Trace.Format is left alone so that the file still
// reads as a trace.
func poison(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		if v.CanSet() {
			v.SetString(hostile + v.String())
		}
	case reflect.Pointer:
		if !v.IsNil() {
			poison(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() && v.Type().Field(i).Name != "Format" {
				poison(v.Field(i))
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			poison(v.Index(i))
		}
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String || v.Type().Elem().Kind() != reflect.String {
			return // register names are checked on reading: keep them
		}
		for _, k := range v.MapKeys() {
			e := v.MapIndex(k)
			v.SetMapIndex(k, reflect.Value{})
			v.SetMapIndex(reflect.ValueOf(hostile+k.String()).Convert(k.Type()), reflect.ValueOf(hostile+e.String()).Convert(e.Type()))
		}
	}
}

// hostileTrace is testdata/int80.json with hostile in every string field,
// and a stepped-over call and an MSR probe so that those strings are
// there too.
func hostileTrace(t testing.TB) []byte {
	tr := readTestTrace(t)
	tr = edit(tr, 1, func(s *Step) { s.Over = &Over{Target: "do_int80", Depth: 1} })
	tr.Probes = []Probe{{Step: 2, At: "0x1000 <entry>", Effects: []annotate.Effect{{Kind: annotate.KindMSR, Text: "IA32_LSTAR = 0x1000 (probed)", Verdict: annotate.Finding}}}}
	tr.Header.Stop = "back in user mode"
	tr = edit(tr, 2, func(s *Step) {
		s.Effects = append(s.Effects, annotate.Effect{Kind: annotate.KindCheck, Text: "made up", Verdict: annotate.Finding})
	})
	steps := stepsOf(tr)
	poison(reflect.ValueOf(tr))
	for i := range steps {
		poison(reflect.ValueOf(&steps[i]))
	}
	tr = withSteps(tr, steps)
	var b bytes.Buffer
	if err := tr.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestHostileTestdata keeps testdata/hostile.json (read by the tui and
// cmd/sctrace tests too) what hostileTrace makes; -update rewrites it.
func TestHostileTestdata(t *testing.T) {
	want := hostileTrace(t)
	if *update {
		if err := os.WriteFile("testdata/hostile.json", want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("testdata/hostile.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("testdata/hostile.json is out of date: go test ./trace -run TestHostileTestdata -update")
	}
	if !bytes.Contains(got, []byte(`\u001b]0;pwned\u0007`)) {
		t.Error("testdata/hostile.json holds no escape sequence")
	}
}

// hasControl reports whether s holds a byte a terminal acts on.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		return r < 0x20 && r != '\n' && r != '\t' || r >= 0x7f && r <= 0x9f
	})
}

// stringsIn returns every string reachable from v.
func stringsIn(v reflect.Value) []string {
	var out []string
	switch v.Kind() {
	case reflect.String:
		out = append(out, v.String())
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			out = stringsIn(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				out = append(out, stringsIn(v.Field(i))...)
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			out = append(out, stringsIn(v.Index(i))...)
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			out = append(out, stringsIn(it.Key())...)
			out = append(out, stringsIn(it.Value())...)
		}
	}
	return out
}

func TestReadEscapesControlCharacters(t *testing.T) {
	tr, err := ReadFile("testdata/hostile.json")
	if err != nil {
		t.Fatal(err)
	}
	// The same trace saved as version 2 with its strings as they were
	// before reading (the payload's control characters included) must be
	// escaped the same way when read.
	raw := withSteps(tr, nil)
	raw.Header.Stop = "\x1b]0;pwned\x07 \x1b]0;pwned\x07"
	for _, s := range tr.All() {
		c := *s
		c.Symbol = strings.ReplaceAll(c.Symbol, `\x1b]0;pwned\x07`, "\x1b]0;pwned\x07")
		c.Effects = slices.Clone(c.Effects)
		for i := range c.Effects {
			c.Effects[i].Text = strings.ReplaceAll(c.Effects[i].Text, `\x1b]0;pwned\x07`, "\x1b]0;pwned\x07")
		}
		raw.Append(c)
	}
	var v2 bytes.Buffer
	if err := raw.Write(&v2); err != nil {
		t.Fatal(err)
	}
	back, err := Read(&v2)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []*Trace{tr, back} {
		checkEscaped(t, tr)
	}
}

func checkEscaped(t *testing.T, tr *Trace) {
	t.Helper()
	all := stringsIn(reflect.ValueOf(tr))
	for _, s := range tr.All() {
		all = append(all, stringsIn(reflect.ValueOf(s))...)
	}
	poisoned := 0
	for _, s := range all {
		if hasControl(s) {
			t.Errorf("string %q still holds a control character", s)
		}
		if strings.Contains(s, `\x1b]0;pwned\x07`) {
			poisoned++
		}
	}
	if poisoned < 20 {
		t.Errorf("only %d of %d strings carry the escaped payload: the test trace is not hostile enough", poisoned, len(all))
	}
	for _, f := range []struct {
		name  string
		write func(*bytes.Buffer) error
	}{
		{"text", func(b *bytes.Buffer) error { return WriteText(b, tr, ATT) }},
		{"markdown", func(b *bytes.Buffer) error { return WriteMarkdown(b, tr, Intel) }},
		{"json", func(b *bytes.Buffer) error { return tr.WriteJSON(b) }},
	} {
		var b bytes.Buffer
		if err := f.write(&b); err != nil {
			t.Fatal(err)
		}
		if i := strings.IndexAny(b.String(), "\x1b\x07"); i >= 0 {
			t.Errorf("%s output holds a control byte at %d: %q", f.name, i, b.String()[max(0, i-20):i+20])
		}
		if !strings.Contains(b.String(), "pwned") {
			t.Errorf("%s output lost the (escaped) text", f.name)
		}
	}
}

func TestReadLimits(t *testing.T) {
	good, err := os.ReadFile("testdata/int80.json")
	if err != nil {
		t.Fatal(err)
	}
	withTarget := func(s string) string {
		return strings.Replace(string(good), `"target": "qemu gdbstub at 127.0.0.1:44387"`, `"target": `+s, 1)
	}
	tests := []struct {
		name, in, want string
	}{
		{"string at the limit", withTarget(`"` + strings.Repeat("a", MaxField) + `"`), ""},
		{"string over the limit", withTarget(`"` + strings.Repeat("a", MaxField+1) + `"`), "a string at byte 172 is longer than 1 MiB"},
		{"escapes count", withTarget(`"` + strings.Repeat(`\n`, MaxField/2+1) + `"`), "a string at byte 172 is longer than 1 MiB"},
		{"number over the limit", withTarget(strings.Repeat("1", MaxField+1)), "a token at byte 172 is longer than 1 MiB"},
		{"key over the limit", `{"` + strings.Repeat("k", MaxField+1) + `": 1}`, "a string at byte 1 is longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(tt.in))
			if tt.want == "" {
				if errors.Is(err, ErrTooLarge) {
					t.Fatalf("Read = %v, want no size error", err)
				}
				return
			}
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Read = %v, want ErrTooLarge containing %q", err, tt.want)
			}
			if errors.Is(err, ErrNotTrace) {
				t.Errorf("a size error also says not a trace: %v", err)
			}
		})
	}
}

func TestLimitReaderTotal(t *testing.T) {
	good, err := os.ReadFile("testdata/int80.json")
	if err != nil {
		t.Fatal(err)
	}
	lr := &limitReader{r: bytes.NewReader(good), ctx: context.Background(), max: int64(len(good)) - 1}
	_, err = ReadContext(context.Background(), lr)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "the trace is longer than") {
		t.Errorf("reading past the total limit = %v", err)
	}
}

func TestReadFileTooLarge(t *testing.T) {
	name := filepath.Join(t.TempDir(), "huge.json")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	// A sparse file: its size is over the limit, its blocks are not.
	if err := f.Truncate(MaxFileSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = ReadFile(name)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "trace too large: the file is 1.00 GiB, sctrace reads at most 1 GiB") {
		t.Errorf("ReadFile of a 1 GiB + 1 file = %v", err)
	}
}

func TestReadFileDevice(t *testing.T) {
	if _, err := ReadFile("/dev/null"); !errors.Is(err, ErrNotTrace) || !strings.Contains(err.Error(), "empty") {
		t.Errorf("ReadFile(/dev/null) = %v, want an empty file", err)
	}
	if _, err := ReadFile("/dev/zero"); !errors.Is(err, ErrNotTrace) || !strings.Contains(err.Error(), "syntax error") {
		t.Errorf("ReadFile(/dev/zero) = %v, want a syntax error", err)
	}
}

func TestReadFileDirectory(t *testing.T) {
	if _, err := ReadFile(t.TempDir()); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("ReadFile of a directory = %v", err)
	}
}

func mkfifo(t *testing.T) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(name, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	return name
}

func TestReadFileFIFO(t *testing.T) {
	good, err := os.ReadFile("testdata/int80.json")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("writer comes later", func(t *testing.T) {
		name := mkfifo(t)
		errc := make(chan error, 1)
		go func() {
			time.Sleep(200 * time.Millisecond)
			f, err := os.OpenFile(name, os.O_WRONLY, 0)
			if err != nil {
				errc <- err
				return
			}
			_, err = f.Write(good)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			errc <- err
		}()
		tr, err := readFile(context.Background(), name, 5*time.Second, false)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Len() != 81 {
			t.Errorf("%d steps", tr.Len())
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no writer, cancelled", func(t *testing.T) {
		name := mkfifo(t)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		_, err := readFile(ctx, name, time.Minute, false)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ReadFile = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("cancelling took %v", d)
		}
	})
	t.Run("no writer, idle", func(t *testing.T) {
		name := mkfifo(t)
		_, err := readFile(context.Background(), name, 200*time.Millisecond, false)
		if err == nil || !strings.Contains(err.Error(), "no data for 200ms") || !strings.Contains(err.Error(), name) {
			t.Errorf("ReadFile = %v, want a timeout naming the file", err)
		}
	})
	t.Run("writer stalls", func(t *testing.T) {
		name := mkfifo(t)
		done := make(chan struct{})
		defer close(done)
		go func() {
			f, err := os.OpenFile(name, os.O_WRONLY, 0)
			if err != nil {
				return
			}
			defer f.Close()
			f.Write(good[:100])
			<-done
		}()
		_, err := readFile(context.Background(), name, 300*time.Millisecond, false)
		if err == nil || !strings.Contains(err.Error(), "no data for 300ms") {
			t.Errorf("ReadFile = %v, want a timeout", err)
		}
	})
}
