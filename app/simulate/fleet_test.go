package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/client"
)

const testToken = "test-token"

// fakeControlPlane is a minimal control plane. It keeps desired states in
// memory, records every heartbeat and responds with the desired state.
type fakeControlPlane struct {
	*httptest.Server
	t *testing.T

	mu       sync.Mutex
	desired  map[string]string
	beats    map[string][]client.Heartbeat
	requests int
	// fail, when set, chooses an error status for request n (from 0), or 0
	// to accept it.
	fail func(n int) int
}

var validName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

func newFakeControlPlane(t *testing.T) *fakeControlPlane {
	t.Helper()
	cp := &fakeControlPlane{t: t, desired: map[string]string{}, beats: map[string][]client.Heartbeat{}}
	cp.Server = httptest.NewServer(http.HandlerFunc(cp.serveHeartbeat))
	t.Cleanup(cp.Close)
	return cp
}

func (cp *fakeControlPlane) serveHeartbeat(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != client.HeartbeatPath {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+testToken {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var hb client.Heartbeat
	if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
		cp.t.Errorf("decode heartbeat: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if !validName.MatchString(hb.ID) || !validName.MatchString(hb.Pool) {
		cp.t.Errorf("heartbeat has invalid id %q or pool %q", hb.ID, hb.Pool)
	}
	if !slices.Contains([]string{"running", "paused", "draining", "stopped"}, hb.Status) {
		cp.t.Errorf("heartbeat from %s has invalid status %q", hb.ID, hb.Status)
	}

	cp.mu.Lock()
	n := cp.requests
	cp.requests++
	status := 0
	if cp.fail != nil {
		status = cp.fail(n)
	}
	if status != 0 {
		cp.mu.Unlock()
		w.WriteHeader(status)
		return
	}
	cp.beats[hb.ID] = append(cp.beats[hb.ID], hb)
	desired := cp.desired[hb.ID]
	if desired == "" {
		desired = client.StatusRunning
	}
	cp.mu.Unlock()

	_ = json.NewEncoder(w).Encode(map[string]any{"desired_state": desired, "heartbeat_interval_seconds": 0.05})
}

func (cp *fakeControlPlane) setDesired(id, state string) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.desired[id] = state
}

// heartbeats returns the accepted heartbeats of one worker in arrival order.
func (cp *fakeControlPlane) heartbeats(id string) []client.Heartbeat {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return slices.Clone(cp.beats[id])
}

func statusesOf(beats []client.Heartbeat) []string {
	statuses := make([]string, len(beats))
	for i, hb := range beats {
		statuses[i] = hb.Status
	}
	return statuses
}

func testConfig(url string, workers int) Config {
	return Config{
		URL: url, Token: testToken,
		Workers: workers, Pools: 1,
		Interval:    50 * time.Millisecond,
		JobDuration: 10 * time.Millisecond,
		Seed:        1,
	}
}

// startFleet runs a fleet in the background until timeout and returns it
// with a channel that is closed when Run returns.
func startFleet(t *testing.T, cfg Config, logger *slog.Logger, timeout time.Duration) (*Fleet, <-chan struct{}) {
	t.Helper()
	fleet, err := NewFleet(cfg, logger)
	if err != nil {
		t.Fatalf("NewFleet: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cancel()
		if err := fleet.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return fleet, done
}

func stateOf(t *testing.T, fleet *Fleet, id string) WorkerState {
	t.Helper()
	for _, state := range fleet.Snapshot() {
		if state.ID == id {
			return state
		}
	}
	t.Fatalf("no worker %q in the fleet", id)
	return WorkerState{}
}

// waitFor polls cond every 5ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFleetPausedWorkerProcessesNothing(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.setDesired("sim-billing-1", client.StatusPaused)

	fleet, done := startFleet(t, testConfig(cp.URL, 2), nil, 600*time.Millisecond)
	<-done

	paused := stateOf(t, fleet, "sim-billing-1")
	if paused.Processed != 0 {
		t.Errorf("paused worker processed %d jobs, want 0", paused.Processed)
	}
	if running := stateOf(t, fleet, "sim-billing-2"); running.Processed == 0 {
		t.Errorf("running worker processed no jobs in 600ms")
	}
	beats := cp.heartbeats("sim-billing-1")
	if !slices.Contains(statusesOf(beats), client.StatusPaused) {
		t.Errorf("paused worker reported %v, want paused among them", statusesOf(beats))
	}
	for _, hb := range beats {
		if hb.Metrics["jobs_processed"] != 0 || hb.Metrics["busy"] != 0 {
			t.Errorf("paused worker reported metrics %v, want jobs_processed 0 and busy 0", hb.Metrics)
		}
	}
}

func TestFleetResumesAfterPause(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.setDesired("sim-billing-1", client.StatusPaused)

	fleet, _ := startFleet(t, testConfig(cp.URL, 1), nil, 3*time.Second)
	waitFor(t, time.Second, "a paused heartbeat", func() bool {
		return slices.Contains(statusesOf(cp.heartbeats("sim-billing-1")), client.StatusPaused)
	})
	cp.setDesired("sim-billing-1", client.StatusRunning)

	waitFor(t, time.Second, "jobs after resume", func() bool {
		return stateOf(t, fleet, "sim-billing-1").Processed > 0
	})
	if state := stateOf(t, fleet, "sim-billing-1"); state.Status != client.StatusRunning {
		t.Errorf("status after resume = %q, want running", state.Status)
	}
}

func TestFleetDrainingWorkerStopsThenExits(t *testing.T) {
	cp := newFakeControlPlane(t)
	cfg := testConfig(cp.URL, 1)
	cfg.JobDuration = 300 * time.Millisecond

	fleet, done := startFleet(t, cfg, nil, 3*time.Second)
	waitFor(t, time.Second, "the first job", func() bool { return stateOf(t, fleet, "sim-billing-1").Busy })
	cp.setDesired("sim-billing-1", client.StatusDraining)

	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after its only worker was drained")
	}

	state := stateOf(t, fleet, "sim-billing-1")
	if !state.Exited || state.Status != client.StatusStopped {
		t.Errorf("state = %+v, want exited and stopped", state)
	}
	if state.Processed == 0 {
		t.Errorf("drained worker processed 0 jobs, want the job in progress finished")
	}

	beats := cp.heartbeats("sim-billing-1")
	statuses := statusesOf(beats)
	drainingAt := slices.Index(statuses, client.StatusDraining)
	stoppedAt := slices.Index(statuses, client.StatusStopped)
	if drainingAt < 0 {
		t.Errorf("statuses = %v, want draining while the job finishes", statuses)
	}
	if stoppedAt != len(statuses)-1 || stoppedAt < drainingAt {
		t.Errorf("statuses = %v, want one stopped heartbeat last, after draining", statuses)
	}
	if last := beats[len(beats)-1]; last.Metrics["jobs_processed"] != float64(state.Processed) {
		t.Errorf("last heartbeat jobs_processed = %v, want %d", last.Metrics["jobs_processed"], state.Processed)
	}

	// The worker has left, so no heartbeat follows the stopped one.
	time.Sleep(150 * time.Millisecond)
	if after := cp.heartbeats("sim-billing-1"); len(after) != len(beats) {
		t.Errorf("got %d heartbeats after the stopped one, want 0", len(after)-len(beats))
	}
}

func TestFleetIdleDrainStopsAtOnce(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.setDesired("sim-billing-1", client.StatusPaused)

	fleet, done := startFleet(t, testConfig(cp.URL, 1), nil, 3*time.Second)
	waitFor(t, time.Second, "a paused heartbeat", func() bool {
		return slices.Contains(statusesOf(cp.heartbeats("sim-billing-1")), client.StatusPaused)
	})
	cp.setDesired("sim-billing-1", client.StatusDraining)

	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Run did not return after the idle worker was drained")
	}
	statuses := statusesOf(cp.heartbeats("sim-billing-1"))
	if statuses[len(statuses)-1] != client.StatusStopped {
		t.Errorf("statuses = %v, want stopped last", statuses)
	}
	if state := stateOf(t, fleet, "sim-billing-1"); state.Processed != 0 {
		t.Errorf("idle drained worker processed %d jobs, want 0", state.Processed)
	}
}

