package fleet

import (
	"testing"
	"time"
)

// lifecycle drives StepAlerts check by check with a fake clock, and marks
// every notification it returns as sent, as the alert engine does after it
// claims them.
type lifecycle struct {
	states   map[string]AlertState
	now      time.Time
	cooldown time.Duration
	silenced func(Alert) bool

	notified       []Alert // every firing notification, in order
	resolved       []Alert
	notifyResolved []Alert
}

func newLifecycle(cooldown time.Duration) *lifecycle {
	return &lifecycle{states: map[string]AlertState{}, now: ruleNow, cooldown: cooldown}
}

// step runs one check at l.now with candidates and returns its outcome.
func (l *lifecycle) step(candidates ...Candidate) AlertStep {
	s := StepAlerts(l.states, candidates, l.now, l.cooldown, l.silenced)
	for _, a := range s.Notify {
		st := s.Next[a.Fingerprint]
		st.Notified, st.LastNotified = true, l.now
		s.Next[a.Fingerprint] = st
	}
	l.states = s.Next
	l.notified = append(l.notified, s.Notify...)
	l.resolved = append(l.resolved, s.Resolved...)
	l.notifyResolved = append(l.notifyResolved, s.NotifyResolved...)
	return s
}

func missingCandidate(id string, lastHeartbeat time.Time) Candidate {
	return Candidate{Alert: Alert{
		Fingerprint: Fingerprint(RuleHeartbeatMissing, "billing", id), Rule: RuleHeartbeatMissing,
		Pool: "billing", WorkerID: id, Summary: id + " missed heartbeats", StartsAt: lastHeartbeat,
	}}
}

func underSizeCandidate(forDelay time.Duration) Candidate {
	return Candidate{For: forDelay, Alert: Alert{
		Fingerprint: Fingerprint(RulePoolUnderSize, "billing", ""), Rule: RulePoolUnderSize,
		Pool: "billing", Summary: "pool billing has 2 of 3 workers serving",
	}}
}

func TestStepAlertsFiresOnce(t *testing.T) {
	l := newLifecycle(15 * time.Minute)
	last := ruleNow.Add(-40 * time.Second)
	first := l.step(missingCandidate("w-01", last))
	if len(first.Notify) != 1 {
		t.Fatalf("first check notified %d alerts, want 1", len(first.Notify))
	}
	if a := first.Notify[0]; a.Status != AlertFiring || !a.StartsAt.Equal(last) {
		t.Errorf("notified %+v, want firing since the last heartbeat %s", a, last)
	}
	for range 20 {
		l.now = l.now.Add(15 * time.Second)
		l.step(missingCandidate("w-01", last))
	}
	if len(l.notified) != 1 {
		t.Errorf("21 checks within the cooldown notified %d times, want 1", len(l.notified))
	}
	if st := l.states["heartbeat_missing/worker/w-01"]; !st.Alert.StartsAt.Equal(last) {
		t.Errorf("StartsAt moved to %s, want %s", st.Alert.StartsAt, last)
	}
}

func TestStepAlertsRenotifiesAfterCooldown(t *testing.T) {
	cooldown := 15 * time.Minute
	l := newLifecycle(cooldown)
	start := l.now
	var at []time.Duration
	for range 32 { // a check a minute for 31 minutes
		if s := l.step(missingCandidate("w-01", start.Add(-time.Minute))); len(s.Notify) > 0 {
			at = append(at, l.now.Sub(start))
		}
		l.now = l.now.Add(time.Minute)
	}
	want := []time.Duration{0, cooldown, 2 * cooldown}
	if len(at) != len(want) {
		t.Fatalf("notified at %v, want %v", at, want)
	}
	for i := range want {
		if at[i] != want[i] {
			t.Errorf("notification %d at %s, want %s", i, at[i], want[i])
		}
	}
}

func TestStepAlertsResolvesOnce(t *testing.T) {
	l := newLifecycle(15 * time.Minute)
	l.step(missingCandidate("w-01", ruleNow.Add(-time.Minute)))
	l.now = l.now.Add(15 * time.Second)
	resolvedAt := l.now
	s := l.step()
	if len(s.Resolved) != 1 || len(s.NotifyResolved) != 1 {
		t.Fatalf("resolving check: %d resolved, %d to notify, want 1 and 1", len(s.Resolved), len(s.NotifyResolved))
	}
	a := s.NotifyResolved[0]
	if a.Status != AlertResolved || !a.EndsAt.Equal(resolvedAt) {
		t.Errorf("resolved alert status %q ends %s, want resolved at %s", a.Status, a.EndsAt, resolvedAt)
	}
	if len(s.Next) != 0 {
		t.Errorf("resolved alert still has a state: %+v", s.Next)
	}
	for range 5 {
		l.now = l.now.Add(15 * time.Second)
		l.step()
	}
	if len(l.resolved) != 1 || len(l.notifyResolved) != 1 {
		t.Errorf("six checks resolved %d and notified %d resolutions, want 1 and 1", len(l.resolved), len(l.notifyResolved))
	}
}

