package trace

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/sctrace/sctrace/internal/termtext"
)

// Limits on what Read accepts. A trace sctrace records is far below them
// (a Linux round trip is a few hundred steps, about 1.5 KB each as JSON
// and 40 bytes in a trace file); they stop a damaged or hostile file from
// taking the machine's memory.
const (
	// MaxFileSize is the largest trace Read accepts: 1 GiB, about
	// 700,000 steps of JSON (version 1), tens of millions in a trace
	// file (version 2).
	MaxFileSize = 1 << 30
	// MaxField is the longest single JSON string (or number, or other
	// token) Read accepts in a trace: 1 MiB.
	MaxField = 1 << 20
)

// IdleTimeout is how long ReadFileContext waits for more data from a file
// that is not a regular file (a FIFO, a terminal, a device) before giving
// up: a FIFO with no writer never blocks sctrace for longer.
const IdleTimeout = 10 * time.Second

// ErrNotTrace is returned (wrapped) for a file that is not an sctrace trace.
var ErrNotTrace = errors.New("not an sctrace trace file")

// ErrTooLarge is returned (wrapped) for a trace, or a field in it, over
// MaxFileSize or MaxField.
var ErrTooLarge = errors.New("trace too large")

// ReadFile loads a trace from a file; errors name the file.
func ReadFile(path string) (*Trace, error) {
	return ReadFileContext(context.Background(), path)
}

// ReadFileContext loads a trace from a file, giving up when ctx is done.
// A file over MaxFileSize is refused before it is read. A file that is not
// a regular file (a FIFO, a character device) is opened without blocking
// and read with deadlines: ReadFileContext returns when ctx is done or no
// data came for IdleTimeout. Errors name the file.
func ReadFileContext(ctx context.Context, path string) (*Trace, error) {
	return readFile(ctx, path, IdleTimeout, false)
}

// Open loads a trace from a file to view it. A version 2 file is opened
// by its head and index: its chunks are read into memory as they are
// (compressed) and each is decoded when one of its steps is first asked
// for, so a trace of a million steps opens in a fraction of a second. A
// chunk that turns out to be damaged then reads as steps that say so in
// their effects, where ReadFile would have refused the file: use ReadFile
// to convert or export. A version 1 file is read as ReadFile reads it.
func Open(ctx context.Context, path string) (*Trace, error) {
	return readFile(ctx, path, IdleTimeout, true)
}