func TestFleetStoppedWorkerExits(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.setDesired("sim-billing-1", client.StatusStopped)

	fleet, _ := startFleet(t, testConfig(cp.URL, 2), nil, 3*time.Second)
	waitFor(t, time.Second, "the stopped worker to exit", func() bool {
		return stateOf(t, fleet, "sim-billing-1").Exited
	})

	statuses := statusesOf(cp.heartbeats("sim-billing-1"))
	if !slices.Equal(statuses, []string{client.StatusRunning, client.StatusStopped}) {
		t.Errorf("statuses = %v, want [running stopped]", statuses)
	}
	if state := stateOf(t, fleet, "sim-billing-1"); state.Processed != 0 {
		t.Errorf("stopped worker processed %d jobs, want 0", state.Processed)
	}
	if other := stateOf(t, fleet, "sim-billing-2"); other.Exited {
		t.Errorf("worker sim-billing-2 exited, want it still running")
	}
}

func TestFleetStopAbandonsJob(t *testing.T) {
	cp := newFakeControlPlane(t)
	cfg := testConfig(cp.URL, 1)
	cfg.JobDuration = 2 * time.Second

	fleet, done := startFleet(t, cfg, nil, 5*time.Second)
	waitFor(t, time.Second, "the first job", func() bool { return stateOf(t, fleet, "sim-billing-1").Busy })
	stopAt := time.Now()
	cp.setDesired("sim-billing-1", client.StatusStopped)

	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Run did not return within 1s of the stop, want the job abandoned")
	}
	if elapsed := time.Since(stopAt); elapsed > 500*time.Millisecond {
		t.Errorf("stop took %v, want well under the 1s minimum job duration", elapsed)
	}
	if state := stateOf(t, fleet, "sim-billing-1"); state.Processed != 0 {
		t.Errorf("processed = %d, want the abandoned job not counted", state.Processed)
	}
}

