package alert_test

import (
	"testing"

	"github.com/verifier/controlplane/app/alerttest"
	"github.com/verifier/controlplane/app/fleet"
)

// counters is a worker's cumulative job counters.
type counters struct{ processed, failed float64 }

func (c counters) metrics() map[string]float64 {
	return map[string]float64{fleet.MetricProcessed: c.processed, fleet.MetricFailed: c.failed}
}

// runJobs moves the clock one heartbeat interval at a time: w-01 processes
// perStep jobs of which failPerStep fail, heartbeats, and r checks. It
// returns the counters reached.
func runJobs(h *alerttest.Harness, r *alerttest.Replica, c counters, steps int, perStep, failPerStep float64) counters {
	for range steps {
		h.Clock.Advance(alerttest.HeartbeatInterval)
		c.processed += perStep
		c.failed += failPerStep
		h.Heartbeat("w-01", "billing", fleet.StateRunning, c.metrics())
		r.MustCheck()
	}
	return c
}

func firstFiring(h *alerttest.Harness, fp string) (fleet.Alert, bool) {
	for _, n := range h.Sent.All() {
		for _, a := range n.Firing {
			if a.Fingerprint == fp {
				return a, true
			}
		}
	}
	return fleet.Alert{}, false
}

func TestErrorRateFromRecentJobs(t *testing.T) {
	h := newHarness(t)
	r := h.Replica(alerttest.Options())
	// A long healthy past: the lifetime error rate stays under 0.01 %.
	c := counters{processed: 1_000_000}
	h.Heartbeat("w-01", "billing", fleet.StateRunning, c.metrics())
	r.MustCheck()

	c = runJobs(h, r, c, 1, 10, 4)
	if n := h.Sent.Firing(errorRateW01); n != 0 {
		t.Fatalf("fired after 10 jobs, below the minimum of 20")
	}
	c = runJobs(h, r, c, 10, 10, 4) // 40 % of recent jobs fail
	if n := h.Sent.Firing(errorRateW01); n != 1 {
		t.Fatalf("40 %% of recent jobs failing: notified %d times, want 1", n)
	}
	a, _ := firstFiring(h, errorRateW01)
	if a.Value < 39.9 || a.Value > 40.1 || a.Threshold != 10 || a.Unit != "%" {
		t.Errorf("alert value %v %s threshold %v, want 40 %% against 10", a.Value, a.Unit, a.Threshold)
	}

	// Failures stop. Within two rate windows (1 min each at a 5 s check
	// interval) the old failures leave the window.
	runJobs(h, r, c, 24, 10, 0)
	if n := h.Sent.Resolved(errorRateW01); n != 1 {
		t.Errorf("two minutes without failures: %d resolved notifications, want 1", n)
	}
	if n := h.Sent.Firing(errorRateW01); n != 1 {
		t.Errorf("firing notified %d times in total, want 1", n)
	}
}

func TestErrorRateCounterReset(t *testing.T) {
	h := newHarness(t)
	r := h.Replica(alerttest.Options())
	c := counters{processed: 5000, failed: 100}
	h.Heartbeat("w-01", "billing", fleet.StateRunning, c.metrics())
	r.MustCheck()
	runJobs(h, r, c, 6, 10, 5)
	if n := h.Sent.Firing(errorRateW01); n != 1 {
		t.Fatalf("50 %% failing: notified %d times, want 1", n)
	}

	// The worker restarts: its counters start again from zero. The drop
	// must count neither as jobs nor as failures.
	c = runJobs(h, r, counters{}, 1, 10, 0)
	runJobs(h, r, c, 20, 10, 0)
	if n := h.Sent.Firing(errorRateW01); n != 1 {
		t.Errorf("after a restart with healthy jobs: %d firing notifications in total, want 1", n)
	}
	if n := h.Sent.Resolved(errorRateW01); n != 1 {
		t.Errorf("after a restart with healthy jobs: %d resolved notifications, want 1", n)
	}
}
