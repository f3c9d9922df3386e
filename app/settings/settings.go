// Package settings holds the runtime settings in force on this replica: the
// environment's values with the Settings page's overrides from Redis on top.
// Every replica reloads them when a change is announced and at least once a
// check interval, so a change is in force everywhere within seconds.
package settings

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// Kinds of setting values.
const (
	KindBool    = "bool"
	KindSeconds = "seconds"
	KindPercent = "percent"
	KindInt     = "int"
)

// Field describes one setting for the Settings page and for parsing.
type Field struct {
	Name  string // the form field and override key
	Label string
	Help  string
	Kind  string
	Env   string // the environment variable that gives the default
}

// Fields lists every runtime setting in page order.
var Fields = []Field{
	{Name: "alerts_enabled", Label: "Alerts", Help: "Send Slack and email notifications.", Kind: KindBool, Env: "ALERTS_ENABLED"},
	{Name: "auto_actions_enabled", Label: "Automatic actions", Help: "Pause failing workers and drain pools above their desired size.", Kind: KindBool, Env: "AUTO_ACTIONS_ENABLED"},
	{Name: "check_interval_seconds", Label: "Check interval", Help: "How often alert rules run, in seconds.", Kind: KindSeconds, Env: "ALERT_CHECK_INTERVAL_SECONDS"},
	{Name: "heartbeat_grace_seconds", Label: "Heartbeat grace", Help: "Silence after which a worker is offline, in seconds.", Kind: KindSeconds, Env: "ALERT_HEARTBEAT_GRACE_SECONDS"},
	{Name: "cooldown_seconds", Label: "Cooldown", Help: "Least time between two notifications of one alert, in seconds.", Kind: KindSeconds, Env: "ALERT_COOLDOWN_SECONDS"},
	{Name: "error_rate_threshold", Label: "Error-rate threshold", Help: "Failed jobs in percent of processed jobs that fires an alert.", Kind: KindPercent, Env: "ALERT_ERROR_RATE_THRESHOLD"},
	{Name: "min_jobs", Label: "Minimum jobs", Help: "Jobs a worker must process in the window before its error rate counts.", Kind: KindInt, Env: "ALERT_MIN_JOBS"},
	{Name: "snapshot_interval_seconds", Label: "Snapshot interval", Help: "How often history snapshots are written to MySQL, in seconds.", Kind: KindSeconds, Env: "SNAPSHOT_INTERVAL_SECONDS"},
}

// Store keeps the overrides (app/redis).
type Store interface {
	SettingOverrides(ctx context.Context) (map[string]string, error)
	SetSettingOverrides(ctx context.Context, set map[string]string, reset []string) error
}

type state struct {
	settings   fleet.Settings
	overridden map[string]bool
}

// Runtime holds the settings in force. It is safe for concurrent use.
type Runtime struct {
	defaults fleet.Settings
	// minGrace is the heartbeat interval: a shorter grace would make every
	// worker flap between online and offline.
	minGrace time.Duration
	store    Store
	cur      atomic.Pointer[state]
}

// New returns a Runtime that starts with the environment's values.
func New(defaults fleet.Settings, minGrace time.Duration, store Store) *Runtime {
	r := &Runtime{defaults: defaults, minGrace: minGrace, store: store}
	r.cur.Store(&state{settings: defaults, overridden: map[string]bool{}})
	return r
}

// Current returns the settings in force.
func (r *Runtime) Current() fleet.Settings { return r.cur.Load().settings }

// Defaults returns the environment's values.
func (r *Runtime) Defaults() fleet.Settings { return r.defaults }

// Overridden reports whether a setting comes from a runtime override.
func (r *Runtime) Overridden(name string) bool { return r.cur.Load().overridden[name] }

// Reload reads the overrides. On failure the settings in force stay.
func (r *Runtime) Reload(ctx context.Context) error {
	m, err := r.store.SettingOverrides(ctx)
	if err != nil {
		return err
	}
	s := r.defaults
	over := map[string]bool{}
	for _, f := range Fields {
		v, ok := m[f.Name]
		if !ok {
			continue
		}
		if apply(&s, f, v) == nil {
			over[f.Name] = true
		}
	}
	if errs := r.validate(s); len(errs) > 0 {
		return fmt.Errorf("stored settings are invalid, keeping the ones in force: %v", errs)
	}
	r.cur.Store(&state{settings: s, overridden: over})
	return nil
}

// Run reloads every interval until ctx ends; a reload that fails keeps the
// settings in force.
func (r *Runtime) Run(ctx context.Context, reload <-chan struct{}) {
	ticker := time.NewTicker(5 * time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-reload:
		}
		_ = r.Reload(ctx)
	}
}

// ShownPrefix starts the form keys that carry the value each field showed
// when the form was rendered.
const ShownPrefix = "shown."

// maxSeconds bounds any seconds field before Validate checks its own range.
const maxSeconds = 30 * 24 * 3600

// Change is one setting changed by Save, for the audit trail.
type Change struct {
	Name, Before, After string
}