func readFile(ctx context.Context, path string, idle time.Duration, lazy bool) (*Trace, error) {
	// O_NONBLOCK: opening a FIFO with no writer would otherwise block in
	// the kernel, where neither ctx nor a signal can reach it.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var r io.Reader = f
	var hint int64
	switch {
	case fi.IsDir():
		return nil, fmt.Errorf("%s: is a directory, not a trace file", path)
	case fi.Mode().IsRegular():
		if fi.Size() > MaxFileSize {
			return nil, fmt.Errorf("%s: %w: the file is %s, sctrace reads at most %s",
				path, ErrTooLarge, size(fi.Size()), size(MaxFileSize))
		}
		hint = fi.Size()
	default:
		pr, err := newPollReader(ctx, f, idle)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer pr.stop()
		r = pr
	}
	t, err := readContext(ctx, r, lazy, hint)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil, fmt.Errorf("%s: reading interrupted: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// Read loads a trace written by Write (version 2) or WriteJSON (version
// 1), telling them apart by their first bytes. A file of another kind,
// another version, or with inconsistent steps gets an error that says
// which.
func Read(r io.Reader) (*Trace, error) { return ReadContext(context.Background(), r) }

// ReadContext is Read, giving up when ctx is done.
//
// Version 1 steps are decoded one at a time as they stream in, so memory
// holds the trace, not its text; a version 2 file is read whole (it is
// compact), every chunk checked and the indexes built from the steps (see
// Open for the faster way to view one). A trace over MaxFileSize bytes,
// with a single JSON field over MaxField, or with a version 2 chunk or
// index over 64 MiB decompressed, is refused with ErrTooLarge. Every string
// in the trace has its control characters escaped (see termtext.Line):
// a trace file is untrusted text that is printed to terminals. Each step's
// Op, and its Mnemonic when the file has none, are decoded from the
// step's bytes.
func ReadContext(ctx context.Context, r io.Reader) (*Trace, error) {
	return readContext(ctx, r, false, 0)
}

// readContext reads a trace of either version from r; hint is r's size,
// when known.
func readContext(ctx context.Context, r io.Reader, lazy bool, hint int64) (*Trace, error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); isGzip(magic) {
		b, err := readAllLimited(ctx, br, hint)
		if err != nil {
			return nil, err
		}
		return readV2(ctx, b, lazy)
	}
	lr := &limitReader{r: br, ctx: ctx, max: MaxFileSize}
	dec := json.NewDecoder(lr)
	t, err := decode(ctx, dec)
	if err != nil {
		return nil, readError(err, dec, lr)
	}
	return t, nil
}

// formatError is a decoding error that means the input is not a trace;
// readError turns it into an ErrNotTrace that says why.
type formatError struct{ err error }

func (e formatError) Error() string { return e.err.Error() }
func (e formatError) Unwrap() error { return e.err }

func notTrace(err error) error {
	if err == nil {
		return nil
	}
	return formatError{err}
}

func readError(err error, dec *json.Decoder, lr *limitReader) error {
	var fe formatError
	if !errors.As(err, &fe) {
		return err // ours: a corrupt step, a version, ctx
	}
	err = fe.err
	if lr.err != nil && errors.Is(err, lr.err) {
		return lr.err // reading failed, or a limit was passed: not the file's format
	}
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("%w: JSON syntax error at byte %d: %v", ErrNotTrace, se.Offset, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: the file is empty or cut short (at byte %d)", ErrNotTrace, dec.InputOffset())
	}
	return fmt.Errorf("%w: %v", ErrNotTrace, err)
}

// decode reads the trace object key by key, and the steps one by one.
func decode(ctx context.Context, dec *json.Decoder) (*Trace, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, notTrace(err)
	}
	if tok != json.Delim('{') {
		return nil, notTrace(fmt.Errorf("the file holds a JSON %s, not an object", kindOf(tok)))
	}
	var t Trace
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, notTrace(err)
		}
		key, _ := tok.(string)
		seen[key] = true
		switch key {
		case "format":
			if err := dec.Decode(&t.Format); err != nil {
				return nil, notTrace(err)
			}
			if t.Format != Format {
				return nil, notTrace(fmt.Errorf("format is %q, want %q", termtext.Line(t.Format), Format))
			}
		case "version":
			if err := dec.Decode(&t.Version); err != nil {
				return nil, notTrace(err)
			}
			// Steps of another version may not decode as ours: say
			// which version it is before trying.
			if seen["format"] && t.Version != JSONVersion {
				return nil, versionError(t.Version)
			}
		case "header":
			if err := dec.Decode(&t.Header); err != nil {
				return nil, notTrace(err)
			}
		case "steps":
			if err := decodeSteps(ctx, dec, &t); err != nil {
				return nil, err
			}
		case "probes":
			if err := dec.Decode(&t.Probes); err != nil {
				return nil, notTrace(err)
			}
		case "user_writes":
			if err := dec.Decode(&t.UserWrites); err != nil {
				return nil, notTrace(err)
			}
		case "final":
			if err := dec.Decode(&t.Final); err != nil {
				return nil, notTrace(err)
			}
		default:
			if err := skip(dec); err != nil {
				return nil, notTrace(err)
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, notTrace(err)
	}
	if t.Format != Format {
		return nil, notTrace(fmt.Errorf("format is %q, want %q", termtext.Line(t.Format), Format))
	}
	if t.Version != JSONVersion {
		return nil, versionError(t.Version)
	}
	for i, p := range t.Probes {
		if p.Step < 0 || p.Step > t.Len() {
			return nil, fmt.Errorf("corrupt trace: probe %d ran before step %d of %d", i, p.Step, t.Len())
		}
	}
	for i, w := range t.UserWrites {
		if w.Step < 0 || w.Step > t.Len() {
			return nil, fmt.Errorf("corrupt trace: write by hand %d made before step %d of %d", i, w.Step, t.Len())
		}
	}
	termtext.LineAll(&t.Header)
	termtext.LineAll(&t.Probes)
	termtext.LineAll(&t.UserWrites)
	termtext.LineAll(&t.Final)
	return &t, nil
}

func versionError(v int) error {
	if v == Version {
		return fmt.Errorf("trace version %d written as JSON: version %d files are gzip streams (Write), JSON files are version %d (WriteJSON)", v, v, JSONVersion)
	}
	return fmt.Errorf("trace version %d: this sctrace reads versions %d (JSON) and %d", v, JSONVersion, Version)
}

// decodeSteps reads the steps array one step at a time, checking each.
func decodeSteps(ctx context.Context, dec *json.Decoder, t *Trace) error {
	tok, err := dec.Token()
	if err != nil {
		return notTrace(err)
	}
	if tok == nil {
		return nil // "steps": null
	}
	if tok != json.Delim('[') {
		return notTrace(fmt.Errorf("steps is a JSON %s, not an array", kindOf(tok)))
	}
	t.st = nil
	for i := 0; dec.More(); i++ {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		var step Step
		s := &step
		if err := dec.Decode(s); err != nil {
			return notTrace(fmt.Errorf("step %d: %w", i, err))
		}
		if s.Index != i {
			return fmt.Errorf("corrupt trace: step %d has index %d", i, s.Index)
		}
		if s.Regs == nil {
			return fmt.Errorf("corrupt trace: step %d has no registers", i)
		}
		if len(s.Bytes) == 0 || len(s.Bytes) > 15 {
			return fmt.Errorf("corrupt trace: step %d has %d instruction bytes", i, len(s.Bytes))
		}
		s.decodeOp()
		termtext.LineAll(s)
		t.Append(step)
	}
	_, err = dec.Token() // the closing bracket
	return notTrace(err)
}

