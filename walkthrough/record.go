package walkthrough

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
)

// SessionOptions returns the options that boot the teaching kernel the way
// lesson l needs it: its kernel words appended, and trace mode calling only
// l's mechanism, or every mechanism in turn when its round trips use more
// than one.
func SessionOptions(l *Lesson, base session.Options) session.Options {
	o := base
	o.Mechanism = l.Mechanism
	for _, seg := range l.Segments() {
		if seg.Mechanism != l.Mechanism {
			o.Mechanism = ""
		}
	}
	o.Append = strings.TrimSpace(strings.Join([]string{base.Append, l.Kernel}, " "))
	return o
}

// LinuxOptions returns the options that boot Linux kernel image for lesson
// l: l's words appended to the command line and /init looping on l's
// mechanism.
func LinuxOptions(l *Lesson, image string, base session.Options) session.LinuxOptions {
	o := session.LinuxOptions{Options: base, Kernel: image}
	o.Mechanism = l.Mechanism
	o.Append = strings.TrimSpace(strings.Join([]string{base.Append, l.Kernel}, " "))
	return o
}

// Open starts the guest lesson l runs on: the teaching kernel, or Linux
// from the image linuxKernel (found in the kernel cache when "").
func Open(ctx context.Context, l *Lesson, linuxKernel string, base session.Options) (*session.Session, error) {
	if l.Target != TargetLinux {
		return session.StartFixture(ctx, SessionOptions(l, base))
	}
	if linuxKernel == "" {
		k, err := CachedLinuxKernel()
		if err != nil {
			return nil, err
		}
		linuxKernel = k
	}
	return session.StartLinux(ctx, LinuxOptions(l, linuxKernel, base))
}

// Record records every round trip lesson l runs on through s, one per
// segment, and returns them in order. The traces are independent copies.
func Record(ctx context.Context, l *Lesson, s *session.Session) ([]*trace.Trace, error) {
	var out []*trace.Trace
	for i, seg := range l.Segments() {
		t, err := s.RoundTrip(ctx, seg.Mechanism, UntilSegment(l, seg))
		if err != nil {
			return out, fmt.Errorf("lesson %s, round trip %d (%s): %w", l.Name(), i+1, cmp.Or(string(seg.Mechanism), "syscall"), err)
		}
		// A view: the recorder starts its next round trip on fresh steps.
		out = append(out, t.View(t.Len()))
	}
	return out, nil
}

// Check binds every step of l to traces (one per segment, as Record
// returns them) and reports each step that cannot be bound, and each
// question whose example answer is wrong at its step.
func Check(l *Lesson, traces []*trace.Trace) error {
	segs := l.Segments()
	if len(traces) != len(segs) {
		return fmt.Errorf("lesson %s has %d round trips, %d traces given", l.Name(), len(segs), len(traces))
	}
	var errs []error
	for k, seg := range segs {
		t := traces[k]
		b := Bind(l, seg, t)
		for j, i := range seg.Steps {
			st := &l.Steps[i]
			if b.Pos[j] == Unbound {
				errs = append(errs, fmt.Errorf("step %q: %s not found in round trip %d (%d instructions) after the previous step", st.ID, st.Match, k+1, t.Len()))
				continue
			}
			if q := st.Question; q != nil {
				if ok, why := q.Check(q.Answer, StateAt(t, b.Pos[j])); !ok {
					errs = append(errs, fmt.Errorf("step %q: the example answer %q is wrong on this trace: %s", st.ID, q.Answer, why))
				}
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("lesson %s does not fit its trace: %w", l.Name(), errors.Join(errs...))
	}
	return nil
}

// KernelCacheDir is where scripts/fetch-kernel.sh unpacks Linux kernels.
func KernelCacheDir() string {
	if d := os.Getenv("SCTRACE_KERNEL_CACHE"); d != "" {
		return d
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "sctrace", "kernels")
}

// CachedLinuxKernel returns a kernel image scripts/fetch-kernel.sh left in
// the cache, preferring the 6.1 series (the one the Linux lesson was
// written against).
func CachedLinuxKernel() (string, error) {
	dir := KernelCacheDir()
	imgs, _ := filepath.Glob(filepath.Join(dir, "*", "boot", "vmlinuz-*"))
	if len(imgs) == 0 {
		return "", fmt.Errorf("no Linux kernel in %s: fetch one with scripts/fetch-kernel.sh, or give --kernel", dir)
	}
	sort.Slice(imgs, func(i, j int) bool {
		pi, pj := strings.Contains(imgs[i], "vmlinuz-6.1.0-"), strings.Contains(imgs[j], "vmlinuz-6.1.0-")
		if pi != pj {
			return pi
		}
		return imgs[i] > imgs[j]
	})
	return imgs[0], nil
}
