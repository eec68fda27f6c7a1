package bench

import (
	"bufio"
	"cmp"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/sctrace/sctrace/qemu"
)

// Environment records where the numbers were taken, so that they can be
// judged: the host CPU and kernel, its mitigations, the TSC and how its
// frequency was found, and how QEMU ran the guest.
type Environment struct {
	HostCPU        string `json:"host_cpu"`
	HostCPUs       int    `json:"host_cpus"`
	HostHypervisor bool   `json:"host_hypervisor"` // CPUID.1:ECX[31]: the host is itself a VM
	HostKernel     string `json:"host_kernel"`
	GoVersion      string `json:"go_version"`
	// PTI is page-table isolation: "on", "off" or "unknown", with the
	// evidence.
	PTI         string `json:"pti"`
	Mitigations []Vuln `json:"mitigations,omitempty"`
	// IA32Emulation says whether this kernel serves 32-bit system calls
	// (int $0x80), and from what that was concluded.
	IA32Emulation string  `json:"ia32_emulation"`
	TSC           TSCInfo `json:"tsc"`

	QEMU          string    `json:"qemu"`
	Accel         string    `json:"accel"`
	AccelNote     string    `json:"accel_note"`
	KVM           string    `json:"kvm"` // what is known of KVM here: the device, or the verdict of the check
	GuestCPUModel string    `json:"guest_cpu_model"`
	QEMUCommand   string    `json:"qemu_command,omitempty"`
	Guest         *GuestCPU `json:"guest_cpu,omitempty"`
	// GuestTSCGranularity is the greatest common divisor of the guest's
	// raw timings (sample plus baseline); equal to TSC.Granularity when
	// the guest reads the host's counter.
	GuestTSCGranularity int64 `json:"guest_tsc_granularity_ticks,omitempty"`
}

// Vuln is one file of /sys/devices/system/cpu/vulnerabilities.
type Vuln struct {
	Name   string `json:"name"`
	Status string `json:"status"`
}

// TSCInfo describes the time-stamp counter used for every number.
type TSCInfo struct {
	// MHz is the TSC frequency used to convert ticks to ns; 0 when unknown.
	MHz    float64 `json:"mhz"`
	Source string  `json:"source"`
	// CPUInfoMHz is /proc/cpuinfo's "cpu MHz", for comparison.
	CPUInfoMHz float64 `json:"cpuinfo_mhz,omitempty"`
	// Invariant is true when the TSC ticks at a constant rate in every
	// P- and C-state; InvariantSource says how that was found.
	Invariant       bool   `json:"invariant"`
	InvariantSource string `json:"invariant_source"`
	RDTSCP          bool   `json:"rdtscp"`
	// Granularity is the greatest common divisor of the empty-window
	// times seen on the host: every TSC difference is a multiple of it.
	Granularity int64 `json:"granularity_ticks,omitempty"`
}

// CollectEnvironment gathers what can be known before measuring. Values
// that cannot be read say so; nothing here fails. The TSC block and the
// accelerator are filled in by the targets.
func CollectEnvironment(ctx context.Context, qemuBinary string) *Environment {
	env := &Environment{GoVersion: runtime.Version(), HostCPUs: runtime.NumCPU()}
	info := cpuinfo()
	env.HostCPU = cmp.Or(info["model name"], "unknown ("+runtime.GOARCH+")")
	flags := map[string]bool{}
	for _, f := range strings.Fields(info["flags"]) {
		flags[f] = true
	}
	env.HostHypervisor = flags["hypervisor"]
	env.HostKernel = hostKernel()
	env.Mitigations = vulnerabilities()
	env.PTI = pti(env.Mitigations, flags, info["flags"] != "")
	env.IA32Emulation = ia32Emulation()
	env.TSC = hostTSC(info, flags)

	if bin, err := qemu.Find(qemuBinary); err != nil {
		env.QEMU = "not available: " + err.Error()
	} else if v, err := qemu.Version(ctx, bin); err != nil {
		env.QEMU = "unknown: " + err.Error()
	} else {
		env.QEMU = v
	}
	if ok, why := qemu.KVMUsable(); ok {
		env.KVM = "/dev/kvm answers"
	} else {
		env.KVM = "not usable: " + why
	}
	return env
}

