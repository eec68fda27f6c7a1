package qemu

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A Release is a QEMU release number, as `qemu-system-x86_64 --version`
// prints it.
type Release struct {
	Major, Minor, Micro int
	Banner              string // the first line of --version, as printed
}

// MinRelease is the oldest QEMU release sctrace supports: Debian 12's.
var MinRelease = Release{Major: 7, Minor: 2}

// TestedReleases are the QEMU releases sctrace's integration tests run on:
// Debian 12's QEMU and the one scripts/fetch-qemu.sh fetches from
// bookworm-backports.
var TestedReleases = []Release{{Major: 7, Minor: 2}, {Major: 10, Minor: 0, Micro: 2}}

// Errors Check wraps, for errors.Is. The error's text says what was found
// and how to fix it.
var (
	ErrNotQEMU   = errors.New("not a QEMU system emulator")
	ErrTooOld    = errors.New("QEMU release too old")
	ErrNoGDBStub = errors.New("QEMU built without the gdbstub")
	ErrNotX86_64 = errors.New("QEMU does not emulate x86-64")
)

// fix is what every Check error tells the user to do.
const fix = "install QEMU 7.2 or newer for x86-64 (Debian 12: apt-get install -y qemu-system-x86; QEMU 10.0: scripts/fetch-qemu.sh) and pass its qemu-system-x86_64 with --qemu"

var versionRE = regexp.MustCompile(`^QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?`)

// ParseRelease reads the release number from the output of
// `qemu-system-x86_64 --version`, whose first line is "QEMU emulator version
// 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)".
func ParseRelease(out string) (Release, error) {
	line, _, _ := strings.Cut(strings.TrimLeft(out, "\r\n\t "), "\n")
	line = strings.TrimSpace(line)
	m := versionRE.FindStringSubmatch(line)
	if m == nil {
		return Release{}, fmt.Errorf("%w: --version printed %q, not \"QEMU emulator version X.Y.Z\"", ErrNotQEMU, line)
	}
	v := Release{Banner: line}
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		v.Micro, _ = strconv.Atoi(m[3])
	}
	return v, nil
}

// String returns "MAJOR.MINOR.MICRO".
func (v Release) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

// Less reports whether v is an older release than w.
func (v Release) Less(w Release) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Micro < w.Micro
}

// OneInsnPerTBCommand returns the monitor command that makes TCG translate
// one guest instruction per block (what QEMU's instruction log needs to log
// every instruction): "singlestep on" before 8.1, "one-insn-per-tb on" from
// 8.1 (QEMU 10 no longer knows "singlestep").
func (v Release) OneInsnPerTBCommand(on bool) string {
	state := "off"
	if on {
		state = "on"
	}
	if v.Less(Release{Major: 8, Minor: 1}) {
		return "singlestep " + state
	}
	return "one-insn-per-tb " + state
}

// checkTimeout bounds each of the short QEMU runs Check makes.
var checkTimeout = 10 * time.Second

type checkKey struct {
	path  string
	size  int64
	mtime time.Time
}

type checkResult struct {
	v   Release
	err error
}

var (
	checkMu    sync.Mutex
	checkCache = map[checkKey]checkResult{}
)

// Check makes sure bin is a QEMU sctrace can use: a system emulator whose
// --version names release 7.2 or newer, that accepts -gdb, and that
// emulates x86-64 (asked through QMP's query-target, since qemu-system-i386
// prints the same banner). It returns the release, or an error that wraps
// ErrNotQEMU, ErrTooOld, ErrNoGDBStub or ErrNotX86_64 and says how to fix
// it. Each run of QEMU it makes ends before it returns. The verdict is kept
// for the rest of the process, per file and modification time.
func Check(ctx context.Context, bin string) (Release, error) {
	st, err := os.Stat(bin)
	if err != nil {
		return Release{}, fmt.Errorf("qemu binary %s: %w", bin, err)
	}
	key := checkKey{bin, st.Size(), st.ModTime()}
	checkMu.Lock()
	r, ok := checkCache[key]
	checkMu.Unlock()
	if ok {
		return r.v, r.err
	}
	v, err := check(ctx, bin)
	if ctx.Err() == nil { // an interrupted check says nothing about bin
		checkMu.Lock()
		checkCache[key] = checkResult{v, err}
		checkMu.Unlock()
	}
	return v, err
}

