package fleet

import (
	"maps"
	"math"
	"slices"
	"testing"
	"time"
)

func TestSettingsValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Settings)
		want   []string // invalid fields
	}{
		{"defaults", func(*Settings) {}, nil},
		{"zero cooldown", func(s *Settings) { s.Cooldown = 0 }, nil},
		{"check interval too short", func(s *Settings) { s.CheckInterval = 500 * time.Millisecond }, []string{"check_interval_seconds"}},
		{"negative cooldown", func(s *Settings) { s.Cooldown = -time.Second }, []string{"cooldown_seconds"}},
		{"threshold zero", func(s *Settings) { s.ErrorRateThreshold = 0 }, []string{"error_rate_threshold"}},
		{"threshold over 100", func(s *Settings) { s.ErrorRateThreshold = 100.5 }, []string{"error_rate_threshold"}},
		{"threshold infinite", func(s *Settings) { s.ErrorRateThreshold = math.Inf(1) }, []string{"error_rate_threshold"}},
		// NaN compares false with everything, so the error-rate rule would
		// fire for every worker above the minimum jobs, failing or not.
		{"threshold NaN", func(s *Settings) { s.ErrorRateThreshold = math.NaN() }, []string{"error_rate_threshold"}},
		{"min jobs zero", func(s *Settings) { s.MinJobs = 0 }, []string{"min_jobs"}},
		{
			"every field at once",
			func(s *Settings) {
				s.CheckInterval, s.HeartbeatGrace, s.Cooldown, s.SnapshotInterval = 0, 0, -1, 0
				s.ErrorRateThreshold, s.MinJobs = -1, 0
			},
			[]string{"check_interval_seconds", "cooldown_seconds", "error_rate_threshold", "heartbeat_grace_seconds", "min_jobs", "snapshot_interval_seconds"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ruleSettings()
			tt.change(&s)
			errs := s.Validate()
			got := slices.Sorted(maps.Keys(errs))
			if !slices.Equal(got, tt.want) {
				t.Errorf("invalid fields = %v, want %v (%v)", got, tt.want, errs)
			}
		})
	}
}
