package main

import (
	"github.com/spf13/pflag"

	"github.com/sctrace/sctrace/accel"
)

// accelFlag adds --accel, with one default and one help text for every
// command that starts QEMU.
func accelFlag(fl *pflag.FlagSet, p *string) {
	fl.StringVar(p, "accel", accel.Auto, accel.FlagUsage)
}
