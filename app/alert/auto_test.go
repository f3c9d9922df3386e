package alert_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/alerttest"
	"github.com/verifier/controlplane/app/fleet"
)

func newAutoHarness(t *testing.T) *alerttest.Harness {
	t.Helper()
	h := newHarness(t)
	h.SetSettings(func(s *fleet.Settings) { s.AutoActionsEnabled = true })
	return h
}

// desired returns each worker's desired state.
func desired(t *testing.T, h *alerttest.Harness, ids ...string) map[string]fleet.State {
	t.Helper()
	out := map[string]fleet.State{}
	for _, id := range ids {
		w, err := h.Service.Worker(context.Background(), id)
		if err != nil {
			t.Fatalf("read worker %s: %v", id, err)
		}
		out[id] = w.Desired
	}
	return out
}

// autoCommands returns the automatic commands in the fleet audit trail,
// oldest first.
func autoCommands(t *testing.T, h *alerttest.Harness) []fleet.AuditEntry {
	t.Helper()
	entries, err := h.Service.Audit(context.Background(), "", 1000)
	if err != nil {
		t.Fatalf("read audit: %v", err)
	}
	var out []fleet.AuditEntry
	for _, e := range entries {
		if e.Kind == fleet.AuditCommand && e.Source == fleet.SourceAuto {
			out = append(out, e)
		}
	}
	slices.Reverse(out)
	return out
}

func drained(commands []fleet.AuditEntry) []string {
	var ids []string
	for _, e := range commands {
		if e.Action == string(fleet.ActionDrain) {
			ids = append(ids, e.WorkerID)
		}
	}
	slices.Sort(ids)
	return ids
}

func TestAutoPauseAboveThreshold(t *testing.T) {
	h := newAutoHarness(t)
	r := h.Replica(alerttest.Options())
	failing, healthy := counters{}, counters{}
	state := fleet.StateRunning
	for range 8 {
		h.Clock.Advance(alerttest.HeartbeatInterval)
		failing.processed, failing.failed = failing.processed+10, failing.failed+5
		healthy.processed += 10
		// w-01 obeys: it reports the desired state of its last response.
		state = h.Heartbeat("w-01", "billing", state, failing.metrics())
		h.Heartbeat("w-02", "billing", fleet.StateRunning, healthy.metrics())
		r.MustCheck()
	}

	got := desired(t, h, "w-01", "w-02")
	if got["w-01"] != fleet.StatePaused || got["w-02"] != fleet.StateRunning {
		t.Errorf("desired states %v, want w-01 paused and w-02 running", got)
	}
	commands := autoCommands(t, h)
	if len(commands) != 1 {
		t.Fatalf("automatic commands %+v, want one pause", commands)
	}
	c := commands[0]
	if c.Action != "pause" || c.WorkerID != "w-01" || c.Actor != "auto" {
		t.Errorf("automatic command %+v, want a pause of w-01 by auto", c)
	}
	if !strings.Contains(c.Reason, "error rate 50.0%") || !strings.Contains(c.Reason, "threshold of 10.0%") {
		t.Errorf("pause reason %q does not give the rate and the threshold", c.Reason)
	}
	w, err := h.Service.Worker(context.Background(), "w-01")
	if err != nil {
		t.Fatal(err)
	}
	if w.LastCommand == nil || w.LastCommand.Source != fleet.SourceAuto || w.LastCommand.Reason != c.Reason {
		t.Errorf("w-01 last command %+v, want the automatic pause", w.LastCommand)
	}
}

func TestAutoPauseSkipsSilenced(t *testing.T) {
	h := newAutoHarness(t)
	r := h.Replica(alerttest.Options())
	_, err := r.Silence(context.Background(), fleet.Silence{Matcher: "worker", Value: "w-01", Until: h.Clock.Now().Add(time.Hour), Reason: "load test"}, "alice", fleet.SourceUI)
	if err != nil {
		t.Fatal(err)
	}
	runJobs(h, r, counters{}, 8, 10, 5)
	if got := desired(t, h, "w-01"); got["w-01"] != fleet.StateRunning {
		t.Errorf("silenced failing worker: desired %s, want running", got["w-01"])
	}
}

func TestAutoActionsOffByDefault(t *testing.T) {
	h := newHarness(t)
	r := h.Replica(alerttest.Options())
	runJobs(h, r, counters{}, 8, 10, 5)
	if commands := autoCommands(t, h); len(commands) != 0 {
		t.Errorf("automatic actions off, commands issued: %+v", commands)
	}
}

