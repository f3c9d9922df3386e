package alert_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/alerttest"
	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/redis"
	"github.com/verifier/controlplane/app/testenv"
)

// Fingerprints of the alerts these tests provoke.
const (
	missingW01    = "heartbeat_missing/worker/w-01"
	missingW02    = "heartbeat_missing/worker/w-02"
	errorRateW01  = "error_rate/worker/w-01"
	notAppliedW01 = "command_not_applied/worker/w-01"
	storeDown     = "store_unavailable/fleet"
)

// grace is the harness's heartbeat grace period.
var grace = alerttest.Settings().HeartbeatGrace

func newHarness(t *testing.T) *alerttest.Harness {
	t.Helper()
	_, _, client := testenv.Redis(t)
	return alerttest.New(t, client)
}

// silence w-01: w-02 keeps heartbeating every 5 s while w-01 stopped at the
// start. Each step moves the clock 5 s, heartbeats w-02 and runs one check
// on the next replica in turn.
func stepTwoWorkers(h *alerttest.Harness, replicas []*alerttest.Replica, steps int, w01Alive bool) {
	for i := range steps {
		h.Clock.Advance(alerttest.HeartbeatInterval)
		h.Heartbeat("w-02", "billing", fleet.StateRunning, nil)
		if w01Alive {
			h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
		}
		replicas[i%len(replicas)].MustCheck()
	}
}

func TestOneNotificationAcrossTwoReplicas(t *testing.T) {
	h := newHarness(t)
	a, b := h.Replica(alerttest.Options()), h.Replica(alerttest.Options())
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)

	// 40 checks over 200 s, well inside the 15 min cooldown.
	stepTwoWorkers(h, []*alerttest.Replica{a, b}, 40, false)
	if n := h.Sent.Firing(missingW01); n != 1 {
		t.Errorf("w-01 firing notified %d times by two replicas, want 1; sent %q", n, h.Sent.Titles())
	}
	if n := h.Sent.Firing(missingW02); n != 0 {
		t.Errorf("w-02, which kept heartbeating, notified %d times", n)
	}

	stepTwoWorkers(h, []*alerttest.Replica{b, a}, 10, true)
	if n := h.Sent.Resolved(missingW01); n != 1 {
		t.Errorf("w-01 resolved notified %d times, want 1; sent %q", n, h.Sent.Titles())
	}
	if n := h.Sent.Firing(missingW01); n != 1 {
		t.Errorf("w-01 firing notified %d times in total, want 1", n)
	}
}

func TestOneNotificationFromConcurrentChecks(t *testing.T) {
	h := newHarness(t)
	replicas := make([]*alerttest.Replica, 4)
	for i := range replicas {
		replicas[i] = h.Replica(alerttest.Options())
	}
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
	h.Clock.Advance(grace + time.Second)

	// Split-brain for one check: every replica checks at the same instant.
	errs := make(chan error, len(replicas))
	for _, r := range replicas {
		go func() { errs <- r.Check() }()
	}
	for range replicas {
		if err := <-errs; err != nil {
			t.Errorf("alert check: %v", err)
		}
	}
	if n := h.Sent.Firing(missingW01); n != 1 {
		t.Errorf("four concurrent checks notified w-01 %d times, want 1", n)
	}
}

func TestRestartSendsNothingTwice(t *testing.T) {
	h := newHarness(t)
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
	stepTwoWorkers(h, []*alerttest.Replica{h.Replica(alerttest.Options())}, 10, false)
	if n := h.Sent.Firing(missingW01); n != 1 {
		t.Fatalf("before the restart w-01 notified %d times, want 1", n)
	}

	// Each restart is a new engine on the same Redis.
	stepTwoWorkers(h, []*alerttest.Replica{h.Replica(alerttest.Options())}, 10, false)
	if n := h.Sent.Firing(missingW01); n != 1 {
		t.Errorf("after a restart w-01 firing notified %d times in total, want 1", n)
	}
	stepTwoWorkers(h, []*alerttest.Replica{h.Replica(alerttest.Options())}, 3, true)
	stepTwoWorkers(h, []*alerttest.Replica{h.Replica(alerttest.Options())}, 3, true)
	if n := h.Sent.Resolved(missingW01); n != 1 {
		t.Errorf("across restarts w-01 resolved notified %d times, want 1", n)
	}
}

func TestNothingSentWhileAlertsDisabled(t *testing.T) {
	h := newHarness(t)
	h.SetSettings(func(s *fleet.Settings) { s.AlertsEnabled = false })
	r := h.Replica(alerttest.Options())
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
	stepTwoWorkers(h, []*alerttest.Replica{r}, 10, false)
	stepTwoWorkers(h, []*alerttest.Replica{r}, 3, true)
	if sent := h.Sent.All(); len(sent) != 0 {
		t.Errorf("alerts disabled, sent %q", h.Sent.Titles())
	}
	if n := h.Sent.Resolved(missingW01); n != 0 {
		t.Errorf("resolution of an alert never notified was sent %d times", n)
	}
}

