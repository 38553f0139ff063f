package shard

import "testing"

// A resharding retires the old generation's sessions: closed with 1000,
// which ends them at Discord ("1000 and 1001 invalidate the session"), and
// no hand-off record, since nobody will resume them.
func TestEndForGoodMakesTheShutdownCloseWith1000AndLeavesNoHandoff(t *testing.T) {
	s := readySession()
	s.EndForGood()
	wantActions(t, do(s, Shutdown{}), Close{closeNormal, "resharded: session ended for good"})
	wantActions(t, do(s, Closed{Code: -1}), Stop{})
	if s.State() != StateDrained || s.Handoff(t0) != nil {
		t.Fatalf("state %s, handoff %+v", s.State(), s.Handoff(t0))
	}
}

func TestEndForGoodBetweenConnectionsStopsWithoutAHandoff(t *testing.T) {
	s := readySession()
	endOf(t, s, Closed{Code: -1})
	s.EndForGood()
	wantActions(t, do(s, Shutdown{}), Stop{})
	if s.Handoff(t0) != nil {
		t.Fatalf("handoff %+v", s.Handoff(t0))
	}
}
