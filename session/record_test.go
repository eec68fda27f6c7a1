package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/qemulog"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// A two-instruction round trip for the fake stub: a user syscall and the
// kernel's sysretq, with the states QEMU's stub reports after each.
const (
	fakeUserSys  = 0x401000
	fakeUserNext = 0x401002
	fakeEntry    = 0xffffffff81000000
)

// fakeKVMSession returns a session over the fake stub, stopped at the user
// syscall, recording with o.Record; the stub's monitor says the guest runs
// under KVM (`info kvm`: "kvm support: enabled", as QEMU's does there).
func fakeKVMSession(t *testing.T, o Options) (*Session, *gdbstubtest.Stub, context.Context) {
	t.Helper()
	stub := gdbstubtest.New(t)
	stub.SetKVM(true)
	stub.Map(fakeUserSys, []byte{0x0f, 0x05, 0x90, 0x90})
	stub.Map(fakeEntry, []byte{0x48, 0x0f, 0x07, 0x90})
	stub.Map(0x7fff0000-0x1000, make([]byte, 0x1000))
	for name, v := range map[string]uint64{
		"rip": fakeUserSys, "cs": 0x33, "ss": 0x2b, "rsp": 0x7fff0000, "eflags": 0x246,
		"cr0": 0x80050033, "cr3": 0x1000, "cr4": 0x3506f0, "efer": 0xd01,
	} {
		stub.SetRegister(name, v)
	}
	stub.SetTables(gdbstubtest.Tables{GDTBase: 0xfffffe0000001000, GDTLimit: 0x7f, TRSel: 0x40, TRBase: 0xfffffe0000003000, TRLimit: 0x4087})
	stub.Script(
		gdbstubtest.Stop{Regs: map[string]uint64{"rip": fakeEntry, "cs": 0x10, "ss": 0x18, "rcx": fakeUserNext, "r11": 0x246, "eflags": 0x2}},
		gdbstubtest.Stop{Regs: map[string]uint64{"rip": fakeUserNext, "cs": 0x33, "ss": 0x2b, "eflags": 0x246}},
	)
	ctx, conn := testenv.DialStub(t, stub)
	r := trace.NewRecorder(target.New(conn), nil, nil, trace.Header{})
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	s := &Session{Conn: conn}
	if o.Accel == "kvm" {
		// As a QEMU sctrace started under KVM: known without asking.
		s.QEMU = &qemu.Instance{Accel: "kvm"}
	}
	s.useRecorder(r, o)
	return s, stub, ctx
}

// TestRecordAutoFallsBack records on a guest whose monitor says KVM: auto
// single-steps the round trip instead, says why once (Notice) and in the
// trace's recorder line; log refuses with qemulog.ErrNotTCG and records
// nothing.
func TestRecordAutoFallsBack(t *testing.T) {
	for _, accel := range []string{"", "kvm"} {
		t.Run("auto"+accel, func(t *testing.T) { testAutoFallsBack(t, accel) })
	}
	t.Run("log", func(t *testing.T) {
		s, _, ctx := fakeKVMSession(t, Options{Record: RecordLog})
		tr, err := s.Record(ctx)
		if !errors.Is(err, qemulog.ErrNotTCG) {
			t.Fatalf("error %v, want ErrNotTCG", err)
		}
		if tr.Len() != 0 {
			t.Errorf("%d steps recorded after the refusal", tr.Len())
		}
	})
}

