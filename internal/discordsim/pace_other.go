//go:build !linux

package discordsim

import (
	"runtime"
	"time"
)

func lockForFineSleep() {}

// fineSleep yields until d has passed: elsewhere than Linux there is no
// finer sleep than Go's timers, so the last stretch is spun.
func fineSleep(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		runtime.Gosched()
	}
}
