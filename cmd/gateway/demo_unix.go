//go:build demo && (linux || darwin)

package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// takeTerminal makes the demo the terminal's foreground process group, so
// that Ctrl-C reaches the demo and not the make that runs it. GNU make dies
// by the SIGINT it receives (exit 130, whatever its child did); kept out of
// it, make returns the demo's own exit code, 0 after a clean drain. Ctrl-Z
// is ignored meanwhile: it would stop the demo behind make's back and leave
// the terminal to a stopped process. The returned func gives the terminal
// back. Without a terminal, or when not in its foreground, it does nothing.
func takeTerminal() (giveBack func()) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return func() {}
	}
	fd := int(tty.Fd())
	fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil || fg != unix.Getpgrp() {
		tty.Close()
		return func() {}
	}
	// Moving the foreground from a background group raises SIGTTOU.
	signal.Ignore(syscall.SIGTTOU, syscall.SIGTSTP)
	if unix.Setpgid(0, 0) != nil || unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, unix.Getpgrp()) != nil {
		unix.Setpgid(0, fg) // back in make's group, as if nothing happened
		tty.Close()
		return func() {}
	}
	return func() {
		unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, fg)
		tty.Close()
	}
}

// ownProcessGroup starts a child in a process group of its own, out of the
// terminal's reach: its Ctrl-C is the demo's to handle.
func ownProcessGroup() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
