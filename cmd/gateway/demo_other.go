//go:build demo && !(linux || darwin)

package main

import "syscall"

// See demo_unix.go; elsewhere Ctrl-C reaches make and Consul too.

func takeTerminal() (giveBack func()) { return func() {} }

func ownProcessGroup() *syscall.SysProcAttr { return nil }
