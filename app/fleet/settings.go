package fleet

import (
	"fmt"
	"time"
)

// Settings are the values an operator can change at run time from the
// Settings page. Each replica reads them from Redis every check interval;
// the environment gives the defaults.
type Settings struct {
	AlertsEnabled      bool
	AutoActionsEnabled bool
	CheckInterval      time.Duration
	HeartbeatGrace     time.Duration
	Cooldown           time.Duration
	ErrorRateThreshold float64 // percent
	MinJobs            int
	SnapshotInterval   time.Duration
}

// Bounds of the settings, shared by the environment and the Settings page.
const (
	MinCheckInterval    = time.Second
	MaxCheckInterval    = time.Hour
	MinHeartbeatGrace   = time.Second
	MaxHeartbeatGrace   = 24 * time.Hour
	MaxCooldown         = 7 * 24 * time.Hour
	MinSnapshotInterval = 5 * time.Second
	MaxSnapshotInterval = 24 * time.Hour
)

// Validate returns every invalid field at once, keyed by the setting's form
// field name, so the Settings page can show each error beside its input.
func (s Settings) Validate() map[string]string {
	errs := map[string]string{}
	between := func(field string, d, min, max time.Duration) {
		if d < min || d > max {
			errs[field] = fmt.Sprintf("must be from %d to %d seconds", int(min.Seconds()), int(max.Seconds()))
		}
	}
	between("check_interval_seconds", s.CheckInterval, MinCheckInterval, MaxCheckInterval)
	between("heartbeat_grace_seconds", s.HeartbeatGrace, MinHeartbeatGrace, MaxHeartbeatGrace)
	between("cooldown_seconds", s.Cooldown, 0, MaxCooldown)
	between("snapshot_interval_seconds", s.SnapshotInterval, MinSnapshotInterval, MaxSnapshotInterval)
	if !(s.ErrorRateThreshold > 0 && s.ErrorRateThreshold <= 100) { // also rejects NaN
		errs["error_rate_threshold"] = "must be a percentage greater than 0 and at most 100"
	}
	if s.MinJobs < 1 || s.MinJobs > 1_000_000 {
		errs["min_jobs"] = "must be a whole number from 1 to 1000000"
	}
	return errs
}
