// Package alert runs the alert check: it samples every worker's counters,
// evaluates the rules in app/fleet, advances each alert's lifecycle in
// Redis, claims each notification atomically so no replica or restart sends
// one twice, hands the grouped notification to each channel, and takes the
// automatic actions when they are on.
package alert

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/redis"
	"github.com/verifier/controlplane/app/service"
)

// Store is the alert state in Redis (app/redis).
type Store interface {
	AlertStates(ctx context.Context) (map[string]fleet.AlertState, error)
	SaveAlertStates(ctx context.Context, next map[string]fleet.AlertState, resolved []fleet.Alert) error
	ResolvedAlerts(ctx context.Context, limit int) ([]fleet.Alert, error)
	ClaimNotify(ctx context.Context, fp string, startsAt, now time.Time, cooldown time.Duration) (redis.NotifyClaim, error)
	ClaimResolved(ctx context.Context, a fleet.Alert) (bool, error)
	Silences(ctx context.Context) ([]fleet.Silence, error)
	AddSilence(ctx context.Context, s fleet.Silence) error
	RemoveSilence(ctx context.Context, id string) (fleet.Silence, error)
	PruneSilences(ctx context.Context, now time.Time) error
	Samples(ctx context.Context) (map[string][2]redis.CounterSample, error)
	SaveSamples(ctx context.Context, samples map[string][2]redis.CounterSample) error
	SetFleetRates(ctx context.Context, r fleet.FleetRates) error
	StoreOutage(ctx context.Context) (start, end time.Time, err error)
	SetStoreOutage(ctx context.Context, start, end time.Time) error
	SilentSince(ctx context.Context, t time.Time) ([]string, error)
	RemoveWorkers(ctx context.Context, ids []string) error
}

// Options configure the engine.
type Options struct {
	HeartbeatInterval time.Duration
	// WorkerRetention is how long a silent worker stays in the active set.
	WorkerRetention time.Duration
	// PublicURL, when set, gives notifications a link to the Alerts page.
	PublicURL string
	// RateWindow overrides the error-rate window; zero derives it from the
	// check interval.
	RateWindow time.Duration
	// MaxAutoActions caps the automatic commands of one check. Default 10.
	MaxAutoActions int
}

// Engine evaluates alerts. Only the scheduler's leader calls Check.
type Engine struct {
	store    Store
	svc      *service.Service
	settings func() fleet.Settings
	dispatch *Dispatcher
	opts     Options
	now      func() time.Time
	log      *slog.Logger

	mu sync.Mutex
	// storeDownSince is when this replica's check first failed to read
	// Redis; storeAlert is the store_unavailable alert it sent, if any.
	// Both live in memory: Redis is exactly what cannot be written then.
	storeDownSince time.Time
	storeAlert     *fleet.Alert
}

// NewEngine returns an engine.
func NewEngine(store Store, svc *service.Service, settings func() fleet.Settings, dispatch *Dispatcher, opts Options, now func() time.Time, log *slog.Logger) *Engine {
	if opts.MaxAutoActions <= 0 {
		opts.MaxAutoActions = 10
	}
	return &Engine{store: store, svc: svc, settings: settings, dispatch: dispatch, opts: opts, now: now, log: log}
}

// rateWindow is the span over which error rates are measured: ten checks,
// from one to fifteen minutes.
func (e *Engine) rateWindow(s fleet.Settings) time.Duration {
	if e.opts.RateWindow > 0 {
		return e.opts.RateWindow
	}
	return min(max(10*s.CheckInterval, time.Minute), 15*time.Minute)
}