func TestStepAlertsResolvedOnlyIfNotified(t *testing.T) {
	l := newLifecycle(15 * time.Minute)
	l.silenced = func(Alert) bool { return true }
	first := l.step(missingCandidate("w-01", ruleNow.Add(-time.Minute)))
	if len(first.Notify) != 0 {
		t.Errorf("silenced alert notified: %+v", first.Notify)
	}
	st := first.Next["heartbeat_missing/worker/w-01"]
	if !st.Firing() || !st.Alert.Silenced {
		t.Errorf("silenced alert state %+v, want firing and silenced", st)
	}
	l.now = l.now.Add(15 * time.Second)
	s := l.step()
	if len(s.Resolved) != 1 {
		t.Errorf("resolved %d alerts, want 1 for the alerts page history", len(s.Resolved))
	}
	if len(s.NotifyResolved) != 0 {
		t.Errorf("resolution of a never-notified alert is notified: %+v", s.NotifyResolved)
	}
}

func TestStepAlertsForDelay(t *testing.T) {
	grace := 30 * time.Second
	l := newLifecycle(15 * time.Minute)
	for _, offset := range []time.Duration{0, 10 * time.Second, 20 * time.Second, 29 * time.Second} {
		l.now = ruleNow.Add(offset)
		s := l.step(underSizeCandidate(grace))
		if len(s.Notify) != 0 {
			t.Errorf("at +%s the pending alert notified", offset)
		}
		if st := s.Next["pool_under_size/pool/billing"]; st.Firing() || !st.PendingSince.Equal(ruleNow) {
			t.Errorf("at +%s state %+v, want pending since %s", offset, st, ruleNow)
		}
	}
	l.now = ruleNow.Add(grace)
	s := l.step(underSizeCandidate(grace))
	if len(s.Notify) != 1 {
		t.Fatalf("after the For delay notified %d alerts, want 1", len(s.Notify))
	}
	if !s.Notify[0].StartsAt.Equal(l.now) {
		t.Errorf("StartsAt = %s, want when it fired, %s", s.Notify[0].StartsAt, l.now)
	}
}

func TestStepAlertsPendingClearsQuietly(t *testing.T) {
	l := newLifecycle(15 * time.Minute)
	l.step(underSizeCandidate(30 * time.Second))
	l.now = l.now.Add(15 * time.Second)
	s := l.step()
	if len(s.Resolved) != 0 || len(s.NotifyResolved) != 0 {
		t.Errorf("a pending alert that cleared resolved: %+v", s.Resolved)
	}
	// The delay starts over when the condition comes back.
	l.now = l.now.Add(15 * time.Second)
	l.step(underSizeCandidate(30 * time.Second))
	l.now = l.now.Add(15 * time.Second)
	if s := l.step(underSizeCandidate(30 * time.Second)); len(s.Notify) != 0 {
		t.Errorf("fired 15 s after the condition came back, want the full 30 s delay")
	}
}

func TestStepAlertsSilenceLifted(t *testing.T) {
	l := newLifecycle(15 * time.Minute)
	silenced := true
	l.silenced = func(Alert) bool { return silenced }
	for range 3 {
		l.step(missingCandidate("w-01", ruleNow.Add(-time.Minute)))
		l.now = l.now.Add(15 * time.Second)
	}
	if len(l.notified) != 0 {
		t.Fatalf("silenced alert notified %d times", len(l.notified))
	}
	silenced = false
	s := l.step(missingCandidate("w-01", ruleNow.Add(-time.Minute)))
	if len(s.Notify) != 1 {
		t.Errorf("after the silence ended notified %d alerts, want 1", len(s.Notify))
	}
	if s.Notify[0].Silenced {
		t.Errorf("notified alert is marked silenced")
	}
}

// TestErrorRateHoveringDoesNotFlood alternates a worker's error rate just
// above and just below the threshold, check after check.
func TestErrorRateHoveringDoesNotFlood(t *testing.T) {
	l := newLifecycle(15 * time.Minute)
	w := silentWorker(time.Second, StateRunning, StateRunning)
	check := func(failedPerThousand float64) AlertStep {
		firing := map[string]bool{}
		for fp, st := range l.states {
			firing[fp] = st.Firing()
		}
		_, candidates := evaluate(RuleInput{
			Workers: []*Worker{w},
			Rates:   map[string]WorkerRate{"w-01": {Processed: 1000, Failed: failedPerThousand, Window: time.Minute}},
			Firing:  firing,
		})
		s := l.step(candidates...)
		l.now = l.now.Add(15 * time.Second)
		return s
	}
	for i := range 40 {
		rate := 99.0 // 9.9 %
		if i%2 == 0 {
			rate = 101 // 10.1 %
		}
		check(rate)
	}
	if len(l.notified) != 1 || len(l.resolved) != 0 {
		t.Errorf("40 checks at 10.1/9.9 %%: %d notifications and %d resolutions, want 1 and 0", len(l.notified), len(l.resolved))
	}
	if s := check(50); len(s.NotifyResolved) != 1 {
		t.Errorf("rate fell to 5 %%: %d resolutions notified, want 1", len(s.NotifyResolved))
	}
}

// TestPoolSizeHoveringDoesNotFlood lets a pool's serving count flip between
// its desired size and one less on every check.
func TestPoolSizeHoveringDoesNotFlood(t *testing.T) {
	l := newLifecycle(15 * time.Minute)
	for i := range 40 {
		if i%2 == 0 {
			l.step(underSizeCandidate(ruleGrace))
		} else {
			l.step()
		}
		l.now = l.now.Add(15 * time.Second)
	}
	if len(l.notified) != 0 || len(l.resolved) != 0 {
		t.Errorf("a pool short every other check: %d notifications, %d resolutions, want none", len(l.notified), len(l.resolved))
	}
}