func TestFleetFailureRate(t *testing.T) {
	cp := newFakeControlPlane(t)
	cfg := testConfig(cp.URL, 4)
	cfg.Pools = 2
	cfg.FailureRate = 0.25
	cfg.JobDuration = 2 * time.Millisecond

	fleet, done := startFleet(t, cfg, nil, 700*time.Millisecond)
	<-done

	var processed, failed int64
	for _, state := range fleet.Snapshot() {
		processed += state.Processed
		failed += state.Failed
		beats := cp.heartbeats(state.ID)
		if len(beats) == 0 {
			t.Errorf("worker %s sent no heartbeat", state.ID)
			continue
		}
		if last := beats[len(beats)-1]; last.Metrics["jobs_processed"] != float64(state.Processed) ||
			last.Metrics["jobs_failed"] != float64(state.Failed) {
			t.Errorf("worker %s last reported %v, want jobs_processed %d and jobs_failed %d",
				state.ID, last.Metrics, state.Processed, state.Failed)
		}
	}
	if processed < 400 {
		t.Fatalf("processed %d jobs, want at least 400 to measure the failure rate", processed)
	}
	// With n >= 400 the standard error is at most 0.022, so 0.07 is over 3 of them.
	if rate := float64(failed) / float64(processed); math.Abs(rate-0.25) > 0.07 {
		t.Errorf("failure rate = %.3f (%d of %d), want about 0.25", rate, failed, processed)
	}
}

func TestFleetCountersOnlyIncrease(t *testing.T) {
	cp := newFakeControlPlane(t)

	_, done := startFleet(t, testConfig(cp.URL, 1), nil, 500*time.Millisecond)
	<-done

	beats := cp.heartbeats("sim-billing-1")
	if len(beats) < 3 {
		t.Fatalf("got %d heartbeats, want at least 3", len(beats))
	}
	for i := 1; i < len(beats); i++ {
		for _, counter := range []string{"jobs_processed", "jobs_failed"} {
			if beats[i].Metrics[counter] < beats[i-1].Metrics[counter] {
				t.Errorf("%s went from %v to %v", counter, beats[i-1].Metrics[counter], beats[i].Metrics[counter])
			}
		}
		for _, gauge := range []string{"busy", "memory_mb", "queue_depth"} {
			if _, ok := beats[i].Metrics[gauge]; !ok {
				t.Errorf("heartbeat %d has no %s", i, gauge)
			}
		}
	}
	if beats[len(beats)-2].Metrics["jobs_processed"] == 0 {
		t.Error("running worker reported jobs_processed 0 throughout")
	}
}

func TestFleetShutdownReportsStopped(t *testing.T) {
	cp := newFakeControlPlane(t)
	cfg := testConfig(cp.URL, 3)
	cfg.Pools = 3

	fleet, done := startFleet(t, cfg, nil, 300*time.Millisecond)
	<-done

	for _, state := range fleet.Snapshot() {
		if !state.Exited {
			t.Errorf("worker %s did not exit", state.ID)
		}
		statuses := statusesOf(cp.heartbeats(state.ID))
		if len(statuses) == 0 || statuses[len(statuses)-1] != client.StatusStopped {
			t.Errorf("worker %s reported %v, want stopped last", state.ID, statuses)
		}
	}
}