// testAutoFallsBack records with auto on the fake KVM guest, told by the
// monitor (accel "") or known from how sctrace started QEMU ("kvm").
func testAutoFallsBack(t *testing.T, accel string) {
	s, _, ctx := fakeKVMSession(t, Options{Record: RecordAuto, Accel: accel})
	var notices []string
	s.Notice = func(msg string) { notices = append(notices, msg) }
	tr, err := s.Record(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Len() != 2 || tr.Header.Stop != string(trace.StopUser) {
		t.Errorf("%d steps, stopped %q: want the 2-instruction round trip back to user mode", tr.Len(), tr.Header.Stop)
	}
	if len(notices) != 1 || !strings.Contains(notices[0], "single-steps throughout") || !strings.Contains(notices[0], "KVM") {
		t.Errorf("notices %q: want one saying why auto steps", notices)
	}
	lines := tr.Header.RecorderLines()
	if len(lines) != 1 || !strings.Contains(lines[0], "steps 0-1 (2): single steps") || !strings.Contains(lines[0], "KVM") {
		t.Errorf("recorder lines %q", lines)
	}
	if !errors.Is(s.LogUnavailable(), qemulog.ErrNotTCG) {
		t.Errorf("LogUnavailable() = %v, want ErrNotTCG", s.LogUnavailable())
	}
}

// TestRecordLogLost hands a round trip over to a log that holds none of
// the traced code: the log recorder's error after a console write (seen
// with Linux 6.1, --exec and --syscall write: "the log holds no
// instruction of the traced code (10843 logged instructions, all in
// interrupt handlers and the tasks they switched to)"), stood in for here
// after one real step of the fake stub. auto keeps the steps, ends the
// round with StopLogLost, says why once and steps the rounds after; log
// reports the error.
func TestRecordLogLost(t *testing.T) {
	for _, tt := range []struct {
		record string
		other  error // an error that is not the lost log
		want   string
	}{
		{record: RecordAuto},
		{record: RecordLog, want: "the log holds no instruction of the traced code"},
		{record: RecordAuto, other: errors.New("log recorder: line 7: garbled"), want: "garbled"},
	} {
		t.Run(fmt.Sprintf("%s %v", tt.record, tt.other), func(t *testing.T) {
			s, _, ctx := fakeKVMSession(t, Options{Record: tt.record})
			var notices []string
			s.Notice = func(msg string) { notices = append(notices, msg) }
			calls := 0
			s.log.runLog = func(ctx context.Context, _ ...trace.Until) (trace.StopReason, error) {
				calls++
				if _, err := s.log.Step(ctx); err != nil {
					return "", err
				}
				if tt.other != nil {
					return "", tt.other
				}
				return "", fmt.Errorf("log recorder: %w (10843 logged instructions, all in interrupt handlers and the tasks they switched to)", trace.ErrNothingTraced)
			}
			tr, err := s.Record(ctx)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want %q", err, tt.want)
				}
				if s.LogUnavailable() != nil {
					t.Errorf("LogUnavailable() = %v after an error reported", s.LogUnavailable())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tr.Len() != 1 || tr.Header.Stop != string(StopLogLost) {
				t.Errorf("%d steps, stopped %q: want the step before the hand-over, stopped %q", tr.Len(), tr.Header.Stop, StopLogLost)
			}
			if len(notices) != 1 || !strings.Contains(notices[0], "the log holds no instruction of the traced code") {
				t.Errorf("notices %q: want one saying why", notices)
			}
			if !errors.Is(s.LogUnavailable(), trace.ErrNothingTraced) {
				t.Errorf("LogUnavailable() = %v, want ErrNothingTraced", s.LogUnavailable())
			}
			// The next round is single-stepped, without the log.
			once := func(*trace.Step, *x86.State) trace.StopReason { return "one step" }
			if why, err := s.log.Run(ctx, once); err != nil || why != "one step" {
				t.Fatalf("next round: %q, %v", why, err)
			}
			if calls != 1 || len(notices) != 1 {
				t.Errorf("after the next round: the log tried %d times, %d notices; want 1 and 1", calls, len(notices))
			}
		})
	}
}

// TestCheckRecord covers the checks of --record and --log-after, what a
// QEMU sctrace starts is given for each recorder, and the refusal of the
// log recorder before a KVM guest boots.
func TestCheckRecord(t *testing.T) {
	tests := []struct {
		record  string
		after   int
		given   bool
		wantErr string
	}{
		{"", 0, false, ""},
		{RecordStep, DefaultLogAfter, false, ""},
		{RecordAuto, 10, true, ""},
		{RecordLog, 10, true, ""},
		{"fast", 0, false, `unknown recorder "fast"`},
		{RecordStep, 10, true, "it goes with --record auto or log, not step"},
		{"", 10, true, "not step"},
		{RecordAuto, -1, true, "--log-after must be 0 or more, not -1"},
	}
	for _, tt := range tests {
		err := CheckRecord(tt.record, tt.after, tt.given)
		if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("CheckRecord(%q, %d, %v) = %v, want %q", tt.record, tt.after, tt.given, err, tt.wantErr)
		}
	}
	for _, tt := range []struct {
		record, accel  string
		icount, kvmErr bool
	}{
		{RecordStep, "tcg", false, false},
		{RecordAuto, "tcg", true, false},
		{RecordLog, "tcg", true, false},
		{RecordAuto, "kvm", false, false},
		{RecordLog, "kvm", false, true},
	} {
		o := Options{Record: tt.record}
		if got := len(o.qemuExtra(tt.accel)) > 0; got != tt.icount {
			t.Errorf("%s under %s: -icount %v, want %v", tt.record, tt.accel, got, tt.icount)
		}
		// Linux: as above on one vCPU; never on two, where it would not
		// bring its second CPU up (TestLinuxSMPLogRecorders boots it).
		for smp, want := range map[int]bool{1: tt.icount, 2: false} {
			o := Options{Record: tt.record, SMP: smp}
			if got := len(o.linuxQEMUExtra(tt.accel)) > 0; got != want {
				t.Errorf("Linux, %s under %s, %d vCPUs: -icount %v, want %v", tt.record, tt.accel, smp, got, want)
			}
		}
		err := o.checkAccel(tt.accel)
		if (err != nil) != tt.kvmErr || err != nil && !errors.Is(err, qemulog.ErrNotTCG) {
			t.Errorf("%s under %s: %v", tt.record, tt.accel, err)
		}
	}
}
