package alert_test

import (
	"context"
	"testing"

	"github.com/verifier/controlplane/app/alerttest"
	"github.com/verifier/controlplane/app/fleet"
)

// TestIgnoredDrainFiresOnce drains w-01 of a pool of three that wants three.
// w-01 keeps reporting running with its jobs rising, also after the control
// plane restarts, and complies only later.
func TestIgnoredDrainFiresOnce(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	jobs := counters{}
	heartbeatAll := func(w01 fleet.State) fleet.State {
		jobs.processed += 10
		got := h.Heartbeat("w-01", "billing", w01, jobs.metrics())
		h.Heartbeat("w-02", "billing", fleet.StateRunning, nil)
		h.Heartbeat("w-03", "billing", fleet.StateRunning, nil)
		return got
	}
	heartbeatAll(fleet.StateRunning)
	if _, err := h.Service.Scale(ctx, "billing", 3, "ops", fleet.SourceUI); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Service.Command(ctx, "w-01", fleet.ActionDrain, "ops", fleet.SourceUI, ""); err != nil {
		t.Fatalf("drain w-01: %v", err)
	}

	r := h.Replica(alerttest.Options())
	ignore := func(steps int) {
		for range steps {
			h.Clock.Advance(alerttest.HeartbeatInterval)
			if got := heartbeatAll(fleet.StateRunning); got != fleet.StateDraining {
				t.Fatalf("heartbeat response to w-01 says %s, want draining until it complies", got)
			}
			r.MustCheck()
		}
	}
	ignore(3) // 15 s: three heartbeat intervals, not yet past them
	if n := h.Sent.Firing(notAppliedW01); n != 0 {
		t.Fatalf("fired after %d heartbeat intervals, want only past %d", 3, fleet.CommandGraceHeartbeats)
	}
	ignore(6)
	if n := h.Sent.Firing(notAppliedW01); n != 1 {
		t.Fatalf("drain ignored for 45 s: %d notifications, want 1", n)
	}

	r = h.Replica(alerttest.Options()) // the control plane restarts
	ignore(6)
	if n := h.Sent.Firing(notAppliedW01); n != 1 {
		t.Errorf("after a restart: %d notifications in total, want 1", n)
	}

	// w-01 complies.
	for range 3 {
		h.Clock.Advance(alerttest.HeartbeatInterval)
		if got := heartbeatAll(fleet.StateDraining); got != fleet.StateDraining {
			t.Errorf("heartbeat response to the draining w-01 says %s", got)
		}
		r.MustCheck()
	}
	if n := h.Sent.Resolved(notAppliedW01); n != 1 {
		t.Errorf("after w-01 reported draining: %d resolved notifications, want 1", n)
	}
	h.Clock.Advance(alerttest.HeartbeatInterval)
	heartbeatAll(fleet.StateStopped)
	r.MustCheck()
	w, err := h.Service.Worker(ctx, "w-01")
	if err != nil {
		t.Fatal(err)
	}
	if w.Desired != fleet.StateDraining || w.Pending() {
		t.Errorf("stopped w-01: desired %s, pending %v, want draining and applied", w.Desired, w.Pending())
	}
	if n := h.Sent.Firing(notAppliedW01); n != 1 {
		t.Errorf("command_not_applied notified %d times in total, want 1", n)
	}
}