func TestFleetLogsHeartbeatErrorOnce(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.mu.Lock()
	cp.fail = func(n int) int {
		if n < 4 {
			return http.StatusInternalServerError
		}
		return 0
	}
	cp.mu.Unlock()
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&syncWriter{w: &logs}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := testConfig(cp.URL, 1)
	cfg.Interval = 10 * time.Millisecond

	_, done := startFleet(t, cfg, logger, 800*time.Millisecond)
	<-done

	// Waits after four failures are 10, 20, 40 and 80ms, so the fifth
	// heartbeat succeeds well within the run.
	var warnings, recoveries int
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		switch entry["msg"] {
		case "heartbeat failed":
			warnings++
			if entry["level"] != "WARN" || entry["worker_id"] != "sim-billing-1" {
				t.Errorf("log entry = %v, want WARN with worker_id sim-billing-1", entry)
			}
		case "heartbeat recovered":
			recoveries++
		}
		if strings.Contains(line, testToken) {
			t.Errorf("log line contains the token: %s", line)
		}
	}
	if warnings != 1 {
		t.Errorf("logged %d warnings for 4 identical errors, want 1", warnings)
	}
	if recoveries != 1 {
		t.Errorf("logged %d recoveries, want 1", recoveries)
	}
}

// syncWriter serializes writes from the workers' goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestFleetWorkerIDs(t *testing.T) {
	fleet, err := NewFleet(Config{URL: "http://127.0.0.1:1", Token: "t", Workers: 5, Pools: 2}, nil)
	if err != nil {
		t.Fatalf("NewFleet: %v", err)
	}

	var ids []string
	for _, state := range fleet.Snapshot() {
		ids = append(ids, state.ID)
	}
	want := []string{"sim-billing-1", "sim-emails-1", "sim-billing-2", "sim-emails-2", "sim-billing-3"}
	if !slices.Equal(ids, want) {
		t.Errorf("ids = %v, want %v", ids, want)
	}
}

func TestPoolNames(t *testing.T) {
	if got := PoolNames(3); !slices.Equal(got, []string{"billing", "emails", "reports"}) {
		t.Errorf("PoolNames(3) = %v, want billing, emails, reports", got)
	}
	if got := PoolNames(8); got[7] != "search-index" {
		t.Errorf("PoolNames(8)[7] = %q, want search-index", got[7])
	}
	got := PoolNames(9)
	if got[0] != "pool-1" || got[8] != "pool-9" {
		t.Errorf("PoolNames(9) = %v, want pool-1 to pool-9", got)
	}
}

func TestFleetRunTwice(t *testing.T) {
	cp := newFakeControlPlane(t)
	fleet, err := NewFleet(testConfig(cp.URL, 1), nil)
	if err != nil {
		t.Fatalf("NewFleet: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	if err := fleet.Run(ctx); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	if err := fleet.Run(ctx); err == nil {
		t.Error("second Run returned nil, want an error")
	}
}

func TestConfigValidate(t *testing.T) {
	valid := Config{URL: "http://127.0.0.1:8080", Token: "t", Workers: 10, Pools: 3}
	if err := valid.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v, want nil", valid, err)
	}

	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"relative url", func(c *Config) { c.URL = "127.0.0.1:8080" }, "url"},
		{"ftp url", func(c *Config) { c.URL = "ftp://host" }, "url"},
		{"missing token", func(c *Config) { c.Token = "" }, "token is missing"},
		{"no workers", func(c *Config) { c.Workers = 0 }, "workers 0 is invalid"},
		{"too many workers", func(c *Config) { c.Workers = MaxWorkers + 1 }, "workers 100001 is invalid"},
		{"more pools than workers", func(c *Config) { c.Pools = 11 }, "pools 11 is invalid"},
		{"negative pools", func(c *Config) { c.Pools = -1 }, "pools -1 is invalid"},
		{"negative interval", func(c *Config) { c.Interval = -time.Second }, "interval"},
		{"failure rate above 1", func(c *Config) { c.FailureRate = 1.5 }, "failure rate"},
		{"failure rate NaN", func(c *Config) { c.FailureRate = math.NaN() }, "failure rate"},
		{"negative job duration", func(c *Config) { c.JobDuration = -time.Second }, "job duration"},
		{"prefix with slash", func(c *Config) { c.IDPrefix = "a/b" }, "id prefix"},
		{"prefix too long", func(c *Config) { c.IDPrefix = strings.Repeat("x", 120) }, "exceeds 128 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.modify(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}

	all := Config{URL: "", Workers: 0, FailureRate: -1}
	if err := all.Validate(); err == nil || strings.Count(err.Error(), "\n") < 2 {
		t.Errorf("Validate() = %v, want url, token, workers and failure rate reported together", err)
	}
}

func TestRunRejectsInvalidConfig(t *testing.T) {
	if err := Run(context.Background(), Config{}, nil); err == nil {
		t.Error("Run with an empty Config returned nil, want the validation error")
	}
}
