package fleet

import (
	"strings"
	"testing"
)

// transitionRule maps a desired state to the desired state that one action
// leads to, or to "" when the action is a conflict.
type transitionRule map[State]State

// expectedTransitions contains the documented rules for a worker that has not
// reported stopped. A missing desired state reads as running.
var expectedTransitions = map[Action]transitionRule{
	ActionPause: {
		"":            StatePaused,
		StateRunning:  StatePaused,
		StatePaused:   "",
		StateDraining: "",
		StateStopped:  "",
	},
	ActionResume: {
		"":            "",
		StateRunning:  "",
		StatePaused:   StateRunning,
		StateDraining: StateRunning,
		StateStopped:  StateRunning,
	},
	ActionDrain: {
		"":            StateDraining,
		StateRunning:  StateDraining,
		StatePaused:   StateDraining,
		StateDraining: "",
		StateStopped:  "",
	},
	ActionStop: {
		"":            StateStopped,
		StateRunning:  StateStopped,
		StatePaused:   StateStopped,
		StateDraining: StateStopped,
		StateStopped:  "",
	},
}

func TestTransitionEveryActionStateStatus(t *testing.T) {
	desiredStates := []State{"", StateRunning, StatePaused, StateDraining, StateStopped}
	statuses := []State{"", StateRunning, StatePaused, StateDraining, StateStopped}

	for action, rule := range expectedTransitions {
		for _, desired := range desiredStates {
			for _, status := range statuses {
				want := rule[desired]
				// A worker that reported stopped has exited: only resume,
				// which releases its id for a new process, means anything.
				if status == StateStopped && action != ActionResume {
					want = ""
				}

				name := string(action) + "/desired=" + string(desired) + "/status=" + string(status)
				t.Run(name, func(t *testing.T) {
					got, err := Transition(action, desired, status)
					if want == "" {
						if err == nil {
							t.Fatalf("Transition = %q, want a conflict", got)
						}
						if code := ErrorCode(err); code != ECONFLICT {
							t.Errorf("error code = %q, want %q", code, ECONFLICT)
						}
						if field := ErrorField(err); field != "action" {
							t.Errorf("error field = %q, want action", field)
						}
						if msg := ErrorMessage(err); !strings.HasPrefix(msg, "cannot "+string(action)+": ") {
							t.Errorf("message = %q, want it to start with %q and give the reason", msg, "cannot "+string(action)+": ")
						}
						return
					}
					if err != nil {
						t.Fatalf("Transition error = %v, want %q", err, want)
					}
					if got != want {
						t.Errorf("Transition = %q, want %q", got, want)
					}
				})
			}
		}
	}
}

func TestTransitionConflictReasons(t *testing.T) {
	tests := []struct {
		action          Action
		desired, status State
		reason          string
	}{
		{ActionPause, StatePaused, StatePaused, "already paused"},
		{ActionResume, StateRunning, StateRunning, "already running"},
		{ActionDrain, StateDraining, StateRunning, "already draining"},
		{ActionStop, StateStopped, StateRunning, "already told to stop"},
		{ActionResume, StateRunning, StateStopped, "already running"},
		{ActionPause, StateRunning, StateStopped, "has stopped"},
		{ActionDrain, StatePaused, StateStopped, "has stopped"},
	}
	for _, tt := range tests {
		t.Run(string(tt.action)+"/"+string(tt.desired)+"/"+string(tt.status), func(t *testing.T) {
			_, err := Transition(tt.action, tt.desired, tt.status)
			if err == nil {
				t.Fatal("Transition returned no error, want a conflict")
			}
			if msg := ErrorMessage(err); !strings.Contains(msg, tt.reason) {
				t.Errorf("message = %q, want it to contain %q", msg, tt.reason)
			}
		})
	}
}

func TestTransitionUnknownAction(t *testing.T) {
	_, err := Transition(Action("explode"), StateRunning, StateRunning)
	if code := ErrorCode(err); code != EINVALID {
		t.Fatalf("error code = %q, want %q", code, EINVALID)
	}
	if field := ErrorField(err); field != "action" {
		t.Errorf("error field = %q, want action", field)
	}
}

func TestParseAction(t *testing.T) {
	for _, name := range []string{"pause", "resume", "drain", "stop"} {
		got, err := ParseAction(name)
		if err != nil {
			t.Errorf("ParseAction(%q) error = %v", name, err)
		}
		if string(got) != name {
			t.Errorf("ParseAction(%q) = %q", name, got)
		}
	}

	for _, name := range []string{"", "Pause", "restart", "pause ", strings.Repeat("x", 200)} {
		_, err := ParseAction(name)
		if code := ErrorCode(err); code != EINVALID {
			t.Errorf("ParseAction(%q) code = %q, want %q", name, code, EINVALID)
			continue
		}
		msg := ErrorMessage(err)
		if !strings.Contains(msg, "pause, resume, drain, stop") {
			t.Errorf("ParseAction(%q) message = %q, want the accepted actions", name, msg)
		}
		if len(msg) > 200 {
			t.Errorf("ParseAction message is %d bytes, want the bad value truncated", len(msg))
		}
	}
}

func TestActionTarget(t *testing.T) {
	tests := map[Action]State{
		ActionPause:  StatePaused,
		ActionResume: StateRunning,
		ActionDrain:  StateDraining,
		ActionStop:   StateStopped,
	}
	for action, want := range tests {
		if got := action.Target(); got != want {
			t.Errorf("%s.Target() = %q, want %q", action, got, want)
		}
	}
}
