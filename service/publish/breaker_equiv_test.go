package publish

import (
	"errors"
	"math/rand"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/sony/gobreaker/v2"
)

// The Breaker is gobreaker's TwoStepCircuitBreaker written out without the
// closure per Allow. This drives both, configured alike, through the same
// random runs of allows, acks, failures, refusals for the message itself
// (excluded) and waits past the open timeout, and compares every answer
// and state.
func TestBreakerBehavesAsGobreakersTwoStepBreaker(t *testing.T) {
	const openTimeout = 20 * time.Millisecond
	rejected := &RejectedError{Reason: ReasonTooLarge}
	for seed := int64(1); seed <= 8; seed++ {
		rng := rand.New(rand.NewSource(seed))
		ours := NewBreaker(BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: openTimeout, Probes: 2}, nil, log.NewNopLogger())
		theirs := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			MaxRequests: 2,
			Interval:    30 * time.Second,
			Timeout:     openTimeout,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 3 },
			IsExcluded:  IsRejected,
		})
		type pending struct{ ours, theirs func(error) }
		var inFlight []pending
		for step := 0; step < 60; step++ {
			switch op := rng.Intn(10); {
			case op < 4:
				o, errO := ours.Allow()
				th, errT := theirs.Allow()
				if !errors.Is(errO, errT) && (errO != nil || errT != nil) {
					t.Fatalf("seed %d step %d: Allow: ours %v, gobreaker %v", seed, step, errO, errT)
				}
				if errO == nil {
					inFlight = append(inFlight, pending{o, th})
				}
			case op < 9 && len(inFlight) > 0:
				i := rng.Intn(len(inFlight))
				p := inFlight[i]
				inFlight = append(inFlight[:i], inFlight[i+1:]...)
				var err error
				switch rng.Intn(3) {
				case 1:
					err = errors.New("ack failed")
				case 2:
					err = rejected
				}
				p.ours(err)
				p.theirs(err)
			case op == 9:
				time.Sleep(2 * openTimeout)
			}
			if o, th := ours.State(), theirs.State(); o != th {
				t.Fatalf("seed %d step %d: state ours %v, gobreaker %v", seed, step, o, th)
			}
		}
	}
}