func TestRenotifiesAfterCooldown(t *testing.T) {
	h := newHarness(t)
	// The notification claim in Redis expires in real time, so the cooldown
	// is short enough for the test to wait it out.
	cooldown := 2 * time.Second
	h.SetSettings(func(s *fleet.Settings) { s.Cooldown = cooldown })
	r := h.Replica(alerttest.Options())
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
	h.Clock.Advance(grace + time.Second)
	r.MustCheck()

	h.Clock.Advance(time.Second)
	r.MustCheck()
	if n := h.Sent.Firing(missingW01); n != 1 {
		t.Fatalf("within the cooldown w-01 notified %d times, want 1", n)
	}

	// Both clocks pass the cooldown: the engine's and Redis'.
	time.Sleep(cooldown + 100*time.Millisecond)
	h.Clock.Advance(cooldown)
	r.MustCheck()
	if n := h.Sent.Firing(missingW01); n != 2 {
		t.Errorf("after the cooldown w-01 notified %d times in total, want 2", n)
	}
}

// TestRenotifyNotPostponedBySkew runs two replicas whose clocks differ by
// half a second. The one ahead finds the re-notification due while the
// other's claim in Redis has not expired yet. The re-notification must
// still go out once the claim expires, not a whole cooldown later.
func TestRenotifyNotPostponedBySkew(t *testing.T) {
	h := newHarness(t)
	cooldown := 2 * time.Second
	h.SetSettings(func(s *fleet.Settings) { s.Cooldown = cooldown })
	a := h.Replica(alerttest.Options())
	ahead := h.SkewedReplica(500*time.Millisecond, alerttest.Options())
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
	h.Clock.Advance(grace + time.Second)
	a.MustCheck()
	if n := h.Sent.Firing(missingW01); n != 1 {
		t.Fatalf("w-01 notified %d times, want 1", n)
	}

	// Real time and the fake clock move together from here.
	pass := func(d time.Duration) {
		time.Sleep(d)
		h.Clock.Advance(d)
	}
	pass(1600 * time.Millisecond)
	ahead.MustCheck() // due by its clock, but a's claim still holds
	pass(600 * time.Millisecond)
	a.MustCheck() // 2.2 s after the notification: the claim has expired
	ahead.MustCheck()
	if n := h.Sent.Firing(missingW01); n != 2 {
		t.Errorf("%s after the first notification, with a %s cooldown, w-01 notified %d times, want 2", 2200*time.Millisecond, cooldown, n)
	}
}

// TestHeartbeatFlappingDoesNotFlood lets w-01 miss the grace by a few
// seconds and come back, five times within one cooldown.
func TestHeartbeatFlappingDoesNotFlood(t *testing.T) {
	h := newHarness(t)
	r := h.Replica(alerttest.Options())
	for range 5 {
		h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
		h.Clock.Advance(grace + 5*time.Second)
		r.MustCheck()
		h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
		h.Clock.Advance(time.Second)
		r.MustCheck()
	}
	firing, resolved := h.Sent.Firing(missingW01), h.Sent.Resolved(missingW01)
	if firing != 1 {
		t.Errorf("five flaps within the cooldown: %d firing notifications, want 1", firing)
	}
	// A resolution is sent only for an incident whose firing was sent.
	if resolved > firing {
		t.Errorf("five flaps: %d resolved notifications for %d firing ones; sent %q", resolved, firing, h.Sent.Titles())
	}
}

// failingSave is the Redis store with SaveAlertStates failing while armed,
// as during a short Redis blip between the claim and the save.
type failingSave struct {
	*redis.Store
	armed bool
}

func (s *failingSave) SaveAlertStates(ctx context.Context, next map[string]fleet.AlertState, resolved []fleet.Alert) error {
	if s.armed {
		s.armed = false
		return errors.New("save alert states: injected failure")
	}
	return s.Store.SaveAlertStates(ctx, next, resolved)
}

func TestNotificationSurvivesFailedSave(t *testing.T) {
	h := newHarness(t)
	store := &failingSave{Store: h.Store}
	r := h.ReplicaOn(store, alerttest.Options())
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
	h.Clock.Advance(grace + time.Second)

	store.armed = true
	if err := r.Check(); err == nil {
		t.Fatal("check with a failing save returned no error")
	}
	for range 5 {
		h.Clock.Advance(5 * time.Second)
		r.MustCheck()
	}
	if n := h.Sent.Firing(missingW01); n != 1 {
		t.Errorf("after one failed save w-01 firing notified %d times, want 1; sent %q", n, h.Sent.Titles())
	}
}