// skip reads past one JSON value of any kind.
func skip(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

func kindOf(tok json.Token) string {
	switch tok.(type) {
	case json.Delim:
		return "array"
	case string:
		return "string"
	case float64, json.Number:
		return "number"
	case bool:
		return "boolean"
	}
	return "null"
}

// limitError reports input over one of the limits; it wraps ErrTooLarge.
type limitError struct {
	what  string // "the trace", "a field"
	at    int64  // byte offset where the limit was passed
	limit int64
}

func (e *limitError) Error() string {
	if e.what == "" {
		return fmt.Sprintf("the trace is longer than %s, the most sctrace reads", size(e.limit))
	}
	return fmt.Sprintf("%s at byte %d is longer than %s, the most a trace field may hold",
		e.what, e.at, size(e.limit))
}

func (e *limitError) Unwrap() error { return ErrTooLarge }

// limitReader passes JSON text through, failing the read once the total
// passes max or a single string or other token passes MaxField, and once
// ctx is done. It follows just enough of JSON's lexical rules to know
// where strings start and end; the decoder checks the rest.
type limitReader struct {
	r   io.Reader
	ctx context.Context
	max int64

	err   error // the last error Read returned, io.EOF aside
	off   int64 // bytes passed through so far
	isStr bool  // the current run is a string
	inStr bool  // inside a string
	esc   bool  // inside a string, after a backslash
	run   int64 // length of the current string or token
	start int64 // where it started
}

func (l *limitReader) Read(p []byte) (int, error) {
	if err := l.ctx.Err(); err != nil {
		l.err = err
		return 0, err
	}
	n, err := l.r.Read(p)
	if lerr := l.scan(p[:n]); lerr != nil {
		l.err = lerr
		return 0, lerr
	}
	if err != nil && err != io.EOF {
		l.err = err
	}
	return n, err
}

func (l *limitReader) scan(p []byte) error {
	if l.off+int64(len(p)) > l.max {
		return &limitError{limit: l.max}
	}
	for i := 0; i < len(p); i++ {
		b := p[i]
		switch {
		case l.esc:
			l.esc = false
			l.run++
		case l.inStr:
			// Jump to the next quote or backslash: strings are most of
			// a trace.
			j := i
			for j < len(p) && p[j] != '"' && p[j] != '\\' {
				j++
			}
			l.run += int64(j - i)
			if j < len(p) {
				if p[j] == '"' {
					l.inStr = false
				} else {
					l.esc = true
					l.run++
				}
			}
			i = j
		case b == '"':
			l.inStr, l.isStr, l.run, l.start = true, true, 0, l.off+int64(i)
		case b == ' ' || b == '\n' || b == '\r' || b == '\t' ||
			b == '{' || b == '}' || b == '[' || b == ']' || b == ',' || b == ':':
			l.run = 0
		default:
			if l.run == 0 {
				l.isStr, l.start = false, l.off+int64(i)
			}
			l.run++
		}
		if l.run > MaxField {
			what := "a token"
			if l.isStr {
				what = "a string"
			}
			return &limitError{what: what, at: l.start, limit: MaxField}
		}
	}
	l.off += int64(len(p))
	return nil
}

// size formats a byte count in binary units.
func size(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// pollReader reads a file that is not a regular file (a FIFO, a terminal)
// through the runtime's poller, so that every read has a deadline: no data
// for idle, or ctx done, ends it.
type pollReader struct {
	ctx  context.Context
	f    *os.File
	rc   syscall.RawConn
	idle time.Duration
	stop func() bool
	got  bool // something has been read: an empty read is now the end
	// pollable is set when the runtime's poller can wait on f (FIFOs,
	// terminals); devices it cannot (/dev/null, /dev/zero) are read as
	// they come.
	pollable bool
}

func newPollReader(ctx context.Context, f *os.File, idle time.Duration) (*pollReader, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	p := &pollReader{ctx: ctx, f: f, rc: rc, idle: idle}
	p.pollable = !errors.Is(f.SetReadDeadline(time.Time{}), os.ErrNoDeadline)
	// Wake a read that waits, when ctx is done.
	p.stop = context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Now()) })
	return p, nil
}

func (p *pollReader) Read(b []byte) (int, error) {
	if err := p.f.SetReadDeadline(time.Now().Add(p.idle)); err != nil && !errors.Is(err, os.ErrNoDeadline) {
		return 0, err
	}
	if err := p.ctx.Err(); err != nil { // after the deadline is set: see newPollReader
		return 0, err
	}
	var (
		n    int
		rerr error
	)
	err := p.rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), b)
		switch {
		case rerr == syscall.EAGAIN, rerr == syscall.EINTR:
			return false // wait for data
		case n == 0 && rerr == nil && !p.got && p.pollable:
			// A FIFO with no writer yet reads as empty: wait for one
			// rather than take it for an empty file.
			return false
		}
		return true
	})
	switch {
	case err != nil && p.ctx.Err() != nil:
		return 0, p.ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, fmt.Errorf("no data for %v (is anything writing to it?)", p.idle)
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, rerr
	case n <= 0:
		return 0, io.EOF
	}
	p.got = true
	return n, nil
}
