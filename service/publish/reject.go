package publish

import "errors"

// Reasons the broker refuses an event for the message itself; they are the
// reason label of gateway_events_dropped_total.
const (
	// ReasonTooLarge: over the server's max_payload or the stream's
	// max_msg_size.
	ReasonTooLarge = "too_large"
	// ReasonRefused: another refusal that no retry changes, such as a
	// header the stream does not accept.
	ReasonRefused = "refused"
)

// RejectedError says that the broker refused an event because of the
// message itself: sent again as it is, it would be refused again, however
// long the gateway waited. The buffer publishes such an event once more in
// compact form and drops it if that is refused too. The breaker does not
// count it: it says nothing about the broker's health.
//
// Anything else that fails (not connected, a timeout, an election, storage
// full) is not a RejectedError and is retried until it is acked.
type RejectedError struct {
	// Reason is ReasonTooLarge or ReasonRefused.
	Reason string
	// Compact is true when the refused message was the event's compact
	// form already: there is no smaller form left to try.
	Compact bool
	Err     error
}

func (e *RejectedError) Error() string {
	msg := "refused for the message itself (" + e.Reason + ")"
	if e.Compact {
		msg += " in compact form"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *RejectedError) Unwrap() error { return e.Err }

// IsRejected reports whether err is, or wraps, a *RejectedError.
func IsRejected(err error) bool {
	_, ok := asRejected(err)
	return ok
}

// asRejected is errors.As for a *RejectedError, without its allocation
// when err is nil (every acked event).
func asRejected(err error) (*RejectedError, bool) {
	if err == nil {
		return nil, false
	}
	var r *RejectedError
	ok := errors.As(err, &r)
	return r, ok
}

// asCompact marks a rejection of an event's compact form.
func asCompact(err error) error {
	r, ok := asRejected(err)
	if !ok || r.Compact {
		return err
	}
	c := *r
	c.Compact = true
	return &c
}
