package fleet

import (
	"fmt"
	"time"
)

// WorkerRate is one worker's jobs over the recent sampling window, from the
// growth of its cumulative counters.
type WorkerRate struct {
	Processed float64
	Failed    float64
	Window    time.Duration
}

// RuleInput is everything the alert rules look at in one check.
type RuleInput struct {
	Now               time.Time
	Settings          Settings
	HeartbeatInterval time.Duration
	Workers           []*Worker // with Derive applied
	Pools             []*Pool
	Rates             map[string]WorkerRate
	// StoreOutageStart and StoreOutageEnd bound the control plane's last
	// Redis outage, or are zero. Silence during our own outage blames no
	// worker.
	StoreOutageStart time.Time
	StoreOutageEnd   time.Time
	// Firing holds the fingerprints firing before this check, so a rule can
	// keep firing inside a hysteresis band instead of flapping.
	Firing map[string]bool
}

// Candidate is an alert a rule found, which fires once its condition has
// held for For.
type Candidate struct {
	Alert Alert
	For   time.Duration
}

// errorRateResolveRatio is the hysteresis of the error-rate rule: it fires
// above the threshold and resolves only below 80 % of it, so a rate hovering
// at the threshold does not fire and resolve over and over.
const errorRateResolveRatio = 0.8

// MaxOutageAllowance caps the extra time workers get to come back after a
// Redis outage, on top of the grace period.
const MaxOutageAllowance = 5 * time.Minute

// CommandGraceHeartbeats is how many heartbeat intervals a worker has to
// apply a command before command_not_applied fires.
const CommandGraceHeartbeats = 3

// EvaluateRules returns the alerts whose conditions hold now.
func EvaluateRules(in RuleInput) []Candidate {
	var out []Candidate
	grace := in.Settings.HeartbeatGrace
	for _, w := range in.Workers {
		if c, ok := heartbeatMissing(in, w, grace); ok {
			out = append(out, c)
		}
		if w.Stale {
			continue // the rules below need a live worker
		}
		if c, ok := errorRate(in, w); ok {
			out = append(out, c)
		}
		if c, ok := commandNotApplied(in, w); ok {
			out = append(out, c)
		}
	}
	for _, p := range in.Pools {
		if p.Shortfall() == 0 {
			continue
		}
		out = append(out, Candidate{For: grace, Alert: Alert{
			Fingerprint: Fingerprint(RulePoolUnderSize, p.Name, ""), Rule: RulePoolUnderSize, Pool: p.Name,
			Summary: fmt.Sprintf("pool %s has %d of %d workers serving", p.Name, p.Serving(), p.DesiredCount),
			Value:   float64(p.Serving()), Threshold: float64(p.DesiredCount), Unit: "workers",
		}})
	}
	return out
}

func heartbeatMissing(in RuleInput, w *Worker, grace time.Duration) (Candidate, bool) {
	// A worker told to drain or stop is expected to exit and fall silent.
	if !w.Stale || w.Status == StateStopped || w.Desired == StateStopped || w.Desired == StateDraining {
		return Candidate{}, false
	}
	since := w.LastHeartbeat
	if !in.StoreOutageEnd.IsZero() && !w.LastHeartbeat.Before(in.StoreOutageStart.Add(-grace)) {
		// The worker was alive when our outage began. Count its silence
		// only from when it could reach us again, plus as long as the
		// outage lasted (at most MaxOutageAllowance), because clients back
		// off while the server responds with 503. A worker already missing
		// before the outage keeps its alert.
		back := in.StoreOutageEnd.Add(min(in.StoreOutageEnd.Sub(in.StoreOutageStart), MaxOutageAllowance))
		if back.After(since) {
			since = back
		}
	}
	if in.Now.Sub(since) <= grace {
		return Candidate{}, false
	}
	return Candidate{Alert: Alert{
		Fingerprint: Fingerprint(RuleHeartbeatMissing, w.Pool, w.ID), Rule: RuleHeartbeatMissing,
		Pool: w.Pool, WorkerID: w.ID,
		Summary: fmt.Sprintf("%s missed heartbeats", w.ID),
		Value:   in.Now.Sub(w.LastHeartbeat).Seconds(), Threshold: grace.Seconds(), Unit: "s",
		StartsAt: w.LastHeartbeat,
	}}, true
}

func errorRate(in RuleInput, w *Worker) (Candidate, bool) {
	r, ok := in.Rates[w.ID]
	if !ok || r.Processed < float64(in.Settings.MinJobs) {
		return Candidate{}, false
	}
	rate, _ := ErrorRate(r.Processed, r.Failed)
	threshold := in.Settings.ErrorRateThreshold
	fp := Fingerprint(RuleErrorRate, w.Pool, w.ID)
	limit := threshold
	if in.Firing[fp] {
		limit = threshold * errorRateResolveRatio
	}
	if rate <= limit {
		return Candidate{}, false
	}
	return Candidate{Alert: Alert{
		Fingerprint: fp, Rule: RuleErrorRate, Pool: w.Pool, WorkerID: w.ID,
		Summary: fmt.Sprintf("%s fails %.1f%% of jobs (%.0f of %.0f)", w.ID, rate, r.Failed, r.Processed),
		Value:   rate, Threshold: threshold, Unit: "%",
	}}, true
}