// Check runs one alert check.
func (e *Engine) Check(ctx context.Context) error {
	s := e.settings()
	now := e.now().UTC()

	entries, err := e.svc.Index(ctx)
	if err != nil {
		if fleet.ErrorCode(err) == fleet.EUNAVAILABLE {
			e.storeDown(now, s)
		}
		return fmt.Errorf("alert check: %w", err)
	}
	if err := e.storeBack(ctx, now); err != nil {
		return fmt.Errorf("alert check: %w", err)
	}

	ids := make([]string, len(entries))
	for i, en := range entries {
		ids[i] = en.ID
	}
	workers, err := e.svc.WorkersByID(ctx, ids)
	if err != nil {
		return fmt.Errorf("alert check: read workers: %w", err)
	}
	pools, err := e.svc.PoolsFrom(ctx, entries)
	if err != nil {
		return fmt.Errorf("alert check: read pools: %w", err)
	}
	rates, err := e.sample(ctx, workers, now, e.rateWindow(s))
	if err != nil {
		return fmt.Errorf("alert check: sample counters: %w", err)
	}
	outageStart, outageEnd, err := e.store.StoreOutage(ctx)
	if err != nil {
		return fmt.Errorf("alert check: %w", err)
	}
	prev, err := e.store.AlertStates(ctx)
	if err != nil {
		return fmt.Errorf("alert check: %w", err)
	}
	silences, err := e.store.Silences(ctx)
	if err != nil {
		return fmt.Errorf("alert check: %w", err)
	}

	firing := make(map[string]bool, len(prev))
	for fp, st := range prev {
		firing[fp] = st.Firing()
	}
	candidates := fleet.EvaluateRules(fleet.RuleInput{
		Now: now, Settings: s, HeartbeatInterval: e.opts.HeartbeatInterval,
		Workers: workers, Pools: pools, Rates: rates, Firing: firing,
		StoreOutageStart: outageStart, StoreOutageEnd: outageEnd,
	})
	silenced := func(a fleet.Alert) bool {
		for _, sl := range silences {
			if sl.Matches(a, now) {
				return true
			}
		}
		return false
	}
	step := fleet.StepAlerts(prev, candidates, now, s.Cooldown, silenced)

	// A worker removed after the retention period did not come back, so
	// its alerts end without a "resolved" message.
	present := make(map[string]bool, len(entries))
	for _, en := range entries {
		present[en.ID] = true
	}
	kept := step.NotifyResolved[:0]
	for _, a := range step.NotifyResolved {
		if a.WorkerID == "" || present[a.WorkerID] {
			kept = append(kept, a)
		}
	}
	step.NotifyResolved = kept

	var n fleet.Notification
	if s.AlertsEnabled {
		n, err = e.claim(ctx, step, now, s.Cooldown)
		if err != nil {
			return fmt.Errorf("alert check: %w", err)
		}
	}
	// Send what this check claimed before saving: if the save fails, the
	// next check finds the claims taken and marks the alerts notified, so
	// nothing is sent twice and nothing claimed is lost.
	if !n.Empty() {
		n.URL = e.alertsURL()
		e.dispatch.Enqueue(n)
		e.svc.Record(ctx, fleet.AuditEntry{
			At: now, Actor: "auto", Source: fleet.SourceAuto, Kind: fleet.AuditNotification, Action: "notify",
			After: fmt.Sprintf("%d firing, %d resolved", len(n.Firing), len(n.Resolved)), Reason: n.Title(),
		})
	}
	if err := e.store.SaveAlertStates(ctx, step.Next, step.Resolved); err != nil {
		return fmt.Errorf("alert check: %w", err)
	}

	if s.AutoActionsEnabled {
		e.autoActions(ctx, step.Next, workers, pools, rates, now, s)
	}
	if err := e.store.PruneSilences(ctx, now); err != nil {
		e.log.Warn("expired silences not pruned", "err", err)
	}
	return nil
}

