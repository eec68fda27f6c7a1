package proxy

import "testing"

// TestClassify: what the requests gdb sends mean to the recording; the
// vCont forms are those gdb 13 sends to QEMU (with and without a thread,
// and stepping one thread while the others run).
func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		req  string
		want reqKind
	}{
		{"s", reqStep},
		{"s400000", reqStep},
		{"S05", reqStep},
		{"vCont;s:p1.1", reqStep},
		{"vCont;s:p1.1;c", reqStep},
		{"vCont;c:p1.-1;s:p1.1", reqStep},
		{"vCont;c", reqResume},
		{"vCont;c:p1.-1", reqResume},
		{"c", reqResume},
		{"C02", reqResume},
		{"vCont;t", reqOther},
		{"vCont?", reqOther},
		{"G0000", reqWriteRegs},
		{"P10=0000", reqWriteRegs},
		{"M400000,1:90", reqWriteMem},
		{"X400000,1:\x90", reqWriteMem},
		{"Hgp1.2", reqThread},
		{"Qqemu.PhyMemMode:1", reqPhysOn},
		{"Qqemu.PhyMemMode:0", reqPhysOff},
		{"Qqemu.sstep=7", reqOther},
		{"qSupported:multiprocess+", reqOther},
		{"g", reqOther},
		{"m400000,4", reqOther},
		{"", reqOther},
	} {
		if got := classify([]byte(tt.req)); got != tt.want {
			t.Errorf("classify(%q) = %d, want %d", tt.req, got, tt.want)
		}
	}
}

func TestStopReplies(t *testing.T) {
	for _, tt := range []struct {
		reply         string
		stop, console bool
		why           string
	}{
		{"T05thread:p01.01;", true, false, "signal 05"},
		{"T05hwbreak:;thread:p01.01;", true, false, "breakpoint, signal 05"},
		{"T05thread:p01.01;watch:7fff00;", true, false, "watchpoint, signal 05"},
		{"T02thread:p01.01;", true, false, "interrupted, signal 02"},
		{"S05", true, false, "signal 05"},
		{"W00", true, false, "signal 00"},
		{"OK", false, false, ""},
		{"E14", false, false, ""},
		{"O6869", false, true, ""},
		{"", false, false, ""},
	} {
		if got := isStop([]byte(tt.reply)); got != tt.stop {
			t.Errorf("isStop(%q) = %v", tt.reply, got)
		}
		if got := isConsole([]byte(tt.reply)); got != tt.console {
			t.Errorf("isConsole(%q) = %v", tt.reply, got)
		}
		if tt.stop {
			if got := stopWhy([]byte(tt.reply)); got != tt.why {
				t.Errorf("stopWhy(%q) = %q, want %q", tt.reply, got, tt.why)
			}
		}
	}
}
