package fleet

import (
	"strings"
	"testing"
	"time"
)

func TestCountPools(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	grace := 30 * time.Second
	live := now.Add(-5 * time.Second)
	old := now.Add(-2 * 24 * time.Hour)

	entries := []PoolEntry{
		{ID: "w-01", Pool: "billing", Status: StateRunning, LastHeartbeat: live},
		{ID: "w-02", Pool: "billing", Status: StateRunning, LastHeartbeat: live},
		{ID: "w-03", Pool: "billing", Status: StateDraining, LastHeartbeat: live},
		{ID: "w-04", Pool: "billing", Status: StateRunning, LastHeartbeat: old},
		{ID: "w-05", Pool: "email", Status: StatePaused, LastHeartbeat: live},
		{ID: "w-06", Pool: "email", Status: StateStopped, LastHeartbeat: now.Add(-grace)},
		{ID: "w-07", Pool: "reports", Status: StateRunning, LastHeartbeat: time.Time{}},
	}
	desired := map[string]int{"billing": 3, "scaled-only": 0}
	known := []string{"billing", "email", "idle"}

	pools := CountPools(entries, desired, known, now, grace)

	tests := []struct {
		name       string
		byStatus   map[State]int
		stale      int
		hasDesired bool
		desired    int
		live       int
		serving    int
		surplus    int
		shortfall  int
	}{
		{"billing", map[State]int{StateRunning: 2, StateDraining: 1}, 1, true, 3, 3, 2, 0, 1},
		{"email", map[State]int{StatePaused: 1, StateStopped: 1}, 0, false, 0, 2, 1, 0, 0},
		{"reports", map[State]int{}, 1, false, 0, 0, 0, 0, 0},
		{"idle", map[State]int{}, 0, false, 0, 0, 0, 0, 0},
		{"scaled-only", map[State]int{}, 0, true, 0, 0, 0, 0, 0},
	}
	if len(pools) != len(tests) {
		t.Errorf("CountPools returned %d pools, want %d", len(pools), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := pools[tt.name]
			if !ok {
				t.Fatalf("pool %s missing", tt.name)
			}
			if p.Name != tt.name {
				t.Errorf("Name = %q", p.Name)
			}
			for _, s := range States {
				if p.ByStatus[s] != tt.byStatus[s] {
					t.Errorf("ByStatus[%s] = %d, want %d", s, p.ByStatus[s], tt.byStatus[s])
				}
			}
			if p.Stale != tt.stale {
				t.Errorf("Stale = %d, want %d", p.Stale, tt.stale)
			}
			if p.HasDesired != tt.hasDesired {
				t.Errorf("HasDesired = %v, want %v", p.HasDesired, tt.hasDesired)
			}
			if p.DesiredCount != tt.desired {
				t.Errorf("DesiredCount = %d, want %d", p.DesiredCount, tt.desired)
			}
			if p.Live() != tt.live {
				t.Errorf("Live = %d, want %d", p.Live(), tt.live)
			}
			if p.Serving() != tt.serving {
				t.Errorf("Serving = %d, want %d", p.Serving(), tt.serving)
			}
			if p.Surplus() != tt.surplus {
				t.Errorf("Surplus = %d, want %d", p.Surplus(), tt.surplus)
			}
			if p.Shortfall() != tt.shortfall {
				t.Errorf("Shortfall = %d, want %d", p.Shortfall(), tt.shortfall)
			}
		})
	}
}

func TestCountPoolsEmpty(t *testing.T) {
	pools := CountPools(nil, nil, nil, time.Now(), time.Minute)
	if len(pools) != 0 {
		t.Errorf("CountPools of nothing = %d pools, want 0", len(pools))
	}
}

func TestPoolSurplusAndShortfall(t *testing.T) {
	tests := []struct {
		name       string
		byStatus   map[State]int
		hasDesired bool
		desired    int
		surplus    int
		shortfall  int
	}{
		{"never scaled", map[State]int{StateRunning: 5}, false, 0, 0, 0},
		{"at size", map[State]int{StateRunning: 2, StatePaused: 1}, true, 3, 0, 0},
		{"over size", map[State]int{StateRunning: 5}, true, 3, 2, 0},
		{"scaled to zero", map[State]int{StateRunning: 2}, true, 0, 2, 0},
		{"draining does not serve", map[State]int{StateRunning: 2, StateDraining: 1}, true, 3, 0, 1},
		{"stopped does not serve", map[State]int{StateStopped: 3}, true, 3, 0, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Pool{ByStatus: tt.byStatus, HasDesired: tt.hasDesired, DesiredCount: tt.desired}
			if got := p.Surplus(); got != tt.surplus {
				t.Errorf("Surplus = %d, want %d", got, tt.surplus)
			}
			if got := p.Shortfall(); got != tt.shortfall {
				t.Errorf("Shortfall = %d, want %d", got, tt.shortfall)
			}
		})
	}
}

func TestValidateDesiredCount(t *testing.T) {
	for _, n := range []int64{0, 1, 999, 1000} {
		if err := ValidateDesiredCount(n, 1000); err != nil {
			t.Errorf("ValidateDesiredCount(%d) = %v, want nil", n, err)
		}
	}
	for _, n := range []int64{-1, 1001, 1 << 40, -1 << 62} {
		err := ValidateDesiredCount(n, 1000)
		if field := ErrorField(err); field != "desired_count" {
			t.Errorf("ValidateDesiredCount(%d) field = %q, want desired_count", n, field)
		}
		if msg := ErrorMessage(err); !strings.Contains(msg, "from 0 to 1000") {
			t.Errorf("ValidateDesiredCount(%d) message = %q, want the accepted range", n, msg)
		}
	}
}