func TestResolutionSurvivesFailedSave(t *testing.T) {
	h := newHarness(t)
	store := &failingSave{Store: h.Store}
	r := h.ReplicaOn(store, alerttest.Options())
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
	h.Clock.Advance(grace + time.Second)
	r.MustCheck()
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)

	store.armed = true
	if err := r.Check(); err == nil {
		t.Fatal("check with a failing save returned no error")
	}
	h.Clock.Advance(time.Second)
	r.MustCheck()
	if n := h.Sent.Resolved(missingW01); n != 1 {
		t.Errorf("after one failed save w-01 resolved notified %d times, want 1; sent %q", n, h.Sent.Titles())
	}
}

func TestSilenceMutesWorker(t *testing.T) {
	h := newHarness(t)
	r := h.Replica(alerttest.Options())
	ctx := context.Background()
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
	sl, err := r.Silence(ctx, fleet.Silence{Matcher: "worker", Value: "w-01", Until: h.Clock.Now().Add(time.Hour), Reason: "host maintenance"}, "alice", fleet.SourceUI)
	if err != nil {
		t.Fatalf("silence w-01: %v", err)
	}
	stepTwoWorkers(h, []*alerttest.Replica{r}, 10, false)
	if n := h.Sent.Firing(missingW01); n != 0 {
		t.Errorf("silenced w-01 notified %d times", n)
	}

	page, err := r.PageData(ctx)
	if err != nil {
		t.Fatalf("alerts page: %v", err)
	}
	if len(page.Firing) != 1 || !page.Firing[0].Silenced || page.Firing[0].Fingerprint != missingW01 {
		t.Errorf("alerts page firing = %+v, want w-01 silenced", page.Firing)
	}
	if len(page.Silences) != 1 || page.Silences[0].CreatedBy != "alice" || page.Silences[0].Reason != "host maintenance" {
		t.Errorf("alerts page silences = %+v, want alice's", page.Silences)
	}
	audit, err := h.Service.Audit(ctx, "w-01", 10)
	if err != nil {
		t.Fatalf("read audit: %v", err)
	}
	if len(audit) == 0 || audit[0].Kind != fleet.AuditSilence || audit[0].Actor != "alice" || audit[0].Reason != "host maintenance" {
		t.Errorf("w-01 audit = %+v, want alice's silence first", audit)
	}

	if err := r.Unsilence(ctx, sl.ID, "bob", fleet.SourceUI); err != nil {
		t.Fatalf("lift silence: %v", err)
	}
	stepTwoWorkers(h, []*alerttest.Replica{r}, 3, false)
	if n := h.Sent.Firing(missingW01); n != 1 {
		t.Errorf("after the silence was lifted w-01 notified %d times, want 1", n)
	}
}

func TestSilenceExpires(t *testing.T) {
	h := newHarness(t)
	r := h.Replica(alerttest.Options())
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
	_, err := r.Silence(context.Background(), fleet.Silence{Matcher: "pool", Value: "billing", Until: h.Clock.Now().Add(2 * time.Minute), Reason: "deploy"}, "alice", fleet.SourceUI)
	if err != nil {
		t.Fatalf("silence pool billing: %v", err)
	}
	stepTwoWorkers(h, []*alerttest.Replica{r}, 20, false) // 100 s
	if n := h.Sent.Firing(missingW01); n != 0 {
		t.Errorf("w-01 in a silenced pool notified %d times", n)
	}
	stepTwoWorkers(h, []*alerttest.Replica{r}, 6, false) // past 2 min
	if n := h.Sent.Firing(missingW01); n != 1 {
		t.Errorf("after the silence ended w-01 notified %d times, want 1", n)
	}
}

func TestSilencesAtSameInstantBothKept(t *testing.T) {
	h := newHarness(t)
	r := h.Replica(alerttest.Options())
	ctx := context.Background()
	until := h.Clock.Now().Add(time.Hour)
	for _, id := range []string{"w-01", "w-02"} {
		if _, err := r.Silence(ctx, fleet.Silence{Matcher: "worker", Value: id, Until: until, Reason: "maintenance"}, "alice", fleet.SourceUI); err != nil {
			t.Fatalf("silence %s: %v", id, err)
		}
	}
	page, err := r.PageData(ctx)
	if err != nil {
		t.Fatalf("alerts page: %v", err)
	}
	if len(page.Silences) != 2 {
		t.Errorf("two silences created at one instant, the page lists %d: %+v", len(page.Silences), page.Silences)
	}
}