// cpuinfo returns the fields of the first processor in /proc/cpuinfo.
func cpuinfo() map[string]string {
	m := map[string]string{}
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m
}

func hostKernel() string {
	rel := readTrim("/proc/sys/kernel/osrelease")
	if rel == "" {
		return runtime.GOOS + " (release unknown)"
	}
	s := "Linux " + rel
	if v := readTrim("/proc/sys/kernel/version"); v != "" {
		s += " " + v
	}
	return s
}

func vulnerabilities() []Vuln {
	dir := "/sys/devices/system/cpu/vulnerabilities"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var vs []Vuln
	for _, e := range ents {
		if st := readTrim(filepath.Join(dir, e.Name())); st != "" {
			vs = append(vs, Vuln{Name: e.Name(), Status: st})
		}
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].Name < vs[j].Name })
	return vs
}

func pti(vs []Vuln, flags map[string]bool, haveFlags bool) string {
	for _, v := range vs {
		if v.Name == "meltdown" {
			if strings.Contains(v.Status, "PTI") {
				return "on (meltdown: " + v.Status + ")"
			}
			return "off (meltdown: " + v.Status + ")"
		}
	}
	switch {
	case flags["pti"]:
		return "on (cpuinfo flag pti)"
	case haveFlags:
		return "off (no cpuinfo flag pti)"
	}
	return "unknown"
}

// ia32Emulation decides from the kernel configuration and command line
// whether int $0x80 is served. The host bench still guards the first call.
func ia32Emulation() string {
	cmdline := " " + readTrim("/proc/cmdline") + " "
	for _, off := range []string{"ia32_emulation=0", "ia32_emulation=false", "ia32_emulation=n", "ia32_emulation=off"} {
		if strings.Contains(cmdline, " "+off+" ") {
			return "off (kernel command line " + off + ")"
		}
	}
	cfg, err := kernelConfig()
	if err != nil {
		return "unknown (" + err.Error() + "); will be probed"
	}
	switch {
	case cfg["CONFIG_IA32_EMULATION"] != "y":
		return "off (kernel built without CONFIG_IA32_EMULATION)"
	case cfg["CONFIG_IA32_EMULATION_DEFAULT_DISABLED"] == "y" && !strings.Contains(cmdline, " ia32_emulation=1 ") && !strings.Contains(cmdline, " ia32_emulation=true "):
		return "off (CONFIG_IA32_EMULATION_DEFAULT_DISABLED=y)"
	}
	return "on (CONFIG_IA32_EMULATION=y)"
}

// kernelConfig reads /proc/config.gz, or /boot/config-$(uname -r).
func kernelConfig() (map[string]string, error) {
	var r io.Reader
	if f, err := os.Open("/proc/config.gz"); err == nil {
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		r = zr
	} else if f, err2 := os.Open("/boot/config-" + readTrim("/proc/sys/kernel/osrelease")); err2 == nil {
		defer f.Close()
		r = f
	} else {
		return nil, err
	}
	m := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "CONFIG_") {
			m[k] = v
		}
	}
	return m, sc.Err()
}

// hostTSC fills what /proc/cpuinfo and CPUID say about the TSC; the
// frequency itself is calibrated by the host target (see calibrateTSC).
func hostTSC(info map[string]string, flags map[string]bool) TSCInfo {
	t := TSCInfo{Source: "unknown"}
	if v, err := strconv.ParseFloat(info["cpu MHz"], 64); err == nil {
		t.CPUInfoMHz = v
	}
	t.RDTSCP = flags["rdtscp"]
	cpuidTSC(&t)
	if t.InvariantSource == "" {
		switch {
		case flags["constant_tsc"] && flags["nonstop_tsc"]:
			t.Invariant, t.InvariantSource = true, "cpuinfo flags constant_tsc nonstop_tsc"
		case info["flags"] != "":
			t.InvariantSource = "cpuinfo lacks constant_tsc or nonstop_tsc"
		default:
			t.InvariantSource = "unknown"
		}
	}
	return t
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
