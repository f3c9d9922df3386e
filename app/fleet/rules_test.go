package fleet

import (
	"slices"
	"testing"
	"time"
)

// ruleNow is the fake check time of the rule tables.
var ruleNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	ruleGrace    = 30 * time.Second
	ruleInterval = 5 * time.Second
)

func ruleSettings() Settings {
	return Settings{
		AlertsEnabled: true, CheckInterval: 15 * time.Second, HeartbeatGrace: ruleGrace,
		Cooldown: 15 * time.Minute, ErrorRateThreshold: 10, MinJobs: 20, SnapshotInterval: time.Minute,
	}
}

// silentWorker returns worker w-01 of pool billing whose last heartbeat is
// age before ruleNow, with its derived fields filled as the service does.
func silentWorker(age time.Duration, status, desired State) *Worker {
	w := &Worker{ID: "w-01", Pool: "billing", Status: status, Desired: desired, LastHeartbeat: ruleNow.Add(-age)}
	w.Derive(ruleNow, ruleGrace)
	return w
}

// evaluate runs the rules on in, filling the fields every case shares, and
// returns the fingerprints found in order.
func evaluate(in RuleInput) ([]string, []Candidate) {
	in.Now = ruleNow
	in.Settings = ruleSettings()
	in.HeartbeatInterval = ruleInterval
	candidates := EvaluateRules(in)
	fps := make([]string, 0, len(candidates))
	for _, c := range candidates {
		fps = append(fps, c.Alert.Fingerprint)
	}
	return fps, candidates
}

