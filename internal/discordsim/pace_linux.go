package discordsim

import (
	"runtime"
	"syscall"
	"time"
)

// prSetTimerSlack is prctl's PR_SET_TIMERSLACK.
const prSetTimerSlack = 29

// lockForFineSleep pins the calling goroutine to its thread and sets the
// thread's timer slack to 1 µs (the default, 50 µs, is added to every
// sleep). The generator calls it once and never unlocks: the thread ends
// with it, so no other goroutine inherits the slack.
func lockForFineSleep() {
	runtime.LockOSThread()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1000, 0)
}

// fineSleep sleeps for d with nanosleep(2): tens of microseconds late with
// the slack above, where a Go timer is about a millisecond late.
func fineSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}
