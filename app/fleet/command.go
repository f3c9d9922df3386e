package fleet

import (
	"fmt"
	"time"
)

// Action is an operator command on a worker or a pool.
type Action string

const (
	ActionPause  Action = "pause"
	ActionResume Action = "resume"
	ActionDrain  Action = "drain"
	ActionStop   Action = "stop"
)

// ParseAction returns the Action named s, or an EINVALID error.
func ParseAction(s string) (Action, error) {
	switch a := Action(s); a {
	case ActionPause, ActionResume, ActionDrain, ActionStop:
		return a, nil
	}
	return "", Errorf(EINVALID, "action", "action must be one of pause, resume, drain, stop; got %q", truncate(s, 40))
}

// Target returns the desired state that the action sets.
func (a Action) Target() State {
	switch a {
	case ActionPause:
		return StatePaused
	case ActionDrain:
		return StateDraining
	case ActionStop:
		return StateStopped
	default:
		return StateRunning
	}
}

// Sources of a command, recorded in the audit trail.
const (
	SourceUI   = "ui"
	SourceAPI  = "api"
	SourceAuto = "auto"
)

// Command is a change of a worker's desired state, with who asked for it.
type Command struct {
	Action Action
	From   State // desired state before
	To     State // desired state after
	Actor  string
	Source string
	Reason string
	At     time.Time
}

// Transition returns the desired state that action leads to for a worker
// whose desired state is desired and whose last reported status is status.
// It returns an ECONFLICT error with the reason when the command makes no
// sense: pausing a paused worker, resuming a running one, pausing or
// draining a worker that is already shutting down, or anything but a resume
// for a worker that reported stopped.
func Transition(action Action, desired, status State) (State, error) {
	if desired == "" {
		desired = DefaultDesiredState
	}
	conflict := func(reason string) (State, error) {
		return "", &Error{Code: ECONFLICT, Field: "action", Message: fmt.Sprintf("cannot %s: %s", action, reason)}
	}
	// A worker that reported stopped has exited: no pause, drain or stop
	// reaches it. Resume does matter: it releases the id, so that the next
	// process started with it runs instead of inheriting the drain or stop.
	if status == StateStopped && action != ActionResume {
		if action == ActionStop && desired == StateStopped {
			return conflict("the worker was already told to stop")
		}
		return conflict("the worker has stopped; its supervisor must start a new process")
	}
	switch action {
	case ActionPause:
		switch desired {
		case StateRunning:
			return StatePaused, nil
		case StatePaused:
			return conflict("the worker is already paused")
		default:
			return conflict("the worker is " + string(desired) + "; it will not take work again")
		}
	case ActionResume:
		// Resuming a drain or a stop cancels it if the worker has not
		// exited yet, and releases the id if it has.
		if desired == StateRunning {
			return conflict("the worker is already running")
		}
		return StateRunning, nil
	case ActionDrain:
		switch desired {
		case StateRunning, StatePaused:
			return StateDraining, nil
		case StateDraining:
			return conflict("the worker is already draining")
		default:
			return conflict("the worker was told to stop")
		}
	case ActionStop:
		if desired == StateStopped {
			return conflict("the worker was already told to stop")
		}
		return StateStopped, nil
	}
	return "", Errorf(EINVALID, "action", "unknown action %q", truncate(string(action), 40))
}