func TestEvaluateRulesHeartbeatMissing(t *testing.T) {
	const missing = "heartbeat_missing/worker/w-01"
	type outage struct{ began, ended time.Duration } // before ruleNow
	tests := []struct {
		name   string
		worker *Worker
		outage outage // zero means none
		want   []string
	}{
		{"fresh", silentWorker(5*time.Second, StateRunning, StateRunning), outage{}, nil},
		{"silent exactly the grace", silentWorker(ruleGrace, StateRunning, StateRunning), outage{}, nil},
		{"silent past the grace", silentWorker(ruleGrace+time.Second, StateRunning, StateRunning), outage{}, []string{missing}},
		{"paused and silent", silentWorker(5*time.Minute, StatePaused, StatePaused), outage{}, []string{missing}},
		{"reported stopped", silentWorker(5*time.Minute, StateStopped, StateRunning), outage{}, nil},
		{"told to stop", silentWorker(5*time.Minute, StateRunning, StateStopped), outage{}, nil},
		// The worker gets the grace plus the outage's length after it: an
		// outage from 290 s to 160 s ago lasted 130 s, so the allowance
		// ended 30 s ago, exactly the grace.
		{"outage just ended", silentWorker(100*time.Second, StateRunning, StateRunning), outage{90 * time.Second, 20 * time.Second}, nil},
		{"outage allowance exactly used", silentWorker(300*time.Second, StateRunning, StateRunning), outage{290 * time.Second, 160 * time.Second}, nil},
		{"outage allowance passed", silentWorker(300*time.Second, StateRunning, StateRunning), outage{290 * time.Second, 200 * time.Second}, []string{missing}},
		{"long outage allowance capped", silentWorker(1000*time.Second, StateRunning, StateRunning), outage{995 * time.Second, 400 * time.Second}, []string{missing}},
		{"missing before the outage", silentWorker(300*time.Second, StateRunning, StateRunning), outage{100 * time.Second, 50 * time.Second}, []string{missing}},
		{"outage ended before the last heartbeat", silentWorker(40*time.Second, StateRunning, StateRunning), outage{200 * time.Second, 120 * time.Second}, []string{missing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := RuleInput{Workers: []*Worker{tt.worker}}
			if tt.outage.ended > 0 {
				in.StoreOutageStart = ruleNow.Add(-tt.outage.began)
				in.StoreOutageEnd = ruleNow.Add(-tt.outage.ended)
			}
			got, _ := evaluate(in)
			if !slices.Equal(got, tt.want) {
				t.Errorf("fingerprints = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHeartbeatMissingAlertFields(t *testing.T) {
	w := silentWorker(95*time.Second, StateRunning, StateRunning)
	// Alive when the outage began, 90 s ago; 50 s have passed since the
	// outage's allowance (its 20 s length) ended.
	_, candidates := evaluate(RuleInput{Workers: []*Worker{w},
		StoreOutageStart: ruleNow.Add(-90 * time.Second), StoreOutageEnd: ruleNow.Add(-70 * time.Second)})
	if len(candidates) != 1 {
		t.Fatalf("got %d candidates, want 1: %+v", len(candidates), candidates)
	}
	c := candidates[0]
	if c.For != 0 {
		t.Errorf("For = %s, want 0: the grace is already in the rule", c.For)
	}
	a := c.Alert
	if a.Rule != RuleHeartbeatMissing || a.WorkerID != "w-01" || a.Pool != "billing" {
		t.Errorf("alert = %+v, want heartbeat_missing on w-01 in billing", a)
	}
	// The value is the whole silence, not the part after the outage.
	if a.Value != 95 || a.Threshold != 30 || a.Unit != "s" {
		t.Errorf("value %v threshold %v unit %q, want 95 30 s", a.Value, a.Threshold, a.Unit)
	}
	if !a.StartsAt.Equal(w.LastHeartbeat) {
		t.Errorf("StartsAt = %s, want the last heartbeat %s", a.StartsAt, w.LastHeartbeat)
	}
}

func TestEvaluateRulesErrorRate(t *testing.T) {
	const errorRate = "error_rate/worker/w-01"
	tests := []struct {
		name      string
		processed float64
		failed    float64
		firing    bool
		stale     bool
		want      []string
	}{
		{"below the minimum jobs", 19, 19, false, false, nil},
		{"at the minimum jobs", 20, 3, false, false, []string{errorRate}},
		{"exactly the threshold", 100, 10, false, false, nil},
		{"just above the threshold", 1000, 101, false, false, []string{errorRate}},
		{"inside the band, not firing", 100, 9, false, false, nil},
		{"inside the band, firing", 100, 9, true, false, []string{errorRate}},
		{"just above the resolve level, firing", 1000, 81, true, false, []string{errorRate}},
		{"exactly the resolve level, firing", 100, 8, true, false, nil},
		{"below the band, firing", 100, 5, true, false, nil},
		{"stale worker", 100, 90, false, true, []string{"heartbeat_missing/worker/w-01"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			age := 5 * time.Second
			if tt.stale {
				age = 5 * time.Minute
			}
			w := silentWorker(age, StateRunning, StateRunning)
			in := RuleInput{
				Workers: []*Worker{w},
				Rates:   map[string]WorkerRate{"w-01": {Processed: tt.processed, Failed: tt.failed, Window: 2 * time.Minute}},
				Firing:  map[string]bool{errorRate: tt.firing},
			}
			got, _ := evaluate(in)
			if !slices.Equal(got, tt.want) {
				t.Errorf("fingerprints = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestErrorRateWithoutSample(t *testing.T) {
	got, _ := evaluate(RuleInput{Workers: []*Worker{silentWorker(time.Second, StateRunning, StateRunning)}})
	if len(got) != 0 {
		t.Errorf("a worker without a rate sample gave %v, want nothing", got)
	}
}

func TestEvaluateRulesPoolUnderSize(t *testing.T) {
	entry := func(id string, status State, age time.Duration) PoolEntry {
		return PoolEntry{ID: id, Pool: "billing", Status: status, LastHeartbeat: ruleNow.Add(-age)}
	}
	fresh := time.Second
	tests := []struct {
		name    string
		entries []PoolEntry
		desired map[string]int
		want    []string
	}{
		{"never scaled", []PoolEntry{entry("w-01", StateRunning, fresh)}, nil, nil},
		{"at size", []PoolEntry{entry("w-01", StateRunning, fresh), entry("w-02", StatePaused, fresh)}, map[string]int{"billing": 2}, nil},
		{"one short", []PoolEntry{entry("w-01", StateRunning, fresh)}, map[string]int{"billing": 2}, []string{"pool_under_size/pool/billing"}},
		{"draining does not serve", []PoolEntry{entry("w-01", StateRunning, fresh), entry("w-02", StateDraining, fresh)}, map[string]int{"billing": 2}, []string{"pool_under_size/pool/billing"}},
		{"stale does not serve", []PoolEntry{entry("w-01", StateRunning, fresh), entry("w-02", StateRunning, time.Minute)}, map[string]int{"billing": 2}, []string{"pool_under_size/pool/billing"}},
		{"scaled to zero", nil, map[string]int{"billing": 0}, nil},
		{"scaled with no workers", nil, map[string]int{"billing": 1}, []string{"pool_under_size/pool/billing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			byName := CountPools(tt.entries, tt.desired, []string{"billing"}, ruleNow, ruleGrace)
			got, candidates := evaluate(RuleInput{Pools: []*Pool{byName["billing"]}})
			if !slices.Equal(got, tt.want) {
				t.Fatalf("fingerprints = %v, want %v", got, tt.want)
			}
			for _, c := range candidates {
				if c.For != ruleGrace {
					t.Errorf("For = %s, want the grace %s", c.For, ruleGrace)
				}
				if c.Alert.Threshold != float64(tt.desired["billing"]) {
					t.Errorf("threshold = %v, want the desired count %d", c.Alert.Threshold, tt.desired["billing"])
				}
			}
		})
	}
}

func TestEvaluateRulesCommandNotApplied(t *testing.T) {
	const notApplied = "command_not_applied/worker/w-01"
	wait := CommandGraceHeartbeats * ruleInterval
	command := func(action Action, age time.Duration) *Command {
		return &Command{Action: action, To: action.Target(), Actor: "ops", Source: SourceUI, At: ruleNow.Add(-age)}
	}
	tests := []struct {
		name    string
		status  State
		desired State
		command *Command
		stale   bool
		want    []string
	}{
		{"no command", StateRunning, StateRunning, nil, false, nil},
		{"drain exactly three intervals old", StateRunning, StateDraining, command(ActionDrain, wait), false, nil},
		{"drain ignored past three intervals", StateRunning, StateDraining, command(ActionDrain, wait+time.Second), false, []string{notApplied}},
		{"drain applied", StateDraining, StateDraining, command(ActionDrain, time.Minute), false, nil},
		{"drain finished", StateStopped, StateDraining, command(ActionDrain, time.Minute), false, nil},
		{"pause ignored", StateRunning, StatePaused, command(ActionPause, time.Minute), false, []string{notApplied}},
		// A worker told to drain is expected to exit, so its silence pages
		// nobody.
		{"stale after drain", StateRunning, StateDraining, command(ActionDrain, 10*time.Minute), true, nil},
		{"stale after pause", StateRunning, StatePaused, command(ActionPause, 10*time.Minute), true, []string{"heartbeat_missing/worker/w-01"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			age := time.Second
			if tt.stale {
				age = 5 * time.Minute
			}
			w := silentWorker(age, tt.status, tt.desired)
			w.LastCommand = tt.command
			got, _ := evaluate(RuleInput{Workers: []*Worker{w}})
			if !slices.Equal(got, tt.want) {
				t.Errorf("fingerprints = %v, want %v", got, tt.want)
			}
		})
	}
}