func check(ctx context.Context, bin string) (Release, error) {
	// -gdb before --version: QEMU reads its options in order, so a build
	// without the gdbstub stops at "-gdb: invalid option" and one with it
	// prints its version and exits.
	out, stderr, err := runQEMU(ctx, bin, "", "-gdb", "none", "--version")
	if err != nil {
		if strings.Contains(stderr, "-gdb: invalid option") {
			r, _ := versionOnly(ctx, bin)
			return r, binaryError(ErrNoGDBStub, bin, "(%s) was built without the gdbstub, which sctrace needs (%q)",
				cmp.Or(r.Banner, "release unknown"), strings.TrimSpace(stderr))
		}
		return Release{}, binaryError(ErrNotQEMU, bin, "is not a QEMU system emulator (--version: %v%s)", err, said(out, stderr))
	}
	r, err := ParseRelease(out)
	if err != nil {
		line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
		return Release{}, binaryError(ErrNotQEMU, bin, "is not a QEMU system emulator (its --version printed %q)", line)
	}
	if r.Less(MinRelease) {
		return r, binaryError(ErrTooOld, bin, "is QEMU %s, older than %d.%d, the oldest release sctrace supports", r, MinRelease.Major, MinRelease.Minor)
	}
	arch, err := targetArch(ctx, bin)
	if err != nil {
		return r, binaryError(ErrNotQEMU, bin, "(%s) did not say which CPU it emulates (QMP query-target: %v)", r.Banner, err)
	}
	if arch != "x86_64" {
		return r, binaryError(ErrNotX86_64, bin, "emulates %s, not x86-64", arch)
	}
	return r, nil
}

// binaryError is one sentence: the binary, what is wrong with it, and the
// fix; it wraps kind.
func binaryError(kind error, bin, format string, args ...any) error {
	return &checkError{kind: kind, msg: bin + " " + fmt.Sprintf(format, args...) + ": " + fix}
}

type checkError struct {
	kind error
	msg  string
}

func (e *checkError) Error() string { return e.msg }
func (e *checkError) Unwrap() error { return e.kind }

// versionOnly parses a plain --version, for an error message.
func versionOnly(ctx context.Context, bin string) (Release, error) {
	out, _, err := runQEMU(ctx, bin, "", "--version")
	if err != nil {
		return Release{}, err
	}
	return ParseRelease(out)
}

// targetArch asks QEMU, started with no machine, which architecture it
// emulates (QMP query-target), and ends it with QMP quit.
func targetArch(ctx context.Context, bin string) (string, error) {
	const script = `{"execute":"qmp_capabilities"}` + "\n" + `{"execute":"query-target"}` + "\n" + `{"execute":"quit"}` + "\n"
	out, stderr, err := runQEMU(ctx, bin, script, "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio")
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m struct {
			Return *struct {
				Arch string `json:"arch"`
			} `json:"return"`
		}
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.Return != nil && m.Return.Arch != "" {
			return m.Return.Arch, nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("%v%s", err, said(out, stderr))
	}
	return "", fmt.Errorf("no answer to query-target%s", said(out, stderr))
}

// runQEMU runs bin with args and stdin, bounded by checkTimeout, and returns
// its standard output and error. QEMU is killed if it outlives the bound.
func runQEMU(ctx context.Context, bin, stdin string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	// Its own process group, killed whole when the bound passes, so that
	// nothing a wrapper script started is left running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("no answer within %v: %w", checkTimeout, ctx.Err())
	}
	return o.String(), e.String(), err
}

// said quotes what a failed run printed, shortened, for an error message.
func said(stdout, stderr string) string {
	s := strings.TrimSpace(stderr)
	if s == "" {
		s = strings.TrimSpace(stdout)
	}
	if s == "" {
		return ", no output"
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return ": " + strconv.Quote(s)
}