// claim turns the due notifications into one grouped notification, keeping
// only those this check won the claim for, and records them as notified.
func (e *Engine) claim(ctx context.Context, step fleet.AlertStep, now time.Time, cooldown time.Duration) (fleet.Notification, error) {
	var n fleet.Notification
	for _, a := range step.Notify {
		c, err := e.store.ClaimNotify(ctx, a.Fingerprint, a.StartsAt, now, cooldown)
		if err != nil {
			return n, err
		}
		st := step.Next[a.Fingerprint]
		switch {
		case c.Won:
			n.Firing = append(n.Firing, a)
			st.Notified, st.LastNotified = true, now
		case c.SameIncident:
			// Another replica, or a check before a restart, sent it.
			st.Notified, st.LastNotified = true, c.ClaimedAt
		default:
			// An earlier incident of a flapping alert holds the claim: this
			// one is notified when the cooldown ends, and its resolution
			// only if its firing was sent.
		}
		step.Next[a.Fingerprint] = st
	}
	for _, a := range step.NotifyResolved {
		ok, err := e.store.ClaimResolved(ctx, a)
		if err != nil {
			return n, err
		}
		if ok {
			n.Resolved = append(n.Resolved, a)
		}
	}
	return n, nil
}

func (e *Engine) alertsURL() string {
	if e.opts.PublicURL == "" {
		return ""
	}
	return e.opts.PublicURL + "/verifier-engine-room/alerts"
}

// storeDown reports the control plane's own outage once, after the grace
// period, instead of blaming every worker for missing heartbeats.
func (e *Engine) storeDown(now time.Time, s fleet.Settings) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.storeDownSince.IsZero() {
		e.storeDownSince = now
		e.log.Warn("alert check cannot reach Redis; no worker is blamed while it is down")
	}
	if e.storeAlert != nil || now.Sub(e.storeDownSince) < s.HeartbeatGrace || !s.AlertsEnabled {
		return
	}
	a := fleet.Alert{
		Fingerprint: fleet.Fingerprint(fleet.RuleStoreUnavailable, "", ""), Rule: fleet.RuleStoreUnavailable,
		Status: fleet.AlertFiring, StartsAt: e.storeDownSince,
		Summary: "the state store (Redis) is unavailable: heartbeats get 503 and no worker state is recorded",
		Value:   now.Sub(e.storeDownSince).Seconds(), Threshold: s.HeartbeatGrace.Seconds(), Unit: "s",
	}
	e.storeAlert = &a
	e.dispatch.Enqueue(fleet.Notification{Firing: []fleet.Alert{a}, URL: e.alertsURL()})
}

// storeBack records the end of an outage, so that workers get a full grace
// period to reach us again, and resolves the outage alert if this replica
// sent it.
func (e *Engine) storeBack(ctx context.Context, now time.Time) error {
	e.mu.Lock()
	down, sent := e.storeDownSince, e.storeAlert
	e.storeDownSince, e.storeAlert = time.Time{}, nil
	e.mu.Unlock()
	if down.IsZero() {
		return nil
	}
	if err := e.store.SetStoreOutage(ctx, down, now); err != nil {
		e.mu.Lock()
		if e.storeDownSince.IsZero() {
			e.storeDownSince, e.storeAlert = down, sent // try again next time
		}
		e.mu.Unlock()
		return err
	}
	e.log.Info("Redis reachable again; workers get the grace period plus the outage's length to come back before any is blamed", "down_for", now.Sub(down).Round(time.Second))
	if sent != nil {
		a := *sent
		a.Status, a.EndsAt = fleet.AlertResolved, now
		e.dispatch.Enqueue(fleet.Notification{Resolved: []fleet.Alert{a}, URL: e.alertsURL()})
	}
	return nil
}

// StoreDown notes that this replica lost Redis, whether or not it runs the
// alert check, so that it records the outage's end when Redis is back.
func (e *Engine) StoreDown() {
	e.mu.Lock()
	if e.storeDownSince.IsZero() {
		e.storeDownSince = e.now().UTC()
	}
	e.mu.Unlock()
}

// StoreBack records the end of an outage that StoreDown noted. A failure
// is logged; the alert check tries again.
func (e *Engine) StoreBack(ctx context.Context) {
	if err := e.storeBack(ctx, e.now().UTC()); err != nil {
		e.log.Warn("outage end not recorded; the alert check tries again", "err", err)
	}
}