// Save validates form values (a value per field name; a bool field absent
// from the form is false) and the fields named in reset, and stores only
// what changed: a value that differs from the one in force becomes an
// override, or drops the override when it equals the environment's. It
// returns every invalid field at once and stores nothing then.
func (r *Runtime) Save(ctx context.Context, form map[string]string, reset []string) ([]Change, map[string]string, error) {
	// A field counts as edited only when its value differs from what the
	// form showed: the form's "shown.<name>" values, or else this replica's
	// values before the reload below. Edits apply on top of what is stored
	// now, so a change that another replica made meanwhile is not undone.
	shown := r.Current()
	if err := r.Reload(ctx); err != nil {
		return nil, nil, err
	}
	cur := r.Current()
	next := cur
	errs := map[string]string{}
	set := map[string]string{}
	resetting := map[string]bool{}
	for _, name := range reset {
		if field(name).Name == "" {
			errs[name] = "is not a setting"
			continue
		}
		resetting[name] = true
	}
	for _, f := range Fields {
		if resetting[f.Name] {
			copyField(&next, r.defaults, f)
			continue
		}
		v, ok := form[f.Name]
		if f.Kind == KindBool && !ok {
			v = "false"
		} else if !ok {
			continue
		}
		if err := apply(&next, f, strings.TrimSpace(v)); err != nil {
			errs[f.Name] = err.Error()
			continue
		}
		after := format(next, f)
		before := format(shown, f)
		if was, ok := form[ShownPrefix+f.Name]; ok {
			before = strings.TrimSpace(was)
		}
		if after == before {
			copyField(&next, cur, f) // not edited: keep what is stored now
			continue
		}
		switch {
		case after == format(cur, f):
			// unchanged: nothing to write
		case after == format(r.defaults, f):
			resetting[f.Name] = true
		default:
			set[f.Name] = after
		}
	}
	for k, v := range r.validate(next) {
		if _, ok := errs[k]; !ok {
			errs[k] = v
		}
	}
	if len(errs) > 0 {
		return nil, errs, nil
	}

	var changes []Change
	for _, f := range Fields {
		if before, after := format(cur, f), format(next, f); before != after {
			changes = append(changes, Change{Name: f.Name, Before: before, After: after})
		}
	}
	resetNames := make([]string, 0, len(resetting))
	for name := range resetting {
		if r.Overridden(name) {
			resetNames = append(resetNames, name)
		}
	}
	sort.Strings(resetNames)
	if len(set) == 0 && len(resetNames) == 0 {
		return changes, nil, nil
	}
	if err := r.store.SetSettingOverrides(ctx, set, resetNames); err != nil {
		return nil, nil, err
	}
	return changes, nil, r.Reload(ctx)
}

func (r *Runtime) validate(s fleet.Settings) map[string]string {
	errs := s.Validate()
	if s.HeartbeatGrace < r.minGrace {
		errs["heartbeat_grace_seconds"] = fmt.Sprintf("must be at least the heartbeat interval, %d seconds", int(r.minGrace.Seconds()))
	}
	return errs
}

func field(name string) Field {
	for _, f := range Fields {
		if f.Name == name {
			return f
		}
	}
	return Field{}
}

// Value returns a setting's value as text, for the form.
func Value(s fleet.Settings, name string) string { return format(s, field(name)) }

func apply(s *fleet.Settings, f Field, v string) error {
	switch f.Kind {
	case KindBool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("must be true or false")
		}
		*boolField(s, f.Name) = b
	case KindSeconds:
		// Bounded before the conversion, so a huge number cannot overflow
		// into a valid-looking duration.
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxSeconds {
			return fmt.Errorf("must be a whole number of seconds from 0 to %d", maxSeconds)
		}
		*durationField(s, f.Name) = time.Duration(n) * time.Second
	case KindPercent:
		p, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("must be a number such as 5 or 2.5")
		}
		s.ErrorRateThreshold = p
	case KindInt:
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("must be a whole number")
		}
		s.MinJobs = n
	}
	return nil
}

func format(s fleet.Settings, f Field) string {
	switch f.Kind {
	case KindBool:
		return strconv.FormatBool(*boolField(&s, f.Name))
	case KindSeconds:
		return strconv.Itoa(int(durationField(&s, f.Name).Seconds()))
	case KindPercent:
		return strconv.FormatFloat(s.ErrorRateThreshold, 'f', -1, 64)
	case KindInt:
		return strconv.Itoa(s.MinJobs)
	}
	return ""
}

func copyField(dst *fleet.Settings, src fleet.Settings, f Field) {
	_ = apply(dst, f, format(src, f))
}

func boolField(s *fleet.Settings, name string) *bool {
	if name == "auto_actions_enabled" {
		return &s.AutoActionsEnabled
	}
	return &s.AlertsEnabled
}

func durationField(s *fleet.Settings, name string) *time.Duration {
	switch name {
	case "heartbeat_grace_seconds":
		return &s.HeartbeatGrace
	case "cooldown_seconds":
		return &s.Cooldown
	case "snapshot_interval_seconds":
		return &s.SnapshotInterval
	}
	return &s.CheckInterval
}
