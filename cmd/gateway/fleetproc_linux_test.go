package main

import "syscall"

// childAttr makes a gateway process die with the test (Linux's parent
// death signal), so a test that dies leaves none behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