func TestAutoDrainChoosesPausedIdleNewest(t *testing.T) {
	h := newAutoHarness(t)
	r := h.Replica(alerttest.Options())
	ctx := context.Background()
	now := h.Clock.Now()
	workers := []struct {
		id      string
		status  fleet.State
		busy    float64
		started time.Duration // before now
	}{
		{"w-old", fleet.StateRunning, 1, 3 * time.Hour},
		{"w-mid", fleet.StateRunning, 1, 2 * time.Hour},
		{"w-new", fleet.StateRunning, 1, time.Hour},
		{"w-idle", fleet.StateRunning, 0, 5 * time.Hour},
		{"w-paused", fleet.StatePaused, 0, 6 * time.Hour},
	}
	for _, w := range workers {
		h.Send(fleet.Heartbeat{ID: w.id, Pool: "billing", Status: fleet.StateRunning, StartedAt: now.Add(-w.started), Metrics: map[string]float64{fleet.MetricBusy: w.busy}})
	}
	if _, err := h.Service.Command(ctx, "w-paused", fleet.ActionPause, "ops", fleet.SourceUI, "investigating"); err != nil {
		t.Fatal(err)
	}
	for _, w := range workers {
		h.Send(fleet.Heartbeat{ID: w.id, Pool: "billing", Status: w.status, StartedAt: now.Add(-w.started), Metrics: map[string]float64{fleet.MetricBusy: w.busy}})
	}
	if _, err := h.Service.Scale(ctx, "billing", 2, "ops", fleet.SourceUI); err != nil {
		t.Fatal(err)
	}

	r.MustCheck()
	commands := autoCommands(t, h)
	if got, want := drained(commands), []string{"w-idle", "w-new", "w-paused"}; !slices.Equal(got, want) {
		t.Fatalf("drained %v, want %v", got, want)
	}
	why := map[string]string{"w-paused": "because it is paused", "w-idle": "because it is idle", "w-new": "because it is the most recently started"}
	for _, c := range commands {
		if !strings.Contains(c.Reason, "pool billing has 5 serving workers and wants 2") || !strings.Contains(c.Reason, why[c.WorkerID]) {
			t.Errorf("drain of %s: reason %q, want the pool's counts and %q", c.WorkerID, c.Reason, why[c.WorkerID])
		}
	}
	if got := desired(t, h, "w-old", "w-mid"); got["w-old"] != fleet.StateRunning || got["w-mid"] != fleet.StateRunning {
		t.Errorf("kept workers: desired %v, want running", got)
	}
}

func TestAutoDrainCappedPerCheck(t *testing.T) {
	h := newAutoHarness(t)
	opts := alerttest.Options()
	opts.MaxAutoActions = 4
	r := h.Replica(opts)
	for i := range 12 {
		h.Heartbeat(fmt.Sprintf("w-%02d", i), "billing", fleet.StateRunning, nil)
	}
	if _, err := h.Service.Scale(context.Background(), "billing", 0, "ops", fleet.SourceUI); err != nil {
		t.Fatal(err)
	}
	r.MustCheck()
	if n := len(autoCommands(t, h)); n != 4 {
		t.Errorf("one check with a cap of 4 issued %d automatic commands", n)
	}
}

// TestAutoDrainWaitsForPendingDrain checks again before the drained worker
// heartbeats, as happens whenever the check interval is shorter than the
// heartbeat interval or a worker ignores a drain: the drain already
// requested must count against the surplus.
func TestAutoDrainWaitsForPendingDrain(t *testing.T) {
	h := newAutoHarness(t)
	r := h.Replica(alerttest.Options())
	ids := []string{"w-01", "w-02", "w-03"}
	for _, id := range ids {
		h.Heartbeat(id, "billing", fleet.StateRunning, nil)
	}
	if _, err := h.Service.Scale(context.Background(), "billing", 2, "ops", fleet.SourceUI); err != nil {
		t.Fatal(err)
	}
	r.MustCheck()
	if got := drained(autoCommands(t, h)); len(got) != 1 {
		t.Fatalf("first check drained %v, want one worker", got)
	}

	for range 3 {
		h.Clock.Advance(2 * time.Second)
		r.MustCheck()
	}
	if got := drained(autoCommands(t, h)); len(got) != 1 {
		t.Errorf("a pool one over its size had %v drained by four checks within one heartbeat interval, want one worker", got)
	}
}