// Housekeep removes workers silent for longer than the retention period from
// the active set, with all their keys, and records each in the audit trail.
func (e *Engine) Housekeep(ctx context.Context) error {
	now := e.now().UTC()
	ids, err := e.store.SilentSince(ctx, now.Add(-e.opts.WorkerRetention))
	if err != nil {
		return fmt.Errorf("housekeeping: %w", err)
	}
	if len(ids) == 0 {
		return nil
	}
	if err := e.store.RemoveWorkers(ctx, ids); err != nil {
		return fmt.Errorf("housekeeping: %w", err)
	}
	for _, id := range ids {
		e.svc.Record(ctx, fleet.AuditEntry{
			At: now, Actor: "auto", Source: fleet.SourceAuto, Kind: fleet.AuditCleanup, Action: "remove",
			WorkerID: id, Reason: "silent for longer than the retention period of " + e.opts.WorkerRetention.String(),
		})
	}
	e.log.Info("removed workers silent beyond the retention period", "count", len(ids), "retention", e.opts.WorkerRetention)
	return nil
}

// Page is the content of the Alerts page.
type Page struct {
	Firing   []fleet.Alert
	Pending  []fleet.Alert
	Resolved []fleet.Alert
	Silences []fleet.Silence
	Now      time.Time
}

// PageData reads the alerts page's content.
func (e *Engine) PageData(ctx context.Context) (Page, error) {
	p := Page{Now: e.now().UTC()}
	states, err := e.store.AlertStates(ctx)
	if err != nil {
		return p, err
	}
	for _, st := range states {
		if st.Firing() {
			p.Firing = append(p.Firing, st.Alert)
		} else {
			p.Pending = append(p.Pending, st.Alert)
		}
	}
	fleet.SortAlerts(p.Firing)
	fleet.SortAlerts(p.Pending)
	if p.Resolved, err = e.store.ResolvedAlerts(ctx, 50); err != nil {
		return p, err
	}
	silences, err := e.store.Silences(ctx)
	if err != nil {
		return p, err
	}
	for _, sl := range silences {
		if p.Now.Before(sl.Until) {
			p.Silences = append(p.Silences, sl)
		}
	}
	return p, nil
}

// Silence adds a silence on behalf of actor.
func (e *Engine) Silence(ctx context.Context, sl fleet.Silence, actor, source string) (fleet.Silence, error) {
	now := e.now().UTC()
	sl.CreatedAt, sl.CreatedBy = now, actor
	sl.ID = rand.Text() // random, so two silences made at one instant never collide
	if err := fleet.ValidateSilence(sl, now); err != nil {
		return sl, err
	}
	if err := e.store.AddSilence(ctx, sl); err != nil {
		return sl, err
	}
	e.svc.Record(ctx, fleet.AuditEntry{
		At: now, Actor: actor, Source: source, Kind: fleet.AuditSilence, Action: "silence",
		WorkerID: workerOf(sl), Pool: poolOf(sl), After: sl.Matcher + " " + sl.Value + " until " + sl.Until.Format(time.RFC3339), Reason: sl.Reason,
	})
	return sl, nil
}

// Unsilence lifts a silence on behalf of actor.
func (e *Engine) Unsilence(ctx context.Context, id, actor, source string) error {
	sl, err := e.store.RemoveSilence(ctx, id)
	if err != nil {
		return err
	}
	e.svc.Record(ctx, fleet.AuditEntry{
		Actor: actor, Source: source, Kind: fleet.AuditSilence, Action: "unsilence",
		WorkerID: workerOf(sl), Pool: poolOf(sl), Before: sl.Matcher + " " + sl.Value,
	})
	return nil
}

func workerOf(sl fleet.Silence) string {
	if sl.Matcher == "worker" {
		return sl.Value
	}
	return ""
}

func poolOf(sl fleet.Silence) string {
	if sl.Matcher == "pool" {
		return sl.Value
	}
	return ""
}
