package event

import (
	"math/bits"
	"sync"
)

// Events are reused: the publish path releases each one once the broker has
// acked it, and Build takes it up again, body and all, so that building an
// event allocates nothing in the steady state. Bodies are kept by size
// class: four classes per power of two from 1 KiB to 1 MiB (a body wastes
// at most a fifth of its capacity); larger ones are left to the GC.
const (
	minClassShift = 10 // the smallest class holds 1 KiB
	maxClassShift = 20 // the largest class holds 1 MiB
	stepsPerPow2  = 4
	numClasses    = (maxClassShift-minClassShift)*stepsPerPow2 + 1
)

var eventPools [numClasses]sync.Pool

// sizeClass returns the class of a body of n bytes and the capacity its
// bodies have; ok is false when n is over the largest class.
func sizeClass(n int) (class, size int, ok bool) {
	if n <= 1<<minClassShift {
		return 0, 1 << minClassShift, true
	}
	if n > 1<<maxClassShift {
		return 0, 0, false
	}
	k := bits.Len(uint(n-1)) - 1 // 2^k < n <= 2^(k+1)
	step := 1 << k / stepsPerPow2
	j := (n - 1<<k + step - 1) / step // 1..stepsPerPow2
	return (k-minClassShift)*stepsPerPow2 + j, 1<<k + j*step, true
}

// newEvent returns an event with an empty body of capacity n or more.
func newEvent(n int) *Event {
	class, size, ok := sizeClass(n)
	if !ok {
		return &Event{Body: make([]byte, 0, n)}
	}
	if ev, _ := eventPools[class].Get().(*Event); ev != nil {
		return ev
	}
	return &Event{Body: make([]byte, 0, size)}
}

// Release gives ev back for a later Build to reuse. Call it once nothing
// uses ev any more: in the gateway, when the publish path has called the
// event's done with nil (acked, or dropped by the buffer). ev's ID, GuildID
// and Body, which share memory, must not be used after it either; keep a
// copy. Events Build did not make, or of an unusual size, are left to the
// GC.
func Release(ev *Event) {
	if ev == nil {
		return
	}
	class, size, ok := sizeClass(cap(ev.Body))
	if !ok || size != cap(ev.Body) {
		return
	}
	*ev = Event{Body: ev.Body[:0]}
	eventPools[class].Put(ev)
}