func commandNotApplied(in RuleInput, w *Worker) (Candidate, bool) {
	c := w.LastCommand
	if c == nil || !w.Pending() {
		return Candidate{}, false
	}
	wait := CommandGraceHeartbeats * in.HeartbeatInterval
	age := in.Now.Sub(c.At)
	if age <= wait {
		return Candidate{}, false
	}
	return Candidate{Alert: Alert{
		Fingerprint: Fingerprint(RuleCommandNotApplied, w.Pool, w.ID), Rule: RuleCommandNotApplied,
		Pool: w.Pool, WorkerID: w.ID,
		Summary: fmt.Sprintf("%s still reports %s, %s after it was told to %s", w.ID, w.Status, age.Round(time.Second), c.Action),
		Value:   age.Seconds(), Threshold: wait.Seconds(), Unit: "s",
	}}, true
}

// AlertState is the lifecycle record of one alert between checks.
type AlertState struct {
	Alert Alert
	// PendingSince is when the condition first held; the alert fires once
	// it has held for its Candidate.For.
	PendingSince time.Time
	// Notified is set once a firing notification was sent for this
	// incident; only then is its resolution notified.
	Notified     bool
	LastNotified time.Time
}

// Firing reports whether the alert has fired (not merely pending).
func (s AlertState) Firing() bool { return s.Alert.Status == AlertFiring }

// AlertStep is the outcome of one check for the alert lifecycle.
type AlertStep struct {
	Next map[string]AlertState
	// Notify lists firing alerts due a notification: new ones, and those
	// still firing one cooldown after their last notification.
	Notify []Alert
	// Resolved lists every alert that stopped firing; NotifyResolved the
	// subset whose firing was notified.
	Resolved       []Alert
	NotifyResolved []Alert
}

// StepAlerts advances the alert lifecycle by one check. silenced reports
// whether an alert is silenced: it still fires and shows, but is not
// notified.
func StepAlerts(prev map[string]AlertState, candidates []Candidate, now time.Time, cooldown time.Duration, silenced func(Alert) bool) AlertStep {
	t := AlertStep{Next: make(map[string]AlertState, len(candidates))}
	for _, c := range candidates {
		fp := c.Alert.Fingerprint
		st, seen := prev[fp]
		if !seen {
			st = AlertState{PendingSince: now}
		}
		held := now.Sub(st.PendingSince) >= c.For
		wasFiring := st.Firing()
		startsAt := st.Alert.StartsAt
		st.Alert = c.Alert
		if !held {
			st.Alert.Status = ""
			t.Next[fp] = st
			continue
		}
		st.Alert.Status = AlertFiring
		st.Alert.StartsAt = startsAt
		if !wasFiring {
			// A rule may say when the incident began (the last heartbeat of
			// a silent worker); otherwise it begins now.
			st.Alert.StartsAt = c.Alert.StartsAt
			if st.Alert.StartsAt.IsZero() {
				st.Alert.StartsAt = now
			}
		}
		st.Alert.Silenced = silenced != nil && silenced(st.Alert)
		if !st.Alert.Silenced && (!st.Notified || now.Sub(st.LastNotified) >= cooldown) {
			t.Notify = append(t.Notify, st.Alert)
		}
		t.Next[fp] = st
	}
	for fp, st := range prev {
		if _, still := t.Next[fp]; still || !st.Firing() {
			continue
		}
		a := st.Alert
		a.Status, a.EndsAt = AlertResolved, now
		t.Resolved = append(t.Resolved, a)
		if st.Notified {
			t.NotifyResolved = append(t.NotifyResolved, a)
		}
	}
	SortAlerts(t.Notify)
	SortAlerts(t.Resolved)
	SortAlerts(t.NotifyResolved)
	return t
}

// Silence mutes notifications of matching alerts until Until.
type Silence struct {
	ID string
	// Matcher is "alert" (Value is a fingerprint), "worker" or "pool".
	Matcher   string
	Value     string
	Until     time.Time
	Reason    string
	CreatedBy string
	CreatedAt time.Time
}

// Matches reports whether the silence covers a at now.
func (s Silence) Matches(a Alert, now time.Time) bool {
	if !now.Before(s.Until) {
		return false
	}
	switch s.Matcher {
	case "alert":
		return a.Fingerprint == s.Value
	case "worker":
		return a.WorkerID == s.Value
	case "pool":
		return a.Pool == s.Value
	}
	return false
}

// ValidateSilence checks a new silence.
func ValidateSilence(s Silence, now time.Time) error {
	switch s.Matcher {
	case "alert":
		if s.Value == "" || len(s.Value) > 300 {
			return Errorf(EINVALID, "value", "value must name the alert's fingerprint")
		}
	case "worker":
		if err := ValidateName("value", s.Value); err != nil {
			return err
		}
	case "pool":
		if err := ValidateName("value", s.Value); err != nil {
			return err
		}
	default:
		return Errorf(EINVALID, "matcher", "matcher must be alert, worker or pool")
	}
	d := s.Until.Sub(now)
	if d < time.Minute || d > 30*24*time.Hour {
		return Errorf(EINVALID, "duration", "duration must be from 1 minute to 30 days")
	}
	if len(s.Reason) == 0 || len(s.Reason) > 500 {
		return Errorf(EINVALID, "reason", "reason is required, at most 500 bytes")
	}
	return nil
}
