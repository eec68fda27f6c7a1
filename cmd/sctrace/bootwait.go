package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/session"
)

// registerBootWait adds --boot-wait[=DURATION] to a command that attaches
// to a stub someone else started: given alone it waits
// session.DefaultBootWait.
func registerBootWait(cmd *cobra.Command, d *time.Duration) {
	fl := cmd.Flags()
	fl.DurationVar(d, "boot-wait", 0, fmt.Sprintf("when the guest has not booted yet (QEMU -S waits in the firmware), let it run until\na 64-bit kernel is running, for at most `DURATION` (alone: %s)", session.DefaultBootWait))
	fl.Lookup("boot-wait").NoOptDefVal = session.DefaultBootWait.String()
}

// checkBootWait rejects a negative --boot-wait.
func checkBootWait(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("--boot-wait must be a positive duration such as 2m, not %s", d)
	}
	return nil
}
